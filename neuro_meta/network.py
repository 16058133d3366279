"""RateNetwork: layers of rate neurons connected by (complex or static) synapses.

Conventions: weight matrices are (n_post, n_pre), ``v = W @ r_pre + b``; layer 0 is the
input layer, whose rates are the data. Internally a connection's weights and biases are
kept together as one *augmented* matrix of shape (n_post, n_pre + 1) -- a bias is a
synapse from a unit of constant rate 1 -- so the learning rule and the meta-update treat
them alike.
"""
from dataclasses import dataclass, replace

import numpy as np

from ._params import (DATA_LIMIT, check_bytes, dimensionless, fail, finite_array, integer,
                      is_quantity, rng_from_seed, shown, to_seconds)
from .activations import get_activation
from .errors import ValidationError
from .kind import ModelKind, check_fast_values, check_output, pull_partials, trial_states
from .losses import get_loss
from .synapses import ComplexSynapse, StaticSynapse, resolve


@dataclass(frozen=True)
class Connection:
    """A resolved connection (layer ``index`` -> ``index + 1``); arrays are augmented."""

    index: int
    n_pre: int
    n_post: int
    has_bias: bool
    plastic: bool
    phi0: np.ndarray           # initial fast weights, (n_post, n_pre + has_bias)
    omega: np.ndarray = None   # consolidated weights (complex synapses only)
    lam: np.ndarray = None     # consolidation strengths (complex synapses only)
    phi0_is_omega: bool = True

    @property
    def shape(self):
        return (self.n_post, self.n_pre + int(self.has_bias))


def _readonly(a):
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


class RateNetwork(ModelKind):
    """A feed-forward network of rate neurons with plastic synapses.

    Parameters
    ----------
    sizes : sequence of int
        Number of units per layer, input layer first, e.g. ``[5, 2]`` or ``[1, 40, 40, 1]``.
    activation : str, Activation or sequence of them
        Rate function of each non-input layer (one for all, or one per layer):
        ``"linear"``, ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"softplus"``.
    synapse : ComplexSynapse, StaticSynapse or sequence of them
        The synapse model of every connection (one shared description, its initialisers
        drawn separately per connection) or one per connection.
        Default: ``ComplexSynapse(omega=Glorot(), lam=1.0)``.
    bias : bool
        Whether units of non-input layers have a bias (a synapse from a unit of rate 1,
        following the connection's synapse model).
    tau_neuron : float or Brian2 quantity
        Membrane time constant τ_v (seconds), ``τ_v dv/dt = -v + W r_pre + b``. ``0`` makes
        the neurons instantaneous (``v`` always at its steady state).
    tau_synapse : float or Brian2 quantity
        Time constant τ_φ (seconds) of the fast weights.
    seed : int or numpy.random.Generator, optional
        Seed for the initialisers.
    loss : str or loss object
        Loss of the learning process: ``"squared_error"`` (default, regression) or
        ``"cross_entropy"`` (soft-max cross-entropy of the output layer's rates taken as
        logits, for classification with one-hot targets -- use a ``"linear"`` output
        activation); see :mod:`neuro_meta.losses`.

    Notes
    -----
    ``synapses`` keeps the synapse descriptions the network was built from (their
    initial values or initialisers); the meta-parameters the network holds now -- after
    :meth:`with_theta`, e.g. meta-learned -- are :attr:`theta`, and the repr of such a
    network shows them (shapes, and each λ's value or range), not the descriptions.
    """

    def __init__(self, sizes, activation="tanh", synapse=None, bias=True,
                 tau_neuron=0.01, tau_synapse=1.0, seed=None, loss="squared_error"):
        from .initializers import Glorot

        try:
            if isinstance(sizes, (str, bytes)):
                raise TypeError
            sizes = [integer(s, "RateNetwork", "sizes", low=1) for s in sizes]
        except TypeError:
            fail("RateNetwork", "sizes", "must be a sequence of layer sizes", repr(sizes))
        if len(sizes) < 2:
            fail("RateNetwork", "sizes", "needs at least an input and an output layer",
                 repr(sizes))
        for n_pre, n_post in zip(sizes[:-1], sizes[1:]):
            check_bytes(n_post * (n_pre + 1), "RateNetwork", "sizes",
                        f"of shape ({n_post}, {n_pre + 1}) for a connection", repr(sizes))
        # the whole model: ω, λ and φ of every connection (each connection may pass alone)
        n_params = sum(n_post * (n_pre + 1) for n_pre, n_post in zip(sizes[:-1], sizes[1:]))
        check_bytes(3 * n_params, "RateNetwork", "sizes", f"of {n_params} parameters x 3 "
                    "(ω, λ and φ of every connection)", repr(sizes))
        self.sizes = tuple(sizes)
        n_conn = len(sizes) - 1
        if isinstance(activation, (list, tuple)):
            if len(activation) != n_conn:
                fail("RateNetwork", "activation", f"needs one activation per non-input layer "
                     f"({n_conn})", f"{len(activation)} activations")
            self.activations = tuple(get_activation(a, "RateNetwork", f"activation[{i}]")
                                     for i, a in enumerate(activation))
        else:
            self.activations = (get_activation(activation),) * n_conn
        if not isinstance(bias, (bool, np.bool_)):
            fail("RateNetwork", "bias", "must be True or False", shown(bias))
        self.bias = bool(bias)
        self.loss = get_loss(loss, "RateNetwork", "loss")
        self.tau_neuron = to_seconds(tau_neuron, "RateNetwork", "tau_neuron", allow_zero=True)
        self.tau_synapse = to_seconds(tau_synapse, "RateNetwork", "tau_synapse")
        if synapse is None:
            synapse = ComplexSynapse(omega=Glorot(), lam=1.0)
        if isinstance(synapse, (list, tuple)):
            if len(synapse) != n_conn:
                fail("RateNetwork", "synapse", f"needs one synapse per connection ({n_conn})",
                     f"{len(synapse)} synapses")
            synapses = list(synapse)
        else:
            synapses = [synapse] * n_conn
        for i, s in enumerate(synapses):
            if not isinstance(s, (ComplexSynapse, StaticSynapse)):
                fail("RateNetwork", f"synapse[{i}]", "must be a ComplexSynapse or StaticSynapse",
                     repr(s))
        self.synapses = tuple(synapses)
        self.seed = seed
        rng = rng_from_seed(seed, "RateNetwork")
        self.connections = tuple(self._resolve(i, s, rng) for i, s in enumerate(synapses))

    # ------------------------------------------------------------------ construction
    def _resolve(self, i, syn, rng):
        n_pre, n_post = self.sizes[i], self.sizes[i + 1]
        owner = f"RateNetwork.synapse[{i}]"
        wshape, bshape = (n_post, n_pre), (n_post,)

        def aug(w, b):
            return np.concatenate([w, b[:, None]], axis=1) if self.bias else w

        if isinstance(syn, StaticSynapse):
            w = resolve(syn.weight, wshape, rng, owner, "weight")
            b = resolve(syn.bias, bshape, rng, owner, "bias") if self.bias else None
            return Connection(i, n_pre, n_post, self.bias, False, _readonly(aug(w, b)))
        omega = resolve(syn.omega, wshape, rng, owner, "omega")
        lam = resolve(syn.lam, wshape, rng, owner, "lam", min_value=0.0)
        if self.bias:
            ob = resolve(syn.omega_bias, bshape, rng, owner, "omega_bias")
            lb_spec = syn.lam_bias
            if lb_spec is None:
                lb_spec = (np.asarray(float(np.mean(lam))) if not (
                    isinstance(syn.lam, np.ndarray) and syn.lam.ndim == 0) else syn.lam)
            lb = resolve(lb_spec, bshape, rng, owner, "lam_bias", min_value=0.0)
        else:
            ob = lb = None
        omega_a, lam_a = aug(omega, ob), aug(lam, lb)
        if syn.phi0 is None:
            phi0, follows = omega_a, True
        else:
            p = resolve(syn.phi0, wshape, rng, owner, "phi0")
            phi0, follows = aug(p, ob), False
        return Connection(i, n_pre, n_post, self.bias, True, _readonly(phi0),
                          _readonly(omega_a), _readonly(lam_a), follows)

    # ------------------------------------------------------------------ meta-parameters
    @property
    def n_connections(self):
        return len(self.connections)

    @property
    def theta(self):
        """Meta-parameters, one entry per connection (``None`` for static synapses or
        absent biases): ``{"omega": [...], "lam": [...], "omega_bias": [...], "lam_bias":
        [...]}``. Arrays are copies."""
        out = {"omega": [], "lam": [], "omega_bias": [], "lam_bias": []}
        for c in self.connections:
            for key, arr in (("omega", c.omega), ("lam", c.lam)):
                if arr is None:
                    out[key].append(None)
                    out[key + "_bias"].append(None)
                else:
                    w, b = split_aug(arr, c)
                    out[key].append(w.copy())
                    out[key + "_bias"].append(None if b is None else b.copy())
        return out

    def with_theta(self, theta):
        """A copy of the network with new meta-parameters (same structure as ``theta``)."""
        check_theta(self, theta)
        new = object.__new__(RateNetwork)
        new.__dict__.update(self.__dict__, _theta_given=True)   # (its repr shows theta)
        conns = []
        for i, c in enumerate(self.connections):
            if not c.plastic:
                conns.append(c)
                continue
            parts = {}
            for key, min_value in (("omega", None), ("lam", 0.0)):
                owner = "RateNetwork.with_theta"
                w = finite_array(theta[key][i], owner, f"{key}[{i}]", shape=(c.n_post, c.n_pre),
                                 min_value=min_value)
                if c.has_bias:
                    b = finite_array(theta[key + "_bias"][i], owner, f"{key}_bias[{i}]",
                                     shape=(c.n_post,), min_value=min_value)
                    w = np.concatenate([w, b[:, None]], axis=1)
                parts[key] = _readonly(w)
            phi0 = parts["omega"] if c.phi0_is_omega else c.phi0
            conns.append(replace(c, omega=parts["omega"], lam=parts["lam"], phi0=phi0))
        new.connections = tuple(conns)
        return new

    # ------------------------------------------------------------------ evaluation
    def forward(self, x, phi=None):
        """Steady-state rates of every layer for inputs ``x`` (..., n_in).

        ``phi``: augmented fast weights per connection (default: initial weights), each
        possibly with leading task axis (tasks, n_post, n_pre[+1]). Returns the list of
        (pre-activation v, rate r) per non-input layer. ``x`` must be real and finite
        with ``n_in`` values on its last axis, ``phi`` one real array per connection of
        its shape and finite (:class:`~neuro_meta.errors.ValidationError` otherwise); an
        output that overflows is a :class:`~neuro_meta.errors.SimulationError`.
        """
        r = check_input(self, x, "RateNetwork.forward")
        if phi is None:
            phi = [c.phi0 for c in self.connections]
        else:
            phi = check_phi(self, phi, "RateNetwork.forward")
            check_task_axes(r, phi, "RateNetwork.forward")
            check_fast_values(phi, range(len(phi)), "RateNetwork.forward", "phi")
        out = []
        with np.errstate(over="ignore", invalid="ignore"):     # check_output says it
            for c, act, p in zip(self.connections, self.activations, phi):
                v = drive(p, r, c)
                r = act.f(v)
                out.append((v, r))
        for i, (v, r) in enumerate(out, 1):     # every layer returned (a hidden one can
            O = "RateNetwork.forward"           # overflow alone)
            last = i == len(out)
            check_output(v, O, "the output's pre-activations" if last
                         else f"layer {i}'s pre-activations")
            check_output(r, O, "the output" if last else f"layer {i}'s rates")
        return out

    def predict(self, x, phi=None):
        """Output rates for inputs ``x`` at fast weights ``phi`` (default: initial)."""
        return self.forward(x, phi)[-1][1]

    def __repr__(self):
        if self.__dict__.get("_theta_given"):      # the meta-parameters it holds now
            syn = "[" + ", ".join(_held(c) for c in self.connections) + "]"
        else:   # unique by identity: synapses hold arrays and are not hashable
            syn = ", ".join(repr(s) for s in {id(s): s for s in self.synapses}.values())
        return (f"RateNetwork(sizes={list(self.sizes)}, activation="
                f"{[a.name for a in self.activations]}, synapse={syn}, bias={self.bias}, "
                f"tau_neuron={self.tau_neuron}, tau_synapse={self.tau_synapse}"
                + (f", loss={self.loss.name!r})" if self.loss.name != "squared_error" else ")"))

    # ------------------------------------------------------------------ model kind
    rules = ("delta", "backprop")
    probeable = ("phi", "bias", "v", "r", "loss")
    tau_fast_name = "tau_synapse"

    @property
    def tau_fast(self):
        """τ_φ (the protocol's fast time constant): :attr:`tau_synapse`."""
        return self.tau_synapse

    @property
    def fast_names(self):
        """One fast array per connection (augmented: weights and bias column)."""
        return [f"connection[{c.index}]" for c in self.connections]

    @property
    def phi0(self):
        return [c.phi0 for c in self.connections]

    @property
    def plastic(self):
        return [c.plastic for c in self.connections]

    @property
    def lam(self):
        return [c.lam for c in self.connections]

    @property
    def anchor(self):
        return [c.omega for c in self.connections]

    def layered(self):
        return self

    def default_rule(self):
        """``"delta"`` when only the output connection is plastic, else ``"backprop"``."""
        return "delta" if not any(self.plastic[:-1]) else "backprop"

    def check_rule(self, rule):
        plastic = self.plastic
        if not any(plastic):
            fail("Learner.run", "net", "has no plastic connection: use a ComplexSynapse",
                 repr(self))
        if rule == "delta" and any(plastic[:-1]):
            raise ValidationError(
                "Learner.rule: 'delta' is local to the output connection, so the "
                "connections before it must be StaticSynapse; use rule='backprop' for a "
                "multi-layer plastic network (got 'delta' with plastic connections "
                f"{[i for i, p in enumerate(plastic[:-1]) if p]}, sizes {list(self.sizes)})")

    def curvature(self, inp):
        """Bound of the output layer's data curvature: the mean squared presynaptic rate
        (plus 1 for the bias), summed over the presented samples' weights, times the
        output activation's slope at 0."""
        if inp is None:
            return 1.0
        with trial_states():    # an overflow here is the engine's to report, with its step
            r_pre = inp.X if len(self.connections) == 1 else self.forward(inp.X)[-2][1]
        sq = (r_pre ** 2).sum(axis=-1) + (1.0 if self.connections[-1].has_bias else 0.0)
        weights = np.abs(inp.c)
        if inp.presentation == "online":
            weights = weights * inp.n_samples
            curv = float((sq * weights).max())
        else:
            curv = float((sq * weights).sum(axis=-1).max())
        return curv * float(np.max(np.abs(self.activations[-1].df(np.zeros(1)))) or 1.0)

    # -- dynamics -------------------------------------------------------------------
    def currents(self, phi, v, x):
        """Synaptic currents of every layer, with rates taken from the state ``v``
        (or, for instantaneous neurons, from the currents of the layer below)."""
        r = x
        out = []
        for l, (c, act) in enumerate(zip(self.connections, self.activations)):
            i_l = drive(phi[l], r, c)
            out.append(i_l)
            r = act.f(v[l] if self.tau_neuron > 0 else i_l)
        return out

    def neurons(self, phi, x):
        """Neuron potentials at steady state for inputs ``x`` (instantaneous chain)."""
        r = x
        out = []
        for c, act, p in zip(self.connections, self.activations, phi):
            v = drive(p, r, c)
            out.append(v)
            r = act.f(v)
        return out

    def forces(self, phi, v, x, y, c, rule="backprop"):
        """``Σ_s c_s δ_s [r_pre,s; 1]ᵀ`` per plastic connection (None for static ones):
        ``δ`` is ``−∂ℓ/∂v`` at the output, ``(y − r) f′(v)`` (the delta rule), and with
        ``backprop`` ``(Wᵀ δ_above) f′(v)`` in hidden layers."""
        acts = self.activations
        rates = [x] + [act.f(vl) for act, vl in zip(acts, v)]
        L = len(self.connections)
        delta = -self.loss.error(rates[L], y) * acts[-1].df(v[-1]) * c[..., None]
        out = [None] * L
        for l in range(L - 1, -1, -1):
            conn = self.connections[l]
            if conn.plastic:
                g = np.matmul(np.swapaxes(delta, -1, -2), rates[l])
                if conn.has_bias:
                    g = np.concatenate([g, delta.sum(axis=-2)[..., None]], axis=-1)
                out[l] = g
            if l > 0 and rule == "backprop":
                w, _ = split_aug(phi[l], conn)
                delta = np.matmul(delta, w) * acts[l - 1].df(v[l - 1])
            elif l > 0:
                delta = np.zeros_like(v[l - 1])
        return out

    # -- results ----------------------------------------------------------------------
    def rates(self, potentials):
        return [act.f(a) for act, a in zip(self.activations, potentials)]

    def split_fast(self, arrays):
        """Weights and biases per connection from augmented arrays."""
        ws, bs = [], []
        for c, a in zip(self.connections, arrays):
            w, b = split_aug(a, c)
            ws.append(w)
            bs.append(b)
        return ws, bs

    # -- meta-learning ----------------------------------------------------------------
    def _theta_like(self, per_conn):
        """Per-connection augmented pairs (ω part, λ part) in the structure of theta."""
        out = {"omega": [], "lam": [], "omega_bias": [], "lam_bias": []}
        for c, pair in zip(self.connections, per_conn):
            for key, a in zip(("omega", "lam"), pair if pair is not None else (None, None)):
                w, b = (None, None) if a is None else split_aug(a, c)
                out[key].append(w)
                out[key + "_bias"].append(b)
        return out

    def theta_partials(self, phi, X, Y, c):
        """``∂ω F = −λ (φ − ω)`` and ``∂λ F = ½ (φ − ω)²`` per synapse (the data term
        does not depend on ω or λ): local to every synapse."""
        return self._theta_like([pull_partials(p, k.omega, k.lam) if k.plastic else None
                                 for k, p in zip(self.connections, phi)])

    def data_grad(self, phi, X, Y, c=None):
        return grad_hvp(self, phi, X, Y, c=c)[1]

    def data_hvp(self, phi, X, Y, V, c=None):
        """Exact Hessian-vector products (Pearlmutter's R-operator, :func:`grad_hvp`)."""
        return grad_hvp(self, phi, X, Y, V, c=c)[2]

    def data_hvp_at(self, phi, X, Y, c=None):
        """The Hessian-vector product at ``phi`` as a function of the directions, the
        forward and backward pass done once (:class:`Linearization`)."""
        return Linearization(self, phi, X, Y, c).hvp

    def theta_partials_out(self, phi, X, Y):
        """Zero: ω and λ enter only the pull, not the network's output."""
        return None

    def cross(self, phi, u, X, Y):
        """``∂/∂ε ∂θ F(φ + ε u)``: ``−λ u`` for ω and ``(φ − ω) u`` for λ."""
        return self._theta_like([(-k.lam * d, (p - k.omega) * d) if k.plastic else None
                                 for k, p, d in zip(self.connections, phi, u)])

    def to_brian2(self, x=None, y=None, *, x_val=None, y_val=None, beta=0.0,
                  presentation="online", presentation_time=None, dt=None, phi_init=None):
        """Export the network as a ``brian2.Network`` learning ``(x, y)`` (see
        :func:`neuro_meta.engines.brian2_engine.network_to_brian2`, whose arguments these
        are)."""
        from .engines.brian2_engine import network_to_brian2

        return network_to_brian2(self, x, y, x_val=x_val, y_val=y_val, beta=beta,
                                 presentation=presentation,
                                 presentation_time=presentation_time, dt=dt,
                                 phi_init=phi_init)


def check_input(net, x, owner):
    """Validated inputs ``x`` (..., n_in) of ``net``: real, finite, the input layer's
    size on the last axis."""
    x = finite_array(x, owner, "x", max_abs=DATA_LIMIT)
    if x.ndim < 1 or x.shape[-1] != net.n_in:
        fail(owner, "x", f"last axis must match the network's input layer ({net.n_in} "
             "units)", f"shape {x.shape}")
    return x


def check_task_axes(x, phi, owner):
    """The leading (task) axes of inputs ``x`` (..., samples, n_in) and of each fast
    weight array in ``phi`` (..., n_post, n_pre[+1]) must broadcast (numpy's matmul
    error from inside otherwise). Shapes only."""
    lead = np.shape(x)[:-2]
    for i, a in enumerate(phi):
        try:
            np.broadcast_shapes(lead, np.shape(a)[:-2])
        except ValueError:
            fail(owner, "x", f"must have leading (task) axes that match phi[{i}]'s "
                 f"{np.shape(a)[:-2]} (x: (tasks, samples, inputs))",
                 f"shape {np.shape(x)}")


def check_phi(net, phi, owner):
    """Fast weights given to :meth:`RateNetwork.forward`: one real array per connection
    of its augmented shape (n_post, n_pre[+1]), possibly with leading task axes. Their
    values are checked by the caller (:func:`~neuro_meta.kind.check_fast_values`, which
    lets the engines and the phase solver evaluate trial states, non-finite ones
    included, within :func:`~neuro_meta.kind.trial_states`)."""
    conns = net.connections
    if not isinstance(phi, (list, tuple)) or len(phi) != len(conns):
        fail(owner, "phi", f"must be a list of {len(conns)} arrays (augmented weights per "
             "connection)", type(phi).__name__ if not isinstance(phi, (list, tuple))
             else f"{len(phi)} arrays")
    out = []
    for i, (p, c) in enumerate(zip(phi, conns)):
        if is_quantity(p):          # an ndarray subclass: 10*mV is not 0.01
            dimensionless(p, owner, f"phi[{i}]")
        if isinstance(p, np.ndarray) and p.dtype.kind == "f":
            a = p
        else:
            try:
                a = np.asarray(p)
                ok = a.dtype.kind in "biuf"
            except Exception:
                ok = False
            if not ok:
                fail(owner, f"phi[{i}]", "must be an array of real numbers",
                     type(p).__name__ + (f" of dtype {a.dtype}" if isinstance(
                         p, np.ndarray) else ""))
        if a.ndim < 2 or a.shape[-2:] != c.shape:
            fail(owner, f"phi[{i}]", f"must have shape {c.shape} (n_post, n_pre"
                 f"{' + 1' if c.has_bias else ''}), with optional leading task axes",
                 f"shape {a.shape}")
        out.append(a)
    return out


def check_theta(net, theta):
    """``theta`` for :meth:`RateNetwork.with_theta`: a dict with the keys of
    ``net.theta``, one entry per connection (None for static connections and absent
    biases)."""
    O = "RateNetwork.with_theta"
    keys = ("omega", "lam", "omega_bias", "lam_bias")
    if not isinstance(theta, dict) or any(k not in theta for k in keys):
        fail(O, "theta", f"must be a dict with keys {list(keys)} (like net.theta)",
             sorted(map(str, theta)) if isinstance(theta, dict) else type(theta).__name__)
    extra = [k for k in theta if k not in keys]
    if extra:                   # a mistyped key would be ignored, its values unused
        fail(O, "theta", f"must have only the keys {list(keys)} (like net.theta)",
             f"also {shown(extra[0])}")
    n = len(net.connections)
    for k in keys:
        if not isinstance(theta[k], (list, tuple)) or len(theta[k]) != n:
            fail(O, k, f"must be a list of {n} entries (one per connection)",
                 type(theta[k]).__name__ if not isinstance(theta[k], (list, tuple))
                 else f"{len(theta[k])} entries")
    for i, c in enumerate(net.connections):
        for k in keys:
            needed = c.plastic and (c.has_bias or not k.endswith("_bias"))
            if needed and theta[k][i] is None:
                fail(O, f"{k}[{i}]", "must be an array (the connection is plastic)", "None")
            if not needed and theta[k][i] is not None:     # it would be ignored
                why = "has no biases" if c.plastic else "is static"
                fail(O, f"{k}[{i}]", f"must be None (the connection {why}, as in "
                     "net.theta)", shown(theta[k][i]))


def _held(conn):
    """A connection's synapse as it is now: ω's shape, λ's value (or range)."""
    if not conn.plastic:
        return "StaticSynapse()"
    omega, _ = split_aug(conn.omega, conn)
    lam = np.asarray(conn.lam)
    lo, hi = float(lam.min()), float(lam.max())
    lam_text = f"{lo:.6g}" if lo == hi else f"array{omega.shape} in [{lo:.3g}, {hi:.3g}]"
    return f"ComplexSynapse(omega=array{omega.shape}, lam={lam_text})"


def split_aug(arr, conn):
    """Split an augmented (..., n_post, n_pre[+1]) array into weights and biases."""
    if conn.has_bias:
        return arr[..., :conn.n_pre], arr[..., conn.n_pre]
    return arr, None


def drive(phi, r_pre, conn):
    """Synaptic input ``W r_pre + b`` for rates ``r_pre`` (tasks, samples, n_pre) or
    (samples, n_pre), with augmented weights ``phi`` (tasks, n_post, n_pre[+1])."""
    w, b = split_aug(phi, conn)
    v = np.matmul(r_pre, np.swapaxes(w, -1, -2))
    if b is not None:
        v = v + b[..., None, :]
    return v


# ---------------------------------------------------------------------- exact derivatives
def grad_hvp(net, phi, X, Y, V=None, c=None):
    """Gradient (and Hessian-vector product) of ``L = Σ_s c_s ℓ(ŷ_s, y_s)`` with the
    network's loss ℓ (squared error: ``L = Σ_s c_s ½‖ŷ_s − y_s‖²``; default weights
    ``c = 1/S``, the mean).

    ``phi``: augmented weights per connection (B, n_post, n_pre[+1]); ``X`` (B, S, n_in),
    ``Y`` (B, S, n_out); ``V``: directions per connection with optional leading axes
    (..., B, n_post, n_pre[+1]) (``None`` entries = zero). Returns (loss (B,), grads,
    hvps) with per-connection arrays (``hvps`` is None when ``V`` is None).
    """
    lin = Linearization(net, phi, X, Y, c)
    return lin.loss, lin.grads(), (lin.hvp(V) if V is not None else None)


class Linearization:
    """The forward and backward pass of a rate network at ``phi`` on ``X``, ``Y`` (sample
    weights ``c``, default ``1/S``), kept so that the gradient and any number of
    Hessian-vector products (Pearlmutter's R-operator) reuse them: a product then costs
    one forward and one backward pass of the directions only."""

    def __init__(self, net, phi, X, Y, c=None):
        conns, acts = net.connections, net.activations
        L = len(conns)
        S = X.shape[-2]
        rates, pre = [X], []
        for l in range(L):
            a = drive(phi[l], rates[-1], conns[l])
            pre.append(a)
            rates.append(acts[l].f(a))
        err = net.loss.error(rates[-1], Y)
        squared = net.loss.name == "squared_error"
        per = None if squared else net.loss.per_sample(rates[-1], Y)[..., None]
        if c is None:                       # the mean (divided, as before: same bits)
            self.weigh = lambda a: a / S    # noqa: E731
            self.loss = (0.5 * (err ** 2) if squared else per).sum(axis=(-1, -2)) / S
        else:
            cw = np.asarray(c)[..., None]
            self.weigh = lambda a: a * cw   # noqa: E731
            self.loss = self.weigh(0.5 * (err ** 2) if squared else per).sum(axis=(-1, -2))
        self.net, self.phi, self.Y = net, phi, Y
        self.rates, self.pre, self.err = rates, pre, err
        self.df = [acts[l].df(pre[l]) for l in range(L)]
        self._d2f = None
        self.w = [split_aug(phi[l], conns[l])[0] for l in range(L)]
        deltas, backs = [None] * L, [None] * L
        delta = self.weigh(err * self.df[-1])
        for l in range(L - 1, -1, -1):
            deltas[l] = delta
            if l == 0:
                break
            backs[l] = np.matmul(delta, self.w[l])
            delta = backs[l] * self.df[l - 1]
        self.deltas, self.backs = deltas, backs

    @property
    def d2f(self):
        if self._d2f is None:
            acts = self.net.activations
            self._d2f = [acts[l].d2f(self.pre[l]) for l in range(len(acts))]
        return self._d2f

    def grads(self):
        """``∂φ L`` per connection (None: static)."""
        conns = self.net.connections
        return [_outer(d, r, c) if c.plastic else None
                for d, r, c in zip(self.deltas, self.rates, conns)]

    def hvp(self, V):
        """``∇²φ L · V`` per connection; ``V`` as in :func:`grad_hvp`."""
        net, conns, rates = self.net, self.net.connections, self.rates
        L = len(conns)
        Rr = [0.0]
        Ra = []
        for l in range(L):
            a = np.zeros(()) if V[l] is None else _drive_dir(V[l], rates[l], conns[l])
            if not np.isscalar(Rr[l]):
                a = a + np.matmul(Rr[l], np.swapaxes(self.w[l], -1, -2))
            Ra.append(a)
            Rr.append(self.df[l] * a)
        d2f = self.d2f
        Rdelta = self.weigh(net.loss.curvature(rates[-1], self.Y, Rr[L]) * self.df[-1]
                            + self.err * d2f[-1] * Ra[-1])
        hvps = [None] * L
        for l in range(L - 1, -1, -1):
            c = conns[l]
            delta = self.deltas[l]
            if c.plastic:
                h = _outer(Rdelta, rates[l], c)
                if not np.isscalar(Rr[l]):
                    h = h + _outer(delta, Rr[l], c, bias_zero=True)
                hvps[l] = h
            if l == 0:
                break
            Rback = np.matmul(Rdelta, self.w[l])
            if V[l] is not None:
                vw, _ = split_aug(V[l], c)
                Rback = Rback + np.matmul(delta, vw)
            Rdelta = Rback * self.df[l - 1] + self.backs[l] * d2f[l - 1] * Ra[l - 1]
        return hvps


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
