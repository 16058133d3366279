"""The dual system: a slow primary network rapidly modulated by a fast system.

Model 2 of the CML paper (Zucchet et al., NeurIPS 2022). A feed-forward network of rate
neurons has *slow* weights ``W`` (meta-parameters); its hidden units are modulated per
task by *fast* variables -- a gain ``g`` and a bias ``b`` per hidden neuron -- and its
linear output readout ``R`` is fast too::

    a_l = W_l r_{l-1},      u_l = g_l ⊙ a_l + b_l,      r_l = f(u_l)     (hidden layers)
    ŷ   = R [r_L; 1]                                                     (readout)

The fast variables φ = (g, b, R) learn each task in continuous time, pulled towards
learned initial values φ₀ with strengths λ::

    τ dφ/dt = −∂φ L_trn(φ, W) − λ ⊙ (φ − φ₀)   [− β ∂φ L_out(φ, W)]

so they settle at a minimum of ``L_in = L_trn + Σ λ/2 (φ − φ₀)²``. The meta-parameters
θ = (W, φ₀ [, λ]) are meta-learned with CML. For φ₀ and λ the CML update is the complex
synapse's (``∂φ₀ L_in = −λ(φ − φ₀)``, ``∂λ L_in = ½(φ − φ₀)²``). The slow weights ``W``
enter both losses directly, so their CML estimate is the difference, between the phases,
of ``∂W F = ∂W [L_in + β L_out]``; for one layer this is a **contrastive Hebbian
product** summed over the samples the network sees in the phase (training shots with
weight ``1/K``, validation points with weight ``β/V`` in the nudged phase)::

    ∂W_l F = Σ_s c_s (δ_{l,s} ⊙ g_l) ⊗ r_{l−1,s},      δ_{l,s} = ∂F/∂u_{l,s}
           = (postsynaptic error × f′(u) × gain) ⊗ presynaptic rate

    ĝ_W = [∂W F(φᵝ, β) − ∂W F(φ⁰, 0)] / β                       (standard estimator)

With ``fast=("readout",)`` (the readout-only variant) the gains and biases are slow
meta-parameters too, updated by the same contrastive Hebbian rule.
"""
import numbers
import threading

import numpy as np

from . import _params as P
from .activations import get_activation
from .errors import UnsupportedError
from .initializers import Glorot
from .kind import ModelKind, check_fast_values, check_output, pull_partials
from .losses import get_loss
from .results import readonly
from .synapses import resolve

FAST_GROUPS = ("gain", "bias", "readout")


class DualSystem(ModelKind):
    """A slow network whose hidden units' gains and biases and whose readout are fast.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first, at least one hidden layer: ``[1, 40, 40, 1]``.
    activation : str or Activation
        Rate function of the hidden units (the readout is linear).
    fast : sequence of {"gain", "bias", "readout"}
        The variables learned within a task (default all three). ``("readout",)`` is the
        readout-only variant: gains and biases are then slow meta-parameters.
    lam : float or mapping group -> float
        Strength λ > 0 of the pull of each fast variable towards its learned initial value
        (dimensionless: it multiplies a squared difference in the inner objective).
    learn_lam : bool
        Meta-learn λ per fast variable (``theta["lam_gain"]`` ...) as well.
    tau_fast : float or Brian2 quantity
        Time constant τ (s) of the fast variables.
    weights, readout : initialiser or array
        Slow weights ``W_l`` (n_l, n_{l-1}) (default Glorot) and the readout's initial
        weights (n_out, n_L) (default Glorot; its bias starts at 0).
    gain, bias : float, array or initialiser
        Initial gains (default 1) and biases (default 0) of the hidden units.
    seed : int or numpy.random.Generator, optional
    loss : str or loss object
        Loss of the learning process (:mod:`neuro_meta.losses`): ``"squared_error"``
        (default), ``"masked_squared_error"`` (a bandit's pulled arm only) or
        ``"cross_entropy"`` (the readout's outputs taken as logits).

    Notes
    -----
    Meta-parameters (:attr:`theta`): ``{"W": [W_l], "gain": [g_l], "bias": [b_l],
    "readout": [R]}`` (``R`` augmented, (n_out, n_L + 1), last column the bias) and, with
    ``learn_lam``, ``"lam_gain"``, ``"lam_bias"``, ``"lam_readout"`` for the fast groups.
    ``gain``/``bias``/``readout`` are the fast variables' initial values φ₀ (or, for a
    group that is not fast, its slow value).
    """

    def __init__(self, sizes, activation="tanh", fast=FAST_GROUPS, lam=1.0, learn_lam=False,
                 tau_fast=1.0, weights=None, gain=1.0, bias=0.0, readout=None, seed=None,
                 loss="squared_error"):
        O = "DualSystem"
        self.loss = get_loss(loss, O, "loss")
        try:
            if isinstance(sizes, (str, bytes)):
                raise TypeError
            sizes = [P.integer(s, O, "sizes", low=1) for s in sizes]
        except TypeError:
            P.fail(O, "sizes", "must be a sequence of layer sizes", repr(sizes))
        if len(sizes) < 3:
            P.fail(O, "sizes", "needs an input layer, at least one hidden layer and an "
                   "output layer (the fast gains modulate hidden units)", repr(sizes))
        self.sizes = tuple(sizes)
        for n_pre, n in zip(sizes[:-1], sizes[1:]):
            P.check_bytes(n * (n_pre + 1), O, "sizes", f"of shape ({n}, {n_pre + 1})",
                          repr(sizes))
        n_params = sum(n * (n_pre + 1) for n_pre, n in zip(sizes[:-1], sizes[1:]))
        P.check_bytes(2 * n_params, O, "sizes", f"of {n_params} weights x 2 (the model's "
                      "copies)", repr(sizes))
        self.activation = get_activation(activation, O, "activation")
        if isinstance(fast, str):
            fast = (fast,)
        try:
            fast = list(fast)
        except TypeError:
            P.fail(O, "fast", "must be a list of " + ", ".join(map(repr, FAST_GROUPS)),
                   repr(fast))
        for g in fast:
            P.choice(g, O, "fast", FAST_GROUPS)
        if not fast:
            P.fail(O, "fast", "needs at least one fast group of " +
                   ", ".join(map(repr, FAST_GROUPS)), "[]")
        self.fast = tuple(g for g in FAST_GROUPS if g in fast)
        lam_of = _lam_per_group(lam, self.fast)
        if not isinstance(learn_lam, (bool, np.bool_)):
            P.fail(O, "learn_lam", "must be True or False", repr(learn_lam))
        self.learn_lam = bool(learn_lam)
        self.tau_fast = P.to_seconds(tau_fast, O, "tau_fast")
        self.seed = seed
        rng = P.rng_from_seed(seed, "DualSystem")
        hidden = self.sizes[1:-1]
        theta = {"W": [], "gain": [], "bias": [], "readout": []}
        for l, (n_pre, n) in enumerate(zip(self.sizes[:-2], hidden)):
            theta["W"].append(resolve(weights if weights is not None else Glorot(),
                                      (n, n_pre), rng, O, f"weights[{l}]"))
        for l, n in enumerate(hidden):
            theta["gain"].append(resolve(_spec(gain), (n,), rng, O, "gain"))
            theta["bias"].append(resolve(_spec(bias), (n,), rng, O, "bias"))
        n_out, n_L = self.sizes[-1], hidden[-1]
        r_w = resolve(readout if readout is not None else Glorot(), (n_out, n_L), rng, O,
                      "readout")
        theta["readout"].append(np.concatenate([r_w, np.zeros((n_out, 1))], axis=1))
        lam_arrays = {g: [np.full(a.shape, lam_of[g]) for a in theta[g]] for g in self.fast}
        if self.learn_lam:
            for g in self.fast:
                theta["lam_" + g] = lam_arrays[g]
        self._set(theta, lam_arrays)

    def _set(self, theta, lam_arrays):
        self._theta = {k: [readonly(a) for a in v] for k, v in theta.items()}
        self._lam = {g: [readonly(a) for a in v] for g, v in lam_arrays.items()}

    # ------------------------------------------------------------------ structure
    @property
    def n_hidden_layers(self):
        return len(self.sizes) - 2

    @property
    def tau_synapse(self):
        """Alias of :attr:`tau_fast` (the time constant the shared learner code reads)."""
        return self.tau_fast

    @property
    def fast_names(self):
        """Names of the fast variables, in the order of ``LearningResult.phi``:
        ``["gain[0]", ..., "bias[0]", ..., "readout"]`` (fast groups only)."""
        return [f"{g}[{l}]" if g != "readout" else "readout"
                for g, l in self._fast_index()]

    def _fast_index(self):
        return [(g, l) for g in self.fast for l in range(len(self._theta[g]))]

    @property
    def phi0(self):
        """Initial values of the fast variables (list in :attr:`fast_names` order)."""
        return [self._theta[g][l] for g, l in self._fast_index()]

    @property
    def lam(self):
        """Pull strengths λ of the fast variables (list in :attr:`fast_names` order)."""
        src = self._theta if self.learn_lam else {"lam_" + g: v for g, v in self._lam.items()}
        return [src["lam_" + g][l] for g, l in self._fast_index()]

    @property
    def theta(self):
        """Meta-parameters (copies), see the class docstring."""
        return {k: [a.copy() for a in v] for k, v in self._theta.items()}

    @property
    def penalised(self):
        """The weights meta-learning stores, on which ``MetaTrainer(omega_decay=c)``'s
        L2 penalty acts: the slow weights ``W``, the hidden units' biases and the
        readout (their initial values where they are fast) -- the counterpart of a
        complex synapse's ω and of the MAML family's initial weights and biases. Not
        the gains, whose neutral value is 1, nor λ."""
        return ("W", "bias", "readout")

    def with_theta(self, theta):
        """A copy with new meta-parameters (same structure as :attr:`theta`)."""
        O = "DualSystem.with_theta"
        if not isinstance(theta, dict) or set(theta) != set(self._theta):
            P.fail(O, "theta", f"must be a dict with keys {sorted(self._theta)}",
                   sorted(theta) if isinstance(theta, dict) else type(theta).__name__)
        new_theta = {}
        for k, ref in self._theta.items():
            if not isinstance(theta[k], (list, tuple)):
                P.fail(O, k, f"must be a list of {len(ref)} array(s)", type(theta[k]).__name__)
            if len(theta[k]) != len(ref):
                P.fail(O, k, f"needs {len(ref)} array(s)", f"{len(theta[k])}")
            new_theta[k] = [P.finite_array(a, O, f"{k}[{i}]", shape=r.shape,
                                           min_value=0.0 if k.startswith("lam_") else None)
                            for i, (a, r) in enumerate(zip(theta[k], ref))]
        new = object.__new__(DualSystem)
        new.__dict__.update(self.__dict__)
        new._set(new_theta, self._lam)
        return new

    # ------------------------------------------------------------------ evaluation
    def params(self, fast=None):
        """(gains, biases, readout, weights) with the fast variables ``fast`` (list in
        :attr:`fast_names` order, possibly with leading task axes) in place of their
        initial values; ``fast`` as :meth:`forward` takes it, checked the same way)."""
        return self._params(None if fast is None else self._check_fast(
            fast, "DualSystem.params"))

    def _params(self, fast=None):
        """:meth:`params` without its checks (the model's own calls)."""
        groups = {g: list(self._theta[g]) for g in ("gain", "bias", "readout")}
        if fast is not None:
            for (g, l), a in zip(self._fast_index(), fast):
                groups[g][l] = a
        return groups["gain"], groups["bias"], groups["readout"][0], self._theta["W"]

    def forward(self, x, fast=None):
        """Hidden pre-activations ``u_l`` and rates ``r_l`` and the output, for inputs
        ``x`` (..., samples, n_in). Returns ``(layers, y)`` with ``layers`` a list of
        ``(a_l, u_l, r_l)`` (``a_l = W_l r_{l-1}``)."""
        x, fast = self._check_inputs(x, fast)
        with np.errstate(over="ignore", invalid="ignore"):     # check_output says it
            layers, y = _forward(self, x, fast, self.activation.f)
        for i, arrays in enumerate(layers, 1):  # every layer returned (a hidden one
            for a in arrays:                    # can overflow alone)
                check_output(a, "DualSystem.forward", f"hidden layer {i}")
        return layers, check_output(y, "DualSystem.forward")

    def _check_inputs(self, x, fast, owner="DualSystem.forward"):
        """``(x, fast)`` of :meth:`forward` and :meth:`predict`, checked."""
        x = P.finite_array(x, owner, "x", max_abs=P.DATA_LIMIT)
        if x.ndim < 1 or x.shape[-1] != self.n_in:
            P.fail(owner, "x", f"last axis must match the input layer ({self.n_in} units)",
                   f"shape {x.shape}")
        return x, (None if fast is None else self._check_fast(fast, owner))

    def _check_fast(self, fast, owner):
        """Fast variables as given to :meth:`forward`: one real array per fast variable
        (:attr:`fast_names`) of its shape, with optional leading task axes."""
        ref = self.phi0
        if not isinstance(fast, (list, tuple)) or len(fast) != len(ref):
            P.fail(owner, "fast", f"must be a list of {len(ref)} arrays "
                   f"({', '.join(self.fast_names)})",
                   type(fast).__name__ if not isinstance(fast, (list, tuple))
                   else f"{len(fast)} arrays")
        out = []
        for name, a, r in zip(self.fast_names, fast, ref):
            if P.is_quantity(a):        # an ndarray subclass: 10*mV is not 0.01
                P.dimensionless(a, owner, f"fast[{name}]")
            try:
                a = a if isinstance(a, np.ndarray) else np.asarray(a)
                ok = a.dtype.kind in "biuf"
            except Exception:
                ok = False
            if not ok:
                P.fail(owner, f"fast[{name}]", "must be an array of real numbers",
                       type(a).__name__)
            if a.shape[a.ndim - r.ndim:] != r.shape or a.ndim < r.ndim:
                P.fail(owner, f"fast[{name}]", f"must have shape {r.shape} with optional "
                       "leading task axes", f"shape {a.shape}")
            out.append(a)
        check_fast_values(out, self.fast_names, owner, "fast")
        return out

    def predict(self, x, fast=None):
        """Outputs for inputs ``x`` at the fast variables ``fast`` (default: initial)."""
        x, fast = self._check_inputs(x, fast)     # (predict validates as forward)
        with np.errstate(over="ignore", invalid="ignore"):     # check_output says it
            y = _forward_memo(self, x, fast, self.activation.f)[1].copy()
        return check_output(y, "DualSystem.forward")

    # ------------------------------------------------------------------ model kind
    rules = ("backprop", "delta")
    probeable = ("phi", "v", "r", "loss")
    tau_fast_name = "tau_fast"

    @property
    def plastic(self):
        return [True] * len(self._fast_index())

    @property
    def anchor(self):
        """The fast variables' learned initial values φ₀ (they are pulled towards them)."""
        return self.phi0

    def gain_layout(self):
        """What the compiled gain kernel needs: ``sizes``, the hidden ``activation``'s
        name, the slow weights ``W``, the fast variables as ``(group, layer)`` keys with
        their ``lam`` and ``anchor`` (φ₀), and the values of the slow groups."""
        slow = {(g, l): a for g in ("gain", "bias", "readout") if g not in self.fast
                for l, a in enumerate(self._theta[g])}
        return {"sizes": self.sizes, "activation": self.activation.name,
                "W": list(self._theta["W"]), "fast": self._fast_index(),
                "lam": self.lam, "anchor": self.phi0, "slow": slow}

    def check_rule(self, rule):
        if rule == "delta" and self.fast != ("readout",):
            raise UnsupportedError(
                "Learner.rule: 'delta' is local to the readout; a DualSystem with fast "
                f"{list(self.fast)} needs rule='backprop' (got 'delta')")

    def curvature(self, inp):
        """The trace of the data term's Gauss-Newton matrix at the initial state (an upper
        bound of its largest eigenvalue)."""
        return _curvature(self, inp)

    def neurons(self, phi, x):
        """The forward pass at ``phi``: per hidden layer ``a_l = W_l r_{l-1}``, ``u_l``,
        ``r_l``, then the output ``ŷ`` (flat list)."""
        layers, y = _forward_memo(self, x, phi, self.activation.f)
        return [a for layer in layers for a in layer] + [y]

    def forces(self, phi, v, x, y, c, rule="backprop"):
        """``−∂φ Σ_s c_s ½‖ŷ_s − y_s‖²`` by backprop through the forward pass ``v``
        (for the readout-only variant this is the readout's delta rule)."""
        forward = ([tuple(v[3 * l:3 * l + 3]) for l in range(self.n_hidden_layers)], v[-1])
        _, grads = objective_grads(self, phi, x, y, c, forward=forward)
        return [-g for g in _fast_part(self, grads)]

    def potentials(self, v):
        """``u_l`` per hidden layer and the output ``ŷ``."""
        return [v[3 * l + 1] for l in range(self.n_hidden_layers)] + [v[-1]]

    def rates(self, potentials):
        return [self.activation.f(u) for u in potentials[:-1]] + [potentials[-1]]

    def theta_partials(self, phi, X, Y, c):
        """``∂θ F(φ, θ)`` per task, in the structure of :attr:`theta`: the slow weights'
        (and slow gains'/biases') partials are contrastive Hebbian products, the initial
        values' ``−λ(φ − φ₀)`` and the strengths' ``½(φ − φ₀)²``."""
        _, grads = objective_grads(self, phi, X, Y, c,
                                   analytic=np.iscomplexobj(phi[0]))
        out = {"W": grads["W"]}
        for g in ("gain", "bias", "readout"):
            if g not in self.fast:
                out[g] = grads[g]
        for (g, l), p, p0, lm in zip(self._fast_index(), phi, self.phi0, self.lam):
            d_anchor, d_lam = pull_partials(p, p0, lm)
            out.setdefault(g, []).append(d_anchor)
            if self.learn_lam:
                out.setdefault("lam_" + g, []).append(d_lam)
        return {k: out[k] for k in self._theta}

    # -- exact reference: complex-step derivatives of the backprop gradient ------------
    def data_grad(self, phi, X, Y, c=None):
        c = self._uniform(X) if c is None else c
        _, grads = objective_grads(self, phi, X, Y, c, analytic=True)
        return _fast_part(self, grads)

    def data_hvp(self, phi, X, Y, V, c=None):
        """Hessian-vector products by complex-step derivatives of the backprop gradient
        (exact to rounding; the rate function must be analytic)."""
        c = self._uniform(X) if c is None else c
        pert = [p + 1j * _H * v for p, v in zip(phi, V)]
        _, grads = objective_grads(self, pert, X, Y, c, analytic=True)
        return [g.imag / _H for g in _fast_part(self, grads)]

    def data_hvp_at(self, phi, X, Y, c=None):
        """``V -> data_hvp(phi, X, Y, V, c)`` for many directions at one ``phi`` (the phase
        solver's conjugate gradients): the forward and backward pass at ``phi`` are done
        once, each product is a real forward-over-reverse (R-operator) pass -- the same
        exact Hessian-vector product as :meth:`data_hvp`'s complex-step derivative, to
        rounding, at a fraction of its cost. Falls back to :meth:`data_hvp` for
        directions with extra leading axes or a rate function without ``d2f``."""
        c = self._uniform(X) if c is None else c
        if getattr(self.activation, "d2f", None) is None or np.iscomplexobj(phi[0]):
            return lambda V: self.data_hvp(phi, X, Y, V, c)
        cache = _hvp_cache(self, phi, X, Y, c)
        shapes = [p.shape for p in phi]

        def hvp(V):
            if any(v is not None and v.shape != s for v, s in zip(V, shapes)):
                return self.data_hvp(phi, X, Y, V, c)
            return _hvp_apply(self, cache, V)
        return hvp

    def cross(self, phi, u, X, Y):
        """``∂/∂ε ∂θ F(φ + ε u)``: for the slow parameters a complex-step derivative of
        the backprop partials (along ``u`` scaled to max 1 per task, then rescaled), for
        the fast variables' initial values ``−λ u`` and strengths ``(φ − φ₀) u``."""
        B = phi[0].shape[0]
        scale = np.max([np.abs(d).reshape(B, -1).max(axis=1) for d in u], axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        pert = [p + 1j * _H * (d / scale.reshape((B,) + (1,) * (d.ndim - 1)))
                for p, d in zip(phi, u)]
        _, g_mixed = objective_grads(self, pert, X, Y, self._uniform(X), analytic=True)
        out = {}
        for k in self._slow_groups():
            out[k] = [(gm.imag / _H) * scale.reshape((B,) + (1,) * (gm.ndim - 1))
                      for gm in g_mixed[k]]
        for (g, l), d, p, p0, lm in zip(self._fast_index(), u, phi, self.phi0, self.lam):
            out.setdefault(g, []).append(-lm * d)
            if self.learn_lam:
                out.setdefault("lam_" + g, []).append((p - p0) * d)
        return {k: out[k] for k in self._theta}

    def check_exact(self):
        """The complex-step derivatives need an analytic rate function."""
        _analytic(self)

    def theta_partials_out(self, phi, X, Y):
        """``∂θ L_out`` of the slow parameters, which enter the network directly."""
        _, g_out = objective_grads(self, phi, X, Y, self._uniform(X), analytic=True)
        return {k: g_out[k] for k in self._slow_groups()}

    def _slow_groups(self):
        return ["W"] + [g for g in ("gain", "bias", "readout") if g not in self.fast]

    def __repr__(self):
        return (f"DualSystem(sizes={list(self.sizes)}, activation={self.activation.name!r}, "
                f"fast={list(self.fast)}, learn_lam={self.learn_lam}, "
                f"tau_fast={self.tau_fast}"
                + (f", loss={self.loss.name!r})" if self.loss.name != "squared_error"
                   else ")"))


def _lam_per_group(lam, fast):
    """``{group: λ}`` for the fast groups from a number or a mapping."""
    O = "DualSystem"
    if not isinstance(lam, dict):
        v = P.real(lam, O, "lam", low=0.0, low_open=True)
        return {g: v for g in fast}
    unknown = [k for k in lam if k not in fast]
    if unknown:
        P.fail(O, "lam", f"keys must be fast groups {list(fast)}", repr(unknown[0]))
    missing = [g for g in fast if g not in lam]
    if missing:
        P.fail(O, "lam", f"needs a value for every fast group {list(fast)}",
               f"no {missing[0]!r}")
    return {g: P.real(lam[g], O, f"lam[{g!r}]", low=0.0, low_open=True) for g in fast}


def _spec(value):
    """Real scalars as 0-d arrays; arrays, lists and initialisers as given (``resolve``
    validates them)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return np.asarray(float(value))
    return value


# ---------------------------------------------------------------------- derivatives
_ANALYTIC = {
    # complex-safe (f, f') for the complex-step derivatives of the exact reference
    "tanh": (np.tanh, lambda u: 1.0 - np.tanh(u) ** 2),
    "linear": (lambda u: u, np.ones_like),
    "sigmoid": (lambda u: 1.0 / (1.0 + np.exp(-u)),
                lambda u: np.exp(-u) / (1.0 + np.exp(-u)) ** 2),
    "softplus": (lambda u: np.log(1.0 + np.exp(u)), lambda u: 1.0 / (1.0 + np.exp(-u))),
}


def _analytic(model):
    if model.activation.name not in _ANALYTIC:
        raise UnsupportedError(
            f"DualSystem.activation: the exact reference needs an analytic rate function "
            f"({', '.join(_ANALYTIC)}) (got {model.activation.name!r})")
    return _ANALYTIC[model.activation.name]


def _forward(model, X, fast, f):
    gains, biases, R, W = model._params(fast)
    r, layers = X, []
    for l in range(model.n_hidden_layers):
        a = np.matmul(r, np.swapaxes(W[l], -1, -2))
        u = gains[l][..., None, :] * a + biases[l][..., None, :]
        r = f(u)
        layers.append((a, u, r))
    n = R.shape[-1] - 1
    y = np.matmul(r, np.swapaxes(R[..., :n], -1, -2)) + R[..., None, :, n]
    return layers, y


# The phase solver evaluates the forward pass at one state several times (its residual,
# its objective, then the Hessian-vector products' cache at the accepted step): a small
# memo of the last real forward passes, keyed by the values (not the identity) of the
# inputs and of every parameter, returns the very same arrays (bit-identical results).
# Cached arrays are read-only. FORWARD_MEMO = 0 switches the memo off. One memo per
# thread (a threaded executor's workers never share or reorder each other's entries).
FORWARD_MEMO = 2
_LOCAL = threading.local()


def _forward_memo(model, X, fast, f):
    """:func:`_forward` through the memo (real values only)."""
    if FORWARD_MEMO <= 0:
        return _forward(model, X, fast, f)
    gains, biases, R, W = model._params(fast)
    arrs = [X, R] + list(W) + list(gains) + list(biases)
    arrs = [a if isinstance(a, np.ndarray) else np.asarray(a) for a in arrs]
    if any(a.dtype.kind not in "biuf" for a in arrs):
        return _forward(model, X, fast, f)
    memo = _LOCAL.__dict__.setdefault("memo", [])
    for i, (kf, key, res) in enumerate(memo):
        if kf is f and len(key) == len(arrs) and all(
                k.shape == a.shape and k.dtype == a.dtype and np.array_equal(k, a)
                for k, a in zip(key, arrs)):
            if i:
                memo.insert(0, memo.pop(i))
            return res
    res = _forward(model, X, fast, f)
    for layer in res[0]:
        for a in layer:
            a.setflags(write=False)
    res[1].setflags(write=False)
    memo.insert(0, (f, [np.array(a) for a in arrs], res))
    del memo[FORWARD_MEMO:]
    return res


_TANH_D = get_activation("tanh").df        # the built-in tanh's derivative 1 − tanh²


def _derivs(model, layer, df):
    """``f'(u)`` of a hidden layer ``(a, u, r)``; for the built-in real tanh from the rate
    ``r = tanh(u)`` already computed (``1 − r²``: the same floating-point operations as
    the activation's ``df``, without a second ``tanh``)."""
    r = layer[2]
    if df is _TANH_D and not np.iscomplexobj(r):
        t = r * r
        return 1.0 - t
    return df(layer[1])


def objective_grads(model, fast, X, Y, c, analytic=False, forward=None):
    """Data objective ``Σ_s c_s ℓ(ŷ_s, y_s)`` (squared error: ``½‖ŷ_s − y_s‖²``; the
    model's ``loss``) and its gradients by backprop, from ``∂ℓ/∂ŷ = loss.error``.

    ``X`` (B, S, n_in), ``Y`` (B, S, n_out), ``c`` (B, S) sample weights; ``fast`` as in
    :meth:`DualSystem.params` (leading axes (..., B) allowed; complex values with
    ``analytic=True``). Returns ``(F (..., B), grads)`` with ``grads`` a dict ``"W"``,
    ``"gain"``, ``"bias"`` (lists per hidden layer) and ``"readout"`` (one-element list),
    every array with the leading axes (..., B). The ``W`` entries are the contrastive
    Hebbian products ``Σ_s c_s (δ_s ⊙ g) ⊗ r_pre,s``. ``forward``: the forward pass
    ``(layers, y)`` at ``fast`` if already computed.
    """
    if analytic:
        f, df = _analytic(model)
    else:
        f, df = model.activation.f, model.activation.df
    layers, y = _forward_memo(model, X, fast, f) if forward is None else forward
    gains, _, R, W = model._params(fast)
    e = model.loss.error(y, Y)
    if model.loss.name in ("squared_error", "masked_squared_error"):
        F = 0.5 * (c[..., None] * e * e).sum(axis=(-1, -2))
    else:
        F = (c * model.loss.per_sample(y, Y)).sum(axis=-1)
    e = e * c[..., None]
    L = model.n_hidden_layers
    n = R.shape[-1] - 1
    r_L = layers[-1][2]
    g_R = np.concatenate([np.matmul(np.swapaxes(e, -1, -2), r_L),
                          e.sum(axis=-2)[..., None]], axis=-1)
    grads = {"W": [None] * L, "gain": [None] * L, "bias": [None] * L, "readout": [g_R]}
    d = np.matmul(e, R[..., :n]) * _derivs(model, layers[-1], df)
    for l in range(L - 1, -1, -1):
        a, _, _ = layers[l]
        grads["gain"][l] = (d * a).sum(axis=-2)
        grads["bias"][l] = d.sum(axis=-2)
        dg = d * gains[l][..., None, :]
        r_pre = X if l == 0 else layers[l - 1][2]
        grads["W"][l] = np.matmul(np.swapaxes(dg, -1, -2), r_pre)
        if l > 0:
            d = np.matmul(dg, W[l]) * _derivs(model, layers[l - 1], df)
    return F, grads


def _fast_part(model, grads):
    return [grads[g][l] for g, l in model._fast_index()]


_H = 1e-20   # complex step: exact first derivatives to rounding (no subtraction)


def _curvature(model, inp):
    """The trace of the data term's Gauss-Newton matrix at the initial state."""
    X, c = inp.X, np.abs(inp.c)
    n_out = model.sizes[-1]
    layers, _ = _forward(model, X, None, model.activation.f)
    gains, _, R, W = model._params()
    sq = np.zeros(X.shape[:2])
    n = R.shape[-1] - 1
    for o in range(n_out):
        e = np.zeros(X.shape[:2] + (n_out,))
        e[..., o] = 1.0
        if "readout" in model.fast:
            sq += (layers[-1][2] ** 2).sum(axis=-1) + 1.0
        d = np.matmul(e, R[..., :n]) * model.activation.df(layers[-1][1])
        for l in range(model.n_hidden_layers - 1, -1, -1):
            if "gain" in model.fast:
                sq += ((d * layers[l][0]) ** 2).sum(axis=-1)
            if "bias" in model.fast:
                sq += (d ** 2).sum(axis=-1)
            if l > 0:
                d = np.matmul(d * gains[l][..., None, :], W[l]) * model.activation.df(
                    layers[l - 1][1])
    return float((c * sq).sum(axis=-1).max())


# ---------------------------------------------------------------------- R-operator
def _hvp_cache(model, fast, X, Y, c):
    """What every Hessian-vector product at ``fast`` reuses: the forward pass with
    ``f'(u)``, ``f''(u)``, the weighted output error and the backward deltas."""
    act = model.activation
    layers, y = _forward_memo(model, X, fast, act.f)
    gains, _, R, W = model._params(fast)
    df = [_derivs(model, layer, act.df) for layer in layers]
    if act.df is _TANH_D:
        d2f = [-2.0 * r * (1.0 - r * r) for _, _, r in layers]      # = _tanh_d2(u)
    else:
        d2f = [act.d2f(u) for _, u, _ in layers]
    e = model.loss.error(y, Y) * c[..., None]
    n = R.shape[-1] - 1
    L = model.n_hidden_layers
    deltas = [None] * L
    # back[l] = ``(∂ŷ-error pulled back to u_l, before f')`` ⊙ f''(u_l): the second-order
    # term of every tangent backward pass, the same at every direction V
    back = [None] * L
    m = np.matmul(e, R[..., :n])
    back[-1] = m * d2f[-1]
    d = m * df[-1]
    for l in range(L - 1, -1, -1):
        deltas[l] = d
        if l > 0:
            m = np.matmul(d * gains[l][..., None, :], W[l])
            back[l - 1] = m * d2f[l - 1]
            d = m * df[l - 1]
    return {"layers": layers, "y": y, "Y": Y, "c": c, "df": df, "d2f": d2f, "e": e,
            "deltas": deltas, "back": back, "gains": gains, "R": R, "W": W, "X": X}


def _error_tangent(model, y, Y, ydot):
    """Directional derivative of ``loss.error(y, Y)`` along ``ydot``."""
    name = model.loss.name
    if name == "squared_error":
        return ydot
    if name == "masked_squared_error":
        return np.where(model.loss.observed(Y), ydot, 0.0)
    return np.imag(model.loss.error(y + 1j * _H * ydot, Y)) / _H


def _hvp_apply(model, k, V):
    """``∇²φ Σ_s c_s ℓ_s · V`` by one tangent forward and one tangent backward pass
    (forward-over-reverse differentiation of :func:`objective_grads`)."""
    L = model.n_hidden_layers
    layers, gains, R, W = k["layers"], k["gains"], k["R"], k["W"]
    n = R.shape[-1] - 1
    dot = {"gain": [None] * L, "bias": [None] * L, "readout": [None]}
    for (g, l), v in zip(model._fast_index(), V):
        dot[g][l] = v
    # tangent forward pass
    a_dot, u_dot = [None] * L, [None] * L
    r_dot = None                                   # the input carries no tangent
    for l in range(L):
        a, u, r = layers[l]
        ad = None if r_dot is None else np.matmul(r_dot, np.swapaxes(W[l], -1, -2))
        ud = None
        if ad is not None:
            ud = gains[l][..., None, :] * ad
        if dot["gain"][l] is not None:
            t = dot["gain"][l][..., None, :] * a
            ud = t if ud is None else ud + t
        if dot["bias"][l] is not None:
            t = np.broadcast_to(dot["bias"][l][..., None, :], u.shape)
            ud = t if ud is None else ud + t
        a_dot[l], u_dot[l] = ad, ud
        r_dot = None if ud is None else k["df"][l] * ud
    r_L = layers[-1][2]
    Rd = dot["readout"][0]
    y_dot = np.zeros_like(k["y"])
    if r_dot is not None:
        y_dot = y_dot + np.matmul(r_dot, np.swapaxes(R[..., :n], -1, -2))
    if Rd is not None:
        y_dot = (y_dot + np.matmul(r_L, np.swapaxes(Rd[..., :n], -1, -2))
                 + Rd[..., None, :, n])
    e = k["e"]
    e_dot = _error_tangent(model, k["y"], k["Y"], y_dot) * k["c"][..., None]
    out = {"gain": [None] * L, "bias": [None] * L, "readout": [None]}
    if "readout" in model.fast:
        gR = np.matmul(np.swapaxes(e_dot, -1, -2), r_L)
        if r_dot is not None:
            gR = gR + np.matmul(np.swapaxes(e, -1, -2), r_dot)
        out["readout"][0] = np.concatenate([gR, e_dot.sum(axis=-2)[..., None]], axis=-1)
    # tangent backward pass
    t = np.matmul(e_dot, R[..., :n])
    if Rd is not None:
        t = t + np.matmul(e, Rd[..., :n])
    dd = t * k["df"][-1]
    if u_dot[-1] is not None:
        dd = dd + k["back"][-1] * u_dot[-1]
    for l in range(L - 1, -1, -1):
        d, a = k["deltas"][l], layers[l][0]
        gg = (dd * a).sum(axis=-2)
        if a_dot[l] is not None:
            gg = gg + (d * a_dot[l]).sum(axis=-2)
        out["gain"][l] = gg
        out["bias"][l] = dd.sum(axis=-2)
        if l > 0:
            dgd = dd * gains[l][..., None, :]
            if dot["gain"][l] is not None:
                dgd = dgd + d * dot["gain"][l][..., None, :]
            dd = np.matmul(dgd, W[l]) * k["df"][l - 1]
            if u_dot[l - 1] is not None:
                dd = dd + k["back"][l - 1] * u_dot[l - 1]
    return [out[g][l] for g, l in model._fast_index()]
