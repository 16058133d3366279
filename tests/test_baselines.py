"""MAML-family baselines against finite differences of the whole inner learning process,
hand computations, and an independent reference forward pass written here."""
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.baselines import (ANIL, IMAML, MAML, Reptile, Untrained, init_mlp, mlp_grad,
                                  mlp_hvp, train_baseline)
from neuro_meta.families import Sinusoid

SIZES = [1, 5, 5, 1]


# ---------------------------------------------------------------- references (test-side)
def flat(tree):
    return optim.tree_vector(tree)


def unflat(v, like):
    """Inverse of ``flat`` (sorted keys, leaves in order), optional leading task axis."""
    out, i = {}, 0
    lead = v.shape[:-1]
    for k in sorted(like):
        out[k] = []
        for a in like[k]:
            out[k].append(v[..., i:i + a.size].reshape(lead + a.shape))
            i += a.size
    return out


def ref_loss(params, x, y):
    """``1/(2K) Σ_k ‖ŷ_k − y_k‖²`` of one task, example by example (an independent
    forward pass)."""
    n = len(params["w"])
    total = 0.0
    for xk, yk in zip(x, y):
        r = xk
        for l in range(n):
            v = params["w"][l] @ r + params["b"][l]
            r = np.tanh(v) if l < n - 1 else v
        total += 0.5 * np.sum((r - yk) ** 2)
    return total / len(x)


def task_slice(tree, t):
    return {k: [a[t] for a in tree[k]] for k in tree}


def central_fd(f, theta, h=1e-5):
    g = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture
def problem():
    """A [1, 5, 5, 1] network away from its initialisation and 4 sinusoid tasks."""
    rng = np.random.default_rng(7)
    params = init_mlp(SIZES, seed=3)
    params = optim.tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape), params)
    task = Sinusoid(shots=5, val=7).sample(rng, 4)
    return params, task


# ---------------------------------------------------------------- derivatives of the MLP
def test_gradient_matches_finite_differences(problem):
    params, task = problem
    xt, yt, _, _ = task.as_batch()
    loss, g = mlp_grad(params, xt, yt)
    for t in range(task.n_tasks):
        assert loss[t] == pytest.approx(ref_loss(params, xt[t], yt[t]), rel=1e-12)
        fd = central_fd(lambda v: ref_loss(unflat(v, params), xt[t], yt[t]), flat(params))
        assert rel(flat(task_slice(g, t)), fd) < 1e-8


def test_hvp_matches_finite_differences_of_gradient(problem):
    params, task = problem
    xt, yt, _, _ = task.as_batch()
    rng = np.random.default_rng(0)
    T, n = task.n_tasks, flat(params).size
    # per-task parameters and directions (task axis everywhere)
    phi_v = flat(params) + 0.1 * rng.standard_normal((T, n))
    v = rng.standard_normal((T, n))
    hv = mlp_hvp(unflat(phi_v, params), xt, yt, unflat(v, params))
    h = 1e-5
    gp = mlp_grad(unflat(phi_v + h * v, params), xt, yt)[1]
    gm = mlp_grad(unflat(phi_v - h * v, params), xt, yt)[1]
    fd = (np.stack([flat(task_slice(gp, t)) for t in range(T)])
          - np.stack([flat(task_slice(gm, t)) for t in range(T)])) / (2 * h)
    got = np.stack([flat(task_slice(hv, t)) for t in range(T)])
    for t in range(T):
        assert rel(got[t], fd[t]) < 1e-7
    # without a task axis on params the product is the same
    hv0 = mlp_hvp(params, xt, yt, unflat(v, params))
    hv1 = mlp_hvp(unflat(np.broadcast_to(flat(params), (T, n)), params), xt, yt,
                  unflat(v, params))
    assert np.allclose(flat(hv0), flat(hv1), rtol=0, atol=1e-13)


# ---------------------------------------------------------------- meta-gradients
def unrolled_val_loss(theta, task, lr, steps, like):
    """mean_τ L_out after ``steps`` SGD steps on L_trn from θ (gradient from mlp_grad,
    checked above against finite differences)."""
    xt, yt, xv, yv = task.as_batch()
    phi = unflat(np.broadcast_to(theta, (task.n_tasks, theta.size)).copy(), like)
    for _ in range(steps):
        phi = optim.tree_map(lambda p, g: p - lr * g, phi, mlp_grad(phi, xt, yt)[1])
    return np.mean([ref_loss(task_slice(phi, t), xv[t], yv[t]) for t in range(task.n_tasks)])


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_matches_finite_differences(problem, steps):
    params, task = problem
    maml = MAML(inner_lr=0.3, inner_steps=steps)
    g, loss = maml.meta_gradient(params, task)
    assert set(g) == {"w", "b"} and [a.shape for a in g["w"]] == [a.shape for a in params["w"]]
    theta = flat(params)
    assert loss == pytest.approx(unrolled_val_loss(theta, task, 0.3, steps, params), rel=1e-12)
    fd = central_fd(lambda v: unrolled_val_loss(v, task, 0.3, steps, params), theta)
    assert rel(flat(g), fd) < 1e-6


def test_first_order_maml_drops_the_hessian_terms(problem):
    params, task = problem
    xt, yt, xv, yv = task.as_batch()
    lr = 0.3
    g_fo, _ = MAML(inner_lr=lr, inner_steps=1, first_order=True).meta_gradient(params, task)
    g_so, _ = MAML(inner_lr=lr, inner_steps=1).meta_gradient(params, task)
    # one step: φ1 = θ − α∇L_trn(θ); FOMAML = mean ∇L_out(φ1);
    # MAML = mean (I − α H_trn(θ)) ∇L_out(φ1)
    phi1 = optim.tree_map(lambda p, g: p - lr * g, params, mlp_grad(params, xt, yt)[1])
    gv = mlp_grad(phi1, xv, yv)[1]
    hgv = mlp_hvp(params, xt, yt, gv)
    fo = np.mean([flat(task_slice(gv, t)) for t in range(task.n_tasks)], axis=0)
    so = fo - lr * np.mean([flat(task_slice(hgv, t)) for t in range(task.n_tasks)], axis=0)
    assert rel(flat(g_fo), fo) < 1e-12
    assert rel(flat(g_so), so) < 1e-12
    assert rel(flat(g_fo), flat(g_so)) > 0.05          # the Hessian terms matter here


def proximal_solution(theta, like, task, lam, phi0=None, hess=None):
    """argmin_φ L_trn(φ) + λ/2‖φ − θ‖² per task to machine precision, independently of the
    package's inner solver and R-operator: gradient descent from θ into the basin, then
    Newton's method with Hessians from finite differences of the gradient. Given a nearby
    solution ``phi0`` and its Hessian ``hess``, Newton iterations with that fixed Hessian
    (linear convergence at a tiny rate). Returns (φ*, Hessian used)."""
    xt, yt, _, _ = task.as_batch()
    T, n = task.n_tasks, theta.size

    def grad(ph):
        g = mlp_grad(unflat(ph, like), xt, yt)[1]
        return np.stack([flat(task_slice(g, t)) for t in range(T)]) + lam * (ph - theta)

    def hessian(ph, h=1e-6):
        H = np.empty((T, n, n))
        for i in range(n):
            e = np.zeros(n)
            e[i] = h
            H[:, :, i] = (grad(ph + e) - grad(ph - e)) / (2 * h)
        return 0.5 * (H + np.swapaxes(H, 1, 2))

    if phi0 is None:
        phi = np.broadcast_to(theta, (T, n)).copy()
        for _ in range(500):
            phi = phi - 0.05 * grad(phi)
    else:
        phi = phi0.copy()
    for k in range(30):
        H = hessian(phi) if hess is None and k < 5 else (hess if hess is not None else H)
        step = np.linalg.solve(H, grad(phi)[..., None])[..., 0]
        phi = phi - step
        if np.abs(step).max() < 1e-15:
            break
    return phi, H


def test_imaml_meta_gradient_matches_finite_differences(problem):
    params, task = problem
    lam = 2.0
    _, _, xv, yv = task.as_batch()
    theta = flat(params)
    phi_star, hess = proximal_solution(theta, params, task, lam)
    # the method's own gradient-descent solution must be the proximal solution
    imaml = IMAML(lam=lam, inner_lr=0.05, inner_steps=1000, cg_steps=200, cg_tol=1e-14)
    phi_gd = imaml.adapt(params, *task.as_batch()[:2])
    assert np.abs(np.stack([flat(task_slice(phi_gd, t)) for t in range(4)]) - phi_star).max() \
        < 1e-12
    g, _ = imaml.meta_gradient(params, task)

    def val_loss(th):
        ph, _ = proximal_solution(th, params, task, lam, phi0=phi_star, hess=hess)
        return np.mean([ref_loss(unflat(ph[t], params), xv[t], yv[t]) for t in range(4)])

    fd = central_fd(val_loss, theta, h=1e-5)
    assert rel(flat(g), fd) < 1e-5
    # a few CG steps: textbook conjugate gradients on the dense system
    # (I + H/λ) u = ∇L_out(φ*), with H from finite differences (hess = H + λI)
    gv = mlp_grad(unflat(phi_star, params), xv, yv)[1]
    u = []
    for t in range(4):
        A, b = hess[t] / lam, flat(task_slice(gv, t))
        x, r = np.zeros_like(b), b.copy()
        p = r.copy()
        for _ in range(3):
            alpha = (r @ r) / (p @ A @ p)
            x, r_new = x + alpha * p, r - alpha * A @ p
            p, r = r_new + (r_new @ r_new) / (r @ r) * p, r_new
        u.append(x)
    g3, _ = IMAML(lam=lam, inner_lr=0.05, inner_steps=1000, cg_steps=3,
                  cg_tol=0.0).meta_gradient(params, task)
    assert rel(flat(g3), np.mean(u, axis=0)) < 1e-7
    assert rel(flat(g3), fd) > 1e-2                 # and differ from the exact answer


def test_imaml_backtracking_keeps_the_inner_problem_stable(problem):
    params, task = problem
    xt, yt, _, _ = task.as_batch()
    phi_star, _ = proximal_solution(flat(params), params, task, 2.0)
    # plain gradient descent with step 1.0 blows up on this problem ...
    phi = np.broadcast_to(flat(params), phi_star.shape).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(50):
            g = mlp_grad(unflat(phi, params), xt, yt)[1]
            phi = phi - 1.0 * (np.stack([flat(task_slice(g, t)) for t in range(4)])
                               + 2.0 * (phi - flat(params)))
    assert not np.all(np.abs(phi - phi_star) < 1.0)
    # ... the backtracking solver halves the step per task and still converges
    got = IMAML(lam=2.0, inner_lr=1.0, inner_steps=1500).adapt(params, xt, yt)
    assert np.abs(np.stack([flat(task_slice(got, t)) for t in range(4)]) - phi_star).max() \
        < 1e-10


def test_reptile_direction_by_hand(problem):
    params, task = problem
    xt, yt, _, _ = task.as_batch()
    lr = 0.1
    mean = lambda tree: np.mean([flat(task_slice(tree, t)) for t in range(4)], axis=0)
    g1, _ = Reptile(inner_lr=lr, inner_steps=1).meta_gradient(params, task)
    assert rel(flat(g1), mean(mlp_grad(params, xt, yt)[1])) < 1e-12   # joint training
    g2, _ = Reptile(inner_lr=lr, inner_steps=2).meta_gradient(params, task)
    phi1 = optim.tree_map(lambda p, g: p - lr * g, params, mlp_grad(params, xt, yt)[1])
    phi2 = optim.tree_map(lambda p, g: p - lr * g, phi1, mlp_grad(phi1, xt, yt)[1])
    assert rel(flat(g2), (flat(params) - mean(phi2)) / (2 * lr)) < 1e-12


# ---------------------------------------------------------------- batching, seeds
METHODS = [MAML(0.1, 2), MAML(0.1, 2, first_order=True), ANIL(0.3, 2), Reptile(0.1, 3),
           Reptile(0.1, 3, inner_set="all", eval_steps=2, eval_lr=0.2),
           IMAML(lam=2.0, inner_lr=0.5, inner_steps=20, cg_steps=10), Untrained(0.1, 2)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_batched_over_tasks_equals_per_task_calls(problem, method):
    params, task = problem
    xt, yt, xv, yv = task.as_batch()
    g, loss = method.meta_gradient(params, task)
    singles = [method.meta_gradient(params, nm.Task(xt[t], yt[t], xv[t], yv[t]))
               for t in range(4)]
    assert np.allclose(flat(g), np.mean([flat(s[0]) for s in singles], axis=0), rtol=1e-12,
                       atol=1e-14)
    assert loss == pytest.approx(np.mean([s[1] for s in singles]), rel=1e-12)
    mse = method.evaluate(params, task)
    assert mse.shape == (4,)
    for t in range(4):
        one = method.evaluate(params, nm.Task(xt[t], yt[t], xv[t], yv[t]))
        assert one.shape == (1,) and one[0] == pytest.approx(mse[t], rel=1e-12)
        phi = method.adapt(params, xt[t], yt[t])
        pred = nm.baselines.mlp_predict(task_slice(phi, 0), xv[t])
        assert np.mean((pred - yv[t]) ** 2) == pytest.approx(mse[t], rel=1e-12)


def test_same_seed_same_numbers():
    a, b, c = init_mlp([1, 40, 40, 1], 5), init_mlp([1, 40, 40, 1], 5), init_mlp([1, 40, 40, 1], 6)
    assert np.array_equal(flat(a), flat(b)) and not np.allclose(flat(a), flat(c))
    assert all(np.all(x == 0) for x in a["b"])
    s = np.sqrt(6 / 41)
    assert a["w"][0].shape == (40, 1) and np.abs(a["w"][0]).max() <= s
    fam = Sinusoid()
    runs = [train_baseline(MAML(), init_mlp([1, 10, 10, 1], 0), fam, steps=5, meta_batch=4,
                           seed=s, eval_every=2, progress=False) for s in (1, 1, 2)]
    assert np.array_equal(flat(runs[0][0]), flat(runs[1][0]))
    assert runs[0][1]["meta_test_mse"] == runs[1][1]["meta_test_mse"]
    assert runs[0][1]["step"] == [0, 2, 4, 5]
    assert not np.allclose(flat(runs[0][0]), flat(runs[2][0]))


def test_evaluations_in_pieces_record_the_same_numbers(monkeypatch):
    """train_baseline scores its validation and test tasks in pieces of
    metatrain.EVAL_PIECE_NUMBERS numbers: the same history as in one batch."""
    from neuro_meta import metatrain as mt
    fam, params = Sinusoid(), init_mlp([1, 10, 10, 1], 0)
    n = flat(params).size
    runs, calls = [], []
    evaluate = MAML.evaluate
    monkeypatch.setattr(MAML, "evaluate", lambda self, p, task, *a: (
        calls.append(task.n_tasks), evaluate(self, p, task, *a))[1])
    for numbers in (10 ** 9, 4 * n):
        monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", numbers)
        calls.clear()
        runs.append(train_baseline(MAML(), params, fam, steps=3, meta_batch=4, seed=1,
                                   eval_every=2, eval_tasks=10, val_tasks=9,
                                   progress=False)[1])
        runs[-1]["calls"] = sorted(set(calls))
    assert runs[0]["calls"] == [9, 10] and runs[1]["calls"] == [1, 2, 4]
    for key in ("meta_test_mse", "meta_test_sem", "meta_val_mse", "meta_val_sem"):
        assert runs[0][key] == runs[1][key] and len(runs[0][key]) == 3


# ---------------------------------------------------------------- meta-learning works
def _sinusoid_run(steps, sizes):
    fam = Sinusoid(shots=10, val=10)
    test = fam.sample(np.random.default_rng([0, 3]), 100)
    params = init_mlp(sizes, seed=0)
    base = Untrained(0.01, 1).evaluate(params, test).mean()
    trained, hist = train_baseline(MAML(0.01, 1), params, fam, steps=steps, meta_batch=25,
                                   optimizer=optim.adam(1e-3), seed=0, eval_every=steps,
                                   test_task=test, progress=False)
    return base, MAML(0.01, 1).evaluate(trained, test).mean(), hist


def test_sinusoid_maml_beats_untrained():
    # Finn et al.'s setting (1-40-40-1, one inner step of 0.01, Adam 1e-3, meta-batch 25);
    # measured: 200 steps 3.16 vs 4.11 untrained, 1000 steps 1.30 (about 1.5 s).
    base, mse, hist = _sinusoid_run(1000, [1, 40, 40, 1])
    assert hist["meta_test_mse"][0] == pytest.approx(base)
    assert hist["meta_test_mse"][-1] == pytest.approx(mse)
    assert mse < 0.5 * base


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make, match", [
    (lambda: MAML(inner_lr=0.0), r"MAML\.inner_lr: must be > 0\.0 \(got 0\.0\)"),
    (lambda: MAML(inner_steps=0), r"MAML\.inner_steps: must be >= 1 \(got 0\)"),
    (lambda: MAML(first_order="yes"), r"MAML\.first_order: must be True or False"),
    (lambda: Reptile(inner_lr=-1.0), r"Reptile\.inner_lr: must be > 0\.0 \(got -1\.0\)"),
    (lambda: Untrained(inner_steps=1.5), r"Untrained\.inner_steps: must be an integer"),
    (lambda: IMAML(lam=0.0), r"IMAML\.lam: must be > 0\.0 \(got 0\.0\)"),
    (lambda: IMAML(cg_steps=0), r"IMAML\.cg_steps: must be >= 1 \(got 0\)"),
    (lambda: IMAML(inner_lr=float("nan")), r"IMAML\.inner_lr: must be finite"),
    (lambda: init_mlp([1], 0), r"init_mlp\.sizes: must be a list of at least two"),
    (lambda: init_mlp([1, 0, 1], 0), r"init_mlp\.sizes\[1\]: must be >= 1 \(got 0\)"),
    (lambda: MAML().meta_gradient({"w": []}, None), r"MAML\.params: must be a dict"),
    (lambda: MAML().meta_gradient(init_mlp([1, 3, 1]), "task"), r"MAML\.task: must be a Task"),
    (lambda: MAML().adapt(init_mlp([1, 3, 1]), np.zeros((4, 1)), np.zeros((3, 1))),
     r"MAML\.adapt\.y: must have as many tasks and samples as x"),
    (lambda: train_baseline(MAML(), init_mlp([1, 3, 1]), Sinusoid(), steps=-1),
     r"train_baseline\.steps: must be >= 0 \(got -1\)"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(nm.ValidationError, match=match):
        make()


def _bad_inputs():
    """(name, params, call(method, params, x, y, task)) of inputs every MLP baseline must
    refuse with one ValidationError naming what is wrong (before any arithmetic)."""
    p = init_mlp([4, 3, 2], 0)
    x, y = np.zeros((5, 4)), np.zeros((5, 2))
    t = nm.Task(x, y, x, y)
    t_wide = nm.Task(np.zeros((5, 3)), y, np.zeros((5, 3)), y)
    nan = {"w": [p["w"][0] * np.nan, p["w"][1]], "b": p["b"]}
    cplx = {"w": [p["w"][0] + 1j, p["w"][1]], "b": p["b"]}
    lists = {"w": [w.tolist() for w in p["w"]], "b": [b.tolist() for b in p["b"]]}
    return [
        ("list leaves", lambda m: m.adapt(lists, x, y),
         r"\.params\['w'\]\[0\]: must be a numpy array .*\(got list\)"),
        ("complex", lambda m: m.meta_gradient(cplx, t),
         r"\.params\['w'\]\[0\]: must be a real .*\(got dtype complex128\)"),
        ("NaN", lambda m: m.evaluate(nan, t),
         r"\.params\['w'\]\[0\]: must be finite \(got 12 non-finite entries\)"),
        ("input width", lambda m: m.adapt(p, np.zeros((5, 3)), y),
         r"\.adapt\.x: must have 4 features per sample .*\(got shape \(5, 3\)\)"),
        ("output width", lambda m: m.adapt(p, x, np.zeros((5, 3))),
         r"\.adapt\.y: must have 2 entries per sample .*\(got shape \(5, 3\)\)"),
        ("task width", lambda m: m.meta_gradient(p, t_wide),
         r"\.task\.x_train: must have 4 features per sample .*\(got shape \(5, 3\)\)"),
        ("task width, evaluate", lambda m: m.evaluate(p, t_wide),
         r"\.task\.x_train: must have 4 features per sample"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())),
                         ids=[c[0] for c in _bad_inputs()])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_bad_parameters_and_data_are_one_validation_error(method, case):
    """List, complex or non-finite weights and data of the wrong width are refused by name
    (before: a raw TypeError/AttributeError/numpy ValueError, or NaN weights reported as
    a diverging inner loop)."""
    _, call, match = _bad_inputs()[case]
    with pytest.raises(nm.ValidationError, match=type(method).__name__ + match):
        call(method)


@pytest.mark.parametrize("call, match", [
    (lambda p, x, y: mlp_grad(p, np.zeros((5, 3)), y), r"mlp_grad\.x: must have 4 features"),
    (lambda p, x, y: nm.baselines.mlp_loss(p, x, np.zeros((5, 1))),
     r"mlp_loss\.y: must have 2 entries"),
    (lambda p, x, y: nm.baselines.mlp_loss("p", x, y), r"mlp_loss\.params: must be a dict"),
    (lambda p, x, y: nm.baselines.mlp_loss({"w": p["w"]}, x, y),
     r"mlp_loss\.params: must be a dict .*\(got keys \['w'\]\)"),
    (lambda p, x, y: nm.baselines.mlp_loss({"w": [], "b": []}, x, y),
     r"mlp_loss\.params: must be a dict"),
    (lambda p, x, y: nm.baselines.mlp_loss({"w": [np.zeros(4)], "b": [np.zeros(1)]}, x, y),
     r"mlp_loss\.params\['w'\]\[0\]: must be a matrix"),
    (lambda p, x, y: mlp_grad({"w": [p["w"][0], p["w"][1][:, :2]], "b": p["b"]}, x, y),
     r"mlp_grad\.params\['w'\]\[1\]: must have 3 inputs"),
    (lambda p, x, y: mlp_grad({"w": p["w"], "b": [p["b"][0][:2], p["b"][1]]}, x, y),
     r"mlp_grad\.params\['w'\]\[0\]: must be a matrix .* same leading task axis"),
    (lambda p, x, y: mlp_grad({"w": [p["w"][0] * np.nan, p["w"][1]], "b": p["b"]}, x, y),
     r"mlp_grad\.params\['w'\]\[0\]: must be finite"),
    (lambda p, x, y: mlp_grad({"w": [np.stack([w] * 3) for w in p["w"]],
                               "b": [np.stack([b] * 3) for b in p["b"]]},
                              np.zeros((2, 5, 4)), np.zeros((2, 5, 2))),
     r"mlp_grad\.x: must have 3 tasks \(the params' task axis\)"),
    (lambda p, x, y: nm.baselines.mlp_hvp(p, x, y, {"w": p["w"]}),
     r"mlp_hvp\.v: must be a dict .* of 2 layers like params \(got keys \['w'\]\)"),
    (lambda p, x, y: nm.baselines.mlp_hvp(p, x, y, {"w": [p["w"][0][:2], p["w"][1]],
                                                    "b": [p["b"][0][:2], p["b"][1]]}),
     r"mlp_hvp\.v\['w'\]\[0\]: must have the shape of params\['w'\]\[0\] \(3, 4\)"),
    (lambda p, x, y: nm.baselines.mlp_predict(p, np.zeros((5, 3))),
     r"mlp_predict\.x: must have 4 features"),
    (lambda p, x, y: nm.baselines.mlp_predict("p", x), r"mlp_predict\.params: must be a dict"),
    (lambda p, x, y: nm.baselines.mlp_loss(p, np.zeros((0, 4)), np.zeros((0, 2))),
     r"mlp_loss\.x: must have at least one task and one sample"),
    (lambda p, x, y: MAML(0.1, 1).adapt(p, np.zeros((0, 4)), np.zeros((0, 2))),
     r"MAML\.adapt\.x: must have at least one task and one sample \(got shape \(0, 4\)\)"),
    (lambda p, x, y: mlp_grad(p, np.zeros((2, 5, 3)), np.zeros((2, 5, 2))),
     r"mlp_grad\.x: must have 4 features .*\(got shape \(2, 5, 3\)\)"),
    (lambda p, x, y: mlp_grad(p, x, np.zeros((4, 2))),
     r"mlp_grad\.y: must have as many tasks and samples as x \(5,\) \(got shape \(4, 2\)\)"),
])
def test_mlp_helpers_check_params_and_data(call, match):
    """mlp_loss, mlp_grad, mlp_hvp and mlp_predict refuse malformed params (with or
    without a task axis), data of the wrong width or task count, an ill-shaped ``v`` and
    empty data by name (before: KeyError, IndexError, raw numpy errors, or NaN and a
    misdiagnosed divergence for no samples)."""
    p = init_mlp([4, 3, 2], 0)
    with pytest.raises(nm.ValidationError, match=match):
        call(p, np.zeros((5, 4)), np.zeros((5, 2)))


def test_mlp_helpers_accept_a_task_axis_and_predict_agrees():
    p = init_mlp([4, 3, 2], 0)
    x = np.random.default_rng(0).normal(size=(2, 5, 4))
    pt = {k: [np.stack([a, 2 * a]) for a in p[k]] for k in p}
    out = nm.baselines.mlp_predict(pt, x)
    assert out.shape == (2, 5, 2)
    np.testing.assert_array_equal(out[1], nm.baselines.mlp_predict(
        {k: [a[1] for a in pt[k]] for k in pt}, x[1]))


def test_diverging_inner_loop_is_an_error(problem):
    params, task = problem
    with pytest.raises(nm.SimulationError, match=r"MAML: the inner loop diverged .*inner_lr"):
        MAML(inner_lr=1e6, inner_steps=60).meta_gradient(params, task)


# ---------------------------------------------------------------- Reptile on all examples
def _sgd_by_hand(params, x, y, lr, steps, batches=None):
    """One task: ``steps`` SGD steps on (x, y), step j on rows ``batches[j]`` if given."""
    phi = params
    for j in range(steps):
        rows = slice(None) if batches is None else batches[j]
        g = mlp_grad(phi, x[rows], y[rows])[1]
        phi = optim.tree_map(lambda p, d: p - lr * d[0], phi, g)
    return phi


def test_reptile_all_full_batch_is_a_loop_over_shots_and_queries(problem):
    params, task = problem
    xt, yt, xv, yv = task.as_batch()
    lr, steps = 0.1, 3
    g, _ = Reptile(lr, steps, inner_set="all").meta_gradient(params, task)
    phis = [flat(_sgd_by_hand(params, np.concatenate([xt[t], xv[t]]),
                              np.concatenate([yt[t], yv[t]]), lr, steps)) for t in range(4)]
    assert rel(flat(g), (flat(params) - np.mean(phis, axis=0)) / (lr * steps)) < 1e-12
    # N = 1: the gradient of the joint loss (shots ∪ queries), by finite differences of
    # the independent reference loss
    g1, _ = Reptile(lr, 1, inner_set="all").meta_gradient(params, task)
    theta = flat(params)
    fd = np.mean([central_fd(lambda v: ref_loss(unflat(v, params), np.concatenate([xt[t], xv[t]]),
                                                np.concatenate([yt[t], yv[t]])), theta)
                  for t in range(4)], axis=0)
    assert rel(flat(g1), fd) < 1e-7
    shots_only = flat(Reptile(lr, 1).meta_gradient(params, task)[0])
    assert rel(shots_only, fd) > 1e-2          # the option changes the direction


def test_reptile_minibatches_are_seeded_passes_over_the_task(problem):
    params, task = problem
    xt, yt, xv, yv = task.as_batch()
    x, y = np.concatenate([xt, xv], axis=1), np.concatenate([yt, yv], axis=1)   # 12 each
    lr, b, steps = 0.1, 4, 6                   # 24 draws: two passes of 12
    m = Reptile(lr, steps, inner_set="all", inner_batch=b, seed=2)
    idx = m._batches(x, y)
    assert idx.shape == (4, steps, b)
    for t in range(4):
        flat_idx = idx[t].ravel()
        for p in range(2):                      # each example once per pass
            assert sorted(flat_idx[12 * p:12 * (p + 1)]) == list(range(12))
    assert not all(np.array_equal(idx[0], idx[t]) for t in range(1, 4))   # per task
    g, _ = m.meta_gradient(params, task)
    phis = [flat(_sgd_by_hand(params, x[t], y[t], lr, steps, idx[t])) for t in range(4)]
    assert rel(flat(g), (flat(params) - np.mean(phis, axis=0)) / (lr * steps)) < 1e-12
    # deterministic given (θ, task, seed); another seed draws other batches
    again = Reptile(lr, steps, inner_set="all", inner_batch=b, seed=2)
    assert np.array_equal(flat(g), flat(again.meta_gradient(params, task)[0]))
    other = Reptile(lr, steps, inner_set="all", inner_batch=b, seed=3)
    assert not np.array_equal(idx, other._batches(x, y))
    # a task's batches do not depend on the other tasks of its meta-batch
    np.testing.assert_array_equal(m._batches(x[2:3], y[2:3])[0], idx[2])
    np.testing.assert_array_equal(m._batches(x[::-1], y[::-1])[::-1], idx)
    # a batch of at least the task's size is the full batch
    full = Reptile(lr, steps, inner_set="all").meta_gradient(params, task)[0]
    big = Reptile(lr, steps, inner_set="all", inner_batch=50).meta_gradient(params, task)[0]
    assert np.array_equal(flat(full), flat(big))


def test_reptile_evaluation_learns_the_shots_only(problem):
    params, task = problem
    xt, yt, xv, yv = task.as_batch()
    base = Reptile(0.1, 3)
    joint = Reptile(0.1, 3, inner_set="all", inner_batch=4)
    assert np.array_equal(base.evaluate(params, task), joint.evaluate(params, task))
    # eval_steps / eval_lr: Nichol et al.'s separate evaluation loop, on the shots
    m = Reptile(0.1, 3, inner_set="all", eval_steps=5, eval_lr=0.05)
    mse = m.evaluate(params, task)
    for t in range(4):
        phi = _sgd_by_hand(params, xt[t], yt[t], 0.05, 5)
        pred = nm.baselines.mlp_predict(phi, xv[t])
        assert np.mean((pred - yv[t]) ** 2) == pytest.approx(mse[t], rel=1e-12)
    # an explicit inner_steps argument still overrides; 0 steps = θ itself
    phi0 = m.adapt(params, xt, yt, inner_steps=0)
    assert np.array_equal(flat(task_slice(phi0, 1)), flat(params))
    # default: unchanged -- full-batch SGD on the shots only, inner_steps at inner_lr,
    # against the hand-written loop
    phis = [flat(_sgd_by_hand(params, xt[t], yt[t], 0.1, 3)) for t in range(4)]
    assert rel(flat(base.meta_gradient(params, task)[0]),
               (flat(params) - np.mean(phis, axis=0)) / (0.1 * 3)) < 1e-12
    assert np.array_equal(flat(base.meta_gradient(params, task)[0]),
                          flat(Reptile(0.1, 3, inner_set="shots").meta_gradient(params, task)[0]))


@pytest.mark.parametrize("make, match", [
    (lambda: Reptile(inner_set="queries"), r"Reptile\.inner_set: must be one of 'shots', 'all'"),
    (lambda: Reptile(inner_set="all", inner_batch=0), r"Reptile\.inner_batch: must be >= 1"),
    (lambda: Reptile(inner_batch=10), r"Reptile\.inner_batch: must be None unless inner_set"),
    (lambda: Reptile(eval_steps=-1), r"Reptile\.eval_steps: must be >= 0 \(got -1\)"),
    (lambda: Reptile(eval_lr=0.0), r"Reptile\.eval_lr: must be > 0\.0 \(got 0\.0\)"),
    (lambda: Reptile(seed=-2), r"Reptile\.seed: must be >= 0 \(got -2\)"),
])
def test_reptile_invalid_options(make, match):
    with pytest.raises(nm.ValidationError, match=match):
        make()


def test_weight_decay_adds_c_theta_to_the_meta_gradient():
    """One meta-step with plain SGD: θ₁(c) − θ₁(0) = −lr·c·θ₀ for every weight and bias --
    the gradient of the penalty (c/2) Σ θ² added to MAML's meta-gradient."""
    fam, params = Sinusoid(), init_mlp([1, 10, 10, 1], 0)
    lr, c = 0.01, 0.7

    def one_step(decay):
        p, _ = train_baseline(MAML(0.01, 1), params, fam, steps=1, meta_batch=4,
                              optimizer=optim.sgd(lr), eval_every=1, eval_tasks=2,
                              progress=False, select=False, weight_decay=decay)
        return p

    with_c, without = one_step(c), one_step(0.0)
    for k in ("w", "b"):
        for a, b, w in zip(with_c[k], without[k], params[k]):
            np.testing.assert_allclose(a - b, -lr * c * w, rtol=0, atol=1e-12)
    with pytest.raises(nm.ValidationError, match=r"train_baseline\.weight_decay: must be >= 0"):
        train_baseline(MAML(), params, fam, steps=1, weight_decay=-1.0, progress=False)
