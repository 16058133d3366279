"""The contrastive meta-learning rule against closed forms, the exact implicit
meta-gradient and finite differences of the whole learning process."""
import contextlib
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.cml import inner_partials


# ---------------------------------------------------------------- closed form (linear)
def closed_form_meta_gradient(x, y, xv, yv, omega, lam):
    """dL_out/dω and dL_out/dλ of the single-layer linear problem, written out:
    φ_i* = (A + Λ_i)⁻¹ (Xᵀy_i/K + Λ_i ω_i), A = XᵀX/K; L_out = 1/(2V) Σ ‖φ xv − yv‖²;
    u_i = (A + Λ_i)⁻¹ ∇L_out; dω_i = λ_i u_i; dλ_i = −(φ_i* − ω_i) u_i."""
    K, V = len(x), len(xv)
    g_om, g_lam = np.zeros_like(omega), np.zeros_like(omega)
    for i in range(omega.shape[0]):
        A = x.T @ x / K + np.diag(lam[i])
        phi = np.linalg.solve(A, x.T @ y[:, i] / K + lam[i] * omega[i])
        u = np.linalg.solve(A, xv.T @ (xv @ phi - yv[:, i]) / V)
        g_om[i], g_lam[i] = lam[i] * u, -(phi - omega[i]) * u
    return g_om, g_lam


@pytest.fixture
def linear_problem():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    xv, yv = rng.normal(size=(20, 5)), rng.normal(size=(20, 2))
    omega = rng.normal(size=(2, 5))
    lam = rng.uniform(0.8, 1.5, size=(2, 5))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam))
    ref = closed_form_meta_gradient(x, y, xv, yv, omega, lam)
    return net, nm.Task(x, y, xv, yv), ref


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_contract_runs_and_shapes():
    # The contract, verbatim after the foundation contract.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False,
                         synapse=nm.ComplexSynapse(omega=rng.normal(size=(2, 5)), lam=0.5))
    xv, yv = rng.normal(size=(20, 5)), rng.normal(size=(20, 2))
    task = nm.Task(x, y, xv, yv)
    cml = nm.CML(beta=1e-3, estimator="symmetric", tol=1e-12)
    g = cml.meta_gradient(net, task)
    g_ref = nm.exact_meta_gradient(net, task)
    assert g["omega"][0].shape == (2, 5) and g["lam"][0].shape == (2, 5)
    assert g_ref["omega"][0].shape == (2, 5) and g_ref["lam"][0].shape == (2, 5)
    om, lam = closed_form_meta_gradient(x, y, xv, yv, net.theta["omega"][0],
                                        net.theta["lam"][0])
    # exact reference to rounding; CML within its O(β²) bias (≈1.1e-5 here, measured)
    assert rel(g_ref["omega"][0], om) < 1e-8 and rel(g_ref["lam"][0], lam) < 1e-8
    assert rel(g["omega"][0], om) < 2e-5 and rel(g["lam"][0], lam) < 2e-5


def test_symmetric_matches_closed_form(linear_problem):
    net, task, (om, lam) = linear_problem
    g = nm.CML(beta=1e-3, estimator="symmetric", tol=1e-12).meta_gradient(net, task)
    g_ref = nm.exact_meta_gradient(net, task)
    assert rel(g["omega"][0], om) < 1e-5
    assert rel(g["lam"][0], lam) < 1e-5
    assert rel(g_ref["omega"][0], om) < 1e-8
    assert rel(g_ref["lam"][0], lam) < 1e-8


@pytest.mark.parametrize("method", ["dense", "cg"])
def test_exact_methods_agree_with_closed_form(linear_problem, method):
    net, task, (om, lam) = linear_problem
    g = nm.exact_meta_gradient(net, task, method=method)
    assert rel(g["omega"][0], om) < 1e-8 and rel(g["lam"][0], lam) < 1e-8


def test_error_scaling_with_beta(linear_problem):
    """Bias-dominated regime (tight phases): halving β divides the standard estimator's
    error by ~2 and the symmetric one's by ~4; second_order is O(β²) too."""
    net, task, (om, lam) = linear_problem
    ref = np.concatenate([om.ravel(), lam.ravel()])

    def err(est, beta):
        g = nm.CML(beta=beta, estimator=est, tol=1e-13).meta_gradient(net, task)
        return rel(np.concatenate([g["omega"][0].ravel(), g["lam"][0].ravel()]), ref)

    for est, lo, hi in (("standard", 1.6, 2.4), ("symmetric", 3.2, 4.8),
                        ("second_order", 3.2, 4.8)):
        e1, e2, e3 = err(est, 0.02), err(est, 0.01), err(est, 0.005)
        assert lo <= e1 / e2 <= hi, (est, e1, e2)
        assert lo <= e2 / e3 <= hi, (est, e2, e3)


def test_two_layer_tanh_backprop_against_exact_and_finite_differences():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    xv, yv = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    net = nm.RateNetwork([3, 4, 2], activation="tanh", bias=True, tau_neuron=0, seed=3,
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.5),
                                                   lam=nm.init.Uniform(0.5, 1.5)))
    task = nm.Task(x, y, xv, yv)
    learner = nm.Learner(rule="backprop", tol=1e-12)
    g = nm.CML(beta=1e-3, estimator="symmetric", learner=learner).meta_gradient(net, task)
    g_ref = nm.exact_meta_gradient(net, task)
    a, b = optim.tree_vector(g), optim.tree_vector(g_ref)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.999

    def val_loss(theta):
        n2 = net.with_theta(theta)
        res = nm.Learner(rule="backprop", tol=1e-13).run(n2, x, y)
        out = n2.predict(xv, [np.asarray(p) for p in res.phi_aug])
        return 0.5 * ((out - yv) ** 2).sum(-1).mean()

    h = 1e-5
    for key, conn, idx in (("omega", 0, (1, 2)), ("lam", 1, (0, 3)),
                           ("omega_bias", 1, (1,)), ("lam_bias", 0, (2,)),
                           ("omega", 1, (0, 0))):
        tp, tm = net.theta, net.theta
        tp[key][conn][idx] += h
        tm[key][conn][idx] -= h
        fd = (val_loss(tp) - val_loss(tm)) / (2 * h)
        assert abs(fd - g_ref[key][conn][idx]) <= 1e-5 * abs(g_ref[key][conn][idx]), key


def test_local_rule_equals_generic_difference_of_inner_partials(linear_problem):
    """The synapse-local formula (φ⁰, φᵝ, ω, λ only) equals [∂θL_in(φᵝ) − ∂θL_in(φ⁰)]/β,
    with ∂θL_in computed here by central finite differences of L_in in θ."""
    net, task, _ = linear_problem
    beta = 0.01
    res = nm.CML(beta=beta, estimator="standard", tol=1e-12).estimate(net, task)
    phi0, phib = res.phi_free[0][0], res.phi_nudged[beta][0][0]
    omega, lam = net.theta["omega"][0], net.theta["lam"][0]
    x, y = task.x_train, task.y_train

    def L_in(phi, om, la):
        return 0.5 * ((x @ phi.T - y) ** 2).sum(-1).mean() + (0.5 * la * (phi - om) ** 2).sum()

    def fd_partials(phi):
        d_om, d_lam = np.zeros_like(omega), np.zeros_like(lam)
        h = 0.1   # L_in is quadratic in ω and linear in λ: central differences are exact
        for idx in np.ndindex(omega.shape):
            e = np.zeros_like(omega)
            e[idx] = h
            d_om[idx] = (L_in(phi, omega + e, lam) - L_in(phi, omega - e, lam)) / (2 * h)
            d_lam[idx] = (L_in(phi, omega, lam + e) - L_in(phi, omega, lam - e)) / (2 * h)
        return d_om, d_lam

    (o1, l1), (o0, l0) = fd_partials(phib), fd_partials(phi0)
    generic_om, generic_lam = (o1 - o0) / beta, (l1 - l0) / beta
    # the paper's local formula written out
    local_om = -(lam / beta) * (phib - phi0)
    local_lam = ((phib - omega) ** 2 - (phi0 - omega) ** 2) / (2 * beta)
    np.testing.assert_allclose(res.grad["omega"][0], local_om, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grad["lam"][0], local_lam, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(local_om, generic_om, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(local_lam, generic_lam, rtol=1e-6, atol=1e-8)
    d_om, d_lam = inner_partials(phi0, omega, lam)
    np.testing.assert_allclose(d_om, o0, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d_lam, l0, rtol=1e-6, atol=1e-9)


def test_beta_zero_is_refused():
    with pytest.raises(nm.ValidationError, match=r"CML\.beta: must be nonzero.*\(got 0\.0\)"):
        nm.CML(beta=0.0)
    with pytest.raises(nm.ValidationError, match=r"CML\.estimator"):
        nm.CML(beta=0.1, estimator="fancy")
    with pytest.raises(nm.ValidationError, match=r"CML\.learner"):
        nm.CML(beta=0.1, learner="rk4")


def test_tasks_batched_and_reduce(linear_problem):
    net, task, _ = linear_problem
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(3, n, d)) for n, d in ((10, 5), (10, 2), (7, 5), (7, 2))]
    batch = nm.Task(*xs)
    cml = nm.CML(beta=1e-2, estimator="symmetric", learner=nm.Learner(tol=1e-12, dt=0.05))
    per_task = cml.meta_gradient(net, batch, reduce="none")
    assert per_task["omega"][0].shape == (3, 2, 5)
    for b in range(3):
        single = cml.meta_gradient(net, nm.Task(*(a[b] for a in xs)))
        np.testing.assert_allclose(per_task["lam"][0][b], single["lam"][0], atol=1e-12)
    mean = cml.meta_gradient(net, batch)
    np.testing.assert_allclose(mean["omega"][0], per_task["omega"][0].mean(0), atol=1e-14)


def test_nudged_duration_approaches_settled(linear_problem):
    """A fixed-duration nudged phase converges to the settled estimate as it lengthens."""
    net, task, _ = linear_problem
    settled = nm.CML(beta=1e-2, tol=1e-12).meta_gradient(net, task)
    errs = []
    for dur in (1.0, 3.0, 9.0):
        g = nm.CML(beta=1e-2, tol=1e-12, nudged_duration=dur).meta_gradient(net, task)
        errs.append(rel(optim.tree_vector(g), optim.tree_vector(settled)))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-2


def test_task_validation():
    x = np.zeros((5, 3))
    with pytest.raises(nm.ValidationError, match=r"Task\.y_train"):
        nm.Task(x, np.zeros((4, 2)), x, np.zeros((5, 2)))
    with pytest.raises(nm.ValidationError, match=r"Task\.x_val.*features"):
        nm.Task(x, np.zeros((5, 2)), np.zeros((5, 4)), np.zeros((5, 2)))
    with pytest.raises(nm.ValidationError, match=r"Task\.x_train.*NaN"):
        nm.Task(np.full((5, 3), np.nan), np.zeros((5, 2)), x, np.zeros((5, 2)))


# ---------------------------------------------------------------- meta-optimisers
def test_sgd_and_adam_against_hand_computation():
    theta = {"omega": [np.array([[1.0, -2.0]])], "lam": [np.array([[0.5, 0.1]])]}
    g = {"omega": [np.array([[0.2, -0.4]])], "lam": [np.array([[1.0, -3.0]])]}
    opt = optim.sgd(0.1)
    upd, _ = opt.update(g, opt.init(theta))
    new = optim.apply_updates(theta, upd)
    np.testing.assert_allclose(new["omega"][0], [[0.98, -1.96]])
    # λ projected onto λ >= 0: 0.5 - 0.1 = 0.4 and max(0.1 + 0.3, 0) = 0.4
    np.testing.assert_allclose(new["lam"][0], [[0.4, 0.4]])
    opt = optim.adam(0.01)
    state = opt.init(theta)
    m = v = 0.0
    gg = np.array([0.2, -0.4])
    for t in range(1, 4):
        upd, state = opt.update(g, state)
        m = 0.9 * m + 0.1 * gg
        v = 0.999 * v + 0.001 * gg ** 2
        expect = -0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(upd["omega"][0][0], expect, rtol=1e-12)


def test_projection_keeps_lambda_nonnegative():
    theta = {"lam": [np.array([0.1, 2.0])], "lam_bias": [None]}
    upd = {"lam": [np.array([-1.0, -1.0])], "lam_bias": [None]}
    out = optim.apply_updates(theta, upd)
    np.testing.assert_array_equal(out["lam"][0], [0.0, 1.0])


def test_chain_and_clip():
    g = {"omega": [np.array([3.0, 4.0])]}
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(1.0))
    upd, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(upd["omega"][0], [-0.6, -0.8])


def test_global_norm_is_the_same_for_any_number_of_blas_threads(rng):
    """The clip's norm (and so a checkpoint's optimiser fingerprint, and every clipped
    meta-step) must not depend on how many BLAS threads the process has: a run resumed
    or restored under another thread count was refused before (``np.linalg.norm``'s BLAS
    nrm2 splits long vectors over threads). Reference: math.fsum of the squares."""
    import math

    from neuro_meta.metatrain import optimizer_fingerprint
    from neuro_meta.workers import blas_threads

    g = {"omega": [rng.normal(size=(64, 784)), rng.normal(size=(5, 64))],
         "omega_bias": [rng.normal(size=64), None]}
    vec = np.concatenate([g["omega"][0].ravel(), g["omega"][1].ravel(), g["omega_bias"][0]])
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(5e-3))
    out = []
    for n in (1, 2, 4):
        with blas_threads(n):
            out.append((optim.global_norm(g), optimizer_fingerprint(opt, g)))
    assert out[0] == out[1] == out[2]
    assert out[0][0] == pytest.approx(math.sqrt(math.fsum(vec * vec)), rel=1e-14)
    assert optim.global_norm({"omega": [np.zeros(3)]}) == 0.0
    big = {"omega": [np.array([3e200, 4e200])]}     # no square overflows
    assert optim.global_norm(big) == pytest.approx(5e200, rel=1e-15)
    # nor the norm itself, beyond the largest float: the clip scales, never zeroes
    huge = {"omega": [np.array([1.5e308, -1.5e308, 0.0])]}
    assert optim.global_norm(huge) == np.inf
    u, _ = optim.clip_by_global_norm(2.0).update(huge, {})
    np.testing.assert_allclose(u["omega"][0], [np.sqrt(2.0), -np.sqrt(2.0), 0.0],
                               rtol=1e-15)


def test_projection_floor():
    theta = {"lam": [np.array([0.1, 2.0])]}
    upd = {"lam": [np.array([-1.0, -1.0])]}
    out = optim.apply_updates(theta, upd, lam_min=0.5)
    np.testing.assert_array_equal(out["lam"][0], [0.5, 1.0])
    with pytest.raises(nm.ValidationError, match=r"apply_updates\.lam_min"):
        optim.apply_updates(theta, upd, lam_min=-1.0)


def test_fixed_duration_free_phase_warns_for_estimators_that_keep_its_drift(linear_problem):
    """On a free phase of fixed length the learning that continues during the nudged
    phase enters ``standard`` (and ``second_order``) estimates divided by β -- they grow
    like 1/β -- while ``symmetric``'s two nudged phases cancel it. CML warns for the first
    two, not for symmetric or for settled phases."""
    from neuro_meta.cml import UnsettledEstimateWarning

    net, task, _ = linear_problem
    short = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=0.5)

    def norm(beta, est):
        with pytest.warns(UnsettledEstimateWarning) if est != "symmetric" else \
                _no_warning(UnsettledEstimateWarning):
            cml = nm.CML(beta=beta, estimator=est, learner=short)
        return np.linalg.norm(optim.tree_vector(cml.meta_gradient(net, task)))

    for est in ("standard", "second_order"):
        assert norm(1e-4, est) / norm(1e-3, est) > 8          # the drift, / β
    assert norm(1e-4, "symmetric") / norm(1e-3, "symmetric") == pytest.approx(1, rel=0.01)
    with _no_warning(UnsettledEstimateWarning):               # settled: no drift
        nm.CML(beta=1e-3, estimator="standard", learner=nm.Learner(rule="delta", tol=1e-10))
        nm.CML(beta=1e-3, estimator="standard", learner=short, tol=1e-10)
        nm.CML(beta=1e-3, estimator="standard")


@contextlib.contextmanager
def _no_warning(category):
    with warnings.catch_warnings():
        warnings.simplefilter("error", category)
        yield


# ------------------------------------------- warnings point at the user's line (issue)
def _unsettled_problem():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    net = nm.RateNetwork([3, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=0.0, lam=0.5))
    return net, nm.Task(x, y, x, y)


def _caught(fn, category=UserWarning):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [w for w in rec if issubclass(w.category, category)]


@pytest.mark.parametrize("door", ["Learner.run", "CML.meta_gradient", "CML.estimate",
                                  "exact_meta_gradient", "CML default (solver)"])
def test_not_settled_warning_points_at_the_callers_line(door):
    """Through any public door -- however deep in the package the phase runs -- a
    NotSettledWarning names this file, the user's line, not the library's."""
    net, task = _unsettled_problem()
    short = nm.Learner(tol=1e-14, dt=0.1, max_duration=1.0)
    call = {
        "Learner.run": lambda: short.run(net, task.x_train, task.y_train),
        "CML.meta_gradient": lambda: nm.CML(beta=1e-3, learner=short).meta_gradient(
            net, task),
        "CML.estimate": lambda: nm.CML(beta=1e-3, learner=short).estimate(net, task),
        "exact_meta_gradient": lambda: nm.exact_meta_gradient(net, task, learner=short),
        "CML default (solver)": lambda: nm.CML(beta=1e-3, tol=1e-30).meta_gradient(
            net, task),
    }[door]
    caught = _caught(call, nm.NotSettledWarning)
    assert caught, "the phase really does not settle"
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]


def test_not_settled_warning_in_a_worker_thread_names_the_package_line():
    """In a pool's worker (here a thread) no frame is the user's: the warning names the
    package's line that warns, not the standard library's thread code."""
    import threading

    from neuro_meta.errors import in_package

    net, task = _unsettled_problem()
    short = nm.Learner(tol=1e-14, dt=0.1, max_duration=1.0)
    caught = []

    def work():
        caught.extend(_caught(lambda: short.run(net, task.x_train, task.y_train),
                              nm.NotSettledWarning))

    t = threading.Thread(target=work)       # user code in the thread: the user's line
    t.start()
    t.join()
    assert caught and all(w.filename == __file__ for w in caught)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = threading.Thread(target=short.run, args=(net, task.x_train, task.y_train))
        t.start()
        t.join()
    names = [w.filename for w in rec if issubclass(w.category, nm.NotSettledWarning)]
    assert names and all(in_package(n) for n in names), names


def test_code_given_to_the_interpreter_is_the_users(monkeypatch):
    """``python -c``/``exec`` code ('<string>') counts as the user's, even run from
    inside the package's folder (a relative name must not resolve into it)."""
    import os

    from neuro_meta.errors import PACKAGE_DIR

    monkeypatch.chdir(PACKAGE_DIR)
    net, task = _unsettled_problem()
    short = nm.Learner(tol=1e-14, dt=0.1, max_duration=1.0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        exec(compile("short.run(net, task.x_train, task.y_train)", "<string>", "exec"),
             {"short": short, "net": net, "task": task})
    names = [w.filename for w in rec if issubclass(w.category, nm.NotSettledWarning)]
    assert names == ["<string>"], (names, os.getcwd())


def test_unsettled_estimate_warning_points_at_the_callers_line():
    short = nm.Learner(rule="delta", integrator="euler", dt=0.01, duration=0.5)
    from neuro_meta.cml import UnsettledEstimateWarning

    caught = _caught(lambda: nm.CML(beta=1e-3, estimator="standard", learner=short),
                     UnsettledEstimateWarning)
    assert len(caught) == 1 and caught[0].filename == __file__


def test_meta_trainer_rewarns_a_library_warning_at_the_callers_line(monkeypatch):
    """MetaTrainer catches the warnings of its estimates (to count NotSettledWarning)
    and warns the others again: at the user's line, not at the library line that raised
    them (here a warning raised by code of the package's cml.py)."""
    from neuro_meta import cml as cml_module
    from neuro_meta.families import LinearTeacher
    from neuro_meta.metatrain import MetaTrainer

    src = ("def estimate(self, *args, **kw):\n"
           "    warnings.warn('raised inside the package', UserWarning)\n"
           "    return ORIGINAL(self, *args, **kw)\n")
    ns = {"warnings": warnings, "ORIGINAL": nm.CML.estimate}
    exec(compile(src, cml_module.__file__, "exec"), ns)
    monkeypatch.setattr(nm.CML, "estimate", ns["estimate"])
    net, task = _unsettled_problem()
    tr = MetaTrainer(net, LinearTeacher(n_in=3, n_out=2), nm.CML(beta=1e-3, tol=1e-8),
                     meta_batch=2, eval_tasks=2, test_task=task, val_task=task)
    caught = [w for w in _caught(lambda: tr.meta_gradient(task, step=1))
              if "raised inside the package" in str(w.message)]
    assert len(caught) == 1 and caught[0].filename == __file__, caught[0].filename


def test_beta_near_the_settling_tolerance_warns_and_is_wrong(linear_problem):
    """With |β| below 10 × the phases' tolerance the settled states' error, divided by β,
    swamps the estimate; below the tolerance the nudged phase starts settled and does not
    move: the estimate is zero. Against the closed form: relative error 1 at β = tol/10,
    above 3 % at β = tol, below 1 % at β = 1e3 tol. CML warns for the first two only."""
    from neuro_meta.cml import UnsettledEstimateWarning

    net, task, ref = linear_problem
    tol = 1e-6
    with pytest.warns(UnsettledEstimateWarning, match=r"beta \(1e-06\) is less than 10 "
                      r"times the phases' settling tolerance \(1e-06\)"):
        near = nm.CML(beta=tol, estimator="standard", tol=tol)
    with pytest.warns(UnsettledEstimateWarning):
        below = nm.CML(beta=tol / 10, estimator="standard", tol=tol)
    with _no_warning(UnsettledEstimateWarning):
        far = nm.CML(beta=1e3 * tol, estimator="standard", tol=tol)
        nm.CML(beta=1e-9)                       # default tolerance 1e-10: 10 x
    with pytest.warns(UnsettledEstimateWarning):
        nm.CML(beta=1e-10)
    with pytest.warns(UnsettledEstimateWarning):
        nm.CML(beta=1e-4, learner=nm.Learner(rule="delta", tol=1e-4))
    err = {name: rel(cml.meta_gradient(net, task)["omega"][0], ref[0])
           for name, cml in (("below", below), ("near", near), ("far", far))}
    assert err["below"] == pytest.approx(1.0) and err["near"] > 0.03 and err["far"] < 1e-2
