"""Fused compiled kernels of the numpy engine's phase loop (numba).

The equations, the step order and the settling rule are the numpy engine's (see
:mod:`neuro_meta.engines.numpy_engine`); this module runs the *same* loop as one
compiled function per phase, with no Python work per time step:

* the tasks of a batch run in parallel (``numba.prange`` over tasks, one thread per
  task at a time), each with its whole phase loop: a task stops at the first settling
  test it passes (its state is then frozen, as in the numpy engine) and the phase's
  step count is the maximum over tasks;
* within a task, one step is: neurons (Euler or exponential Euler, from the rates at the
  start of the step; instantaneous neurons take their steady state), the output error,
  then one pass over the synapses of every connection, output connection first, that
  sends the error down (``backprop``, through the start-of-step weights), updates the
  fast weights (``tau_phi dphi/dt = sum_s c_s delta_s [r_s; 1]^T - lam (phi - omega)``)
  and accumulates the next step's synaptic currents from the new weights while the row
  of weights is in the cache;
* divergence is tested at every step in the same pass (``not |x| < 1e10``, NaN
  included); the kernel reports per task the first bad step, and :func:`run_phase`
  replays the phase up to the earliest one and raises the numpy engine's
  :class:`~neuro_meta.errors.SimulationError` (same step, same message).

Summation order differs from numpy's (the kernels are compiled with reassociation so
that sums vectorise), so results agree with the numpy engine to rounding (~1e-15
relative), not bit for bit.

Supported (:func:`supports`): integrators ``euler`` and ``expeuler``; rules ``delta`` and
``backprop``; batch and online presentation; any number of layers of the built-in
activations; biases or not; static and complex synapses; ``tau_neuron`` = 0 or > 0;
fixed durations and settling tolerances; no recording. Anything else (RK4, SciPy,
recorded variables, user-defined activations) runs on the numpy engine's Python loop.
Without numba installed, :data:`AVAILABLE` is False and everything runs on numpy.
"""
import contextlib
import math

import numpy as np

from . import numpy_engine as npe

try:  # numba is an optional dependency (the "fast" extra)
    import numba
    from numba import njit, prange
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised by monkeypatching AVAILABLE
    numba = None
    AVAILABLE = False

#: Activation name -> code understood by the kernels.
ACT_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "softplus": 4}

# Reassociation lets sums vectorise; no "nnan"/"ninf": NaN and inf must be detected.
_FASTMATH = {"reassoc", "contract"}


@contextlib.contextmanager
def disabled():
    """Within the block, the numpy engine runs its Python loop (for comparisons and
    benchmarks: the fused kernel vs the reference loop on the same phase)."""
    global AVAILABLE
    old = AVAILABLE
    AVAILABLE = False
    try:
        yield
    finally:
        AVAILABLE = old


def supports(net, learner, inp, record=()):
    """Whether :func:`run_phase` can run this phase (else the numpy loop does)."""
    if not AVAILABLE or record or learner.integrator not in ("euler", "expeuler"):
        return False
    from ..activations import ACTIVATIONS

    for act in net.activations:
        if ACTIVATIONS.get(act.name) is not act or act.name not in ACT_CODES:
            return False
    return inp.presentation in ("batch", "online")


# ====================================================================== kernels
if AVAILABLE:
    _jit = njit(cache=True, fastmath=_FASTMATH, nogil=True)

    @_jit
    def _f(code, v):
        """Rate r = f(v) (the numpy engine's activations)."""
        if code == 0:
            return v
        if code == 1:
            return math.tanh(v)
        if code == 2:
            return 1.0 / (1.0 + math.exp(-v))
        if code == 3:
            return v if not v <= 0.0 else 0.0
        # softplus = logaddexp(0, v), written as numpy does
        if v > 0.0:
            return v + math.log1p(math.exp(-v))
        return math.log1p(math.exp(v))

    @_jit
    def _df(code, v, r):
        """f'(v), using the stored rate r = f(v) where numpy's derivative does."""
        if code == 0:
            return 1.0
        if code == 1:
            return 1.0 - r * r
        if code == 2:
            return r * (1.0 - r)
        if code == 3:
            return 1.0 if v > 0.0 else 0.0
        return 1.0 / (1.0 + math.exp(-v))

    @_jit
    def _row_drive(ph, row, n_pre, hb, R, s, pre0):
        """Input of one postsynaptic unit for sample copy ``s``: the weight row starting
        at ``row`` times the presynaptic rates, plus the bias column if ``hb``."""
        acc = 0.0
        for i in range(n_pre):
            acc += ph[row + i] * R[s, pre0 + i]
        if hb:
            acc = acc + ph[row + n_pre]
        return acc

    @_jit
    def _forward(ph, base, n_pre, n_post, hb, R, pre0, I, post0, Se):
        """``I[s, post] = W R[s, pre] + b`` of one connection for every sample copy."""
        ncol = n_pre + hb
        if base < 0 or n_pre < 0 or ncol < 0 or pre0 < 0 or post0 < 0:   # see _conn_pass
            return
        for j in range(n_post):
            row = base + j * ncol
            for s in range(Se):
                I[s, post0 + j] = _row_drive(ph, row, n_pre, hb, R, s, pre0)

    @_jit
    def _conn_pass(ph, base, n_pre, n_post, hb, plastic, R, pre0, D, post0, down,
                   omega, lam, fac, h, exponential, update, RN, I, fuse, gbuf, Se, bound):
        """One pass over the synapses of a connection.

        ``down``: first send the error down, ``D[s, pre] = sum_j phi[j, pre] D[s, j]``
        (start-of-pass weights; the caller multiplies by f'). ``update``: advance the
        plastic weights, ``phi += fac * (g - lam (phi - omega))`` with
        ``g = sum_s D[s, post] [R[s, pre]; 1]`` (``fac`` per synapse for exponential
        Euler, else the scalar ``h``), and with ``fuse`` store the next step's currents
        ``I = phi_new [RN; 1]``; returns (ok, 0): ``ok`` is False when a new weight is not
        below ``bound``. Without ``update``: returns (True, max |g - lam (phi - omega)|)
        over the plastic synapses (the settling residual).
        """
        ok = True
        res = 0.0
        ncol = n_pre + hb
        if base < 0 or n_pre < 0 or ncol < 0 or pre0 < 0 or post0 < 0:
            # never true; tells the compiler that indices are >= 0, so that it drops the
            # negative-index handling and vectorises the inner loops (~4x faster)
            return ok, res
        if down:
            for s in range(Se):
                for i in range(n_pre):
                    D[s, pre0 + i] = 0.0
        for j in range(n_post):
            row = base + j * ncol
            if down:
                for s in range(Se):
                    d = D[s, post0 + j]
                    for i in range(n_pre):
                        D[s, pre0 + i] += ph[row + i] * d
            if plastic:
                if update and Se == 1 and fuse:
                    # online / single sample: one fused loop (update + next current)
                    d = D[0, post0 + j]
                    acc = 0.0
                    okr = True
                    if exponential:
                        for i in range(n_pre):
                            p = ph[row + i]
                            q = p + fac[row + i] * (d * R[0, pre0 + i]
                                                    - lam[row + i] * (p - omega[row + i]))
                            ph[row + i] = q
                            acc += q * RN[0, pre0 + i]
                            okr &= abs(q) < bound
                    else:
                        for i in range(n_pre):
                            p = ph[row + i]
                            q = p + h * (d * R[0, pre0 + i] - lam[row + i] * (p - omega[row + i]))
                            ph[row + i] = q
                            acc += q * RN[0, pre0 + i]
                            okr &= abs(q) < bound
                    if hb:
                        k = row + n_pre
                        p = ph[k]
                        f = fac[k] if exponential else h
                        q = p + f * (d - lam[k] * (p - omega[k]))
                        ph[k] = q
                        okr &= abs(q) < bound
                        acc = acc + q
                    I[0, post0 + j] = acc
                    ok &= okr
                    continue
                for i in range(ncol):
                    gbuf[i] = 0.0
                for s in range(Se):
                    d = D[s, post0 + j]
                    for i in range(n_pre):
                        gbuf[i] += d * R[s, pre0 + i]
                    if hb:
                        gbuf[n_pre] += d
                if update:
                    okr = True
                    if exponential:
                        for i in range(ncol):
                            p = ph[row + i]
                            q = p + fac[row + i] * (gbuf[i] - lam[row + i] * (p - omega[row + i]))
                            ph[row + i] = q
                            okr &= abs(q) < bound
                    else:
                        for i in range(ncol):
                            p = ph[row + i]
                            q = p + h * (gbuf[i] - lam[row + i] * (p - omega[row + i]))
                            ph[row + i] = q
                            okr &= abs(q) < bound
                    ok &= okr
                else:
                    for i in range(ncol):
                        a = abs(gbuf[i] - lam[row + i] * (ph[row + i] - omega[row + i]))
                        if not a <= res:
                            res = a
            if update and fuse:
                for s in range(Se):
                    I[s, post0 + j] = _row_drive(ph, row, n_pre, hb, RN, s, pre0)
        return ok, res

    @_jit
    def _output_error(R, V, D, Yb, Cb, s0, Se, gain, n0, n_out, code):
        """``D = (y - r) f'(v) c`` at the output layer (sample copies s, data row s0 + s)."""
        for s in range(Se):
            c = Cb[s0 + s] * gain
            for j in range(n_out):
                r = R[s, n0 + j]
                D[s, n0 + j] = (Yb[s0 + s, j] - r) * _df(code, V[s, n0 + j], r) * c

    @_jit
    def _residual(ph, conn, sizes, noff, acts, R, V, D, Yb, Cb, s0, gain, omega, lam,
                  backprop, gbuf, Se):
        """max |tau_phi dphi/dt| over the plastic synapses at rates R, potentials V."""
        L = sizes.shape[0] - 1
        _output_error(R, V, D, Yb, Cb, s0, Se, gain, noff[L], sizes[L], acts[L - 1])
        res = 0.0
        for l in range(L - 1, -1, -1):
            down = backprop and l > 0
            _, r = _conn_pass(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2],
                              conn[l, 1] == 1, R, noff[l], D, noff[l + 1], down, omega, lam,
                              lam, 0.0, False, False, R, D, False, gbuf, Se, 0.0)
            if not r <= res:
                res = r
            if down:
                _scale_by_df(R, V, D, noff[l], sizes[l], acts[l - 1], Se)
        return res

    @_jit
    def _scale_by_df(R, V, D, n0, n, code, Se):
        for s in range(Se):
            for i in range(n):
                D[s, n0 + i] *= _df(code, V[s, n0 + i], R[s, n0 + i])

    @_jit
    def _load_inputs(R, Xb, s0, Se, n_in):
        for s in range(Se):
            for i in range(n_in):
                R[s, i] = Xb[s0 + s, i]

    @_jit
    def _steady(ph, conn, sizes, noff, acts, R, V, I, Se, from_layer):
        """Instantaneous neurons: ``v_l = I_l``, ``r_l = f(v_l)``, computing the currents
        of the layers above ``from_layer`` (those of ``from_layer`` are in I)."""
        L = sizes.shape[0] - 1
        for l in range(L):
            n0, n = noff[l + 1], sizes[l + 1]
            if l > from_layer:
                _forward(ph, conn[l, 0], sizes[l], n, conn[l, 2], R, noff[l], I, n0, Se)
            for s in range(Se):
                for j in range(n):
                    v = I[s, n0 + j]
                    V[s, n0 + j] = v
                    R[s, n0 + j] = _f(acts[l], v)

    @_jit
    def _task(ph, V, Xb, Yb, Cb, omega, lam, fac, conn, sizes, noff, acts, online, k_pres,
              n_max, check, tol, tau_phi, dt, tau_v, a_v, exponential, backprop, h, bound):
        """The phase loop of one task; returns (steps, settled, first bad step or 0)."""
        L = sizes.shape[0] - 1
        Se = V.shape[0]
        S = Xb.shape[0]
        ntot = V.shape[1]
        n_in = sizes[0]
        R = np.zeros((Se, ntot))
        RN = np.zeros((Se, ntot))
        I = np.zeros((Se, ntot))
        D = np.zeros((Se, ntot))
        maxcol = 1
        for l in range(L):
            maxcol = max(maxcol, sizes[l] + conn[l, 2])
        gbuf = np.zeros(maxcol)
        use_tol = tol > 0.0
        prev = ph.copy() if (use_tol and online) else np.zeros(0, ph.dtype)
        R2 = np.zeros((Se, ntot) if (use_tol and not online) else (0, ntot))
        V2 = np.zeros((Se, ntot) if (use_tol and not online) else (0, ntot))
        I2 = np.zeros((Se, ntot) if (use_tol and not online) else (0, ntot))
        D2 = np.zeros((Se, ntot) if (use_tol and not online) else (0, ntot))
        dyn = tau_v > 0.0
        gain = float(S) if online else 1.0

        def sample(n):
            return ((n // k_pres) % S) if online else 0

        # state at the start of step 0: input rates, neuron rates, currents
        s0 = sample(0)
        _load_inputs(R, Xb, s0, Se, n_in)
        for l in range(L):
            _forward(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2], R, noff[l], I,
                     noff[l + 1], Se)
            if dyn or l < L - 1:
                for s in range(Se):
                    for j in range(sizes[l + 1]):
                        k = noff[l + 1] + j
                        R[s, k] = _f(acts[l], V[s, k] if dyn else I[s, k])
        n = 0
        bad = 0
        settled = False
        while n < n_max:
            # -- neurons (start-of-step rates are in R, currents in I)
            if dyn:
                for s in range(Se):
                    for l in range(L):
                        for j in range(sizes[l + 1]):
                            k = noff[l + 1] + j
                            i_k = I[s, k]
                            if exponential:
                                v = i_k + (V[s, k] - i_k) * a_v
                            else:
                                v = V[s, k] + a_v * (i_k - V[s, k])
                            V[s, k] = v
                            R[s, k] = _f(acts[l], v)
            else:
                _steady(ph, conn, sizes, noff, acts, R, V, I, Se, 0)
            # -- synapses, output connection first
            s0 = sample(n)
            _output_error(R, V, D, Yb, Cb, s0, Se, gain, noff[L], sizes[L], acts[L - 1])
            s1 = sample(n + 1)
            _load_inputs(RN, Xb, s1, Se, n_in)
            ok = True
            for l in range(L - 1, -1, -1):
                down = backprop and l > 0
                fuse = dyn or l == 0
                o, _ = _conn_pass(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2],
                                  conn[l, 1] == 1, R, noff[l], D, noff[l + 1], down, omega,
                                  lam, fac, h, exponential, True, RN if l == 0 else R, I,
                                  fuse, gbuf, Se, bound)
                ok &= o
                if down:
                    _scale_by_df(R, V, D, noff[l], sizes[l], acts[l - 1], Se)
            for s in range(Se):
                for k in range(noff[1], ntot):
                    ok &= abs(V[s, k]) < bound
            n += 1
            if not ok:
                bad = n
                break
            _load_inputs(R, Xb, s1, Se, n_in)       # input rates of the next step
            if use_tol and n % check == 0:
                if online:
                    m = 0.0
                    scale = tau_phi / (check * dt)
                    for i in range(ph.shape[0]):
                        a = abs((ph[i] - prev[i]) * scale)
                        if not a <= m:
                            m = a
                    settled = m < tol
                    prev[:] = ph
                else:
                    if dyn:   # currents at the new weights are in I (fused)
                        m = 0.0
                        for s in range(Se):
                            for k in range(noff[1], ntot):
                                a = abs(((I[s, k] - V[s, k]) / tau_v) * tau_v)
                                if not a <= m:
                                    m = a
                        r = _residual(ph, conn, sizes, noff, acts, R, V, D2, Yb, Cb, 0, 1.0,
                                      omega, lam, backprop, gbuf, Se)
                        if not r <= m:
                            m = r
                    else:
                        R2[:] = R
                        I2[:, noff[1]:noff[1] + sizes[1]] = 0.0
                        _forward(ph, conn[0, 0], sizes[0], sizes[1], conn[0, 2], R2, 0, I2,
                                 noff[1], Se)
                        _steady(ph, conn, sizes, noff, acts, R2, V2, I2, Se, 0)
                        m = _residual(ph, conn, sizes, noff, acts, R2, V2, D2, Yb, Cb, 0,
                                      1.0, omega, lam, backprop, gbuf, Se)
                    settled = m < tol
                if settled:
                    break
        return n, settled, bad

    def _phase(phi, V, X, Y, C, omega, lam, fac, conn, sizes, noff, acts, online, k_pres,
               n_max, check, tol, tau_phi, dt, tau_v, a_v, exponential, backprop, h, bound,
               steps, settled, bad):
        """All tasks of a phase, in parallel (results in place / in the out arrays)."""
        for b in prange(phi.shape[0]):
            n, st, bd = _task(phi[b], V[b], X[b], Y[b], C[b], omega, lam, fac, conn, sizes,
                              noff, acts, online, k_pres, n_max, check, tol, tau_phi, dt,
                              tau_v, a_v, exponential, backprop, h, bound)
            steps[b] = n
            settled[b] = st
            bad[b] = bd

    # one body, two compilations: threads over tasks for long phases; in the calling
    # thread for short ones (waking the thread pool costs more than a few steps, and on a
    # loaded machine a worker may wait for a core for a whole scheduler time slice)
    _phase_parallel = njit(cache=True, fastmath=_FASTMATH, parallel=True)(_phase)
    _phase_serial = njit(cache=True, fastmath=_FASTMATH)(_phase)

#: Phases with fewer (tasks x steps x (synapses + neurons) x samples) run in one thread.
PARALLEL_MIN_WORK = 2_000_000


# ====================================================================== driver
class _Packed:
    """The phase's arrays in the kernels' flat layout: per task one vector of all fast
    weights (connection after connection, rows of (n_post, n_pre[+1])) and per sample
    copy one vector of all neurons (layer after layer, the input layer first)."""

    def __init__(self, net, learner, inp, dt, dtype):
        conns = net.connections
        L = len(conns)
        self.sizes = np.array(net.sizes, dtype=np.int64)
        self.noff = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        sizes_p = [int(np.prod(c.shape)) for c in conns]
        poff = np.concatenate([[0], np.cumsum(sizes_p)]).astype(np.int64)
        self.poff = poff
        self.conn = np.array([[poff[l], int(c.plastic), int(c.has_bias), 0]
                              for l, c in enumerate(conns)], dtype=np.int64).reshape(L, 4)
        self.acts = np.array([ACT_CODES[a.name] for a in net.activations], dtype=np.int64)
        P = int(poff[-1])
        omega = np.zeros(P)
        lam = np.zeros(P)
        for l, c in enumerate(conns):
            if c.plastic:
                omega[poff[l]:poff[l + 1]] = c.omega.ravel()
                lam[poff[l]:poff[l + 1]] = c.lam.ravel()
        h = dt / net.tau_synapse
        with np.errstate(divide="ignore", invalid="ignore"):   # the numpy engine's factor
            fac = np.where(lam > 0, -np.expm1(-lam * h) / np.where(lam > 0, lam, 1.0), h)
        self.omega, self.lam, self.fac = (np.ascontiguousarray(a, dtype=dtype)
                                          for a in (omega, lam, fac))
        self.h = h

    def pack_phi(self, phi, dtype):
        B = phi[0].shape[0]
        return np.ascontiguousarray(np.concatenate([p.reshape(B, -1) for p in phi], axis=1),
                                    dtype=dtype)

    def unpack_phi(self, flat, net):
        return [np.array(flat[:, self.poff[l]:self.poff[l + 1]].reshape((-1,) + c.shape),
                         dtype=np.float64) for l, c in enumerate(net.connections)]

    def pack_v(self, v, dtype):
        B, Se = v[0].shape[:2]
        out = np.zeros((B, Se, int(self.noff[-1])), dtype=dtype)
        for l, vl in enumerate(v):
            out[:, :, self.noff[l + 1]:self.noff[l + 2]] = vl
        return out

    def unpack_v(self, flat):
        return [np.array(flat[:, :, self.noff[l + 1]:self.noff[l + 2]], dtype=np.float64)
                for l in range(len(self.sizes) - 1)]


def run_phase(net, inp, phi, v, learner, dt, beta=0.0, rec=None, loss_fn=None,
              dtype=np.float64):
    """Integrate one phase with the fused kernel; same contract as
    :func:`numpy_engine.run_phase` (returns phi, v, recorder, settled, t_end, steps),
    starting from fast weights ``phi`` and potentials ``v`` (lists, float64).

    ``dtype``: ``numpy.float32`` runs the kernel in single precision (about twice the
    throughput on large networks; results then agree with float64 to ~1e-6 only).
    """
    dtype = np.dtype(dtype)
    if rec is None:
        rec = npe.Recorder((), 1, dt)
    pk = _Packed(net, learner, inp, dt, dtype)
    n_max, tol = learner.steps_for(net, inp)
    check = learner.check_every(inp)
    B = phi[0].shape[0]
    online = inp.presentation == "online"
    X = np.ascontiguousarray(inp.X, dtype=dtype)
    Y = np.ascontiguousarray(inp.Y, dtype=dtype)
    C = np.ascontiguousarray(inp.c, dtype=dtype)
    tau_v = float(net.tau_neuron)
    exponential = learner.integrator == "expeuler"
    if tau_v > 0:
        a_v = float(np.exp(-dt / tau_v)) if exponential else dt / tau_v
    else:
        a_v = 0.0
    args = (pk.omega, pk.lam, pk.fac, pk.conn, pk.sizes, pk.noff, pk.acts, online,
            int(inp.steps_per_sample), None, int(check), -1.0 if tol is None else float(tol),
            float(net.tau_synapse), float(dt), tau_v, a_v, exponential,
            learner.rule == "backprop", dtype.type(pk.h), dtype.type(npe.DIVERGENCE_BOUND))

    def kernel(n_steps):
        flat = pk.pack_phi(phi, dtype)
        V = pk.pack_v(v, dtype)
        steps = np.zeros(B, dtype=np.int64)
        settled = np.zeros(B, dtype=np.bool_)
        bad = np.zeros(B, dtype=np.int64)
        a = list(args)
        a[9] = int(n_steps)
        work = B * n_steps * (flat.shape[1] + V.shape[2]) * V.shape[1]
        kern = _phase_parallel if (B > 1 and work >= PARALLEL_MIN_WORK) else _phase_serial
        kern(flat, V, X, Y, C, *a, steps, settled, bad)
        return flat, V, steps, settled, bad

    # static weights beyond the divergence bound: the numpy loop reports it at step 1
    static_bad = any(not c.plastic and p.size and not np.abs(p).max() < npe.DIVERGENCE_BOUND
                     for c, p in zip(net.connections, phi))
    flat, V, steps, settled, bad = kernel(1 if static_bad else n_max)
    if static_bad:
        bad[:] = 1
    if bad.any():
        # replay up to the first bad step (same code, same data: the same numbers) and
        # raise the numpy engine's error for the state of that step
        n = int(bad[bad > 0].min())
        flat, V, _, _, _ = kernel(n)
        with np.errstate(over="ignore", invalid="ignore"):
            npe._check_finite(pk.unpack_phi(flat, net), pk.unpack_v(V), n, dt, learner, beta)
        raise AssertionError("fused kernel: replayed state is finite")  # pragma: no cover
    phi_out, v_out = pk.unpack_phi(flat, net), pk.unpack_v(V)
    n = int(steps.max()) if B else 0
    rec.force(n * dt, phi_out, v_out, loss_fn)
    if tol is None:
        settled[:] = False
    return phi_out, v_out, rec, settled, n * dt, n
