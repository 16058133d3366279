"""Doors of the helpers around meta-training (issue 18, second round): task families'
``params``/``teachers``, the losses' public methods, ``metatrain.task_rng`` and
``ParameterAverage``, the exact reference's ``outer_loss``/``fixed_point``,
``seeds.ci95`` and the gradient-quality estimators' helpers.

Each bad input raises one package error whose message names the owner and attribute
(``check_error``); numerical overflow is either computed safely or a SimulationError
with a hint -- never a bare numpy/Python exception or a silent NaN/inf/wrong number.
Valid inputs keep their numbers (bit-identical where a numerical path was touched).
"""
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import estimators as E
from neuro_meta import exact
from neuro_meta.experiments.seeds import ci95
from neuro_meta.families import LinearTeacher, Sinusoid
from neuro_meta.losses import CROSS_ENTROPY, MASKED_SQUARED_ERROR, SQUARED_ERROR
from neuro_meta import metatrain as MT
from neuro_meta.metatrain import ParameterAverage, task_rng
from test_properties import check_error

_rng = np.random.default_rng(18)
X = _rng.normal(size=(3, 2))
Y = _rng.normal(size=(3, 1))
TASK = nm.Task(X, Y, X + 0.5, Y)
NET = nm.RateNetwork([2, 1], activation="linear", tau_neuron=0, seed=0,
                     synapse=nm.ComplexSynapse(omega=0.0, lam=1.0))
RNG = np.random.default_rng(0)
SIN = Sinusoid()
LT = LinearTeacher(n_in=2, n_out=1)
TREE = {"w": [np.ones((2, 3)), None], "b": [np.zeros(3), np.ones(1)]}


def _tree(**changes):
    out = {k: list(v) for k, v in TREE.items()}
    for key, value in changes.items():
        k, i = key.split("_")
        out[k][int(i)] = value
    return out


def _avg_twice(second):
    avg = ParameterAverage(0.9)
    avg.update(TREE)
    avg.update(second)


def _avg_once(first):
    ParameterAverage(0.9).update(first)


# (id, action, error class, pattern the message must contain)
CASES = [
    # --- 1. families: params / teachers
    ("Sinusoid.params rng None", lambda: SIN.params(None, 2), nm.ValidationError,
     r"Sinusoid\.params\.rng: must be a numpy\.random\.Generator .*\(got NoneType\)"),
    ("Sinusoid.params n -1", lambda: SIN.params(RNG, -1), nm.ValidationError,
     r"Sinusoid\.params\.n_tasks: must be >= 1 \(got -1\)"),
    ("Sinusoid.params n 2.5", lambda: SIN.params(RNG, 2.5), nm.ValidationError,
     r"Sinusoid\.params\.n_tasks: must be an integer \(got 2\.5\)"),
    ("Sinusoid.params n huge", lambda: SIN.params(RNG, 10 ** 13), nm.ValidationError,
     r"Sinusoid\.params\.n_tasks: would need an array .* bytes"),
    ("LinearTeacher.teachers rng None", lambda: LT.teachers(None, 2), nm.ValidationError,
     r"LinearTeacher\.teachers\.rng: must be a numpy\.random\.Generator"),
    ("LinearTeacher.teachers n -1", lambda: LT.teachers(RNG, -1), nm.ValidationError,
     r"LinearTeacher\.teachers\.n_tasks: must be >= 1"),
    ("LinearTeacher.teachers n 2.5", lambda: LT.teachers(RNG, 2.5), nm.ValidationError,
     r"LinearTeacher\.teachers\.n_tasks: must be an integer"),
    ("LinearTeacher.teachers n huge", lambda: LT.teachers(RNG, 10 ** 13),
     nm.ValidationError, r"LinearTeacher\.teachers\.n_tasks: would need an array"),
    # --- 2. losses
    ("masked targets n_arms huge", lambda: MASKED_SQUARED_ERROR.targets([0], [1.0], 10 ** 12),
     nm.ValidationError, r"MaskedSquaredError\.targets\.n_arms: would need an array of "
                         r"shape \(1, 1000000000000\)"),
    ("masked targets ragged arms", lambda: MASKED_SQUARED_ERROR.targets(
        [[0], [0, 1]], [1.0], 3), nm.ValidationError,
     r"MaskedSquaredError\.targets\.arms: must be convertible to an array"),
    ("CE check_targets text", lambda: CROSS_ENTROPY.check_targets(
        np.array([["a", "b"]]), "X", "y"), nm.ValidationError,
     r"X\.y: must be an array of real numbers .*\(got dtype <U1\)"),
    ("CE check_targets None entries", lambda: CROSS_ENTROPY.check_targets(
        np.array([[None, 1.0]]), "X", "y"), nm.ValidationError, r"X\.y: must "),
    ("CE check_targets ragged", lambda: CROSS_ENTROPY.check_targets(
        [[1.0], [0.5, 0.5]], "X", "y"), nm.ValidationError,
     r"X\.y: must be convertible to an array of real numbers \(got list\)"),
    ("CE check_targets scalar", lambda: CROSS_ENTROPY.check_targets(1.0, "X", "y"),
     nm.ValidationError, r"X\.y: must have at least 1 dimension"),
    ("masked check_targets text", lambda: MASKED_SQUARED_ERROR.check_targets(
        np.array(["a"]), "X", "y"), nm.ValidationError,
     r"X\.y: must be an array of real numbers"),
    ("squared check_targets text", lambda: SQUARED_ERROR.check_targets(
        np.array(["a"]), "X", "y"), nm.ValidationError,
     r"X\.y: must be an array of real numbers"),
    ("SquaredError.mean outputs differ", lambda: SQUARED_ERROR.mean(
        np.zeros((3, 2)), np.zeros((3, 5))), nm.ValidationError,
     r"SquaredError\.mean\.y: last axis must match out's \(2 outputs\) "
     r"\(got shape \(3, 5\)\)"),
    ("SquaredError.mean silent broadcast", lambda: SQUARED_ERROR.mean(
        np.zeros((3, 1)), np.zeros((3, 5))), nm.ValidationError,
     r"SquaredError\.mean\.y: last axis must match out's \(1 outputs\)"),
    ("SquaredError.score samples differ", lambda: SQUARED_ERROR.score(
        np.zeros((3, 2)), np.zeros((4, 2))), nm.ValidationError,
     r"SquaredError\.score\.y: must broadcast against out of shape \(3, 2\)"),
    ("CE accuracy 1-d", lambda: CROSS_ENTROPY.accuracy(np.zeros(3), np.zeros(3)),
     nm.ValidationError, r"SoftmaxCrossEntropy\.accuracy\.out: must have at least 2 "
                         r"dimensions \(samples, outputs\) \(got shape \(3,\)\)"),
    ("CE per_sample text", lambda: CROSS_ENTROPY.per_sample(
        np.array([["a"]]), np.zeros((1, 1))), nm.ValidationError,
     r"SoftmaxCrossEntropy\.per_sample\.out: must be an array of real numbers"),
    ("masked mean ragged", lambda: MASKED_SQUARED_ERROR.mean(
        [[1.0], [1.0, 2.0]], np.zeros((2, 2))), nm.ValidationError,
     r"MaskedSquaredError\.mean\.out: must be convertible"),
    # --- 3. task_rng
    ("task_rng seed -1", lambda: task_rng(-1, 0), nm.ValidationError,
     r"task_rng\.seed: must be >= 0 \(got -1\)"),
    ("task_rng seed text", lambda: task_rng("a", 0), nm.ValidationError,
     r"task_rng\.seed: must be an integer \(got 'a'\)"),
    ("task_rng seed None", lambda: task_rng(None, 0), nm.ValidationError,
     r"task_rng\.seed: must be an integer \(got None\)"),
    ("task_rng seed complex", lambda: task_rng(1 + 1j, 0), nm.ValidationError,
     r"task_rng\.seed: must be an integer"),
    ("task_rng seed float", lambda: task_rng(1.7, 0, 0), nm.ValidationError,
     r"task_rng\.seed: must be an integer \(got 1\.7\)"),
    ("task_rng step float", lambda: task_rng(1, 0, 0.2), nm.ValidationError,
     r"task_rng\.step: must be an integer \(got 0\.2\)"),
    ("task_rng stream -2", lambda: task_rng(1, -2), nm.ValidationError,
     r"task_rng\.stream: must be >= 0"),
    # --- 4. ParameterAverage.update
    ("average NaN", lambda: _avg_once(_tree(b_1=np.array([np.nan]))), nm.ValidationError,
     r"ParameterAverage\.update\.params\.b\[1\]: must contain only finite values .*"
     r"first nan at index \(0,\)"),
    ("average inf later", lambda: _avg_twice(_tree(w_0=np.full((2, 3), np.inf))),
     nm.ValidationError, r"ParameterAverage\.update\.params\.w\[0\]: must contain only "
                         r"finite values"),
    ("average complex", lambda: _avg_once(_tree(w_0=np.ones((2, 3)) + 1j)),
     nm.ValidationError, r"ParameterAverage\.update\.params\.w\[0\]: must be a real"),
    ("average other shape", lambda: _avg_twice(_tree(w_0=np.ones((3, 3)))),
     nm.ValidationError, r"ParameterAverage\.update\.params\.w\[0\]: must be a real array "
                         r"of shape \(2, 3\)"),
    ("average other keys", lambda: _avg_twice({"w": TREE["w"]}), nm.ValidationError,
     r"ParameterAverage\.update\.params: must be a dict with the keys"),
    ("average not a dict", lambda: _avg_once([np.ones(2)]), nm.ValidationError,
     r"ParameterAverage\.update\.params: must be a dict"),
    # --- 5. exact
    ("outer_loss task None", lambda: exact.outer_loss(NET, None), nm.ValidationError,
     r"outer_loss\.task: must be a Task \(got NoneType\)"),
    ("outer_loss net None", lambda: exact.outer_loss(None, TASK), nm.ValidationError,
     r"outer_loss\.net: must be a model kind .*\(got NoneType\)"),
    ("outer_loss tol", lambda: exact.outer_loss(NET, TASK, tol=-1.0), nm.ValidationError,
     r"outer_loss\.tol: must be > 0"),
    ("outer_loss learner", lambda: exact.outer_loss(NET, TASK, learner=3),
     nm.ValidationError, r"outer_loss\.learner: must be a Learner"),
    ("fixed_point net None", lambda: exact.fixed_point(None, X[None], Y[None]),
     nm.ValidationError, r"fixed_point\.net: must be a model kind"),
    ("fixed_point x None", lambda: exact.fixed_point(NET, None, Y[None]),
     nm.ValidationError, r"fixed_point\.x: "),
    ("fixed_point x list no task axis", lambda: exact.fixed_point(
        NET, X.tolist(), Y.tolist()), nm.ValidationError,
     r"fixed_point\.x: must have a leading task axis.*\(got shape \(3, 2\)\)"),
    ("fixed_point method", lambda: exact.fixed_point(NET, X[None], Y[None], method="lu"),
     nm.ValidationError, r"fixed_point\.method: must be one of 'auto', 'dense', 'cg'"),
    # --- 6. seeds.ci95
    ("ci95 beyond float", lambda: ci95([1.7e308, -1.7e308, 1.7e308]), nm.SimulationError,
     r"seeds\.ci95: .*Hint"),
    # --- 7. estimators
    ("cosine NaN", lambda: E.cosine({"a": [np.array([np.nan, 1.0])]},
                                    {"a": [np.ones(2)]}), nm.ValidationError,
     r"cosine\.g: must be finite"),
    ("cosine inf ref", lambda: E.cosine({"a": [np.ones(2)]},
                                        {"a": [np.array([np.inf, 1.0])]}),
     nm.ValidationError, r"cosine\.ref: must be finite"),
    ("relative_error keys unhashable", lambda: E.relative_error(TREE, TREE, keys=[["w"]]),
     nm.ValidationError, r"relative_error\.keys: must be a list of meta-parameter names"),
    ("relative_error keys str", lambda: E.relative_error(TREE, TREE, keys="w"),
     nm.ValidationError, r"relative_error\.keys: must be a list of meta-parameter names"),
    ("cosine keys empty", lambda: E.cosine(TREE, TREE, keys=[]), nm.ValidationError,
     r"cosine\.keys: must be a list of meta-parameter names .*at least one"),
    ("conjugate_gradient Ap overflow", lambda: E.conjugate_gradient(
        lambda v: 1e150 * v, np.full((1, 3), 1e80), 3), nm.SimulationError,
     r"conjugate_gradient: .*Hint"),
    ("neumann b empty tasks", lambda: E.neumann_series(
        lambda v: v, np.zeros((0, 3)), 3, np.zeros(0)), nm.ValidationError,
     r"neumann_series\.b: must hold at least one task and one parameter.* "
     r"\(got shape \(0, 3\)\)"),
    ("neumann b no parameters", lambda: E.neumann_series(
        lambda v: v, np.zeros((1, 0)), 3, np.ones(1)), nm.ValidationError,
     r"neumann_series\.b: must hold at least one task and one parameter"),
    ("conjugate_gradient b empty", lambda: E.conjugate_gradient(
        lambda v: v, np.zeros((1, 0)), 3), nm.ValidationError,
     r"conjugate_gradient\.b: must hold at least one task"),
    ("power_iteration eigenvalue beyond float", lambda: E.power_iteration(
        lambda v: 1e308 * v + 1e308 * v[:, ::-1], (1, 4), 3), nm.SimulationError,
     r"power_iteration: .*Hint"),
    ("Cost grads -1", lambda: E.Cost(grads=-1), nm.ValidationError,
     r"Cost\.grads: must be >= 0 \(got -1\.0\)"),
    ("Cost grads nan", lambda: E.Cost(grads=np.nan), nm.ValidationError,
     r"Cost\.grads: must be finite \(got nan\)"),
    ("Cost grads text", lambda: E.Cost(grads="a"), nm.ValidationError,
     r"Cost\.grads: must be a real number \(got 'a'\)"),
    ("Cost phases float", lambda: E.Cost(phases=1.5), nm.ValidationError,
     r"Cost\.phases: must be an integer \(got 1\.5\)"),
    ("Cost wall_s inf", lambda: E.Cost(wall_s=np.inf), nm.ValidationError,
     r"Cost\.wall_s: must be finite"),
    # --- metatrain's checkpoint and evaluation helpers
    ("eval_piece_tasks text", lambda: MT.eval_piece_tasks("abc"), nm.ValidationError,
     r"eval_piece_tasks\.theta: must be meta-parameters.*\(got 'abc'\)"),
    ("eval_piece_tasks learner", lambda: MT.eval_piece_tasks(NET.theta, learner=5),
     nm.ValidationError, r"eval_piece_tasks\.learner: must be None or a Learner \(got 5\)"),
    ("optimizer_probe int", lambda: MT.optimizer_probe(5, NET.theta), nm.ValidationError,
     r"optimizer_probe\.optimizer: must be a gradient transformation with init and update"),
    ("optimizer_fingerprint int", lambda: MT.optimizer_fingerprint(5, NET.theta),
     nm.ValidationError, r"optimizer_fingerprint\.optimizer: must be a gradient "),
    ("optimizer_fingerprint theta", lambda: MT.optimizer_fingerprint(nm.optim.adam(0.1), 5),
     nm.ValidationError, r"optimizer_fingerprint\.theta: must be a dict of lists"),
]


@pytest.mark.parametrize("action,error,pattern", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_door(action, error, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no numpy overflow on the way
        with pytest.raises(error, match=pattern) as info:
            action()
    assert type(info.value) is error or isinstance(info.value, error)
    check_error(info.value)


# ---------------------------------------------------------------- valid inputs
def test_families_params_and_teachers_are_what_sample_draws():
    """The public draws are those of sample (same generator state, same numbers)."""
    amp, ph = SIN.params(np.random.default_rng(5), 4)
    task = SIN.sample(np.random.default_rng(5), 4)
    x = task.x_train[..., 0]
    assert np.array_equal(task.y_train[..., 0], amp[:, None] * np.sin(x - ph[:, None]))
    W = LT.teachers(np.random.default_rng(5), 3)
    assert W.shape == (3, 1, 2)
    same = LT.teachers(np.random.default_rng(5), np.int64(3))
    assert np.array_equal(W, same)


def test_losses_valid_inputs_unchanged():
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    assert np.array_equal(SQUARED_ERROR.mean(out, y),
                          0.5 * ((out - y) ** 2).sum(axis=-1).mean(axis=-1))
    # broadcasting over leading axes (a task axis on one side only) still works
    assert SQUARED_ERROR.per_sample(out, y[0]).shape == (2, 4)
    onehot = np.eye(3)[rng.integers(0, 3, (2, 4))]
    acc = CROSS_ENTROPY.accuracy(out, onehot)
    assert np.array_equal(acc, 1.0 - (out.argmax(-1) != onehot.argmax(-1)).mean(-1))
    assert CROSS_ENTROPY.check_targets(onehot.tolist(), "X", "y").shape == (2, 4, 3)
    # an object array of numbers is data
    assert CROSS_ENTROPY.check_targets(np.array([[0.0, 1.0]], dtype=object), "X", "y") \
        .dtype == np.float64
    # complex outputs (complex-step derivatives) pass
    assert np.iscomplexobj(SQUARED_ERROR.mean(out + 1e-20j, y))
    t = MASKED_SQUARED_ERROR.targets([[0, 2]], [[1.0, -2.0]], 3)
    assert t.shape == (1, 2, 3) and t[0, 1, 2] == -2.0


def test_task_rng_same_streams():
    for args in [(0, 1), (3, 2, 7), (np.int64(5), np.int32(3), np.uint8(2))]:
        ref = np.random.default_rng([int(a) for a in args] + [0] * (3 - len(args)))
        assert np.array_equal(task_rng(*args).random(4), ref.random(4))


def test_parameter_average_valid_and_no_decay():
    avg = ParameterAverage(0.5)
    avg.update(TREE)
    avg.update(_tree(b_1=np.array([3.0])))
    assert avg.value(TREE)["b"][1][0] == pytest.approx((0.25 * 1.0 + 0.5 * 3.0) / 0.75)
    ParameterAverage(None).update(None)     # no averaging: nothing is looked at


def test_exact_valid_numbers_unchanged():
    """outer_loss and fixed_point give the numbers they gave before the checks."""
    assert exact.outer_loss(NET, TASK) == 0.04609256350553472
    phi, method = exact.fixed_point(NET, X[None], Y[None])
    assert method == "dense"
    assert phi[0].tolist() == [[[0.4124166559281708, 0.13137800952140394,
                                 0.1775456276022273]]]


def test_ci95_scale_safe():
    mean, half = ci95([1e300, -1e300])
    assert mean == 0.0 and np.isfinite(half)
    ref_mean, ref_half = ci95([1.0, -1.0])
    assert half == pytest.approx(ref_half * 1e300, rel=1e-12)
    mean, half = ci95([1.5e308, 1.5e308])             # the sum overflows, not the mean
    assert mean == 1.5e308 and half == 0.0
    assert ci95([1.0, 2.0, 4.0]) == ci95(np.array([1.0, 2.0, 4.0]))
    # one value: nan half-width, documented (the aggregate writes None for it)
    m1, h1 = ci95([1.0])
    assert m1 == 1.0 and np.isnan(h1)


def _spd(n=4, seed=2):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T + np.eye(n)


def test_estimator_solvers_valid_numbers_unchanged():
    """The numbers of normal inputs are bit-identical to before the checks."""
    b = np.random.default_rng(1).normal(size=(2, 4))
    A = _spd()

    def f(v):
        return v @ A.T

    assert E.conjugate_gradient(f, b, 3)[0].tolist() == [
        [0.040692806747939264, -0.05303350843670984, 0.4248011257848884,
         -0.8932172576002747],
        [0.1987721304655207, 0.2626717069158094, -0.4541951961071768, 0.663323678788857]]
    assert E.power_iteration(f, (2, 4), 5).tolist() == [9.38502702585938, 9.202408587273997]
    assert E.neumann_series(f, b, 3, np.array([0.05, 0.05])).tolist() == [
        [0.05584566210353893, 0.08810448277453875, 0.07119542899263046,
         -0.21577232393403706],
        [0.11425988156871375, 0.08039840439004976, -0.09869155594329886,
         0.1125434943639315]]


def test_estimator_solvers_scale_safe():
    """Right-hand sides and products whose squared norms overflow (or underflow) float64
    give the solution of the scaled problem, not nan / 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        u, n = E.conjugate_gradient(lambda v: 2 * v, np.full((1, 3), 1e200), 3)
        assert np.allclose(u, 5e199, rtol=1e-15, atol=0) and n == 1
        u, _ = E.conjugate_gradient(lambda v: 2 * v, np.full((1, 3), 1e-200), 3)
        assert np.allclose(u, 5e-201, rtol=1e-15, atol=0)
        # a batch: the normal task keeps its numbers
        b = np.array([[1.0, 2.0, 3.0], [1e200, 1e200, 1e200]])
        u, _ = E.conjugate_gradient(lambda v: 2 * v, b, 3)
        assert u[0].tolist() == E.conjugate_gradient(lambda v: 2 * v, b[:1], 3)[0][0].tolist()
        assert np.allclose(u[1], 5e199, rtol=1e-15, atol=0)
        # a subnormal right-hand side: scaled by at most 2**1023 (its 2**-e overflowed)
        u, _ = E.conjugate_gradient(lambda v: 2 * v, np.array([[1.0, 2.0], [1e-310, 0.0]]), 3)
        assert u[0].tolist() == [0.5, 1.0] and u[1, 1] == 0.0
        assert u[1, 0] == pytest.approx(5e-311, rel=1e-3)      # (subnormal: few digits)
        mu = E.power_iteration(lambda v: 1e200 * v, (1, 3), 3)
        assert mu[0] == pytest.approx(1e200, rel=1e-12)
        mu = E.power_iteration(lambda v: 1e-200 * v, (1, 3), 3)
        assert mu[0] == pytest.approx(1e-200, rel=1e-12)


def test_cosine_and_relative_error_valid():
    g = {"a": [np.array([1.0, 2.0])], "b": [None]}
    r = {"a": [np.array([2.0, 1.0])], "b": [None]}
    assert E.cosine(g, r) == pytest.approx(0.8)
    assert E.cosine(g, r, keys=("a",)) == E.cosine(g, r)
    assert E.relative_error(g, r, keys=["a"]) == pytest.approx(np.sqrt(2) / np.sqrt(5))
    # huge (or tiny) finite trees: the scale-invariant numbers, not nan / 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        big = {k: [None if a is None else 1e300 * a for a in v] for k, v in g.items()}
        bigr = {k: [None if a is None else 1e300 * a for a in v] for k, v in r.items()}
        assert E.cosine(big, bigr) == pytest.approx(0.8)
        assert E.relative_error(big, bigr) == pytest.approx(np.sqrt(2) / np.sqrt(5))
        tiny = {k: [None if a is None else 1e-300 * a for a in v] for k, v in g.items()}
        assert E.cosine(tiny, r) == pytest.approx(0.8)
    assert E.cosine(g, {"a": [np.zeros(2)], "b": [None]}) == 0.0     # documented


def test_cost_valid():
    c = E.Cost(hvps=2, grads=np.float64(3.0), phases=np.int64(1)) + E.Cost(cross=1.0)
    assert c.gradient_equivalents() == 8.0 and c.as_dict()["phases"] == 1
