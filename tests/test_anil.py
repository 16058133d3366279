"""ANIL (MAML with a head-only inner loop) against finite differences of the whole inner
learning process, an independent masked-MAML recursion written here with exact
Hessian-vector products, and MAML itself on a network without hidden layers."""
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.baselines import (ANIL, MAML, init_mlp, mlp_grad, mlp_hvp, mlp_loss,
                                  mlp_predict, train_baseline)
from neuro_meta.families import Sinusoid
from neuro_meta.losses import get_loss
from test_baselines import central_fd, flat, rel, unflat


def head_mask(params):
    """1 on the output layer's weights and biases, 0 on the hidden layers'."""
    n = len(params["w"])
    return {k: [np.full(np.shape(a), float(l == n - 1)) for l, a in enumerate(params[k])]
            for k in params}


def head_only_loss(theta, like, task, lr, steps, loss):
    """mean_τ L_out after ``steps`` full-network gradient steps with the hidden layers'
    gradient zeroed (the reference inner loop: mlp_grad, times the head mask)."""
    xt, yt, xv, yv = task.as_batch()
    params = unflat(theta, like)
    mask = head_mask(params)
    phi = optim.tree_map(lambda a: np.broadcast_to(a, (task.n_tasks,) + a.shape).copy(),
                         params)
    for _ in range(steps):
        g = mlp_grad(phi, xt, yt, loss)[1]
        phi = optim.tree_map(lambda p, d, m: p - lr * m * d, phi, g, mask)
    return mlp_loss(phi, xv, yv, loss).mean()


def _shaken(sizes, seed):
    rng = np.random.default_rng(seed)
    params = init_mlp(sizes, seed=seed)
    return optim.tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape), params)


@pytest.fixture
def regression():
    """A [1, 5, 5, 1] network away from its initialisation, 4 sinusoid tasks."""
    task = Sinusoid(shots=5, val=7).sample(np.random.default_rng(7), 4)
    return _shaken([1, 5, 5, 1], 3), task, "squared_error"


@pytest.fixture
def classification():
    """A [6, 5, 4, 3] network, 3 three-way tasks of 4 shots and 5 queries."""
    rng = np.random.default_rng(11)
    C = 3

    def onehot(n):
        return np.eye(C)[rng.integers(0, C, (3, n))]

    task = nm.Task(rng.standard_normal((3, 4, 6)), onehot(4), rng.standard_normal((3, 5, 6)),
                   onehot(5))
    return _shaken([6, 5, 4, C], 5), task, "cross_entropy"


@pytest.fixture
def bandit():
    """A [2, 5, 3] network, 3 tasks of a 3-armed reward model: each sample observes the
    arm that was pulled (the masked squared error of neuro_meta.losses)."""
    rng = np.random.default_rng(13)
    loss = get_loss("masked_squared_error")

    def targets(n):
        return loss.targets(rng.integers(0, 3, (3, n)), rng.standard_normal((3, n)), 3)

    task = nm.Task(rng.standard_normal((3, 6, 2)), targets(6), rng.standard_normal((3, 5, 2)),
                   targets(5))
    return _shaken([2, 5, 3], 4), task, "masked_squared_error"


@pytest.fixture(params=["regression", "classification", "bandit"])
def problem(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_finite_differences_of_the_learning_process(problem, steps):
    params, task, loss = problem
    anil = ANIL(inner_lr=0.5, inner_steps=steps, loss=loss)
    g, value = anil.meta_gradient(params, task)
    theta = flat(params)
    assert value == pytest.approx(head_only_loss(theta, params, task, 0.5, steps, loss),
                                  rel=1e-12)
    fd = central_fd(lambda v: head_only_loss(v, params, task, 0.5, steps, loss), theta)
    assert rel(flat(g), fd) < 1e-7
    # the hidden layers do receive a meta-gradient (through the features)
    assert np.linalg.norm(flat({"w": g["w"][:-1], "b": g["b"][:-1]})) > 1e-3


def test_meta_gradient_equals_the_masked_maml_recursion(problem):
    """Reverse mode through φ_{j+1} = φ_j − α M ∇L_trn(φ_j) (M the head mask):
    g_N = ∇L_out(φ_N), g_j = g_{j+1} − α H_trn(φ_j) M g_{j+1}; mean over tasks of g_0."""
    params, task, loss = problem
    xt, yt, xv, yv = task.as_batch()
    lr, steps = 0.4, 4
    mask = head_mask(params)
    phi = optim.tree_map(lambda a: np.broadcast_to(a, (task.n_tasks,) + a.shape).copy(),
                         params)
    path = []
    for _ in range(steps):
        path.append(phi)
        d = mlp_grad(phi, xt, yt, loss)[1]
        phi = optim.tree_map(lambda p, q, m: p - lr * m * q, phi, d, mask)
    g = mlp_grad(phi, xv, yv, loss)[1]
    for phi_j in reversed(path):
        mg = optim.tree_map(lambda a, m: a * m, g, mask)
        g = optim.tree_map(lambda a, h: a - lr * h, g, mlp_hvp(phi_j, xt, yt, mg, loss))
    ref = optim.tree_map(lambda a: a.mean(axis=0), g)
    got, _ = ANIL(inner_lr=lr, inner_steps=steps, loss=loss).meta_gradient(params, task)
    assert rel(flat(got), flat(ref)) < 1e-12


def test_without_hidden_layers_anil_is_maml(classification):
    _, task, loss = classification
    params = _shaken([6, 3], 2)
    for fo in (False, True):
        a, la = ANIL(0.6, 3, first_order=fo, loss=loss).meta_gradient(params, task)
        m, lm = MAML(0.6, 3, first_order=fo, loss=loss).meta_gradient(params, task)
        assert la == pytest.approx(lm, rel=1e-13)
        assert rel(flat(a), flat(m)) < 1e-12


def test_first_order_is_the_validation_gradient_at_the_adapted_head(problem):
    params, task, loss = problem
    xt, yt, xv, yv = task.as_batch()
    anil = ANIL(0.5, 3, first_order=True, loss=loss)
    phi = anil.adapt(params, xt, yt)
    ref = optim.tree_map(lambda a: a.mean(axis=0), mlp_grad(phi, xv, yv, loss)[1])
    got, _ = anil.meta_gradient(params, task)
    assert rel(flat(got), flat(ref)) < 1e-12
    assert anil.name == "anil_fo" and ANIL().name == "anil"


def test_adaptation_moves_the_head_only_and_evaluation_agrees(problem):
    params, task, loss = problem
    xt, yt, xv, yv = task.as_batch()
    anil = ANIL(0.5, 3, loss=loss)
    phi = anil.adapt(params, xt, yt)
    for l in range(len(params["w"]) - 1):
        assert np.array_equal(phi["w"][l], np.broadcast_to(params["w"][l], phi["w"][l].shape))
        assert np.array_equal(phi["b"][l], np.broadcast_to(params["b"][l], phi["b"][l].shape))
    assert not np.allclose(phi["w"][-1], params["w"][-1])
    assert all(a.flags.writeable for k in phi for a in phi[k])
    score = anil.evaluate(params, task)
    ref = get_loss(loss).score(mlp_predict(phi, xv), yv)
    assert np.allclose(score, ref, rtol=1e-12, atol=0)
    # per task, the same numbers alone as in a batch
    g, value = anil.meta_gradient(params, task)
    singles = [anil.meta_gradient(params, nm.Task(xt[t], yt[t], xv[t], yv[t]))
               for t in range(task.n_tasks)]
    assert np.allclose(flat(g), np.mean([flat(s[0]) for s in singles], axis=0), rtol=1e-12,
                       atol=1e-14)
    assert value == pytest.approx(np.mean([s[1] for s in singles]), rel=1e-12)
    # an explicit number of steps overrides the method's (0: the meta-learned head)
    assert np.allclose(anil.evaluate(params, task, inner_steps=0),
                       get_loss(loss).score(mlp_predict(params, xv), yv))


def test_meta_training_learns_and_repeats():
    fam = Sinusoid(shots=10, val=10)
    test = fam.sample(np.random.default_rng([0, 3]), 100)
    params = init_mlp([1, 40, 40, 1], seed=0)
    anil = ANIL(0.1, 5)         # measured: 4.58 untrained, 1.20 after 250 meta-steps
    base = anil.evaluate(params, test).mean()
    runs = [train_baseline(anil, params, fam, steps=300, meta_batch=25, seed=0,
                           eval_every=300, test_task=test, progress=False) for _ in range(2)]
    assert np.array_equal(flat(runs[0][0]), flat(runs[1][0]))
    assert anil.evaluate(runs[0][0], test).mean() < 0.5 * base


@pytest.mark.parametrize("make, match", [
    (lambda: ANIL(inner_lr=0.0), r"ANIL\.inner_lr: must be > 0\.0 \(got 0\.0\)"),
    (lambda: ANIL(inner_steps=0), r"ANIL\.inner_steps: must be >= 1 \(got 0\)"),
    (lambda: ANIL(first_order=1), r"ANIL\.first_order: must be True or False"),
    (lambda: ANIL(loss="hinge"), r"ANIL\.loss"),
    (lambda: ANIL().meta_gradient({"w": []}, None), r"ANIL\.params: must be a dict"),
    (lambda: ANIL().meta_gradient(init_mlp([1, 3, 1]), "task"), r"ANIL\.task: must be a Task"),
    (lambda: ANIL().adapt(init_mlp([1, 3, 1]), np.zeros((4, 1)), np.zeros((3, 1))),
     r"ANIL\.adapt\.y: must have as many tasks and samples as x"),
    (lambda: ANIL().evaluate(init_mlp([1, 3, 1]), Sinusoid().sample(
        np.random.default_rng(0), 2), inner_steps=-1),
     r"ANIL\.evaluate\.inner_steps: must be >= 0"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(nm.ValidationError, match=match):
        make()


def test_diverging_inner_loop_is_an_error(regression):
    params, task, loss = regression
    with pytest.raises(nm.SimulationError, match=r"ANIL: the inner loop diverged .*inner_lr"):
        ANIL(inner_lr=1e6, inner_steps=60, loss=loss).meta_gradient(params, task)


# ---------------------------------------------------------------- in the experiments
def test_anil_on_omniglot_is_in_the_maml_family_of_the_gaps(tmp_path):
    from test_omniglot import TINY

    from neuro_meta.experiments import omniglot as og

    res = og.run(tmp_path, progress=False, methods="cml,maml,anil,anil_fo", overrides=TINY)
    m = res["methods"]
    for name in ("anil", "anil_fo"):
        assert m[name]["meta_steps"] == 4 and 0.0 <= m[name]["accuracy"] <= 1.0
        assert 0.0 <= m[name]["official_error"] <= 1.0
    assert set(res["gaps"]["cml"]) >= {"maml", "anil", "anil_fo", "best"}
    # the same tasks and initial weights, another meta-gradient: other meta-parameters
    assert m["anil_fo"]["accuracy_per_task"] != m["anil"]["accuracy_per_task"]
    d = np.subtract(m["cml"]["accuracy_per_task"], m["anil"]["accuracy_per_task"])
    assert res["gaps"]["cml"]["anil"]["mean"] == pytest.approx(d.mean(), abs=1e-15)
    method, _ = og.baseline_method(og._cfg(), "anil")
    assert isinstance(method, ANIL) and method.loss.name == "cross_entropy"
    assert (method.inner_lr, method.inner_steps) == tuple(
        og._cfg()["baselines"]["anil"][k] for k in ("inner_lr", "inner_steps"))
    assert "anil" not in og.METHODS           # opt-in: the default run keeps its length
    fo, _ = og.baseline_method(og._cfg(), "anil_fo")
    assert isinstance(fo, ANIL) and fo.first_order and fo.name == "anil_fo"
    assert not method.first_order and "anil_fo" not in og.METHODS


@pytest.mark.parametrize("name", ["anil", "anil_fo"])
def test_anil_on_the_sinusoid(tmp_path, name):
    from neuro_meta.experiments import sinusoid

    res = sinusoid.run(tmp_path, quick=True, methods=name, progress=False,
                       overrides=["compare.budget_s=null", "baselines.steps=20"])
    r = res["methods"][name]
    assert r["meta_steps"] == 20 and np.isfinite(r["meta_test_mse"])
    assert name not in sinusoid.DEFAULT_METHODS
    method, _ = sinusoid.build_baseline(sinusoid.load_model("sinusoid"), name)
    assert isinstance(method, ANIL) and method.first_order == (name == "anil_fo")
    with pytest.raises(nm.ValidationError, match=rf"baselines\.{name}\.inner_lrr: unknown key"):
        sinusoid.run(tmp_path, quick=True, methods=name, progress=False,
                     overrides=[f"baselines.{name}.inner_lrr=0.1"])
