"""The fused compiled kernel (neuro_meta.engines.fused) against the numpy engine's Python
loop: the same phases give the same numbers (to 1e-10), the same step counts, the same
settled tasks and the same divergence errors; CML meta-gradients and meta-training are
unchanged; without numba everything runs on numpy. No timing is asserted."""
import importlib
import re
import sys
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.engines import fused
from neuro_meta.families import LinearTeacher, Sinusoid
from neuro_meta.metatrain import MetaTrainer

needs_numba = pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed")
TOL = 1e-10


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


def _both(learner, net, x, y, **kw):
    """(fused result, numpy-loop result) of the same phase."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        inp = _inp(learner, net, x, y)
        assert fused.supports(net, learner.phase_spec(net, inp), inp, ())
        res_f = learner.run(net, x, y, **kw)
        with fused.disabled():
            res_n = learner.run(net, x, y, **kw)
    return res_f, res_n


def _inp(learner, net, x, y):
    return learner.phase_input(net, x, y)[0]


def _assert_same(res_f, res_n):
    assert res_f.steps == res_n.steps
    assert res_f.t_end == pytest.approx(res_n.t_end, rel=1e-15)
    np.testing.assert_array_equal(res_f.settled, res_n.settled)
    for a, b in zip(res_f.phi_aug, res_n.phi_aug):
        assert _rel(a, b) < TOL
    for a, b in zip(res_f.v, res_n.v):
        assert _rel(a, b) < TOL


def _net(sizes, rule, tau, bias, act, seed=1):
    syn = nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.7, omega_bias=0.1)
    if rule == "delta" and len(sizes) > 2:   # delta: static hidden connections
        syn = [nm.StaticSynapse(weight=nm.init.Glorot(), bias=0.1)] * (len(sizes) - 2) + [syn]
    return nm.RateNetwork(sizes, activation=act, bias=bias, tau_neuron=tau, synapse=syn,
                          seed=seed)


CASES = [  # (sizes, activations)
    ([3, 2], "tanh"),
    ([2, 5, 4, 3], ["tanh", "sigmoid", "linear"]),
    ([2, 4, 3], ["relu", "softplus"]),
]


@needs_numba
@pytest.mark.parametrize("presentation", ["batch", "online"])
@pytest.mark.parametrize("integrator", ["euler", "expeuler"])
@pytest.mark.parametrize("rule", ["delta", "backprop"])
@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_same_trajectory_end_as_numpy_loop(presentation, integrator, rule, tau, rng):
    for k, (sizes, act) in enumerate(CASES):
        for bias in (True, False):
            net = _net(sizes, rule, tau, bias, act, seed=k)
            x = rng.normal(size=(3, 4, sizes[0]))
            y = rng.normal(size=(3, 4, sizes[-1]))
            learner = nm.Learner(rule=rule, presentation=presentation, integrator=integrator,
                                 dt=0.01, duration=0.6)
            _assert_same(*_both(learner, net, x, y))


@needs_numba
def test_nudged_phase_single_task_and_automatic_dt(rng):
    net = _net([4, 6, 2], "backprop", 0.0, True, ["tanh", "linear"])
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    xv, yv = rng.normal(size=(7, 4)), rng.normal(size=(7, 2))
    phi0 = [np.asarray(c.phi0) + 0.01 for c in net.connections]
    for presentation in ("batch", "online"):
        learner = nm.Learner(rule="backprop", presentation=presentation,
                             integrator="expeuler", duration=2.0)
        res_f, res_n = _both(learner, net, x, y, x_val=xv, y_val=yv, beta=-0.3,
                             phi_init=phi0)
        _assert_same(res_f, res_n)
        assert res_f.phi[0].ndim == 2          # no task axis in, none out


@needs_numba
@pytest.mark.parametrize("presentation,dt", [("batch", 0.02), ("online", 0.002)])
@pytest.mark.parametrize("tau", [0.0, 0.02])
def test_settling_freezes_tasks_like_numpy_loop(presentation, dt, tau, rng):
    """Tasks settle at different steps; each is frozen at its own check: same steps, same
    settled flags, same states -- and each task's result does not depend on its batch."""
    net = _net([3, 6, 2], "backprop", tau, True, ["tanh", "linear"], seed=2)
    _check_settling(net, "backprop", presentation, dt, rng)


def _check_settling(net, rule, presentation, dt, rng):
    """Five tasks of different input scales: compiled = numpy loop, all settled, at
    different steps when alone, and the batch runs until the last one settles."""
    scale = np.array([0.2, 1.0, 3.0, 0.5, 2.0])[:, None, None]
    x = rng.normal(size=(5, 5, net.sizes[0])) * scale
    y = rng.normal(size=(5, 5, net.sizes[-1]))
    learner = nm.Learner(rule=rule, presentation=presentation, integrator="euler",
                         dt=dt, tol=1e-5)
    res_f, res_n = _both(learner, net, x, y)
    _assert_same(res_f, res_n)
    assert np.all(res_f.settled)
    alone = [learner.run(net, x[b:b + 1], y[b:b + 1]) for b in range(5)]
    assert len({r.steps for r in alone}) > 1            # tasks settle at different steps
    assert res_f.steps == max(r.steps for r in alone)
    for b, r in enumerate(alone):
        assert _rel(res_f.phi_aug[-1][b], r.phi_aug[-1][0]) < TOL   # independent of its batch


@needs_numba
def test_not_settled_tasks_reported(rng):
    net = _net([3, 2], "delta", 0.0, True, "tanh")
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 2))
    learner = nm.Learner(rule="delta", integrator="expeuler", dt=0.05, tol=1e-12,
                         max_duration=1.0)
    with pytest.warns(nm.NotSettledWarning):
        res = learner.run(net, x, y)
    assert not np.any(res.settled) and res.steps == 20


@needs_numba
@pytest.mark.parametrize("presentation", ["batch", "online"])
def test_divergence_same_step_and_message(presentation, rng):
    net = nm.RateNetwork([3, 2], activation="linear", tau_neuron=0.0, seed=2)
    x = rng.normal(size=(3, 5, 3)) * np.array([1.0, 30.0, 1.0])[:, None, None]
    y = rng.normal(size=(3, 5, 2))
    learner = nm.Learner(rule="delta", presentation=presentation, integrator="euler",
                         dt=0.1 if presentation == "batch" else 0.01, duration=100.0)
    errs = []
    for ctx in (fused.disabled, _nullcontext):
        with ctx(), pytest.raises(nm.SimulationError) as err:
            learner.run(net, x, y)
        errs.append(err.value)
    parts = [re.fullmatch(r"(.* max \|\w+\[\d\]\| = )(\S+)(\. Hint.*)", str(e), re.S).groups()
             for e in errs]
    assert parts[0][0] == parts[1][0]       # same step, time and variable
    assert parts[0][2] == parts[1][2]       # same hint
    assert (errs[0].step, errs[0].variable) == (errs[1].step, errs[1].variable)
    assert errs[0].value == pytest.approx(errs[1].value, rel=1e-9)     # unrounded


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


@needs_numba
def test_static_weights_beyond_bound_fail_at_step_one(rng):
    net = nm.RateNetwork([2, 3, 1], synapse=[nm.StaticSynapse(weight=1e11),
                                             nm.ComplexSynapse()], tau_neuron=0.0, seed=0)
    learner = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=1.0)
    x, y = rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    with pytest.raises(nm.SimulationError, match="at step 1 "):
        learner.run(net, x, y)


@needs_numba
def test_cml_meta_gradients_equal(rng):
    net = nm.RateNetwork([1, 8, 8, 1], activation=["tanh", "tanh", "linear"], tau_neuron=0.0,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=2.0), seed=3)
    task = Sinusoid(shots=5, val=5).sample(rng, 4)
    cml = nm.CML(beta=0.01, estimator="symmetric", tol=1e-6)
    g_f = cml.meta_gradient(net, task)
    with fused.disabled():
        g_n = cml.meta_gradient(net, task)
    for key in g_f:
        for a, b in zip(g_f[key], g_n[key]):
            if b is not None:
                assert _rel(a, b) < TOL


@needs_numba
def test_consolidation_meta_training_equal():
    """A few meta-steps of the consolidation experiment's setting: the same theta."""
    def train():
        net = nm.RateNetwork([10, 5], activation="linear", bias=False, tau_neuron=0.0,
                             synapse=nm.ComplexSynapse(omega=0.0, lam=1.0), seed=0)
        learner = nm.Learner(rule="delta", presentation="batch", integrator="expeuler",
                             dt=0.1, tol=1e-6, max_duration=3000.0)
        cml = nm.CML(beta=0.005, estimator="symmetric", learner=learner)
        trainer = MetaTrainer(net, LinearTeacher(), cml, nm.optim.adam(0.05), meta_batch=8,
                              eval_tasks=8)
        trainer.train(3, eval_every=3, progress=False)
        return trainer.net.theta

    th_f = train()
    with fused.disabled():
        th_n = train()
    for key in ("omega", "lam"):
        assert _rel(th_f[key][0], th_n[key][0]) < TOL


@needs_numba
@pytest.mark.parametrize("kernel", ["tasks", "rows"])
def test_float32_option_close_to_float64(kernel, rng, monkeypatch):
    from neuro_meta.engines import numpy_engine as npe

    monkeypatch.setattr(fused.config, "ROWS_MIN_SYNAPSES", 0 if kernel == "rows" else 10**12)

    net = _net([20, 10], "delta", 0.01, True, "tanh")
    learner = nm.Learner(rule="delta", presentation="online", integrator="euler", dt=1e-3,
                         duration=0.5)
    x, y = rng.normal(size=(3, 5, 20)), rng.normal(size=(3, 5, 10))
    inp = _inp(learner, net, x, y)
    inp.steps_per_sample = learner.presentation_steps(net)
    phi = [np.broadcast_to(c.phi0, (3,) + c.shape).copy() for c in net.connections]
    v = net.dynamics("delta").steady_v(phi, inp.at_step(0)[0])
    spec = learner.phase_spec(net, inp)
    out64 = fused.run_phase(net, inp, phi, v, spec)
    out32 = fused.run_phase(net, inp, phi, v, spec, dtype=np.float32)
    assert out32[0][0].dtype == np.float64 and out32[5] == out64[5]
    assert 0 < _rel(out32[0][0], out64[0][0]) < 1e-4


def test_unsupported_cases_run_on_numpy_loop(rng):
    """RK4, recording and user activations are not compiled: the numpy loop runs them."""
    custom = nm.Activation("cube", lambda v: v ** 3, lambda v: 3 * v ** 2,
                           lambda v: 6 * v, "v**3")
    net = nm.RateNetwork([3, 2], tau_neuron=0.0, seed=0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    euler = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=0.1)
    inp = _inp(euler, net, x[None], y[None])
    spec = euler.phase_spec(net, inp)
    rk4 = nm.Learner(integrator="rk4", dt=0.01, duration=0.1).phase_spec(net, inp)
    assert "rk4" in fused.why_not(net, rk4, inp)
    assert "recording" in fused.why_not(net, spec, inp, ["phi"])
    assert "activation[0]" in fused.why_not(
        nm.RateNetwork([3, 2], activation=custom, seed=0), spec, inp)
    res = euler.run(net, x, y, record=["phi"])             # recorded: the numpy loop
    with fused.disabled():
        ref = euler.run(net, x, y, record=["phi"])
    np.testing.assert_array_equal(res.record["phi"][0], ref.record["phi"][0])


def test_without_numba_everything_runs_on_numpy(monkeypatch, rng):
    """The package imports without numba (AVAILABLE False), says why it cannot run, and
    the engine falls back to the numpy loop with the same numbers."""
    net = nm.RateNetwork([3, 2], tau_neuron=0.0, seed=0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    learner = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=0.5)
    with fused.disabled():
        ref = learner.run(net, x, y)
    saved = {k: v for k, v in sys.modules.items() if k.startswith("neuro_meta.engines.fused")}
    monkeypatch.setitem(sys.modules, "numba", None)      # "import numba" fails
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    try:
        mod = importlib.import_module("neuro_meta.engines.fused")
        assert mod is not fused and mod.AVAILABLE is False
        inp = _inp(learner, net, x[None], y[None])
        assert "numba is not installed" in mod.why_not(net, learner.phase_spec(net, inp), inp)
        res = learner.run(net, x, y)
        assert res.engine == "numpy"
        np.testing.assert_array_equal(res.phi[0], ref.phi[0])
        with pytest.raises(nm.UnsupportedError, match="numba is not installed"):
            nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=0.5,
                       engine="fused").run(net, x, y)
    finally:
        monkeypatch.undo()
    assert importlib.import_module("neuro_meta.engines.fused") is fused
    assert fused.AVAILABLE == (importlib.util.find_spec("numba") is not None)


# ---------------------------------------------------------------------- rows kernel
@pytest.fixture(params=["serial", "parallel"])
def rows_kernel(request, monkeypatch):
    """One-connection phases on the rows kernel (blocks of 2 rows), in one thread or in
    the thread pool, whatever their size."""
    monkeypatch.setattr(fused.config, "ROWS_MIN_SYNAPSES", 0)
    monkeypatch.setattr(fused.driver, "rows_block", lambda n_out, P, B, parallel: 2)
    monkeypatch.setattr(fused.config, "PARALLEL_MIN_WORK",
                        0 if request.param == "parallel" else 10**18)
    return request.param


@needs_numba
@pytest.mark.parametrize("presentation", ["batch", "online"])
@pytest.mark.parametrize("integrator", ["euler", "expeuler"])
@pytest.mark.parametrize("tau", [0.0, 0.05])
@pytest.mark.parametrize("B", [1, 3])
def test_rows_kernel_same_as_numpy_loop(presentation, integrator, tau, B, rows_kernel, rng):
    """Lock-step rows kernel (one connection): the numpy loop's numbers, with and without
    biases, one task and several, every activation."""
    for k, act in enumerate(["tanh", "sigmoid", "relu", "softplus", "linear"]):
        for bias in (True, False):
            net = _net([4, 5], "delta", tau, bias, act, seed=k)
            x = rng.normal(size=(B, 3, 4))
            y = rng.normal(size=(B, 3, 5))
            learner = nm.Learner(rule="delta", presentation=presentation,
                                 integrator=integrator, dt=0.01, duration=0.6)
            _assert_same(*_both(learner, net, x, y))


@needs_numba
@pytest.mark.parametrize("presentation,dt", [("batch", 0.02), ("online", 0.002)])
@pytest.mark.parametrize("tau", [0.0, 0.02])
def test_rows_kernel_settling_freezes_tasks(presentation, dt, tau, rows_kernel, rng):
    """Settling on the rows kernel: per-task residuals reduced over row blocks; tasks
    settle at different checks and are frozen there, as in the numpy loop."""
    net = _net([3, 5], "delta", tau, True, "tanh", seed=2)
    _check_settling(net, "delta", presentation, dt, rng)


@needs_numba
@pytest.mark.parametrize("presentation", ["batch", "online"])
def test_rows_kernel_divergence_same_step_and_message(presentation, rows_kernel, rng):
    test_divergence_same_step_and_message(presentation, rng)


@needs_numba
def test_rows_and_tasks_kernels_agree(monkeypatch, rng):
    """The two loop orders of a one-connection phase give the same numbers, and a large
    phase (above ROWS_MIN_SYNAPSES) takes the rows kernel."""
    net = _net([30, 20], "delta", 0.01, True, "tanh")
    x, y = rng.normal(size=(4, 6, 30)), rng.normal(size=(4, 6, 20))
    learner = nm.Learner(rule="delta", presentation="online", integrator="expeuler",
                         dt=1e-3, duration=0.3)
    calls = []
    kern = fused.driver.phase_rows
    monkeypatch.setattr(fused.driver, "phase_rows",
                        lambda *a, **kw: calls.append(1) or kern(*a, **kw))
    monkeypatch.setattr(fused.config, "ROWS_MIN_SYNAPSES", 10**12)
    tasks = learner.run(net, x, y)
    assert not calls
    monkeypatch.setattr(fused.config, "ROWS_MIN_SYNAPSES", 4 * 20 * 31)
    rows = learner.run(net, x, y)
    assert calls
    assert _rel(rows.phi_aug[0], tasks.phi_aug[0]) < 1e-14
    assert _rel(rows.v[0], tasks.v[0]) < 1e-14


@needs_numba
def test_vectorisable_tanh_matches_numpy():
    """The kernels' branch-free tanh: within a few ulp of numpy's, exact at the special
    values (signed zeros, infinities, NaN, saturation)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-1, 1, 2000), rng.uniform(-30, 30, 2000),
                        rng.normal(size=500) * 1e-6, np.linspace(-0.7, 0.7, 1001),
                        [0.625, -0.625, 22.0, -22.0, 1e-300, 5e-324, 700.0]])
    got = np.array([fused.tanh(float(a)) for a in x])
    ref = np.tanh(x)
    assert np.all(np.abs(got - ref) <= 1e-15 * np.abs(ref))
    for a in (0.0, -0.0, np.inf, -np.inf):
        assert np.copysign(1, fused.tanh(a)) == np.copysign(1, np.tanh(a))
        assert fused.tanh(a) == np.tanh(a)
    assert np.isnan(fused.tanh(np.nan))


# ---------------------------------------------------------------------- batch kernel
@needs_numba
@pytest.mark.parametrize("integrator", ["euler", "expeuler"])
@pytest.mark.parametrize("rule", ["delta", "backprop"])
def test_dense_batch_kernel_same_as_general_loop(integrator, rule, monkeypatch, rng):
    """Batch phases of instantaneous neurons run as matrix products (BLAS for connections
    of at least DOT_MIN_WEIGHTS weights, loops below): the general compiled loop's and the
    numpy loop's numbers, steps and settled flags -- with settling (the test reuses the
    step's gradients), a static connection, biases or not."""
    sizes = [3, 24, 20, 2]                 # 24x4, 20x25 (BLAS), 2x21
    assert 20 * 24 >= fused.config.DOT_MIN_WEIGHTS > 24 * 4
    for bias in (True, False):
        net = _net(sizes, rule, 0.0, bias, ["tanh", "sigmoid", "linear"])
        scale = np.array([0.2, 1.0, 3.0])[:, None, None]
        x, y = rng.normal(size=(3, 6, 3)) * scale, rng.normal(size=(3, 6, 2))
        learner = nm.Learner(rule=rule, integrator=integrator, dt=0.05, tol=1e-4,
                             max_duration=20.0)
        inp = _inp(learner, net, x, y)
        assert fused.dense_kernel(net, inp)
        res_d, res_n = _both(learner, net, x, y)
        _assert_same(res_d, res_n)
        monkeypatch.setattr(fused.config, "DENSE", False)
        assert not fused.dense_kernel(net, inp)
        res_g, _ = _both(learner, net, x, y)
        monkeypatch.undo()
        _assert_same(res_d, res_g)
        assert res_d.settled.any()


@needs_numba
def test_dense_kernel_only_for_batch_instantaneous_float64(rng):
    net = _net([2, 3], "delta", 0.0, True, "tanh")
    x, y = rng.normal(size=(2, 4, 2)), rng.normal(size=(2, 4, 3))
    batch = _inp(nm.Learner(rule="delta"), net, x, y)
    online = _inp(nm.Learner(rule="delta", presentation="online"), net, x, y)
    assert fused.dense_kernel(net, batch)
    assert not fused.dense_kernel(net, online)
    assert not fused.dense_kernel(net, batch, np.float32)
    assert not fused.dense_kernel(_net([2, 3], "delta", 0.05, True, "tanh"), batch)


@needs_numba
def test_threads_same_numbers_as_one_thread_and_fork_safe(rng, monkeypatch):
    """Tasks (tasks kernel) or row blocks (rows kernel) split over the pool's threads: the
    same numbers as in one thread, bit for bit; no kernel is compiled with numba's
    ``parallel`` (GNU OpenMP forbids forking afterwards), so a fork-based process pool
    still works after a parallel phase in the parent."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for mod, name in ((fused.driver, "phase_serial"), (fused.rows, "rows_blocks"),
                      (fused.rows, "rows_reduce"), (fused.dense, "task_dense")):
        assert not getattr(mod, name).targetoptions.get("parallel")
    net = _net([2, 20, 20, 1], "backprop", 0.0, True, ["tanh", "tanh", "linear"])
    x, y = rng.normal(size=(5, 6, 2)), rng.normal(size=(5, 6, 1))
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.02, duration=1.0)
    big = _net([30, 20], "delta", 0.01, True, "tanh")
    xb, yb = rng.normal(size=(3, 6, 30)), rng.normal(size=(3, 6, 20))
    lb = nm.Learner(rule="delta", presentation="online", integrator="expeuler", dt=1e-3,
                    tol=1e-3, max_duration=0.3)
    monkeypatch.setattr(fused.config, "ROWS_MIN_SYNAPSES", 0)
    monkeypatch.setattr(fused.driver, "rows_block", lambda n_out, P, B, parallel: 3)
    out = {}
    for label, min_work, n_threads in (("one", 10**18, None), ("pool", 0, 3)):
        monkeypatch.setattr(fused.config, "PARALLEL_MIN_WORK", min_work)
        monkeypatch.setattr(fused.config, "THREADS", n_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nm.NotSettledWarning)
            out[label] = (learner.run(net, x, y), lb.run(big, xb, yb))
    for a, b in zip(out["one"], out["pool"]):
        assert a.steps == b.steps
        for u, v in zip(a.phi_aug + a.v, b.phi_aug + b.v):
            np.testing.assert_array_equal(u, v)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        child = ex.submit(learner.run, net, x, y).result(timeout=120)
    for u, v in zip(child.phi_aug, out["pool"][0].phi_aug):
        np.testing.assert_array_equal(u, v)


@needs_numba
@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_thread_count_is_a_clear_error(bad, monkeypatch):
    monkeypatch.setattr(fused.config, "THREADS", bad)
    with pytest.raises(nm.ValidationError, match=r"fused\.config\.THREADS: must be None or an "
                                                  r"integer >= 1"):
        fused.threads()
    monkeypatch.setattr(fused.config, "THREADS", 3)
    assert fused.threads() == 3


# ---------------------------------------------------------------------- gain kernel
DUAL_VARIANTS = {
    "gain_bias_readout": dict(fast=("gain", "bias", "readout"),
                              lam={"gain": 1.0, "bias": 0.7, "readout": 0.5}),
    "learned_lam": dict(fast=("gain", "bias", "readout"), lam=0.8, learn_lam=True),
    "readout_only": dict(fast=("readout",), lam=0.5),
    "gain_readout": dict(fast=("gain", "readout"), lam=0.6),
}


def _dual(variant, sizes=(2, 5, 4, 1), act="tanh", seed=0):
    return nm.DualSystem(list(sizes), activation=act, seed=seed,
                         gain=nm.init.Uniform(0.8, 1.2), bias=nm.init.Normal(0.1),
                         **DUAL_VARIANTS[variant])


@needs_numba
@pytest.mark.parametrize("variant", sorted(DUAL_VARIANTS))
@pytest.mark.parametrize("integrator", ["euler", "expeuler"])
def test_gain_kernel_same_as_numpy_loop(variant, integrator, rng):
    """The dual system on the compiled gain kernel: the numpy loop's fast variables,
    potentials, steps and settled flags (fixed durations, settling, a nudged phase)."""
    m = _dual(variant)
    x, y = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 1))
    xv, yv = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 1))
    for kw in (dict(duration=0.6), dict(tol=1e-9, max_duration=300.0)):
        learner = nm.Learner(rule="backprop", integrator=integrator, dt=0.02, **kw)
        for extra in ({}, dict(x_val=xv, y_val=yv, beta=0.3)):
            res_f, res_n = _both(learner, m, x, y, **extra)
            assert res_f.engine == "fused" and res_n.engine == "numpy"
            _assert_same(res_f, res_n)
            for a, b in zip(res_f.v, res_n.v):
                assert _rel(a, b) < TOL
    assert res_f.settled.all()


@needs_numba
@pytest.mark.parametrize("act", ["sigmoid", "softplus", "linear", "relu"])
def test_gain_kernel_every_activation_and_deeper(act, rng):
    m = _dual("gain_bias_readout", sizes=(3, 6, 5, 4, 2), act=act, seed=2)
    x, y = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 7, 2))
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.02, duration=1.0)
    _assert_same(*_both(learner, m, x, y))


@needs_numba
def test_gain_kernel_substeps_and_threads(rng, monkeypatch):
    """Per-task sub-steps ("auto", on tasks of different stiffness) and the thread pool:
    the numpy loop's numbers; the pool's are one thread's bit for bit."""
    m = _dual("gain_bias_readout")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 2)) * np.array([1.0, 3.0, 6.0, 10.0])[:, None, None]
    y = 3 * rng.normal(size=(4, 6, 1))
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=1.0, tol=1e-8,
                         max_duration=100.0, substeps="auto")
    res_f, res_n = _both(learner, m, x, y)
    assert len(set(res_f.substeps)) > 1 and res_f.engine == "fused"
    np.testing.assert_array_equal(res_f.substeps, res_n.substeps)
    _assert_same(res_f, res_n)
    monkeypatch.setattr(fused.config, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(fused.config, "THREADS", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        pool = learner.run(m, x, y)
    np.testing.assert_array_equal(pool.settled, res_f.settled)
    for a, b in zip(pool.phi_aug, res_f.phi_aug):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_gain_kernel_divergence_same_step_and_message(rng):
    m = nm.DualSystem([1, 4, 1], activation="linear", lam=0.1, seed=0)
    x, y = 30 * rng.normal(size=(2, 5, 1)), rng.normal(size=(2, 5, 1))
    learner = nm.Learner(rule="backprop", integrator="euler", dt=0.5, duration=50)
    msgs = []
    for ctx in (_nullcontext, fused.disabled):
        with ctx(), pytest.raises(nm.SimulationError) as info:
            learner.run(m, x, y)
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1] and "DualSystem diverged at step" in msgs[0]


@needs_numba
def test_gain_kernel_refuses_online_and_user_activations(rng):
    m = _dual("gain_bias_readout")
    online = nm.Learner(rule="backprop", presentation="online", integrator="euler", dt=0.01,
                        duration=0.1)
    inp = online.phase_input(m, rng.normal(size=(1, 4, 2)), rng.normal(size=(1, 4, 1)))[0]
    assert "presentation 'online'" in fused.why_not(m, online.phase_spec(m, inp), inp)
    with pytest.raises(nm.UnsupportedError, match=r"fused engine cannot run this phase of a "
                       r"DualSystem: presentation 'online'"):
        nm.Learner(rule="backprop", presentation="online", integrator="euler", dt=0.01,
                   duration=0.1, engine="fused").run(m, rng.normal(size=(4, 2)), rng.normal(size=(4, 1)))
