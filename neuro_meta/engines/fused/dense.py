"""The batch kernel: one task's phase as matrix products per connection (batch
presentation, instantaneous neurons, float64 -- the common case of meta-learning).

Currents, the error sent down and the weight gradient of all sample copies at once; BLAS
for connections of at least ``config.DOT_MIN_WEIGHTS`` weights (read when the kernels
compile), loops below. All the gradients of a step come from the start-of-step state, so
the settling test after a step is made with the next step's gradients at no extra cost.
"""
import numpy as np

from .config import DOT_MIN_WEIGHTS
from .scalar import jit, pull_step, rate, slope, tanh


@jit
def mm_fwd(X, W, out):
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


@jit
def mm(A, B, out, n_weights):
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


@jit
def advance(ph, G, omega, lam, fac, h, exponential, bound):
    """``ph += fac (G - lam (ph - omega))`` (:func:`pull_step`; ``fac`` per synapse for exponential
    Euler, else ``h``); False if a new weight is not below ``bound``."""
    ok = True
    if exponential:
        for k in range(ph.shape[0]):
            p = ph[k]
            q = pull_step(p, fac[k], G[k], lam[k], omega[k])
            ph[k] = q
            ok &= abs(q) < bound
    else:
        for k in range(ph.shape[0]):
            p = ph[k]
            q = pull_step(p, h, G[k], lam[k], omega[k])
            ph[k] = q
            ok &= abs(q) < bound
    return ok


@jit
def drift(ph, G, omega, lam):
    """max |G - lam (ph - omega)| (the settling residual; a NaN stays NaN)."""
    res = 0.0
    for k in range(ph.shape[0]):
        a = abs(G[k] - lam[k] * (ph[k] - omega[k]))
        if a > res or a != a:
            res = a
    return res


@jit
def dense_forward(ph, Xs, Is, Rout, net, ncol, Se):
    """Currents ``Is[l] = [r_pre; 1] W_lᵀ`` and rates of every layer at steady state, from
    the weights ``ph`` (rates into ``Xs[l + 1]``, the output's into ``Rout``)."""
    conn, sizes, acts = net.conn, net.sizes, net.acts
    L = sizes.shape[0] - 1
    for l in range(L):
        W = ph[conn[l, 0]:conn[l, 0] + sizes[l + 1] * ncol[l]].reshape(
            (sizes[l + 1], ncol[l]))
        mm_fwd(Xs[l], W, Is[l])
        out = Xs[l + 1] if l < L - 1 else Rout
        Il = Is[l]
        code = acts[l]
        for s in range(Se):
            if code == 1:
                for j in range(sizes[l + 1]):
                    out[s, j] = tanh(Il[s, j])
            else:
                for j in range(sizes[l + 1]):
                    out[s, j] = rate(code, Il[s, j])



@jit
def dense_gradients(ph, Xs, Is, Ds, Dn, Rout, G, Yb, Cb, net, ncol, backprop, need_check,
                    Se):
    """The output error, then per connection (output first) the error sent down
    (``backprop``) and the weight gradient ``G = Dᵀ [r_pre; 1]``; with ``need_check`` the
    settling residual ``max |G − λ(φ − ω)|``, which it returns (else 0)."""
    omega, lam, conn, sizes, acts = net.omega, net.lam, net.conn, net.sizes, net.acts
    L = sizes.shape[0] - 1
    DL = Ds[L - 1]
    IL = Is[L - 1]
    code = acts[L - 1]
    for s in range(Se):
        c = Cb[s]
        for j in range(sizes[L]):
            r = Rout[s, j]
            DL[s, j] = (Yb[s, j] - r) * slope(code, IL[s, j], r) * c
    res = 0.0
    for l in range(L - 1, -1, -1):
        base = conn[l, 0]
        nw = sizes[l + 1] * ncol[l]
        W = ph[base:base + nw].reshape((sizes[l + 1], ncol[l]))
        if backprop and l > 0:
            mm(Ds[l], W, Dn[l], nw)
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
                        Dd[s, i] = Dl[s, i] * slope(code, Il[s, i], Xl[s, i])
        if conn[l, 1] == 1:
            mm(Ds[l].T, Xs[l], G[base:base + nw].reshape((sizes[l + 1], ncol[l])),
                nw)
            if need_check:
                r = drift(ph[base:base + nw], G[base:base + nw],
                           omega[base:base + nw], lam[base:base + nw])
                if not r <= res:
                    res = r
    return res



@jit
def dense_step(ph, V, Is, G, fac, h, net, ncol, st, Se):
    """One (sub-)step: the potentials of the step into ``V`` (all units, the input layer
    first), then the plastic weights advanced by :func:`advance`; False if a value is not
    below the bound."""
    omega, lam, conn, sizes = net.omega, net.lam, net.conn, net.sizes
    exponential, bound = st.exponential, st.bound
    L = sizes.shape[0] - 1
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
            okw = advance(ph[a:b], G[a:b], omega[a:b], lam[a:b], fac[a:b], h,
                           exponential, bound)
            ok &= okw
    return ok



@jit
def task_dense(ph, V, Xb, Yb, Cb, fac, h, msub, net, st):
    """The phase loop of one task for batch presentation and instantaneous neurons
    (the common case of meta-learning), as matrix products per connection.

    Same step as :func:`task_local` (all gradients from the start-of-step state, then
    all the weights advanced); the gradients of a step are also those of the settling
    test made after the previous step, so that test costs no extra pass. Per
    connection ``l``, ``X[l]`` holds the presynaptic rates and a column of ones for
    the bias, so that the currents, the error sent down and the weight gradient are
    three products with the weight matrix (a view of ``ph``); large ones go to BLAS.
    Each step is ``msub`` sub-steps of ``h`` (with their ``fac``); the settling tests
    and ``n_max`` count whole steps."""
    conn, sizes = net.conn, net.sizes
    n_max, check, tol = st.n_max, st.check, st.tol
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
        dense_forward(ph, Xs, Is, Rout, net, ncol, Se)
        # -- output error, then every connection's gradient, output connection first
        res = dense_gradients(ph, Xs, Is, Ds, Dn, Rout, G, Yb, Cb, net, ncol, st.backprop,
                              need_check, Se)
        if need_check:
            settled = res < tol
            if settled or n >= n_max:
                break
        # -- the step: potentials of this step, then the plastic weights
        ok = dense_step(ph, V, Is, G, fac, h, net, ncol, st, Se)
        sub += 1
        if not ok:
            bad = n + 1
            n += 1
            break
        if sub == msub:
            sub = 0
            n += 1
    return n, settled, bad
