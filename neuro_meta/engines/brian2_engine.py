"""The Brian2 engine: the learning process simulated by Brian2 itself.

A :class:`~neuro_meta.network.RateNetwork` becomes Brian2 ``NeuronGroup`` s and
``Synapses`` whose equations are the numpy engine's (see
:mod:`neuro_meta.engines.numpy_engine`), written in Brian2's equation language. B tasks
run together, vectorised: the neurons of a layer are indexed ``task * n + unit`` and
synapses connect units of the same task only. For online presentation::

    layer_0 (inputs)      stimulus = x_in(t % T_cycle, i) : 1
                          r : 1                                   (r = stimulus)
    layer_l (l >= 1)      dv/dt = (-v + I)/tau_v : 1
                          I = I_syn + I_bias : 1   I_syn : 1   I_bias : 1
                          r : 1                                   (r = f(v))
    layer_L (output)      target = y_target(t % T_cycle, i) : 1
                          gain = gain_in(t % T_cycle, i) : 1
                          err : 1                       (err = gain*(target - r)*f'(v))
    conn_l (complex)      dphi/dt = (plasticity - lam*(phi - omega))/tau_phi : 1 (clock-driven)
                          plasticity = err_post*r_pre : 1
                          omega : 1 (constant)   lam : 1 (constant)
                          I_syn_post = phi*r_pre : 1 (summed)
    conn_l (static)       w : 1 (constant)       I_syn_post = w*r_pre : 1 (summed)
    conn_l_bias           the same from ``bias_unit`` (one unit of rate 1 per task) into
                          I_bias: a bias is a synapse from a constant-rate unit

Rates and the output error are stored once per neuron by custom operations
(``run_regularly``) instead of being subexpressions re-evaluated for every synapse.
``x_in``, ``y_target`` and ``gain_in`` are ``TimedArray`` s holding one presentation
cycle (row m = sample m, each shown for ``presentation_time``); ``gain`` is the sample
weight times the number of samples of the cycle, as in the numpy engine. Without
biases ``I`` is the summed variable itself. With batch presentation every neuron holds
one copy of its state per sample (``v_0, r_0, err_0, v_1, ...``; inputs, targets and
gains are constants) and ``plasticity = err_0_post*r_0_pre + err_1_post*r_1_pre + ...``.

Schedule of one time step -- the numpy engine's Euler order (neurons advanced with the
rates at the start of the step, then synapses with the neuron state at its end), fixed
with the objects' ``when``/``order`` (Brian2's default would break the tie between
neuron and synapse updaters by object name):

=================  =====  ===========================================================
slot               order  operation
=================  =====  ===========================================================
``start``          0      engine hook: record, settling test, divergence test
``before_groups``  0      input rates ``r = stimulus`` (the sample shown at step n)
``before_groups``  1      summed currents ``I = sum(phi*r_pre)`` (start-of-step rates)
``groups``         0      neurons ``v += dt*(-v + I)/tau_v`` (Euler) [+ watch]
``groups``         1      ``r = f(v)``; output ``err = gain*(target - r)*f'(v)``
``groups``         2      synapses ``phi += dt*(plasticity - lam*(phi - omega))/tau_phi``
                          [+ watch]
=================  =====  ===========================================================

Divergence is watched at every step in generated code (no per-step Python work): when
the engine runs a phase, every non-input neuron has an integer ``v_ok`` and every plastic
synapse a ``phi_ok``, and their Euler state updaters end with the *watch* statement
``v_ok = v_ok + int(abs(v) < 1e10)`` (likewise for phi; all of a neuron's ``v_s`` in
batch mode), which counts the steps whose result is below the numpy engine's
``DIVERGENCE_BOUND`` (``x < bound`` is false for NaN): after n steps, ``v_ok < n`` means
that some step went beyond it. The engine hook reads these counts at its checks and at
the end of the phase. If one falls short at step c while all were complete at the
previous test (step c0), the phase is replayed from the start up to step c (the same
code and data, hence the same numbers), the hook then reading the counts after every
step past c0: the first step at which one falls short is the step at which the
simulation diverged, and the numpy engine's error is raised for the state of that step
(same step, same message). Exported networks (:func:`network_to_brian2`) have no watch.

Supported: ``integrator="euler"``, neurons with ``tau_neuron > 0``, the ``delta`` rule
(and ``backprop`` when only the output connection is plastic, where both rules are the
same), online and batch presentation, biases, static hidden connections, fixed
durations and settling tolerances (tested exactly like the numpy engine: once per
presentation cycle online, every 10 steps in batch), divergence reported at the step it
happens, like the numpy engine. Anything else raises
:class:`~neuro_meta.errors.UnsupportedError` naming the option.
"""
import contextlib
import functools
import re

import numpy as np

from ..errors import SimulationError, UnsupportedError
from . import numpy_engine as npe
from . import phase
from .phase import DIVERGENCE_BOUND, Recorder, check_finite

#: Name of this engine in results and messages.
NAME = "brian2"

#: f'(v) in Brian2 syntax, written with the freshly stored rate ``r`` where possible.
DERIVATIVES = {
    "linear": "1",
    "tanh": "1 - r{s}**2",
    "sigmoid": "r{s}*(1 - r{s})",
    "relu": "int(v{s} > 0)",
    "softplus": "1/(1 + exp(-v{s}))",
}

# Scheduling (slot, order) of the operations of one time step.
SCHEDULE = {
    "hook": ("start", 0),
    "input": ("before_groups", 0),
    "summed": ("before_groups", 1),
    "neurons": ("groups", 0),
    "rates": ("groups", 1),
    "synapses": ("groups", 2),
}


# ---------------------------------------------------------------------- support checks
def why_not(kind, spec, inp, record=(), substeps=None):
    """None if the Brian2 engine can run this phase, else the reason."""
    try:
        check_supported(kind, spec, inp.presentation)
    except UnsupportedError as err:
        return str(err)
    return None


def check_supported(kind, spec=None, presentation=None):
    """Raise :class:`UnsupportedError` naming the option the Brian2 engine cannot run."""
    net = kind.layered()
    if net is None:
        raise UnsupportedError(
            f"Learner.engine: the brian2 engine cannot run this phase of a {kind.kind_name}: "
            "it simulates layered rate networks (RateNetwork) only (got 'brian2')")
    if net.loss.name != "squared_error":
        raise UnsupportedError(
            f"RateNetwork.loss: the brian2 engine's equations learn with squared error "
            f"(got {net.loss.name!r}); use engine='numpy' or 'auto'")
    if net.tau_neuron <= 0:
        raise UnsupportedError(
            "RateNetwork.tau_neuron: the brian2 engine needs neurons with a time constant "
            f"> 0 (instantaneous neurons are not supported) (got {net.tau_neuron!r})")
    if spec is not None:
        if spec.integrator != "euler":
            raise UnsupportedError(
                "Learner.integrator: the brian2 engine runs a RateNetwork with 'euler' only "
                f"(got {spec.integrator!r})")
        plastic = [c.plastic for c in net.connections]
        if spec.rule == "backprop" and any(plastic[:-1]):
            raise UnsupportedError(
                "Learner.rule: the brian2 engine runs a RateNetwork with 'backprop' only when "
                "the output connection is the only plastic one (where it equals 'delta'); "
                "got plastic "
                f"connections {[i for i, p in enumerate(plastic) if p]}")
        if spec.substeps != 1:
            raise UnsupportedError(
                "Learner.substeps: the brian2 engine advances every synapse of a RateNetwork "
                f"on one clock (got {spec.substeps!r}); choose a smaller dt")
    if presentation not in (None, "online", "batch"):
        raise UnsupportedError(
            "Learner.presentation: the brian2 engine supports 'online' and 'batch' "
            f"(got {presentation!r})")
    for l, act in enumerate(net.activations):
        _derivative(act, "", l)


def _derivative(act, s, layer):
    """f'(v) of an activation as a Brian2 expression (suffix ``s`` on v and r)."""
    if act.name in DERIVATIVES and act is _builtin(act.name):
        return DERIVATIVES[act.name].format(s=s)
    try:  # a user Activation: differentiate its Brian2 expression symbolically
        import sympy
        from brian2.parsing.sympytools import str_to_sympy, sympy_to_str

        expr = str_to_sympy(act.brian2_expr)
        v = [sym for sym in expr.free_symbols if sym.name == "v"]
        d = sympy.diff(expr, v[0]) if v else sympy.Integer(0)
        if d.has(sympy.Derivative) or d.has(sympy.Subs):
            raise ValueError("no closed form")
        code = sympy_to_str(d)
    except Exception as err:  # noqa: BLE001 - any failure means: cannot emit f'
        raise UnsupportedError(
            f"RateNetwork.activation[{layer}]: the brian2 engine cannot differentiate the "
            f"Brian2 expression {act.brian2_expr!r} ({err}) (got {act!r})") from None
    return _suffix(code, s)


def _is_atom(code):
    """Whether an expression needs no parentheses as a factor (a name or a number)."""
    return re.fullmatch(r"[\w.]+", code) is not None


def _builtin(name):
    from ..activations import ACTIVATIONS

    return ACTIVATIONS.get(name)


def _suffix(code, s):
    """Append the sample suffix ``s`` to the variables v and r of an expression."""
    if not s:
        return code
    return re.sub(r"\b([vr])\b", r"\1" + s, code)


@functools.lru_cache(maxsize=None)
def _watching_euler(flag, names):
    """Brian2's Euler state updater followed by the watch statement (module docstring):
    ``flag`` counts the steps after which all of ``names`` (a tuple) are below the
    divergence bound (NaN is not), in the same generated code as the update. One object
    per arguments: Brian2 caches the state updaters' code by this object."""
    inside = " and ".join(f"abs({x}) < {DIVERGENCE_BOUND!r}" for x in names)
    watch = f"{flag} = {flag} + int({inside})"

    def euler_watch(equations, variables, method_options=None):
        from brian2.stateupdaters.explicit import euler

        return euler(equations, variables, method_options) + "\n" + watch

    return euler_watch


# ---------------------------------------------------------------------- target preference
@contextlib.contextmanager
def codegen_target(target):
    """Set ``prefs.codegen.target`` (and float64) for the duration of a block."""
    from brian2 import prefs

    old_target = prefs.codegen.target
    old_dtype = prefs.core.default_float_dtype
    prefs.codegen.target = target
    prefs.core.default_float_dtype = np.float64
    try:
        yield
    finally:
        prefs.codegen.target = old_target
        prefs.core.default_float_dtype = old_dtype


# ---------------------------------------------------------------------- the Brian2 model
class Brian2Model:
    """The Brian2 objects of one network, B tasks and one phase's data.

    Attributes: ``network`` (``brian2.Network``), ``layers`` (NeuronGroups, input
    first), ``bias_unit`` (or None), ``conns`` (per connection: (weights Synapses, bias
    Synapses or None)), ``suffixes`` (one per sample copy: ``[""]`` online), ``clock``.
    With ``watch``, ``watched`` lists (group, name of its watch integer): the non-input
    layers (``v_ok``) and plastic synapses (``phi_ok``), see the module docstring.
    """

    def __init__(self, net, inp, dt, watch=False):
        import brian2 as b2

        check_supported(net, presentation=inp.presentation)
        self.net = net
        self.watch = watch
        self.watched = []
        self.inp = inp
        self.dt = float(dt)
        B, S = inp.X.shape[:2]
        self.n_tasks = B
        self.online = inp.presentation == "online"
        self.suffixes = [""] if self.online else [f"_{s}" for s in range(S)]
        sizes, L = net.sizes, len(net.sizes) - 1
        self.clock = b2.Clock(dt=self.dt * b2.second, name="clock")
        self.timed_arrays = {}
        ns = {}
        if self.online:
            k = inp.steps_per_sample
            self.presentation_time = k * self.dt
            self.T_cycle = S * self.presentation_time
            ns["T_cycle"] = self.T_cycle * b2.second
            self._make_timed_arrays()

        # -- neuron groups --------------------------------------------------------
        self.layers = [self._input_group(sizes[0] * B, ns)]
        for l in range(1, L + 1):
            self.layers.append(self._layer_group(l, sizes[l] * B, l == L, ns))
        self.bias_unit = None
        if net.bias:
            eqs = "\n".join(f"r{s} : 1 (constant)" for s in self.suffixes)
            self.bias_unit = b2.NeuronGroup(B, eqs, clock=self.clock, name="bias_unit")
            for s in self.suffixes:
                setattr(self.bias_unit, "r" + s, 1.0)

        # -- synapses -------------------------------------------------------------
        self.conns = []
        for l, conn in enumerate(net.connections):
            target = "I_syn" if net.bias else "I"
            syn_w = self._synapses(f"conn_{l}", self.layers[l], self.layers[l + 1],
                                   conn.plastic, target)
            pre, post = self._weight_indices(conn)
            syn_w.connect(i=pre, j=post)
            syn_b = None
            if conn.has_bias:
                syn_b = self._synapses(f"conn_{l}_bias", self.bias_unit,
                                       self.layers[l + 1], conn.plastic, "I_bias")
                pre_b, post_b = self._bias_indices(conn)
                syn_b.connect(i=pre_b, j=post_b)
            if conn.plastic:
                for syn in (syn_w, syn_b):
                    if syn is not None:
                        syn.tau_phi = net.tau_synapse * b2.second
            self.conns.append((syn_w, syn_b))

        objects = list(self.layers) + [o for pair in self.conns for o in pair if o is not None]
        if self.bias_unit is not None:
            objects.append(self.bias_unit)
        self.network = b2.Network(*objects, name="network")

    # -- construction helpers ------------------------------------------------------
    def _make_timed_arrays(self):
        """Inputs, targets and gains of one presentation cycle (plus the first sample
        again, so that ``t % T_cycle`` rounding up to T_cycle shows sample 0)."""
        import brian2 as b2

        inp = self.inp
        S = inp.n_samples
        rows = np.arange(S + 1) % S
        x = inp.X[:, rows, :]                                  # (B, S+1, n_in)
        y = inp.Y[:, rows, :]
        g = np.broadcast_to((inp.c[:, rows] * S)[..., None], y.shape)
        to_2d = (lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1).reshape(S + 1, -1)))
        tp = self.presentation_time * b2.second
        self.timed_arrays = {
            "x_in": b2.TimedArray(to_2d(x), dt=tp, name="x_in"),
            "y_target": b2.TimedArray(to_2d(y), dt=tp, name="y_target"),
            "gain_in": b2.TimedArray(to_2d(g), dt=tp, name="gain_in"),
        }

    def _input_group(self, N, ns):
        import brian2 as b2

        if self.online:
            eqs = "stimulus = x_in(t % T_cycle, i) : 1\nr : 1"
            G = b2.NeuronGroup(N, eqs, clock=self.clock, name="layer_0",
                               namespace={**ns, "x_in": self.timed_arrays["x_in"]})
            when, order = SCHEDULE["input"]
            G.run_regularly("r = stimulus", when=when, order=order, name="layer_0_rates")
        else:
            eqs = "\n".join(f"r{s} : 1 (constant)" for s in self.suffixes)
            G = b2.NeuronGroup(N, eqs, clock=self.clock, name="layer_0")
        return G

    def _layer_group(self, l, N, is_output, ns):
        import brian2 as b2

        net = self.net
        act = net.activations[l - 1]
        lines, code = [], []
        for s in self.suffixes:
            lines.append(f"dv{s}/dt = (-v{s} + I{s})/tau_v : 1")
            if net.bias:
                lines += [f"I{s} = I_syn{s} + I_bias{s} : 1", f"I_syn{s} : 1",
                          f"I_bias{s} : 1"]
            else:
                lines.append(f"I{s} : 1")
            lines.append(f"r{s} : 1")
            code.append(f"r{s} = {_suffix(act.brian2_expr, s)}")
            if is_output:
                if self.online:
                    lines += ["target = y_target(t % T_cycle, i) : 1",
                              "gain = gain_in(t % T_cycle, i) : 1"]
                else:
                    lines += [f"target{s} : 1 (constant)", f"gain{s} : 1 (constant)"]
                lines.append(f"err{s} : 1")
                fprime = _derivative(act, s, l - 1)
                fprime = "" if fprime == "1" else "*" + (
                    fprime if _is_atom(fprime) else f"({fprime})")
                code.append(f"err{s} = gain{s}*(target{s} - r{s}){fprime}")
        lines.append("tau_v : second (constant, shared)")
        method = "euler"
        if self.watch:
            lines.append("v_ok : integer")
            method = _watching_euler("v_ok", tuple(f"v{s}" for s in self.suffixes))
        namespace = dict(ns)
        if is_output and self.online:
            namespace.update(y_target=self.timed_arrays["y_target"],
                             gain_in=self.timed_arrays["gain_in"])
        G = b2.NeuronGroup(N, "\n".join(lines), method=method, clock=self.clock,
                           name=f"layer_{l}", namespace=namespace)
        if self.watch:
            self.watched.append((G, "v_ok"))
        G.tau_v = net.tau_neuron * b2.second
        G.state_updater.when, G.state_updater.order = SCHEDULE["neurons"]
        when, order = SCHEDULE["rates"]
        G.run_regularly("\n".join(code), when=when, order=order, name=f"layer_{l}_rates")
        return G

    def _synapses(self, name, pre, post, plastic, target):
        import brian2 as b2

        sx = self.suffixes
        method = "euler"
        if plastic:
            lines = ["dphi/dt = (plasticity - lam*(phi - omega))/tau_phi : 1 (clock-driven)",
                     "plasticity = " + " + ".join(f"err{s}_post*r{s}_pre" for s in sx) + " : 1",
                     "omega : 1 (constant)", "lam : 1 (constant)",
                     "tau_phi : second (constant, shared)"]
            w = "phi"
            if self.watch:
                lines.append("phi_ok : integer")
                method = _watching_euler("phi_ok", ("phi",))
        else:
            lines, w = ["w : 1 (constant)"], "w"
        lines += [f"{target}{s}_post = {w}*r{s}_pre : 1 (summed)" for s in sx]
        syn = b2.Synapses(pre, post, "\n".join(lines), method=method, clock=self.clock,
                          name=name)
        if plastic:
            syn.state_updater.when, syn.state_updater.order = SCHEDULE["synapses"]
            if self.watch:
                self.watched.append((syn, "phi_ok"))
        for upd in syn.summed_updaters.values():
            upd.when, upd.order = SCHEDULE["summed"]
        return syn

    def _weight_indices(self, conn):
        """Pre/post neuron indices of the weight synapses, in (task, post, pre) order."""
        B, n_pre, n_post = self.n_tasks, conn.n_pre, conn.n_post
        b, j, i = np.meshgrid(np.arange(B), np.arange(n_post), np.arange(n_pre),
                              indexing="ij")
        return (b * n_pre + i).ravel(), (b * n_post + j).ravel()

    def _bias_indices(self, conn):
        B, n_post = self.n_tasks, conn.n_post
        b, j = np.meshgrid(np.arange(B), np.arange(n_post), indexing="ij")
        return b.ravel(), (b * n_post + j).ravel()

    # -- state ---------------------------------------------------------------------
    def _split(self, conn, arr):
        """Augmented (B, n_post, n_pre[+1]) -> flat arrays in synapse order."""
        w = np.ascontiguousarray(arr[..., :conn.n_pre]).ravel()
        b = np.ascontiguousarray(arr[..., conn.n_pre]).ravel() if conn.has_bias else None
        return w, b

    def set_state(self, phi, v):
        """Fast weights (augmented, (B, n_post, n_pre[+1]) per connection), neuron
        potentials ((B, S, n) per layer) and the meta-parameters of the network."""
        B = self.n_tasks
        for conn, (syn_w, syn_b), p in zip(self.net.connections, self.conns, phi):
            p = np.broadcast_to(np.asarray(p, dtype=np.float64), (B,) + conn.shape)
            pw, pb = self._split(conn, p)
            name = "phi" if conn.plastic else "w"
            setattr(syn_w, name, pw)
            if syn_b is not None:
                setattr(syn_b, name, pb)
            if conn.plastic:
                for key in ("omega", "lam"):
                    aw, ab = self._split(conn, np.broadcast_to(getattr(conn, key),
                                                               (B,) + conn.shape))
                    setattr(syn_w, key, aw)
                    if syn_b is not None:
                        setattr(syn_b, key, ab)
        x0 = self.inp.at_step(0)[0]
        for k, s in enumerate(self.suffixes):
            setattr(self.layers[0], "r" + s, np.ascontiguousarray(x0[:, k, :]).ravel())
        if not self.online:         # batch: every sample's target and gain, constant
            out = self.layers[-1]
            n_out = self.net.sizes[-1]
            for k, s in enumerate(self.suffixes):
                setattr(out, "target" + s, np.ascontiguousarray(self.inp.Y[:, k, :]).ravel())
                setattr(out, "gain" + s, np.repeat(self.inp.c[:, k], n_out))
        for G, act, vl in zip(self.layers[1:], self.net.activations, v):
            for k, s in enumerate(self.suffixes):
                vk = np.ascontiguousarray(vl[:, k, :]).ravel()
                setattr(G, "v" + s, vk)
                setattr(G, "r" + s, act.f(vk))

    def read_phi(self):
        """Augmented fast weights per connection, (B, n_post, n_pre[+1]) copies."""
        B = self.n_tasks
        out = []
        for conn, (syn_w, syn_b) in zip(self.net.connections, self.conns):
            name = "phi" if conn.plastic else "w"
            w = _values(syn_w, name).reshape(B, conn.n_post, conn.n_pre)
            if syn_b is not None:
                w = np.concatenate([w, _values(syn_b, name).reshape(B, conn.n_post, 1)],
                                   axis=-1)
            out.append(np.array(w))
        return out

    def read_v(self):
        """Neuron potentials per non-input layer, (B, S, n) copies."""
        B = self.n_tasks
        return [np.stack([_values(G, "v" + s).reshape(B, -1) for s in self.suffixes], axis=1)
                for G in self.layers[1:]]

    def write_tasks(self, mask, phi, v):
        """Overwrite the fast weights and potentials of the tasks ``mask`` (B,) with
        ``phi`` / ``v`` (lists shaped like :meth:`read_phi` / :meth:`read_v`, restricted
        to those tasks), in place in Brian2's arrays (runtime devices)."""
        B = self.n_tasks
        for conn, (syn_w, syn_b), p in zip(self.net.connections, self.conns, phi):
            if not conn.plastic:
                continue
            _storage(syn_w, "phi").reshape(B, -1)[mask] = p[..., :conn.n_pre].reshape(
                p.shape[0], -1)
            if syn_b is not None:
                _storage(syn_b, "phi").reshape(B, -1)[mask] = p[..., conn.n_pre]
        for G, vl in zip(self.layers[1:], v):
            for k, s in enumerate(self.suffixes):
                _storage(G, "v" + s).reshape(B, -1)[mask] = vl[:, k, :]


def _storage(group, name):
    """The array holding a state variable (runtime devices), to be written in place."""
    return group.variables[name].get_value()


def _values(group, name):
    """A state variable of a Brian2 group as a float64 array (runtime devices)."""
    return np.asarray(group.variables[name].get_value(), dtype=np.float64)


# ---------------------------------------------------------------------- one phase
def run_phase(kind, inp, phi_init, spec, record=(), record_every=1, loss_fn=None,
              accelerators=()):
    """Integrate one phase with Brian2. Same contract as :func:`numpy_engine.run_phase`:
    returns (phi, v, recorder, settled (B,), t_end, steps); if the state diverges, raises
    the numpy engine's :class:`SimulationError` (same step, same message)."""
    check_supported(kind, spec, inp.presentation)
    net = kind.layered()
    from brian2.devices.device import RuntimeDevice, get_device

    if not isinstance(get_device(), RuntimeDevice):
        raise UnsupportedError(
            "Learner.engine: the brian2 engine runs on Brian2's runtime device (numpy or "
            "cython target); for C++ standalone export the network with "
            f"RateNetwork.to_brian2() (got device {type(get_device()).__name__})")
    dt = spec.dt
    dyn = kind.dynamics(spec.rule)
    phi = [np.array(p, dtype=np.float64) for p in phi_init]
    x0, _, _ = inp.at_step(0)
    v = dyn.steady_v(phi, x0)
    rec = Recorder(record, record_every, dt)
    rec.ran(NAME)
    n_max, tol = spec.n_max, spec.tol
    run = functools.partial(_simulate, net, inp, dt, phi, v, dyn, tol, spec.check)
    with codegen_target(spec.brian2_target), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if n_max > 0 and any(not c.plastic and p.size and not np.abs(p).max()
                             < DIVERGENCE_BOUND for c, p in zip(net.connections, phi)):
            diverged = (0, 1)   # static weights beyond the bound: so at the first step
        else:
            hook = run(n_max, rec, loss_fn)
            diverged = hook.diverged
        if diverged is not None:
            # the first step beyond the bound is in (c0, c]: replay up to c, testing
            # every step after c0, and raise the numpy engine's error for that step
            c0, c = diverged
            replay = run(c, Recorder((), 1, dt), None, search_after=c0)
            phi, v, n = replay.result
            check_finite(phi, v, n, spec, kind)
            raise SimulationError(      # not reached: the replay ends beyond the bound
                f"Learner.run: the simulation diverged by step {c} (t = {c * dt:.6g} s)")
    phi, v, n = hook.result
    rec.force(n * dt, phi, v, loss_fn)
    settled = hook.settled if tol is not None else np.zeros(phi[0].shape[0], dtype=bool)
    return phi, v, rec, settled, n * dt, n


def _simulate(net, inp, dt, phi, v, dyn, tol, check, n_max, rec, loss_fn,
              search_after=None):
    """Build the Brian2 model (with the watch) for the state ``phi``, ``v``, run it for
    ``n_max`` steps and return the :class:`_PhaseHook` holding the outcome."""
    import brian2 as b2

    model = Brian2Model(net, inp, dt, watch=True)
    model.set_state(phi, v)
    hook = _PhaseHook(model, dyn, inp, dt, tol, check, n_max, phi, rec, loss_fn,
                      search_after)
    model.network.add(hook.operation)
    model.network.run(n_max * dt * b2.second, namespace={})
    hook.finish()
    return hook


class _PhaseHook:
    """Python operation at the start of every step (the state after n steps, before the
    step's updates) doing what the numpy engine's loop does between steps: record every
    ``rec.every`` steps; every ``check`` steps the divergence test (the watch's counts,
    see the module docstring) and, with a tolerance, the settling test
    (:func:`numpy_engine._settled`). As in the numpy engine a task that has settled is
    frozen while the others go on (its phi and v are written back at the start of every
    later step: tasks are independent, so the values computed for it in between reach
    nothing else and are not tested), and the phase ends when all have settled: the
    state is kept and the network stopped (Brian2 completes the current step, which is
    discarded). It runs on the network's clock: the early return costs ~1 us a step.

    Outcome (after :meth:`finish`): ``diverged``, None or (c0, c): the state went beyond
    the bound at a step in (c0, c], the phase was stopped at step c; else ``result``
    (phi, v, steps). A replay (``search_after`` = c0) also tests every step after c0 and
    ends (``result``) at the first step found beyond the bound, or at its last step."""

    def __init__(self, model, dyn, inp, dt, tol, check, n_max, phi0, rec, loss_fn,
                 search_after=None):
        import brian2 as b2

        self.model, self.dyn, self.inp, self.dt = model, dyn, inp, dt
        self.tol, self.check, self.n_max = tol, check, n_max
        self.rec, self.loss_fn = rec, loss_fn
        self.search_after = search_after
        self.prev_phi = [p.copy() for p in phi0]
        self.settled = np.zeros(phi0[0].shape[0], dtype=bool)
        self.frozen = None              # (mask (B,), phi, v) of the settled tasks
        self.stopped = None             # (phi, v, n) when stopped early
        self.diverged = None
        self.result = None
        self.clean = 0                  # every step up to this one passed the test
        self.last_checked = 0
        self.n = -1                     # steps done when the operation runs
        when, order = SCHEDULE["hook"]
        self.operation = b2.NetworkOperation(self._run, clock=model.clock, when=when,
                                             order=order, name="phase_hook")

    def _run(self):
        self.n += 1
        n = self.n
        if self.stopped is not None:
            return
        if self.frozen is not None:
            self.model.write_tasks(*self.frozen)
        record = bool(self.rec.names) and n % self.rec.every == 0
        test = n > 0 and n % self.check == 0
        search = self.search_after is not None and n > self.search_after
        if not (record or test or search):
            return
        if (test or search) and self._diverged(n):
            if search:
                self._stop(self.model.read_phi(), self.model.read_v(), n)
            else:
                self._stop(None, None, n)
            return
        if not (record or test):
            return
        if test:
            self.last_checked = n
        settle = test and self.tol is not None
        phi = self.model.read_phi()
        v = self.model.read_v() if ("v" in self.rec.names or settle) else None
        if record:
            self.rec.force(n * self.dt, phi, v, self.loss_fn)
        if settle:
            self._settle(phi, v, n)
            if self.settled.all():
                self._stop(phi, v, n)

    def _stop(self, phi, v, n):
        self.stopped = (phi, v, n)
        self.model.network.stop()

    def _diverged(self, n):
        """Whether a watched value of a task still integrating went beyond the bound in
        the steps after ``clean`` (the settled tasks passed their last test at the check
        where they settled); sets ``diverged``."""
        live = ~self.settled if self.settled.any() else None
        for group, flag in self.model.watched:
            ok = _storage(group, flag)
            if live is not None:
                ok = ok.reshape(live.shape[0], -1)[live]
            if ok.size and ok.min() < n:
                self.diverged = (self.clean, n)
                return True
        self.clean = n
        return False

    def _settle(self, phi, v, n):
        """Settling test at step ``n``; freezes the tasks that have settled."""
        self.settled |= npe.settled_tasks(self.dyn, phi, v, self.prev_phi, self.inp, n,
                                     self.check, self.dt, self.tol)
        if self.settled.any() and not self.settled.all():
            mask = self.settled.copy()
            self.frozen = (mask, [p[mask] for p in phi], [a[mask] for a in v])
        self.prev_phi = [p.copy() for p in phi]

    def finish(self):
        """The divergence test of the last steps, then ``result`` (phi, v, steps)."""
        if self.stopped is not None:
            phi, v, n = self.stopped
            if phi is None:                   # stopped by the divergence test
                return
        else:
            if self.frozen is not None:       # undo the last step of the frozen tasks
                self.model.write_tasks(*self.frozen)
            n = self.n_max
            if n > 0 and self._diverged(n) and self.search_after is None:
                return
            phi, v = self.model.read_phi(), self.model.read_v()
            if (self.diverged is None and self.tol is not None and n % self.check == 0
                    and n != self.last_checked):    # the numpy loop's last test
                self._settle(phi, v, n)
        self.result = (phi, v, n)


# ---------------------------------------------------------------------- export
def network_to_brian2(net, x=None, y=None, *, x_val=None, y_val=None, beta=0.0,
                      presentation="online", presentation_time=None, dt=None,
                      phi_init=None):
    """Export ``net`` as a ``brian2.Network`` ready to run (see module docstring).

    Parameters
    ----------
    x, y : arrays ``([tasks,] samples, n)``, optional
        Training data shown during the run (default: one sample of zeros with gain 0,
        i.e. only the pull of phi towards omega).
    x_val, y_val, beta : optional
        Nudging: validation samples shown with weight ``beta / V`` (the nudged phase).
    presentation : {"online", "batch"}
    presentation_time, dt : float or Brian2 quantity, optional
        Defaults as in :class:`~neuro_meta.learning.Learner` (``presentation_time`` only
        with ``presentation="online"``).
    phi_init : list of arrays, optional
        Augmented initial fast weights (default: the network's phi0).

    Returns a ``brian2.Network`` with objects named ``layer_0`` (inputs) ... ``layer_L``,
    ``bias_unit``, ``conn_l`` and ``conn_l_bias``; TimedArrays ``x_in``, ``y_target``,
    ``gain_in`` sit in the groups' namespaces. The initial state is stored (runtime
    devices) so ``restore()`` returns to it.
    """
    from .. import _params as P

    O = "RateNetwork.to_brian2"
    presentation = P.choice(presentation, O, "presentation", ("online", "batch"))
    dt = P.to_seconds(dt, O, "dt", allow_none=True)
    presentation_time = P.to_seconds(presentation_time, O, "presentation_time",
                                     allow_none=True)
    if presentation_time is not None and presentation != "online":
        P.fail(O, "presentation_time", "is only used with presentation='online' (with "
               f"presentation={presentation!r} every sample is shown at once): leave it "
               "None or present the samples online", repr(presentation_time))
    check_supported(net, presentation=presentation)
    if x is None and y is None:
        inp = phase.PhaseInput(np.zeros((1, 1, net.sizes[0])),
                               np.zeros((1, 1, net.sizes[-1])), np.zeros((1, 1)),
                               presentation, 1)
    elif x is None or y is None:
        P.fail(O, "y" if y is None else "x",
               "is required together with " + ("x" if y is None else "y"), "None")
    else:
        inp, _, _ = phase.phase_input(net, x, y, x_val, y_val, beta, presentation, owner=O)
    phase.set_presentation_steps(net, inp, dt, "euler", presentation_time, owner=O)
    phi = phase.initial_state(net, phi_init, inp.X.shape[0], owner=O)
    v = net.dynamics("delta").steady_v(phi, inp.at_step(0)[0])
    model = Brian2Model(net, inp, dt if dt is not None else
                        phase.auto_dt(net, "euler", inp, presentation_time))
    model.set_state(phi, v)
    from brian2.devices.device import RuntimeDevice, get_device

    if isinstance(get_device(), RuntimeDevice):
        model.network.store()
    return model.network


def describe(network):
    """The equations, custom operations and schedule of an exported network, as text.

    Brian2 keeps ``(summed)`` variables out of ``Synapses.equations``; this lists them
    with the rest, group by group, followed by the update order of one time step.
    """
    import brian2 as b2

    groups = sorted((o for o in network.objects if isinstance(o, b2.NeuronGroup)),
                    key=lambda o: (o.name == "bias_unit", o.name))
    groups += sorted((o for o in network.objects if isinstance(o, b2.Synapses)),
                     key=lambda o: o.name)
    lines = []
    for g in groups:
        noun = "synapse" if isinstance(g, b2.Synapses) else "unit"
        size = f"{len(g)} {noun}{'s' if len(g) != 1 else ''}"
        lines.append(f"{g.name} ({type(g).__name__}, {size})")
        lines += ["    " + eq for eq in str(g.equations).splitlines()]
        for upd in getattr(g, "summed_updaters", {}).values():
            lines.append(f"    {upd.target_varname} = {upd.expression} : 1 (summed)")
        for obj in g.contained_objects:
            if obj.name.endswith("_rates"):
                code = "; ".join(obj.abstract_code.strip().splitlines())
                lines.append(f"    every step: {code}")
        lines.append("")
    lines.append("one time step (slot, order):")
    for obj in network.sorted_objects:
        group = getattr(obj, "group", None)
        if obj.name.endswith("_stateupdater") and not group.equations.diff_eq_names:
            continue
        if group is None or obj is group or isinstance(obj, b2.NetworkOperation):
            continue
        lines.append(f"    {obj.when:<14} {obj.order:>2}  {obj.name}")
    return "\n".join(lines)
