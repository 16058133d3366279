"""The numpy engine: integrates the learning process of any model kind for a batch of
tasks.

State of one phase, for B tasks (see :mod:`neuro_meta.kind`):

* ``phi``: the kind's fast arrays, each with a leading task axis (B, ...);
* ``v``: the kind's neuron state, one copy per sample presented at once (S = number of
  shots for batch presentation, 1 for online), e.g. a rate network's potentials
  (B, S, n) per layer.

Equations (:class:`~neuro_meta.kind.Dynamics`)::

    tau_v   dv/dt   = -v + currents(phi, v, x)                     (tau_v > 0)
    tau_phi dphi/dt = g(phi, v; x, y, c) - lam (phi - anchor)      (plastic arrays)

with ``g = -dF/dphi`` of the data term ``F = sum_s c_s loss_s`` (``c = 1/K`` for the K
training shots, ``beta/V`` for the V validation points of a nudged phase). With online
presentation, one sample is shown at a time with gain ``c_s * S_cycle``, so that a full
cycle averages to the batch signal.

Step order (Euler and exponential Euler), the order the Brian2 engine sets with its
objects' ``when``/``order`` attributes: all neurons are advanced first using the rates
at the start of the step, then the fast variables are advanced using the neuron states
at the *end* of the step. RK4 and SciPy integrate the joint system with the usual
simultaneous right-hand side.

:func:`run_phase` drives a phase: sub-steps (:func:`substeps_for`) and the reruns of
tasks that stiffen, then the loop itself -- on an *accelerator* (the compiled kernels of
:mod:`neuro_meta.engines.fused`) when one supports the case, else on :func:`integrate`,
the numpy loop. :func:`run_scipy` is the ``solve_ivp`` reference.
"""
import dataclasses

import numpy as np

from ..errors import SimulationError
from ..kind import task_shape
from . import solver
from .phase import (MAX_PHASE_STEPS, MAX_SCIPY_EVALUATIONS, PhaseInput, Recorder,
                    check_finite, task_max, task_norm)

# ---------------------------------------------------------------------- integrators
def expeuler_factor(lam, h):
    """Exponential Euler's step factor ``(1 − e^{−λh})/λ`` (``h`` where λ = 0), with
    ``h = dt/τ``: ``φ + factor·(g − λ(φ − anchor))`` integrates the pull exactly."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lam > 0, -np.expm1(-lam * h) / np.where(lam > 0, lam, 1.0), h)


def _at(s, a):
    """A step-size factor ``s`` for array ``a``: a scalar, or per task ((B,) reshaped to
    broadcast against ``a``) when tasks take different sub-steps."""
    return task_shape(s, a) if isinstance(s, np.ndarray) else s


def _step_split(dyn, phi, v, x, y, c, dt, exponential):
    """Euler / exponential Euler, neurons first, then synapses (Brian2's order).
    ``dt``: the step, a scalar or per task (B,)."""
    if dyn.tau_v > 0:
        cur = dyn.currents(phi, v, x)
        if exponential:
            a = np.exp(-dt / dyn.tau_v)
            v = [i + (vl - i) * _at(a, vl) for i, vl in zip(cur, v)]
        else:
            k = dt / dyn.tau_v
            v = [vl + _at(k, vl) * (i - vl) for i, vl in zip(cur, v)]
    else:
        v = dyn.steady_v(phi, x)
    g = dyn.plasticity(phi, v, x, y, c)
    new = []
    for l, (p, gl) in enumerate(zip(phi, g)):
        if not dyn.plastic[l]:
            new.append(p)
        elif exponential:
            lam = dyn.lam[l]
            h = dt / dyn.tau_phi
            new.append(p + expeuler_factor(lam, _at(h, p)) * gl)
        else:
            new.append(p + _at(dt / dyn.tau_phi, p) * gl)
    return new, v, g


def _step_rk4(dyn, phi, v, x, y, c, dt):
    def f(ph, vv):
        dv, dphi, g, _ = dyn.rhs(ph, vv, x, y, c)
        return dv, dphi, g

    def add(a, b, h):
        return [ai + _at(h, bi) * bi for ai, bi in zip(a, b)]

    dv1, dp1, g1 = f(phi, v)
    if dyn.tau_v > 0:
        dv2, dp2, _ = f(add(phi, dp1, dt / 2), add(v, dv1, dt / 2))
        dv3, dp3, _ = f(add(phi, dp2, dt / 2), add(v, dv2, dt / 2))
        dv4, dp4, _ = f(add(phi, dp3, dt), add(v, dv3, dt))
        v = [vl + _at(dt / 6, vl) * (a + 2 * b + 2 * cc + d)
             for vl, a, b, cc, d in zip(v, dv1, dv2, dv3, dv4)]
    else:
        _, dp2, _ = f(add(phi, dp1, dt / 2), v)
        _, dp3, _ = f(add(phi, dp2, dt / 2), v)
        _, dp4, _ = f(add(phi, dp3, dt), v)
    phi = [p + _at(dt / 6, p) * (a + 2 * b + 2 * cc + d)
           for p, a, b, cc, d in zip(phi, dp1, dp2, dp3, dp4)]
    if dyn.tau_v == 0:
        v = dyn.steady_v(phi, x)
    return phi, v, g1


STEPPERS = {
    "euler": lambda dyn, phi, v, x, y, c, dt: _step_split(dyn, phi, v, x, y, c, dt, False),
    "expeuler": lambda dyn, phi, v, x, y, c, dt: _step_split(dyn, phi, v, x, y, c, dt, True),
    "rk4": _step_rk4,
}



# ---------------------------------------------------------------------- stiffness
POWER_ITERATIONS = 20   # power iterations of the stiffness estimate
STIFFNESS_SAFETY = 1.0  # sub-step h with h mu <= SAFETY tau_phi (stability ends at 2)
RERUN_LIMIT = 1.5       # h mu / tau_phi at a phase's end beyond which the task is run again


def stiffness(dyn, phi, inp):
    """Largest eigenvalue (modulus) of each task's synaptic Jacobian ``-d(tau_phi
    dphi/dt)/dphi`` (the Hessian of the phase's objective plus ``lam``), shape (B,).

    A power iteration of :data:`POWER_ITERATIONS` products, each a finite difference of
    the synaptic right-hand side (neurons at their steady state); the start vector is
    the same fixed pseudo-random direction for every task, so a task's estimate depends
    on its own data and state only, not on the batch it runs in. Batch presentation."""
    x, y, c = inp.X, inp.Y, inp.c
    B = phi[0].shape[0]

    def rhs(ph):
        return dyn.plasticity(ph, dyn.steady_v(ph, x), x, y, c)

    rng = np.random.default_rng(20261122)
    u = [np.broadcast_to(rng.standard_normal(p.shape[1:]) * pl, p.shape)
         for p, pl in zip(phi, dyn.plastic)]
    nrm = task_norm(u)
    u = [a / task_shape(nrm, a) for a in u]
    scale = np.max([np.abs(p).reshape(B, -1).max(axis=1) for p in phi], axis=0)
    eps = 1e-6 * (1.0 + scale)
    g0 = rhs(phi)
    mu = np.zeros(B)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(POWER_ITERATIONS):
            g1 = rhs([p + task_shape(eps, p) * a for p, a in zip(phi, u)])
            Au = [(a - b) / task_shape(eps, a) for a, b in zip(g0, g1)]
            mu = task_norm(Au)
            ok = mu > 0
            u = [np.where(task_shape(ok, a), a / task_shape(np.where(ok, mu, 1.0), a), b)
                 for a, b in zip(Au, u)]
    return np.where(np.isfinite(mu), mu, np.inf)


def substeps_for(dyn, spec, phi, inp):
    """Sub-steps per task (int array (B,)) for a phase starting at ``phi``: ``1`` for
    ``substeps=1``, the given count, or with ``"auto"`` the least count whose sub-step
    ``h = dt/m`` satisfies ``h mu <= STIFFNESS_SAFETY tau_phi`` (``mu``: the task's
    :func:`stiffness`; forward Euler is stable up to ``h mu = 2 tau_phi``) and, for
    dynamic neurons with Euler or RK4, ``h <= tau_v``; at most ``spec.max_substeps``."""
    B = phi[0].shape[0]
    dt = spec.dt
    if spec.substeps != "auto":
        return np.full(B, int(spec.substeps), dtype=np.int64)
    mu = stiffness(dyn, phi, inp)
    with np.errstate(over="ignore", invalid="ignore"):
        need = dt * mu / (STIFFNESS_SAFETY * dyn.tau_phi)
    if dyn.tau_v > 0 and spec.integrator != "expeuler":
        need = np.maximum(need, dt / dyn.tau_v)
    need = np.minimum(need, float(spec.max_substeps))   # inf (a NaN state) included
    m = np.ceil(need - 1e-9)
    return np.clip(np.nan_to_num(m, nan=1.0), 1, spec.max_substeps).astype(np.int64)


# ---------------------------------------------------------------------- phase driver
class Phase:
    """One phase's fixed context: the kind, its dynamics, the data, the settings, the
    recorded names and the accelerators (compiled loops tried before the numpy loop).
    """

    def __init__(self, kind, inp, spec, record=(), record_every=1, loss_fn=None,
                 accelerators=()):
        self.kind = kind
        self.dyn = kind.dynamics(spec.rule)
        self.inp = inp
        self.spec = spec
        self.record = tuple(record)
        self.record_every = record_every
        self.loss_fn = loss_fn
        self.accelerators = tuple(accelerators)

    def recorder(self, names=None):
        return Recorder(self.record if names is None else names, self.record_every,
                        self.spec.dt)

    def subset(self, idx):
        """The same phase for the tasks ``idx`` (nothing recorded)."""
        out = Phase(self.kind, self.inp.subset(idx), self.spec, (), 1, self.loss_fn,
                    self.accelerators)
        out.dyn = self.dyn
        return out


def run_phase(kind, inp, phi_init, spec, record=(), record_every=1, loss_fn=None,
              accelerators=()):
    """Integrate one phase. Returns (phi, v, recorder, settled (B,), t_end, steps).

    With a tolerance, settling is tested every ``spec.check`` steps; a task that has
    settled is frozen while the others go on, and the phase ends when all have settled
    or at the maximal duration.

    With ``substeps="auto"`` each task's sub-steps are chosen from its stiffness at the
    start (:func:`substeps_for`). A learning process can stiffen as it learns, so a task
    that ends the phase unsettled (or any task of a fixed-duration phase) whose
    stiffness at the end is beyond ``RERUN_LIMIT`` for its sub-step is run again from
    the start with twice the sub-steps, until it is not (or reaches
    ``spec.max_substeps``). Every decision depends on the task's own data and state
    only: the same numbers batched, alone, or on any engine.
    """
    ph = Phase(kind, inp, spec, record, record_every, loss_fn, accelerators)
    phi = [np.array(p, dtype=np.float64) for p in phi_init]
    if spec.settle == "solve" and solver.why_not(kind, spec, inp, record) is None:
        return _solve_then_integrate(ph, phi)
    x0, _, _ = inp.at_step(0)
    v = ph.dyn.steady_v(phi, x0)
    if spec.integrator == "scipy":
        return run_scipy(ph, phi, v)
    m = substeps_for(ph.dyn, spec, phi, inp)
    out = integrate_any(ph, phi, v, ph.recorder(), m)
    if spec.substeps == "auto":
        out, m = _rerun_stiffened(ph, phi, v, out, m)
    out[2].substeps = m
    return out


def _solve_then_integrate(ph, phi):
    """Settle by solving (:mod:`.solver`); the tasks the solver hands over are integrated
    from where it left them."""
    phi_s, v_s, rec, settled, t_end, steps, handed = solver.solve_phase(ph, phi)
    idx = np.flatnonzero(handed)
    if not idx.size:
        return phi_s, v_s, rec, settled, t_end, steps
    spec = dataclasses.replace(ph.spec, settle="integrate")
    per_step = spec.substeps if isinstance(spec.substeps, int) else 1
    if spec.n_max * per_step > MAX_PHASE_STEPS:
        raise SimulationError(
            f"Learner.run: the phase solver did not settle {idx.size} task(s) of the "
            f"{ph.kind.kind_name} to tol={spec.tol:g}, and integrating them would take up "
            f"to {spec.n_max:.3g} steps of dt = {spec.dt:.3g} s, more than the maximum of "
            f"{MAX_PHASE_STEPS:.0e} steps per phase (neuro_meta.learning.MAX_PHASE_STEPS). "
            "Hint: a larger tol, a larger dt or a shorter max_duration; a task that never "
            "settles may have no minimum (lam = 0 and too few shots)")
    part = run_phase(ph.kind, ph.inp.subset(idx), [p[idx] for p in phi_s], spec,
                     accelerators=ph.accelerators)
    work = rec.solver
    out = _splice((phi_s, v_s, rec, settled, t_end, steps), idx, part, spec.dt)
    out[2].solver = work
    t_all = max(t_end, part[4])
    out[2].t[:] = [t_all]
    return out[0], out[1], out[2], out[3], t_all, max(steps, part[5])


def _rerun_stiffened(ph, phi, v, out, m):
    """Run again, with twice the sub-steps, the tasks whose stiffness at the end of the
    phase is beyond :data:`RERUN_LIMIT` for their sub-step (see :func:`run_phase`);
    returns the final (result, sub-steps)."""
    spec, dyn = ph.spec, ph.dyn
    while True:
        phi_e, _, _, settled, _, _ = out
        cand = (~settled if spec.tol is not None else np.ones_like(settled)) \
            & (m < spec.max_substeps)
        idx = np.flatnonzero(cand)
        if not idx.size:
            return out, m
        mu = stiffness(dyn, [p[idx] for p in phi_e], ph.inp.subset(idx))
        with np.errstate(over="ignore", invalid="ignore"):
            stiff = ~(spec.dt * mu / (m[idx] * dyn.tau_phi) <= RERUN_LIMIT)
        idx = idx[stiff]
        if not idx.size:
            return out, m
        m = m.copy()
        m[idx] = np.minimum(2 * m[idx], spec.max_substeps)
        if ph.record:    # the recorded series: the whole batch again (same numbers for
            engines = out[2].engines   # the tasks whose m is unchanged)
            out = integrate_any(ph, phi, v, ph.recorder(), m)
            for e in engines:
                out[2].ran(e)
            continue
        sub = integrate_any(ph.subset(idx), [p[idx] for p in phi], [a[idx] for a in v],
                            Recorder((), 1, spec.dt), m[idx])
        out = _splice(out, idx, sub, spec.dt)


def _splice(out, idx, part, dt):
    """The phase result ``out`` with the tasks ``idx`` taken from ``part`` (a result of
    those tasks alone); steps and time are the longest of both."""
    phi_e = [p.copy() for p in out[0]]
    v_e = [a.copy() for a in out[1]]
    settled = out[3].copy()
    for p, q in zip(phi_e, part[0]):
        p[idx] = q
    for a, b in zip(v_e, part[1]):
        a[idx] = b
    settled[idx] = part[3]
    n = max(out[5], part[5])
    rec = out[2]
    rec.t[:] = [n * dt]
    for e in part[2].engines:
        rec.ran(e)
    return phi_e, v_e, rec, settled, n * dt, n


def integrate_any(ph, phi, v, rec, m):
    """The phase loop with ``m`` sub-steps per task: on the first accelerator that
    supports the case, else on the numpy loop (:func:`integrate`)."""
    for acc in ph.accelerators:
        if acc.why_not(ph.kind, ph.spec, ph.inp, rec.names, m) is None:
            rec.ran(acc.NAME)
            return acc.run_phase(ph.kind, ph.inp, phi, v, ph.spec, rec, ph.loss_fn,
                                 substeps=m)
    groups = np.unique(m)
    if groups.size > 1 and not rec.names:
        # tasks are independent: each group of equal sub-steps runs alone (no task waits
        # through sub-steps it does not take)
        out = None
        for k in groups:
            idx = np.flatnonzero(m == k)
            part = integrate_any(ph.subset(idx), [p[idx] for p in phi], [a[idx] for a in v],
                                 Recorder((), 1, ph.spec.dt), m[idx])
            out = _splice(out, idx, part, ph.spec.dt) if out is not None else \
                _splice(([p.copy() for p in phi], [a.copy() for a in v], rec,
                         np.zeros(len(m), bool), 0.0, 0), idx, part, ph.spec.dt)
        return out
    rec.ran(NAME)
    return integrate(ph, phi, v, rec, m)


#: Name of this engine in results and messages.
NAME = "numpy"


def why_not(kind, spec, inp, record=(), substeps=None):
    """Why the numpy loop cannot run this phase (None: it can -- every kind, every
    presentation and integrator)."""
    return None


def integrate(ph, phi, v, rec, m):
    """The numpy loop: ``spec.n_max`` steps (or until every task has settled), each of
    ``m`` sub-steps per task; a settled task is frozen."""
    dyn, inp, spec = ph.dyn, ph.inp, ph.spec
    step = STEPPERS[spec.integrator]
    dt, n_max, tol, check = spec.dt, spec.n_max, spec.tol, spec.check
    B = phi[0].shape[0]
    settled = np.zeros(B, dtype=bool)
    prev_phi = [p.copy() for p in phi]
    n = 0
    rec.maybe(0, phi, v, ph.loss_fn)
    frozen = None   # tasks that have settled keep their state (see below)
    uniform = bool((m == 1).all())
    h = dt if uniform else dt / m   # each task's sub-step, (B,)
    m_max = int(m.max()) if B else 1
    with np.errstate(over="ignore", invalid="ignore"):
        while n < n_max:
            x, y, c = inp.at_step(n)
            for sub in range(m_max):
                new_phi, new_v, g = step(dyn, phi, v, x, y, c, h)
                keep = frozen if uniform else (sub >= m if frozen is None else frozen
                                               | (sub >= m))
                if keep is not None and keep.any():
                    new_phi = [np.where(task_shape(keep, p), p, q)
                               for p, q in zip(phi, new_phi)]
                    new_v = [np.where(task_shape(keep, a), a, b) for a, b in zip(v, new_v)]
                phi, v = new_phi, new_v
            n += 1
            check_finite(phi, v, n, spec, ph.kind)
            rec.maybe(n, phi, v, ph.loss_fn)
            if tol is not None and n % check == 0:
                settled |= settled_tasks(dyn, phi, v, prev_phi, inp, n, check, dt, tol)
                if settled.all():
                    break
                if settled.any():
                    # A settled task stops integrating, so that its result does not depend
                    # on which other tasks share its batch (same numbers batched, alone,
                    # or split across workers).
                    frozen = settled.copy()
                prev_phi = [p.copy() for p in phi]
    rec.force(n * dt, phi, v, ph.loss_fn)
    if tol is None:
        settled[:] = False
    return phi, v, rec, settled, n * dt, n


def settled_tasks(dyn, phi, v, prev_phi, inp, n, check, dt, tol):
    """Per task: is ``max |tau_phi dphi/dt|`` (and the neurons' residual) below tol?

    Batch presentation: the derivative at the current state. Online presentation: the
    drift of phi over one full presentation cycle, times tau_phi / cycle duration.
    """
    if inp.presentation == "online":
        drift = [(p - q) * (dyn.tau_phi / (check * dt)) for p, q in zip(phi, prev_phi)]
        return task_max(drift) < tol
    x, y, c = inp.at_step(n)
    dv, _, gcur, _ = dyn.rhs(phi, v, x, y, c)
    res = task_max([gl for gl, pl in zip(gcur, dyn.plastic) if pl])
    if dv is not None:
        res = np.maximum(res, task_max([d * dyn.tau_v for d in dv]))
    return res < tol


class _Stop(Exception):
    """Raised inside ``solve_ivp``'s right-hand side to stop it (its argument: t)."""


def run_scipy(ph, phi, v):
    """Reference integration with scipy.integrate.solve_ivp (fixed duration), stopped
    with a :class:`SimulationError` after :data:`~.phase.MAX_SCIPY_EVALUATIONS`
    right-hand-side evaluations."""
    from scipy.integrate import solve_ivp

    dyn, inp, spec, rec = ph.dyn, ph.inp, ph.spec, ph.recorder()
    rec.ran("scipy")
    dt = spec.dt
    shapes_p = [p.shape for p in phi]
    shapes_v = [vl.shape for vl in v] if dyn.tau_v > 0 else []
    sizes = [int(np.prod(s)) for s in shapes_p + shapes_v]
    split_at = np.cumsum(sizes)[:-1]

    def unpack(z):
        parts = np.split(z, split_at)
        ph_ = [a.reshape(s) for a, s in zip(parts[:len(shapes_p)], shapes_p)]
        vv = [a.reshape(s) for a, s in zip(parts[len(shapes_p):], shapes_v)]
        return ph_, vv

    evaluations = [0]

    def fun(t, z):
        evaluations[0] += 1
        if evaluations[0] > MAX_SCIPY_EVALUATIONS:
            raise _Stop(t)
        ph_, vv = unpack(z)
        n = int(np.floor(t / dt + 1e-9))
        x, y, c = inp.at_step(n)
        if dyn.tau_v == 0:
            vv = [None] * len(ph_)
        dv, dphi, _, _ = dyn.rhs(ph_, vv, x, y, c)
        parts = [d.ravel() for d in dphi] + ([d.ravel() for d in dv] if dv else [])
        return np.concatenate(parts)

    n_steps = spec.n_max
    t_end = n_steps * dt
    z0 = np.concatenate([p.ravel() for p in phi] + ([vl.ravel() for vl in v]
                                                    if dyn.tau_v > 0 else []))
    t_eval = None
    if rec.names:
        t_eval = np.arange(0, n_steps + 1, rec.every) * dt
        t_eval = t_eval[t_eval <= t_end + 1e-12]
    max_step = (inp.steps_per_sample * dt) if inp.presentation == "online" else np.inf
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            sol = solve_ivp(fun, (0.0, t_end), z0, method=spec.scipy_method, t_eval=t_eval,
                            rtol=spec.scipy_rtol, atol=spec.scipy_atol, max_step=max_step)
    except _Stop as stop:
        t = stop.args[0]
        raise SimulationError(
            f"Learner.run: solve_ivp ({spec.scipy_method}) stopped at t = {t:.6g} s of "
            f"{t_end:g} s after {MAX_SCIPY_EVALUATIONS:.0e} right-hand-side evaluations "
            "(neuro_meta.learning.MAX_SCIPY_EVALUATIONS). Hint: the system is too stiff "
            "or diverging for this tolerance: rescale the data, loosen scipy_rtol/"
            "scipy_atol, try scipy_method='LSODA' or 'Radau', or use a fixed-step "
            "integrator") from None
    if not sol.success:
        raise SimulationError(f"Learner.run: solve_ivp failed: {sol.message}")
    if rec.names:
        for k, t in enumerate(sol.t):
            ph_, vv = unpack(sol.y[:, k])
            if dyn.tau_v == 0:
                x, _, _ = inp.at_step(int(np.floor(t / dt + 1e-9)))
                vv = dyn.steady_v(ph_, x)
            rec.force(t, ph_, vv, ph.loss_fn)
    phi, v = unpack(sol.y[:, -1])
    if dyn.tau_v == 0:
        x, _, _ = inp.at_step(n_steps)
        v = dyn.steady_v(phi, x)
    check_finite(phi, v, n_steps, spec, ph.kind)
    rec.force(t_end, phi, v, ph.loss_fn)
    return phi, v, rec, np.zeros(phi[0].shape[0], dtype=bool), t_end, n_steps
