"""Exact reference meta-gradient by implicit differentiation.

At the settled free state φ* the inner objective's gradient vanishes,
``∇φ L_in(φ*, θ) = 0``. The implicit function theorem gives the exact meta-gradient::

    dL_out/dθ = − (∂²θφ L_in)ᵀ H⁻¹ ∇φ L_out(φ*),      H = ∂²φφ L_in(φ*) = ∇²L_trn + diag(λ)

and for complex synapses (``∂²ωφ L_in = −diag(λ)``, ``∂²λφ L_in = diag(φ − ω)``), with
``u = H⁻¹ ∇φ L_out``::

    dL_out/dω = λ ⊙ u,      dL_out/dλ = −(φ* − ω) ⊙ u

Hessian-vector products of ``L_trn`` are computed exactly with Pearlmutter's R-operator
(forward-mode through the network, then backward). ``method="dense"`` builds H from
``P`` Hessian-vector products and solves it; ``method="cg"`` uses conjugate gradients
(``scipy.sparse.linalg.cg``) with Hessian-vector products only. The settled state given
by the learning process is first polished with Newton steps so that the reference is
exact to rounding. This is a verification tool: it uses second derivatives, which CML
never does.
"""
import numpy as np

from . import _params as P
from .cml import default_learner, split_theta_like
from .network import RateNetwork, drive, split_aug
from .tasks import Task


# ---------------------------------------------------------------------- derivatives
def grad_hvp(net, phi, X, Y, V=None):
    """Gradient (and Hessian-vector product) of ``L = 1/(2S) Σ_s ‖ŷ_s − y_s‖²``.

    ``phi``: augmented weights per connection (B, n_post, n_pre[+1]); ``X`` (B, S, n_in),
    ``Y`` (B, S, n_out); ``V``: directions per connection with optional leading axes
    (..., B, n_post, n_pre[+1]) (``None`` entries = zero). Returns (loss (B,), grads,
    hvps) with per-connection arrays (``hvps`` is None when ``V`` is None).
    """
    conns, acts = net.connections, net.activations
    L = len(conns)
    S = X.shape[-2]
    rates, pre = [X], []
    for l in range(L):
        a = drive(phi[l], rates[-1], conns[l])
        pre.append(a)
        rates.append(acts[l].f(a))
    err = rates[-1] - Y
    loss = 0.5 * (err ** 2).sum(axis=(-1, -2)) / S
    with_r = V is not None
    if with_r:
        Rr = [0.0]
        Ra = []
        for l in range(L):
            a = np.zeros(()) if V[l] is None else _drive_dir(V[l], rates[l], conns[l])
            if not np.isscalar(Rr[l]):
                w, _ = split_aug(phi[l], conns[l])
                a = a + np.matmul(Rr[l], np.swapaxes(w, -1, -2))
            Ra.append(a)
            Rr.append(acts[l].df(pre[l]) * a)
    delta = err * acts[-1].df(pre[-1]) / S
    Rdelta = ((Rr[L] * acts[-1].df(pre[-1]) + err * acts[-1].d2f(pre[-1]) * Ra[-1]) / S
              if with_r else None)
    grads, hvps = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        c = conns[l]
        if c.plastic:
            grads[l] = _outer(delta, rates[l], c)
            if with_r:
                h = _outer(Rdelta, rates[l], c)
                if not np.isscalar(Rr[l]):
                    h = h + _outer(delta, Rr[l], c, bias_zero=True)
                hvps[l] = h
        if l == 0:
            break
        w, _ = split_aug(phi[l], c)
        back = np.matmul(delta, w)
        dfl = acts[l - 1].df(pre[l - 1])
        if with_r:
            Rback = np.matmul(Rdelta, w)
            if V[l] is not None:
                vw, _ = split_aug(V[l], c)
                Rback = Rback + np.matmul(delta, vw)
            Rdelta = Rback * dfl + back * acts[l - 1].d2f(pre[l - 1]) * Ra[l - 1]
        delta = back * dfl
    return loss, grads, hvps


def _drive_dir(Vl, r, c):
    w, b = split_aug(Vl, c)
    out = np.matmul(r, np.swapaxes(w, -1, -2))
    return out + b[..., None, :] if b is not None else out


def _outer(delta, r, c, bias_zero=False):
    g = np.matmul(np.swapaxes(delta, -1, -2), r)
    if c.has_bias:
        b = np.zeros(g.shape[:-1]) if bias_zero else delta.sum(axis=-2)
        g = np.concatenate([g, b[..., None]], axis=-1)
    return g


# ---------------------------------------------------------------------- packing
class _Packer:
    """Flatten the plastic connections' augmented arrays of B tasks to (B, P)."""

    def __init__(self, net, B):
        self.net = net
        self.B = B
        self.idx = [i for i, c in enumerate(net.connections) if c.plastic]
        self.shapes = [net.connections[i].shape for i in self.idx]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.P = int(sum(self.sizes))

    def pack(self, arrs):
        lead = arrs[self.idx[0]].shape[:-2]
        return np.concatenate([arrs[i].reshape(lead + (-1,)) for i in self.idx], axis=-1)

    def unpack(self, vec):
        lead = vec.shape[:-1]
        out = [None] * len(self.net.connections)
        parts = np.split(vec, np.cumsum(self.sizes)[:-1], axis=-1)
        for i, s, p in zip(self.idx, self.shapes, parts):
            out[i] = p.reshape(lead + s)
        return out

    def lam(self):
        return self.pack([np.broadcast_to(c.lam, (self.B,) + c.shape) if c.plastic else None
                          for c in self.net.connections])


def _hess_vec(net, pk, phi, X, Y, vec):
    """``H vec`` with ``H = ∇²L_trn + diag(λ)``; vec (..., B, P)."""
    _, _, h = grad_hvp(net, phi, X, Y, pk.unpack(vec))
    return pk.pack(h) + pk.lam() * vec


def _dense_hessian(net, pk, phi, X, Y, chunk=64):
    """H for every task, (B, P, P), from P Hessian-vector products (in chunks)."""
    B, Pn = pk.B, pk.P
    H = np.empty((B, Pn, Pn))
    for start in range(0, Pn, chunk):
        stop = min(Pn, start + chunk)
        E = np.zeros((stop - start, B, Pn))
        E[np.arange(stop - start), :, np.arange(start, stop)] = 1.0
        H[:, :, start:stop] = np.moveaxis(_hess_vec(net, pk, phi, X, Y, E), 0, -1)
    return 0.5 * (H + np.swapaxes(H, -1, -2))


def _solve(net, pk, phi, X, Y, rhs, method, cg_rtol):
    """Solve ``H u = rhs`` per task; rhs (B, P)."""
    if method == "dense":
        H = _dense_hessian(net, pk, phi, X, Y)
        return np.linalg.solve(H, rhs[..., None])[..., 0]
    from scipy.sparse.linalg import LinearOperator, cg

    B, Pn = rhs.shape

    def mv(z):
        return _hess_vec(net, pk, phi, X, Y, z.reshape(B, Pn)).ravel()

    op = LinearOperator((B * Pn, B * Pn), matvec=mv, dtype=np.float64)
    sol, info = cg(op, rhs.ravel(), rtol=cg_rtol, atol=0.0, maxiter=20 * B * Pn)
    if info != 0:
        from .errors import SimulationError

        raise SimulationError(f"exact_meta_gradient: conjugate gradient did not converge "
                              f"(info={info}); the Hessian may be indefinite (settled state "
                              "not a minimum) -- try method='dense'")
    return sol.reshape(B, Pn)


# ---------------------------------------------------------------------- public
def exact_meta_gradient(net, task, method="auto", learner=None, tol=1e-12, newton_steps=2,
                        cg_rtol=1e-13, reduce="mean"):
    """The exact meta-gradient ``dL_out(φ*(θ))/dθ`` by implicit differentiation.

    Parameters
    ----------
    net : RateNetwork
    task : Task
    method : {"auto", "dense", "cg"}
        Dense Hessian solve, or conjugate gradient with Hessian-vector products
        (``auto``: dense up to 1500 plastic parameters per task).
    learner : Learner, optional
        Learning process that finds the settled free state (default: as CML's).
    tol : float
        Settling tolerance of the default learner.
    newton_steps : int
        Newton polishing steps on the settled state.
    reduce : {"mean", "none"}
        Average over tasks, or keep a leading task axis.

    Returns
    -------
    dict in the structure of ``net.theta``.
    """
    from .dual import DualSystem, exact_meta_gradient as dual_exact

    if isinstance(net, DualSystem):
        return dual_exact(net, task, learner, tol, newton_steps, reduce)
    if not isinstance(net, RateNetwork):
        P.fail("exact_meta_gradient", "net", "must be a RateNetwork or a DualSystem",
               type(net).__name__)
    if not isinstance(task, Task):
        P.fail("exact_meta_gradient", "task", "must be a Task", type(task).__name__)
    P.choice(method, "exact_meta_gradient", "method", ("auto", "dense", "cg"))
    P.choice(reduce, "exact_meta_gradient", "reduce", ("mean", "none"))
    newton_steps = P.integer(newton_steps, "exact_meta_gradient", "newton_steps", low=0)
    xt, yt, xv, yv = task.as_batch()
    B = xt.shape[0]
    learner = learner if learner is not None else default_learner(net, tol)
    free = learner.run(net, xt, yt)
    phi = [np.array(p) for p in free.phi_aug]
    pk = _Packer(net, B)
    if method == "auto":
        method = "dense" if pk.P <= 1500 else "cg"
    lam = pk.lam()
    omega = pk.pack([np.broadcast_to(c.omega, (B,) + c.shape) if c.plastic else None
                     for c in net.connections])
    for _ in range(newton_steps):
        _, g, _ = grad_hvp(net, phi, xt, yt)
        gradF = pk.pack(g) + lam * (pk.pack(phi) - omega)
        step = _solve(net, pk, phi, xt, yt, gradF, method, cg_rtol)
        new = pk.unpack(pk.pack(phi) - step)
        phi = [n if n is not None else p for n, p in zip(new, phi)]
    _, g_out, _ = grad_hvp(net, phi, xv, yv)
    u = _solve(net, pk, phi, xt, yt, pk.pack(g_out), method, cg_rtol)
    g_om = pk.unpack(lam * u)
    g_lam = pk.unpack(-(pk.pack(phi) - omega) * u)
    if reduce == "mean":
        g_om = [None if a is None else a.mean(axis=0) for a in g_om]
        g_lam = [None if a is None else a.mean(axis=0) for a in g_lam]
    elif not task.batched:
        g_om = [None if a is None else a[0] for a in g_om]
        g_lam = [None if a is None else a[0] for a in g_lam]
    return {**split_theta_like(g_om, net, "omega"), **split_theta_like(g_lam, net, "lam")}
