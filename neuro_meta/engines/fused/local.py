"""The general loop kernel: one task's phase, neurons then one pass over the synapses of
every connection (any presentation, dynamic or instantaneous neurons, any layers).

Within a task, one step is: neurons (Euler or exponential Euler, from the rates at the
start of the step; instantaneous neurons take their steady state), the output error,
then one pass over the synapses of every connection, output connection first, that sends
the error down (``backprop``, through the start-of-step weights), updates the fast
weights (``tau_phi dphi/dt = sum_s c_s delta_s [r_s; 1]^T - lam (phi - omega)``, by
:func:`~neuro_meta.engines.fused.scalar.pull_step`) and accumulates the next step's
synaptic currents from the new weights while the row of weights is in the cache.
"""
import numpy as np

from .scalar import jit, pull_step, rate, slope, tanh


@jit
def forward(ph, base, n_pre, n_post, hb, R, pre0, I, post0, Se):
    """``I[s, post] = W R[s, pre] + b`` of one connection for every sample copy."""
    ncol = n_pre + hb
    if base < 0 or n_pre < 0 or ncol < 0 or pre0 < 0 or post0 < 0:   # see conn_pass
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


@jit
def row_gradient(ph, row, n_pre, hb, R, pre0, D, post, down, gbuf, Se):
    """The weight gradient of one row, ``gbuf = sum_s D[s, post] [R[s, pre]; 1]``, and with
    ``down`` the error sent down through it, ``D[s, pre] += phi[post, pre] D[s, post]``, in
    one sweep per sample copy."""
    if row < 0 or n_pre < 0 or pre0 < 0 or post < 0:   # never true (see conn_pass)
        return
    for i in range(n_pre + hb):
        gbuf[i] = 0.0
    for s in range(Se):
        d = D[s, post]
        if down:
            for i in range(n_pre):
                D[s, pre0 + i] += ph[row + i] * d
                gbuf[i] += d * R[s, pre0 + i]
        else:
            for i in range(n_pre):
                gbuf[i] += d * R[s, pre0 + i]
        if hb:
            gbuf[n_pre] += d


@jit
def row_update_online(ph, row, n_pre, hb, R, pre0, d, omega, lam, fac, h, exponential, RN,
                      I, post, bound):
    """Online presentation (one sample copy): update one row of weights and store the
    next step's current ``I[0, post] = phi_new [RN; 1]`` in the same loop; False if a new
    weight is not below ``bound``."""
    if row < 0 or n_pre < 0 or pre0 < 0 or post < 0:   # never true (see conn_pass)
        return True
    acc = 0.0
    okr = True
    if exponential:
        for i in range(n_pre):
            p = ph[row + i]
            q = pull_step(p, fac[row + i], d * R[0, pre0 + i], lam[row + i],
                          omega[row + i])
            ph[row + i] = q
            acc += q * RN[0, pre0 + i]
            okr &= abs(q) < bound
    else:
        for i in range(n_pre):
            p = ph[row + i]
            q = pull_step(p, h, d * R[0, pre0 + i], lam[row + i], omega[row + i])
            ph[row + i] = q
            acc += q * RN[0, pre0 + i]
            okr &= abs(q) < bound
    if hb:
        k = row + n_pre
        p = ph[k]
        f = fac[k] if exponential else h
        q = pull_step(p, f, d, lam[k], omega[k])
        ph[k] = q
        okr &= abs(q) < bound
        acc = acc + q
    I[0, post] = acc
    return okr


@jit
def conn_pass(ph, base, n_pre, n_post, hb, plastic, R, pre0, D, post0, down,
               omega, lam, fac, h, exponential, update, RN, I, fuse, gbuf, Se, bound):
    """One pass over the synapses of a connection.

    ``down``: first send the error down, ``D[s, pre] = sum_j phi[j, pre] D[s, j]``
    (start-of-pass weights; the caller multiplies by f'). ``update``: advance the
    plastic weights, ``phi += fac * (g - lam (phi - omega))`` (:func:`pull_step`) with
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
            row_gradient(ph, row, n_pre, hb, R, pre0, D, post0 + j, down, gbuf, Se)
        elif down:
            for s in range(Se):
                d = D[s, post0 + j]
                for i in range(n_pre):
                    D[s, pre0 + i] += ph[row + i] * d
        if plastic:
            if online_fused:
                ok &= row_update_online(ph, row, n_pre, hb, R, pre0, D[0, post0 + j],
                                        omega, lam, fac, h, exponential, RN, I, post0 + j,
                                        bound)
                continue
            if update:
                okr = True
                if exponential:
                    for i in range(ncol):
                        p = ph[row + i]
                        q = pull_step(p, fac[row + i], gbuf[i], lam[row + i], omega[row + i])
                        ph[row + i] = q
                        okr &= abs(q) < bound
                else:
                    for i in range(ncol):
                        p = ph[row + i]
                        q = pull_step(p, h, gbuf[i], lam[row + i], omega[row + i])
                        ph[row + i] = q
                        okr &= abs(q) < bound
                ok &= okr
            else:
                for i in range(ncol):
                    a = abs(gbuf[i] - lam[row + i] * (ph[row + i] - omega[row + i]))
                    if not a <= res:
                        res = a
        if update and fuse:
            forward(ph, row, n_pre, 1, hb, RN, pre0, I, post0 + j, Se)
    return ok, res


@jit
def output_error(R, V, D, Yb, Cb, s0, Se, gain, n0, n_out, code):
    """``D = (y - r) f'(v) c`` at the output layer (sample copies s, data row s0 + s)."""
    for s in range(Se):
        c = Cb[s0 + s] * gain
        for j in range(n_out):
            r = R[s, n0 + j]
            D[s, n0 + j] = (Yb[s0 + s, j] - r) * slope(code, V[s, n0 + j], r) * c


@jit
def residual(ph, conn, sizes, noff, acts, R, V, D, Yb, Cb, s0, gain, omega, lam,
              backprop, gbuf, Se):
    """max |tau_phi dphi/dt| over the plastic synapses at rates R, potentials V."""
    L = sizes.shape[0] - 1
    output_error(R, V, D, Yb, Cb, s0, Se, gain, noff[L], sizes[L], acts[L - 1])
    res = 0.0
    for l in range(L - 1, -1, -1):
        down = backprop and l > 0
        _, r = conn_pass(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2],
                          conn[l, 1] == 1, R, noff[l], D, noff[l + 1], down, omega, lam,
                          lam, 0.0, False, False, R, D, False, gbuf, Se, 0.0)
        if not r <= res:
            res = r
        if down:
            scale_by_slope(R, V, D, noff[l], sizes[l], acts[l - 1], Se)
    return res


@jit
def scale_by_slope(R, V, D, n0, n, code, Se):
    """``D *= f'(V)`` on units ``n0 .. n0+n-1`` (tanh: its own loop, vectorised)."""
    if n0 < 0 or n < 0:   # never true (see conn_pass)
        return
    for s in range(Se):
        if code == 1:
            for i in range(n0, n0 + n):
                D[s, i] *= 1.0 - R[s, i] * R[s, i]
        else:
            for i in range(n0, n0 + n):
                D[s, i] *= slope(code, V[s, i], R[s, i])


@jit
def load_inputs(R, Xb, s0, Se, n_in):
    for s in range(Se):
        for i in range(n_in):
            R[s, i] = Xb[s0 + s, i]


@jit
def rates(code, V, R, n0, n, Se):
    """``R[s, n0:n0+n] = f(V[s, n0:n0+n])``, one loop per activation (vectorised)."""
    if n0 < 0 or n < 0:   # never true: indices are >= 0 (see conn_pass)
        return
    for s in range(Se):
        if code == 1:
            for j in range(n0, n0 + n):
                R[s, j] = tanh(V[s, j])
        elif code == 0:
            for j in range(n0, n0 + n):
                R[s, j] = V[s, j]
        else:
            for j in range(n0, n0 + n):
                R[s, j] = rate(code, V[s, j])


@jit
def steady(ph, conn, sizes, noff, acts, R, V, I, Se, from_layer):
    """Instantaneous neurons: ``v_l = I_l``, ``r_l = f(v_l)``, computing the currents
    of the layers above ``from_layer`` (those of ``from_layer`` are in I)."""
    L = sizes.shape[0] - 1
    for l in range(L):
        n0, n = noff[l + 1], sizes[l + 1]
        if l > from_layer:
            forward(ph, conn[l, 0], sizes[l], n, conn[l, 2], R, noff[l], I, n0, Se)
        for s in range(Se):
            for j in range(n0, n0 + n):
                V[s, j] = I[s, j]
        rates(acts[l], V, R, n0, n, Se)


@jit
def local_start(ph, V, R, I, Xb, net, dyn, Se):
    """The state at the start of step 0: input rates (sample 0), neuron rates and
    currents (instantaneous neurons: the first layer's currents; the step computes those
    above)."""
    conn, sizes, noff, acts = net.conn, net.sizes, net.noff, net.acts
    L = sizes.shape[0] - 1
    load_inputs(R, Xb, 0, Se, sizes[0])
    for l in range(L if dyn else 1):
        forward(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2], R, noff[l], I,
                noff[l + 1], Se)
        if dyn:
            rates(acts[l], V, R, noff[l + 1], sizes[l + 1], Se)


@jit
def local_neurons(ph, V, R, I, net, st, Se):
    """The neurons of one step from the start-of-step rates (in R) and currents (in I):
    Euler or exponential Euler, or instantaneous neurons at their steady state."""
    conn, sizes, noff, acts = net.conn, net.sizes, net.noff, net.acts
    L = sizes.shape[0] - 1
    ntot = V.shape[1]
    if st.tau_v > 0.0:
        a_v = st.a_v
        for s in range(Se):
            for k in range(noff[1], ntot):
                i_k = I[s, k]
                if st.exponential:
                    V[s, k] = i_k + (V[s, k] - i_k) * a_v
                else:
                    V[s, k] = V[s, k] + a_v * (i_k - V[s, k])
        for l in range(L):
            rates(acts[l], V, R, noff[l + 1], sizes[l + 1], Se)
    else:
        steady(ph, conn, sizes, noff, acts, R, V, I, Se, 0)


@jit
def local_residual(ph, V, R, I, prev, R2, V2, I2, D2, Yb, Cb, gbuf, net, st, Se):
    """The settling residual after a step: online, the drift of phi over the last cycle
    (``prev`` is updated); batch, ``max |tau_phi dphi/dt|`` at the new state and, with
    dynamic neurons, ``max |tau_v dv/dt|``."""
    omega, lam, conn, sizes, noff, acts = (net.omega, net.lam, net.conn, net.sizes,
                                           net.noff, net.acts)
    ntot = V.shape[1]
    tau_v = st.tau_v
    if st.online:
        m = 0.0
        scale = st.tau_phi / (st.check * st.dt)
        for i in range(ph.shape[0]):
            a = abs((ph[i] - prev[i]) * scale)
            if not a <= m:
                m = a
        prev[:] = ph
        return m
    if tau_v > 0.0:   # currents at the new weights are in I (fused)
        m = 0.0
        for s in range(Se):
            for k in range(noff[1], ntot):
                a = abs(((I[s, k] - V[s, k]) / tau_v) * tau_v)
                if not a <= m:
                    m = a
        r = residual(ph, conn, sizes, noff, acts, R, V, D2, Yb, Cb, 0, 1.0, omega, lam,
                     st.backprop, gbuf, Se)
        return r if not r <= m else m
    R2[:] = R
    I2[:, noff[1]:noff[1] + sizes[1]] = 0.0
    forward(ph, conn[0, 0], sizes[0], sizes[1], conn[0, 2], R2, 0, I2, noff[1], Se)
    steady(ph, conn, sizes, noff, acts, R2, V2, I2, Se, 0)
    return residual(ph, conn, sizes, noff, acts, R2, V2, D2, Yb, Cb, 0, 1.0, omega, lam,
                    st.backprop, gbuf, Se)


@jit
def task_local(ph, V, Xb, Yb, Cb, fac, h, net, st):
    """The phase loop of one task (see :func:`~neuro_meta.engines.fused.driver.task`):
    neurons, then one pass over the synapses per connection, output connection first."""
    omega, lam, conn, sizes, noff, acts = (net.omega, net.lam, net.conn, net.sizes,
                                           net.noff, net.acts)
    online, k_pres, n_max, check, tol = st.online, st.k_pres, st.n_max, st.check, st.tol
    tau_v, exponential, backprop, bound = st.tau_v, st.exponential, st.backprop, st.bound
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
    scratch = (Se, ntot) if (use_tol and not online) else (0, ntot)   # batch settling test
    R2, V2, I2, D2 = (np.zeros(scratch), np.zeros(scratch), np.zeros(scratch),
                      np.zeros(scratch))
    dyn = tau_v > 0.0
    gain = float(S) if online else 1.0

    def sample(n):
        return ((n // k_pres) % S) if online else 0

    local_start(ph, V, R, I, Xb, net, dyn, Se)
    n = 0
    bad = 0
    settled = False
    while n < n_max:
        # -- neurons (start-of-step rates are in R, currents in I)
        local_neurons(ph, V, R, I, net, st, Se)
        # -- synapses, output connection first
        s0 = sample(n)
        output_error(R, V, D, Yb, Cb, s0, Se, gain, noff[L], sizes[L], acts[L - 1])
        s1 = sample(n + 1)
        load_inputs(RN, Xb, s1, Se, n_in)
        ok = True
        for l in range(L - 1, -1, -1):
            down = backprop and l > 0
            fuse = dyn or l == 0
            o, _ = conn_pass(ph, conn[l, 0], sizes[l], sizes[l + 1], conn[l, 2],
                              conn[l, 1] == 1, R, noff[l], D, noff[l + 1], down, omega,
                              lam, fac, h, exponential, True, RN if l == 0 else R, I,
                              fuse, gbuf, Se, bound)
            ok &= o
            if down:
                scale_by_slope(R, V, D, noff[l], sizes[l], acts[l - 1], Se)
        for s in range(Se):
            for k in range(noff[1], ntot):
                ok &= abs(V[s, k]) < bound
        n += 1
        if not ok:
            bad = n
            break
        load_inputs(R, Xb, s1, Se, n_in)       # input rates of the next step
        if use_tol and n % check == 0:
            settled = local_residual(ph, V, R, I, prev, R2, V2, I2, D2, Yb, Cb, gbuf, net,
                                     st, Se) < tol
            if settled:
                break
    return n, settled, bad
