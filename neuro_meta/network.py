"""RateNetwork: layers of rate neurons connected by (complex or static) synapses.

Conventions: weight matrices are (n_post, n_pre), ``v = W @ r_pre + b``; layer 0 is the
input layer, whose rates are the data. Internally a connection's weights and biases are
kept together as one *augmented* matrix of shape (n_post, n_pre + 1) -- a bias is a
synapse from a unit of constant rate 1 -- so the learning rule and the meta-update treat
them alike.
"""
from dataclasses import dataclass, replace

import numpy as np

from ._params import fail, integer, to_seconds, finite_array
from .activations import get_activation
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


class RateNetwork:
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
    """

    def __init__(self, sizes, activation="tanh", synapse=None, bias=True,
                 tau_neuron=0.01, tau_synapse=1.0, seed=None):
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
            fail("RateNetwork", "bias", "must be True or False", repr(bias))
        self.bias = bool(bias)
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
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
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
        new = object.__new__(RateNetwork)
        new.__dict__.update(self.__dict__)
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
        (pre-activation v, rate r) per non-input layer.
        """
        phi = [c.phi0 for c in self.connections] if phi is None else phi
        r = np.asarray(x, dtype=np.float64)
        out = []
        for c, act, p in zip(self.connections, self.activations, phi):
            v = drive(p, r, c)
            r = act.f(v)
            out.append((v, r))
        return out

    def predict(self, x, phi=None):
        """Output rates for inputs ``x`` at fast weights ``phi`` (default: initial)."""
        return self.forward(x, phi)[-1][1]

    def __repr__(self):
        # unique by identity: synapses hold arrays and are not hashable
        syn = ", ".join(repr(s) for s in {id(s): s for s in self.synapses}.values())
        return (f"RateNetwork(sizes={list(self.sizes)}, activation="
                f"{[a.name for a in self.activations]}, synapse={syn}, bias={self.bias}, "
                f"tau_neuron={self.tau_neuron}, tau_synapse={self.tau_synapse})")

    def to_brian2(self, **kwargs):
        """Export the network as a ``brian2.Network`` (see :mod:`neuro_meta.engines.brian2`)."""
        from .engines.brian2_engine import network_to_brian2

        return network_to_brian2(self, **kwargs)


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
