"""What every engine shares: the data of a phase, its settings, the recorder and the
divergence test.

* :class:`PhaseInput` -- the samples of one phase for B tasks and their weights;
* :class:`PhaseSpec` -- how a phase is run (rule, integrator, step, duration,
  tolerance, sub-steps, ...), built by :class:`~neuro_meta.Learner` from its options,
  so that engines never reach back into the learner;
* :class:`Recorder` -- the recorded variables;
* :func:`check_finite` -- the divergence test, one message for every engine;
* the validated data, initial state and automatic time step of a phase
  (:func:`phase_input`, :func:`initial_state`, :func:`auto_dt`), which
  :class:`~neuro_meta.Learner` and the Brian2 export share.
"""
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._params import DATA_LIMIT, fail, finite_array, real
from ..errors import SimulationError

#: A state beyond this magnitude (or NaN) is a diverged simulation.
DIVERGENCE_BOUND = 1e10
#: Most time steps one phase may integrate (steps × sub-steps): a phase that would need
#: more is refused before it starts (``Learner.steps_for``) instead of running for hours;
#: a phase the solver settles (``settle="solve"``) is exempt unless it hands tasks over.
MAX_PHASE_STEPS = 10 ** 8
#: Most sub-steps per time step (``Learner.substeps``, ``Learner.max_substeps``).
MAX_SUBSTEPS = 10 ** 4
#: Most right-hand-side evaluations of one ``solve_ivp`` phase (``integrator="scipy"``;
#: the reference runs of the tests need about 2000): beyond it the phase stops with a
#: SimulationError instead of creeping through a stiff or diverging system.
MAX_SCIPY_EVALUATIONS = 10 ** 5
#: Largest magnitude of the nudging strength β of a phase: beyond it the nudged
#: objective is the validation loss alone (times a huge factor) and the sample weights
#: overflow.
BETA_MAX = 1e6


@dataclass
class PhaseInput:
    """Data of one phase for B tasks.

    X: (B, S, n_in) inputs; Y: (B, S, n_out) targets; c: (B, S) sample weights.
    presentation: "batch" or "online"; steps_per_sample: online presentation length.
    """

    X: np.ndarray
    Y: np.ndarray
    c: np.ndarray
    presentation: str
    steps_per_sample: int = 1

    @property
    def n_samples(self):
        return self.X.shape[1]

    def at_step(self, n):
        """Inputs, targets and gains seen at step ``n`` (all samples in batch mode)."""
        if self.presentation == "batch":
            return self.X, self.Y, self.c
        s = (n // self.steps_per_sample) % self.n_samples
        S = self.n_samples
        return self.X[:, s:s + 1], self.Y[:, s:s + 1], self.c[:, s:s + 1] * S

    def subset(self, idx):
        """The phase input of the tasks ``idx``."""
        return PhaseInput(self.X[idx], self.Y[idx], self.c[idx], self.presentation,
                          self.steps_per_sample)


@dataclass(frozen=True)
class PhaseSpec:
    """How one phase is integrated (built by ``Learner.phase_spec``).

    ``dt`` the time step (s); ``n_max`` the maximal number of steps; ``tol`` the settling
    tolerance (None: a fixed duration of ``n_max`` steps); ``check`` the settling test's
    interval (steps); ``substeps`` 1, a count or ``"auto"`` with ``max_substeps``;
    ``beta`` the nudging strength (for messages); ``settle`` ``"integrate"`` or
    ``"solve"`` (phases with a fixed point found by :mod:`.solver`).
    """

    rule: str
    integrator: str
    dt: float
    n_max: int
    tol: Optional[float]
    check: int
    substeps: Any = 1
    max_substeps: int = 64
    scipy_method: str = "LSODA"
    scipy_rtol: float = 1e-10
    scipy_atol: float = 1e-12
    brian2_target: str = "numpy"
    beta: float = 0.0
    settle: str = "integrate"


class Recorder:
    """Stores chosen variables every ``every`` steps; ``engines`` collects the names of
    the engines that integrated the phase."""

    def __init__(self, names, every, dt):
        self.names = list(names)
        self.every = every
        self.dt = dt
        self.t = []
        self.data = {n: [] for n in self.names}
        self.engines = []
        self.substeps = None
        self.solver = None      # per task {"steps", "hvps"} when the solver ran

    def ran(self, engine):
        """Note that ``engine`` integrated (part of) the phase."""
        if engine not in self.engines:
            self.engines.append(engine)

    def maybe(self, n, phi, v, loss_fn):
        if not self.names or n % self.every:
            return
        self.force(n * self.dt, phi, v, loss_fn)

    def force(self, t, phi, v, loss_fn):
        if self.t and abs(self.t[-1] - t) < 1e-12:
            return
        self.t.append(t)
        for name in self.names:
            if name == "phi":
                self.data[name].append([p.copy() for p in phi])
            elif name == "v":
                self.data[name].append([vl.copy() for vl in v])
            elif name == "loss":
                self.data[name].append(loss_fn(phi))


def task_max(arrs):
    """Max |a| over all but the task axis, max over the list: shape (B,)."""
    out = None
    for a in arrs:
        m = np.abs(a).reshape(a.shape[0], -1).max(axis=1) if a.size else np.zeros(a.shape[0])
        out = m if out is None else np.maximum(out, m)
    return out


def task_norm(arrs):
    """Euclidean norm per task over a list of (B, ...) arrays: shape (B,)."""
    return np.sqrt(sum((a * a).reshape(a.shape[0], -1).sum(axis=1) for a in arrs))


def check_finite(phi, v, n, spec, kind, solver=False):
    """Raise :class:`SimulationError` if a fast variable or neuron state of ``kind`` is
    beyond :data:`DIVERGENCE_BOUND` (or NaN) after step ``n`` (the value shown to 4
    significant digits, in full as the error's ``value``; ``step``, ``t``, ``variable``
    too). ``solver``: ``n`` counts the phase solver's steps, which have no time of the
    simulation (``t`` None; the hint names the solver's tolerance, not ``dt``)."""
    dt, beta = spec.dt, spec.beta
    for name, arrs in (("phi", phi), ("v", v)):
        for l, a in enumerate(arrs):
            m = np.abs(a).max() if a.size else 0.0
            if not m < DIVERGENCE_BOUND:
                where = (f"in the phase solver (settle='solve'), after {n} step(s)" if solver
                         else f"at step {n} (t = {n * dt:.6g} s)")
                step = ("" if solver else f"dt (now {dt:g} s), ")
                raise SimulationError(
                    f"Learner.run: the simulation of the {kind.kind_name} diverged {where}: "
                    f"max |{name}[{l}]| = {float(m):.4g}. Hint: reduce {step}the learning "
                    f"speed (increase {kind.kind_name}.{kind.tau_fast_name}), the input scale"
                    + (f" or |beta| (now {beta:g}; a negative beta can make the nudged "
                       "objective non-convex where lam is small)" if beta < 0 else
                       f" or beta (now {beta:g})" if beta else "")
                    + (" -- or settle by integration (settle='integrate'): a solver's fixed "
                       "point this far out means the objective may have no minimum "
                       "(lam = 0 and a loss without one)." if solver else
                       f"; with integrator={spec.integrator!r} a step must stay well "
                       "below the fastest time constant of the system."),
                    step=n, t=None if solver else n * dt, variable=f"{name}[{l}]",
                    value=float(m))


# ---------------------------------------------------------------------- building a phase
def auto_dt(kind, integrator, inp=None, presentation_time=None):
    """The automatic time step of ``kind`` (see ``Learner.dt_for``): ``s · τ_φ /
    (λ_max + h_max)``, ``s = 1`` for RK4/SciPy and 0.5 for (exponential) Euler, at most
    ``τ_φ/20`` and, with dynamic neurons and not exponential Euler, ``τ_v/10``; online
    presentation rounds it down to divide the presentation time."""
    lam_max = 0.0 if integrator == "expeuler" else kind.lam_max()
    curv = kind.curvature(inp)
    safety = 1.0 if integrator in ("rk4", "scipy") else 0.5
    tau = kind.tau_fast
    dt = safety * tau / (lam_max + curv + 1e-12)
    dt = min(dt, tau / 20)
    if kind.tau_neuron > 0 and integrator != "expeuler":
        dt = min(dt, kind.tau_neuron / 10)
    if inp is not None and inp.presentation == "online":
        t_p = presentation_time if presentation_time is not None else tau / 100
        n = np.ceil(t_p / dt - 1e-9) if dt > 0 else np.inf
        if not n <= MAX_PHASE_STEPS:
            fail("Learner", "presentation_time", f"is {n:.3g} automatic steps (dt = {dt:.3g} "
                 f"s, from the stiffness of the {kind.kind_name}), more than a phase may "
                 f"take ({MAX_PHASE_STEPS:.0e}, neuro_meta.learning.MAX_PHASE_STEPS); "
                 "use a shorter presentation_time or rescale the data", repr(t_p))
        dt = t_p / int(n)
    return dt


def presentation_steps(kind, dt, presentation_time, owner="Learner"):
    """Steps per presented sample (online): ``presentation_time / dt``, which must be a
    positive integer."""
    t_p = presentation_time if presentation_time is not None else kind.tau_fast / 100
    ratio = t_p / dt
    if not ratio <= MAX_PHASE_STEPS:
        fail(owner, "presentation_time", f"is {ratio:.3g} steps of dt = {dt:g} s, more than "
             f"a phase may take ({MAX_PHASE_STEPS:.0e}, neuro_meta.learning."
             "MAX_PHASE_STEPS); use a larger dt or a shorter presentation_time", repr(t_p))
    k = int(round(ratio))
    if k < 1 or abs(k * dt - t_p) > 1e-9 * max(t_p, dt):
        fail(owner, "presentation_time", f"must be a positive multiple of dt ({dt:g} s)",
             repr(t_p))
    return k


def set_presentation_steps(kind, inp, dt, integrator, presentation_time, owner="Learner"):
    """For online presentation, set ``inp.steps_per_sample``: ``presentation_time / dt``
    with the given ``dt`` (which must divide it), or with the automatic step (which is
    rounded down to divide it)."""
    if inp.presentation != "online":
        return inp
    if dt is None:
        dt = auto_dt(kind, integrator, inp, presentation_time)
    inp.steps_per_sample = presentation_steps(kind, dt, presentation_time, owner)
    return inp


def validate_data(kind, x, y, name_x="x", name_y="y", owner="Learner.run"):
    """Validated data of ``kind``: (X (B,K,n_in), Y (B,K,n_out), had_task_axis)."""
    x = finite_array(x, owner, name_x, ndim=(2, 3), max_abs=DATA_LIMIT)
    y = finite_array(y, owner, name_y, ndim=(2, 3), max_abs=DATA_LIMIT)
    if x.ndim != y.ndim:
        fail(owner, name_y, f"must have the same number of dimensions as {name_x} "
             f"({x.ndim})", f"shape {y.shape}")
    batched = x.ndim == 3
    shape_x, shape_y = x.shape, y.shape   # as given, for messages
    if not batched:
        x, y = x[None], y[None]
    if x.shape[-1] != kind.n_in:
        fail(owner, name_x, f"last axis must match the network's input layer "
             f"({kind.n_in} units)", f"shape {x.shape if batched else x.shape[1:]}")
    if y.shape[-1] != kind.n_out:
        fail(owner, name_y, f"last axis must match the network's output layer "
             f"({kind.n_out} units)", f"shape {y.shape if batched else y.shape[1:]}")
    if x.shape[:2] != y.shape[:2]:
        fail(owner, name_y, f"must have as many {'tasks and ' if batched else ''}samples "
             f"as {name_x} {shape_x[:-1]}", f"shape {shape_y}")
    if x.shape[1] == 0:
        fail(owner, name_x, "needs at least one sample", f"shape {x.shape}")
    if x.shape[0] == 0:
        fail(owner, name_x, "needs at least one task on the leading (task) axis",
             f"shape {shape_x}")
    return x, y, batched


def phase_input(kind, x, y, x_val=None, y_val=None, beta=0.0, presentation="batch",
                owner="Learner.run"):
    """Validated data of one phase as a :class:`PhaseInput` with the sample weights
    ``c = 1/K`` for the K training shots and ``beta/V`` for the V validation points
    (nudged phase); ``steps_per_sample`` is left at 1 (the caller sets it for online
    presentation). Returns ``(inp, batched, K)``."""
    X, Y, batched = validate_data(kind, x, y, owner=owner)
    kind.loss.check_targets(Y, owner, "y")
    B, K = X.shape[:2]
    beta = real(beta, owner, "beta", low=-BETA_MAX, high=BETA_MAX)
    c = np.full((B, K), 1.0 / K)
    if beta != 0.0 or x_val is not None or y_val is not None:
        if x_val is None or y_val is None:      # (with beta = 0 they are checked, unused:
            fail(owner, "x_val" if x_val is None else "y_val",     # a sweep over beta
                 "is required when beta != 0" if beta != 0.0 else  # may pass them always)
                 "must be given with " + ("x_val" if x_val is not None else "y_val"), "None")
        Xv, Yv, bv = validate_data(kind, x_val, y_val, "x_val", "y_val", owner=owner)
        kind.loss.check_targets(Yv, owner, "y_val")
        if bv != batched or Xv.shape[0] != B:
            fail(owner, "x_val", f"must have the same task axis as x ({B} tasks)"
                 if batched else "must have no task axis, like x", f"shape {np.shape(x_val)}")
    if beta != 0.0:
        V = Xv.shape[1]
        X = np.concatenate([X, Xv], axis=1)
        Y = np.concatenate([Y, Yv], axis=1)
        c = np.concatenate([c, np.full((B, V), beta / V)], axis=1)
    return PhaseInput(X, Y, c, presentation, 1), batched, K


def initial_state(kind, phi_init, B, owner="Learner.run"):
    """Validated initial fast variables for ``B`` tasks (one array per fast array, with a
    task axis), from ``phi_init`` (a list, each entry with or without the task axis) or
    the kind's φ₀."""
    names, init = kind.fast_names, kind.phi0
    if phi_init is not None and (not isinstance(phi_init, (list, tuple))
                                 or len(phi_init) != len(init)):
        fail(owner, "phi_init", f"must be a list of {len(init)} arrays ({', '.join(names)})",
             type(phi_init).__name__ if not isinstance(phi_init, (list, tuple))
             else f"{len(phi_init)} arrays")
    out = []
    for i, (name, p0) in enumerate(zip(names, init)):
        p = p0 if phi_init is None else finite_array(phi_init[i], owner, f"phi_init[{i}]")
        if p.shape == p0.shape:
            p = np.broadcast_to(p, (B,) + p0.shape)
        elif p.shape != (B,) + p0.shape:
            fail(owner, f"phi_init[{i}]", f"({name}) must have shape {p0.shape} or "
                 f"{(B,) + p0.shape}", f"shape {p.shape}")
        out.append(np.array(p, dtype=np.float64))
    return out
