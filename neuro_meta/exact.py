"""Exact reference meta-gradient by implicit differentiation, for any model kind.

At the settled free state φ* the inner objective's gradient vanishes,
``∇φ L_in(φ*, θ) = 0``. The implicit function theorem gives the exact meta-gradient::

    dL_out/dθ = ∂θ L_out(φ*) − (∂²φθ L_in)ᵀ u,      H u = ∇φ L_out(φ*),
    H = ∂²φφ L_in(φ*) = ∇²L_trn + diag(λ)

The model kind (:mod:`neuro_meta.kind`) supplies the pieces: ``data_grad``
(``∇φ L``), ``data_hvp`` (Hessian-vector products of ``L``), ``cross``
(``(∂²φθ L_in)ᵀ u``) and ``theta_partials_out`` (``∂θ L_out``, zero unless θ enters the
network directly). For complex synapses (``∂²ωφ L_in = −diag(λ)``, ``∂²λφ L_in =
diag(φ − ω)``) this reads::

    dL_out/dω = λ ⊙ u,      dL_out/dλ = −(φ* − ω) ⊙ u

``method="dense"`` builds H from ``P`` Hessian-vector products and solves it;
``method="cg"`` uses conjugate gradients (``scipy.sparse.linalg.cg``) with
Hessian-vector products only. The settled state given by the learning process is first
polished with Newton steps so that the reference is exact to rounding. A singular H (a
fixed point that is not unique, e.g. ``lam = 0`` with fewer shots than inputs) is a
:class:`~neuro_meta.errors.SimulationError` naming the task, never a huge or non-finite
result (:data:`MAX_CONDITION`). This is a
verification tool: it uses second derivatives, which CML never does.
"""
import numpy as np

from . import _params as P
from .cml import default_learner, tree_reduce
from .engines.phase import validate_data
from .errors import SimulationError
from .kind import Packer, check_kind
from .learning import Learner
from .tasks import Task


#: A Hessian whose condition number exceeds this is singular: a
#: :class:`~neuro_meta.errors.SimulationError`, not a result. ``method="dense"`` uses
#: LAPACK's estimate (:func:`condition_numbers`); every solve also checks its
#: amplification ``‖u‖ ‖H‖ / ‖rhs‖`` (a lower bound of the condition number).
MAX_CONDITION = 1e12
#: Most Newton steps polishing a settled state.
MAX_NEWTON_STEPS = 100


def _singular(kind, task, cond):
    """The error of a singular Hessian (task index and estimated condition number)."""
    cond = "infinite" if not np.isfinite(cond) else f"about {cond:.3g} > {MAX_CONDITION:g}"
    return SimulationError(
        f"exact_meta_gradient: the Hessian of the inner objective H = d2 L_trn/dphi2 + "
        f"diag(lam) at the settled state of task {task} is singular (condition number "
        f"{cond}): the fixed point is not unique, so its meta-gradient is undefined. "
        f"Hint: give the {kind.kind_name}'s fast variables a pull lam > 0 (with lam = 0 "
        "and fewer shots than inputs the training loss has a valley of minima)")


def _check_solution(kind, H_norm, rhs, u):
    """Raise :func:`_singular` where ``H u = rhs`` was singular: a non-finite ``u`` or an
    amplification ``‖u‖ ‖H‖ / ‖rhs‖`` beyond :data:`MAX_CONDITION` (per task)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        nu = np.linalg.norm(u, axis=-1)
        nr = np.linalg.norm(rhs, axis=-1)
        amp = np.where(nu > 0, nu * H_norm / np.where(nr > 0, nr, np.inf), 0.0)
    bad = ~np.isfinite(nu) | ~(amp <= MAX_CONDITION)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _singular(kind, i, amp[i] if np.isfinite(nu[i]) else np.inf)


def condition_numbers(H):
    """LAPACK's estimate of the 1-norm condition number of every task's H (B, P, P)
    (``getrf`` + ``gecon``, about the cost of one more solve); inf where singular."""
    from scipy.linalg import lapack

    out = np.empty(H.shape[0])
    for b, Hb in enumerate(H):
        lu, _, info = lapack.dgetrf(Hb)
        rcond = 0.0
        if info == 0:
            rcond, _ = lapack.dgecon(lu, float(np.abs(Hb).sum(axis=0).max()), norm="1")
        out[b] = 1.0 / rcond if rcond > 0 else np.inf
    return out


def hess_vec(kind, pk, phi, X, Y, vec):
    """``H vec`` with ``H = ∇²L_trn + diag(λ)``; vec (..., B, P)."""
    h = kind.data_hvp(phi, X, Y, pk.unpack(vec))
    return pk.pack(h) + pk.broadcast(kind.lam) * vec


def dense_hessian(kind, pk, phi, X, Y, chunk=64):
    """H for every task, (B, P, P), from P Hessian-vector products (in chunks)."""
    B, Pn = pk.B, pk.P
    H = np.empty((B, Pn, Pn))
    for start in range(0, Pn, chunk):
        stop = min(Pn, start + chunk)
        E = np.zeros((stop - start, B, Pn))
        E[np.arange(stop - start), :, np.arange(start, stop)] = 1.0
        H[:, :, start:stop] = np.moveaxis(hess_vec(kind, pk, phi, X, Y, E), 0, -1)
    return 0.5 * (H + np.swapaxes(H, -1, -2))


def solve(kind, pk, phi, X, Y, rhs, method, cg_rtol=1e-13):
    """Solve ``H u = rhs`` per task; rhs (B, P)."""
    if method == "dense":
        H = dense_hessian(kind, pk, phi, X, Y)
        if not np.isfinite(H).all():
            raise SimulationError("exact_meta_gradient: the Hessian of the inner objective "
                                  "is not finite at the settled state. Hint: rescale the "
                                  "data or reduce the weights")
        cond = condition_numbers(H)
        bad = ~(cond <= MAX_CONDITION)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _singular(kind, i, cond[i])
        try:
            u = np.linalg.solve(H, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:   # pragma: no cover - caught by the estimate above
            raise _singular(kind, 0, np.inf) from None
        _check_solution(kind, np.abs(H).max(axis=(-2, -1)), rhs, u)   # <= ‖H‖₂
        return u
    from scipy.sparse.linalg import LinearOperator, cg

    B, Pn = rhs.shape

    def mv(z):
        return hess_vec(kind, pk, phi, X, Y, z.reshape(B, Pn)).ravel()

    op = LinearOperator((B * Pn, B * Pn), matvec=mv, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # singular H:
        sol, info = cg(op, rhs.ravel(), rtol=cg_rtol, atol=0.0,      # reported below
                       maxiter=20 * B * Pn)
    if info != 0:
        raise SimulationError(f"exact_meta_gradient: conjugate gradient did not converge "
                              f"(info={info}); the Hessian of the inner objective may be "
                              "singular or indefinite (settled state not a unique minimum). "
                              "Hint: a pull lam > 0, or method='dense'")
    u = sol.reshape(B, Pn)
    # ‖H‖ estimated from the product along u itself (a lower bound: the check is safe)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        Hu = hess_vec(kind, pk, phi, X, Y, u)
        nu = np.linalg.norm(u, axis=-1)
        H_norm = np.where(nu > 0, np.linalg.norm(Hu, axis=-1) / np.where(nu > 0, nu, 1.0),
                          0.0)
    _check_solution(kind, H_norm, rhs, u)
    return u


# ---------------------------------------------------------------------- public
def fixed_point(net, x, y, learner=None, tol=1e-12, newton_steps=None, method="auto",
                cg_rtol=1e-13):
    """The settled free state φ* of tasks ``(x, y)`` (B, K, ...), found by the learning
    process and polished with Newton steps on ``∇φ L_in = 0``: exact to rounding.
    Returns ``(phi, method)`` (the method resolved from ``"auto"``)."""
    O = "fixed_point"
    check_kind(net, O)
    X, Y, batched = validate_data(net, x, y, owner=O)
    if not batched:
        P.fail(O, "x", "must have a leading task axis: shape (tasks, samples, inputs) "
               "(a Task's as_batch() gives it)", f"shape {np.shape(X[0])}")
    P.choice(method, O, "method", ("auto", "dense", "cg"))
    cg_rtol = P.real(cg_rtol, O, "cg_rtol", low=0.0, low_open=True)
    tol = P.real(tol, O, "tol", low=0.0, low_open=True)
    return _fixed_point(net, X, Y, learner, tol, newton_steps, method, cg_rtol, O)


def _fixed_point(net, x, y, learner, tol, newton_steps, method, cg_rtol, O):
    """:func:`fixed_point` of checked arguments (``net`` a model kind, ``x``/``y``
    batched arrays; ``O``: the public function, for messages)."""
    net.check_exact()
    learner = learner if learner is not None else default_learner(net, tol)
    if not isinstance(learner, Learner):
        P.fail(O, "learner", "must be a Learner", type(learner).__name__)
    newton_steps = net.newton_steps if newton_steps is None else \
        P.integer(newton_steps, O, "newton_steps", low=0, high=MAX_NEWTON_STEPS)
    phi = [np.array(p) for p in learner.run(net, x, y).phi_aug]
    pk = Packer(net, x.shape[0])
    if method == "auto":
        method = "dense" if pk.P <= 1500 else "cg"
    lam, anchor = pk.broadcast(net.lam), pk.broadcast(net.anchor)
    for _ in range(newton_steps):
        gradF = pk.pack(net.data_grad(phi, x, y)) + lam * (pk.pack(phi) - anchor)
        step = solve(net, pk, phi, x, y, gradF, method, cg_rtol)
        new = pk.unpack(pk.pack(phi) - step)
        phi = [n if n is not None else p for n, p in zip(new, phi)]
    return phi, method


def exact_meta_gradient(net, task, method="auto", learner=None, tol=1e-12,
                        newton_steps=None, cg_rtol=1e-13, reduce="mean"):
    """The exact meta-gradient ``dL_out(φ*(θ))/dθ`` by implicit differentiation.

    Parameters
    ----------
    net : RateNetwork, DualSystem or another model kind
    task : Task
    method : {"auto", "dense", "cg"}
        Dense Hessian solve, or conjugate gradient with Hessian-vector products
        (``auto``: dense up to 1500 plastic parameters per task).
    learner : Learner, optional
        Learning process that finds the settled free state (default: as CML's).
    tol : float
        Settling tolerance of the default learner.
    newton_steps : int, optional
        Newton polishing steps on the settled state (default: the kind's
        ``newton_steps``, 2).
    cg_rtol : float
        Relative tolerance of the conjugate-gradient solves.
    reduce : {"mean", "none"}
        Average over tasks, or keep a leading task axis.

    Returns
    -------
    dict in the structure of ``net.theta``.
    """
    O = "exact_meta_gradient"
    check_kind(net, O)
    if not isinstance(task, Task):
        P.fail(O, "task", "must be a Task", type(task).__name__)
    P.choice(method, O, "method", ("auto", "dense", "cg"))
    P.choice(reduce, O, "reduce", ("mean", "none"))
    cg_rtol = P.real(cg_rtol, O, "cg_rtol", low=0.0, low_open=True)
    tol = P.real(tol, O, "tol", low=0.0, low_open=True)
    xt, yt, xv, yv = task.as_batch()
    phi, method = _fixed_point(net, xt, yt, learner, tol, newton_steps, method, cg_rtol, O)
    pk = Packer(net, xt.shape[0])
    u = solve(net, pk, phi, xt, yt, pk.pack(net.data_grad(phi, xv, yv)), method, cg_rtol)
    cross = net.cross(phi, pk.unpack(u), xt, yt)
    direct = net.theta_partials_out(phi, xv, yv) or {}
    out = {}
    for k, parts in cross.items():
        d = direct.get(k, [None] * len(parts))
        out[k] = [None if c is None else (-c if o is None else o - c)
                  for o, c in zip(d, parts)]
    bad = [f"{k}[{i}]" for k, parts in out.items() for i, a in enumerate(parts)
           if a is not None and not np.isfinite(a).all()]
    if bad:
        raise SimulationError(f"exact_meta_gradient: the meta-gradient of {bad[0]} is not "
                              "finite. Hint: rescale the data, or give the fast variables "
                              "a pull lam > 0")
    return tree_reduce(out, reduce, task.batched)


def outer_loss(net, task, learner=None, tol=1e-12, newton_steps=None):
    """``L_out(φ*(θ))`` averaged over the tasks (for finite-difference checks of the
    exact reference and of CML). ``net``, ``task``, ``learner``, ``tol`` and
    ``newton_steps`` as for :func:`exact_meta_gradient`."""
    O = "outer_loss"
    check_kind(net, O)
    if not isinstance(task, Task):
        P.fail(O, "task", "must be a Task", type(task).__name__)
    tol = P.real(tol, O, "tol", low=0.0, low_open=True)
    xt, yt, xv, yv = task.as_batch()
    phi, _ = _fixed_point(net, xt, yt, learner, tol, newton_steps, "auto", 1e-13, O)
    return float(net.loss_value(xv, yv, phi).mean())
