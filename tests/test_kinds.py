"""The model-kind protocol: one stack for every kind.

* a toy kind (``neuro_meta/examples/gained_linear.py``, shown in ``docs/architecture.md``,
  <= 60 lines) gets learning, every CML estimator, the exact reference and meta-training
  for free;
* a DualSystem with only the readout fast and a RateNetwork with static hidden layers and
  a complex-synapse readout are the same model: same settled state, CML estimates and
  exact meta-gradients;
* every (kind x integrator x presentation x engine) either runs or raises
  ``UnsupportedError`` naming the kind and the option.
"""
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import exact
from neuro_meta.engines import fused
from neuro_meta.examples import gained_linear

ESTIMATORS = ("standard", "symmetric", "second_order")


def toy_source():
    """The toy kind's file (shown by docs/architecture.md)."""
    return inspect.getsource(gained_linear)


@pytest.fixture(scope="module")
def GainedLinear():
    return gained_linear.GainedLinear


def _toy_task(rng, B=4, K=6, V=5, n_in=3, n_out=2):
    return nm.Task(rng.normal(size=(B, K, n_in)), rng.normal(size=(B, K, n_out)),
                   rng.normal(size=(B, V, n_in)), rng.normal(size=(B, V, n_out)))


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------------- a new kind is small
def test_the_toy_kind_is_small():
    lines = toy_source().rstrip("\n").split("\n")
    assert len(lines) <= 60, f"the toy kind has {len(lines)} lines"
    assert "literalinclude:: ../neuro_meta/examples/gained_linear.py" in \
        (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text() \
        .replace("{literalinclude} ", "literalinclude:: ")


def _toy(GainedLinear):
    kind = GainedLinear(3, 2, lam=0.8, seed=1)
    theta = kind.theta
    theta["gain"][0] = np.array([1.3, 0.7])
    theta["lam"][0] = np.random.default_rng(2).uniform(0.4, 1.2, size=(2, 3))
    return kind.with_theta(theta)


@pytest.mark.parametrize("integrator", ["euler", "expeuler", "rk4"])
def test_toy_kind_learns_to_its_closed_form_fixed_point(GainedLinear, rng, integrator):
    """Per output row j: (g_j² C + diag λ_j) φ_j = g_j Σ c y_j x + λ_j ⊙ ω_j."""
    kind = _toy(GainedLinear)
    task = _toy_task(rng)
    x, y = task.x_train, task.y_train
    res = nm.Learner(rule="backprop", integrator=integrator, dt=0.02, tol=1e-11,
                     max_duration=500.0).run(kind, x, y, record=["phi", "loss"])
    assert res.settled.all() and res.engine == "numpy"
    th = kind.theta
    g, om, lam = th["gain"][0], th["omega"][0], th["lam"][0]
    K = x.shape[1]
    for b in range(x.shape[0]):
        C = x[b].T @ x[b] / K
        for j in range(2):
            A = g[j] ** 2 * C + np.diag(lam[j])
            rhs = g[j] * x[b].T @ y[b, :, j] / K + lam[j] * om[j]
            np.testing.assert_allclose(res.phi[0][b, j], np.linalg.solve(A, rhs),
                                       rtol=0, atol=1e-9)
    assert res.record["loss"].shape[1] == 4 and res.record["phi"][0].shape[1:] == (4, 2, 3)
    with pytest.raises(nm.UnsupportedError, match="GainedLinear records"):
        nm.Learner(rule="backprop", dt=0.1, duration=1.0).run(kind, x, y, record=["v"])
    with pytest.raises(nm.UnsupportedError, match=r"Learner\.rule: a GainedLinear learns "
                       r"with 'backprop' \(got 'delta'\)"):
        nm.Learner(rule="delta", dt=0.1, duration=1.0).run(kind, x, y)


def test_toy_kind_exact_reference_equals_finite_differences(GainedLinear, rng):
    """The exact reference (complex-step derivatives of the kind's forces and partials,
    implicit differentiation) against central differences of the whole learning process
    (the validation loss after learning, with θ perturbed along random directions)."""
    kind = _toy(GainedLinear)
    task = _toy_task(rng)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-13,
                         max_duration=1000.0)
    ex = nm.exact_meta_gradient(kind, task, learner=learner)
    ex_cg = nm.exact_meta_gradient(kind, task, learner=learner, method="cg")
    theta = kind.theta
    h = 1e-5
    for k in theta:
        np.testing.assert_allclose(ex_cg[k][0], ex[k][0], rtol=1e-9, atol=1e-13)
        d = rng.normal(size=theta[k][0].shape)

        def loss(s, k=k, d=d):
            t = {kk: [a.copy() for a in v] for kk, v in theta.items()}
            t[k][0] = t[k][0] + s * d
            return exact.outer_loss(kind.with_theta(t), task, learner=learner)

        fd = (loss(h) - loss(-h)) / (2 * h)
        an = float((ex[k][0] * d).sum())
        assert abs(fd - an) <= 1e-6 * max(abs(an), 1e-3), (k, fd, an)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_toy_kind_cml_estimators_approach_the_exact_reference(GainedLinear, rng, estimator):
    """Error ∝ β (standard) or β² (symmetric, second order): halving β halves or
    quarters the error; at β = 1e-3 every part is within 1e-2 (standard) or 5e-5."""
    kind = _toy(GainedLinear)
    task = _toy_task(rng)
    ex = nm.exact_meta_gradient(kind, task)

    def err(beta):
        g = nm.CML(beta=beta, estimator=estimator, tol=1e-13).meta_gradient(kind, task)
        return max(_rel(g[k][0], ex[k][0]) for k in ex)

    e1, e2 = err(2e-2), err(1e-2)
    order = 1 if estimator == "standard" else 2
    assert 2 ** order * 0.8 < e1 / e2 < 2 ** order * 1.25
    assert err(1e-3) < (1e-2 if order == 1 else 5e-5)


def test_toy_kind_meta_trains_and_resumes(GainedLinear, tmp_path):
    """MetaTrainer meta-learns g, ω and λ of the toy kind (the meta-test error falls) and
    a resumed run ends on the same θ as one run."""
    teacher = nm.families.LinearTeacher(n_in=3, n_out=2, shots=4, val=10, noise_std=0.1)
    cml = nm.CML(beta=0.05, estimator="symmetric",
                 learner=nm.Learner(rule="backprop", integrator="expeuler", dt=0.05,
                                    tol=1e-8, max_duration=200.0))

    def trainer(kind):
        return nm.MetaTrainer(kind, teacher, cml, nm.optim.adam(0.05), meta_batch=8,
                              eval_tasks=16, seed=0)

    one = trainer(GainedLinear(3, 2, seed=1))
    hist = one.train(30, eval_every=30, progress=False)
    assert hist.meta_test_mse[-1] < 0.8 * hist.meta_test_mse[0]
    ck = tmp_path / "ck.npz"
    part = trainer(GainedLinear(3, 2, seed=1))
    part.train(12, eval_every=30, progress=False, checkpoint=ck)   # the same cadence
    resumed = trainer(GainedLinear(3, 2, seed=1))
    resumed.train(30, eval_every=30, progress=False, checkpoint=ck, resume=True)
    for k, v in one.net.theta.items():
        np.testing.assert_array_equal(v[0], resumed.net.theta[k][0])


# ---------------------------------------------------------------------- cross-kind identity
def _twins(seed=3, sizes=(2, 5, 4, 1), lam=0.6):
    """A readout-only DualSystem (gains fixed at 1, biases slow, λ learned) and the same
    model as a RateNetwork: static hidden layers, a complex-synapse readout."""
    dual = nm.DualSystem(list(sizes), fast=("readout",), lam=lam, learn_lam=True,
                         gain=1.0, bias=nm.init.Normal(0.3), seed=seed)
    th = dual.theta
    L = len(sizes) - 2
    R = th["readout"][0]
    syn = [nm.StaticSynapse(weight=th["W"][l], bias=th["bias"][l]) for l in range(L)]
    syn.append(nm.ComplexSynapse(omega=R[:, :-1], omega_bias=R[:, -1], lam=lam,
                                 lam_bias=lam))
    net = nm.RateNetwork(list(sizes), activation=["tanh"] * L + ["linear"], synapse=syn,
                         bias=True, tau_neuron=0.0, tau_synapse=dual.tau_fast)
    return dual, net


def _readout_of(net_grad):
    """The RateNetwork's readout meta-gradients in the DualSystem's layout."""
    return {"readout": np.concatenate([net_grad["omega"][-1],
                                       net_grad["omega_bias"][-1][..., None]], axis=-1),
            "lam_readout": np.concatenate([net_grad["lam"][-1],
                                           net_grad["lam_bias"][-1][..., None]], axis=-1)}


@pytest.mark.parametrize("rule", ["delta", "backprop"])
@pytest.mark.parametrize("integrator", ["euler", "expeuler", "rk4"])
def test_dual_readout_only_and_rate_network_settle_to_the_same_state(rng, rule, integrator):
    dual, net = _twins()
    x, y = rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 1))
    learner = nm.Learner(rule=rule, integrator=integrator, dt=0.02, tol=1e-11,
                         max_duration=500.0)
    a, b = learner.run(dual, x, y), learner.run(net, x, y)
    assert a.settled.all() and b.settled.all()
    np.testing.assert_allclose(a.phi[0], b.phi_aug[-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.v[-1], b.v[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_dual_readout_only_and_rate_network_give_the_same_meta_gradients(rng, estimator):
    dual, net = _twins()
    task = nm.Task(rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 1)),
                   rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 1)))
    cml = nm.CML(beta=1e-3, estimator=estimator, tol=1e-12)
    g_dual, g_net = cml.meta_gradient(dual, task), _readout_of(cml.meta_gradient(net, task))
    for k in ("readout", "lam_readout"):
        np.testing.assert_allclose(g_dual[k][0], g_net[k], rtol=0, atol=1e-12)
    for method in ("dense", "cg"):
        e_dual = nm.exact_meta_gradient(dual, task, method=method)
        e_net = _readout_of(nm.exact_meta_gradient(net, task, method=method))
        for k in ("readout", "lam_readout"):
            np.testing.assert_allclose(e_dual[k][0], e_net[k], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- the matrix
def _kinds(GainedLinear):
    syn = nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.7)
    return {
        "RateNetwork (tau_v 0)": nm.RateNetwork([2, 3, 1], synapse=syn, tau_neuron=0.0,
                                                seed=0),
        "RateNetwork (tau_v > 0)": nm.RateNetwork(
            [2, 3, 1], synapse=[nm.StaticSynapse(weight=nm.init.Normal(1.0)), syn],
            tau_neuron=0.05, seed=0),
        "DualSystem": nm.DualSystem([2, 3, 1], seed=0),
        "GainedLinear": GainedLinear(2, 1, seed=0),
    }


OPTIONS = ("integrator", "presentation", "engine", "tau_neuron", "rule", "substeps")


@pytest.mark.parametrize("engine", ["auto", "numpy", "fused", "brian2"])
@pytest.mark.parametrize("presentation", ["batch", "online"])
@pytest.mark.parametrize("integrator", ["euler", "expeuler", "rk4", "scipy"])
def test_every_combination_runs_or_names_kind_and_option(GainedLinear, rng, engine,
                                                         presentation, integrator):
    x, y = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 1))
    for name, kind in _kinds(GainedLinear).items():
        learner = nm.Learner(rule="backprop", integrator=integrator, dt=0.01,
                             duration=0.1, presentation=presentation, engine=engine)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                res = learner.run(kind, x, y)
        except nm.UnsupportedError as err:
            msg = str(err)
            assert kind.kind_name in msg, (name, msg)
            assert any(o in msg for o in OPTIONS), (name, msg)
            assert engine in ("fused", "brian2"), (name, msg)   # auto and numpy run all
            continue
        assert all(np.isfinite(p).all() for p in res.phi_aug), name
        ran = set(res.engine.split("+"))
        expected = {"scipy"} if integrator == "scipy" else (
            {"brian2"} if engine == "brian2" else {"numpy", "fused"})
        assert ran <= expected, (name, res.engine)
        if engine == "numpy":
            assert "fused" not in ran
        if engine == "fused" and integrator != "scipy":
            assert ran == {"fused"}
        if engine == "auto" and fused.AVAILABLE and kind.layered() is not None \
                and integrator in ("euler", "expeuler"):
            assert ran == {"fused"}, (name, res.engine)


@pytest.mark.parametrize("integrator", ["rk4", "euler"])
def test_a_kind_whose_forces_call_a_checking_predict_gets_the_engines_error(integrator):
    """docs/architecture.md, step 4: a kind may check its predict's fast variables
    (kind.check_fast_values, kind.check_output). The engines evaluate trial states --
    here an RK stage that overflows -- through its forces, which call predict: the run
    reports the divergence with its step (SimulationError), not a ValidationError of a
    predict the user never called."""
    from neuro_meta.kind import check_fast_values, check_output

    class Checked(gained_linear.GainedLinear):
        def predict(self, x, phi=None):
            if phi is not None:
                check_fast_values(phi, self.fast_names, "Checked.predict", "phi")
            with np.errstate(over="ignore", invalid="ignore"):
                return check_output(super().predict(x, phi), "Checked.predict")

    kind = Checked(3, 1)
    with pytest.raises(nm.ValidationError, match=r"Checked\.predict\.phi\[weights\]: must "
                       r"contain only finite"):      # a user's call is checked
        kind.predict(np.ones((2, 3)), [np.full_like(np.asarray(p), np.nan)
                                       for p in kind.phi0])
    learner = nm.Learner(rule="backprop", integrator=integrator, dt=1.0, duration=5.0)
    with pytest.raises(nm.SimulationError, match=r"Learner\.run: the simulation of the "
                       r"Checked diverged at step 1 .*Hint"):
        learner.run(kind, np.full((1, 2, 3), 1e100), np.zeros((1, 2, 1)))


def test_describe_on_the_command_line(capsys):
    """``neuro-meta describe`` names the kind, its fast variables and the engine that
    runs its phases (the compiled gain kernel for the dual system when numba is there)."""
    from neuro_meta import cli

    assert cli.main(["describe", "sinusoid_dual"]) == 0
    out = capsys.readouterr().out
    assert "model kind: DualSystem" in out and "gain[0] (40,)" in out
    assert f"runs on: {'fused' if fused.AVAILABLE else 'numpy'}" in out
    assert "brian2  cannot:" in out
    assert cli.main(["describe", "no_such_model"]) == 2


def test_describe_every_shipped_experiment(capsys):
    """Every shipped file is described or refused in one line: the Omniglot classifier's
    kind and loss, and the numpy solver (the fused kernels compute squared error only);
    VSML has no learning process of a model kind and says so."""
    from neuro_meta import cli

    assert cli.main(["describe", "omniglot"]) == 0
    out = capsys.readouterr().out
    assert "model kind: RateNetwork" in out and "loss='cross_entropy'" in out
    assert "fused   cannot: loss" in out and "runs on: numpy" in out
    assert cli.main(["describe", "vsml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evolution strategies" in err
