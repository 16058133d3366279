"""The Brian2 engine against the numpy engine: same model, same data, same Euler steps.

Every numerical test compares Brian2's trajectories with the numpy engine's (an
independent implementation of the same equations), never with numbers stored from an
earlier run. Both engines use float64; agreement is expected to rounding (~1e-16), the
acceptance bound is 1e-9.
"""
import contextlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.cml import UnsettledEstimateWarning
from neuro_meta.errors import SimulationError, UnsupportedError
from neuro_meta.engines import phase

brian2 = pytest.importorskip("brian2")
from neuro_meta.engines import brian2_engine  # noqa: E402

TOL = 1e-9


def _complex(rng, n_post, n_pre):
    """A complex synapse with random ω and λ (so a wrong synapse ordering would show)."""
    return nm.ComplexSynapse(omega=rng.normal(0.0, 0.4, size=(n_post, n_pre)),
                             lam=rng.uniform(0.2, 0.8, size=(n_post, n_pre)),
                             omega_bias=rng.normal(0.0, 0.2, size=n_post),
                             lam_bias=rng.uniform(0.2, 0.8, size=n_post))


def _net(rng, sizes=(5, 2), bias=False, activation="tanh", **kw):
    return nm.RateNetwork(list(sizes), activation=activation, bias=bias, seed=0,
                          synapse=_complex(rng, sizes[-1], sizes[-2]), **kw)


def _data(rng, n_tasks, shots, n_in, n_out):
    lead = () if n_tasks is None else (n_tasks,)
    return (rng.normal(size=lead + (shots, n_in)),
            0.5 * rng.normal(size=lead + (shots, n_out)))


def _learner(engine, **kw):
    opts = dict(rule="delta", presentation="online", integrator="euler", dt=1e-3,
                duration=3.0)
    opts.update(kw)
    return nm.Learner(engine=engine, **opts)


def _max_diff(a, b):
    """Max |a - b| over lists (or single arrays) of arrays of equal shapes."""
    if isinstance(a, (list, tuple)):
        return max(_max_diff(p, q) for p, q in zip(a, b) if p is not None)
    assert np.shape(a) == np.shape(b)
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _both(net, x, y, record=("phi",), **kw):
    """The same phase run by the numpy and the brian2 engine."""
    run_kw = {k: kw.pop(k) for k in ("x_val", "y_val", "beta", "phi_init", "record_every")
              if k in kw}
    return tuple(_learner(engine, **kw).run(net, x, y, record=record, **run_kw)
                 for engine in ("numpy", "brian2"))


def _assert_same(a, b, keys=("phi",)):
    np.testing.assert_allclose(b.t, a.t, rtol=0, atol=1e-12)
    assert a.steps == b.steps
    for key in keys:
        assert _max_diff(a.record[key], b.record[key]) < TOL, key
    assert _max_diff(a.phi_aug, b.phi_aug) < TOL
    assert _max_diff(a.v, b.v) < TOL


# ---------------------------------------------------------------------- acceptance 1
CASES = {
    "single task": dict(n_tasks=None, bias=False),
    "3 tasks": dict(n_tasks=3, bias=False),
    "3 tasks, bias": dict(n_tasks=3, bias=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_free_and_nudged_phi_trajectories_match_numpy_engine(rng, case):
    n_tasks, bias = CASES[case]["n_tasks"], CASES[case]["bias"]
    net = _net(rng, bias=bias)
    x, y = _data(rng, n_tasks, 10, 5, 2)
    xv, yv = _data(rng, n_tasks, 4, 5, 2)
    keys = ("phi", "bias") if bias else ("phi",)

    free_np, free_b2 = _both(net, x, y, record=keys)
    # the weights really move: the comparison is not between two constant trajectories
    assert _max_diff(free_np.record["phi"][0][0], free_np.record["phi"][0][-1]) > 0.05
    _assert_same(free_np, free_b2, keys)
    assert free_np.t.shape == (3001,)

    nudged_np, nudged_b2 = _both(net, x, y, record=keys, x_val=xv, y_val=yv, beta=0.5,
                                 phi_init=free_np.phi_aug)
    _assert_same(nudged_np, nudged_b2, keys)
    # nudging changes the trajectory (the validation samples are really shown)
    assert _max_diff(nudged_np.phi_aug, free_np.phi_aug) > 1e-3


def test_agreement_depends_on_the_step_order(rng, monkeypatch):
    """The test above can fail: advancing synapses before the rates are refreshed (the
    tie Brian2 would otherwise break by object name) changes phi(t) by far more than TOL."""
    net = _net(rng)
    x, y = _data(rng, None, 10, 5, 2)
    ref = _learner("numpy", duration=0.5).run(net, x, y)
    monkeypatch.setitem(brian2_engine.SCHEDULE, "synapses", ("groups", 0))
    out = _learner("brian2", duration=0.5).run(net, x, y)
    assert _max_diff(ref.phi_aug, out.phi_aug) > 1e3 * TOL


def test_recording_every_n_steps_v_and_loss(rng):
    net = _net(rng, bias=True)
    x, y = _data(rng, 2, 6, 5, 2)
    a, b = _both(net, x, y, record=("phi", "v", "r", "loss"), record_every=7, duration=0.5)
    assert a.t.shape == b.t.shape == (73,)        # 0, 7, ..., 497 and the final 500
    _assert_same(a, b, ("phi", "v", "r", "loss"))


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "relu", "softplus"])
def test_activations_match(rng, activation):
    net = _net(rng, activation=activation, bias=True)
    x, y = _data(rng, 2, 5, 5, 2)
    a, b = _both(net, x, y, record=("phi", "v"), duration=0.5)
    _assert_same(a, b, ("phi", "v"))


def test_user_activation_derivative_from_its_brian2_expression(rng):
    act = nm.Activation("scaled_tanh", lambda v: 2 * np.tanh(v / 2),
                        lambda v: 1 - np.tanh(v / 2) ** 2,
                        lambda v: -np.tanh(v / 2) * (1 - np.tanh(v / 2) ** 2),
                        "2*tanh(v/2)")
    net = _net(rng, activation=act)
    x, y = _data(rng, None, 5, 5, 2)
    a, b = _both(net, x, y, duration=0.5)
    _assert_same(a, b)


def test_hidden_static_layer_and_backprop_with_only_the_output_plastic(rng):
    syn = [nm.StaticSynapse(weight=nm.init.Glorot(), bias=0.1), _complex(rng, 3, 4)]
    net = nm.RateNetwork([5, 4, 3], activation=["relu", "tanh"], synapse=syn, bias=True,
                         seed=1)
    x, y = _data(rng, 2, 6, 5, 3)
    for rule in ("delta", "backprop"):
        a, b = _both(net, x, y, record=("phi", "v"), duration=0.5, rule=rule)
        _assert_same(a, b, ("phi", "v"))


def test_batch_presentation_matches(rng):
    net = _net(rng, bias=True)
    x, y = _data(rng, 2, 4, 5, 2)
    xv, yv = _data(rng, 2, 2, 5, 2)
    a, b = _both(net, x, y, record=("phi", "v"), presentation="batch", duration=0.5,
                 x_val=xv, y_val=yv, beta=0.3)
    _assert_same(a, b, ("phi", "v"))


@pytest.mark.parametrize("presentation,tol", [("online", 5e-3), ("batch", 1e-3)])
def test_settling_tolerance_stops_at_the_same_step(rng, presentation, tol):
    """The two tasks settle at different checks: the first is frozen while the other
    goes on (the numpy engine's rule), then the phase stops."""
    net = _net(rng, bias=True, tau_synapse=0.3)
    x, y = _data(rng, 2, 5, 5, 2)
    online = {"presentation_time": 0.003} if presentation == "online" else {}
    a, b = _both(net, x, y, presentation=presentation, duration=None, tol=tol, **online)
    assert np.all(a.settled) and np.array_equal(a.settled, b.settled)
    assert a.steps == b.steps < 300 * 1000
    _assert_same(a, b)


# ---------------------------------------------------------------------- errors
def test_unsupported_integrator_is_named(rng):
    net = _net(rng)
    x, y = _data(rng, None, 4, 5, 2)
    with pytest.raises(UnsupportedError, match=r"^Learner\.integrator: the brian2 engine "
                       r"runs a RateNetwork with 'euler' only \(got 'rk4'\)$"):
        nm.Learner(engine="brian2", integrator="rk4", duration=0.1).run(net, x, y)
    with pytest.raises(UnsupportedError, match="'expeuler'"):
        nm.Learner(engine="brian2", integrator="expeuler", duration=0.1).run(net, x, y)


def test_instantaneous_neurons_unsupported(rng):
    net = _net(rng, tau_neuron=0.0)
    x, y = _data(rng, None, 4, 5, 2)
    with pytest.raises(UnsupportedError, match=r"RateNetwork\.tau_neuron: .*\(got 0\.0\)"):
        _learner("brian2", duration=0.1).run(net, x, y)


def test_backprop_through_plastic_hidden_layers_unsupported(rng):
    net = nm.RateNetwork([3, 4, 2], synapse=nm.ComplexSynapse(omega=0.1, lam=0.5), seed=0)
    x, y = _data(rng, None, 4, 3, 2)
    with pytest.raises(UnsupportedError, match=r"Learner\.rule: .*'backprop'"):
        _learner("brian2", rule="backprop", duration=0.1).run(net, x, y)


def test_activation_without_symbolic_derivative_unsupported(rng):
    act = nm.Activation("hard", lambda v: np.clip(v, -1, 1), lambda v: 1.0 * (abs(v) < 1),
                        np.zeros_like, "clip(v, -1, 1)")
    net = _net(rng, activation=act)
    x, y = _data(rng, None, 4, 5, 2)
    with pytest.raises(UnsupportedError, match=r"RateNetwork\.activation\[0\]"):
        _learner("brian2", duration=0.1).run(net, x, y)


def test_divergence_raises_like_the_numpy_engine(rng):
    net = _net(rng)   # tau_neuron = 10 ms: Euler with dt = 50 ms is unstable
    x, y = _data(rng, None, 4, 5, 2)
    for engine in ("numpy", "brian2"):
        with pytest.raises(SimulationError, match="diverged"):
            _learner(engine, dt=0.05, presentation_time=0.05, duration=50.0).run(net, x, y)


# Linear networks (tau_neuron = 10 ms) made to diverge: Euler is unstable for the neurons
# when dt > 20 ms, and for the fast weights when the inputs are large. ``check`` is the
# engine's test interval (online: steps per sample x 4 samples; batch: 10 steps).
DIVERGING = {
    "online, v, tested every 4 steps": dict(
        scale=1.0, check=4, presentation="online", dt=0.05, presentation_time=0.05,
        duration=50.0),
    "online, v overflows to inf/nan before the only test (end of phase)": dict(
        scale=1.0, check=800, presentation="online", dt=0.05, presentation_time=10.0,
        duration=30.0),
    "online, phi, with a tolerance": dict(
        scale=100.0, check=8, presentation="online", dt=5e-3, presentation_time=0.01,
        duration=None, tol=1e-3),
    "batch, v, tested every 10 steps": dict(
        scale=1.0, check=10, presentation="batch", dt=0.025, duration=50.0),
    "batch, phi, with a tolerance": dict(
        scale=100.0, check=10, presentation="batch", dt=5e-3, duration=None, tol=1e-3),
}
DIVERGED = re.compile(r"Learner\.run: the simulation of the RateNetwork diverged at step (\d+) "
                      r"\(t = (\S+) s\): "
                      r"max \|(\w+\[\d+\])\| = (\S+)\. (Hint: .*)", re.S)


def _divergence(engine, net, x, y, **kw):
    """(step, t, array, max |array|, hint) of the SimulationError of a diverging run; the
    value in full precision (the error's ``value``: the message shows 4 digits)."""
    with pytest.raises(SimulationError) as info:
        _learner(engine, **kw).run(net, x, y, record=("phi", "v"))
    err = info.value
    match = DIVERGED.fullmatch(str(err))
    assert match, str(err)
    step, t, name, value, hint = match.groups()
    # the message's numbers are the attributes', the value rounded to 4 digits
    assert (err.step, err.variable) == (int(step), name)
    assert float(t) == pytest.approx(err.t, rel=1e-5)
    assert value == f"{err.value:.4g}" and sum(c.isdigit() for c in value.split("e")[0]) <= 4
    return int(step), t, name, err.value, hint


@pytest.mark.parametrize("case", list(DIVERGING))
def test_divergence_is_reported_at_the_step_it_happens_like_the_numpy_engine(
        rng, monkeypatch, case):
    """Brian2 names the step at which the state left the bound (between its tests, not
    the test's step), the same step, array and message as the numpy engine; the value
    reported is that of that step (finite, never a later nan), equal to rounding."""
    kw = dict(DIVERGING[case])
    scale, check = kw.pop("scale"), kw.pop("check")
    net = _net(rng, activation="linear", bias=True)
    x, y = _data(rng, 2, 4, 5, 2)
    x = scale * x
    ref = _divergence("numpy", net, x, y, **kw)
    out = _divergence("brian2", net, x, y, **kw)
    assert out[0] == ref[0] and out[0] % check != 0     # the step itself, not a test's
    assert out[1:3] == ref[1:3] and out[4] == ref[4]    # t, array, hint
    assert np.isfinite(out[3]) and out[3] >= 1e10
    assert out[3] == pytest.approx(ref[3], rel=1e-9)
    if "phi" in case:
        assert out[2] == "phi[0]"
    if "overflows" in case:
        # the state Brian2 holds at its test is no longer finite, yet the step and value
        # reported are those of the first step beyond the bound
        monkeypatch.setattr(phase, "DIVERGENCE_BOUND", np.inf)
        step, _, _, value, _ = _divergence("numpy", net, x, y, **kw)
        assert not np.isfinite(value) and out[0] < step < 600 < check


def test_static_weights_beyond_the_bound_diverge_at_step_1_like_the_numpy_engine(rng):
    syn = [nm.StaticSynapse(weight=1e11, bias=0.1), _complex(rng, 2, 4)]
    net = nm.RateNetwork([5, 4, 2], activation=["tanh", "linear"], synapse=syn, bias=True,
                         seed=1)
    x, y = _data(rng, 2, 4, 5, 2)
    ref = _divergence("numpy", net, x, y, duration=0.1)
    out = _divergence("brian2", net, x, y, duration=0.1)
    assert out == ref and out[:3] == (1, "0.001", "phi[0]")


def test_exported_network_has_no_divergence_watch(rng):
    bnet = _net(rng).to_brian2(dt=1e-3)
    bnet.run(1e-3 * brian2.second, namespace={})
    assert "v_ok" not in bnet["layer_1"].variables
    assert "phi_ok" not in bnet["conn_0"].variables


def test_codegen_target_restored(rng):
    prefs = brian2.prefs
    before = prefs.codegen.target
    net = _net(rng)
    x, y = _data(rng, None, 3, 5, 2)
    _learner("brian2", duration=0.01, brian2_target="numpy").run(net, x, y)
    assert prefs.codegen.target == before


# ---------------------------------------------------------------------- cython target
@pytest.mark.slow
def test_cython_target_matches(rng):
    """Slow only on a cold cache: the first compilation of a model takes ~20 s."""
    net = _net(rng, bias=True)
    x, y = _data(rng, 3, 10, 5, 2)
    ref = _learner("numpy").run(net, x, y, record=["phi", "bias"])
    out = _learner("brian2", brian2_target="cython").run(net, x, y, record=["phi", "bias"])
    _assert_same(ref, out, ("phi", "bias"))


# ---------------------------------------------------------------------- acceptance 2: CML
@pytest.mark.skipif(not hasattr(nm, "CML"), reason="neuro_meta.CML not available")
@pytest.mark.parametrize("estimator", ["symmetric", "standard"])
def test_cml_meta_gradient_matches_numpy_engine(rng, estimator):
    net = _net(rng, bias=True)
    x, y = _data(rng, 3, 10, 5, 2)
    xv, yv = _data(rng, 3, 4, 5, 2)
    grads = {}
    for engine in ("numpy", "brian2"):   # phases of fixed length: standard warns
        with (pytest.warns(UnsettledEstimateWarning) if estimator == "standard"
              else contextlib.nullcontext()):
            cml = nm.CML(beta=1e-2, estimator=estimator,
                         learner=_learner(engine, duration=2.0))
        grads[engine] = cml.meta_gradient(net, nm.Task(x, y, xv, yv))
    assert set(grads["numpy"]) == set(grads["brian2"])
    for key in grads["numpy"]:
        assert _max_diff(grads["numpy"][key], grads["brian2"][key]) < 1e-8, key
    assert np.abs(grads["numpy"]["omega"][0]).max() > 1e-3    # a non-trivial gradient


# ---------------------------------------------------------------------- acceptance 3: export
def test_to_brian2_exports_readable_equations_and_runs_in_plain_brian2(rng):
    net = _net(rng, bias=True)
    x, y = _data(rng, None, 10, 5, 2)
    bnet = net.to_brian2(x=x, y=y, dt=1e-3)
    assert isinstance(bnet, brian2.Network)
    syn = bnet["conn_0"]
    eqs = str(syn.equations)
    for text in ("dphi/dt = (plasticity - lam*(phi - omega))/tau_phi", "(clock-driven)",
                 "omega : 1 (constant)", "lam : 1 (constant)"):
        assert text in eqs
    assert str(syn.summed_updaters["I_syn_post"].expression) == "phi*r_pre"
    assert "dv/dt = (-v + I)/tau_v" in str(bnet["layer_1"].equations)
    text = brian2_engine.describe(bnet)
    for line in ("I_syn_post = phi*r_pre : 1 (summed)", "I_bias_post = phi*r_pre : 1 (summed)",
                 "every step: r = tanh(v); err = gain*(target - r)*(1 - r**2)",
                 "stimulus = x_in(t % T_cycle, i) : 1"):
        assert line in text

    # plain Brian2: run, read phi, compare with the numpy engine
    bnet.run(3 * brian2.second, namespace={})
    phi = np.concatenate([np.asarray(syn.phi[:]).reshape(2, 5),
                          np.asarray(bnet["conn_0_bias"].phi[:]).reshape(2, 1)], axis=1)
    ref = _learner("numpy").run(net, x, y)
    assert _max_diff(phi, ref.phi_aug[0]) < TOL

    # store()/restore(): back to the initial state, and the run repeats exactly
    bnet.restore()
    assert float(bnet.t) == 0.0
    np.testing.assert_array_equal(syn.phi[:], syn.omega[:])
    bnet.run(3 * brian2.second, namespace={})
    assert _max_diff(np.asarray(syn.phi[:]).reshape(2, 5), phi[:, :5]) == 0.0


def test_to_brian2_nudged_phase_and_defaults(rng):
    net = _net(rng)
    x, y = _data(rng, 2, 6, 5, 2)
    xv, yv = _data(rng, 2, 3, 5, 2)
    free = _learner("numpy", duration=0.5).run(net, x, y)
    bnet = net.to_brian2(x=x, y=y, x_val=xv, y_val=yv, beta=0.5, phi_init=free.phi_aug,
                         dt=1e-3)
    bnet.run(0.5 * brian2.second, namespace={})
    ref = _learner("numpy", duration=0.5).run(net, x, y, x_val=xv, y_val=yv, beta=0.5,
                                               phi_init=free.phi_aug)
    phi = np.asarray(bnet["conn_0"].phi[:]).reshape(2, 2, 5)
    assert _max_diff(phi, ref.phi_aug[0]) < TOL
    # without data: no error signal (gain 0), phi relaxes towards omega only; Euler's
    # closed form phi_n - omega = (1 - dt lam / tau_phi)^n (phi_0 - omega)
    omega, lam = net.connections[0].omega, net.connections[0].lam
    bare = net.to_brian2(phi_init=[omega + 1.0], dt=1e-3)
    bare.run(0.5 * brian2.second, namespace={})
    phi = np.asarray(bare["conn_0"].phi[:]).reshape(2, 5)
    np.testing.assert_allclose(phi - omega, (1 - 1e-3 * lam / net.tau_synapse) ** 500,
                               rtol=1e-12)
    with pytest.raises(nm.ValidationError, match=r"to_brian2\.y: is required"):
        net.to_brian2(x=x)


# ---------------------------------------------------------------------- C++ standalone
@pytest.mark.slow
def test_cpp_standalone_build_and_rerun_with_run_args(tmp_path):
    """The recipe of docs/brian2.md: build once, rerun with new omega via run_args."""
    script = textwrap.dedent(f"""
        import numpy as np, brian2 as b2, neuro_meta as nm
        b2.set_device("cpp_standalone", build_on_run=False)
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(6, 3)), 0.5 * rng.normal(size=(6, 2))
        net = nm.RateNetwork([3, 2], synapse=nm.ComplexSynapse(omega=0.1, lam=0.5),
                             bias=False, seed=0)
        bnet = net.to_brian2(x=x, y=y, dt=1e-3)
        bnet.run(1 * b2.second, namespace={{}})
        b2.device.build(directory={str(tmp_path / "project")!r}, run=False)
        learner = nm.Learner(rule="delta", presentation="online", integrator="euler",
                             dt=1e-3, duration=1.0)
        syn, out = bnet["conn_0"], bnet["layer_1"]
        worst = 0.0
        for omega in (0.1, -0.3, 0.7):
            w = np.full((2, 3), omega)
            b2.device.run(run_args={{syn.omega: w.ravel(), syn.phi: w.ravel(),
                                     out.v: w @ x[0]}})
            ref = learner.run(net.with_theta({{"omega": [w], "lam": [np.full((2, 3), 0.5)],
                                              "omega_bias": [None], "lam_bias": [None]}}),
                              x, y)
            worst = max(worst, np.abs(np.asarray(syn.phi[:]).reshape(2, 3) - ref.phi[0]).max())
        try:    # the engine itself needs a runtime device
            learner2 = nm.Learner(rule="delta", presentation="online", integrator="euler",
                                  dt=1e-3, duration=0.1, engine="brian2")
            learner2.run(net, x, y)
        except nm.UnsupportedError as err:
            assert str(err).startswith("Learner.engine: the brian2 engine runs on")
        else:
            raise AssertionError("no UnsupportedError under cpp_standalone")
        print("MAXDIFF", worst)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    worst = float(out.stdout.split("MAXDIFF")[-1])
    assert worst < TOL


def test_to_brian2_takes_x_and_y_by_position_as_documented(rng):
    """``net.to_brian2(x, y)``: the method had only ``**kwargs`` and refused the data by
    position (network_to_brian2 documents x and y as positional); an unknown keyword is
    Python's TypeError naming it."""
    net = _net(rng)
    x, y = rng.normal(size=(3, net.n_in)), rng.normal(size=(3, net.n_out))
    a, b = net.to_brian2(x, y, dt=1e-3), net.to_brian2(x=x, y=y, dt=1e-3)
    assert sorted(o.name for o in a.objects) == sorted(o.name for o in b.objects)
    with pytest.raises(TypeError, match="dtt"):
        net.to_brian2(x, y, dtt=1e-3)
