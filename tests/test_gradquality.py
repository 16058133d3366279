"""Meta-gradient estimators (neuro_meta.estimators) against closed forms, each on a problem
where it must be exact, their cost accounting, their validation, and the
``neuro-meta gradquality`` experiment on tiny settings."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import cli, optim
from neuro_meta.estimators import (conjugate_gradient, cosine, estimate, gradient_learner,
                                   neumann_series, phase_cost, power_iteration,
                                   relative_error)
from neuro_meta.experiments import gradquality as gq

ROOT = Path(__file__).resolve().parent.parent
TIGHT = 1e-12


# ---------------------------------------------------------------- closed forms (numpy only)
def fixed_point(x, y, omega, lam):
    """Minimiser of 1/(2K) Σ‖φ x − y‖² + Σ λ/2 (φ − ω)², row by row."""
    K = len(x)
    return np.stack([np.linalg.solve(x.T @ x / K + np.diag(lam[i]),
                                     x.T @ y[:, i] / K + lam[i] * omega[i])
                     for i in range(omega.shape[0])])


def closed_form(x, y, xv, yv, omega, lam):
    """dL_out/dω, dL_out/dλ of the single-layer linear problem (implicit function theorem
    written out): u_i = (XᵀX/K + Λ_i)⁻¹ ∇L_out; dω = λ u, dλ = −(φ* − ω) u."""
    K, V = len(x), len(xv)
    phi = fixed_point(x, y, omega, lam)
    g_out = (xv @ phi.T - yv).T @ xv / V
    u = np.stack([np.linalg.solve(x.T @ x / K + np.diag(lam[i]), g_out[i])
                  for i in range(omega.shape[0])])
    return lam * u, -(phi - omega) * u, phi, g_out


def linear(x, y, xv, yv, omega, lam):
    net = nm.RateNetwork([x.shape[1], y.shape[1]], activation="linear", bias=False,
                         tau_neuron=0, synapse=nm.ComplexSynapse(omega=omega, lam=lam))
    return net, nm.Task(x, y, xv, yv)


def vec(g):
    return np.concatenate([g["lam"][0].ravel(), g["omega"][0].ravel()])


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    xv, yv = rng.normal(size=(20, 5)), rng.normal(size=(20, 2))
    omega, lam = rng.normal(size=(2, 5)), rng.uniform(0.5, 1.5, size=(2, 5))
    om, la, phi, g_out = closed_form(x, y, xv, yv, omega, lam)
    net, task = linear(x, y, xv, yv, omega, lam)
    return dict(net=net, task=task, ref=np.concatenate([la.ravel(), om.ravel()]),
                x=x, y=y, xv=xv, yv=yv, omega=omega, lam=lam, phi=phi, g_out=g_out)


# ---------------------------------------------------------------- exact where they must be
def test_t1t2_is_exact_when_the_hessian_is_the_identity():
    """XᵀX/K = (1 − λ) I with one λ for every synapse: H = I, so v = ∇L_out is H⁻¹∇L_out."""
    rng = np.random.default_rng(1)
    K, n, lam0 = 12, 4, 0.4
    q, _ = np.linalg.qr(rng.normal(size=(K, n)))
    x = np.sqrt(K * (1 - lam0)) * q                 # XᵀX/K = (1 − λ) I
    y, xv, yv = rng.normal(size=(K, 3)), rng.normal(size=(9, n)), rng.normal(size=(9, 3))
    omega, lam = rng.normal(size=(3, n)), np.full((3, n), lam0)
    om, la, _, _ = closed_form(x, y, xv, yv, omega, lam)
    net, task = linear(x, y, xv, yv, omega, lam)
    g, cost = estimate("t1t2", net, task, tol=TIGHT)
    assert rel(vec(g), np.concatenate([la.ravel(), om.ravel()])) < 1e-9
    assert cost.hvps == 0 and cost.cross == 1


def test_t1t2_and_first_order_are_biased_on_a_generic_problem(problem):
    """The same estimators on a Hessian that is not the identity: errors that do not
    shrink when the phases tighten (their bias is not a matter of compute)."""
    for name in ("t1t2", "fomaml"):
        errs = [rel(vec(estimate(name, problem["net"], problem["task"], tol=t)[0]),
                    problem["ref"]) for t in (1e-6, 1e-12)]
        assert min(errs) > 1e-2, name
        assert abs(errs[0] - errs[1]) < 1e-4 * errs[1], name


def test_cg_is_exact_with_k_equal_to_the_dimension(problem):
    P = problem["omega"].size                     # 10 plastic synapses per task
    errs = {k: rel(vec(estimate("cg", problem["net"], problem["task"], k=k, tol=TIGHT)[0]),
                   problem["ref"]) for k in (1, 3, P)}
    assert errs[P] < 1e-8
    assert errs[1] > 1e-2 and errs[3] > 1e3 * errs[P]


def test_conjugate_gradient_and_neumann_on_a_dense_matrix():
    """The solvers alone: CG solves an n×n SPD system in n steps; the Neumann series'
    error is (I − αA)^(k+1) A⁻¹b exactly."""
    rng = np.random.default_rng(3)
    n = 6
    M = rng.normal(size=(n, n))
    A = M @ M.T + 0.5 * np.eye(n)
    b = rng.normal(size=(2, n))                   # two "tasks", same matrix
    apply = lambda v: v @ A.T                     # noqa: E731
    sol = np.linalg.solve(A, b.T).T
    u, products = conjugate_gradient(apply, b, n)
    assert products == n
    np.testing.assert_allclose(u, sol, rtol=1e-8, atol=1e-10)
    mu = np.linalg.eigvalsh(A)
    alpha = np.full(2, 1.0 / mu[-1])
    for k in (0, 5, 40):
        u = neumann_series(apply, b, k, alpha)
        expected = sol - (np.linalg.matrix_power(np.eye(n) - A / mu[-1], k + 1) @ sol.T).T
        np.testing.assert_allclose(u, expected, rtol=1e-9, atol=1e-12)
    est = power_iteration(apply, (2, n), 200)
    np.testing.assert_allclose(est, mu[-1], rtol=1e-6)


def test_neumann_converges_geometrically_to_the_exact_value(problem):
    """With α = 1/μ_max the series contracts by ρ = 1 − μ_min/μ_max per term (μ: the
    eigenvalues of H = XᵀX/K + diag λ_i, written out here): the error falls by ρ^m over m
    terms, and reaches the closed form."""
    x, lam = problem["x"], problem["lam"]
    mu = np.concatenate([np.linalg.eigvalsh(x.T @ x / len(x) + np.diag(l)) for l in lam])
    alpha = 1.0 / mu.max()
    rho = 1 - mu.min() / mu.max()

    def err(k):
        g, cost = estimate("neumann", problem["net"], problem["task"], k=k, alpha=alpha,
                           tol=TIGHT)
        assert cost.hvps == k                    # α given: no power iteration
        return rel(vec(g), problem["ref"])

    e1, e2 = err(20), err(30)
    assert e1 > 1e-7 and 0.9 < (e2 / e1) / rho ** 10 < 1.1
    k_needed = int(np.ceil(np.log(1e-10) / np.log(rho)))
    assert err(k_needed) < 1e-8


def test_first_order_maml_is_exact_without_data_curvature():
    """No training input (x = 0, no bias): H = diag λ, φ* = ω, and dφ*/dω = I -- the
    first-order approximation is then exact, for ω and λ."""
    rng = np.random.default_rng(4)
    x = np.zeros((6, 3))
    y, xv, yv = rng.normal(size=(6, 2)), rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    omega, lam = rng.normal(size=(2, 3)), rng.uniform(0.5, 2.0, size=(2, 3))
    om, la, phi, _ = closed_form(x, y, xv, yv, omega, lam)
    np.testing.assert_allclose(phi, omega)
    net, task = linear(x, y, xv, yv, omega, lam)
    g, _ = estimate("fomaml", net, task, tol=TIGHT)
    assert rel(vec(g), np.concatenate([la.ravel(), om.ravel()])) < 1e-9


def test_first_order_maml_omega_is_the_validation_gradient(problem):
    """The definition: ĝ_ω = ∇φ L_out(φ̂) (dφ*/dω := I), ĝ_λ = −(φ̂ − ω) ∇φ L_out / λ."""
    g, _ = estimate("fomaml", problem["net"], problem["task"], tol=TIGHT)
    np.testing.assert_allclose(g["omega"][0], problem["g_out"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        g["lam"][0], -(problem["phi"] - problem["omega"]) * problem["g_out"] / problem["lam"],
        rtol=1e-9, atol=1e-12)


def test_reptile_is_the_gradient_of_the_inner_objectives_minimum(problem):
    """Reptile's direction is ∇θ min_φ [L_all(φ) + Σ λ/2 (φ − ω)²] (the fast variables
    learn training and validation points together): central finite differences of the
    closed-form minimum; for ω it is λ (ω − φ*_all)."""
    p = problem
    X, Y = np.concatenate([p["x"], p["xv"]]), np.concatenate([p["y"], p["yv"]])

    def envelope(omega, lam):
        phi = fixed_point(X, Y, omega, lam)
        return 0.5 * ((X @ phi.T - Y) ** 2).sum(-1).mean() + (0.5 * lam * (phi - omega) ** 2).sum()

    g, _ = estimate("reptile", p["net"], p["task"], tol=TIGHT)
    h = 1e-5
    for idx in [(0, 0), (1, 3), (0, 4)]:
        e = np.zeros_like(p["omega"])
        e[idx] = h
        d_om = (envelope(p["omega"] + e, p["lam"]) - envelope(p["omega"] - e, p["lam"])) / (2 * h)
        d_la = (envelope(p["omega"], p["lam"] + e) - envelope(p["omega"], p["lam"] - e)) / (2 * h)
        assert abs(g["omega"][0][idx] - d_om) < 1e-7 * max(1, abs(d_om))
        assert abs(g["lam"][0][idx] - d_la) < 1e-7 * max(1, abs(d_la))
    phi_all = fixed_point(X, Y, p["omega"], p["lam"])
    np.testing.assert_allclose(g["omega"][0], p["lam"] * (p["omega"] - phi_all), atol=1e-9)


@pytest.mark.parametrize("est, phases", [("standard", 2), ("symmetric", 3),
                                         ("second_order", 3)])
def test_cml_is_the_package_cml_with_its_phases_counted(problem, est, phases):
    learner = nm.Learner(rule="delta", integrator="euler", dt=0.05, tol=1e-9)
    g, cost = estimate("cml", problem["net"], problem["task"], beta=1e-3, estimator=est,
                       learner=learner, tol=1e-11)
    direct = nm.CML(beta=1e-3, estimator=est, learner=learner, tol=1e-11).meta_gradient(
        problem["net"], problem["task"])
    np.testing.assert_allclose(optim.tree_vector(g), optim.tree_vector(direct), rtol=1e-13,
                               atol=1e-15)
    assert cost.phases == phases and cost.hvps == 0 and cost.cross == 0
    assert rel(vec(g), problem["ref"]) < (2e-3 if est == "standard" else 2e-5)
    if est == "standard":      # the steps are those of the two phases, run here again
        L = nm.Learner(rule="delta", integrator="euler", dt=0.05, tol=1e-11)
        x, y, xv, yv = problem["task"].as_batch()
        free = L.run(problem["net"], x, y)
        nudged = L.run(problem["net"], x, y, x_val=xv, y_val=yv, beta=1e-3,
                       phi_init=free.phi_aug)
        assert cost.steps == free.steps + nudged.steps
        assert cost.grads == free.steps + nudged.steps + 2   # + ∂θ L_in at both states


def test_cml_error_falls_with_beta_and_tolerance(problem):
    """CML converges to the exact value as β shrinks and the phases tighten."""
    errs = [rel(vec(estimate("cml", problem["net"], problem["task"], beta=b, tol=t)[0]),
                problem["ref"]) for b, t in ((1e-1, 1e-4), (1e-2, 1e-8), (1e-3, 1e-12))]
    assert errs[0] > 10 * errs[1] > 100 * errs[2] and errs[2] < 1e-5


def test_costs_and_the_compute_axis(problem):
    net, task = problem["net"], problem["task"]
    _, c_cg = estimate("cg", net, task, k=3, tol=1e-8)
    _, c_t = estimate("t1t2", net, task, tol=1e-8)
    _, c_n = estimate("neumann", net, task, k=7, power_iters=5, tol=1e-8)
    assert c_cg.hvps == 3 and c_n.hvps == 7 + 5 and c_t.hvps == 0
    assert c_cg.grads == c_t.grads and c_cg.steps == c_t.steps > 0 and c_cg.phases == 1
    assert c_cg.gradient_equivalents() == c_cg.grads + c_cg.cross + 2 * c_cg.hvps
    assert c_cg.wall_s > 0
    s = c_cg + c_t
    assert s.hvps == 3 and s.phases == 2 and s.as_dict()["gradient_equivalents"] == \
        c_cg.gradient_equivalents() + c_t.gradient_equivalents()


def test_metrics(problem):
    g = {"omega": [np.array([3.0, 4.0])], "lam": [None]}
    ref = {"omega": [np.array([3.0, 0.0])], "lam": [None]}
    assert relative_error(g, ref) == pytest.approx(4 / 3)
    assert cosine(g, ref) == pytest.approx(3 / 5)
    with pytest.raises(nm.ValidationError, match=r"relative_error\.ref: must not be zero"):
        relative_error(g, {"omega": [np.zeros(2)], "lam": [None]})
    with pytest.raises(nm.ValidationError, match=r"relative_error\.keys"):
        relative_error(g, ref, keys=["W"])


# ---------------------------------------------------------------- any model kind
def test_dual_system_cg_reaches_the_exact_reference():
    rng = np.random.default_rng(5)
    net = nm.DualSystem([2, 3, 1], lam=1.0, seed=0)
    task = nm.Task(rng.normal(size=(2, 6, 2)), rng.normal(size=(2, 6, 1)),
                   rng.normal(size=(2, 8, 2)), rng.normal(size=(2, 8, 1)))
    ref = nm.exact_meta_gradient(net, task)
    g, cost = estimate("cg", net, task, k=40, tol=TIGHT)
    assert relative_error(g, ref) < 1e-7 and cost.hvps <= 40
    g_t, _ = estimate("t1t2", net, task, tol=1e-8)
    assert set(g_t) == set(ref) and relative_error(g_t, ref) > 1e-3
    g_c, _ = estimate("cml", net, task, beta=1e-3, tol=1e-10)
    assert cosine(g_c, ref) > 0.9999


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("args, kwargs, pattern", [
    (("newton",), {}, r"estimate\.name: must be one of 'cml'.*\(got 'newton'\)"),
    (("cg",), {"beta": 0.1}, r"estimate\.beta: is not a knob of 'cg' .*\(got 0\.1\)"),
    (("cml",), {"k": 3}, r"estimate\.k: is not a knob of 'cml'"),
    (("cg",), {"k": -1}, r"estimate\.k: must be >= 0 \(got -1\)"),
    (("cg",), {"k": 2.5}, r"estimate\.k: must be an integer"),
    (("neumann",), {"alpha": 0.0}, r"estimate\.alpha: must be > 0"),
    (("neumann",), {"power_iters": 0}, r"estimate\.power_iters: must be >= 1"),
    (("t1t2",), {"tol": 0.0}, r"estimate\.tol: must be > 0.* \(got 0\.0\)"),
    (("t1t2",), {"tol": 1j}, r"estimate\.tol: must be a real number"),
    (("t1t2",), {"learner": "rk4"}, r"estimate\.learner: must be a Learner \(got str\)"),
    (("t1t2",), {"reduce": "sum"}, r"estimate\.reduce: must be one of"),
    (("cml",), {"beta": 0.0}, r"CML\.beta: must be nonzero"),
])
def test_estimate_refuses_bad_input(problem, args, kwargs, pattern):
    with pytest.raises(nm.ValidationError, match=pattern):
        estimate(*args, problem["net"], problem["task"], **kwargs)


def test_estimate_refuses_bad_net_task_and_zero_pull(problem):
    with pytest.raises(nm.ValidationError, match=r"estimate\.net: must be a model kind"):
        estimate("cg", "net", problem["task"])
    with pytest.raises(nm.ValidationError, match=r"estimate\.task: must be a Task"):
        estimate("cg", problem["net"], (1, 2))
    lam = problem["lam"].copy()
    lam[0, 0] = 0.0
    net, task = linear(problem["x"], problem["y"], problem["xv"], problem["yv"],
                       problem["omega"], lam)
    with pytest.raises(nm.ValidationError, match=r"estimate\.net: must have lam > 0.*"
                       r"\(got min lam 0\.0\)"):
        estimate("fomaml", net, task)


def test_solver_pieces_check_their_inputs():
    eye = lambda v: v                               # noqa: E731
    b = np.ones((2, 3))
    with pytest.raises(nm.ValidationError, match=r"conjugate_gradient\.apply: must be a func"):
        conjugate_gradient("A", b, 3)
    with pytest.raises(nm.ValidationError, match=r"conjugate_gradient\.b: must have 2 dim"):
        conjugate_gradient(eye, np.ones(3), 3)
    with pytest.raises(nm.ValidationError, match=r"neumann_series\.k: must be >= 0"):
        neumann_series(eye, b, -2, np.ones(2))
    with pytest.raises(nm.ValidationError, match=r"neumann_series\.alpha: must be > 0"):
        neumann_series(eye, b, 2, np.array([1.0, -1.0]))
    with pytest.raises(nm.ValidationError, match=r"neumann_series\.alpha: must have shape"):
        neumann_series(eye, b, 2, np.ones(3))
    with pytest.raises(nm.ValidationError, match=r"power_iteration\.iters: must be >= 1"):
        power_iteration(eye, (2, 3), 0)
    with pytest.raises(nm.ValidationError, match=r"power_iteration\.shape"):
        power_iteration(eye, 6, 3)
    with pytest.raises(nm.ValidationError, match=r"gradient_learner\.tol: must be > 0"):
        gradient_learner(nm.RateNetwork([2, 1]), -1.0)
    with pytest.raises(nm.ValidationError, match=r"phase_cost\.res: must be a LearningResult"):
        phase_cost(nm.Learner(), None)


def test_experiment_inputs_are_checked(tmp_path):
    with pytest.raises(nm.ValidationError, match=r"gradquality\.run\.problems: must be one"):
        gq.run(tmp_path, problems=["mnist"])
    with pytest.raises(nm.ValidationError, match=r"gradquality\.run\.quick"):
        gq.run(tmp_path, quick="yes")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(nm.ValidationError, match=r"gradquality\.run\.out_dir: must be a folder"):
        gq.run(f, problems=["linear"])
    with pytest.raises(nm.ValidationError, match=r"cluster_tasks\.n_classes: must be >= 2"):
        gq.cluster_tasks(np.random.default_rng(0), 2, n_classes=1)
    with pytest.raises(nm.ValidationError, match=r"cluster_tasks\.rng"):
        gq.cluster_tasks(0, 2)


def test_cluster_tasks_are_one_hot_gaussian_clusters():
    task = gq.cluster_tasks(np.random.default_rng(0), 3, n_in=4, n_classes=3, shots=2, val=5,
                            spread=0.0, noise=1.0)
    assert task.x_train.shape == (3, 6, 4) and task.y_val.shape == (3, 15, 3)
    np.testing.assert_array_equal(task.y_train.sum(-1), 1.0)
    labels = task.y_val.argmax(-1)
    assert (np.bincount(labels.ravel()) == 15).all()


# ---------------------------------------------------------------- the experiment
TINY = {
    "cml_estimators": ["symmetric"], "cml_tols": [1e-4, 1e-10], "cml_betas": [1e-1, 1e-4],
    "floor_tols": [1e-4, 1e-9], "tight_tol": 1e-10, "cg_k": [1, 64], "neumann_k": [4, 3000],
    "sinusoid": {"meta_steps": 2, "meta_batch": 3, "tasks": 1}, "classifier": {"tasks": 1},
}


def test_experiment_through_the_cli_on_tiny_settings(tmp_path, monkeypatch, capsys):
    """``neuro-meta gradquality --quick`` in-process, its sweeps shrunk to TINY."""
    monkeypatch.setitem(gq.SETTINGS, "quick", TINY)
    assert cli.main(["gradquality", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(linear)" in out and "(sinusoid)" in out and "gradquality.png" in out
    data = json.loads((tmp_path / "results.json").read_text())
    res = data
    assert (tmp_path / "gradquality.png").stat().st_size > 10_000
    assert set(data["problems"]) == {"linear", "sinusoid", "classifier"}
    for name, p in res["problems"].items():
        est = p["estimators"]
        assert set(est) == {"cml/symmetric", "cg", "neumann", "t1t2", "fomaml", "reptile"}
        for row in est.values():
            assert len(row["relative_error"]) == len(row["compute"]) == len(row["cosine"])
            assert all(np.isfinite(row["relative_error"]))
        # CG and CML get close with compute, the first-order ones do not
        assert est["cg"]["at_max_compute"]["relative_error"] < 1e-6, name
        assert est["cml/symmetric"]["min_relative_error"] < 1e-3, name
        assert est["t1t2"]["min_relative_error"] > 1e-2, name
    assert res["problems"]["classifier"]["keys"] == ["lam", "lam_bias"]
    acc = data["problems"]["sinusoid"]["acceptance"]
    assert acc["cml_below_1e-3"] and acc["floors_above_cml"]
    assert data["quick"] is True and data["settings"]["cg_k"] == TINY["cg_k"]


def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    code = cli.main(["gradquality", "--out", str(f)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "must be a folder" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["gradquality", "--fast"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_cli_quick_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "neuro_meta.cli", "gradquality", "--quick",
                           "--no-progress", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "(sinusoid)" in proc.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["quick"] is True and (tmp_path / "gradquality.png").is_file()
