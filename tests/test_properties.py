"""Property-based tests (hypothesis) over the public entry points.

Every generated input either works -- and then the result holds no NaN -- or raises a
neuro_meta error whose message names the attribute and shows the value (``(got ...)``),
or, for a simulation that diverges, gives a hint. Never an uncaught IndexError,
ZeroDivisionError, TypeError or numpy warning from inside the package.
"""
import re
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import neuro_meta as nm
from neuro_meta.families import LinearTeacher, Sinusoid

N = 500
SETTINGS = settings(max_examples=N, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
reals = st.one_of(st.floats(-1e3, 1e3), st.integers(-5, 5), floats)
junk = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.lists(st.integers(),
                                                                          max_size=2),
                 st.just(object()), st.just(np.array([[1.0, 2.0]])))
scalar_or_junk = st.one_of(reals, junk)


def mostly(valid, bad=junk):
    """``valid`` about four times in five, else ``bad``."""
    return st.tuples(st.integers(0, 4), valid, bad).map(lambda t: t[1] if t[0] else t[2])


def small_arrays(max_dims=3, max_side=4, elements=None):
    return hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=max_dims,
                                                   min_side=0, max_side=max_side),
                      elements=elements if elements is not None else
                      st.floats(-10, 10) | floats)


def check_error(err):
    """A package error with a message that names the attribute and the value."""
    assert isinstance(err, nm.NeuroMetaError), f"{type(err).__name__}: {err}"
    msg = str(err)
    if isinstance(err, nm.SimulationError):
        assert "Hint" in msg or "did not converge" in msg or "solve_ivp" in msg, msg
    else:
        assert re.match(r"^(run \w+\.)?[\w\[\]\.']+(\.[\w\[\]']+)?: ", msg), msg
        assert "(got " in msg, msg


def attempt(fn):
    """Run ``fn``; package errors are checked, anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        try:
            out = fn()
        except nm.NeuroMetaError as err:
            check_error(err)
            event(f"raised {type(err).__name__}: {str(err).split(':')[0]}")
            return None, err
        event("worked")
        return out, None


def assert_finite(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            assert_finite(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            assert_finite(v)
    elif isinstance(tree, np.ndarray):
        assert np.all(np.isfinite(tree))


# ------------------------------------------------------------------ model description
@SETTINGS
@given(omega=st.one_of(scalar_or_junk, small_arrays()), lam=st.one_of(scalar_or_junk,
                                                                      small_arrays()),
       phi0=st.one_of(st.none(), reals), omega_bias=scalar_or_junk,
       lam_bias=st.one_of(st.none(), reals))
def test_complex_synapse(omega, lam, phi0, omega_bias, lam_bias):
    attempt(lambda: nm.ComplexSynapse(omega=omega, lam=lam, phi0=phi0,
                                      omega_bias=omega_bias, lam_bias=lam_bias))


@SETTINGS
@given(weight=st.one_of(scalar_or_junk, small_arrays()), bias=scalar_or_junk)
def test_static_synapse(weight, bias):
    attempt(lambda: nm.StaticSynapse(weight=weight, bias=bias))


syn_ok = st.one_of(
    st.builds(nm.ComplexSynapse, omega=st.floats(-2, 2), lam=st.floats(0, 3)),
    st.builds(nm.ComplexSynapse, omega=st.just(nm.init.Glorot()),
              lam=st.just(nm.init.Uniform(0.1, 1.0))),
    st.builds(nm.StaticSynapse, weight=st.floats(-1, 1)),
    st.builds(nm.ComplexSynapse, omega=small_arrays(2, 3, st.floats(-1, 1)),
              lam=st.floats(0, 1)))


@SETTINGS
@given(sizes=mostly(st.lists(st.integers(1, 4), min_size=2, max_size=4),
                    st.one_of(st.lists(st.integers(-1, 4), max_size=4), junk)),
       activation=mostly(st.sampled_from(list(nm.ACTIVATIONS)), st.one_of(
           st.sampled_from(["elu", ""]), junk,
           st.lists(st.sampled_from(list(nm.ACTIVATIONS)), max_size=3))),
       synapse=mostly(syn_ok, st.one_of(junk, st.lists(syn_ok, max_size=3))),
       bias=mostly(st.booleans()), tau_neuron=mostly(st.floats(0, 1), scalar_or_junk),
       tau_synapse=mostly(st.floats(0.01, 10), scalar_or_junk),
       seed=st.one_of(st.none(), st.integers(0, 10)))
def test_rate_network(sizes, activation, synapse, bias, tau_neuron, tau_synapse, seed):
    attempt(lambda: nm.RateNetwork(sizes, activation=activation, synapse=synapse, bias=bias,
                                   tau_neuron=tau_neuron, tau_synapse=tau_synapse, seed=seed))


learner_kwargs = st.fixed_dictionaries({}, optional={
    "rule": st.one_of(st.sampled_from(["delta", "backprop", "hebb"]), junk),
    "presentation": st.one_of(st.sampled_from(["batch", "online", "x"]), junk),
    "integrator": st.one_of(st.sampled_from(["euler", "expeuler", "rk4", "scipy", "rk9"]),
                            junk),
    "dt": st.one_of(st.none(), reals, junk),
    "duration": st.one_of(st.none(), reals, junk),
    "tol": st.one_of(st.none(), reals, junk),
    "max_duration": st.one_of(st.none(), reals),
    "presentation_time": st.one_of(st.none(), reals),
    "engine": st.one_of(st.sampled_from(["numpy", "brian2", "nest"]), junk),
    "settle": st.one_of(st.sampled_from(["integrate", "solve", "newton"]), junk),
})


@SETTINGS
@given(kw=learner_kwargs)
def test_learner_constructor(kw):
    attempt(lambda: nm.Learner(**kw))


# ------------------------------------------------------------------ running
def _net(sizes, act, bias, tau_neuron):
    return nm.RateNetwork(sizes, activation=act, bias=bias, tau_neuron=tau_neuron, seed=0,
                          synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.5), lam=0.5))


data_elems = st.one_of(st.floats(-5, 5), st.sampled_from([np.nan, np.inf, 1e200, -1e200]))


@st.composite
def data_for(draw, n_in, n_out):
    """Mostly well-shaped data (with or without a task axis), sometimes not."""
    if draw(st.integers(0, 9)) == 0:
        return draw(small_arrays(3, 4, data_elems)), draw(small_arrays(3, 4, data_elems))
    lead = draw(st.sampled_from([(), (1,), (2,)]))
    k = draw(st.integers(1, 4))
    elems = st.floats(-5, 5) if draw(st.integers(0, 9)) else data_elems
    x = draw(hnp.arrays(np.float64, lead + (k, n_in), elements=elems))
    y = draw(hnp.arrays(np.float64, lead + (k, n_out), elements=elems))
    return x, y


@SETTINGS
@given(n_in=st.integers(1, 3), n_out=st.integers(1, 2), hidden=st.booleans(),
       act=st.sampled_from(list(nm.ACTIVATIONS)), bias=st.booleans(),
       tau_neuron=st.sampled_from([0.0, 0.05]), data=st.data(),
       rule=mostly(st.just("backprop"), st.just("delta")),
       presentation=st.sampled_from(["batch", "online"]),
       integrator=st.sampled_from(["euler", "expeuler", "rk4"]),
       dt=st.sampled_from([None, 0.01, 0.05, 0.5]),
       record=mostly(st.lists(st.sampled_from(["phi", "bias", "v", "r", "loss"]), max_size=3),
                     st.one_of(junk, st.just(["w"]))),
       record_every=mostly(st.integers(1, 3), st.one_of(st.integers(-1, 0), junk)),
       beta=mostly(st.one_of(st.just(0.0), st.floats(-0.1, 0.1))))
def test_learner_run(n_in, n_out, hidden, act, bias, tau_neuron, data, rule, presentation,
                     integrator, dt, record, record_every, beta):
    sizes = [n_in, 3, n_out] if hidden else [n_in, n_out]
    x, y = data.draw(data_for(n_in, n_out))
    net = _net(sizes, act, bias, tau_neuron)
    learner = nm.Learner(rule=rule, presentation=presentation, integrator=integrator,
                         dt=dt, duration=0.5,
                         presentation_time=(0.05 if dt != 0.5 else 0.5)
                         if presentation == "online" else None)
    res, err = attempt(lambda: learner.run(net, x, y, record=record,
                                           record_every=record_every, beta=beta,
                                           x_val=x, y_val=y))
    if res is not None:
        assert_finite(res.phi)
        assert_finite(res.v)
        assert_finite(res.record)


@SETTINGS
@given(data=st.data(), n_in=st.integers(1, 3), n_out=st.integers(1, 3))
def test_task(data, n_in, n_out):
    x, y = data.draw(data_for(n_in, n_out))
    xv, yv = data.draw(data_for(n_in, n_out))
    attempt(lambda: nm.Task(x, y, xv, yv))


@SETTINGS
@given(beta=mostly(st.floats(-1, 1), scalar_or_junk),
       estimator=mostly(st.sampled_from(["standard", "symmetric", "second_order"]),
                        st.one_of(st.just("fourth"), junk)),
       tol=mostly(st.one_of(st.none(), st.floats(1e-12, 1)), st.one_of(reals, junk)),
       nudged_duration=mostly(st.one_of(st.none(), st.floats(0.01, 10)), reals),
       learner=mostly(st.one_of(st.none(), st.builds(nm.Learner)), junk))
def test_cml_constructor(beta, estimator, tol, nudged_duration, learner):
    attempt(lambda: nm.CML(beta=beta, estimator=estimator, tol=tol,
                           nudged_duration=nudged_duration, learner=learner))


@SETTINGS
@given(n_in=st.integers(1, 3), hidden=st.booleans(), act=st.sampled_from(list(nm.ACTIVATIONS)),
       data=st.data(), beta=st.sampled_from([-0.1, 1e-3, 0.1, 1.0]),
       estimator=st.sampled_from(["standard", "symmetric", "second_order"]),
       method=st.sampled_from(["dense", "cg", "auto", "qr"]))
def test_cml_and_exact_meta_gradient(n_in, hidden, act, data, beta, estimator, method):
    net = _net([n_in, 2, 1] if hidden else [n_in, 1], act, True, 0.0)
    rule = "backprop" if hidden else "delta"
    learner = nm.Learner(rule=rule, integrator="expeuler", dt=0.05, tol=1e-6,
                         max_duration=5.0)
    _check_meta_gradients(net, learner, data, n_in, beta, estimator, method=method)


def _check_meta_gradients(model, learner, data, n_in, beta, estimator, **exact_kw):
    """CML and the exact meta-gradient on drawn data: finite, or a package error."""
    x, y = data.draw(data_for(n_in, 1))
    xv, yv = data.draw(data_for(n_in, 1))
    task, err = attempt(lambda: nm.Task(x, y, xv, yv))
    if task is None:
        return
    g, err = attempt(lambda: nm.CML(beta=beta, estimator=estimator, learner=learner)
                     .meta_gradient(model, task))
    if g is not None:
        assert_finite(g)
    g, err = attempt(lambda: nm.exact_meta_gradient(model, task, learner=learner,
                                                    **exact_kw))
    if g is not None:
        assert_finite(g)


@SETTINGS
@given(meta_batch=scalar_or_junk, seed=scalar_or_junk, eval_tasks=scalar_or_junk,
       chunks=st.one_of(st.none(), scalar_or_junk),
       family=st.one_of(st.just("linear"), st.just("sinusoid"), junk),
       executor=st.one_of(st.none(), junk))
def test_meta_trainer_constructor(meta_batch, seed, eval_tasks, chunks, family, executor):
    fam = {"linear": LinearTeacher(n_in=2, n_out=1, shots=2, val=2),
           "sinusoid": Sinusoid(shots=2, val=2)}.get(family, family) \
        if isinstance(family, str) else family
    net = nm.RateNetwork([1 if isinstance(family, str) and family == "sinusoid" else 2, 1], activation="linear",
                         tau_neuron=0)
    cml = nm.CML(beta=0.1, learner=nm.Learner(dt=0.1, tol=1e-4, integrator="expeuler"))
    attempt(lambda: nm.MetaTrainer(net, fam, cml, meta_batch=meta_batch, seed=seed,
                                   eval_tasks=eval_tasks, chunks=chunks, executor=executor))


@SETTINGS
@given(kw=st.fixed_dictionaries({}, optional={
    "n_in": scalar_or_junk, "n_out": scalar_or_junk, "shots": scalar_or_junk,
    "val": scalar_or_junk, "shared_fraction": scalar_or_junk, "noise_std": scalar_or_junk}),
       skw=st.fixed_dictionaries({}, optional={
           "shots": scalar_or_junk, "amplitude": st.one_of(st.tuples(reals, reals), junk),
           "x_range": st.one_of(st.tuples(reals, reals), junk)}))
def test_task_families(kw, skw):
    fam, _ = attempt(lambda: LinearTeacher(**kw))
    if fam is not None and fam.n_in * fam.n_out * (fam.shots + fam.val) < 10_000:
        t, _ = attempt(lambda: fam.sample(np.random.default_rng(0), 2))
        if t is not None:
            assert_finite([t.x_train, t.y_train, t.x_val, t.y_val])
    fam, _ = attempt(lambda: Sinusoid(**skw))
    if fam is not None and fam.shots < 10_000:
        t, _ = attempt(lambda: fam.sample(np.random.default_rng(0), 2))


@SETTINGS
@given(lr=scalar_or_junk, b1=scalar_or_junk, momentum=scalar_or_junk)
def test_optimisers(lr, b1, momentum):
    attempt(lambda: nm.optim.adam(lr, b1=b1))
    attempt(lambda: nm.optim.sgd(lr, momentum=momentum))
    attempt(lambda: nm.optim.clip_by_global_norm(lr))


# ------------------------------------------------------------------ model files
from neuro_meta.experiments import consolidation  # noqa: E402
from neuro_meta.models import load_model  # noqa: E402

_CFG = load_model("consolidation")
_KEYS = [(sec, key) for sec in ("family", "network", "learner", "cml", "meta")
         for key in _CFG[sec]]


@SETTINGS
@given(where=st.sampled_from(_KEYS), value=st.one_of(scalar_or_junk, st.integers(-3, 3)),
       extra=st.booleans())
def test_model_file_values(where, value, extra):
    """A model file with one value replaced (or an unknown key added) either builds or
    fails with the file and the key in the message."""
    import copy

    cfg = copy.deepcopy(_CFG)
    sec, key = where
    if extra:
        cfg[sec]["unexpected_" + key] = value
    else:
        cfg[sec][key] = value
    if sec == "meta" and key in ("eval_tasks", "meta_batch") and isinstance(value, int):
        cfg[sec][key] = min(value, 8)
    if sec == "family" and isinstance(value, int):
        cfg[sec][key] = min(value, 12) if key != "structure_seed" else value
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            consolidation.build(cfg)
        except nm.ValidationError as err:
            msg = str(err)
            assert msg.startswith(_CFG["_file"] + ": "), msg
            assert sec in msg, msg
            assert (key in msg) or ("(got " in msg), msg
            event("raised ValidationError")
            return
    event("worked")


_TRAINER_NET = nm.RateNetwork([2, 1], activation="linear", tau_neuron=0, seed=0,
                              synapse=nm.ComplexSynapse(omega=0.0, lam=1.0))
_TRAINER_CML = nm.CML(beta=0.05, learner=nm.Learner(rule="delta", integrator="expeuler",
                                                    dt=0.1, tol=1e-5, max_duration=20.0))


@SETTINGS
@given(steps=mostly(st.integers(0, 2), scalar_or_junk),
       eval_every=mostly(st.integers(1, 3), scalar_or_junk),
       checkpoint_every=mostly(st.integers(1, 2), scalar_or_junk),
       on_divergence=mostly(st.sampled_from(["stop", "skip"]), st.text(max_size=3)),
       opt=st.sampled_from(["adam", "sgd", "clip"]))
def test_meta_trainer_train(steps, eval_every, checkpoint_every, on_divergence, opt):
    optimizer = {"adam": nm.optim.adam(0.05), "sgd": nm.optim.sgd(0.1),
                 "clip": nm.optim.chain(nm.optim.clip_by_global_norm(1.0),
                                        nm.optim.adam(0.05))}[opt]
    fam = LinearTeacher(n_in=2, n_out=1, shots=2, val=3)

    def go():
        tr = nm.MetaTrainer(_TRAINER_NET, fam, _TRAINER_CML, optimizer, meta_batch=2,
                            eval_tasks=2, on_divergence=on_divergence)
        return tr.train(steps, eval_every=eval_every, checkpoint_every=checkpoint_every,
                        progress=False, keep_theta=False), tr

    out, _ = attempt(go)
    if out is not None:
        hist, tr = out
        assert all(np.isfinite(hist.meta_test_mse))
        assert_finite(tr.net.theta)


# ------------------------------------------------------------------ the dual system
@SETTINGS
@given(sizes=mostly(st.lists(st.integers(1, 4), min_size=3, max_size=4),
                    st.one_of(st.lists(st.integers(-1, 4), max_size=4), junk)),
       activation=mostly(st.sampled_from(list(nm.ACTIVATIONS)), st.one_of(st.just("elu"),
                                                                         junk)),
       fast=mostly(st.lists(st.sampled_from(["gain", "bias", "readout"]), min_size=1,
                            max_size=3), st.one_of(st.just(["weights"]), st.just([]), junk)),
       lam=mostly(st.floats(0.01, 5), st.one_of(reals, junk, st.just({"gain": 1.0}))),
       learn_lam=mostly(st.booleans()), tau_fast=mostly(st.floats(0.01, 10), scalar_or_junk),
       gain=mostly(st.floats(-2, 2), st.one_of(scalar_or_junk, small_arrays())),
       seed=st.one_of(st.none(), st.integers(0, 10)))
def test_dual_system(sizes, activation, fast, lam, learn_lam, tau_fast, gain, seed):
    attempt(lambda: nm.DualSystem(sizes, activation=activation, fast=fast, lam=lam,
                                  learn_lam=learn_lam, tau_fast=tau_fast, gain=gain,
                                  seed=seed))


@SETTINGS
@given(n_in=st.integers(1, 3), n_out=st.integers(1, 2),
       act=st.sampled_from(list(nm.ACTIVATIONS)),
       fast=st.sampled_from([("gain", "bias", "readout"), ("readout",), ("gain",)]),
       lam=st.floats(0.05, 3), data=st.data(),
       rule=mostly(st.just("backprop"), st.just("delta")),
       integrator=st.sampled_from(["euler", "expeuler", "rk4"]),
       dt=st.sampled_from([None, 0.01, 0.05, 0.5]),
       record=mostly(st.lists(st.sampled_from(["phi", "loss"]), max_size=2),
                     st.one_of(junk, st.just(["v"]))),
       beta=mostly(st.one_of(st.just(0.0), st.floats(-0.1, 0.1))),
       use_tol=st.booleans())
def test_dual_learner_run(n_in, n_out, act, fast, lam, data, rule, integrator, dt, record,
                          beta, use_tol):
    model = nm.DualSystem([n_in, 3, n_out], activation=act, fast=fast, lam=lam, seed=0)
    x, y = data.draw(data_for(n_in, n_out))
    learner = nm.Learner(rule=rule, integrator=integrator, dt=dt,
                         duration=None if use_tol else 0.5,
                         tol=1e-4 if use_tol else None, max_duration=2.0)
    res, err = attempt(lambda: learner.run(model, x, y, record=record, beta=beta,
                                           x_val=x, y_val=y))
    if res is not None:
        assert_finite(res.phi)
        assert_finite(res.record)


@SETTINGS
@given(n_in=st.integers(1, 2), act=st.sampled_from(list(nm.ACTIVATIONS)),
       fast=st.sampled_from([("gain", "bias", "readout"), ("readout",)]),
       learn_lam=st.booleans(), data=st.data(), beta=st.sampled_from([-0.1, 1e-3, 0.1]),
       estimator=st.sampled_from(["standard", "symmetric", "second_order"]))
def test_dual_cml_and_exact_meta_gradient(n_in, act, fast, learn_lam, data, beta,
                                          estimator):
    model = nm.DualSystem([n_in, 2, 1], activation=act, fast=fast, lam=0.5,
                          learn_lam=learn_lam, seed=0)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-6,
                         max_duration=5.0)
    _check_meta_gradients(model, learner, data, n_in, beta, estimator)
