"""The numpy engine: integrates neurons and fast weights of a batch of tasks.

State of one phase, for B tasks:

* ``v[l]``: membrane potentials of layer ``l+1``, shape (B, S, n), one copy per sample
  presented at once (S = number of shots for batch presentation, 1 for online);
* ``phi[l]``: augmented fast weights of connection ``l``, shape (B, n_post, n_pre[+1]).

Equations (see :class:`~neuro_meta.learning.Learner`)::

    tau_v   dv/dt   = -v + W r_pre + b                                   (neurons)
    tau_phi dphi/dt = sum_s c_s delta_s [r_pre,s; 1]^T - lam (phi - omega)  (synapses)

where ``delta_s`` is the learning signal of sample s: at the output layer
``(y_s - r_s) f'(v_s)``; in hidden layers (``backprop``) ``(W^T delta_above) f'(v)``.
``c_s`` weighs the samples so that ``sum_s c_s delta_s r_s^T = -dF/dphi`` with
``F = L_trn + beta L_out`` (``c = 1/K`` for the K training shots, ``beta/V`` for the V
validation points). With online presentation, one sample is shown at a time with gain
``c_s * S_cycle``, so that a full cycle averages to the batch signal.

Step order (Euler and exponential Euler), the order the Brian2 engine sets with its
objects' ``when``/``order`` attributes: all
neurons are advanced first using the rates at the start of the step, then the synapses
are advanced using the neuron states at the *end* of the step. RK4 and SciPy integrate
the joint system with the usual simultaneous right-hand side.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import SimulationError
from ..network import drive, split_aug

DIVERGENCE_BOUND = 1e10


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


class Dynamics:
    """Right-hand sides of the learning process for one network and rule."""

    def __init__(self, net, rule):
        self.net = net
        self.rule = rule
        self.conns = net.connections
        self.acts = net.activations
        self.tau_v = net.tau_neuron
        self.tau_phi = net.tau_synapse
        self.omega = [c.omega for c in self.conns]
        self.lam = [c.lam for c in self.conns]
        self.plastic = [c.plastic for c in self.conns]

    # -- neurons ---------------------------------------------------------------
    def currents(self, phi, v, x):
        """Synaptic currents of every layer, with rates taken from the state ``v``
        (or, for instantaneous neurons, from the currents of the layer below)."""
        r = x
        out = []
        for l, (c, act) in enumerate(zip(self.conns, self.acts)):
            i_l = drive(phi[l], r, c)
            out.append(i_l)
            r = act.f(v[l] if self.tau_v > 0 else i_l)
        return out

    def steady_v(self, phi, x):
        """Neuron potentials at steady state for inputs ``x`` (instantaneous chain)."""
        r = x
        out = []
        for l, (c, act) in enumerate(zip(self.conns, self.acts)):
            v = drive(phi[l], r, c)
            out.append(v)
            r = act.f(v)
        return out

    # -- synapses --------------------------------------------------------------
    def plasticity(self, phi, v, x, y, c):
        """``tau_phi dphi/dt`` for every connection (zeros for static synapses)."""
        rates = [x] + [act.f(vl) for act, vl in zip(self.acts, v)]
        L = len(self.conns)
        delta = (y - rates[L]) * self.acts[-1].df(v[-1]) * c[..., None]
        out = [None] * L
        for l in range(L - 1, -1, -1):
            conn = self.conns[l]
            if conn.plastic:
                g = np.matmul(np.swapaxes(delta, -1, -2), rates[l])
                if conn.has_bias:
                    g = np.concatenate([g, delta.sum(axis=-2)[..., None]], axis=-1)
                out[l] = g - self.lam[l] * (phi[l] - self.omega[l])
            else:
                out[l] = np.zeros_like(phi[l])
            if l > 0 and self.rule == "backprop":
                w, _ = split_aug(phi[l], conn)
                delta = np.matmul(delta, w) * self.acts[l - 1].df(v[l - 1])
            elif l > 0:
                delta = np.zeros_like(v[l - 1])
        return out

    def rhs(self, phi, v, x, y, c):
        """Simultaneous right-hand side: (dv/dt list, dphi/dt list, tau_phi dphi/dt list)."""
        if self.tau_v > 0:
            cur = self.currents(phi, v, x)
            dv = [(i - vl) / self.tau_v for i, vl in zip(cur, v)]
            v_used = v
        else:
            v_used = self.steady_v(phi, x)
            dv = None
        g = self.plasticity(phi, v_used, x, y, c)
        return dv, [gl / self.tau_phi for gl in g], g, v_used


# ---------------------------------------------------------------------- integrators
def _step_split(dyn, phi, v, x, y, c, dt, exponential):
    """Euler / exponential Euler, neurons first, then synapses (Brian2's order)."""
    if dyn.tau_v > 0:
        cur = dyn.currents(phi, v, x)
        if exponential:
            a = np.exp(-dt / dyn.tau_v)
            v = [i + (vl - i) * a for i, vl in zip(cur, v)]
        else:
            k = dt / dyn.tau_v
            v = [vl + k * (i - vl) for i, vl in zip(cur, v)]
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
            with np.errstate(divide="ignore", invalid="ignore"):
                fac = np.where(lam > 0, -np.expm1(-lam * h) / np.where(lam > 0, lam, 1.0), h)
            new.append(p + fac * gl)
        else:
            new.append(p + (dt / dyn.tau_phi) * gl)
    return new, v, g


def _step_rk4(dyn, phi, v, x, y, c, dt):
    def f(ph, vv):
        dv, dphi, g, _ = dyn.rhs(ph, vv, x, y, c)
        return dv, dphi, g

    def add(a, b, h):
        return [ai + h * bi for ai, bi in zip(a, b)]

    dv1, dp1, g1 = f(phi, v)
    if dyn.tau_v > 0:
        dv2, dp2, _ = f(add(phi, dp1, dt / 2), add(v, dv1, dt / 2))
        dv3, dp3, _ = f(add(phi, dp2, dt / 2), add(v, dv2, dt / 2))
        dv4, dp4, _ = f(add(phi, dp3, dt), add(v, dv3, dt))
        v = [vl + dt / 6 * (a + 2 * b + 2 * cc + d)
             for vl, a, b, cc, d in zip(v, dv1, dv2, dv3, dv4)]
    else:
        _, dp2, _ = f(add(phi, dp1, dt / 2), v)
        _, dp3, _ = f(add(phi, dp2, dt / 2), v)
        _, dp4, _ = f(add(phi, dp3, dt), v)
    phi = [p + dt / 6 * (a + 2 * b + 2 * cc + d)
           for p, a, b, cc, d in zip(phi, dp1, dp2, dp3, dp4)]
    if dyn.tau_v == 0:
        v = dyn.steady_v(phi, x)
    return phi, v, g1


STEPPERS = {
    "euler": lambda dyn, phi, v, x, y, c, dt: _step_split(dyn, phi, v, x, y, c, dt, False),
    "expeuler": lambda dyn, phi, v, x, y, c, dt: _step_split(dyn, phi, v, x, y, c, dt, True),
    "rk4": _step_rk4,
}


# ---------------------------------------------------------------------- recording
class Recorder:
    """Stores chosen variables every ``every`` steps."""

    def __init__(self, names, every, dt):
        self.names = list(names)
        self.every = every
        self.dt = dt
        self.t = []
        self.data = {n: [] for n in self.names}

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


def _check_finite(phi, v, n, dt, learner, beta):
    for name, arrs in (("phi", phi), ("v", v)):
        for l, a in enumerate(arrs):
            m = np.abs(a).max() if a.size else 0.0
            if not m < DIVERGENCE_BOUND:
                raise SimulationError(
                    f"Learner.run: the simulation diverged at step {n} (t = {n * dt:.6g} s): "
                    f"max |{name}[{l}]| = {float(m)!r}. Hint: reduce dt (now {dt:g} s), the "
                    "learning speed (increase tau_synapse), the input scale"
                    + (f" or |beta| (now {beta:g}; a negative beta can make the nudged "
                       "objective non-convex where lam is small)" if beta < 0 else
                       f" or beta (now {beta:g})" if beta else "")
                    + f"; with integrator={learner.integrator!r} a step must stay well "
                    "below the fastest time constant of the system.")


# ---------------------------------------------------------------------- stiffness
POWER_ITERATIONS = 20   # power iterations of the stiffness estimate
STIFFNESS_SAFETY = 1.0  # sub-step h with h mu <= SAFETY tau_phi (stability ends at 2)
RERUN_LIMIT = 1.5       # h mu / tau_phi at a phase's end beyond which the task is run again


def _task_norm(arrs):
    """Euclidean norm per task over a list of (B, ...) arrays: shape (B,)."""
    return np.sqrt(sum((a * a).reshape(a.shape[0], -1).sum(axis=1) for a in arrs))


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
    nrm = _task_norm(u)
    u = [a / nrm[:, None, None] for a in u]
    scale = np.max([np.abs(p).reshape(B, -1).max(axis=1) for p in phi], axis=0)
    eps = (1e-6 * (1.0 + scale))[:, None, None]
    g0 = rhs(phi)
    mu = np.zeros(B)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(POWER_ITERATIONS):
            g1 = rhs([p + eps * a for p, a in zip(phi, u)])
            Au = [(a - b) / eps for a, b in zip(g0, g1)]
            mu = _task_norm(Au)
            ok = mu > 0
            u = [np.where(ok[:, None, None], a / np.where(ok, mu, 1.0)[:, None, None], b)
                 for a, b in zip(Au, u)]
    return np.where(np.isfinite(mu), mu, np.inf)


def substeps_for(dyn, learner, phi, inp, dt):
    """Sub-steps per task (int array (B,)) for a phase starting at ``phi``: ``1`` for
    ``Learner(substeps=1)``, the given count, or with ``"auto"`` the least count whose
    sub-step ``h = dt/m`` satisfies ``h mu <= STIFFNESS_SAFETY tau_phi`` (``mu``: the
    task's :func:`stiffness`; forward Euler is stable up to ``h mu = 2 tau_phi``) and,
    for dynamic neurons with Euler or RK4, ``h <= tau_v``; at most
    ``learner.max_substeps``."""
    B = phi[0].shape[0]
    sub = getattr(learner, "substeps", 1)
    if sub != "auto":
        return np.full(B, int(sub), dtype=np.int64)
    mu = stiffness(dyn, phi, inp)
    with np.errstate(over="ignore", invalid="ignore"):
        need = dt * mu / (STIFFNESS_SAFETY * dyn.tau_phi)
    if dyn.tau_v > 0 and learner.integrator != "expeuler":
        need = np.maximum(need, dt / dyn.tau_v)
    need = np.minimum(need, float(learner.max_substeps))   # inf (a NaN state) included
    m = np.ceil(need - 1e-9)
    return np.clip(np.nan_to_num(m, nan=1.0), 1, learner.max_substeps).astype(np.int64)


# ---------------------------------------------------------------------- phase loop
def run_phase(net, inp, phi_init, learner, record=(), record_every=1, beta=0.0,
              loss_fn=None):
    """Integrate one phase. Returns (phi, v, recorder, settled (B,), t_end, steps).

    With a tolerance, settling is tested every ``learner.check_every`` steps; a task that
    has settled is frozen while the others go on, and the phase ends when all have
    settled or at the maximal duration.

    With ``Learner(substeps="auto")`` each task's sub-steps are chosen from its stiffness
    at the start (:func:`substeps_for`). A learning process can stiffen as it learns, so
    a task that ends the phase unsettled (or any task of a fixed-duration phase) whose
    stiffness at the end is beyond ``RERUN_LIMIT`` for its sub-step is run again from
    the start with twice the sub-steps, until it is not (or reaches
    ``learner.max_substeps``). Every decision depends on the task's own data and state
    only: the same numbers batched, alone, or on any engine.
    """
    dyn = Dynamics(net, learner.rule)
    dt = learner.dt_for(net, inp)
    phi = [np.array(p, dtype=np.float64) for p in phi_init]
    x0, _, _ = inp.at_step(0)
    v = dyn.steady_v(phi, x0)
    rec = Recorder(record, record_every, dt)
    if learner.integrator == "scipy":
        return _run_scipy(dyn, inp, phi, v, learner, rec, dt, beta, loss_fn)
    m = substeps_for(dyn, learner, phi, inp, dt)
    out = _integrate(dyn, net, inp, phi, v, learner, dt, beta, rec, loss_fn, m)
    if getattr(learner, "substeps", 1) != "auto":
        out[2].substeps = m
        return out
    _, tol = learner.steps_for(net, inp)
    while True:
        phi_e, v_e, rec_e, settled, t_end, n = out
        cand = (~settled if tol is not None else np.ones_like(settled)) \
            & (m < learner.max_substeps)
        idx = np.flatnonzero(cand)
        if not idx.size:
            out[2].substeps = m
            return out
        mu = stiffness(dyn, [p[idx] for p in phi_e], _subset(inp, idx))
        with np.errstate(over="ignore", invalid="ignore"):
            stiff = ~(dt * mu / (m[idx] * dyn.tau_phi) <= RERUN_LIMIT)
        idx = idx[stiff]
        if not idx.size:
            out[2].substeps = m
            return out
        m = m.copy()
        m[idx] = np.minimum(2 * m[idx], learner.max_substeps)
        if rec.names:    # the recorded series: the whole batch again (same numbers for
            rec = Recorder(record, record_every, dt)   # the tasks whose m is unchanged)
            out = _integrate(dyn, net, inp, phi, v, learner, dt, beta, rec, loss_fn, m)
            continue
        sub = _integrate(dyn, net, _subset(inp, idx), [p[idx] for p in phi],
                         [a[idx] for a in v], learner, dt, beta, Recorder((), 1, dt),
                         loss_fn, m[idx])
        out = _splice(out, idx, sub, dt)



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
    return phi_e, v_e, rec, settled, n * dt, n


def _subset(inp, idx):
    """The phase input of the tasks ``idx``."""
    return PhaseInput(inp.X[idx], inp.Y[idx], inp.c[idx], inp.presentation,
                      inp.steps_per_sample)


def _integrate(dyn, net, inp, phi, v, learner, dt, beta, rec, loss_fn, m):
    """The phase loop (fused kernel when it supports the case) with ``m`` sub-steps per
    task."""
    from . import fused   # the same loop compiled (numba), when it supports the case
    if fused.supports(net, learner, inp, rec.names, m):
        return fused.run_phase(net, inp, phi, v, learner, dt, beta, rec, loss_fn,
                               substeps=m)
    groups = np.unique(m)
    if groups.size > 1 and not rec.names:
        # tasks are independent: each group of equal sub-steps runs alone (no task waits
        # through sub-steps it does not take)
        out = None
        for k in groups:
            idx = np.flatnonzero(m == k)
            part = _integrate(dyn, net, _subset(inp, idx), [p[idx] for p in phi],
                              [a[idx] for a in v], learner, dt, beta, Recorder((), 1, dt),
                              loss_fn, m[idx])
            out = _splice(out, idx, part, dt) if out is not None else \
                _splice(([p.copy() for p in phi], [a.copy() for a in v], rec,
                         np.zeros(len(m), bool), 0.0, 0), idx, part, dt)
        return out
    step = STEPPERS[learner.integrator]
    n_max, tol = learner.steps_for(net, inp)
    check = learner.check_every(inp)
    B = phi[0].shape[0]
    settled = np.zeros(B, dtype=bool)
    prev_phi = [p.copy() for p in phi]
    n = 0
    rec.maybe(0, phi, v, loss_fn)
    frozen = None   # tasks that have settled keep their state (see below)
    uniform = bool((m == 1).all())
    h = dt if uniform else (dt / m)[:, None, None]   # each task's sub-step
    m_max = int(m.max()) if B else 1
    with np.errstate(over="ignore", invalid="ignore"):
        while n < n_max:
            x, y, c = inp.at_step(n)
            for sub in range(m_max):
                new_phi, new_v, g = step(dyn, phi, v, x, y, c, h)
                keep = frozen if uniform else (sub >= m if frozen is None else frozen
                                               | (sub >= m))
                if keep is not None and keep.any():
                    k = keep[:, None, None]
                    new_phi = [np.where(k, p, q) for p, q in zip(phi, new_phi)]
                    new_v = [np.where(k, a, b) for a, b in zip(v, new_v)]
                phi, v = new_phi, new_v
            n += 1
            _check_finite(phi, v, n, dt, learner, beta)
            rec.maybe(n, phi, v, loss_fn)
            if tol is not None and n % check == 0:
                settled |= _settled(dyn, phi, v, prev_phi, g, inp, n, check, dt, tol)
                if settled.all():
                    break
                if settled.any():
                    # A settled task stops integrating, so that its result does not depend
                    # on which other tasks share its batch (same numbers batched, alone,
                    # or split across workers).
                    frozen = settled.copy()
                prev_phi = [p.copy() for p in phi]
    rec.force(n * dt, phi, v, loss_fn)
    if tol is None:
        settled[:] = False
    return phi, v, rec, settled, n * dt, n


def _task_max(arrs):
    """Max |a| over all but the task axis, max over the list: shape (B,)."""
    out = None
    for a in arrs:
        m = np.abs(a).reshape(a.shape[0], -1).max(axis=1) if a.size else np.zeros(a.shape[0])
        out = m if out is None else np.maximum(out, m)
    return out


def _settled(dyn, phi, v, prev_phi, g, inp, n, check, dt, tol):
    """Per task: is ``max |tau_phi dphi/dt|`` (and the neurons' residual) below tol?

    Batch presentation: the derivative at the current state. Online presentation: the
    drift of phi over one full presentation cycle, times tau_phi / cycle duration.
    """
    if inp.presentation == "online":
        drift = [(p - q) * (dyn.tau_phi / (check * dt)) for p, q in zip(phi, prev_phi)]
        return _task_max(drift) < tol
    x, y, c = inp.at_step(n)
    dv, _, gcur, _ = dyn.rhs(phi, v, x, y, c)
    res = _task_max([gl for gl, pl in zip(gcur, dyn.plastic) if pl])
    if dv is not None:
        res = np.maximum(res, _task_max([d * dyn.tau_v for d in dv]))
    return res < tol


def _run_scipy(dyn, inp, phi, v, learner, rec, dt, beta, loss_fn):
    """Reference integration with scipy.integrate.solve_ivp (fixed duration)."""
    from scipy.integrate import solve_ivp

    shapes_p = [p.shape for p in phi]
    shapes_v = [vl.shape for vl in v] if dyn.tau_v > 0 else []
    sizes = [int(np.prod(s)) for s in shapes_p + shapes_v]
    split_at = np.cumsum(sizes)[:-1]

    def unpack(z):
        parts = np.split(z, split_at)
        ph = [a.reshape(s) for a, s in zip(parts[:len(shapes_p)], shapes_p)]
        vv = [a.reshape(s) for a, s in zip(parts[len(shapes_p):], shapes_v)]
        return ph, vv

    def fun(t, z):
        ph, vv = unpack(z)
        n = int(np.floor(t / dt + 1e-9))
        x, y, c = inp.at_step(n)
        if dyn.tau_v == 0:
            vv = [None] * len(ph)
        dv, dphi, _, _ = dyn.rhs(ph, vv, x, y, c)
        parts = [d.ravel() for d in dphi] + ([d.ravel() for d in dv] if dv else [])
        return np.concatenate(parts)

    n_steps, _ = learner.steps_for(dyn.net, inp)
    t_end = n_steps * dt
    z0 = np.concatenate([p.ravel() for p in phi] + ([vl.ravel() for vl in v]
                                                    if dyn.tau_v > 0 else []))
    t_eval = None
    if rec.names:
        t_eval = np.arange(0, n_steps + 1, rec.every) * dt
        t_eval = t_eval[t_eval <= t_end + 1e-12]
    max_step = (inp.steps_per_sample * dt) if inp.presentation == "online" else np.inf
    sol = solve_ivp(fun, (0.0, t_end), z0, method=learner.scipy_method, t_eval=t_eval,
                    rtol=learner.scipy_rtol, atol=learner.scipy_atol, max_step=max_step)
    if not sol.success:
        raise SimulationError(f"Learner.run: solve_ivp failed: {sol.message}")
    if rec.names:
        for k, t in enumerate(sol.t):
            ph, vv = unpack(sol.y[:, k])
            if dyn.tau_v == 0:
                x, _, _ = inp.at_step(int(np.floor(t / dt + 1e-9)))
                vv = dyn.steady_v(ph, x)
            rec.force(t, ph, vv, loss_fn)
    phi, v = unpack(sol.y[:, -1])
    if dyn.tau_v == 0:
        x, _, _ = inp.at_step(n_steps)
        v = dyn.steady_v(phi, x)
    _check_finite(phi, v, n_steps, dt, learner, beta)
    rec.force(t_end, phi, v, loss_fn)
    return phi, v, rec, np.zeros(phi[0].shape[0], dtype=bool), t_end, n_steps
