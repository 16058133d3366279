"""The fused engine's driver: which phases it runs, and how (tasks kernel or rows
kernel for layered rate networks, the gain kernel for the dual system; in the calling
thread or the pool), with divergence reported like the numpy engine's."""
import contextlib

import numpy as np

from . import config
from .dense import task_dense
from .layout import Layout, Network, RowsNet, Stepping, step_factors
from .local import task_local
from .pool import chunks, run_parallel, threads
from .rows import phase_rows, rows_block
from .scalar import ACT_CODES, AVAILABLE, jit
from ..phase import DIVERGENCE_BOUND, Recorder, check_finite
from ...errors import UnsupportedError

#: Name of this engine in results and messages.
NAME = "fused"


@contextlib.contextmanager
def disabled():
    """Within the block, phases run on the numpy loop (for comparisons and benchmarks:
    the fused kernel vs the reference loop on the same phase)."""
    old = config.ENABLED
    config.ENABLED = False
    try:
        yield
    finally:
        config.ENABLED = old


def why_not(kind, spec, inp, record=(), substeps=None):
    """None if :func:`run_phase` can run this phase, else the reason (the numpy loop
    runs it then); with ``substeps`` (per task) above 1, only the batch kernel
    (:func:`dense_kernel`) can."""
    if not AVAILABLE:
        return "numba is not installed (pip install neuro_meta[fast])"
    if not config.ENABLED:
        return "disabled (within fused.disabled())"
    net = kind.layered()
    if net is None and kind.gain_layout() is None:
        return (f"a {kind.kind_name} is neither a layered rate network nor a "
                "gain-modulated network (the kernels compile RateNetwork and DualSystem "
                "layouts)")
    if spec.integrator not in ("euler", "expeuler"):
        return f"integrator {spec.integrator!r} (the kernels step Euler and expeuler)"
    if record:
        return "recording (the kernels keep no time series)"
    if kind.loss.name != "squared_error":
        return f"loss {kind.loss!r} (the kernels compute squared error)"
    if net is not None and substeps is not None and np.any(np.asarray(substeps) != 1) \
            and not dense_kernel(net, inp):
        return ("sub-steps outside the batch kernel (batch presentation, instantaneous "
                "neurons)")
    if net is None:
        return _why_not_gain(kind, inp)
    for l, act in enumerate(net.activations):
        if not _builtin(act):
            return f"activation[{l}] {act!r} is not a built-in rate function"
    if inp.presentation not in ("batch", "online"):
        return f"presentation {inp.presentation!r}"
    return None


def _builtin(act):
    from ...activations import ACTIVATIONS

    return ACTIVATIONS.get(act.name) is act and act.name in ACT_CODES


def _why_not_gain(kind, inp):
    """The gain kernel's own limits: batch presentation, a built-in rate function."""
    if inp.presentation != "batch":
        return (f"presentation {inp.presentation!r} (the gain kernel of a "
                f"{kind.kind_name} runs batch presentation)")
    if kind.gain_layout()["activation"] not in ACT_CODES:
        return f"activation {kind.gain_layout()['activation']!r} is not a built-in"
    return None


def supports(kind, spec, inp, record=(), substeps=None):
    """Whether :func:`run_phase` can run this phase (see :func:`why_not`)."""
    return why_not(kind, spec, inp, record, substeps) is None


def dense_kernel(net, inp, dtype=np.float64):
    """Whether a phase on the tasks kernel takes the matrix-product loop
    (:func:`~neuro_meta.engines.fused.dense.task_dense`: batch presentation,
    instantaneous neurons, float64)."""
    return bool(config.DENSE and inp.presentation == "batch" and net.tau_neuron == 0
                and np.dtype(dtype) == np.float64)


# ---------------------------------------------------------------------- tasks kernel
@jit
def task(ph, V, Xb, Yb, Cb, fac, h, msub, net, st):
    """The phase loop of one task on thread-local copies of every array it reads
    (results copied back to ``ph`` and ``V``); returns (steps, settled, first bad step
    or 0).

    numba counts references to an array at calls that pass it, atomically on the
    array's allocation; with copies, threads running tasks at the same time do not
    update the same counters (omega, lam, views of one phi) in the loop's calls."""
    ph_l = ph.copy()
    V_l = V.copy()
    local = Network(net.omega.copy(), net.lam.copy(), net.conn.copy(), net.sizes.copy(),
                    net.noff.copy(), net.acts.copy())
    if st.dense:
        out = task_dense(ph_l, V_l, Xb.copy(), Yb.copy(), Cb.copy(), fac.copy(), h, msub,
                         local, st)
    else:
        out = task_local(ph_l, V_l, Xb.copy(), Yb.copy(), Cb.copy(), fac.copy(), h, local,
                         st)
    ph[:] = ph_l
    V[:] = V_l
    return out


@jit
def phase_serial(phi, V, X, Y, C, fac, h, msub, net, st, steps, settled, bad):
    """All tasks of a phase, one after the other (results in place / in the out
    arrays); :func:`phase_parallel` runs slices of the tasks in threads. ``fac``,
    ``h`` and ``msub`` (sub-steps) are per task, or one row for all."""
    for b in range(phi.shape[0]):
        bf = b if fac.shape[0] > 1 else 0
        n, done, bd = task(phi[b], V[b], X[b], Y[b], C[b], fac[bf], h[bf], msub[bf], net,
                           st)
        steps[b] = n
        settled[b] = done
        bad[b] = bd


def phase_parallel(phi, V, X, Y, C, fac, h, msub, net, st, steps, settled, bad):
    """:func:`phase_serial` on contiguous slices of the tasks, one per thread (tasks are
    independent: the same numbers as in one thread, bit for bit)."""
    def job(a, b):
        per = (fac[a:b], h[a:b], msub[a:b]) if fac.shape[0] > 1 else (fac, h, msub)
        return lambda: phase_serial(phi[a:b], V[a:b], X[a:b], Y[a:b], C[a:b], *per, net,
                                    st, steps[a:b], settled[a:b], bad[a:b])

    if msub.shape[0] > 1:
        # tasks of different sub-steps cost differently: one job per task, the costliest
        # first, each taken by the next free thread (longest-processing-time order)
        order = np.argsort(-msub, kind="stable")
        run_parallel([job(int(b), int(b) + 1) for b in order])
        return
    run_parallel([job(a, b) for a, b in chunks(phi.shape[0], config.CHUNKS * threads())])


# ---------------------------------------------------------------------- driver
def stepping(net, inp, spec, pk, dtype):
    """The :class:`Stepping` record of a phase (``n_max`` set per kernel call)."""
    dt, tau_v = spec.dt, float(net.tau_neuron)
    exponential = spec.integrator == "expeuler"
    if tau_v > 0:
        a_v = float(np.exp(-dt / tau_v)) if exponential else dt / tau_v
    else:
        a_v = 0.0
    return Stepping(online=inp.presentation == "online", k_pres=int(inp.steps_per_sample),
                    n_max=int(spec.n_max), check=int(spec.check),
                    tol=-1.0 if spec.tol is None else float(spec.tol),
                    tau_phi=float(net.tau_synapse), dt=float(dt), tau_v=tau_v, a_v=a_v,
                    exponential=exponential, backprop=spec.rule == "backprop",
                    dense=dense_kernel(net, inp, dtype),
                    bound=np.dtype(dtype).type(DIVERGENCE_BOUND))


def _kernel(net, inp, phi, v, pk, st, dtype):
    """A function ``n_steps -> (flat phi, V, steps, settled, bad)`` running the phase
    from ``phi``, ``v`` on the tasks kernel or, for one large connection, the rows
    kernel; in the calling thread or the pool by the work's size."""
    B = phi[0].shape[0]
    X, Y, C = (np.ascontiguousarray(a, dtype=dtype) for a in (inp.X, inp.Y, inp.c))
    rows = len(net.connections) == 1 and B * pk.P >= config.ROWS_MIN_SYNAPSES \
        and pk.msub.shape[0] == 1 and pk.msub[0] == 1     # no sub-steps in the rows kernel
    if rows:
        rnet = RowsNet(pk.omega, pk.lam, pk.fac[0], int(pk.sizes[0]), int(pk.conn[0, 2]),
                       int(pk.acts[0]), np.dtype(dtype).type(pk.hs[0]))

    def run(n_steps):
        flat, V = pk.pack_phi(phi, dtype), pk.pack_v(v, dtype)
        out = (np.zeros(B, np.int64), np.zeros(B, np.bool_), np.zeros(B, np.int64))
        s = Stepping(*st[:2], int(n_steps), *st[3:])      # n_max of this call
        parallel = (B * n_steps * (flat.shape[1] + V.shape[2]) * V.shape[1]
                    >= config.PARALLEL_MIN_WORK and (rows or B > 1))
        if rows:
            phase_rows(flat, V, X, Y, C, rnet, s, *out,
                       rows_block(V.shape[2] - int(pk.sizes[0]), pk.P, B, parallel),
                       parallel=parallel)
        else:
            (phase_parallel if parallel else phase_serial)(
                flat, V, X, Y, C, pk.fac, pk.hs, pk.msub, pk.network, s, *out)
        return (flat, V) + out

    return run


def run_phase(kind, inp, phi, v, spec, rec=None, loss_fn=None, dtype=np.float64,
              substeps=None):
    """Integrate one phase with the fused kernel; same contract as
    :func:`~neuro_meta.engines.numpy_engine.integrate` (returns phi, v, recorder, settled,
    t_end, steps), starting from fast weights ``phi`` and potentials ``v`` (lists,
    float64) of the layered rate network ``kind``, with the settings ``spec``.

    ``dtype``: ``numpy.float32`` runs the kernel in single precision (about twice the
    throughput on large networks; results then agree with float64 to ~1e-6 only).
    ``substeps``: per task, the sub-steps of each step (see
    :func:`~neuro_meta.engines.numpy_engine.substeps_for`; batch kernel only).

    Divergence is tested at every step in the kernels (``not |x| < 1e10``, NaN
    included); they report per task the first bad step, and the phase is replayed up to
    the earliest one to raise the numpy engine's error (same step, same message).
    """
    dtype = np.dtype(dtype)
    net = kind.layered()
    rec = rec if rec is not None else Recorder((), 1, spec.dt)
    if net is None:
        return run_gain_phase(kind, inp, phi, v, spec, rec, loss_fn, substeps)
    if substeps is not None and np.any(np.asarray(substeps) != 1) \
            and not dense_kernel(net, inp, dtype):
        raise UnsupportedError("fused.run_phase: sub-steps run in the batch kernel only "
                               "(batch presentation, instantaneous neurons, float64)")
    pk = Layout(net, spec.integrator, inp, spec.dt, dtype, substeps)
    run = _kernel(net, inp, phi, v, pk, stepping(net, inp, spec, pk, dtype), dtype)
    # static weights beyond the divergence bound: the numpy loop reports it at step 1
    static_bad = any(not c.plastic and p.size and not np.abs(p).max() < DIVERGENCE_BOUND
                     for c, p in zip(net.connections, phi))
    flat, V, steps, settled, bad = run(1 if static_bad else spec.n_max)
    if static_bad:
        bad[:] = 1
    if bad.any():
        # replay up to the first bad step (same code, same data: the same numbers) and
        # raise the numpy engine's error for the state of that step
        n = int(bad[bad > 0].min())
        flat, V = run(n)[:2]
        with np.errstate(over="ignore", invalid="ignore"):
            check_finite(pk.unpack_phi(flat, net), pk.unpack_v(V), n, spec, kind)
        raise AssertionError("fused kernel: replayed state is finite")  # pragma: no cover
    phi_out, v_out = pk.unpack_phi(flat, net), pk.unpack_v(V)
    n = int(steps.max()) if phi[0].shape[0] else 0
    rec.force(n * spec.dt, phi_out, v_out, loss_fn)
    if spec.tol is None:
        settled[:] = False
    return phi_out, v_out, rec, settled, n * spec.dt, n


# ---------------------------------------------------------------------- gain kernel
def run_gain_phase(kind, inp, phi, v, spec, rec, loss_fn=None, substeps=None):
    """:func:`run_phase` for a gain-modulated network (the dual system) on the gain
    kernel (:mod:`.gain`); a divergence is replayed on the numpy loop, which raises its
    error. The returned neuron state is the kind's steady state at the start of the last
    step, as the numpy loop's."""
    from . import gain
    from ..numpy_engine import Phase, integrate

    net, pack, unpack = gain.layout(kind)
    full = pack(phi)
    prev = full.copy()
    B = full.shape[0]
    msub, hs, fac = step_factors(net.lam, spec.dt, kind.tau_fast, substeps,
                                 spec.integrator, np.float64)
    st = Stepping(online=False, k_pres=1, n_max=int(spec.n_max), check=int(spec.check),
                  tol=-1.0 if spec.tol is None else float(spec.tol),
                  tau_phi=float(kind.tau_fast), dt=float(spec.dt), tau_v=0.0, a_v=0.0,
                  exponential=spec.integrator == "expeuler", backprop=True, dense=True,
                  bound=DIVERGENCE_BOUND)
    X, Y, C = (np.ascontiguousarray(a, dtype=np.float64) for a in (inp.X, inp.Y, inp.c))
    steps, settled, bad = np.zeros(B, np.int64), np.zeros(B, np.bool_), np.zeros(B, np.int64)

    def job(a, b):
        per = (fac[a:b], hs[a:b], msub[a:b]) if fac.shape[0] > 1 else (fac, hs, msub)
        return lambda: gain.phase_gain(full[a:b], prev[a:b], X[a:b], Y[a:b], C[a:b], *per,
                                       net, st, steps[a:b], settled[a:b], bad[a:b])

    work = B * spec.n_max * full.shape[1] * X.shape[1]
    if work >= config.PARALLEL_MIN_WORK and B > 1:
        run_parallel([job(a, b) for a, b in chunks(B, config.CHUNKS * threads())])
    else:
        job(0, B)()
    m = np.broadcast_to(msub, (B,)) if msub.shape[0] == 1 else msub
    if bad.any():   # the numpy loop raises at the step it happens, with its message
        rec.engines.remove(NAME)
        rec.ran("numpy")
        return integrate(Phase(kind, inp, spec, loss_fn=loss_fn), phi, v, rec, np.asarray(m))
    phi_out = unpack(full)
    v_out = kind.neurons(unpack(prev), X)
    n = int(steps.max()) if B else 0
    rec.force(n * spec.dt, phi_out, v_out, loss_fn)
    if spec.tol is None:
        settled[:] = False
    return phi_out, v_out, rec, settled, n * spec.dt, n
