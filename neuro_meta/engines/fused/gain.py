"""The gain kernel: the dual system's phase loop, compiled (batch presentation).

A gain-modulated network (:class:`~neuro_meta.DualSystem`): slow weights ``W_l``, per
hidden unit a gain ``g`` and a bias ``b``, a linear readout ``R``::

    a_l = W_l r_{l-1},   u_l = g_l ⊙ a_l + b_l,   r_l = f(u_l),   ŷ = R [r_L; 1]

Per task the kernel holds *all* of g, b and R in one vector (gains layer after layer,
then biases, then the readout's rows); the fast groups move, the slow ones are held by a
zero mask. One step, as the numpy loop's: the forward pass and the backprop gradient at
the start-of-step state, then every fast variable advanced by
:func:`~neuro_meta.engines.fused.scalar.pull_step`; the gradient a step computes is also
the settling test of the state the previous step left (no extra pass), sub-steps as in
the batch kernel. A state beyond the divergence bound stops the task; the driver then
replays the phase on the numpy loop, which raises its error (same step, same message).
"""
from typing import NamedTuple

import numpy as np

from .dense import mm, mm_fwd
from .scalar import jit, pull_step, rate, slope, tanh


class GainNet(NamedTuple):
    """A gain-modulated network in the kernel's layout (shared by the tasks)."""

    W: np.ndarray        #: (sum n_l n_{l-1},) slow weights, layer after layer, row-major
    woff: np.ndarray     #: (L + 1,) offsets of the layers in ``W``
    sizes: np.ndarray    #: (L + 2,) layer sizes, input first, output last
    goff: np.ndarray     #: (L + 1,) offsets of the gains of each hidden layer in a vector
    boff: np.ndarray     #: (L + 1,) offsets of the biases
    roff: int            #: offset of the readout (n_out rows of n_L + 1)
    lam: np.ndarray      #: (P,) pull strengths (0 where slow)
    anchor: np.ndarray   #: (P,) anchors φ₀
    mask: np.ndarray     #: (P,) 1.0 where fast, 0.0 where slow
    act: int             #: activation code of the hidden units


def layout(kind):
    """(GainNet, a function fast list (B arrays) -> (B, P) full vectors, and its inverse)
    for a DualSystem ``kind`` (its :meth:`~neuro_meta.DualSystem.gain_layout`)."""
    from .scalar import ACT_CODES

    desc = kind.gain_layout()
    sizes = np.array(desc["sizes"], np.int64)
    L = len(sizes) - 2
    W = np.concatenate([np.ravel(w) for w in desc["W"]])
    woff = np.concatenate([[0], np.cumsum([np.size(w) for w in desc["W"]])]).astype(np.int64)
    hidden = sizes[1:-1]
    goff = np.concatenate([[0], np.cumsum(hidden)]).astype(np.int64)
    boff = goff + goff[-1]
    roff = int(boff[-1])
    P = roff + int(sizes[-1]) * (int(hidden[-1]) + 1)
    slots = {}
    for l in range(L):
        slots[("gain", l)] = (int(goff[l]), int(goff[l + 1]))
        slots[("bias", l)] = (int(boff[l]), int(boff[l + 1]))
    slots[("readout", 0)] = (roff, P)
    base = np.zeros(P)
    lam, anchor, mask = np.zeros(P), np.zeros(P), np.zeros(P)
    for key, value in desc["slow"].items():
        a, b = slots[key]
        base[a:b] = np.ravel(value)
    for key, lm, p0 in zip(desc["fast"], desc["lam"], desc["anchor"]):
        a, b = slots[key]
        lam[a:b], anchor[a:b], mask[a:b] = np.ravel(lm), np.ravel(p0), 1.0
    net = GainNet(W, woff, sizes, goff, boff, roff, lam, anchor, mask,
                  ACT_CODES[desc["activation"]])

    def pack(phi):
        full = np.broadcast_to(base, (phi[0].shape[0], P)).copy()
        for key, p in zip(desc["fast"], phi):
            a, b = slots[key]
            full[:, a:b] = p.reshape(p.shape[0], -1)
        return full

    def unpack(full):
        return [np.array(full[:, slots[key][0]:slots[key][1]].reshape(
            (full.shape[0],) + np.shape(p0))) for key, p0 in zip(desc["fast"], desc["anchor"])]

    return net, pack, unpack


@jit
def gain_forward(ph, X, net, A, U, R, Y):
    """Forward pass of every sample copy: ``A[l] = r_{l-1} W_lᵀ``, ``U[l]``, rates
    ``R[l]`` per hidden layer (rows = samples) and the output ``Y``."""
    sizes, L = net.sizes, net.sizes.shape[0] - 2
    Se = X.shape[0]
    for l in range(L):
        n_pre, n = sizes[l], sizes[l + 1]
        w0, g0, b0 = net.woff[l], net.goff[l], net.boff[l]
        Al, Ul, Rl = A[l], U[l], R[l]      # list items outside the loops
        mm_fwd(X if l == 0 else R[l - 1], net.W[w0:w0 + n * n_pre].reshape((n, n_pre)), Al)
        gl, bl = ph[g0:g0 + n], ph[b0:b0 + n]
        for s in range(Se):
            for j in range(n):
                Ul[s, j] = gl[j] * Al[s, j] + bl[j]
        for s in range(Se):
            if net.act == 1:
                for j in range(n):
                    Rl[s, j] = tanh(Ul[s, j])
            else:
                for j in range(n):
                    Rl[s, j] = rate(net.act, Ul[s, j])
    n_L, n_out = sizes[L], sizes[L + 1]
    RL = R[L - 1]
    Rm = ph[net.roff:net.roff + n_out * (n_L + 1)].reshape((n_out, n_L + 1))
    for s in range(Se):
        for o in range(n_out):
            acc = 0.0
            for j in range(n_L):
                acc += Rm[o, j] * RL[s, j]
            Y[s, o] = acc + Rm[o, n_L]


@jit
def gain_gradient(ph, X, Yb, Cb, net, A, U, R, Y, G, D, Dn):
    """``G = −∂/∂(g, b, R) Σ_s c_s ½‖ŷ_s − y_s‖²`` (the force; zero where slow) by
    backprop through the forward pass, and the settling residual ``max |G − λ(φ − φ₀)|``
    over the fast variables, which it returns."""
    sizes, L = net.sizes, net.sizes.shape[0] - 2
    Se = X.shape[0]
    n_L, n_out = sizes[L], sizes[L + 1]
    RL, DL = R[L - 1], D[L - 1]
    Rm = ph[net.roff:net.roff + n_out * (n_L + 1)].reshape((n_out, n_L + 1))
    Gm = G[net.roff:net.roff + n_out * (n_L + 1)].reshape((n_out, n_L + 1))
    Gm[:, :] = 0.0
    DL[:, :] = 0.0
    for s in range(Se):
        for o in range(n_out):
            e = (Y[s, o] - Yb[s, o]) * Cb[s]
            for j in range(n_L):
                Gm[o, j] += e * RL[s, j]
                DL[s, j] += e * Rm[o, j]
            Gm[o, n_L] += e
    for l in range(L - 1, -1, -1):
        n_pre, n = sizes[l], sizes[l + 1]
        w0, g0, b0 = net.woff[l], net.goff[l], net.boff[l]
        Al, Ul, Rl, Dl = A[l], U[l], R[l], D[l]
        gg, gb, gl = G[g0:g0 + n], G[b0:b0 + n], ph[g0:g0 + n]
        gg[:] = 0.0
        gb[:] = 0.0
        Dnl = Dn[l]
        for s in range(Se):
            if net.act == 1:
                for j in range(n):
                    r = Rl[s, j]
                    Dl[s, j] *= 1.0 - r * r
            else:
                for j in range(n):
                    Dl[s, j] *= slope(net.act, Ul[s, j], Rl[s, j])
            for j in range(n):
                d = Dl[s, j]
                gg[j] += d * Al[s, j]
                gb[j] += d
                Dnl[s, j] = d * gl[j]
        if l > 0:
            mm(Dnl, net.W[w0:w0 + n * n_pre].reshape((n, n_pre)), D[l - 1], n * n_pre)
    res = 0.0
    for k in range(G.shape[0]):
        G[k] = -G[k] * net.mask[k]
        a = abs(G[k] - net.lam[k] * (ph[k] - net.anchor[k])) * net.mask[k]
        if a > res or a != a:
            res = a
    return res


@jit
def gain_step(ph, net, G, fac, h, exponential, A, U, Y, bound):
    """Advance the fast variables (``pull_step``; slow ones are masked); False if a new
    value or a potential of the step is not below ``bound``."""
    ok = True
    for k in range(ph.shape[0]):
        if net.mask[k] != 0.0:
            f = fac[k] if exponential else h
            q = pull_step(ph[k], f, G[k], net.lam[k], net.anchor[k])
            ph[k] = q
            ok &= abs(q) < bound
    for l in range(len(U)):
        for s in range(U[l].shape[0]):
            for j in range(U[l].shape[1]):
                ok &= abs(U[l][s, j]) < bound and abs(A[l][s, j]) < bound
    for s in range(Y.shape[0]):
        for o in range(Y.shape[1]):
            ok &= abs(Y[s, o]) < bound
    return ok


@jit
def task_gain(ph, prev, X, Yb, Cb, fac, h, msub, net, st):
    """The phase loop of one task (see the module docstring); ``prev`` receives the state
    at the start of the last (sub-)step taken. Returns (steps, settled, first bad step
    or 0)."""
    sizes, L = net.sizes, net.sizes.shape[0] - 2
    Se = X.shape[0]
    A = [np.zeros((Se, sizes[l + 1])) for l in range(L)]
    U = [np.zeros((Se, sizes[l + 1])) for l in range(L)]
    R = [np.zeros((Se, sizes[l + 1])) for l in range(L)]
    D = [np.zeros((Se, sizes[l + 1])) for l in range(L)]
    Dn = [np.zeros((Se, sizes[l + 1])) for l in range(L)]
    Y = np.zeros((Se, sizes[L + 1]))
    G = np.zeros_like(ph)
    use_tol = st.tol > 0.0
    n = 0
    sub = 0
    settled = False
    while True:
        need_check = use_tol and n > 0 and sub == 0 and n % st.check == 0
        if n >= st.n_max and not need_check:
            break
        gain_forward(ph, X, net, A, U, R, Y)
        res = gain_gradient(ph, X, Yb, Cb, net, A, U, R, Y, G, D, Dn)
        if need_check:
            settled = res < st.tol
            if settled or n >= st.n_max:
                break
        prev[:] = ph
        ok = gain_step(ph, net, G, fac, h, st.exponential, A, U, Y, st.bound)
        sub += 1
        if not ok:
            return n + 1, False, n + 1
        if sub == msub:
            sub = 0
            n += 1
    return n, settled, 0


@jit
def phase_gain(full, prev, X, Y, C, fac, h, msub, net, st, steps, settled, bad):
    """All tasks of a phase, one after the other (``fac``, ``h``, ``msub`` per task or
    one row for all)."""
    for b in range(full.shape[0]):
        bf = b if fac.shape[0] > 1 else 0
        n, done, bd = task_gain(full[b], prev[b], X[b].copy(), Y[b].copy(), C[b].copy(),
                                fac[bf], h[bf], msub[bf], net, st)
        steps[b] = n
        settled[b] = done
        bad[b] = bd
