"""A read-out tied across its classes (``optim.tied_rows``, ``optim.tie_rows``, the
``meta.tie_readout`` / ``baselines.tie_readout`` settings of ``neuro-meta run
omniglot``): the projection against its closed form, the transformation keeping tied
parameters tied through Adam, and the symmetry it encodes -- with a tied read-out the
learning process is equivariant under permuting a task's labels, and the exact
meta-gradient averaged over the permutations of a task is itself tied."""
import itertools

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import omniglot as og
from neuro_meta.metatrain import optimizer_fingerprint

KEYS = og.CML_READOUT


def _tree(rng):
    return {"w": [rng.normal(size=(4, 3)), rng.normal(size=(5, 4))],
            "b": [rng.normal(size=4), rng.normal(size=5)], "g": [None, rng.normal(size=5)]}


# ---------------------------------------------------------------------- the projection
def test_tied_rows_is_the_row_mean_of_the_chosen_entries(rng):
    t = _tree(rng)
    out = optim.tied_rows(t, ("w", "b"))
    np.testing.assert_array_equal(out["w"][0], t["w"][0])           # other layers kept
    np.testing.assert_array_equal(out["b"][0], t["b"][0])
    assert out["g"] is t["g"]                                        # other keys kept
    np.testing.assert_allclose(out["w"][1], np.tile(t["w"][1].mean(0), (5, 1)), rtol=1e-15)
    np.testing.assert_allclose(out["b"][1], np.full(5, t["b"][1].mean()), rtol=1e-15)
    again = optim.tied_rows(out, ("w", "b"))                         # a projection
    np.testing.assert_array_equal(again["w"][1], out["w"][1])
    # orthogonal: what it removes is orthogonal to every tied tree
    removed = t["w"][1] - out["w"][1]
    tied = np.tile(rng.normal(size=4), (5, 1))
    assert abs(np.sum(removed * tied)) < 1e-12
    first = optim.tied_rows(t, ("w",), layer=0)["w"][0]
    np.testing.assert_allclose(first, np.tile(t["w"][0].mean(0), (4, 1)), rtol=1e-15)
    assert optim.tied_rows(t, ("g",), layer=0)["g"][0] is None


@pytest.mark.parametrize("call, match", [
    (lambda t: optim.tied_rows(t, "w"), r"tied_rows\.keys: must be a non-empty list"),
    (lambda t: optim.tied_rows(t, []), r"tied_rows\.keys: must be a non-empty list"),
    (lambda t: optim.tied_rows(t, ("x",)), r"tied_rows\.keys: must name entries"),
    (lambda t: optim.tied_rows(t, ("w",), layer=2), r"tied_rows\.layer: must index the 2"),
    (lambda t: optim.tied_rows(t, ("w",), layer=1.5), r"tied_rows\.layer"),
    (lambda t: optim.tied_rows([1], ("w",)), r"tied_rows\.tree: must be a dict"),
    (lambda t: optim.tie_rows(("w",), layer=-3).init(t), r"tied_rows\.layer"),
    (lambda t: optim.tie_rows(("w", 1)), r"tie_rows\.keys"),
])
def test_bad_ties_are_refused(rng, call, match):
    with pytest.raises(ValidationError, match=match):
        call(_tree(rng))


def test_tie_rows_keeps_tied_parameters_tied_through_adam(rng):
    t = optim.tied_rows(_tree(rng), ("w", "b"))
    opt = optim.chain(optim.tie_rows(("w", "b")), optim.clip_by_global_norm(1.0),
                      optim.adam(0.1))
    plain = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.1))
    state, pstate = opt.init(t), plain.init(t)
    for _ in range(5):
        g = _tree(rng)
        u, state = opt.update(g, state)
        t = optim.apply_updates(t, u)
        assert np.ptp(t["w"][1], axis=0).max() < 1e-14 and np.ptp(t["b"][1]) < 1e-14
        # the tied update is Adam of the projected gradient, entry by entry
        pu, pstate = plain.update(optim.tied_rows(g, ("w", "b")), pstate)
        for k in ("w", "b"):
            for a, b in zip(u[k], pu[k]):
                np.testing.assert_array_equal(a, b)
    assert optimizer_fingerprint(opt, t) != optimizer_fingerprint(plain, t)
    assert opt.settings[1] == ("tie_rows", ("w", "b"), -1)


# ---------------------------------------------------------------------- the symmetry
def _problem(seed=1):
    rng = np.random.default_rng(seed)
    n_in, n_out = 4, 3
    x, y = rng.normal(size=(8, n_in)), np.eye(n_out)[rng.integers(0, n_out, 8)]
    xv, yv = rng.normal(size=(12, n_in)), np.eye(n_out)[rng.integers(0, n_out, 12)]
    net = nm.RateNetwork([n_in, 5, n_out], activation=["tanh", "linear"], tau_neuron=0,
                         seed=3, loss="cross_entropy",
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.5),
                                                   lam=nm.init.Uniform(0.5, 1.5)))
    return net, x, y, xv, yv


def _logits(net, learner, x, y, xv):
    res = learner.run(net, x, y)
    assert np.all(res.settled)
    return net.predict(xv, [np.asarray(p) for p in res.phi_aug])


def test_tied_readout_learns_every_labelling_alike():
    """Permuting a task's labels permutes the settled network's logits when the read-out
    is tied, not when it is not (the property the tie encodes)."""
    net, x, y, xv, _ = _problem()
    tied = net.with_theta(optim.tied_rows(net.theta, KEYS))
    learner = nm.Learner(rule="backprop", tol=1e-12)
    perm = np.array([2, 0, 1])
    for model, equivariant in ((tied, True), (net, False)):
        z = _logits(model, learner, x, y, xv)
        zp = _logits(model, learner, x, y[:, perm], xv)
        # softmax logits are defined up to a constant per sample
        d = zp - z[:, perm]
        spread = np.ptp(d, axis=-1).max()
        assert (spread < 1e-9) if equivariant else (spread > 1e-3), spread


def test_meta_gradient_averaged_over_labellings_is_tied():
    """The exact meta-gradient of a tied network, averaged over the 3! labellings of a
    task, has equal read-out rows: the tie is the projection onto the meta-gradients of
    tasks whose labels are exchangeable (the untied network's average is not tied)."""
    net, x, y, xv, yv = _problem(seed=2)
    tied = net.with_theta(optim.tied_rows(net.theta, KEYS))
    for model, is_tied in ((tied, True), (net, False)):
        gs = [nm.exact_meta_gradient(model, nm.Task(x, y[:, p], xv, yv[:, p]))
              for p in map(list, itertools.permutations(range(3)))]
        mean = optim.tree_map(lambda *a: sum(a) / len(a), *gs)
        spread = max(np.ptp(mean[k][-1], axis=0).max() for k in KEYS)
        scale = max(np.abs(mean[k][-1]).max() for k in KEYS)
        assert (spread < 1e-9 * scale) if is_tied else (spread > 1e-3 * scale), \
            (spread, scale)
        # the hidden layer's meta-gradient of a tied network is the same for every labelling
        if is_tied:
            for g in gs[1:]:
                np.testing.assert_allclose(g["omega"][0], gs[0]["omega"][0], rtol=1e-7,
                                           atol=1e-12)


# ---------------------------------------------------------------------- the experiment
def test_omniglot_ties_cml_and_baseline_readouts_when_asked():
    cfg = og._cfg(overrides=["meta.tie_readout=true", "baselines.tie_readout=true"])
    fams = og.families(cfg)
    trainer = og.build_cml(cfg, fams)[1]
    theta = trainer.net.theta
    for k in KEYS:
        assert np.ptp(theta[k][-1], axis=0).max() == 0.0
    assert np.ptp(theta["omega"][0], axis=0).max() > 0.1           # hidden layers not tied
    assert trainer.optimizer.settings[1] == ("tie_rows", KEYS, -1)
    for name in ("maml", "reptile", "untrained"):
        method, args, kw = og._baseline_training(cfg, name, fams, trainer)
        p0 = args[1]
        assert np.ptp(p0["w"][-1], axis=0).max() == 0.0 and np.ptp(p0["b"][-1]) == 0.0
        assert kw["optimizer"].settings[1] == ("tie_rows", og.MLP_READOUT, -1)
    plain = og._cfg()
    fams = og.families(plain)
    trainer = og.build_cml(plain, fams)[1]
    assert np.ptp(trainer.net.theta["omega"][-1], axis=0).max() > 0.1
    assert og._baseline_training(plain, "maml", fams, trainer)[2]["optimizer"].settings[0] \
        == "adam"


@pytest.mark.parametrize("overrides, match", [
    (["meta.tie_readout=1"], r"omniglot\.yaml: meta\.tie_readout: must be true or false "
                             r"\(got 1\)"),
    (["baselines.tie_readout=yes please"], r"baselines\.tie_readout: must be true or false"),
])
def test_bad_tie_settings_name_file_and_key(overrides, match):
    cfg = og._cfg(overrides=overrides)
    fams = og.families(cfg)
    with pytest.raises(ValidationError, match=match):
        trainer = og.build_cml(cfg, fams)[1]
        og.baseline_method(cfg, "maml")
        og._baseline_training(cfg, "maml", fams, trainer)


@pytest.mark.parametrize("model", ["dual", "warp"])
def test_tie_is_refused_for_other_cml_models(model):
    cfg = og._cfg(overrides=["meta.tie_readout=true"])
    with pytest.raises(ValidationError, match=r"meta\.tie_readout: applies to method cml "
                                              r"only, not cml_" + model):
        og.build_cml(cfg, og.families(cfg), model=model)


def test_run_refuses_a_bad_tie_before_any_work(tmp_path):
    with pytest.raises(ValidationError, match=r"baselines\.tie_readout"):
        og.run(tmp_path / "o", quick=True, methods="cml,maml", progress=False,
               overrides=["baselines.tie_readout=3"])
    assert not (tmp_path / "o").exists()
