"""The rows kernel: one-connection networks with many weights (tasks x synapses >=
``config.ROWS_MIN_SYNAPSES``).

A single connection is row-local: unit j's potential, error and weight row depend only
on row j and the inputs. So blocks of rows (cache sized) are integrated independently,
each for all tasks and for a run of steps while it sits in the cache (omega and lam are
read once per run for all tasks, not once per task and step; the large case is
memory-bound otherwise), threads taking ranges of blocks; the runs end at the settling
checks, where the per-block residuals are reduced per task and settled tasks are frozen
as in the numpy engine.
"""
import numpy as np

from . import config
from .local import conn_pass, forward
from .pool import chunks, run_parallel, threads
from .scalar import jit, rate, slope


@jit
def rows_steps(j0, j1, n0, n1, ph, V, I, D, X, Y, C, prev, rows, st, check_now, scale,
               active, gbuf):
    """Rows ``j0 .. j1-1`` (output units) of every active task, steps ``n0 .. n1-1``:
    neurons, errors, weight rows and next currents (as :func:`task` does for one
    connection). Returns (first bad step or 0 per task, settling residual of these
    rows at step n1 per task if ``check_now``)."""
    omega, lam, fac, n_in, hb, act, h = (rows.omega, rows.lam, rows.fac, rows.n_in,
                                         rows.hb, rows.act, rows.h)
    online, k_pres, a_v, exponential, bound = (st.online, st.k_pres, st.a_v,
                                               st.exponential, st.bound)
    dyn = st.tau_v > 0.0
    B, Se = V.shape[0], V.shape[1]
    S = X.shape[1]
    ncol = n_in + hb
    nj = j1 - j0
    gain = float(S) if online else 1.0
    badr = np.zeros(B, np.int64)
    res = np.zeros(B)
    if n0 == 0:   # the currents at the start of step 0
        for b in range(B):
            forward(ph[b], j0 * ncol, n_in, nj, hb, X[b, 0:Se], 0, I[b], j0, Se)
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
                    r = rate(act, v)
                    D[b, s, j] = (Y[b, s0 + s, j] - r) * slope(act, v, r) * c
                    ok &= abs(v) < bound
            o, _ = conn_pass(ph[b], j0 * ncol, n_in, nj, hb, True, X[b, s0:s0 + Se], 0,
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
                res[b] = rows_residual(j0, j1, ph[b], V[b], I[b], D[b], X[b], Y[b], C[b],
                                       prev, b, rows, st, scale, gbuf)
    return badr, res


@jit
def rows_residual(j0, j1, ph, V, I, D, X, Y, C, prev, b, rows, st, scale, gbuf):
    """The settling residual of rows ``j0 .. j1-1`` of one task (the numpy engine's
    test; see :func:`task`)."""
    omega, lam, n_in, hb, act = rows.omega, rows.lam, rows.n_in, rows.hb, rows.act
    dyn, tau_v = st.tau_v > 0.0, st.tau_v
    ncol = n_in + hb
    m = 0.0
    if st.online:   # drift of the rows over the cycle
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
                r = rate(act, v)
                D[s, j] = (Y[s, j] - r) * slope(act, v, r) * C[s]
    _, r = conn_pass(ph, j0 * ncol, n_in, j1 - j0, hb, True, X[0:Se], 0, D, j0, False,
                      omega, lam, lam, 0.0, False, False, X[0:Se], I, False, gbuf, Se, 0.0)
    if not r <= m:
        m = r
    return m


@jit
def rows_blocks(c0, c1, block, n, n1, check_now, phi, V, I, D, X, Y, C, prev, rows, st,
                scale, active, badr, res):
    """Blocks ``c0 .. c1-1`` of ``block`` rows, steps ``n .. n1-1`` (per block: first
    bad step per task in ``badr[c]``, residuals in ``res[c]``)."""
    n_out = V.shape[2] - rows.n_in
    gbuf = np.empty(rows.n_in + rows.hb)
    for c in range(c0, c1):
        badr[c], res[c] = rows_steps(
            c * block, min(n_out, (c + 1) * block), n, n1, phi, V, I, D, X, Y, C, prev,
            rows, st, check_now, scale, active, gbuf)


@jit
def rows_reduce(badr, res, active, steps, settled, bad, n1, check_now, tol):
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


def phase_rows(phi, V, X, Y, C, rows, st, steps, settled, bad, block, parallel):
    """All tasks of a one-connection phase, lock-step, in blocks of ``block`` rows: each
    run of steps up to a settling check advances the blocks (in the calling thread, or
    in ranges of blocks, one per thread), then the runs' ends are reduced per task.
    Same results and outputs as :func:`phase_serial`."""
    n_max, check, tol = st.n_max, st.check, st.tol
    B, Se = V.shape[0], V.shape[1]
    n_out = V.shape[2] - rows.n_in
    nblk = -(-n_out // block)
    I = np.zeros((B, Se, n_out))
    D = np.zeros((B, Se, n_out))
    use_tol = tol > 0.0
    prev = phi.copy() if (use_tol and st.online) else np.zeros((0, 0), phi.dtype)
    res = np.zeros((nblk, B))
    badr = np.zeros((nblk, B), np.int64)
    active = np.ones(B, np.bool_)
    scale = st.tau_phi / (check * st.dt)
    ranges = chunks(nblk, threads()) if parallel else [(0, nblk)]
    n = 0
    while n < n_max:
        n1 = min(n_max, (n // check + 1) * check) if use_tol else n_max
        check_now = use_tol and n1 % check == 0

        def job(c0, c1, n=n, n1=n1, check_now=check_now):
            return lambda: rows_blocks(c0, c1, block, n, n1, check_now, phi, V, I, D, X, Y,
                                       C, prev, rows, st, scale, active, badr, res)

        jobs = [job(c0, c1) for c0, c1 in ranges]
        if parallel:
            run_parallel(jobs)
        else:
            jobs[0]()
        if rows_reduce(badr, res, active, steps, settled, bad, n1, check_now, tol):
            return
        n = n1


def rows_block(n_out, P, B, parallel):
    """Rows per block of the rows kernel: a cache-sized block, and at least one block
    per thread when parallel."""
    per_row = 8 * (P // max(n_out, 1)) * (B + 2)
    block = max(1, config.ROWS_BLOCK_BYTES // per_row)
    if parallel:
        block = min(block, -(-n_out // threads()))
    return max(1, min(block, n_out))
