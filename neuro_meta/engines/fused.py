"""Fused compiled kernels of the numpy engine's phase loop (numba).

The equations, the step order and the settling rule are the numpy engine's (see
:mod:`neuro_meta.engines.numpy_engine`); this module runs the *same* loop as one
compiled function per phase, with no Python work per time step:

* the tasks of a batch run in parallel (slices of the tasks in a pool of threads, each
  calling the compiled, GIL-free kernel; see "threads" below), each with its whole phase
  loop: a task stops at the first settling test it passes (its state is then frozen, as
  in the numpy engine) and the phase's step count is the maximum over tasks;
* batch presentation with instantaneous neurons (the common case of meta-learning) runs
  as matrix products per connection (:func:`_task_dense`): currents, the error sent down
  and the weight gradient of all sample copies at once, BLAS for connections of at
  least :data:`DOT_MIN_WEIGHTS` weights; all the gradients of a step come from the
  start-of-step state, so the settling test after a step is made with the next step's
  gradients at no extra cost;
* otherwise, within a task, one step is: neurons (Euler or exponential Euler, from the
  rates at the start of the step; instantaneous neurons take their steady state), the
  output error, then one pass over the synapses of every connection, output connection
  first, that sends the error down (``backprop``, through the start-of-step weights),
  updates the fast weights (``tau_phi dphi/dt = sum_s c_s delta_s [r_s; 1]^T - lam (phi
  - omega)``) and accumulates the next step's synaptic currents from the new weights
  while the row of weights is in the cache;
* one-connection networks with many weights (tasks x synapses >=
  :data:`ROWS_MIN_SYNAPSES`) run on the *rows* kernel instead: a unit's potential, error
  and weight row depend only on its own row and the inputs, so blocks of rows (cache
  sized) are advanced for all tasks in lock-step and for all the steps up to the next
  settling check, threads taking ranges of blocks. omega and lam, shared by the tasks, are
  then read once per block and run instead of once per task and step (the large case is
  memory-bound otherwise); per-task residuals are reduced over the blocks at each check,
  and settled tasks are frozen as in the numpy engine;
* divergence is tested at every step in the same pass (``not |x| < 1e10``, NaN
  included); the kernel reports per task the first bad step, and :func:`run_phase`
  replays the phase up to the earliest one and raises the numpy engine's
  :class:`~neuro_meta.errors.SimulationError` (same step, same message).

Threads: the kernels are compiled serial and GIL-free, and :func:`_run_parallel` hands
slices of the work to a pool of Python threads (:func:`threads`, default
``NUMBA_NUM_THREADS``); numba's own ``parallel=True`` runs on GNU OpenMP on Linux, after
which the process can no longer fork (a fork-based process pool then dies). Phases below
:data:`PARALLEL_MIN_WORK` run in the calling thread. Each task works on its own copies
of the arrays it reads (numba counts references atomically at calls that pass an array;
copies keep threads off each other's counters; the effect was within our timing noise).

Summation order differs from numpy's (the kernels are compiled with reassociation so
that sums vectorise; BLAS sums in its own order) and ``tanh`` is a branch-free
vectorisable implementation (within 5e-16 of libm's), so results agree with the numpy
engine to rounding (~1e-15 relative), not bit for bit.

Supported (:func:`supports`): integrators ``euler`` and ``expeuler``; rules ``delta`` and
``backprop``; batch and online presentation; any number of layers of the built-in
activations; biases or not; static and complex synapses; ``tau_neuron`` = 0 or > 0;
fixed durations and settling tolerances; no recording. Anything else (RK4, SciPy,
recorded variables, user-defined activations) runs on the numpy engine's Python loop.
Without numba installed, :data:`AVAILABLE` is False and everything runs on numpy.
"""
import concurrent.futures
import contextlib
import math
import os
import threading

import numpy as np

from .phase import DIVERGENCE_BOUND, Recorder, check_finite
from ..errors import UnsupportedError

#: Name of this engine in results and messages.
NAME = "fused"

try:  # numba is an optional dependency (the "fast" extra)
    import numba
    from numba import njit
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised by monkeypatching AVAILABLE
    numba = None
    AVAILABLE = False

#: Activation name -> code understood by the kernels.
ACT_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "softplus": 4}

# Reassociation lets sums vectorise; no "nnan"/"ninf": NaN and inf must be detected.
_FASTMATH = {"reassoc", "contract"}
# numpy's division semantics (x/0 = inf, no ZeroDivisionError check): loops with a
# division vectorise.
_OPTS = dict(cache=True, fastmath=_FASTMATH, error_model="numpy")


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


def why_not(kind, spec, inp, record=(), substeps=None):
    """None if :func:`run_phase` can run this phase, else the reason (the numpy loop
    runs it then); with ``substeps`` (per task) above 1, only the batch kernel
    (:func:`dense_kernel`) can."""
    if not AVAILABLE:
        return "numba is not installed (pip install neuro_meta[fast])"
    net = kind.layered()
    if net is None:
        return (f"a {kind.kind_name} is not a layered rate network (the kernels compile "
                "RateNetwork layouts only)")
    if spec.integrator not in ("euler", "expeuler"):
        return f"integrator {spec.integrator!r} (the kernels step Euler and expeuler)"
    if record:
        return "recording (the kernels keep no time series)"
    if getattr(kind, "loss", None) is None or kind.loss.name != "squared_error":
        return f"loss {kind.loss!r} (the kernels compute squared error)"
    if substeps is not None and np.any(np.asarray(substeps) != 1) \
            and not dense_kernel(net, inp):
        return ("sub-steps outside the batch kernel (batch presentation, instantaneous "
                "neurons)")
    from ..activations import ACTIVATIONS

    for l, act in enumerate(net.activations):
        if ACTIVATIONS.get(act.name) is not act or act.name not in ACT_CODES:
            return f"activation[{l}] {act!r} is not a built-in rate function"
    if inp.presentation not in ("batch", "online"):
        return f"presentation {inp.presentation!r}"
    return None


def supports(kind, spec, inp, record=(), substeps=None):
    """Whether :func:`run_phase` can run this phase (see :func:`why_not`)."""
    return why_not(kind, spec, inp, record, substeps) is None


# ====================================================================== kernels
if AVAILABLE:
    _jit = njit(nogil=True, **_OPTS)
    # scalar functions of the inner loops, inlined in numba's IR
    _jit_inline = njit(nogil=True, inline="always", **_OPTS)

    @_jit_inline
    def _tanh(x):
        """tanh without branches or libm calls, so that loops over units vectorise
        (libm's tanh is a scalar call, ~6x slower; it was most of a small network's
        step). Cephes' approximations: a rational function for |x| < 0.625, else
        1 - 2/(exp(2|x|) + 1) with exp = 2^k exp(r), 2^k as exact products. Within 5e-16
        relative of libm's and numpy's tanh (which differ from each other by as much)."""
        ax = abs(x)
        xs = x if ax < 0.625 else 0.0
        z = xs * xs
        small = xs + xs * (z * (((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1)
                                 * z - 1.61468768441708447952e3)
                                / (((z + 1.12811678491632931402e2) * z
                                    + 2.23548839060100448583e3) * z
                                   + 4.84406305325125486048e3)))
        y = 2.0 * ax if ax < 22.0 else 44.0          # tanh(22) is 1.0 in float64
        kf = np.floor(1.4426950408889634 * y + 0.5)
        r = (y - kf * 6.93145751953125e-1) - kf * 1.42860682030941723212e-6
        rr = r * r
        px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                  + 9.99999999999999999910e-1)
        qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
              + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
        k = np.int64(kf)
        p2 = ((1.0 + (k & 1)) * (1.0 + 3.0 * ((k >> 1) & 1)) * (1.0 + 15.0 * ((k >> 2) & 1))
              * (1.0 + 255.0 * ((k >> 3) & 1)) * (1.0 + 65535.0 * ((k >> 4) & 1))
              * (1.0 + 4294967295.0 * ((k >> 5) & 1)))
        big = 1.0 - 2.0 / ((1.0 + 2.0 * px / (qx - px)) * p2 + 1.0)
        big = big if x >= 0.0 else -big
        out = small if ax < 0.625 else big
        return out if (x == x and x != 0.0) else x    # NaN and signed zeros unchanged

    @_jit_inline
    def _f(code, v):
        """Rate r = f(v) (the numpy engine's activations)."""
        if code == 0:
            return v
        if code == 1:
            return _tanh(v)
        if code == 2:
            return 1.0 / (1.0 + math.exp(-v))
        if code == 3:
            return v if not v <= 0.0 else 0.0
        # softplus = logaddexp(0, v), written as numpy does
        if v > 0.0:
            return v + math.log1p(math.exp(-v))
        return math.log1p(math.exp(v))

    @_jit_inline
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
    def _forward(ph, base, n_pre, n_post, hb, R, pre0, I, post0, Se):
        """``I[s, post] = W R[s, pre] + b`` of one connection for every sample copy."""
        ncol = n_pre + hb
        if base < 0 or n_pre < 0 or ncol < 0 or pre0 < 0 or post0 < 0:   # see _conn_pass
            return
        for j in range(n_post):
            row = base + j * ncol
            for s in range(Se):
                acc = 0.0
                for i in range(n_pre):
                    acc += ph[row + i] * R[s, pre0 + i]
                if hb:
                    acc = acc + ph[row + n_pre]
                I[s, post0 + j] = acc

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
        online_fused = plastic and update and Se == 1 and fuse   # one loop per row below
        for j in range(n_post):
            row = base + j * ncol
            if plastic and not online_fused:
                # error sent down and weight gradient in one sweep per sample copy
                for i in range(ncol):
                    gbuf[i] = 0.0
                for s in range(Se):
                    d = D[s, post0 + j]
                    if down:
                        for i in range(n_pre):
                            D[s, pre0 + i] += ph[row + i] * d
                            gbuf[i] += d * R[s, pre0 + i]
                    else:
                        for i in range(n_pre):
                            gbuf[i] += d * R[s, pre0 + i]
                    if hb:
                        gbuf[n_pre] += d
            elif down:
                for s in range(Se):
                    d = D[s, post0 + j]
                    for i in range(n_pre):
                        D[s, pre0 + i] += ph[row + i] * d
            if plastic:
                if online_fused:
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
                _forward(ph, row, n_pre, 1, hb, RN, pre0, I, post0 + j, Se)
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
        """``D *= f'(V)`` on units ``n0 .. n0+n-1`` (tanh: its own loop, vectorised)."""
        if n0 < 0 or n < 0:   # never true (see _conn_pass)
            return
        for s in range(Se):
            if code == 1:
                for i in range(n0, n0 + n):
                    D[s, i] *= 1.0 - R[s, i] * R[s, i]
            else:
                for i in range(n0, n0 + n):
                    D[s, i] *= _df(code, V[s, i], R[s, i])

    @_jit
    def _load_inputs(R, Xb, s0, Se, n_in):
        for s in range(Se):
            for i in range(n_in):
                R[s, i] = Xb[s0 + s, i]

    @_jit
    def _rates(code, V, R, n0, n, Se):
        """``R[s, n0:n0+n] = f(V[s, n0:n0+n])``, one loop per activation (vectorised)."""
        if n0 < 0 or n < 0:   # never true: indices are >= 0 (see _conn_pass)
            return
        for s in range(Se):
            if code == 1:
                for j in range(n0, n0 + n):
                    R[s, j] = _tanh(V[s, j])
            elif code == 0:
                for j in range(n0, n0 + n):
                    R[s, j] = V[s, j]
            else:
                for j in range(n0, n0 + n):
                    R[s, j] = _f(code, V[s, j])

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
                for j in range(n0, n0 + n):
                    V[s, j] = I[s, j]
            _rates(acts[l], V, R, n0, n, Se)

    @_jit
    def _task(ph, V, Xb, Yb, Cb, omega, lam, fac, conn, sizes, noff, acts, online, k_pres,
              n_max, check, tol, tau_phi, dt, tau_v, a_v, exponential, backprop, dense, h,
              msub, bound):
        """The phase loop of one task on thread-local copies of every array it reads
        (results copied back to ``ph`` and ``V``); returns (steps, settled, first bad step
        or 0).

        numba counts references to an array at calls that pass it, atomically on the
        array's allocation; with copies, threads running tasks at the same time do not
        update the same counters (omega, lam, views of one phi) in the loop's calls."""
        ph_l = ph.copy()
        V_l = V.copy()
        if dense:
            out = _task_dense(ph_l, V_l, Xb.copy(), Yb.copy(), Cb.copy(), omega.copy(),
                              lam.copy(), fac.copy(), conn.copy(), sizes.copy(), acts.copy(),
                              n_max, check, tol, exponential, backprop, h, msub, bound)
        else:
            out = _task_local(ph_l, V_l, Xb.copy(), Yb.copy(), Cb.copy(), omega.copy(),
                              lam.copy(), fac.copy(), conn.copy(), sizes.copy(), noff.copy(),
                              acts.copy(), online, k_pres, n_max, check, tol, tau_phi, dt,
                              tau_v, a_v, exponential, backprop, h, bound)
        ph[:] = ph_l
        V[:] = V_l
        return out

    @_jit
    def _mm_fwd(X, W, out):
        """``out[s, j] = sum_c X[s, c] W[j, c]`` (BLAS for the large connections)."""
        if W.size >= DOT_MIN_WEIGHTS:
            np.dot(X, W.T, out)
            return
        for s in range(X.shape[0]):
            for j in range(W.shape[0]):
                acc = 0.0
                for c in range(W.shape[1]):
                    acc += X[s, c] * W[j, c]
                out[s, j] = acc

    @_jit
    def _mm(A, B, out, n_weights):
        """``out = A @ B``: the error sent down (``D @ W``) and the weight gradient
        (``D.T @ X``) of a connection of ``n_weights`` weights (BLAS from
        DOT_MIN_WEIGHTS)."""
        if n_weights >= DOT_MIN_WEIGHTS:
            np.dot(A, B, out)
            return
        out[:] = 0.0
        for i in range(A.shape[0]):
            for k in range(A.shape[1]):
                a = A[i, k]
                for c in range(B.shape[1]):
                    out[i, c] += a * B[k, c]

    @_jit
    def _advance(ph, G, omega, lam, fac, h, exponential, bound):
        """``ph += fac (G - lam (ph - omega))`` (``fac`` per synapse for exponential
        Euler, else ``h``); False if a new weight is not below ``bound``."""
        ok = True
        if exponential:
            for k in range(ph.shape[0]):
                p = ph[k]
                q = p + fac[k] * (G[k] - lam[k] * (p - omega[k]))
                ph[k] = q
                ok &= abs(q) < bound
        else:
            for k in range(ph.shape[0]):
                p = ph[k]
                q = p + h * (G[k] - lam[k] * (p - omega[k]))
                ph[k] = q
                ok &= abs(q) < bound
        return ok

    @_jit
    def _drift(ph, G, omega, lam):
        """max |G - lam (ph - omega)| (the settling residual; a NaN stays NaN)."""
        res = 0.0
        for k in range(ph.shape[0]):
            a = abs(G[k] - lam[k] * (ph[k] - omega[k]))
            if a > res or a != a:
                res = a
        return res

    @_jit
    def _task_dense(ph, V, Xb, Yb, Cb, omega, lam, fac, conn, sizes, acts, n_max, check,
                    tol, exponential, backprop, h, msub, bound):
        """The phase loop of one task for batch presentation and instantaneous neurons
        (the common case of meta-learning), as matrix products per connection.

        Same step as :func:`_task_local` (all gradients from the start-of-step state, then
        all the weights advanced); the gradients of a step are also those of the settling
        test made after the previous step, so that test costs no extra pass. Per
        connection ``l``, ``X[l]`` holds the presynaptic rates and a column of ones for
        the bias, so that the currents, the error sent down and the weight gradient are
        three products with the weight matrix (a view of ``ph``); large ones go to BLAS.
        Each step is ``msub`` sub-steps of ``h`` (with their ``fac``); the settling tests
        and ``n_max`` count whole steps."""
        L = sizes.shape[0] - 1
        Se = V.shape[0]
        ncol = np.empty(L, np.int64)
        for l in range(L):
            ncol[l] = sizes[l] + conn[l, 2]
        Xs = [np.ones((Se, ncol[l]), ph.dtype) for l in range(L)]
        Is = [np.zeros((Se, sizes[l + 1]), ph.dtype) for l in range(L)]
        Ds = [np.zeros((Se, sizes[l + 1]), ph.dtype) for l in range(L)]
        Dn = [np.zeros((Se, ncol[l]), ph.dtype) for l in range(L)]
        Rout = np.zeros((Se, sizes[L]), ph.dtype)
        G = np.zeros_like(ph)
        X0 = Xs[0]
        for s in range(Se):
            for i in range(sizes[0]):
                X0[s, i] = Xb[s, i]
        use_tol = tol > 0.0
        n = 0
        sub = 0                       # sub-steps done of step n
        bad = 0
        settled = False
        while True:
            need_check = use_tol and n > 0 and sub == 0 and n % check == 0
            if n >= n_max and not need_check:
                break
            # -- neurons at their steady state, from the start-of-step weights
            for l in range(L):
                W = ph[conn[l, 0]:conn[l, 0] + sizes[l + 1] * ncol[l]].reshape(
                    (sizes[l + 1], ncol[l]))
                _mm_fwd(Xs[l], W, Is[l])
                out = Xs[l + 1] if l < L - 1 else Rout
                Il = Is[l]
                code = acts[l]
                for s in range(Se):
                    if code == 1:
                        for j in range(sizes[l + 1]):
                            out[s, j] = _tanh(Il[s, j])
                    else:
                        for j in range(sizes[l + 1]):
                            out[s, j] = _f(code, Il[s, j])
            # -- output error, then every connection's gradient, output connection first
            DL = Ds[L - 1]
            IL = Is[L - 1]
            code = acts[L - 1]
            for s in range(Se):
                c = Cb[s]
                for j in range(sizes[L]):
                    r = Rout[s, j]
                    DL[s, j] = (Yb[s, j] - r) * _df(code, IL[s, j], r) * c
            res = 0.0
            for l in range(L - 1, -1, -1):
                base = conn[l, 0]
                nw = sizes[l + 1] * ncol[l]
                W = ph[base:base + nw].reshape((sizes[l + 1], ncol[l]))
                if backprop and l > 0:
                    _mm(Ds[l], W, Dn[l], nw)
                    Dd = Ds[l - 1]
                    Dl = Dn[l]          # list items outside the loops (no per-item
                    Il = Is[l - 1]      # reference counting inside them)
                    Xl = Xs[l]
                    code = acts[l - 1]
                    for s in range(Se):
                        if code == 1:
                            for i in range(sizes[l]):
                                r = Xl[s, i]
                                Dd[s, i] = Dl[s, i] * (1.0 - r * r)
                        else:
                            for i in range(sizes[l]):
                                Dd[s, i] = Dl[s, i] * _df(code, Il[s, i], Xl[s, i])
                if conn[l, 1] == 1:
                    _mm(Ds[l].T, Xs[l], G[base:base + nw].reshape((sizes[l + 1], ncol[l])),
                        nw)
                    if need_check:
                        r = _drift(ph[base:base + nw], G[base:base + nw],
                                   omega[base:base + nw], lam[base:base + nw])
                        if not r <= res:
                            res = r
            if need_check:
                settled = res < tol
                if settled or n >= n_max:
                    break
            # -- the step: potentials of this step, then the plastic weights
            ok = True
            off = sizes[0]            # V: all units, the input layer first
            for l in range(L):
                Il = Is[l]
                for s in range(Se):
                    for j in range(sizes[l + 1]):
                        v = Il[s, j]
                        V[s, off + j] = v
                        ok &= abs(v) < bound
                off += sizes[l + 1]
                if conn[l, 1] == 1:
                    # views from 0: the loops index with k >= 0 only, so they vectorise
                    a, b = conn[l, 0], conn[l, 0] + sizes[l + 1] * ncol[l]
                    okw = _advance(ph[a:b], G[a:b], omega[a:b], lam[a:b], fac[a:b], h,
                                   exponential, bound)
                    ok &= okw
            sub += 1
            if not ok:
                bad = n + 1
                n += 1
                break
            if sub == msub:
                sub = 0
                n += 1
        return n, settled, bad

    @_jit
    def _task_local(ph, V, Xb, Yb, Cb, omega, lam, fac, conn, sizes, noff, acts, online,
                    k_pres, n_max, check, tol, tau_phi, dt, tau_v, a_v, exponential, backprop,
                    h, bound):
        """The phase loop of one task (see :func:`_task`)."""
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

        # state at the start of step 0: input rates, neuron rates, currents (instantaneous
        # neurons: the first layer's currents; the step computes those above)
        s0 = sample(0)
        _load_inputs(R, Xb, s0, Se, n_in)
        for l in range(L if dyn else 1):
            _forward(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2], R, noff[l], I,
                     noff[l + 1], Se)
            if dyn:
                _rates(acts[l], V, R, noff[l + 1], sizes[l + 1], Se)
        n = 0
        bad = 0
        settled = False
        while n < n_max:
            # -- neurons (start-of-step rates are in R, currents in I)
            if dyn:
                for s in range(Se):
                    for k in range(noff[1], ntot):
                        i_k = I[s, k]
                        if exponential:
                            V[s, k] = i_k + (V[s, k] - i_k) * a_v
                        else:
                            V[s, k] = V[s, k] + a_v * (i_k - V[s, k])
                for l in range(L):
                    _rates(acts[l], V, R, noff[l + 1], sizes[l + 1], Se)
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

    @njit(nogil=True, **_OPTS)
    def _phase_serial(phi, V, X, Y, C, fac, h, msub, omega, lam, conn, sizes, noff, acts,
                      online, k_pres, n_max, check, tol, tau_phi, dt, tau_v, a_v,
                      exponential, backprop, dense, bound, steps, settled, bad):
        """All tasks of a phase, one after the other (results in place / in the out
        arrays); :func:`_phase_parallel` runs slices of the tasks in threads. ``fac``,
        ``h`` and ``msub`` (sub-steps) are per task, or one row for all."""
        for b in range(phi.shape[0]):
            bf = b if fac.shape[0] > 1 else 0
            n, st, bd = _task(phi[b], V[b], X[b], Y[b], C[b], omega, lam, fac[bf], conn,
                              sizes, noff, acts, online, k_pres, n_max, check, tol, tau_phi,
                              dt, tau_v, a_v, exponential, backprop, dense, h[bf], msub[bf],
                              bound)
            steps[b] = n
            settled[b] = st
            bad[b] = bd


    # ------------------------------------------------------------------ rows kernel
    # A single connection is row-local: unit j's potential, error and weight row depend
    # only on row j and the inputs. So blocks of rows are integrated independently, each
    # for all tasks and for a run of steps while it sits in the cache (omega and lam are
    # read once per run for all tasks, not once per task and step); the runs end at the
    # settling checks, where the per-block residuals are reduced per task.

    @_jit
    def _rows_steps(j0, j1, n0, n1, ph, V, I, D, X, Y, C, omega, lam, fac, prev, n_in, hb,
                    act, online, k_pres, check_now, dyn, tau_v, a_v, exponential, h, bound,
                    scale, active, gbuf):
        """Rows ``j0 .. j1-1`` (output units) of every active task, steps ``n0 .. n1-1``:
        neurons, errors, weight rows and next currents (as :func:`_task` does for one
        connection). Returns (first bad step or 0 per task, settling residual of these
        rows at step n1 per task if ``check_now``)."""
        B, Se = V.shape[0], V.shape[1]
        S = X.shape[1]
        ncol = n_in + hb
        nj = j1 - j0
        gain = float(S) if online else 1.0
        badr = np.zeros(B, np.int64)
        res = np.zeros(B)
        if n0 == 0:   # the currents at the start of step 0
            for b in range(B):
                _forward(ph[b], j0 * ncol, n_in, nj, hb, X[b, 0:Se], 0, I[b], j0, Se)
        for n in range(n0, n1):
            s0 = ((n // k_pres) % S) if online else 0
            s1 = (((n + 1) // k_pres) % S) if online else 0
            stop = False
            for b in range(B):
                if not active[b]:
                    continue
                ok = True
                for s in range(Se):   # neurons and their errors, sample copy s
                    c = C[b, s0 + s] * gain
                    for j in range(j0, j1):
                        k = n_in + j
                        i_k = I[b, s, j]
                        if not dyn:
                            v = i_k
                        elif exponential:
                            v = i_k + (V[b, s, k] - i_k) * a_v
                        else:
                            v = V[b, s, k] + a_v * (i_k - V[b, s, k])
                        V[b, s, k] = v
                        r = _f(act, v)
                        D[b, s, j] = (Y[b, s0 + s, j] - r) * _df(act, v, r) * c
                        ok &= abs(v) < bound
                o, _ = _conn_pass(ph[b], j0 * ncol, n_in, nj, hb, True, X[b, s0:s0 + Se], 0,
                                  D[b], j0, False, omega, lam, fac, h, exponential, True,
                                  X[b, s1:s1 + Se], I[b], True, gbuf, Se, bound)
                if not (ok and o):
                    badr[b] = n + 1
                    stop = True
            if stop:
                return badr, res
        if check_now:
            for b in range(B):
                if active[b]:
                    res[b] = _rows_residual(j0, j1, ph[b], V[b], I[b], D[b], X[b], Y[b], C[b],
                                            omega, lam, prev, b, n_in, hb, act, online, dyn,
                                            tau_v, scale, gbuf)
        return badr, res

    @_jit
    def _rows_residual(j0, j1, ph, V, I, D, X, Y, C, omega, lam, prev, b, n_in, hb, act,
                       online, dyn, tau_v, scale, gbuf):
        """The settling residual of rows ``j0 .. j1-1`` of one task (the numpy engine's
        test; see :func:`_task`)."""
        ncol = n_in + hb
        m = 0.0
        if online:   # drift of the rows over the cycle
            for i in range(j0 * ncol, j1 * ncol):
                a = abs((ph[i] - prev[b, i]) * scale)
                if not a <= m:
                    m = a
                prev[b, i] = ph[i]
            return m
        Se = V.shape[0]
        for s in range(Se):
            for j in range(j0, j1):
                if dyn:      # neuron residual; the end-of-step errors are in D
                    a = abs(((I[s, j] - V[s, n_in + j]) / tau_v) * tau_v)
                    if not a <= m:
                        m = a
                else:        # instantaneous neurons: errors at the new weights' state
                    v = I[s, j]
                    r = _f(act, v)
                    D[s, j] = (Y[s, j] - r) * _df(act, v, r) * C[s]
        _, r = _conn_pass(ph, j0 * ncol, n_in, j1 - j0, hb, True, X[0:Se], 0, D, j0, False,
                          omega, lam, lam, 0.0, False, False, X[0:Se], I, False, gbuf, Se, 0.0)
        if not r <= m:
            m = r
        return m

    @_jit
    def _rows_blocks(c0, c1, block, n, n1, check_now, phi, V, I, D, X, Y, C, omega, lam, fac,
                     prev, n_in, hb, act, online, k_pres, tau_v, a_v, exponential, h, bound,
                     scale, active, badr, res):
        """Blocks ``c0 .. c1-1`` of ``block`` rows, steps ``n .. n1-1`` (per block: first
        bad step per task in ``badr[c]``, residuals in ``res[c]``)."""
        n_out = V.shape[2] - n_in
        gbuf = np.empty(n_in + hb)
        for c in range(c0, c1):
            badr[c], res[c] = _rows_steps(
                c * block, min(n_out, (c + 1) * block), n, n1, phi, V, I, D, X, Y, C,
                omega, lam, fac, prev, n_in, hb, act, online, k_pres, check_now,
                tau_v > 0.0, tau_v, a_v, exponential, h, bound, scale, active, gbuf)

    @_jit
    def _rows_reduce(badr, res, active, steps, settled, bad, n1, check_now, tol):
        """After a run of steps ending at ``n1``: the first bad step per task over the
        blocks, else steps and settling per task; True when the phase is over."""
        B = active.shape[0]
        nblk = badr.shape[0]
        failed = False
        for b in range(B):
            first = 0
            for c in range(nblk):
                if badr[c, b] > 0 and (first == 0 or badr[c, b] < first):
                    first = badr[c, b]
            if first > 0:
                bad[b] = first
                steps[b] = first
                failed = True
        if failed:
            return True
        for b in range(B):
            if active[b]:
                steps[b] = n1
                if check_now:
                    m = 0.0
                    for c in range(nblk):
                        if not res[c, b] <= m:
                            m = res[c, b]
                    if m < tol:
                        settled[b] = True
                        active[b] = False
        return not active.any()


#: Batch phases of instantaneous neurons (float64) run on the matrix-product kernel
#: (:func:`_task_dense`); False: on the general loop (for comparisons).
DENSE = True
#: Connections with at least this many weights go to BLAS in the batch kernel (smaller
#: ones: loops; a BLAS call costs about a microsecond).
DOT_MIN_WEIGHTS = 256
#: Phases with fewer (tasks x steps x (synapses + neurons) x samples) run in the calling
#: thread (handing work to the pool costs tens of microseconds).
PARALLEL_MIN_WORK = 2_000_000
#: Threads of the kernels' pool; None: ``NUMBA_NUM_THREADS`` (the number of cores, or
#: the environment variable).
THREADS = None
#: Slices of the tasks per thread in the tasks kernel: tasks stop at their own settling
#: check, so smaller slices taken by the next free thread balance the load.
CHUNKS = 2
#: One-connection phases with at least this many fast weights (tasks x synapses) run on
#: the rows kernel (lock-step over tasks, threads over rows); smaller ones on the tasks
#: kernel (threads over tasks).
ROWS_MIN_SYNAPSES = 1_000_000
#: Bytes of fast weights, omega and lam that a block of rows keeps in the cache.
ROWS_BLOCK_BYTES = 512 * 1024


def _rows_block(n_out, P, B, parallel):
    """Rows per block of the rows kernel: a cache-sized block, and at least one block
    per thread when parallel."""
    per_row = 8 * (P // max(n_out, 1)) * (B + 2)
    block = max(1, ROWS_BLOCK_BYTES // per_row)
    if parallel:
        block = min(block, -(-n_out // threads()))
    return max(1, min(block, n_out))


# ====================================================================== threads
# The kernels are compiled serial (nogil) and run in parallel by a pool of Python
# threads over slices of the tasks (tasks kernel) or ranges of row blocks (rows kernel),
# not by numba's parallel=True: numba's default threading layer on Linux is GNU OpenMP,
# and a process that has used it cannot fork (numba aborts the child: "fork() called
# from a process already using GNU OpenMP"), which broke ProcessPoolExecutor meta-
# training after any parallel phase in the parent. Python threads are fork-safe (the
# pool is recreated in a child) and can be used from several threads at once.
_pool_lock = threading.Lock()
_pool = None          # (pid, size, executor)


def threads():
    """Number of threads the kernels use: :data:`THREADS` if set, else
    ``NUMBA_NUM_THREADS``."""
    if THREADS is None:
        return max(1, int(numba.config.NUMBA_NUM_THREADS))
    if isinstance(THREADS, bool) or not isinstance(THREADS, (int, np.integer)) \
            or THREADS < 1:
        from ..errors import ValidationError
        raise ValidationError(f"neuro_meta.engines.fused.THREADS: must be None or an "
                              f"integer >= 1 (got {THREADS!r})")
    return int(THREADS)


def _run_parallel(jobs):
    """Call ``jobs`` (callables) in the pool's threads, in order, each taken by the next
    free thread; wait for all of them (none is still writing when this returns), then
    raise the first error."""
    global _pool
    with _pool_lock:
        n = threads()
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != n:
            _pool = (os.getpid(), n, concurrent.futures.ThreadPoolExecutor(
                max_workers=n, thread_name_prefix="neuro_meta-kernel"))
        ex = _pool[2]
    futures = [ex.submit(job) for job in jobs]
    concurrent.futures.wait(futures)
    for f in futures:
        f.result()


def _chunks(n, k):
    """``k`` contiguous (start, stop) ranges covering ``0 .. n-1``, sizes within one."""
    k = max(1, min(k, n))
    edges = [n * i // k for i in range(k + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _phase_parallel(phi, V, X, Y, C, *args):
    """:func:`_phase_serial` on contiguous slices of the tasks, one per thread (tasks are
    independent: the same numbers as in one thread, bit for bit)."""
    fac, h, msub, *shared, steps, settled, bad = args

    def job(a, b):
        per = (fac[a:b], h[a:b], msub[a:b]) if fac.shape[0] > 1 else (fac, h, msub)
        return lambda: _phase_serial(phi[a:b], V[a:b], X[a:b], Y[a:b], C[a:b], *per,
                                     *shared, steps[a:b], settled[a:b], bad[a:b])

    if msub.shape[0] > 1:
        # tasks of different sub-steps cost differently: one job per task, the costliest
        # first, each taken by the next free thread (longest-processing-time order)
        order = np.argsort(-msub, kind="stable")
        _run_parallel([job(int(b), int(b) + 1) for b in order])
        return
    _run_parallel([job(a, b) for a, b in _chunks(phi.shape[0], CHUNKS * threads())])


def _phase_rows(phi, V, X, Y, C, omega, lam, fac, n_in, hb, act, online, k_pres, n_max,
                check, tol, tau_phi, dt, tau_v, a_v, exponential, h, bound, steps, settled,
                bad, block, parallel):
    """All tasks of a one-connection phase, lock-step, in blocks of ``block`` rows: each
    run of steps up to a settling check advances the blocks (in the calling thread, or
    in ranges of blocks, one per thread), then the runs' ends are reduced per task.
    Same results and outputs as :func:`_phase_serial`."""
    B, Se = V.shape[0], V.shape[1]
    n_out = V.shape[2] - n_in
    nblk = -(-n_out // block)
    I = np.zeros((B, Se, n_out))
    D = np.zeros((B, Se, n_out))
    use_tol = tol > 0.0
    prev = phi.copy() if (use_tol and online) else np.zeros((0, 0), phi.dtype)
    res = np.zeros((nblk, B))
    badr = np.zeros((nblk, B), np.int64)
    active = np.ones(B, np.bool_)
    scale = tau_phi / (check * dt)
    ranges = _chunks(nblk, threads()) if parallel else [(0, nblk)]
    n = 0
    while n < n_max:
        n1 = min(n_max, (n // check + 1) * check) if use_tol else n_max
        check_now = use_tol and n1 % check == 0

        def job(c0, c1, n=n, n1=n1, check_now=check_now):
            return lambda: _rows_blocks(c0, c1, block, n, n1, check_now, phi, V, I, D, X, Y,
                                        C, omega, lam, fac, prev, n_in, hb, act, online,
                                        k_pres, tau_v, a_v, exponential, h, bound, scale,
                                        active, badr, res)

        jobs = [job(c0, c1) for c0, c1 in ranges]
        if parallel:
            _run_parallel(jobs)
        else:
            jobs[0]()
        if _rows_reduce(badr, res, active, steps, settled, bad, n1, check_now, tol):
            return
        n = n1


def _phase_rows_serial(*args):
    """:func:`_phase_rows` in the calling thread."""
    _phase_rows(*args, parallel=False)


def _phase_rows_parallel(*args):
    """:func:`_phase_rows` with ranges of blocks in the pool's threads."""
    _phase_rows(*args, parallel=True)


# ====================================================================== driver
class _Packed:
    """The phase's arrays in the kernels' flat layout: per task one vector of all fast
    weights (connection after connection, rows of (n_post, n_pre[+1])) and per sample
    copy one vector of all neurons (layer after layer, the input layer first)."""

    def __init__(self, net, integrator, inp, dt, dtype, substeps=None):
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

        def flat(attr):   # the shared arrays, one vector (a view for one connection)
            parts = [np.ravel(getattr(c, attr)) if c.plastic else np.zeros(n)
                     for c, n in zip(conns, sizes_p)]
            return np.ascontiguousarray(parts[0] if L == 1 else np.concatenate(parts),
                                        dtype=dtype)

        self.omega, self.lam = flat("omega"), flat("lam")
        # per task (one row if all tasks take the same step): sub-steps, their step h in
        # units of tau_phi and exponential Euler's factor per synapse (the numpy engine's)
        m = np.ones(1, np.int64) if substeps is None or not np.size(substeps) \
            else np.asarray(substeps, np.int64)
        if np.all(m == m[0]):
            m = m[:1]
        hs = (dt if m.shape[0] == 1 and m[0] == 1 else dt / m) / net.tau_synapse
        self.msub = np.ascontiguousarray(m)
        self.hs = np.ascontiguousarray(np.broadcast_to(hs, m.shape), dtype=dtype)
        self.fac = np.broadcast_to(self.lam, (m.shape[0], P))    # unused by Euler
        if integrator == "expeuler":
            lam = self.lam.astype(np.float64)
            rows = {}
            for k in np.unique(m):
                h = float(np.broadcast_to(hs, m.shape)[np.argmax(m == k)])
                with np.errstate(divide="ignore", invalid="ignore"):
                    rows[k] = np.where(lam > 0, -np.expm1(-lam * h)
                                       / np.where(lam > 0, lam, 1.0), h)
            self.fac = np.stack([rows[k] for k in m])
        self.fac = np.ascontiguousarray(self.fac, dtype=dtype)
        for a in (self.omega, self.lam, self.fac, self.hs, self.msub):  # one array type
            a.setflags(write=False)              # for the kernels (the net's are read-only)
        self.P = P

    def pack_phi(self, phi, dtype):
        """A new (B, P) array: the kernels advance it in place."""
        B = phi[0].shape[0]
        out = np.empty((B, self.P), dtype=dtype)
        for l, p in enumerate(phi):
            out[:, self.poff[l]:self.poff[l + 1]] = p.reshape(B, -1)
        return out

    def unpack_phi(self, flat, net):
        """Per connection (B, n_post, n_pre[+1]) float64 (views of ``flat`` if float64)."""
        return [flat[:, self.poff[l]:self.poff[l + 1]].reshape((-1,) + c.shape).astype(
            np.float64, copy=False) for l, c in enumerate(net.connections)]

    def pack_v(self, v, dtype):
        B, Se = v[0].shape[:2]
        out = np.zeros((B, Se, int(self.noff[-1])), dtype=dtype)
        for l, vl in enumerate(v):
            out[:, :, self.noff[l + 1]:self.noff[l + 2]] = vl
        return out

    def unpack_v(self, flat):
        return [np.array(flat[:, :, self.noff[l + 1]:self.noff[l + 2]], dtype=np.float64)
                for l in range(len(self.sizes) - 1)]


def dense_kernel(net, inp, dtype=np.float64):
    """Whether a phase on the tasks kernel takes the matrix-product loop
    (:func:`_task_dense`: batch presentation, instantaneous neurons, float64)."""
    return bool(DENSE and inp.presentation == "batch" and net.tau_neuron == 0
                and np.dtype(dtype) == np.float64)


def run_phase(kind, inp, phi, v, spec, rec=None, loss_fn=None, dtype=np.float64,
              substeps=None):
    """Integrate one phase with the fused kernel; same contract as
    :func:`numpy_engine.integrate` (returns phi, v, recorder, settled, t_end, steps),
    starting from fast weights ``phi`` and potentials ``v`` (lists, float64) of the
    layered rate network ``kind``, with the settings ``spec`` (a ``PhaseSpec``).

    ``dtype``: ``numpy.float32`` runs the kernel in single precision (about twice the
    throughput on large networks; results then agree with float64 to ~1e-6 only).
    ``substeps``: per task, the sub-steps of each step (see
    :func:`numpy_engine.substeps_for`; batch kernel only).
    """
    dtype = np.dtype(dtype)
    net = kind.layered()
    dt = spec.dt
    if rec is None:
        rec = Recorder((), 1, dt)
    if substeps is not None and np.any(np.asarray(substeps) != 1) \
            and not dense_kernel(net, inp, dtype):
        raise UnsupportedError("fused.run_phase: sub-steps run in the batch kernel only "
                               "(batch presentation, instantaneous neurons, float64)")
    pk = _Packed(net, spec.integrator, inp, dt, dtype, substeps)
    n_max, tol, check = spec.n_max, spec.tol, spec.check
    B = phi[0].shape[0]
    online = inp.presentation == "online"
    X = np.ascontiguousarray(inp.X, dtype=dtype)
    Y = np.ascontiguousarray(inp.Y, dtype=dtype)
    C = np.ascontiguousarray(inp.c, dtype=dtype)
    tau_v = float(net.tau_neuron)
    exponential = spec.integrator == "expeuler"
    if tau_v > 0:
        a_v = float(np.exp(-dt / tau_v)) if exponential else dt / tau_v
    else:
        a_v = 0.0
    common = (online, int(inp.steps_per_sample), None, int(check),
              -1.0 if tol is None else float(tol), float(net.tau_synapse), float(dt), tau_v,
              a_v, exponential)
    B_P = B * pk.P
    rows = len(net.connections) == 1 and B_P >= ROWS_MIN_SYNAPSES \
        and pk.msub.shape[0] == 1 and pk.msub[0] == 1     # no sub-steps in the rows kernel
    bound = dtype.type(DIVERGENCE_BOUND)
    if rows:   # one connection: lock-step over tasks, in parallel over the rows
        net_args = (pk.omega, pk.lam, pk.fac[0], int(pk.sizes[0]), int(pk.conn[0, 2]),
                    int(pk.acts[0]))
        args = net_args + common + (dtype.type(pk.hs[0]), bound)
    else:
        net_args = (pk.fac, pk.hs, pk.msub, pk.omega, pk.lam, pk.conn, pk.sizes, pk.noff,
                    pk.acts)
        args = net_args + common + (spec.rule == "backprop",
                                    dense_kernel(net, inp, dtype), bound)
    i_steps = len(net_args) + 2     # n_max, set per call

    def kernel(n_steps):
        flat = pk.pack_phi(phi, dtype)
        V = pk.pack_v(v, dtype)
        steps = np.zeros(B, dtype=np.int64)
        settled = np.zeros(B, dtype=np.bool_)
        bad = np.zeros(B, dtype=np.int64)
        a = list(args)
        a[i_steps] = int(n_steps)
        work = B * n_steps * (flat.shape[1] + V.shape[2]) * V.shape[1]
        parallel = work >= PARALLEL_MIN_WORK and (rows or B > 1)
        if rows:
            kern = _phase_rows_parallel if parallel else _phase_rows_serial
        else:
            kern = _phase_parallel if parallel else _phase_serial
        if rows:
            kern(flat, V, X, Y, C, *a, steps, settled, bad,
                 _rows_block(V.shape[2] - int(pk.sizes[0]), pk.P, B, parallel))
        else:
            kern(flat, V, X, Y, C, *a, steps, settled, bad)
        return flat, V, steps, settled, bad

    # static weights beyond the divergence bound: the numpy loop reports it at step 1
    static_bad = any(not c.plastic and p.size and not np.abs(p).max() < DIVERGENCE_BOUND
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
            check_finite(pk.unpack_phi(flat, net), pk.unpack_v(V), n, spec, kind)
        raise AssertionError("fused kernel: replayed state is finite")  # pragma: no cover
    phi_out, v_out = pk.unpack_phi(flat, net), pk.unpack_v(V)
    n = int(steps.max()) if B else 0
    rec.force(n * dt, phi_out, v_out, loss_fn)
    if tol is None:
        settled[:] = False
    return phi_out, v_out, rec, settled, n * dt, n
