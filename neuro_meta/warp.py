"""Warp layers: slow linear layers between a network's fast task layers (WarpGrad,
Flennerhag et al., ICLR 2020) -- and a model kind whose warps CML meta-learns.

A *warped* network interleaves task layers and warp layers,
``head ∘ ω_L ∘ h_L ∘ … ∘ ω_1 ∘ h_1``; for inputs ``r_0 = x`` and hidden layers
``l = 1 … L``::

    a_l = W_l r_{l−1} + b_l,     h_l = f_l(a_l)          (task layer l: fast)
    r_l = Ω_l h_l + c_l                                  (warp layer l: slow, linear)
    ŷ   = f_out(W_{L+1} r_L + b_{L+1})                   (head: fast)

A warp layer is square (``n_l × n_l``) and linear (no rate function): at the identity
(``Ω = I``, ``c = 0``, the default start) the warped network *is* the plain one. It does
not learn within a task; it changes how the task layers learn: the gradient of the layer
above it, ``∂L/∂W_{l+1} = δ_{l+1} (Ω_l h_l + c_l)ᵀ``, and the error sent down to the layer
below it, ``∂L/∂h_l = Ω_lᵀ ρ_l`` (``ρ_l = ∂L/∂r_l``), both pass through Ω_l -- a learned
preconditioner of the task layers' gradient descent.

:class:`WarpedPass` is the forward and backward pass of such a network with exact
gradients and Hessian-vector products (Pearlmutter's R-operator) in the task and the warp
parameters; the WarpGrad baseline (:mod:`neuro_meta.warpgrad`) and the model kind below
are written on it.

:class:`WarpNetwork` is the model kind "CML with warp layers": its task layers and head
are complex synapses (fast weight φ, consolidated weight ω, strength λ) that learn each
task in continuous time, ``τ dφ/dt = −∂φ L_trn(φ, Ω) − λ (φ − ω) [− β ∂φ L_out(φ, Ω)]``;
the warps are slow weights. CML meta-learns ω, λ and the warps: for ω and λ with the
complex synapse's local rule, for a warp with the difference between the phases of ::

    ∂Ω_l F = Σ_s c_s ρ_{l,s} h_{l,s}ᵀ,      ∂c_l F = Σ_s c_s ρ_{l,s}

-- a **contrastive Hebbian product** of the error arriving at the warp layer's output
(postsynaptic) and the task layer's rate (presynaptic), summed over the samples of the
phase (training shots with weight 1/K, validation points with weight β/V in the nudged
phase), exactly as for the dual system's slow weights (:mod:`neuro_meta.dual`).
"""
import numpy as np

from . import _params as P
from .errors import ValidationError
from .kind import ModelKind, check_fast_values, check_output
from .losses import get_loss
from .network import RateNetwork, check_input, check_phi, check_task_axes, split_aug
from .results import readonly

#: The groups of a warped network's parameters in :class:`WarpedPass` (task layers'
#: weights and biases, warp layers' matrices and biases).
GROUPS = ("w", "b", "warp", "warp_b")

def _T(a):
    return np.swapaxes(a, -1, -2)


def _plus(acc, term):
    """``acc + term`` with ``None`` standing for zero."""
    if term is None:
        return acc
    return term if acc is None else acc + term


def _affine(r, w, b):
    """``W r + b`` per sample: ``r`` (..., S, n_pre), ``w`` (..., n_post, n_pre)."""
    v = np.matmul(r, _T(w))
    return v if b is None else v + b[..., None, :]


def _outer(d, x, total):
    """``Σ_s d_s x_sᵀ`` per leading index, or (``total``) summed over every leading axis
    too -- the gradient of a parameter shared across them."""
    g = np.matmul(_T(d), x)
    # (small products summed: one large product over every sample would be handed to the
    # BLAS's threads, much slower on a busy machine)
    return g.sum(axis=tuple(range(g.ndim - 2))) if total else g


def _total(d, b, total):
    """``Σ_s d_s`` (a bias's gradient; None where there is no bias), per leading index or
    (``total``) summed over every leading axis too."""
    if b is None:
        return None
    return d.reshape(-1, d.shape[-1]).sum(axis=0) if total else d.sum(axis=-2)


def warped_forward(w, b, warp, warp_b, X, activations):
    """The forward pass of a warped network (see the module docstring).

    ``w``, ``b``: the L + 1 task layers' weights (..., n_post, n_pre) and biases
    (..., n_post) (``None``: no bias); ``warp``, ``warp_b``: the L warp layers' matrices
    (..., n_l, n_l) and biases; ``X`` (..., S, n_in); ``activations``: L + 1
    :class:`~neuro_meta.activations.Activation` (the head's last). Leading axes broadcast
    (tasks, trajectory points, Hessian-vector directions). Returns
    ``(r, a, h, out)``: the warp layers' outputs ``r`` (``r[0] = X``), every task layer's
    drive ``a`` and the hidden rates ``h``, and the output.
    """
    L = len(warp)
    r, a, h = [X], [], []
    for l in range(L):
        a.append(_affine(r[l], w[l], b[l]))
        h.append(activations[l].f(a[l]))
        r.append(_affine(h[l], warp[l], warp_b[l]))
    a.append(_affine(r[L], w[L], b[L]))
    return r, a, h, activations[L].f(a[L])


class WarpedPass:
    """The forward and backward pass of a warped network on samples ``X``, ``Y`` with
    sample weights ``c`` (..., S) (default ``1/S``: the mean), kept so that the gradient
    and any number of Hessian-vector products reuse them.

    ``L = Σ_s c_s ℓ(ŷ_s, y_s)`` with the loss object ``loss`` (its ``error`` ``∂ℓ/∂ŷ`` and
    ``curvature`` ``∂²ℓ/∂ŷ² · R``). Backward, with ``δ`` the error at a task layer's drive
    and ``ρ_l = ∂L/∂r_l``::

        δ_{L+1} = c ⊙ ∂ℓ/∂ŷ ⊙ f_out′(a_{L+1}),   ρ_l = δ_{l+1} W_{l+1},
        η_l = ρ_l Ω_l  (= ∂L/∂h_l),             δ_l = η_l ⊙ f_l′(a_l),
        ∂W_l = δ_lᵀ r_{l−1},  ∂b_l = Σ_s δ_l,    ∂Ω_l = ρ_lᵀ h_l,  ∂c_l = Σ_s ρ_l

    (per leading index: a warp, shared across the leading axes, gets one gradient per
    task or trajectory point; with ``total_warp=True`` their sum, a single matrix).
    Arguments as in :func:`warped_forward`; ``loss`` a loss object.
    """

    def __init__(self, w, b, warp, warp_b, X, Y, activations, loss, c=None,
                 total_warp=False):
        self.total_warp = bool(total_warp)
        self.params = {"w": list(w), "b": list(b), "warp": list(warp),
                       "warp_b": list(warp_b)}
        self.acts = activations
        self.r, self.a, self.h, self.out = warped_forward(w, b, warp, warp_b, X, activations)
        self.Y, self.lossfn = Y, loss
        S = X.shape[-2]
        cs = np.asarray(1.0 / S) if c is None else np.asarray(c)
        self.cw = cs[..., None] if cs.ndim else cs
        self.loss = (loss.per_sample(self.out, Y) * cs).sum(axis=-1)
        L = len(warp)
        self.df = [act.df(ai) for act, ai in zip(activations, self.a)]
        self._d2f = None
        self.err = loss.error(self.out, Y)
        deltas, rhos, etas = [None] * (L + 1), [None] * (L + 1), [None] * L
        deltas[L] = self.err * self.df[L] * self.cw
        for l in range(L - 1, -1, -1):
            rhos[l + 1] = np.matmul(deltas[l + 1], w[l + 1])
            etas[l] = np.matmul(rhos[l + 1], warp[l])
            deltas[l] = etas[l] * self.df[l]
        self.deltas, self.rhos, self.etas = deltas, rhos, etas

    @property
    def d2f(self):
        if self._d2f is None:
            self._d2f = [act.d2f(ai) for act, ai in zip(self.acts, self.a)]
        return self._d2f

    def grads(self, groups=GROUPS):
        """``∂L`` in the parameters of ``groups``: a dict of lists (None: no bias)."""
        p, L, tot = self.params, len(self.params["warp"]), self.total_warp
        out = {}
        if "w" in groups:
            out["w"] = [np.matmul(_T(d), r) for d, r in zip(self.deltas, self.r)]
        if "b" in groups:
            out["b"] = [_total(d, bl, False) for d, bl in zip(self.deltas, p["b"])]
        if "warp" in groups:
            out["warp"] = [_outer(self.rhos[l + 1], self.h[l], tot) for l in range(L)]
        if "warp_b" in groups:
            out["warp_b"] = [_total(self.rhos[l + 1], p["warp_b"][l], tot) for l in range(L)]
        return out

    def hvp(self, V):
        """``∇²L · V`` in every parameter (the full Hessian, task and warp parameters,
        including their mixed blocks) by the R-operator. ``V``: a dict of :data:`GROUPS`
        lists of directions (``None``: zero; missing groups: zero), entries with optional
        extra leading axes. Returns a dict like :meth:`grads` (None only where a bias is
        absent; the warps' products summed over the leading axes with ``total_warp``).

        Forward: ``R a_l = W_l R r_{l−1} + V_{W_l} r_{l−1} + V_{b_l}``,
        ``R h_l = f′ R a_l``, ``R r_l = Ω_l R h_l + V_{Ω_l} h_l + V_{c_l}``. Backward:
        ``R δ_{L+1} = c [∂²ℓ · R ŷ ⊙ f′ + ∂ℓ ⊙ f″ R a]``,
        ``R ρ_l = R δ_{l+1} W_{l+1} + δ_{l+1} V_{W_{l+1}}``,
        ``R η_l = R ρ_l Ω_l + ρ_l V_{Ω_l}``, ``R δ_l = R η_l ⊙ f′ + η_l ⊙ f″ ⊙ R a_l``;
        each parameter's product is the R-derivative of its gradient (e.g.
        ``R ∂Ω_l = R ρ_lᵀ h_l + ρ_lᵀ R h_l``).
        """
        p, L = self.params, len(self.params["warp"])
        V = {g: list(V.get(g) or [None] * len(p[g])) for g in GROUPS}
        r, h, a = self.r, self.h, self.a
        Rr, Ra, Rh = [None], [], []
        for l in range(L + 1):
            ra = None if Rr[l] is None else np.matmul(Rr[l], _T(p["w"][l]))
            if V["w"][l] is not None:
                ra = _plus(ra, np.matmul(r[l], _T(V["w"][l])))
            if V["b"][l] is not None and p["b"][l] is not None:
                ra = _plus(ra, V["b"][l][..., None, :])
            Ra.append(ra)
            if l == L:
                break
            Rh.append(None if ra is None else self.df[l] * ra)
            rr = None if Rh[l] is None else np.matmul(Rh[l], _T(p["warp"][l]))
            if V["warp"][l] is not None:
                rr = _plus(rr, np.matmul(h[l], _T(V["warp"][l])))
            if V["warp_b"][l] is not None and p["warp_b"][l] is not None:
                rr = _plus(rr, V["warp_b"][l][..., None, :])
            Rr.append(rr)
        RaL = np.zeros_like(a[L]) if Ra[L] is None else Ra[L]
        Rout = self.df[L] * RaL
        d2f = self.d2f
        Rd = self.cw * (self.lossfn.curvature(self.out, self.Y, Rout) * self.df[L]
                        + self.err * d2f[L] * RaL)
        out = {g: [None] * len(p[g]) for g in GROUPS}
        for l in range(L, -1, -1):
            gw = np.matmul(_T(Rd), r[l])
            if Rr[l] is not None:
                gw = gw + np.matmul(_T(self.deltas[l]), Rr[l])
            out["w"][l] = gw
            out["b"][l] = _total(Rd, p["b"][l], False)
            if l == 0:
                break
            Rrho = np.matmul(Rd, p["w"][l])
            if V["w"][l] is not None:
                Rrho = Rrho + np.matmul(self.deltas[l], V["w"][l])
            k = l - 1                                   # the warp layer below
            tot = self.total_warp
            gO = _outer(Rrho, h[k], tot)
            if Rh[k] is not None:
                gO = gO + _outer(self.rhos[l], Rh[k], tot)
            out["warp"][k] = gO
            out["warp_b"][k] = _total(Rrho, p["warp_b"][k], tot)
            Reta = np.matmul(Rrho, p["warp"][k])
            if V["warp"][k] is not None:
                Reta = Reta + np.matmul(self.rhos[l], V["warp"][k])
            Rd = Reta * self.df[k]
            if Ra[k] is not None:
                Rd = Rd + self.etas[k] * d2f[k] * Ra[k]
        return out


# ---------------------------------------------------------------------- the model kind
class WarpNetwork(ModelKind):
    """A complex-synapse rate network with a slow linear warp layer after each hidden
    layer: CML meta-learns the warps together with ω and λ (see the module docstring).

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first, at least one hidden layer: ``[1, 40, 40, 1]``
        (a warp layer ``n_l × n_l`` follows each hidden layer).
    activation : str, Activation or sequence of them
        Rate function of each non-input layer (one for all, or one per layer, the head's
        last), as for :class:`~neuro_meta.RateNetwork`; use a linear head for regression
        and for the cross-entropy loss (logits).
    synapse : ComplexSynapse, StaticSynapse or sequence of them
        The task layers' and head's synapses (default ``ComplexSynapse(omega=Glorot(),
        lam=1.0)``), drawn with ``seed`` exactly as a ``RateNetwork`` of the same
        arguments draws them.
    bias : bool
        Biases of the task layers (fast, complex synapses) and of the warp layers (slow).
    tau_synapse : float or Brian2 quantity
        Time constant τ_φ (s) of the fast weights. Neurons are instantaneous.
    warp : None or sequence of arrays
        Initial warp matrices, one (n_l, n_l) per hidden layer; default the identity
        (the warped network then equals the plain one). Warp biases start at 0.
    loss : str or loss object
        Loss of the learning process: ``"squared_error"`` (default) or ``"cross_entropy"``
        (outputs taken as logits: use a linear head), or a loss object
        (:mod:`neuro_meta.losses`).
    seed : int or numpy.random.Generator, optional

    Notes
    -----
    Meta-parameters (:attr:`theta`): a ``RateNetwork``'s ``"omega"``, ``"lam"``,
    ``"omega_bias"``, ``"lam_bias"`` (one entry per task layer and head) plus ``"warp"``
    (Ω_l, one per hidden layer) and ``"warp_bias"`` (c_l; None without biases). Fast
    variables: one augmented array ``[W | b]`` per task layer and head, as a
    ``RateNetwork``'s. Only the ``backprop`` rule (the error crosses the warp layers);
    the numpy engine and the phase solver run it; every CML estimator and the exact
    reference (exact Hessian-vector products) apply.
    """

    rules = ("backprop",)
    probeable = ("phi", "bias", "loss")
    tau_fast_name = "tau_synapse"
    tau_neuron = 0.0

    def __init__(self, sizes, activation="tanh", synapse=None, bias=True, tau_synapse=1.0,
                 warp=None, loss="squared_error", seed=None):
        O = "WarpNetwork"
        try:
            if isinstance(sizes, (str, bytes)):
                raise TypeError
            n_layers = len(sizes)
        except TypeError:
            P.fail(O, "sizes", "must be a sequence of layer sizes", repr(sizes))
        try:
            base = RateNetwork(sizes, activation=activation, synapse=synapse, bias=bias,
                               tau_neuron=0.0, tau_synapse=tau_synapse, seed=seed)
        except ValidationError as err:
            msg = str(err)
            raise ValidationError(O + msg[len("RateNetwork"):] if msg.startswith(
                "RateNetwork") else msg) from None
        if n_layers < 3:
            P.fail(O, "sizes", "needs an input layer, at least one hidden layer (a warp "
                   "layer follows each) and an output layer", repr(list(sizes)))
        self.base = base
        self.loss = get_loss(loss, O, "loss")
        L = len(base.sizes) - 2
        hidden = base.sizes[1:-1]
        if warp is None:
            warps = [np.eye(n) for n in hidden]
        else:
            if not isinstance(warp, (list, tuple)) or len(warp) != L:
                P.fail(O, "warp", f"must be None (identity) or a list of {L} square "
                       "matrices, one per hidden layer", P.shown(warp))
            warps = [P.finite_array(m, O, f"warp[{l}]", shape=(n, n))
                     for l, (m, n) in enumerate(zip(warp, hidden))]
        warp_b = [np.zeros(n) if base.bias else None for n in hidden]
        self._set(warps, warp_b)

    def _set(self, warps, warp_b):
        self._warp = [readonly(m) for m in warps]
        self._warp_b = [None if c is None else readonly(c) for c in warp_b]

    # ------------------------------------------------------------------ structure
    sizes = property(lambda self: self.base.sizes)
    connections = property(lambda self: self.base.connections)
    activations = property(lambda self: self.base.activations)
    bias = property(lambda self: self.base.bias)
    tau_synapse = property(lambda self: self.base.tau_synapse)
    tau_fast = property(lambda self: self.base.tau_synapse)
    fast_names = property(lambda self: self.base.fast_names)
    phi0 = property(lambda self: self.base.phi0)
    plastic = property(lambda self: self.base.plastic)
    lam = property(lambda self: self.base.lam)
    anchor = property(lambda self: self.base.anchor)

    @property
    def warps(self):
        """The warp layers ``(Ω_l, c_l)`` per hidden layer (read-only)."""
        return list(zip(self._warp, self._warp_b))

    @property
    def theta(self):
        """Meta-parameters (copies): see the class docstring."""
        out = self.base.theta
        out["warp"] = [m.copy() for m in self._warp]
        out["warp_bias"] = [None if c is None else c.copy() for c in self._warp_b]
        return out

    def with_theta(self, theta):
        """A copy with new meta-parameters (same structure as :attr:`theta`)."""
        O = "WarpNetwork.with_theta"
        keys = sorted(self.theta)
        if not isinstance(theta, dict) or set(theta) != set(keys):
            P.fail(O, "theta", f"must be a dict with keys {keys} (like net.theta)",
                   sorted(map(str, theta)) if isinstance(theta, dict) else type(theta).__name__)
        try:
            base = self.base.with_theta({k: v for k, v in theta.items()
                                         if not k.startswith("warp")})
        except ValidationError as err:
            msg = str(err)
            raise ValidationError(msg.replace("RateNetwork.with_theta", O, 1)) from None
        L = len(self._warp)
        warps, warp_b = [], []
        for k in ("warp", "warp_bias"):
            if not isinstance(theta[k], (list, tuple)) or len(theta[k]) != L:
                P.fail(O, k, f"must be a list of {L} entries (one per hidden layer)",
                       type(theta[k]).__name__ if not isinstance(theta[k], (list, tuple))
                       else f"{len(theta[k])} entries")
        for l, (m, c) in enumerate(zip(self._warp, self._warp_b)):
            warps.append(P.finite_array(theta["warp"][l], O, f"warp[{l}]", shape=m.shape))
            if c is None:
                if theta["warp_bias"][l] is not None:      # it would be ignored
                    P.fail(O, f"warp_bias[{l}]", "must be None (the network has no "
                           "biases, as in net.theta)", P.shown(theta["warp_bias"][l]))
                warp_b.append(None)
            else:
                if theta["warp_bias"][l] is None:
                    P.fail(O, f"warp_bias[{l}]", "must be an array (the network has "
                           "biases)", "None")
                warp_b.append(P.finite_array(theta["warp_bias"][l], O, f"warp_bias[{l}]",
                                             shape=c.shape))
        new = object.__new__(WarpNetwork)
        new.__dict__.update(self.__dict__)
        new.base = base
        new._set(warps, warp_b)
        return new

    # ------------------------------------------------------------------ evaluation
    def warped_pass(self, phi, X, Y, c=None):
        """The :class:`WarpedPass` at augmented fast weights ``phi`` (per connection,
        leading axes allowed) on samples ``X``, ``Y`` with weights ``c``."""
        ws, bs = self._split(phi)
        return WarpedPass(ws, bs, self._warp, self._warp_b, X, Y, self.activations,
                          self.loss, c)

    def _split(self, phi):
        ws, bs = [], []
        for conn, p in zip(self.connections, phi):
            w, b = split_aug(p, conn)
            ws.append(w)
            bs.append(b)
        return ws, bs

    def predict(self, x, phi=None):
        """Outputs for inputs ``x`` (..., n_in) at augmented fast weights ``phi`` (default:
        initial), through the warp layers."""
        O = "WarpNetwork.predict"
        x = check_input(self, x, O)
        if phi is None:
            phi = self.phi0
        else:
            phi = check_phi(self.base, phi, O)
            check_task_axes(x, phi, O)
            check_fast_values(phi, range(len(phi)), O, "phi")
        ws, bs = self._split(phi)
        with np.errstate(over="ignore", invalid="ignore"):     # check_output says it
            out = warped_forward(ws, bs, self._warp, self._warp_b, x, self.activations)[3]
        return check_output(out, O)

    def __repr__(self):
        return (f"WarpNetwork(sizes={list(self.sizes)}, activation="
                f"{[a.name for a in self.activations]}, bias={self.bias}, "
                f"tau_synapse={self.tau_synapse}, loss={self.loss!r})")

    # ------------------------------------------------------------------ model kind
    def check_rule(self, rule):
        super().check_rule(rule)
        if not any(self.plastic):
            P.fail("Learner.run", "net", "has no plastic connection: use a ComplexSynapse",
                   repr(self))

    def split_fast(self, arrays):
        return self.base.split_fast(arrays)

    def _aug(self, gw, gb):
        """Per connection, the augmented ``[∂W | ∂b]`` (None for static connections)."""
        out = []
        for conn, w, b in zip(self.connections, gw, gb):
            if not conn.plastic:
                out.append(None)
            elif conn.has_bias:
                out.append(np.concatenate([w, b[..., None]], axis=-1))
            else:
                out.append(w)
        return out

    def _split_dirs(self, V):
        ws, bs = [], []
        for conn, v in zip(self.connections, V):
            if v is None:
                ws.append(None)
                bs.append(None)
            else:
                w, b = split_aug(v, conn)
                ws.append(w)
                bs.append(b)
        return {"w": ws, "b": bs}

    def forces(self, phi, v, x, y, c, rule="backprop"):
        """``−∂φ Σ_s c_s ℓ_s`` per plastic connection, by backprop through the task and
        warp layers (None for static connections)."""
        g = self.warped_pass(phi, x, y, c).grads()
        return [None if a is None else -a for a in self._aug(g["w"], g["b"])]

    def curvature(self, inp):
        """The trace of the data term's Gauss-Newton matrix in the plastic weights at the
        initial state (an upper bound of its largest eigenvalue for squared error)."""
        if inp is None:
            return 1.0
        X = inp.X
        ws, bs = self._split(self.phi0)
        r, a, h, _ = warped_forward(ws, bs, self._warp, self._warp_b, X, self.activations)
        L = len(self._warp)
        sq = np.zeros(X.shape[:2])
        for o in range(self.n_out):
            d = np.zeros(X.shape[:2] + (self.n_out,))
            d[..., o] = 1.0
            d = d * self.activations[L].df(a[L])
            for l in range(L, -1, -1):
                conn = self.connections[l]
                if conn.plastic:
                    sq += (d ** 2).sum(axis=-1) * ((r[l] ** 2).sum(axis=-1)
                                                   + float(conn.has_bias))
                if l:
                    d = np.matmul(np.matmul(d, ws[l]), self._warp[l - 1]) * \
                        self.activations[l - 1].df(a[l - 1])
        weights = np.abs(inp.c)
        if inp.presentation == "online":
            return float((sq * weights * inp.n_samples).max())
        return float((sq * weights).sum(axis=-1).max())

    def theta_partials(self, phi, X, Y, c):
        """``∂θ F`` per task: the complex synapses' local ``−λ(φ − ω)`` and
        ``½(φ − ω)²``, and for the warps the contrastive Hebbian products
        ``Σ_s c_s ρ_{l,s} h_{l,s}ᵀ`` (and ``Σ_s c_s ρ_{l,s}`` for their biases)."""
        out = self.base.theta_partials(phi, X, Y, c)
        g = self.warped_pass(phi, X, Y, c).grads()
        out["warp"], out["warp_bias"] = g["warp"], g["warp_b"]
        return out

    # -- exact reference: R-operator -------------------------------------------------
    def data_grad(self, phi, X, Y, c=None):
        g = self.warped_pass(phi, X, Y, c).grads()
        return self._aug(g["w"], g["b"])

    def data_hvp(self, phi, X, Y, V, c=None):
        """Exact Hessian-vector products in the fast weights (R-operator,
        :meth:`WarpedPass.hvp`)."""
        return self.data_hvp_at(phi, X, Y, c)(V)

    def data_hvp_at(self, phi, X, Y, c=None):
        """The product at ``phi`` as a function of the directions, the forward and
        backward pass done once."""
        wp = self.warped_pass(phi, X, Y, c)

        def hvp(V):
            h = wp.hvp(self._split_dirs(V))
            return self._aug(h["w"], h["b"])

        return hvp

    def cross(self, phi, u, X, Y):
        """``∂/∂ε ∂θ F(φ + ε u)``: ``−λ u`` and ``(φ − ω) u`` for ω and λ, and for the
        warps the mixed second derivative ``(∂²_{Ωφ} L_trn) u`` (R-operator along ``u``)."""
        out = self.base.cross(phi, u, X, Y)
        h = self.warped_pass(phi, X, Y).hvp(self._split_dirs(u))
        out["warp"], out["warp_bias"] = h["warp"], h["warp_b"]
        return out

    def theta_partials_out(self, phi, X, Y):
        """``∂θ L_out`` of the warps (they enter the network's output directly; ω and λ
        only the pull)."""
        g = self.warped_pass(phi, X, Y).grads()
        return {"warp": g["warp"], "warp_bias": g["warp_b"]}
