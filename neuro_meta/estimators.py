"""Estimators of the meta-gradient ``dL_out(φ*(θ))/dθ`` side by side, with their cost.

Every estimator works for any model kind (:mod:`neuro_meta.kind`) and is called the same
way::

    grad, cost = estimate(name, net, task, **knobs)

``grad`` has the structure of ``net.theta`` (averaged over tasks unless
``reduce="none"``); ``cost`` is a :class:`Cost` -- Hessian-vector products, mixed
second-derivative products, gradient evaluations, learning-process steps and phases (all
per task) and wall time. The exact value they estimate is
:func:`neuro_meta.exact_meta_gradient`. With φ̂ the state the learning process settles
to (tolerance ``tol``), ``H = ∇²L_trn(φ̂) + diag λ``, ``g = ∇φ L_out(φ̂)`` and
``C(u) = (∂²φθ L_in)ᵀ u`` (the kind's ``cross``)::

    exact          ∂θ L_out − C(H⁻¹ g)                      (the reference)
    "cml"          [∂θ L_in(φᵝ) − ∂θ L_in(φ⁰)] / β, ...     two or three phases, no
                   second derivatives; knobs beta, estimator, tol (neuro_meta.CML)
    "cg"           ∂θ L_out − C(u_k), u_k: k conjugate-gradient steps on H u = g from 0
                   (k Hessian-vector products); exact for k ≥ number of parameters
    "neumann"      ∂θ L_out − C(u_k), u_k = α Σ_{j=0..k} (I − αH)^j g (k products;
                   recurrent backprop: Richardson iteration on H u = g); α from a power
                   iteration (``power_iters`` products) unless given; converges
                   geometrically, with factor max|1 − α μ| over H's eigenvalues μ
    "t1t2"         ∂θ L_out − C(g): the Hessian replaced by the identity (Luketina et al.
                   2016, "T1–T2"); exact when H = I
    "fomaml"       ∂θ L_out − C(g / λ): the Hessian replaced by the pull's curvature
                   diag λ, i.e. the adapted weights respond to θ through the pull alone.
                   For the anchors ω this is first-order MAML's direction: dφ*/dω := I,
                   so ĝ_ω = ∇φ L_out(φ̂); for λ the same approximation gives
                   −(φ̂ − ω) ∇φ L_out / λ. Exact when the data have no curvature in φ
    "reptile"      ∂θ F_all(φ̂_all, θ): the fast variables learn the task's training *and*
                   validation points (Reptile has no split) to φ̂_all; the direction is
                   the gradient of the inner objective's minimum (the envelope,
                   ``min_φ L_all(φ) + Σ λ/2 (φ − ω)²``). For ω it is
                   λ (ω − φ̂_all): Reptile's step ω → φ̂_all in gradient units; it targets
                   another objective, so it is not an estimate of dL_out/dθ (measured
                   for its direction: the cosine)

T1–T2, first-order MAML and Reptile have a bias that no compute removes; CML, CG and the
Neumann series converge to the exact value as their compute grows (CML: phases tighter
and β smaller; CG, Neumann: k larger). The first four all start from the free phase;
"cg", "neumann", "t1t2" and "fomaml" then need ``∇φ L_out`` and products with second
derivatives, CML a second (and third) phase of the same learning process.

The learning process is, by default, the CML default's with the phases *integrated in
time* (``settle="integrate"``): only gradient evaluations, as a synapse would compute
them. Pass ``learner=`` for another (a solved phase, ``settle="solve"``, counts its
Newton-Krylov Hessian-vector products).
"""
import copy
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _params as P
from .cml import CML, ESTIMATORS as CML_ESTIMATORS, tree_reduce
from .errors import SimulationError
from .kind import Packer, check_kind
from .learning import Learner
from .optim import tree_vector
from .results import LearningResult
from .tasks import Task

#: The estimators, in the order of the docs.
NAMES = ("cml", "cg", "neumann", "t1t2", "fomaml", "reptile")

#: The knobs of each estimator (every one also takes ``tol``, ``learner`` and ``reduce``).
KNOBS = {
    "cml": ("beta", "estimator"),
    "cg": ("k",),
    "neumann": ("k", "alpha", "power_iters"),
    "t1t2": (),
    "fomaml": (),
    "reptile": (),
}
COMMON = ("tol", "learner", "reduce")

#: Most Hessian-vector products an estimator may be asked for (k, power_iters).
MAX_K = 10 ** 6
#: Gradient evaluations per integration step of each integrator.
STAGES = {"euler": 1, "expeuler": 1, "rk4": 4, "scipy": 1}
#: Cost of a Hessian-vector product in gradient evaluations (a forward and a backward
#: pass of the directions besides the gradient's: Pearlmutter's R-operator) -- the
#: weight of :attr:`Cost.hvps` in :meth:`Cost.gradient_equivalents`.
HVP_COST = 2.0


@dataclass(frozen=True)
class Cost:
    """What an estimate cost, per task.

    ``hvps``: Hessian-vector products of the inner objective (the estimator's and, with
    ``settle="solve"``, the phase solver's); ``cross``: products with the mixed second
    derivative ``∂²φθ L_in`` (elementwise for complex synapses); ``grads``: gradient
    evaluations (``∂φ`` of a loss: the learning process's forces -- steps × sub-steps ×
    the integrator's stages -- and the estimator's own; CML's ``∂θ L_in`` at the settled
    states are counted here too); ``steps``: learning-process steps (integration steps
    × sub-steps, or the solver's pseudo-time steps; for a batch of tasks the steps of
    the last task to settle); ``phases``: learning-process phases run; ``wall_s``: wall
    time (s) of the whole estimate.
    """

    hvps: float = 0.0
    cross: float = 0.0
    grads: float = 0.0
    steps: float = 0.0
    phases: int = 0
    wall_s: float = 0.0

    def __post_init__(self):
        for f in ("hvps", "cross", "grads", "steps", "wall_s"):    # counts and a time:
            P.real(getattr(self, f), "Cost", f, low=0)             # finite, >= 0
        P.integer(self.phases, "Cost", "phases", low=0)

    def __add__(self, other):
        if not isinstance(other, Cost):
            return NotImplemented           # (Cost() + 3: Python's TypeError, named)
        return Cost(*(getattr(self, f) + getattr(other, f) for f in self.fields()))

    @staticmethod
    def fields():
        return ("hvps", "cross", "grads", "steps", "phases", "wall_s")

    def gradient_equivalents(self):
        """One number for the compute axis: ``grads + cross + 2 hvps``
        (:data:`HVP_COST`)."""
        return float(self.grads + self.cross + HVP_COST * self.hvps)

    def as_dict(self):
        d = {f: float(getattr(self, f)) for f in self.fields()}
        d["phases"] = int(self.phases)
        d["gradient_equivalents"] = self.gradient_equivalents()
        return d


class Estimate(NamedTuple):
    """``(grad, cost)``: the meta-gradient in the structure of ``net.theta`` and its
    :class:`Cost`."""

    grad: dict
    cost: Cost


# ---------------------------------------------------------------------- pieces
def gradient_learner(net, tol):
    """The default learning process of the estimators: CML's default (batch
    presentation, the kind's default rule, exponential Euler with its automatic step)
    with the phases integrated in time until settled to ``tol`` -- gradient evaluations
    only, no Hessian."""
    check_kind(net, "gradient_learner")
    tol = P.real(tol, "gradient_learner", "tol", low=0.0, low_open=True)
    return Learner(rule=net.default_rule(), presentation="batch", integrator="expeuler",
                   tol=tol, settle="integrate")


def phase_cost(learner, res):
    """The :class:`Cost` of one phase from its :class:`~neuro_meta.LearningResult`
    (steps, sub-steps, the solver's counts), per task."""
    if not isinstance(learner, Learner):
        P.fail("phase_cost", "learner", "must be a Learner", type(learner).__name__)
    if not isinstance(res, LearningResult):
        P.fail("phase_cost", "res", "must be a LearningResult", type(res).__name__)
    if res.solver is not None:
        steps = float(np.mean(res.solver["steps"]))
        return Cost(hvps=float(np.mean(res.solver["hvps"])), grads=steps + 1.0,
                    steps=steps, phases=1)
    sub = 1.0 if res.substeps is None else float(np.mean(res.substeps))
    steps = res.steps * sub
    return Cost(grads=steps * STAGES[learner.integrator], steps=steps, phases=1)


class _RecordingLearner(Learner):
    """A learner that keeps the results of the phases it runs (shared by its copies)."""

    def run(self, *args, **kwargs):
        res = super().run(*args, **kwargs)
        self.phase_log.append(res)
        return res


def _recording(learner):
    rec = _RecordingLearner.__new__(_RecordingLearner)
    rec.__dict__.update(learner.__dict__)
    rec.phase_log = []
    return rec


def _hessian_operator(net, pk, phi, X, Y):
    """``v -> H v`` with ``H = ∇²L_trn(φ) + diag λ`` for packed directions (B, P) (the
    forward and backward pass at ``phi`` done once: ``data_hvp_at``)."""
    hvp = net.data_hvp_at(phi, X, Y)
    lam = pk.broadcast(net.lam)
    return lambda v: pk.pack(hvp(pk.unpack(v))) + lam * v


def conjugate_gradient(apply, b, k):
    """``k`` conjugate-gradient steps on ``A u = b`` per task (b (B, P)) from ``u = 0``;
    a task stops early at a zero residual (to rounding) or a direction of non-positive
    curvature. Returns ``(u, products)``."""
    O = "conjugate_gradient"
    b, k = _check_solver(O, apply, b, k)
    apply = _checked(O, apply)
    # A task whose squared norm |b|^2 overflows (or underflows) float64 is solved for b
    # scaled by a power of 2 (exact), the solution scaled back; the others keep their
    # numbers (scale 1).
    scale = _power_of_2_scale(b)
    if scale is not None:
        u, n = _cg(apply, b * scale[:, None], k, O)
        return u / scale[:, None], n
    return _cg(apply, b, k, O)


def _power_of_2_scale(b):
    """Per task (row of ``b``), None if every ``|b|²`` is a normal float64 number, else
    the power of 2 that brings the largest ``|b_i|`` of each task whose ``|b|²``
    overflows or underflows near 1 (1 for the other tasks)."""
    with np.errstate(over="ignore", under="ignore"):
        rr = (b * b).sum(axis=-1)
    m = np.abs(b).max(axis=-1)
    bad = (~np.isfinite(rr) | (rr < np.finfo(float).tiny)) & (m > 0)
    if not bad.any():
        return None
    e = np.frexp(np.where(bad, m, 1.0))[1]      # (a subnormal |b_i| has e down to -1073:
    return np.where(bad, np.ldexp(1.0, np.minimum(-e, 1023)), 1.0)  # 2**1023 is the most)


def _cg(apply, b, k, O):
    """The iterations of :func:`conjugate_gradient` (checked ``apply`` and ``b``)."""
    u = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = (r * r).sum(axis=-1)
    floor = 1e-30 * rr
    active = rr > 0
    n = 0
    for _ in range(k):
        if not active.any():
            break
        Ap = apply(p)
        n += 1
        with np.errstate(over="ignore", invalid="ignore"):     # overflow: refused below
            pAp = (p * Ap).sum(axis=-1)
        if not np.isfinite(pAp[active]).all():
            raise SimulationError(
                f"{O}: the curvature p.Ap of a search direction overflowed float64 at "
                f"step {n}. Hint: A's eigenvalues times |b|^2 exceed the float range; "
                "rescale A (or b)")
        ok = active & (pAp > 0)
        a = np.where(ok, rr / np.where(ok, pAp, 1.0), 0.0)
        u += a[:, None] * p
        r -= a[:, None] * Ap
        rr_new = (r * r).sum(axis=-1)
        b_ = np.where(ok, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
        p = np.where(ok[:, None], r + b_[:, None] * p, p)
        rr = np.where(ok, rr_new, rr)
        active = ok & (rr_new > floor)
    return u, n


def neumann_series(apply, b, k, alpha):
    """``α Σ_{j=0..k} (I − α A)^j b`` per task (``alpha`` (B,)) with ``k`` products."""
    b, k = _check_solver("neumann_series", apply, b, k)
    alpha = P.finite_array(alpha, "neumann_series", "alpha", shape=(b.shape[0],))
    if not (alpha > 0).all():
        P.fail("neumann_series", "alpha", "must be > 0 for every task",
               f"minimum {float(alpha.min())!r}")
    apply = _checked("neumann_series", apply)
    a = alpha[:, None]
    term = b.copy()
    total = b.copy()
    with np.errstate(over="ignore", invalid="ignore"):     # divergence: the error below
        for j in range(k):
            term = term - a * apply(term)
            total += term
            if not (np.isfinite(term).all() and np.isfinite(total).all()):
                raise SimulationError(
                    f"neumann_series: the series diverged at term {j + 1} (not finite). "
                    "Hint: alpha must be below 2 / (largest eigenvalue of A) for the "
                    "series to converge; take a smaller alpha (power_iteration estimates "
                    "the eigenvalue)")
    return a * total


def power_iteration(apply, shape, iters, seed=0):
    """Largest eigenvalue of ``A`` per task (Rayleigh quotient after ``iters`` products
    from a fixed random start)."""
    O = "power_iteration"
    if not callable(apply):
        P.fail(O, "apply", "must be a function v -> A v", type(apply).__name__)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        P.fail(O, "shape", "must be a pair (tasks, parameters)", P.shown(shape))
    shape = tuple(P.integer(n, O, "shape", low=1, high=10 ** 9) for n in shape)
    iters = P.integer(iters, O, "iters", low=1, high=MAX_K)
    P.check_bytes(shape[0] * shape[1], O, "shape", f"of shape {shape}", P.shown(shape))
    apply = _checked(O, apply)
    v = np.random.default_rng(P.integer(seed, O, "seed", low=0)).normal(size=shape)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    est = np.ones(shape[0])
    for _ in range(iters):
        w = apply(v)
        with np.errstate(over="ignore", invalid="ignore"):     # overflow: refused below
            est = (v * w).sum(axis=-1)
            norm = np.linalg.norm(w, axis=-1, keepdims=True)
        v = w / np.maximum(norm, 1e-300)
        # where |w|^2 overflows (or underflows) float64 but w does not, normalise w
        # scaled by its largest magnitude (the other tasks keep their numbers)
        bad = (~np.isfinite(norm) | (norm < 1e-300)) & (w != 0).any(axis=-1, keepdims=True)
        if bad.any():
            rows = bad[:, 0]
            ws = w[rows] / np.abs(w[rows]).max(axis=-1, keepdims=True)
            v[rows] = ws / np.linalg.norm(ws, axis=-1, keepdims=True)
    if not np.isfinite(est).all():
        raise SimulationError(
            f"{O}: the largest eigenvalue of A exceeds the float64 range (the Rayleigh "
            "quotient overflowed). Hint: rescale A")
    return est


def _check_solver(owner, apply, b, k):
    if not callable(apply):
        P.fail(owner, "apply", "must be a function v -> A v", type(apply).__name__)
    b = P.finite_array(b, owner, "b", ndim=2)
    if b.size == 0:
        P.fail(owner, "b", "must hold at least one task and one parameter: shape (tasks, "
               "parameters)", f"shape {b.shape}")
    return b, P.integer(k, owner, "k", low=0, high=MAX_K)


def _checked(owner, apply):
    """``apply`` whose every product is checked: an array of the argument's shape, real
    (a ValidationError otherwise) and finite (a SimulationError otherwise) -- a NaN
    product would make the solvers return NaN, or stop at "zero" curvature with u = 0."""
    def product(v):
        w = apply(v)
        if P.is_quantity(w) or not isinstance(w, np.ndarray) or w.dtype.kind not in "iuf" \
                or w.shape != v.shape:
            P.fail(owner, "apply", f"must return a real array of the argument's shape "
                   f"{v.shape}", f"{type(w).__name__}" + (
                       f" of dtype {w.dtype} and shape {w.shape}"
                       if isinstance(w, np.ndarray) else ""))
        if not np.isfinite(w).all():
            raise SimulationError(f"{owner}: a product A v is not finite. Hint: the "
                                  "curvature operator diverged; check apply and the state "
                                  "it is taken at")
        return w
    return product


def _implicit_formula(net, phi, xt, yt, xv, yv, u):
    """``∂θ L_out(φ) − C(u)`` (the implicit-differentiation formula for a given ``u``)."""
    pk = Packer(net, xt.shape[0])
    cross = net.cross(phi, pk.unpack(u), xt, yt)
    direct = net.theta_partials_out(phi, xv, yv) or {}
    out = {}
    for k, parts in cross.items():
        d = direct.get(k, [None] * len(parts))
        out[k] = [None if c is None else (-c if o is None else o - c)
                  for o, c in zip(d, parts)]
    return out, (0.0 if not direct else 1.0)


def relative_error(g, ref, keys=None):
    """``‖g − ref‖ / ‖ref‖`` over the meta-parameters ``keys`` (default all) of two
    trees in the structure of ``net.theta``."""
    a, b = _vectors(g, ref, keys, "relative_error")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        n = np.linalg.norm(b)
        out = np.linalg.norm(a - b) / n if n > 0 else np.nan
        if not (np.isfinite(out) and np.isfinite(n) and n > 0):
            # |b|^2 (or |a - b|^2) overflowed or underflowed float64: the same ratio of
            # both scaled by their largest magnitude (other trees keep their numbers)
            s = max(float(np.abs(a).max()), float(np.abs(b).max()))
            if s > 0:
                a, b = a / s, b / s
                n = np.linalg.norm(b)
                out = np.linalg.norm(a - b) / n if n > 0 else np.nan
    if not n > 0:
        P.fail("relative_error", "ref", "must not be zero (the error is relative to it)",
               "a zero gradient")
    return float(out)


def cosine(g, ref, keys=None):
    """Cosine of the angle between two trees (over ``keys``, default all); 0 if one of
    them is zero. Both must be finite."""
    a, b = _vectors(g, ref, keys, "cosine")
    if not (a.any() and b.any()):
        return 0.0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        n = np.linalg.norm(a) * np.linalg.norm(b)
        out = a @ b / n if n > 0 else 0.0
        if not (np.isfinite(n) and np.isfinite(out) and n > 0):
            # a squared norm or the dot product overflowed (or underflowed) float64: the
            # cosine of both scaled by their largest magnitudes (scale-invariant)
            a, b = a / np.abs(a).max(), b / np.abs(b).max()
            n = np.linalg.norm(a) * np.linalg.norm(b)
            out = a @ b / n
    return float(out) if n > 0 else 0.0


def _vectors(g, ref, keys, owner):
    """The vectors of ``keys`` (a list of names; default all of ``ref``) of the trees
    ``g`` and ``ref``, checked: the same structure, finite."""
    for name, t in (("g", g), ("ref", ref)):
        if not isinstance(t, dict):
            P.fail(owner, name, "must be a dict of lists of arrays (like "
                   "net.theta)", type(t).__name__)
    if keys is None:
        keys = sorted(ref)
    elif not (isinstance(keys, (list, tuple)) and keys
              and all(isinstance(k, str) for k in keys)):
        P.fail(owner, "keys", "must be a list of meta-parameter names (str), at least one, "
               "or None for all", P.shown(keys))
    missing = [k for k in keys if k not in g or k not in ref]
    if missing:
        P.fail(owner, "keys", "must name meta-parameters of both trees",
               repr(missing[0]))
    a = tree_vector({k: g[k] for k in keys})
    b = tree_vector({k: ref[k] for k in keys})
    if a.shape != b.shape:
        P.fail(owner, "g", f"must have the structure of ref ({b.size} values)",
               f"{a.size} values")
    for name, vec in (("g", a), ("ref", b)):
        if not np.isfinite(vec).all():
            P.fail(owner, name, "must be finite", f"{int((~np.isfinite(vec)).sum())}"
                   " non-finite entries")
    return a, b


# ---------------------------------------------------------------------- the interface
def estimate(name, net, task, **knobs):
    """Estimate ``dL_out/dθ`` with estimator ``name`` (:data:`NAMES`); returns
    ``(grad, cost)`` (an :class:`Estimate`).

    Knobs (each estimator refuses the others': :data:`KNOBS`):

    * ``tol`` (all; default 1e-10): settling tolerance of the learning process's phases
      (``max |τ dφ/dt|``);
    * ``learner`` (all): the learning process (default :func:`gradient_learner`); its
      ``tol`` is replaced by ``tol``;
    * ``reduce`` (all): ``"mean"`` over tasks (default) or ``"none"``;
    * ``beta`` (cml; default 1e-3), ``estimator`` (cml; ``"standard"``,
      ``"symmetric"`` (default), ``"second_order"``);
    * ``k`` (cg, neumann; default 10): Hessian-vector products of the linear solve;
    * ``alpha`` (neumann): step of the series, > 0 (default ``1/μ_max`` from
      ``power_iters`` (default 20) products of a power iteration, counted in the cost).
    """
    t0 = time.perf_counter()
    O = "estimate"
    P.choice(name, O, "name", NAMES)
    check_kind(net, O)
    if not isinstance(task, Task):
        P.fail(O, "task", "must be a Task", type(task).__name__)
    allowed = KNOBS[name] + COMMON
    for key in knobs:
        if key not in allowed:
            P.fail(O, key, f"is not a knob of {name!r} (its knobs: {', '.join(allowed)})",
                   P.shown(knobs[key]))
    tol = P.real(knobs.get("tol", 1e-10), O, "tol", low=0.0, low_open=True)
    reduce = P.choice(knobs.get("reduce", "mean"), O, "reduce", ("mean", "none"))
    learner = knobs.get("learner")
    if learner is not None and not isinstance(learner, Learner):
        P.fail(O, "learner", "must be a Learner", type(learner).__name__)
    if learner is None:
        learner = gradient_learner(net, tol)
    else:
        learner = copy.copy(learner)
        learner.tol = tol
    net.check_rule(learner.rule)
    if name == "cml":
        grad, cost = _cml(net, task, learner, knobs)
    else:
        grad, cost = _implicit(name, net, task, learner, knobs)
    grad = tree_reduce(grad, reduce, task.batched)
    fields = {f: getattr(cost, f) for f in Cost.fields()}
    fields["wall_s"] = time.perf_counter() - t0
    return Estimate(grad, Cost(**fields))


def _cml(net, task, learner, knobs):
    """CML through :class:`~neuro_meta.CML` itself, its phases' results recorded."""
    beta = knobs.get("beta", 1e-3)
    est = knobs.get("estimator", "symmetric")
    rec = _recording(learner)
    cml = CML(beta=beta, estimator=est, learner=rec)
    grad = cml.estimate(net, task, reduce="none").grad
    if not task.batched:        # estimate(reduce="none") dropped the task axis
        grad = {k: [None if a is None else a[None] for a in v] for k, v in grad.items()}
    cost = Cost()
    for res in rec.phase_log:
        cost = cost + phase_cost(learner, res)
    return grad, cost + Cost(grads=float(len(CML_ESTIMATORS[est])))


def _implicit(name, net, task, learner, knobs):
    """The estimators that start from the free phase's settled state (and Reptile)."""
    O = "estimate"
    xt, yt, xv, yv = task.as_batch()
    B = xt.shape[0]
    pk = Packer(net, B)
    # the knobs are checked before any phase runs
    k = P.integer(knobs.get("k", 10), O, "k", low=0, high=MAX_K)
    iters = P.integer(knobs.get("power_iters", 20), O, "power_iters", low=1, high=MAX_K)
    alpha = knobs.get("alpha")
    if alpha is not None:
        alpha = P.real(alpha, O, "alpha", low=0.0, low_open=True)
    if name == "fomaml":
        lam = pk.broadcast(net.lam)
        if not (lam > 0).all():
            P.fail(O, "net", "must have lam > 0 on every plastic fast variable for "
                   "'fomaml' (its direction divides by the pull's curvature lam)",
                   f"min lam {float(lam.min())!r}")
    if name == "reptile":
        X, Y = np.concatenate([xt, xv], axis=1), np.concatenate([yt, yv], axis=1)
        res = learner.run(net, X, Y)
        phi = [np.asarray(p) for p in res.phi_aug]
        c = np.full(X.shape[:2], 1.0 / X.shape[1])
        return net.theta_partials(phi, X, Y, c), phase_cost(learner, res) + Cost(grads=1.0)
    res = learner.run(net, xt, yt)
    cost = phase_cost(learner, res)
    phi = [np.asarray(p) for p in res.phi_aug]
    g = pk.pack(net.data_grad(phi, xv, yv))
    cost = cost + Cost(grads=1.0, cross=1.0)
    if name == "t1t2":
        u = g
    elif name == "fomaml":
        u = g / lam
    else:
        H = _hessian_operator(net, pk, phi, xt, yt)
        if name == "cg":
            u, n = conjugate_gradient(H, g, k)
            cost = cost + Cost(hvps=float(n))
        else:
            if alpha is None:
                mu = power_iteration(H, g.shape, iters)
                if not (np.isfinite(mu).all() and (mu > 0).all()):
                    P.fail(O, "alpha", "could not be chosen: the power iteration found no "
                           "positive curvature (give alpha)", repr(mu.tolist()[:3]))
                alpha_v = 1.0 / mu
                cost = cost + Cost(hvps=float(iters))
            else:
                alpha_v = np.full(B, alpha)
            u = neumann_series(H, g, k, alpha_v)
            cost = cost + Cost(hvps=float(k))
    grad, direct = _implicit_formula(net, phi, xt, yt, xv, yv, u)
    return grad, cost + Cost(grads=direct)
