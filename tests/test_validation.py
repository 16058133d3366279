"""Invalid input fails early with the package's errors (issue 2, acceptance 3).

Every invalid input raises :class:`neuro_meta.ValidationError` -- also a ``ValueError`` --
whose message names the attribute and shows the offending value; a diverging simulation
raises :class:`neuro_meta.SimulationError` -- also a ``RuntimeError`` -- at the step it
happens, with a hint, instead of returning NaNs.
"""
import re

import numpy as np
import pytest

import neuro_meta as nm

_rng = np.random.default_rng(7)
X = _rng.normal(size=(10, 5))
Y = _rng.normal(size=(10, 2))


def _net(**kw):
    args = dict(activation="linear", bias=False, tau_neuron=0,
                synapse=nm.ComplexSynapse(omega=0.1, lam=0.5))
    args.update(kw)
    return nm.RateNetwork([5, 2], **args)


def _run(x=X, y=Y, net=None, learner=None, **kw):
    learner = learner or nm.Learner(duration=0.1, dt=0.01)
    return learner.run(net or _net(), x, y, **kw)


def _with(a, index, value):
    a = np.array(a, dtype=float)
    a[index] = value
    return a


# (id, action, attribute that must be named, value that must be shown)
CASES = [
    # --- complex synapse parameters
    ("lam negative", lambda: nm.ComplexSynapse(omega=0.0, lam=-0.5), "ComplexSynapse.lam", "-0.5"),
    ("lam array negative", lambda: nm.ComplexSynapse(lam=[[0.5, -0.25]]),
     "ComplexSynapse.lam", "-0.25"),
    ("lam NaN", lambda: nm.ComplexSynapse(lam=np.nan), "ComplexSynapse.lam", "nan"),
    ("lam_bias negative", lambda: nm.ComplexSynapse(lam_bias=-2.0),
     "ComplexSynapse.lam_bias", "-2.0"),
    ("omega NaN", lambda: nm.ComplexSynapse(omega=_with(np.zeros((2, 5)), (1, 3), np.nan)),
     "ComplexSynapse.omega", "nan"),
    ("omega inf", lambda: nm.ComplexSynapse(omega=_with(np.zeros((2, 5)), (0, 1), np.inf)),
     "ComplexSynapse.omega", "inf"),
    ("omega -inf", lambda: nm.ComplexSynapse(omega=-np.inf), "ComplexSynapse.omega", "-inf"),
    ("phi0 NaN", lambda: nm.ComplexSynapse(phi0=[np.nan]), "ComplexSynapse.phi0", "nan"),
    ("omega not numeric", lambda: nm.ComplexSynapse(omega="big"), "ComplexSynapse.omega", "str"),
    ("omega wrong shape", lambda: _net(synapse=nm.ComplexSynapse(omega=np.zeros((5, 2)))),
     "synapse[0].omega", "(5, 2)"),
    ("lam wrong shape", lambda: _net(synapse=nm.ComplexSynapse(lam=np.ones((2, 4)))),
     "synapse[0].lam", "(2, 4)"),
    ("omega_bias wrong shape", lambda: _net(bias=True, synapse=nm.ComplexSynapse(
        omega_bias=np.zeros(3))), "synapse[0].omega_bias", "(3,)"),
    ("static weight wrong shape", lambda: nm.RateNetwork(
        [5, 3, 2], synapse=[nm.StaticSynapse(weight=np.zeros((5, 3))), nm.ComplexSynapse()]),
     "synapse[0].weight", "(5, 3)"),
    ("initialiser gives NaN", lambda: _net(synapse=nm.ComplexSynapse(
        omega=lambda shape, rng: np.full(shape, np.nan))), "synapse[0].omega", "nan"),
    ("Normal std negative", lambda: nm.init.Normal(std=-1.0), "Normal.std", "-1.0"),
    # --- network
    ("unknown activation", lambda: _net(activation="sigmoidal"), "RateNetwork.activation",
     "'sigmoidal'"),
    ("unknown activation in list", lambda: nm.RateNetwork([5, 3, 2], activation=["tanh", "elu"]),
     "RateNetwork.activation[1]", "'elu'"),
    ("tau_synapse zero", lambda: _net(tau_synapse=0.0), "RateNetwork.tau_synapse", "0.0"),
    ("tau_synapse negative", lambda: _net(tau_synapse=-1.0), "RateNetwork.tau_synapse", "-1.0"),
    ("tau_neuron negative", lambda: _net(tau_neuron=-0.01), "RateNetwork.tau_neuron", "-0.01"),
    ("tau_synapse NaN", lambda: _net(tau_synapse=float("nan")), "RateNetwork.tau_synapse", "nan"),
    ("tau_synapse string", lambda: _net(tau_synapse="1s"), "RateNetwork.tau_synapse", "'1s'"),
    ("sizes non-integer", lambda: nm.RateNetwork([5, 2.5]), "RateNetwork.sizes", "2.5"),
    ("sizes zero", lambda: nm.RateNetwork([5, 0]), "RateNetwork.sizes", "0"),
    ("sizes single layer", lambda: nm.RateNetwork([5]), "RateNetwork.sizes", "[5]"),
    ("sizes not a sequence", lambda: nm.RateNetwork(5), "RateNetwork.sizes", "5"),
    ("sizes a string", lambda: nm.RateNetwork("52"), "RateNetwork.sizes", "'52'"),
    ("bias not bool", lambda: _net(bias="yes"), "RateNetwork.bias", "'yes'"),
    ("synapse not a synapse", lambda: _net(synapse="complex"), "RateNetwork.synapse[0]",
     "'complex'"),
    # --- learner options
    ("unknown rule", lambda: nm.Learner(rule="hebb"), "Learner.rule", "'hebb'"),
    ("unknown presentation", lambda: nm.Learner(presentation="interleaved"),
     "Learner.presentation", "'interleaved'"),
    ("unknown integrator", lambda: nm.Learner(integrator="rk45"), "Learner.integrator", "'rk45'"),
    ("unknown engine", lambda: nm.Learner(engine="torch"), "Learner.engine", "'torch'"),
    ("dt zero", lambda: nm.Learner(dt=0), "Learner.dt", "0"),
    ("dt negative", lambda: nm.Learner(dt=-0.001), "Learner.dt", "-0.001"),
    ("duration negative", lambda: nm.Learner(duration=-1.0), "Learner.duration", "-1.0"),
    ("tol zero", lambda: nm.Learner(tol=0.0), "Learner.tol", "0.0"),
    ("scipy without duration", lambda: nm.Learner(integrator="scipy"), "Learner.duration",
     "None"),
    ("dt does not divide presentation time", lambda: _run(learner=nm.Learner(
        presentation="online", dt=0.01, presentation_time=0.015, duration=1.0)),
     "Learner.presentation_time", "0.015"),
    ("presentation_time with batch presentation", lambda: nm.Learner(
        presentation="batch", presentation_time=0.05, duration=1.0),
     "Learner.presentation_time", "0.05"),
    ("presentation_time with batch presentation (Brian2 export)", lambda: _net(
        tau_neuron=0.01).to_brian2(presentation="batch", presentation_time=0.05),
     "RateNetwork.to_brian2.presentation_time", "0.05"),
    ("delta rule on multi-layer plastic net", lambda: nm.Learner(rule="delta").run(
        nm.RateNetwork([5, 3, 2]), X, Y), "Learner.rule", "[5, 3, 2]"),
    ("no plastic connection", lambda: _run(net=_net(synapse=nm.StaticSynapse(0.1))),
     "Learner.run.net", "RateNetwork"),
    # --- data
    ("x NaN", lambda: _run(x=_with(X, (3, 2), np.nan)), "Learner.run.x", "nan"),
    ("x inf", lambda: _run(x=_with(X, (0, 0), np.inf)), "Learner.run.x", "inf"),
    ("y NaN", lambda: _run(y=_with(Y, (9, 1), np.nan)), "Learner.run.y", "nan"),
    ("y -inf", lambda: _run(y=_with(Y, (2, 0), -np.inf)), "Learner.run.y", "-inf"),
    ("x features != input layer", lambda: _run(x=X[:, :4]), "Learner.run.x", "(10, 4)"),
    ("y outputs != output layer", lambda: _run(y=np.zeros((10, 3))), "Learner.run.y",
     "(10, 3)"),
    ("x, y different shots", lambda: _run(y=Y[:9]), "Learner.run.y", "(9, 2)"),
    ("x, y different shots (task axis)", lambda: _run(x=np.stack([X, X]),
                                                      y=np.stack([Y[:8], Y[:8]])),
     "Learner.run.y", "(2, 8, 2)"),
    ("x, y different tasks", lambda: _run(x=np.stack([X, X, X]), y=np.stack([Y, Y])),
     "Learner.run.y", "(2, 10, 2)"),
    ("x, y task axis mismatch", lambda: _run(x=X[None], y=Y), "Learner.run.y", "(10, 2)"),
    ("x one-dimensional", lambda: _run(x=X[0]), "Learner.run.x", "(5,)"),
    ("x no shots", lambda: _run(x=X[:0], y=Y[:0]), "Learner.run.x", "(1, 0, 5)"),
    ("record unknown variable", lambda: _run(record=["phi", "weights"]), "Learner.run.record",
     "'weights'"),
    ("record_every zero", lambda: _run(record=["phi"], record_every=0),
     "Learner.run.record_every", "0"),
    ("beta without validation data", lambda: _run(beta=0.1), "Learner.run.x_val", "None"),
    ("phi_init wrong shape", lambda: _run(phi_init=[np.zeros((5, 2))]),
     "Learner.run.phi_init[0]", "(5, 2)"),
    ("phi_init not a list", lambda: _run(phi_init=np.zeros((2, 5))), "Learner.run.phi_init",
     "ndarray"),
    ("phi_init too many arrays", lambda: _run(phi_init=[np.zeros((2, 5))] * 2),
     "Learner.run.phi_init", "2 arrays"),
    # --- seeds and model kinds (the protocol's doors)
    ("network seed negative", lambda: _net(seed=-1), "RateNetwork.seed", "-1"),
    ("network seed not integer", lambda: _net(seed=1.5), "RateNetwork.seed", "1.5"),
    ("dual seed negative", lambda: nm.DualSystem([1, 3, 1], seed=-2), "DualSystem.seed",
     "-2"),
    ("run on a non-model", lambda: _run(net=object()), "Learner.run.net", "object"),
    ("describe a non-model", lambda: nm.Learner().describe("net"), "Learner.run.net", "str"),
    ("CML on a non-model", lambda: nm.CML().meta_gradient([1, 2], nm.Task(X, Y, X, Y)),
     "CML.meta_gradient.net", "list"),
    ("exact on a non-model", lambda: nm.exact_meta_gradient(None, nm.Task(X, Y, X, Y)),
     "exact_meta_gradient.net", "NoneType"),
    ("exact cg_rtol negative", lambda: nm.exact_meta_gradient(_net(), nm.Task(X, Y, X, Y),
                                                              cg_rtol=-1.0),
     "exact_meta_gradient.cg_rtol", "-1.0"),
    ("exact newton_steps negative", lambda: nm.exact_meta_gradient(
        _net(), nm.Task(X, Y, X, Y), newton_steps=-1), "exact_meta_gradient.newton_steps",
     "-1"),
    ("meta-train a non-model", lambda: nm.MetaTrainer("net", nm.families.Sinusoid(),
                                                      nm.CML()), "MetaTrainer.net", "str"),
]


@pytest.mark.parametrize("action, attr, value", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_input_raises_validation_error(action, attr, value):
    with pytest.raises(nm.ValidationError) as err:
        action()
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, nm.NeuroMetaError)
    msg = str(err.value)
    # "Owner.attr: what is wrong (got value)"
    assert re.match(r"^[\w.\[\]]*" + re.escape(attr) + ": ", msg), msg
    got = re.search(r"\(got (.*)\)$", msg)
    assert got is not None and value in got.group(1), msg


def test_lam_message_is_exact():
    with pytest.raises(nm.ValidationError) as err:
        nm.ComplexSynapse(omega=0.0, lam=-0.5)
    assert str(err.value) == "ComplexSynapse.lam: must be >= 0 (got -0.5)"
    with pytest.raises(ValueError, match=r"^ComplexSynapse\.lam: must be >= 0 \(got -0\.5\)$"):
        nm.ComplexSynapse(lam=-0.5)


def test_a_bool_is_refused_as_a_bool_a_complex_number_as_complex():
    """``True`` is a number to Python (bool < int < ... < Complex); a real-valued door
    names it as the bool it is rather than as a complex value, and keeps the complex
    wording for complex values."""
    for value in (True, np.bool_(False)):
        with pytest.raises(nm.ValidationError) as err:
            nm.CML(beta=value)
        assert str(err.value) == f"CML.beta: must be a real number, not a bool (got {value!r})"
    with pytest.raises(nm.ValidationError) as err:
        nm.CML(beta=1j)
    assert str(err.value) == ("CML.beta: must be a real number (complex values are not "
                              "accepted) (got 1j)")


def test_errors_can_be_caught_by_builtin_or_package_class():
    assert issubclass(nm.ValidationError, nm.NeuroMetaError)
    assert issubclass(nm.ValidationError, ValueError)
    assert issubclass(nm.SimulationError, nm.NeuroMetaError)
    assert issubclass(nm.SimulationError, RuntimeError)
    for exc in (ValueError, nm.NeuroMetaError, nm.ValidationError):
        with pytest.raises(exc):
            nm.ComplexSynapse(lam=-1.0)


def test_valid_edge_cases_are_accepted():
    """What is allowed must not be refused: λ = 0, instantaneous neurons, numpy integers."""
    net = nm.RateNetwork(np.array([5, 2]), activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=0.0, lam=0.0))
    assert net.sizes == (5, 2)
    res = nm.Learner(duration=0.1, dt=0.01).run(net, X, Y)
    assert res.phi[0].shape == (2, 5)


# ------------------------------------------------------------------ divergence
def _independent_euler_blowup_step(x, y, omega, lam, tau, dt, n_max):
    """First step at which plain Euler on τ dφ/dt = (y − φx)xᵀ/K − λ(φ − ω) (linear
    neurons, instantaneous) stops being finite -- computed without the package."""
    K = x.shape[0]
    phi = omega.copy()
    with np.errstate(all="ignore"):
        for n in range(1, n_max + 1):
            grad = (y.T - phi @ x.T) @ x / K - lam * (phi - omega)
            phi = phi + dt / tau * grad
            if not np.isfinite(phi).all():
                return n
    return None


def test_divergence_raises_simulation_error_with_step_and_hint():
    rng = np.random.default_rng(1)
    x, y = 1e3 * rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    omega = rng.normal(size=(2, 5))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         tau_synapse=1.0, synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    learner = nm.Learner(rule="delta", integrator="euler", dt=0.1, duration=100.0)
    nan_step = _independent_euler_blowup_step(x, y, omega, 0.5, 1.0, 0.1, 1000)
    assert nan_step is not None          # the setting really diverges
    result = None
    with pytest.raises(nm.SimulationError) as err:
        result = learner.run(net, x, y, record=["phi"])
    assert result is None                # nothing (and so no NaN) is returned
    assert isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert "Hint" in msg
    step = int(re.search(r"step (\d+)", msg).group(1))
    # caught at the step it happens: before the first non-finite value, not later
    assert 1 <= step < nan_step, (step, nan_step)
    assert "nan" not in msg.lower()
    print(f"\n[divergence] reported step {step}, first non-finite Euler step {nan_step}: {msg}")


@pytest.mark.parametrize("integrator", ["rk4", "expeuler"])
def test_divergence_detected_with_other_integrators(integrator):
    rng = np.random.default_rng(2)
    x, y = 1e3 * rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=0.0, lam=0.5))
    with pytest.raises(RuntimeError, match=r"step \d+.*Hint"):
        nm.Learner(integrator=integrator, dt=0.1, duration=100.0).run(net, x, y)


def test_name_list_parses_and_refuses_in_one_place():
    """The methods lists of every run (and of the omniglot screens) are read by one
    function: None gives the default, a comma-separated string or a list is kept in
    order without repeats, anything else is one ValidationError naming where and what."""
    from neuro_meta import _params as P

    known = ("cml", "maml", "reptile")
    assert P.name_list(None, known, ("maml",), "run x.methods") == ["maml"]
    assert P.name_list(" reptile, cml,reptile ,", known, (), "w") == ["reptile", "cml"]
    assert P.name_list(("cml", "cml"), known, (), "w") == ["cml"]
    for bad, got in (("", "nothing"), ([], "nothing"), (",", "nothing"), ("cml,mamal",
                     "cml,mamal"), (5, "5"), ([1, "cml"], "1,cml"), ({"cml": 1}, "{'cml': 1}")):
        with pytest.raises(nm.ValidationError, match=r"^run x\.methods: must be a comma-"
                           r"separated list of cml, maml, reptile \(got " + re.escape(got)
                           + r"\)$"):
            P.name_list(bad, known, (), "run x.methods")
    with pytest.raises(nm.ValidationError, match=r"^s: methods: must be a comma-separated list "
                                              r"of the run's methods \(got x\)$"):
        P.name_list("x", known, (), "s: methods", "the run's methods")


# ------------------------------------------------------------------ review follow-ups
def test_presentation_time_only_with_online_presentation():
    """presentation_time is only used online: with batch it is refused, naming the
    attribute, the rule and the value; online (and batch without it) are accepted and
    the repr shows it only where it is used."""
    with pytest.raises(nm.ValidationError, match=r"^Learner\.presentation_time: is only "
                       r"used with presentation='online'.*\(got 0\.05\)$"):
        nm.Learner(presentation="batch", presentation_time=0.05, tol=1e-6)
    online = nm.Learner(presentation="online", presentation_time=0.05, duration=1.0)
    assert "presentation_time=0.05" in repr(online)
    batch = nm.Learner(presentation="batch", duration=1.0)
    assert batch.presentation_time is None and "presentation_time" not in repr(batch)


def test_unknown_model_name_is_said_once():
    from neuro_meta.models import available_models, find_model

    with pytest.raises(nm.ValidationError) as err:
        find_model("nosuch")
    msg = str(err.value)
    assert msg.startswith("load_model.name: ") and msg.count("nosuch") == 1, msg
    assert "(got 'nosuch')" in msg
    assert all(n in msg.split("available: ", 1)[1] for n, _, _ in available_models())


def test_divergence_message_shows_4_significant_digits_and_keeps_the_value():
    """The message rounds max |x| to 4 significant digits (no 17-digit floats); the
    error carries the step, time, variable and the value in full precision."""
    rng = np.random.default_rng(1)
    x, y = 1e3 * rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    with pytest.raises(nm.SimulationError) as err:
        nm.Learner(integrator="euler", dt=0.1, duration=100.0).run(_net(), x, y)
    e, msg = err.value, str(err.value)
    got = re.search(r"at step (\d+) \(t = (\S+) s\): max \|(\w+\[\d+\])\| = (\S+)\. Hint",
                    msg)
    assert got, msg
    step, t, var, value = got.groups()
    assert sum(c.isdigit() for c in value.split("e")[0]) <= 4, msg
    assert (int(step), var) == (e.step, e.variable) and float(t) == pytest.approx(e.t)
    assert e.value >= 1e10 and float(value) == pytest.approx(e.value, rel=1e-3)


def test_a_solver_divergence_has_no_simulated_time():
    """The phase solver's steps are no time of the simulation: its divergence message
    names its steps, not "t = steps x dt s", and ``t`` is None (the check itself, fed a
    state beyond the bound as the solver would)."""
    from neuro_meta.engines.phase import DIVERGENCE_BOUND, check_finite

    net = _net()
    spec = type("Spec", (), {"dt": 0.1, "beta": 0.0, "integrator": "expeuler"})()
    phi = [np.full((1, 2, 5), 2 * DIVERGENCE_BOUND)]
    v = [np.zeros((1, 2))]
    with pytest.raises(nm.SimulationError) as err:
        check_finite(phi, v, 37, spec, net, solver=True)
    msg = str(err.value)
    assert "in the phase solver (settle='solve'), after 37 step(s)" in msg, msg
    assert "t =" not in msg and "dt (now" not in msg and "settle='integrate'" in msg, msg
    assert err.value.t is None and err.value.step == 37
    with pytest.raises(nm.SimulationError) as err:      # integrated: time and dt as before
        check_finite(phi, v, 37, spec, net)
    assert "at step 37 (t = 3.7 s)" in str(err.value) and err.value.t == pytest.approx(3.7)
