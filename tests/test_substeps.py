"""Sub-steps per task: ``Learner(substeps=m)`` and the stiffness-adaptive ``"auto"``."""
import contextlib
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.engines import fused
from neuro_meta.engines import numpy_engine as npe
from neuro_meta.errors import UnsupportedError, ValidationError

needs_numba = pytest.mark.skipif(not fused.AVAILABLE, reason="numba not installed")


def _net(sizes=(1, 12, 1), act=("tanh", "linear"), lam=0.7, seed=3, scale=1.0):
    syn = nm.ComplexSynapse(omega=nm.init.Glorot(gain=scale), lam=lam, omega_bias=0.1)
    return nm.RateNetwork(list(sizes), activation=list(act), synapse=syn, seed=seed,
                          tau_neuron=0.0)


def _inp(learner, net, x, y):
    inp, _, _ = learner.phase_input(net, x, y)
    return inp


def _phi0(learner, net, B):
    return learner.initial_state(net, None, B)


def _stiff_tasks(rng, B=4, K=8, amp=(1.0, 2.0, 4.0, 8.0)):
    """Tasks whose data curvature differs by 64x (input scale 1 to 8)."""
    a = np.asarray(amp[:B])[:, None, None]
    x = rng.uniform(-1, 1, size=(B, K, 1)) * a
    y = np.sin(x)
    return x, y


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        return fn(*a, **kw)


def _maxdiff(ra, rb):
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(ra.phi_aug, rb.phi_aug))


# ---------------------------------------------------------------------- the estimate
def test_stiffness_of_linear_readout_is_the_closed_form(rng):
    """One linear connection, delta rule: tau_phi dphi/dt = -(phi_aug C - W_trn) - lam
    (phi - omega) with C = sum_s c_s x~_s x~_s^T, so the Jacobian's largest eigenvalue is
    that of C plus lam (one eigenvalue per output row, the same matrix)."""
    net = nm.RateNetwork([3, 2], activation="linear",
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.4), seed=0)
    learner = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=1.0)
    scales = np.array([[3.0, 1.0, 0.3], [0.5, 2.0, 1.0]])[:, None, :]
    x = rng.normal(size=(2, 6, 3)) * scales
    y = rng.normal(size=(2, 6, 2))
    inp = _inp(learner, net, x, y)
    mu = npe.stiffness(net.dynamics("delta"), _phi0(learner, net, 2), inp)
    for b in range(2):
        xa = np.concatenate([x[b], np.ones((6, 1))], axis=1)
        C = (xa.T * inp.c[b]) @ xa
        expected = np.linalg.eigvalsh(C).max() + 0.4
        assert mu[b] == pytest.approx(expected, rel=1e-6)


def test_stiffness_of_tanh_network_matches_the_full_jacobian(rng):
    """Backprop through a 1-6-1 tanh network: the power iteration's estimate against the
    largest |eigenvalue| of the whole Jacobian built by central differences."""
    net = _net((1, 6, 1), scale=1.5)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.01, duration=1.0)
    x, y = _stiff_tasks(rng, B=2, K=5)
    inp = _inp(learner, net, x, y)
    dyn = net.dynamics("backprop")
    phi = _phi0(learner, net, 2)
    mu = npe.stiffness(dyn, phi, inp)
    sizes = [p[0].size for p in phi]
    for b in range(2):
        flat = np.concatenate([p[b].ravel() for p in phi])

        def g(z):
            parts = np.split(z, np.cumsum(sizes)[:-1])
            ph = [q.reshape((1,) + p.shape[1:]) for q, p in zip(parts, phi)]
            X, Y, c = inp.X[b:b + 1], inp.Y[b:b + 1], inp.c[b:b + 1]
            out = dyn.plasticity(ph, dyn.steady_v(ph, X), X, Y, c)
            return np.concatenate([o.ravel() for o in out])

        J = np.empty((flat.size, flat.size))
        for k in range(flat.size):
            e = np.zeros_like(flat)
            e[k] = 1e-6
            J[:, k] = -(g(flat + e) - g(flat - e)) / 2e-6
        expected = np.abs(np.linalg.eigvals(J)).max()
        assert mu[b] == pytest.approx(expected, rel=1e-3)


def test_auto_substeps_meet_the_stability_rule(rng):
    net = _net()
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-6,
                         substeps="auto")
    x, y = _stiff_tasks(rng)
    inp = _inp(learner, net, x, y)
    dyn = net.dynamics("backprop")
    phi = _phi0(learner, net, 4)
    m = npe.substeps_for(dyn, learner.phase_spec(net, inp), phi, inp)
    mu = npe.stiffness(dyn, phi, inp)
    h = 0.2 / m
    assert (h * mu <= npe.STIFFNESS_SAFETY * net.tau_synapse + 1e-12).all()
    assert ((m == 1) | (2 * h * mu > npe.STIFFNESS_SAFETY * net.tau_synapse)).all()  # least
    assert m[0] < m[-1]                  # steeper task, more sub-steps
    capped = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-6,
                        substeps="auto", max_substeps=2)
    assert npe.substeps_for(dyn, capped.phase_spec(net, inp), phi, inp).max() == 2
    fixed = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, substeps=3,
                       duration=1.0)
    assert (npe.substeps_for(dyn, fixed.phase_spec(net, inp), phi, inp) == 3).all()


# ---------------------------------------------------------------------- sub-steps
@pytest.mark.parametrize("integrator", ["euler", "expeuler", "rk4"])
@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_m_substeps_are_steps_of_dt_over_m(integrator, tau, rng):
    """dt with m sub-steps = dt/m without: the same numbers (numpy loop and fused)."""
    net = nm.RateNetwork([2, 5, 1], activation=["tanh", "linear"], tau_neuron=tau,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.7), seed=2)
    x, y = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 1))
    sub = nm.Learner(rule="backprop", integrator=integrator, dt=0.04, substeps=4,
                     duration=0.8)
    fine = nm.Learner(rule="backprop", integrator=integrator, dt=0.01, duration=0.8)
    r_sub, r_fine = sub.run(net, x, y), fine.run(net, x, y)
    assert r_sub.steps == 20 and r_fine.steps == 80
    assert _maxdiff(r_sub, r_fine) < 1e-12
    with fused.disabled():
        assert _maxdiff(sub.run(net, x, y), r_fine) < 1e-12


@needs_numba
def test_fused_batch_kernel_runs_substeps_like_numpy_loop(rng):
    """Per-task sub-steps in the batch kernel: the numpy loop's numbers, steps and settled
    flags, with settling tests on whole steps; other kernels leave such phases to the
    numpy loop."""
    net = _net()
    x, y = _stiff_tasks(rng)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-5,
                         max_duration=40.0, substeps="auto")
    inp = _inp(learner, net, x, y)
    spec = learner.phase_spec(net, inp)
    m = npe.substeps_for(net.dynamics("backprop"), spec, _phi0(learner, net, 4), inp)
    assert len(set(m)) > 1 and fused.supports(net, spec, inp, (), m)
    res_f = _quiet(learner.run, net, x, y)
    with fused.disabled():
        res_n = _quiet(learner.run, net, x, y)
    assert res_f.steps == res_n.steps
    np.testing.assert_array_equal(res_f.settled, res_n.settled)
    assert res_f.settled.all()
    assert _maxdiff(res_f, res_n) < 1e-12
    online = nm.Learner(rule="backprop", presentation="online", integrator="expeuler",
                        dt=0.01, substeps=2, duration=0.5)
    inp_o = _inp(online, net, x, y)
    assert not fused.supports(net, online.phase_spec(net, inp_o), inp_o, (), np.full(4, 2))
    with pytest.raises(UnsupportedError, match="sub-steps"):
        fused.run_phase(net, inp, _phi0(learner, net, 4),
                        net.dynamics("backprop").steady_v(_phi0(learner, net, 4), inp.X),
                        spec, dtype=np.float32, substeps=m)


def test_auto_settles_where_a_fixed_step_oscillates(rng):
    """A task too steep for dt oscillates without sub-steps and never settles; with "auto"
    it settles at the fixed point of a run 16 times finer."""
    net = _net()
    x, y = _stiff_tasks(rng)
    kw = dict(rule="backprop", integrator="expeuler", tol=1e-6, max_duration=40.0)
    plain = _quiet(nm.Learner(dt=0.2, **kw).run, net, x, y)
    auto = _quiet(nm.Learner(dt=0.2, substeps="auto", **kw).run, net, x, y)
    fine = _quiet(nm.Learner(dt=0.2 / 16, **kw).run, net, x, y)
    assert not plain.settled[-1]
    with pytest.warns(nm.NotSettledWarning, match="substeps='auto'"):
        nm.Learner(dt=0.2, **kw).run(net, x, y)
    assert auto.settled.all() and fine.settled.all()
    assert (plain.substeps == 1).all() and auto.substeps[-1] > 1 == auto.substeps[0]
    for a, b in zip(auto.phi_aug, fine.phi_aug):
        assert np.abs(a - b).max() < 1e-4


def test_tasks_that_stiffen_are_run_again_the_same_on_every_engine(rng, monkeypatch):
    """A start estimate too optimistic (safety 5: beyond the stable step) leaves steep
    tasks oscillating; they are run again with doubled sub-steps until their stiffness
    at the end is within bounds. Every decision is the task's own: batched = alone, and
    the fused kernel = the numpy loop."""
    monkeypatch.setattr(npe, "STIFFNESS_SAFETY", 5.0)
    net = _net()
    x, y = _stiff_tasks(rng)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-6,
                         max_duration=40.0, substeps="auto")
    inp = _inp(learner, net, x, y)
    dyn = net.dynamics("backprop")
    m0 = npe.substeps_for(dyn, learner.phase_spec(net, inp), _phi0(learner, net, 4), inp)
    calls = []
    orig = npe.integrate_any
    monkeypatch.setattr(npe, "integrate_any", lambda *a: calls.append(a[-1]) or orig(*a))
    res = _quiet(learner.run, net, x, y)
    assert res.settled.all()
    np.testing.assert_array_equal(calls[0], m0)
    assert len(calls) > 1                       # steep tasks were run again ...
    assert all(len(c) < 4 and c.max() > m0.max() for c in calls[1:])   # ... alone, finer
    with fused.disabled():
        res_n = _quiet(learner.run, net, x, y)
    assert _maxdiff(res, res_n) < 1e-12
    np.testing.assert_array_equal(res.settled, res_n.settled)
    assert res.substeps.dtype == np.int64 and not res.substeps.flags.writeable
    assert (res.substeps >= m0).all() and (res.substeps > m0).any()
    np.testing.assert_array_equal(res.substeps, res_n.substeps)
    for b in range(4):
        alone = _quiet(learner.run, net, x[b], y[b])
        assert alone.substeps == res.substeps[b]
        for p, q in zip(alone.phi_aug, res.phi_aug):
            np.testing.assert_array_equal(p, q[b])


def test_recording_with_auto_substeps(rng):
    net = _net()
    x, y = _stiff_tasks(rng, B=2, amp=(1.0, 8.0))
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-6,
                         max_duration=40.0, substeps="auto")
    rec = _quiet(learner.run, net, x, y, record=("loss",), record_every=10)
    plain = _quiet(learner.run, net, x, y)
    assert _maxdiff(rec, plain) < 1e-12         # numpy loop (recording) vs fused
    assert rec.record["loss"].shape == (len(rec.t), 2)
    assert rec.t[-1] == pytest.approx(rec.t_end)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, match", [
    (dict(substeps=0), "Learner.substeps"),
    (dict(substeps="fast"), "Learner.substeps"),
    (dict(substeps=2.5), "Learner.substeps"),
    (dict(max_substeps=0), "Learner.max_substeps"),
    (dict(substeps="auto", presentation="online"), "'auto' needs presentation='batch'"),
    (dict(substeps=2, integrator="scipy", duration=1.0), "integrator='scipy'"),
    (dict(substeps="auto", engine="brian2"), "engine='brian2'"),
])
def test_bad_substeps_are_clear_errors(kw, match):
    with pytest.raises(ValidationError, match=match):
        nm.Learner(**kw)


@pytest.mark.parametrize("integrator", ["euler", "expeuler", "rk4"])
def test_dual_system_substeps_equal_a_finer_step(rng, integrator):
    """The dual system takes sub-steps on the shared stack: m sub-steps of dt/m are the
    same numbers as a step of dt/m (to rounding), and "auto" settles at the fixed point
    of a finer run."""
    dual = nm.DualSystem([1, 8, 1], seed=0)
    x, y = rng.normal(size=(3, 5, 1)), rng.normal(size=(3, 5, 1))
    sub = nm.Learner(rule="backprop", integrator=integrator, dt=0.05, substeps=2,
                     duration=1.0).run(dual, x, y)
    fine = nm.Learner(rule="backprop", integrator=integrator, dt=0.025,
                      duration=1.0).run(dual, x, y)
    assert (sub.substeps == 2).all() and sub.steps * 2 == fine.steps
    assert _maxdiff(sub, fine) < 1e-12
    kw = dict(rule="backprop", integrator="expeuler", tol=1e-8, max_duration=200.0)
    auto = nm.Learner(dt=0.5, substeps="auto", **kw).run(dual, 4 * x, y)
    ref = nm.Learner(dt=0.01, **kw).run(dual, 4 * x, y)
    assert auto.settled.all() and (auto.substeps >= 1).all()
    assert _maxdiff(auto, ref) < 1e-6


@needs_numba
def test_substeps_in_the_pool_same_as_one_thread(rng, monkeypatch):
    """Tasks of different sub-steps run one job each in the pool, the costliest first:
    the same numbers as in one thread, bit for bit."""
    net = _net()
    x, y = _stiff_tasks(rng)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.2, tol=1e-6,
                         max_duration=40.0, substeps="auto")
    out = {}
    for label, min_work, n_threads in (("one", 10**18, None), ("pool", 0, 3)):
        monkeypatch.setattr(fused.config, "PARALLEL_MIN_WORK", min_work)
        monkeypatch.setattr(fused.config, "THREADS", n_threads)
        out[label] = _quiet(learner.run, net, x, y)
    assert len(set(out["pool"].substeps)) > 1
    assert out["one"].steps == out["pool"].steps
    for u, v in zip(out["one"].phi_aug + out["one"].v, out["pool"].phi_aug + out["pool"].v):
        np.testing.assert_array_equal(u, v)


@needs_numba
def test_sinusoid_model_meta_training_same_on_both_engines():
    """The sinusoid experiment's CML model (``models/sinusoid.yaml``: per-task sub-steps,
    both phases settling): a few meta-steps give the same theta on the fused kernel and
    the numpy loop."""
    from neuro_meta.experiments.consolidation import merge
    from neuro_meta.experiments.sinusoid import build_cml
    from neuro_meta.models import load_model

    cfg = merge(load_model("sinusoid"), {"meta": {"meta_batch": 6, "eval_tasks": 4}})
    assert cfg["learner"]["substeps"] == "auto" and "nudged_duration" not in cfg["cml"]
    thetas = []
    for disable in (False, True):
        trainer = build_cml(cfg)[1]
        with fused.disabled() if disable else contextlib.nullcontext():
            _quiet(trainer.train, 3, eval_every=3, progress=False)
        thetas.append(trainer.net.theta)
    for key in ("omega", "lam", "omega_bias", "lam_bias"):
        for a, b in zip(thetas[0][key], thetas[1][key]):
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)

