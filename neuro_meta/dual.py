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

import numpy as np

from . import _params as P
from .activations import get_activation
from .errors import SimulationError, UnsupportedError
from .initializers import Glorot
from .results import LearningResult, readonly
from .engines.numpy_engine import DIVERGENCE_BOUND, _task_max
from .synapses import resolve

FAST_GROUPS = ("gain", "bias", "readout")


class DualSystem:
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

    Notes
    -----
    Meta-parameters (:attr:`theta`): ``{"W": [W_l], "gain": [g_l], "bias": [b_l],
    "readout": [R]}`` (``R`` augmented, (n_out, n_L + 1), last column the bias) and, with
    ``learn_lam``, ``"lam_gain"``, ``"lam_bias"``, ``"lam_readout"`` for the fast groups.
    ``gain``/``bias``/``readout`` are the fast variables' initial values φ₀ (or, for a
    group that is not fast, its slow value).
    """

    def __init__(self, sizes, activation="tanh", fast=FAST_GROUPS, lam=1.0, learn_lam=False,
                 tau_fast=1.0, weights=None, gain=1.0, bias=0.0, readout=None, seed=None):
        O = "DualSystem"
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
        if isinstance(lam, dict):
            unknown = [k for k in lam if k not in self.fast]
            if unknown:
                P.fail(O, "lam", f"keys must be fast groups {list(self.fast)}",
                       repr(unknown[0]))
            missing = [g for g in self.fast if g not in lam]
            if missing:
                P.fail(O, "lam", f"needs a value for every fast group {list(self.fast)}",
                       f"no {missing[0]!r}")
            lam_of = {g: P.real(lam[g], O, f"lam[{g!r}]", low=0.0, low_open=True)
                      for g in self.fast}
        else:
            v = P.real(lam, O, "lam", low=0.0, low_open=True)
            lam_of = {g: v for g in self.fast}
        if not isinstance(learn_lam, (bool, np.bool_)):
            P.fail(O, "learn_lam", "must be True or False", repr(learn_lam))
        self.learn_lam = bool(learn_lam)
        self.tau_fast = P.to_seconds(tau_fast, O, "tau_fast")
        self.seed = seed
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
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

    def with_theta(self, theta):
        """A copy with new meta-parameters (same structure as :attr:`theta`)."""
        O = "DualSystem.with_theta"
        if not isinstance(theta, dict) or set(theta) != set(self._theta):
            P.fail(O, "theta", f"must be a dict with keys {sorted(self._theta)}",
                   sorted(theta) if isinstance(theta, dict) else type(theta).__name__)
        new_theta = {}
        for k, ref in self._theta.items():
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
        initial values."""
        groups = {g: list(self._theta[g]) for g in ("gain", "bias", "readout")}
        if fast is not None:
            for (g, l), a in zip(self._fast_index(), fast):
                groups[g][l] = a
        return groups["gain"], groups["bias"], groups["readout"][0], self._theta["W"]

    def forward(self, x, fast=None):
        """Hidden pre-activations ``u_l`` and rates ``r_l`` and the output, for inputs
        ``x`` (..., samples, n_in). Returns ``(layers, y)`` with ``layers`` a list of
        ``(a_l, u_l, r_l)`` (``a_l = W_l r_{l-1}``)."""
        return _forward(self, np.asarray(x, dtype=np.float64), fast, self.activation.f)

    def predict(self, x, fast=None):
        """Outputs for inputs ``x`` at the fast variables ``fast`` (default: initial)."""
        return self.forward(x, fast)[1]

    def __repr__(self):
        return (f"DualSystem(sizes={list(self.sizes)}, activation={self.activation.name!r}, "
                f"fast={list(self.fast)}, learn_lam={self.learn_lam}, "
                f"tau_fast={self.tau_fast})")


def _spec(value):
    """Scalars and arrays as given; initialisers as given (for ``resolve``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return np.asarray(float(value))
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.float64)
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
    gains, biases, R, W = model.params(fast)
    r, layers = X, []
    for l in range(model.n_hidden_layers):
        a = np.matmul(r, np.swapaxes(W[l], -1, -2))
        u = gains[l][..., None, :] * a + biases[l][..., None, :]
        r = f(u)
        layers.append((a, u, r))
    n = R.shape[-1] - 1
    y = np.matmul(r, np.swapaxes(R[..., :n], -1, -2)) + R[..., None, :, n]
    return layers, y


def objective_grads(model, fast, X, Y, c, analytic=False):
    """Data objective ``Σ_s c_s ½‖ŷ_s − y_s‖²`` and its gradients by backprop.

    ``X`` (B, S, n_in), ``Y`` (B, S, n_out), ``c`` (B, S) sample weights; ``fast`` as in
    :meth:`DualSystem.params` (leading axes (..., B) allowed; complex values with
    ``analytic=True``). Returns ``(F (..., B), grads)`` with ``grads`` a dict ``"W"``,
    ``"gain"``, ``"bias"`` (lists per hidden layer) and ``"readout"`` (one-element list),
    every array with the leading axes (..., B). The ``W`` entries are the contrastive
    Hebbian products ``Σ_s c_s (δ_s ⊙ g) ⊗ r_pre,s``.
    """
    if analytic:
        f, df = _analytic(model)
    else:
        f, df = model.activation.f, model.activation.df
    layers, y = _forward(model, X, fast, f)
    gains, _, R, W = model.params(fast)
    e = y - Y
    F = 0.5 * (c[..., None] * e * e).sum(axis=(-1, -2))
    e = e * c[..., None]
    L = model.n_hidden_layers
    n = R.shape[-1] - 1
    r_L = layers[-1][2]
    g_R = np.concatenate([np.matmul(np.swapaxes(e, -1, -2), r_L),
                          e.sum(axis=-2)[..., None]], axis=-1)
    grads = {"W": [None] * L, "gain": [None] * L, "bias": [None] * L, "readout": [g_R]}
    d = np.matmul(e, R[..., :n]) * df(layers[-1][1])
    for l in range(L - 1, -1, -1):
        a, _, _ = layers[l]
        grads["gain"][l] = (d * a).sum(axis=-2)
        grads["bias"][l] = d.sum(axis=-2)
        dg = d * gains[l][..., None, :]
        r_pre = X if l == 0 else layers[l - 1][2]
        grads["W"][l] = np.matmul(np.swapaxes(dg, -1, -2), r_pre)
        if l > 0:
            d = np.matmul(dg, W[l]) * df(layers[l - 1][1])
    return F, grads


def _fast_part(model, grads):
    return [grads[g][l] for g, l in model._fast_index()]


def _force(model, phi, X, Y, c):
    """``−∂φ F`` (the drive of the fast variables, times τ) for the fast list ``phi``."""
    _, grads = objective_grads(model, phi, X, Y, c)
    return [-gd - lm * (p - p0) for gd, lm, p, p0 in
            zip(_fast_part(model, grads), model.lam, phi, model.phi0)]


def inner_partials(model, phi, X, Y, c):
    """``∂θ F(φ, θ)`` per task, in the structure of :attr:`DualSystem.theta`.

    ``F = Σ_s c_s ½‖ŷ_s − y_s‖² + Σ λ/2 (φ − φ₀)²`` over the samples of a phase: the
    slow weights' (and slow gains'/biases') partials are contrastive Hebbian products,
    the initial values' ``−λ(φ − φ₀)`` and the strengths' ``½(φ − φ₀)²``.
    """
    _, grads = objective_grads(model, phi, X, Y, c)
    out = {"W": grads["W"]}
    for g in ("gain", "bias", "readout"):
        if g not in model.fast:
            out[g] = grads[g]
    lam = dict(zip(model._fast_index(), model.lam))
    for (g, l), p, p0 in zip(model._fast_index(), phi, model.phi0):
        d = p - p0
        out.setdefault(g, []).append(-lam[(g, l)] * d)
        if model.learn_lam:
            out.setdefault("lam_" + g, []).append(0.5 * d * d)
    return {k: out[k] for k in model._theta}


# ---------------------------------------------------------------------- learning process
def auto_dt(model, learner, inp):
    """Automatic time step: ``s · τ / (λ_max + h)`` with ``h`` the trace of the data
    term's Gauss-Newton matrix at the initial state (an upper bound of its largest
    eigenvalue), ``s = 1`` for RK4 and 0.5 for (exponential) Euler; at most ``τ/20``.
    Exponential Euler integrates the pull λ exactly, so λ does not limit its step."""
    X, c = inp.X, np.abs(inp.c)
    n_out = model.sizes[-1]
    layers, _ = _forward(model, X, None, model.activation.f)
    gains, _, R, W = model.params()
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
    curv = float((c * sq).sum(axis=-1).max())
    lam_max = 0.0 if learner.integrator == "expeuler" else max(
        float(np.max(a)) for a in model.lam)
    s = 1.0 if learner.integrator in ("rk4", "scipy") else 0.5
    return min(s * model.tau_fast / (lam_max + curv + 1e-12), model.tau_fast / 20)


def _step(model, integrator, phi, X, Y, c, dt):
    tau = model.tau_fast
    G = _force(model, phi, X, Y, c)
    if integrator == "euler":
        return [p + (dt / tau) * g for p, g in zip(phi, G)], G
    if integrator == "expeuler":
        h = dt / tau
        out = []
        for p, g, lm in zip(phi, G, model.lam):
            fac = np.where(lm > 0, -np.expm1(-lm * h) / np.where(lm > 0, lm, 1.0), h)
            out.append(p + fac * g)
        return out, G

    def add(a, k, s):
        return [ai + s * ki for ai, ki in zip(a, k)]

    k1 = G
    k2 = _force(model, add(phi, k1, dt / (2 * tau)), X, Y, c)
    k3 = _force(model, add(phi, k2, dt / (2 * tau)), X, Y, c)
    k4 = _force(model, add(phi, k3, dt / tau), X, Y, c)
    return [p + dt / (6 * tau) * (a + 2 * b + 2 * cc + d)
            for p, a, b, cc, d in zip(phi, k1, k2, k3, k4)], G


def _check(model, phi, n, dt, learner, beta):
    m = _task_max(phi).max()
    if not m < DIVERGENCE_BOUND:
        raise SimulationError(
            f"Learner.run: the DualSystem's fast variables diverged at step {n} "
            f"(t = {n * dt:.6g} s): max |phi| = {float(m)!r}. Hint: reduce dt (now "
            f"{dt:g} s), increase tau_fast or lam, rescale the inputs"
            + (f", or reduce |beta| (now {beta:g})" if beta else ""))


def run_phase(model, learner, inp, phi, record=(), record_every=1, beta=0.0, K=None):
    """Integrate one phase of the fast variables for B tasks.

    Returns ``(phi, settled (B,), t_end, steps, times, recorded)``; settling
    (``max |τ dφ/dt| < tol``) is tested every 10 steps and a settled task is frozen.
    """
    X, Y, c = inp.X, inp.Y, inp.c
    dt = learner.dt_for(model, inp)
    n_max, tol = learner.steps_for(model, inp)
    rec_t, rec = [], {k: [] for k in record}

    def snapshot(n):
        if record and (not rec_t or abs(rec_t[-1] - n * dt) > 1e-12):
            rec_t.append(n * dt)
            if "phi" in rec:
                rec["phi"].append([p.copy() for p in phi])
            if "loss" in rec:
                rec["loss"].append(_train_loss(model, inp, phi, K))

    if learner.integrator == "scipy":
        phi = _run_scipy(model, learner, inp, phi, n_max, dt, beta, snapshot)
        return phi, np.zeros(X.shape[0], dtype=bool), n_max * dt, n_max, rec_t, rec
    B = X.shape[0]
    settled = np.zeros(B, dtype=bool)
    frozen = None
    n = 0
    snapshot(0)
    with np.errstate(over="ignore", invalid="ignore"):
        while n < n_max:
            new, G = _step(model, learner.integrator, phi, X, Y, c, dt)
            if frozen is not None:
                new = [np.where(frozen.reshape((-1,) + (1,) * (p.ndim - 1)), p, q)
                       for p, q in zip(phi, new)]
            phi = new
            n += 1
            _check(model, phi, n, dt, learner, beta)
            if record and n % record_every == 0:
                snapshot(n)
            if tol is not None and n % 10 == 0:
                settled |= _task_max(_force(model, phi, X, Y, c)) < tol
                if settled.all():
                    break
                if settled.any():
                    frozen = settled.copy()
    snapshot(n)
    if tol is None:
        settled[:] = False
    return phi, settled, n * dt, n, rec_t, rec


def _train_loss(model, inp, phi, K):
    # the training loss: the first K samples are the training shots
    K = inp.X.shape[1] if K is None else K
    out = model.predict(inp.X[:, :K], phi)
    return 0.5 * ((out - inp.Y[:, :K]) ** 2).sum(axis=-1).mean(axis=-1)


def _run_scipy(model, learner, inp, phi, n_max, dt, beta, snapshot):
    from scipy.integrate import solve_ivp

    shapes = [p.shape for p in phi]
    split = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def unpack(z):
        return [a.reshape(s) for a, s in zip(np.split(z, split), shapes)]

    def fun(t, z):
        G = _force(model, unpack(z), inp.X, inp.Y, inp.c)
        return np.concatenate([g.ravel() for g in G]) / model.tau_fast

    t_end = n_max * dt
    sol = solve_ivp(fun, (0.0, t_end), np.concatenate([p.ravel() for p in phi]),
                    method=learner.scipy_method, rtol=learner.scipy_rtol,
                    atol=learner.scipy_atol)
    if not sol.success:
        raise SimulationError(f"Learner.run: solve_ivp failed: {sol.message}")
    phi = unpack(sol.y[:, -1])
    _check(model, phi, n_max, dt, learner, beta)
    return phi


def learn(learner, model, x, y, record=(), record_every=1, x_val=None, y_val=None,
          beta=0.0, phi_init=None):
    """:meth:`Learner.run` for a :class:`DualSystem` (batch presentation, numpy engine)."""
    from .learning import warn_not_settled

    O = "Learner.run"
    if learner.presentation != "batch":
        raise UnsupportedError("Learner.presentation: a DualSystem learns with batch "
                               f"presentation (got {learner.presentation!r})")
    if learner.engine != "numpy":
        raise UnsupportedError("Learner.engine: a DualSystem runs on the numpy engine "
                               f"(got {learner.engine!r})")
    if getattr(learner, "substeps", 1) != 1:
        raise UnsupportedError("Learner.substeps: a DualSystem learns with one step per dt "
                               f"(got {learner.substeps!r}); choose a smaller dt")
    if learner.rule == "delta" and model.fast != ("readout",):
        raise UnsupportedError(
            "Learner.rule: 'delta' is local to the readout; a DualSystem with fast "
            f"{list(model.fast)} needs rule='backprop' (got 'delta')")
    if record is None:
        record = ()
    if isinstance(record, str):
        record = (record,)
    if not isinstance(record, (list, tuple, set)):
        P.fail(O, "record", "must be a name or a list of names of 'phi', 'loss' (what a "
               "DualSystem records)", repr(record))
    for r in record:
        P.choice(r, O, "record", ("phi", "loss"))
    record_every = P.integer(record_every, O, "record_every", low=1)
    inp, batched, K = learner.phase_input(model, x, y, x_val, y_val, beta)
    B = inp.X.shape[0]
    if phi_init is not None and (not isinstance(phi_init, (list, tuple))
                                 or len(phi_init) != len(model.phi0)):
        P.fail(O, "phi_init", f"must be a list of {len(model.phi0)} arrays "
               f"({', '.join(model.fast_names)})", type(phi_init).__name__ if not isinstance(
                   phi_init, (list, tuple)) else f"{len(phi_init)} arrays")
    phi = []
    for i, (name, p0) in enumerate(zip(model.fast_names, model.phi0)):
        p = p0 if phi_init is None else np.asarray(phi_init[i], dtype=np.float64)
        if p.shape == p0.shape:
            p = np.broadcast_to(p, (B,) + p0.shape)
        elif p.shape != (B,) + p0.shape:
            P.fail(O, f"phi_init[{i}]", f"({name}) must have shape {p0.shape} or "
                   f"{(B,) + p0.shape}", f"shape {p.shape}")
        phi.append(np.array(p, dtype=np.float64))
    phi, settled, t_end, steps, rec_t, rec = run_phase(
        model, learner, inp, phi, tuple(record), record_every, float(beta), K)
    warn_not_settled(learner, settled, t_end, stacklevel=3)
    sq = (lambda a: a) if batched else (lambda a: a[0])
    sq_t = (lambda a: a) if batched else (lambda a: a[:, 0])
    out_rec = {}
    if "phi" in rec:
        out_rec["phi"] = [readonly(sq_t(np.stack(s))) for s in zip(*rec["phi"])]
    if "loss" in rec:
        out_rec["loss"] = readonly(sq_t(np.stack(rec["loss"])))
    layers, yhat = model.forward(inp.X, phi)
    return LearningResult(
        phi=[readonly(sq(p)) for p in phi], bias=[None] * len(phi),
        v=[readonly(sq(u)) for _, u, _ in layers] + [readonly(sq(yhat))],
        t=readonly(np.array(rec_t)), record=out_rec,
        settled=readonly(settled) if batched else bool(settled[0]),
        t_end=float(t_end), steps=int(steps), phi_aug=[readonly(sq(p)) for p in phi])


def default_learner(tol):
    from .learning import Learner

    return Learner(rule="backprop", presentation="batch", integrator="expeuler", tol=tol)


# ---------------------------------------------------------------------- CML
def cml_estimate(cml, model, task, reduce="mean"):
    """:meth:`CML.estimate` for a :class:`DualSystem`.

    ``ĝ = Σ_j (w_j/β) ∂θ F(φ_j, θ, m_j β)`` over the estimator's phases j (nudging
    multiple ``m_j``, weight ``w_j``), with :func:`inner_partials` -- every term is local
    to a synapse (W: contrastive Hebbian product) or to a fast variable (φ₀, λ).
    """
    from .cml import ESTIMATORS, CMLResult

    xt, yt, xv, yv = task.as_batch()
    B, K = xt.shape[:2]
    V = xv.shape[1]
    free_l, nudged_l = cml.learners(model)
    phi0 = [np.asarray(p) for p in free_l.run(model, xt, yt).phi_aug]
    states = {0.0: phi0}
    for mult, _ in ESTIMATORS[cml.estimator]:
        if mult != 0.0:
            b = mult * cml.beta
            res = nudged_l.run(model, xt, yt, x_val=xv, y_val=yv, beta=b, phi_init=phi0)
            states[b] = [np.asarray(p) for p in res.phi_aug]
    X = np.concatenate([xt, xv], axis=1)
    Y = np.concatenate([yt, yv], axis=1)
    grad = None
    for mult, weight in ESTIMATORS[cml.estimator]:
        b = mult * cml.beta
        c = np.concatenate([np.full((B, K), 1.0 / K), np.full((B, V), b / V)], axis=1)
        part = inner_partials(model, states[b], X, Y, c)
        s = weight / cml.beta
        grad = ({k: [s * a for a in v] for k, v in part.items()} if grad is None else
                {k: [g + s * a for g, a in zip(grad[k], part[k])] for k in grad})
    grad = {k: [_reduce(a, reduce, task.batched) for a in v] for k, v in grad.items()}
    loss_t = _mean_loss(model, xt, yt, phi0)
    loss_v = _mean_loss(model, xv, yv, phi0)
    return CMLResult(grad, phi0, {k: v for k, v in states.items() if k != 0.0}, loss_t,
                     loss_v)


def _reduce(a, reduce, batched):
    if reduce == "mean":
        return a.mean(axis=0)
    return a if batched else a[0]


def _mean_loss(model, x, y, phi):
    out = model.predict(x, phi)
    return 0.5 * ((out - y) ** 2).sum(axis=-1).mean(axis=-1)


# ---------------------------------------------------------------------- exact reference
_H = 1e-20   # complex step: exact first derivatives to rounding (no subtraction)


def _pack(arrs):
    B = arrs[0].shape[0]
    return np.concatenate([a.reshape(B, -1) for a in arrs], axis=-1)


def _unpack(vec, like):
    sizes = [int(np.prod(a.shape[1:])) for a in like]
    parts = np.split(vec, np.cumsum(sizes)[:-1], axis=-1)
    lead = vec.shape[:-1]
    return [p.reshape(lead + a.shape[1:]) for p, a in zip(parts, like)]


def _grad_in(model, phi, X, Y, c):
    """Packed ``∂φ L_in`` (B, P)."""
    _, grads = objective_grads(model, phi, X, Y, c, analytic=True)
    return _pack([g + lm * (p - p0) for g, lm, p, p0 in
                  zip(_fast_part(model, grads), model.lam, phi, model.phi0)])


def _hessian(model, phi, X, Y, c, chunk=64):
    """Dense ``∂²φφ L_in`` per task (B, P, P) by complex-step derivatives of the
    backprop gradient (exact to rounding)."""
    B = X.shape[0]
    Pn = sum(int(np.prod(p.shape[1:])) for p in phi)
    H = np.empty((B, Pn, Pn))
    for lo in range(0, Pn, chunk):
        hi = min(Pn, lo + chunk)
        E = np.zeros((hi - lo, B, Pn))
        E[np.arange(hi - lo), :, np.arange(lo, hi)] = 1.0
        pert = [p + 1j * _H * e for p, e in zip(phi, _unpack(E, phi))]
        _, grads = objective_grads(model, pert, X, Y, c, analytic=True)
        hv = _pack_lead(_fast_part(model, grads), hi - lo, B).imag / _H
        H[:, :, lo:hi] = np.moveaxis(hv, 0, -1)
    H += np.stack([np.diag(l) for l in _pack([np.broadcast_to(lm, (B,) + lm.shape)
                                               for lm in model.lam])])
    return 0.5 * (H + np.swapaxes(H, -1, -2))


def _pack_lead(arrs, n, B):
    return np.concatenate([a.reshape(n, B, -1) for a in arrs], axis=-1)


def fixed_point(model, x, y, learner=None, tol=1e-12, newton_steps=3):
    """The settled free state φ* of tasks ``(x, y)`` (B, K, ...), found by the learning
    process and polished with Newton steps (dense Hessian): exact to rounding."""
    from .learning import Learner

    learner = learner if learner is not None else default_learner(tol)
    if not isinstance(learner, Learner):
        P.fail("fixed_point", "learner", "must be a Learner", type(learner).__name__)
    res = learner.run(model, x, y)
    phi = [np.array(p) for p in res.phi_aug]
    B, K = x.shape[:2]
    c = np.full((B, K), 1.0 / K)
    for _ in range(newton_steps):
        step = np.linalg.solve(_hessian(model, phi, x, y, c),
                               _grad_in(model, phi, x, y, c)[..., None])[..., 0]
        phi = [p - s for p, s in zip(phi, _unpack(step, phi))]
    return phi


def exact_meta_gradient(model, task, learner=None, tol=1e-12, newton_steps=3,
                        reduce="mean"):
    """Exact ``dL_out(φ*(θ), θ)/dθ`` of a :class:`DualSystem` by implicit
    differentiation::

        dL_out/dθ = ∂θ L_out(φ*) − (∂²φθ L_in)ᵀ u,      H u = ∇φ L_out(φ*),  H = ∂²φφ L_in

    so that ``dL_out/dφ₀ = λ ⊙ u``, ``dL_out/dλ = −(φ* − φ₀) ⊙ u`` and, for the slow
    weights, ``∂W L_out − ∂/∂ε ∂W L_trn(φ* + ε u)``. Second derivatives are complex-step
    derivatives of the backprop gradient (exact to rounding; the rate function must be
    analytic). A verification tool for CML, which uses none of this.
    """
    from .tasks import Task

    if not isinstance(model, DualSystem):
        P.fail("exact_meta_gradient", "net", "must be a DualSystem", type(model).__name__)
    if not isinstance(task, Task):
        P.fail("exact_meta_gradient", "task", "must be a Task", type(task).__name__)
    P.choice(reduce, "exact_meta_gradient", "reduce", ("mean", "none"))
    _analytic(model)
    xt, yt, xv, yv = task.as_batch()
    B, K = xt.shape[:2]
    V = xv.shape[1]
    phi = fixed_point(model, xt, yt, learner, tol, newton_steps)
    c_t, c_v = np.full((B, K), 1.0 / K), np.full((B, V), 1.0 / V)
    _, g_out = objective_grads(model, phi, xv, yv, c_v, analytic=True)
    u = np.linalg.solve(_hessian(model, phi, xt, yt, c_t),
                        _pack(_fast_part(model, g_out))[..., None])[..., 0]
    scale = np.abs(u).max(axis=-1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    u_list = _unpack(u / scale, phi)
    pert = [p + 1j * _H * d for p, d in zip(phi, u_list)]
    _, g_mixed = objective_grads(model, pert, xt, yt, c_t, analytic=True)
    out = {}
    sc = lambda a: a * scale.reshape((B,) + (1,) * (a.ndim - 1))  # noqa: E731
    slow = ["W"] + [g for g in ("gain", "bias", "readout") if g not in model.fast]
    for k in slow:
        out[k] = [go - sc(gm.imag / _H) for go, gm in zip(g_out[k], g_mixed[k])]
    u_real = _unpack(u, phi)
    for (g, l), du, p, p0, lm in zip(model._fast_index(), u_real, phi, model.phi0, model.lam):
        out.setdefault(g, []).append(lm * du)
        if model.learn_lam:
            out.setdefault("lam_" + g, []).append(-(p - p0) * du)
    return {k: [_reduce(a, reduce, task.batched) for a in out[k]] for k in model._theta}


def outer_loss(model, task, learner=None, tol=1e-12, newton_steps=3):
    """``L_out(φ*(θ), θ)`` averaged over the tasks (for finite-difference checks)."""
    xt, yt, xv, yv = task.as_batch()
    phi = fixed_point(model, xt, yt, learner, tol, newton_steps)
    return float(_mean_loss(model, xv, yv, phi).mean())
