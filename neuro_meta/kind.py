"""The model-kind protocol: what a model *is*, so that one stack can step it, meta-learn
it and verify it.

Every model the package simulates -- :class:`~neuro_meta.RateNetwork`,
:class:`~neuro_meta.DualSystem`, a kind of your own -- subclasses :class:`ModelKind`
and says what it is; the rest is written once against this protocol: the integrators,
settling, sub-steps, recording and divergence checks of every engine
(:mod:`neuro_meta.engines`), the SciPy reference, :class:`~neuro_meta.Learner`, the CML
estimators (:mod:`neuro_meta.cml`), the exact reference (:mod:`neuro_meta.exact`),
meta-training and checkpoints (:mod:`neuro_meta.metatrain`).

A kind has

* **fast variables** φ: a list of arrays (:attr:`~ModelKind.fast_names`, initial values
  :attr:`~ModelKind.phi0`), each either plastic -- pulled towards an anchor with a
  strength λ -- or static (:attr:`~ModelKind.plastic`); during a phase, for B tasks at
  once (a leading task axis on every array)::

      τ dφ/dt = g(φ) − λ ⊙ (φ − anchor),     g = −∂φ Σ_s c_s ℓ(ŷ_s, y_s)

  so that φ settles at a minimum of the inner objective
  ``F = Σ_s c_s ℓ_s + Σ λ/2 (φ − anchor)²`` (``c_s``: 1/K for the K training shots and
  β/V for the V validation points of a nudged phase). The kind supplies ``g``
  (:meth:`~ModelKind.forces`, "the data part"); the pull is the protocol's
  (:func:`pulled`), so that every kind's synapses move the same way;
* **slow meta-parameters** θ (:attr:`~ModelKind.theta`, :meth:`~ModelKind.with_theta`),
  a dict of lists of arrays (``None`` where absent);
* **neurons** (optional): a state ``v`` per sample copy (:meth:`~ModelKind.neurons`, the
  steady state, and with ``tau_neuron > 0`` :meth:`~ModelKind.currents`);
* a **loss** (:mod:`neuro_meta.losses`) and :meth:`~ModelKind.predict`;
* what CML differences between phases: :meth:`~ModelKind.theta_partials` ``= ∂θ F``;
* what the exact reference needs: :meth:`~ModelKind.data_grad`,
  :meth:`~ModelKind.data_hvp` (Hessian-vector products of the data term),
  :meth:`~ModelKind.cross` (``∂/∂ε ∂θ F(φ + ε u)``) and
  :meth:`~ModelKind.theta_partials_out`. The defaults compute the last three by
  complex-step differentiation of :meth:`~ModelKind.forces` and
  :meth:`~ModelKind.theta_partials` (exact to rounding when those are written with
  complex-safe numpy: no ``abs``, ``maximum`` or comparisons of the state);
* what it supports: :attr:`~ModelKind.rules`, :attr:`~ModelKind.probeable` and, for the
  engines that compile or export particular structures, :meth:`~ModelKind.layered`
  (layered rate networks) and :meth:`~ModelKind.gain_layout` (gain-modulated networks).

A kind is a frozen description: ``with_theta`` returns a new object. See
``docs/architecture.md`` for a walk-through with a toy kind.
"""
import contextlib
import contextvars

import numpy as np

from . import _params as P
from .errors import SimulationError, UnsupportedError
from .losses import SQUARED_ERROR

#: Complex step of the default derivatives (no subtraction: exact to rounding).
COMPLEX_STEP = 1e-20


_TRIAL_STATES = contextvars.ContextVar("neuro_meta_trial_states", default=False)


@contextlib.contextmanager
def trial_states():
    """Within this context the kinds' ``predict``/``forward`` evaluate fast variables as
    they are, non-finite ones included: the engines and the phase solver evaluate trial
    states through them and detect a diverging one themselves (a SimulationError with
    the step, or a rejected solver step). :meth:`~neuro_meta.Learner.run` runs its
    engine within it (so a kind's ``forces`` may call its own checking ``predict``), and
    the phase solver evaluates its objective within it. Outside it -- a user's call --
    non-finite fast variables are a ValidationError (:func:`check_fast_values`) and a
    non-finite output a SimulationError (:func:`check_output`)."""
    token = _TRIAL_STATES.set(True)
    try:
        yield
    finally:
        _TRIAL_STATES.reset(token)


def check_fast_values(arrays, names, owner, attr):
    """Fast variables given to a public ``predict``/``forward``: finite (ValidationError
    naming ``owner.attr[name]`` otherwise), unless :func:`trial_states` is active."""
    if _TRIAL_STATES.get():
        return
    for name, a in zip(names, arrays):
        if not np.isfinite(a).all():
            P.finite_array(a, owner, f"{attr}[{name}]")       # raises, with where


def check_output(out, owner, what="the output"):
    """``out``, the output (or ``what`` else it is, e.g. a hidden layer's rates) of a
    public ``predict``/``forward`` at finite inputs and fast variables; an overflow (a
    non-finite entry) is a SimulationError with a hint, unless :func:`trial_states` is
    active."""
    if _TRIAL_STATES.get() or np.isfinite(out).all():
        return out
    bad = int((~np.isfinite(out)).sum())
    raise SimulationError(
        f"{owner}: {what} overflowed ({bad} non-finite value(s)) at finite inputs "
        "and fast variables. Hint: the fast variables or inputs are too large for this "
        "network (a settled learning process keeps them bounded; check where they came "
        "from)")


def pulled(g, phi, lam, anchor):
    """``τ dφ/dt = g − λ (φ − anchor)``: a fast variable's drive, its data force ``g``
    plus the pull towards its anchor (the complex synapse's consolidation term)."""
    return g - lam * (phi - anchor)


def pull_partials(phi, anchor, lam):
    """``∂anchor`` and ``∂λ`` of ``λ/2 (φ − anchor)²`` at φ: ``−λ (φ − anchor)`` and
    ``½ (φ − anchor)²`` -- the synapse-local part of the CML rule."""
    d = phi - anchor
    return -lam * d, 0.5 * d * d


def task_shape(a, like):
    """``a`` (B,) reshaped to broadcast against ``like`` (B, ...)."""
    return a.reshape((-1,) + (1,) * (like.ndim - 1))


class ModelKind:
    """Base class of every model kind (see the module docstring for the protocol).

    Subclasses must provide :attr:`tau_fast`, :attr:`fast_names`, :attr:`phi0`,
    :attr:`plastic`, :attr:`lam`, :attr:`anchor`, :attr:`theta`, :meth:`with_theta`,
    :attr:`sizes` (or :attr:`n_in`/:attr:`n_out`), :meth:`predict`, :meth:`forces` and
    :meth:`theta_partials`; everything else has a default.
    """

    #: Learning rules the kind can learn with (``Learner.rule``).
    rules = ("backprop",)
    #: Variables ``Learner.run(record=...)`` can record.
    probeable = ("phi", "loss")
    #: Loss of the learning process.
    loss = SQUARED_ERROR
    #: Neuron time constant (s); 0: instantaneous neurons (or none).
    tau_neuron = 0.0
    #: Name of the attribute setting the fast time constant (for messages).
    tau_fast_name = "tau_fast"
    #: Newton steps polishing the settled state in the exact reference.
    newton_steps = 2

    # ------------------------------------------------------------------ structure
    @property
    def kind_name(self):
        """Name used in messages (the class name)."""
        return type(self).__name__

    @property
    def n_in(self):
        return self.sizes[0]

    @property
    def n_out(self):
        return self.sizes[-1]

    @property
    def n_fast(self):
        return len(self.phi0)

    @property
    def penalised(self):
        """The entries of :attr:`theta` that hold the weights meta-learning stores, on
        which :class:`~neuro_meta.metatrain.MetaTrainer`'s L2 penalty ``omega_decay``
        acts. Default: the complex synapses' consolidated weights ``omega`` and
        ``omega_bias`` where θ has them (never λ); a kind whose weights are stored
        elsewhere overrides this (``()``: nothing to penalise)."""
        return tuple(k for k in ("omega", "omega_bias") if k in self.theta)

    def default_rule(self):
        """The rule CML and the exact reference use when no learner is given."""
        return self.rules[0]

    def check_rule(self, rule):
        """Raise :class:`~neuro_meta.errors.UnsupportedError` if the kind cannot learn
        with ``rule``."""
        if rule not in self.rules:
            raise UnsupportedError(
                f"Learner.rule: a {self.kind_name} learns with "
                f"{' or '.join(map(repr, self.rules))} (got {rule!r})")

    def lam_max(self):
        """Largest pull strength of the plastic variables (for the automatic step)."""
        return max((float(np.max(l)) for l, p in zip(self.lam, self.plastic) if p),
                   default=0.0)

    def curvature(self, inp):
        """A bound of the data term's curvature (largest Hessian eigenvalue) for the
        automatic time step; ``inp`` is the phase's :class:`PhaseInput` or None."""
        return 1.0

    def layered(self):
        """The layered-rate-network description the compiled and Brian2 engines need
        (an object with ``sizes``, ``activations``, ``connections``, ``tau_neuron``,
        ``tau_synapse``), or ``None`` if the kind is not one."""
        return None

    def gain_layout(self):
        """The gain-modulated-network description the compiled engine's gain kernel
        needs (see :meth:`neuro_meta.DualSystem.gain_layout`), or ``None``."""
        return None

    # ------------------------------------------------------------------ dynamics
    def neurons(self, phi, x):
        """Neuron state at steady state for inputs ``x`` (B, S, n_in): a list of arrays
        (default: none)."""
        return []

    def currents(self, phi, v, x):
        """Synaptic currents of the neurons at state ``v`` (kinds with
        ``tau_neuron > 0``)."""
        raise UnsupportedError(f"{self.kind_name}: has no neuron dynamics")

    def forces(self, phi, v, x, y, c, rule="backprop"):
        """``g = −∂φ Σ_s c_s ℓ_s`` per fast array (``None`` for static ones) at fast
        variables ``phi``, neuron state ``v``, inputs ``x`` (B, S, n_in), targets ``y``
        and sample weights ``c`` (B, S)."""
        raise NotImplementedError

    def dynamics(self, rule):
        """The learning process as the engines see it (:class:`Dynamics`)."""
        return Dynamics(self, rule)

    def predict(self, x, phi=None):
        """Outputs for inputs ``x`` at fast variables ``phi`` (default: initial)."""
        raise NotImplementedError

    def loss_value(self, x, y, phi):
        """The loss (mean over the samples of ``x``, ``y``) per task at ``phi``."""
        return self.loss.mean(self.predict(x, phi), y)

    # ------------------------------------------------------------------ results
    def potentials(self, v):
        """The neuron state as returned in ``LearningResult.v`` (default: ``v``)."""
        return list(v)

    def rates(self, potentials):
        """Rates from :meth:`potentials` (for ``record="r"``)."""
        raise UnsupportedError(f"{self.kind_name}: has no rates to record")

    def split_fast(self, arrays):
        """``(phi, bias)`` of ``LearningResult`` from the fast arrays (default: the
        arrays and no biases)."""
        return list(arrays), [None] * len(arrays)

    # ------------------------------------------------------------------ meta-learning
    def theta_partials(self, phi, X, Y, c):
        """``∂θ F(φ, θ)`` per task, in the structure of :attr:`theta`, with
        ``F = Σ_s c_s ℓ_s + Σ λ/2 (φ − anchor)²`` over the samples ``X``, ``Y`` with
        weights ``c`` (what CML differences between phases)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ exact reference
    def _uniform(self, X):
        B, S = X.shape[:2]
        return np.full((B, S), 1.0 / S)

    def data_grad(self, phi, X, Y, c=None):
        """``∂φ L`` of the loss ``L = Σ_s c_s ℓ_s`` over the samples (default weights
        ``c = 1/S``: the mean), per fast array (None: static)."""
        c = self._uniform(X) if c is None else c
        g = self.forces(phi, self.neurons(phi, X), X, Y, c, self.default_rule())
        return [None if gl is None else -gl for gl in g]

    def data_hvp(self, phi, X, Y, V, c=None):
        """Hessian-vector products of the loss ``L = Σ_s c_s ℓ_s`` (default ``c = 1/S``):
        ``∇²φ L · V`` per fast array; ``V`` entries may carry leading axes (..., B, ...)
        (None: zero direction). It is the Jacobian of ``−forces`` for every rule the kind
        supports (the phase solver, :mod:`neuro_meta.engines.solver`, relies on it).
        Default: complex-step derivative of :meth:`forces`."""
        c = self._uniform(X) if c is None else c
        lead = next(v.shape[:v.ndim - p.ndim] for v, p in zip(V, phi) if v is not None)
        pert = [np.broadcast_to(p if v is None else p + 1j * COMPLEX_STEP * v,
                                lead + p.shape) for p, v in zip(phi, V)]
        g = self.forces(pert, self.neurons(pert, X), X, Y, c, self.default_rule())
        return [None if gl is None else -np.imag(gl) / COMPLEX_STEP for gl in g]

    def data_hvp_at(self, phi, X, Y, c=None):
        """``V -> data_hvp(phi, X, Y, V, c)`` for many directions at one ``phi`` (the phase
        solver's conjugate gradients). Kinds may override it to reuse the forward and
        backward pass across products."""
        return lambda V: self.data_hvp(phi, X, Y, V, c)

    def cross(self, phi, u, X, Y):
        """``∂/∂ε ∂θ F(φ + ε u)`` (with the training samples' mean loss): the mixed
        second derivative ``(∂²φθ F)ᵀ u`` the exact reference subtracts. Default:
        complex-step derivative of :meth:`theta_partials`."""
        pert = [p if d is None else p + 1j * COMPLEX_STEP * d for p, d in zip(phi, u)]
        part = self.theta_partials(pert, X, Y, self._uniform(X))
        return {k: [None if a is None else np.imag(a) / COMPLEX_STEP for a in v]
                for k, v in part.items()}

    def check_exact(self):
        """Raise :class:`~neuro_meta.errors.UnsupportedError` if the exact reference
        cannot be computed for this kind (checked before any phase runs)."""

    def theta_partials_out(self, phi, X, Y):
        """``∂θ L_out`` of the mean validation loss at φ (θ entering the data term
        directly). Default: :meth:`theta_partials` with the samples' weights minus the
        same with zero weights (the pull's partials cancel exactly); kinds whose θ enters
        only the pull may return ``None`` (zero)."""
        c = self._uniform(X)
        with_data = self.theta_partials(phi, X, Y, c)
        pull = self.theta_partials(phi, X, Y, np.zeros_like(c))
        return {k: [None if a is None else a - b for a, b in zip(v, pull[k])]
                for k, v in with_data.items()}


class Packer:
    """Flatten the plastic fast arrays of B tasks of a kind to vectors (B, P)."""

    def __init__(self, kind, B):
        self.kind = kind
        self.B = B
        self.n = kind.n_fast
        self.idx = [i for i, p in enumerate(kind.plastic) if p]
        self.shapes = [np.shape(kind.phi0[i]) for i in self.idx]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.P = int(sum(self.sizes))

    def pack(self, arrs):
        """(..., B, P) from a list of per-fast-array arrays (..., B, *shape)."""
        i0 = self.idx[0]
        lead = arrs[i0].shape[:arrs[i0].ndim - len(self.shapes[0])]
        return np.concatenate([arrs[i].reshape(lead + (-1,)) for i in self.idx], axis=-1)

    def unpack(self, vec):
        """The list (``None`` for static arrays) from vectors (..., B, P)."""
        lead = vec.shape[:-1]
        out = [None] * self.n
        parts = np.split(vec, np.cumsum(self.sizes)[:-1], axis=-1)
        for i, s, p in zip(self.idx, self.shapes, parts):
            out[i] = p.reshape(lead + s)
        return out

    def broadcast(self, arrs):
        """Packed per-task copies (B, P) of per-fast-array arrays without a task axis."""
        return self.pack([None if a is None else np.broadcast_to(a, (self.B,) + np.shape(a))
                          for a in arrs])


class Dynamics:
    """A kind's learning process as the engines see it, for one learning rule.

    ``tau_v``/``tau_phi`` the time constants; ``plastic``, ``lam`` and ``omega`` (the
    anchors) per fast array; the right-hand sides::

        τ_v dv/dt = −v + currents(φ, v, x)                      (tau_v > 0)
        τ_φ dφ/dt = g(φ, v) − λ (φ − anchor)                    (plastic arrays)
    """

    def __init__(self, kind, rule):
        self.kind = kind
        self.rule = rule
        self.tau_v = kind.tau_neuron
        self.tau_phi = kind.tau_fast
        self.plastic = list(kind.plastic)
        self.lam = list(kind.lam)
        self.omega = list(kind.anchor)

    def currents(self, phi, v, x):
        """Synaptic currents of every layer at the neuron state ``v``."""
        return self.kind.currents(phi, v, x)

    def steady_v(self, phi, x):
        """Neuron state at steady state for inputs ``x``."""
        return self.kind.neurons(phi, x)

    def plasticity(self, phi, v, x, y, c):
        """``τ_φ dφ/dt`` of every fast array (zeros for static ones)."""
        g = self.kind.forces(phi, v, x, y, c, self.rule)
        return [pulled(gl, p, lam, om) if pl else np.zeros_like(p)
                for gl, p, lam, om, pl in zip(g, phi, self.lam, self.omega, self.plastic)]

    def rhs(self, phi, v, x, y, c):
        """Simultaneous right-hand side: (dv/dt list or None, dφ/dt list, τ_φ dφ/dt
        list, the neuron state used)."""
        if self.tau_v > 0:
            cur = self.currents(phi, v, x)
            dv = [(i - vl) / self.tau_v for i, vl in zip(cur, v)]
            v_used = v
        else:
            v_used = self.steady_v(phi, x)
            dv = None
        g = self.plasticity(phi, v_used, x, y, c)
        return dv, [gl / self.tau_phi for gl in g], g, v_used


def check_kind(net, owner):
    """``net`` must implement the model-kind protocol."""
    if not isinstance(net, ModelKind):
        P.fail(owner, "net", "must be a model kind (RateNetwork, DualSystem or another "
               "neuro_meta.kind.ModelKind)", type(net).__name__)
    return net
