"""The dual system (slow weights, fast gains/biases/readout): learning process, CML
against the exact meta-gradient, the exact meta-gradient against finite differences of
the whole learning process, and the local contrastive Hebbian form of the W update."""
import pickle
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import exact

VARIANTS = {
    "gain_bias_readout": dict(fast=("gain", "bias", "readout"),
                              lam={"gain": 1.0, "bias": 0.7, "readout": 0.5}),
    "learned_lam": dict(fast=("gain", "bias", "readout"), lam=0.8, learn_lam=True),
    "readout_only": dict(fast=("readout",), lam=0.5),
}


def _model(variant, sizes=(2, 5, 4, 1), seed=0):
    return nm.DualSystem(list(sizes), seed=seed, gain=nm.init.Uniform(0.8, 1.2),
                         bias=nm.init.Normal(0.1), **VARIANTS[variant])


def _task(rng, B=3, K=6, V=5, n_in=2, n_out=1):
    return nm.Task(rng.normal(size=(B, K, n_in)), rng.normal(size=(B, K, n_out)),
                   rng.normal(size=(B, V, n_in)), rng.normal(size=(B, V, n_out)))


def _tight(integrator="expeuler"):
    return nm.Learner(rule="backprop", integrator=integrator, tol=1e-11, max_duration=500)


def _cos(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


# ---------------------------------------------------------------------- learning process
def test_readout_only_fixed_point_is_ridge_regression(rng, ridge_fixed_point, augment):
    """With only the readout fast, the settled readout is the ridge solution on the hidden
    rates (closed form, written independently in conftest)."""
    m = _model("readout_only")
    x, y = rng.normal(size=(8, 2)), rng.normal(size=(8, 1))
    res = _tight().run(m, x, y)
    r_L = m.forward(x)[0][-1][2]
    expected = ridge_fixed_point(augment(r_L), y, m.theta["readout"][0], 0.5)
    assert res.settled
    np.testing.assert_allclose(res.phi[0], expected, rtol=0, atol=1e-10)
    # the local delta rule is the same learning process for the readout
    delta = nm.Learner(rule="delta", integrator="expeuler", tol=1e-11, max_duration=500)
    np.testing.assert_allclose(delta.run(m, x, y).phi[0], expected, rtol=0, atol=1e-10)


def test_rk4_matches_solve_ivp(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(2, 6, 2)), rng.normal(size=(2, 6, 1))
    ref = nm.Learner(rule="backprop", integrator="scipy", duration=3.0).run(m, x, y)
    rk4 = nm.Learner(rule="backprop", integrator="rk4", dt=0.01, duration=3.0).run(m, x, y)
    for a, b in zip(rk4.phi, ref.phi):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)


def test_euler_error_halves_with_dt(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    ref = nm.Learner(rule="backprop", integrator="scipy", duration=2.0).run(m, x, y).phi
    errs = []
    for dt in (0.02, 0.01, 0.005):
        out = nm.Learner(rule="backprop", integrator="euler", dt=dt, duration=2.0).run(m, x, y)
        errs.append(max(np.abs(a - b).max() for a, b in zip(out.phi, ref)))
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2


def test_settled_state_is_a_stationary_point_of_the_inner_objective(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 1))
    for integrator, dt in (("expeuler", None), ("expeuler", 0.02), ("rk4", 0.05)):
        res = nm.Learner(rule="backprop", integrator=integrator, dt=dt, tol=1e-9,
                         max_duration=500).run(m, x, y)
        assert res.settled.all()
        phi = [np.asarray(p) for p in res.phi]
        g = [gd + lm * (p - p0) for gd, lm, p, p0 in
             zip(m.data_grad(phi, x, y), m.lam, phi, m.phi0)]
        assert max(np.abs(a).max() for a in g) < 1e-9
    # the settled state does not depend on the integrator or the step
    a = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-11,
                   max_duration=500).run(m, x, y).phi
    b = nm.Learner(rule="backprop", integrator="rk4", dt=0.01, tol=1e-11,
                   max_duration=500).run(m, x, y).phi
    for p, q in zip(a, b):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-9)


def test_batched_equals_single_runs(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 1))
    L = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-6)
    both = L.run(m, x, y).phi
    for b in range(3):
        one = L.run(m, x[b], y[b]).phi
        for p, q in zip(both, one):
            np.testing.assert_array_equal(p[b], q)


def test_recording_and_result_layout(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    res = nm.Learner(rule="backprop", integrator="rk4", dt=0.05, duration=2.0).run(
        m, x, y, record=("phi", "loss"), record_every=4)
    assert m.fast_names == ["gain[0]", "gain[1]", "bias[0]", "bias[1]", "readout"]
    assert [p.shape for p in res.phi] == [(5,), (4,), (5,), (4,), (1, 5)]
    assert res.t[0] == 0 and res.t[-1] == pytest.approx(2.0)
    assert res.record["phi"][0].shape == (len(res.t), 5)
    loss = res.record["loss"]
    assert loss[-1] < loss[0]                      # learning lowers the training loss
    assert np.all(np.diff(loss) <= 1e-12) or loss[-1] < 0.5 * loss[0]


# ---------------------------------------------------------------------- meta-gradients
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exact_meta_gradient_matches_finite_differences(variant, rng):
    """Issue acceptance: exact vs finite differences of the whole learning process
    ≤ 1e-5 relative, for every meta-parameter group (directional derivatives)."""
    m = _model(variant)
    task = _task(rng)
    ex = nm.exact_meta_gradient(m, task)
    theta = m.theta
    assert set(ex) == set(theta)
    h = 1e-5
    for k in theta:
        for i in range(len(theta[k])):
            d = rng.normal(size=theta[k][i].shape)

            def loss(s):
                t = {kk: [a.copy() for a in v] for kk, v in theta.items()}
                t[k][i] = t[k][i] + s * d
                return exact.outer_loss(m.with_theta(t), task)

            fd = (loss(h) - loss(-h)) / (2 * h)
            an = float((ex[k][i] * d).sum())
            assert abs(fd - an) <= 1e-5 * abs(an), (k, i, fd, an)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cml_symmetric_matches_exact(variant, rng):
    """Issue acceptance: cosine(CML symmetric small β, exact) ≥ 0.999 per group."""
    m = _model(variant)
    task = _task(rng)
    ex = nm.exact_meta_gradient(m, task)
    g = nm.CML(beta=1e-3, estimator="symmetric", learner=_tight()).meta_gradient(m, task)
    for k in ex:
        for a, b in zip(ex[k], g[k]):
            assert _cos(a, b) >= 0.999, k
            assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a), k


def test_cml_error_scales_as_theory_says(rng):
    """Standard estimator: error ∝ β; symmetric: error ∝ β²."""
    m = _model("gain_bias_readout")
    task = _task(rng, B=2)
    ex = optim_vec(nm.exact_meta_gradient(m, task))
    for est, lo, hi in (("standard", 1.8, 2.2), ("symmetric", 3.6, 4.4)):
        errs = [np.linalg.norm(optim_vec(nm.CML(beta=b, estimator=est, learner=_tight())
                                         .meta_gradient(m, task)) - ex)
                for b in (0.1, 0.05, 0.025)]
        assert lo < errs[0] / errs[1] < hi and lo < errs[1] / errs[2] < hi, (est, errs)


def optim_vec(tree):
    return nm.optim.tree_vector(tree)


def test_w_update_is_the_contrastive_hebbian_product(rng):
    """The CML estimate of W equals the generic difference of ∂W F between the phases,
    ∂W F taken by central finite differences of the scalar F (no backprop)."""
    m = _model("gain_bias_readout")
    task = _task(rng, B=2)
    beta = 0.05
    cml = nm.CML(beta=beta, estimator="standard", learner=_tight())
    est = cml.estimate(m, task, reduce="none")
    xt, yt, xv, yv = task.as_batch()
    B, K, V = xt.shape[0], xt.shape[1], xv.shape[1]

    def F(W_list, phi, b):
        mm = m.with_theta({**m.theta, "W": W_list})
        out_t = mm.predict(xt, phi)
        out_v = mm.predict(xv, phi)
        return (0.5 * ((out_t - yt) ** 2).sum(axis=(-1, -2)) / K
                + b * 0.5 * ((out_v - yv) ** 2).sum(axis=(-1, -2)) / V)

    W = m.theta["W"]
    h = 1e-6
    for l, w in enumerate(W):
        generic = np.zeros((B,) + w.shape)
        for idx in np.ndindex(w.shape):
            for phi, b, sign in ((est.phi_nudged[beta], beta, 1.0), (est.phi_free, 0.0, -1.0)):
                up = [a.copy() for a in W]
                dn = [a.copy() for a in W]
                up[l][idx] += h
                dn[l][idx] -= h
                generic[(slice(None),) + idx] += sign * (F(up, phi, b) - F(dn, phi, b)) / (
                    2 * h * beta)
        np.testing.assert_allclose(est.grad["W"][l], generic, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------- meta-training
def test_metatrainer_lowers_the_meta_test_error_and_is_deterministic(tmp_path):
    fam = nm.families.Sinusoid(shots=5, val=5)
    m = nm.DualSystem([1, 8, 1], lam=1.0, seed=1)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-4,
                         max_duration=40)
    cml = nm.CML(beta=0.1, estimator="standard", learner=learner, nudged_duration=5.0)

    def trainer(chunks=None):
        return nm.MetaTrainer(m, fam, cml, nm.optim.adam(0.02), meta_batch=6, seed=0,
                              eval_tasks=16, chunks=chunks)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        a = trainer()
        h = a.train(20, eval_every=20, progress=False)
        b = trainer(chunks=3)
        b.train(20, eval_every=20, progress=False, checkpoint=tmp_path / "c.npz")
    assert h.meta_test_mse[-1] < 0.8 * h.meta_test_mse[0]
    np.testing.assert_array_equal(nm.optim.tree_vector(a.net.theta),
                                  nm.optim.tree_vector(b.net.theta))


def test_pickles_and_with_theta_roundtrip():
    m = _model("learned_lam")
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(nm.optim.tree_vector(m.theta), nm.optim.tree_vector(m2.theta))
    t = m.theta
    t["lam_gain"][0] = t["lam_gain"][0] * 2
    m3 = m.with_theta(t)
    np.testing.assert_array_equal(m3.lam[0], 2 * m.lam[0])
    assert m3.phi0[0] is not None and m.lam[0][0] == 0.8


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=[2, 1]), r"DualSystem\.sizes: needs an input layer, at least one hidden"),
    (dict(sizes=[2, 3, 1], fast=("gain", "weights")), r"DualSystem\.fast: must be one of"),
    (dict(sizes=[2, 3, 1], fast=()), r"DualSystem\.fast: needs at least one"),
    (dict(sizes=[2, 3, 1], lam=0.0), r"DualSystem\.lam: must be > 0(\.0)? \(got 0\.0\)"),
    (dict(sizes=[2, 3, 1], lam={"gain": 1.0}), r"DualSystem\.lam: needs a value for every"),
    (dict(sizes=[2, 3, 1], fast="readout", lam={"gain": 1.0, "readout": 1.0}),
     r"DualSystem\.lam: keys must be fast groups"),
    (dict(sizes=[2, 3, 1], tau_fast=-1), r"DualSystem\.tau_fast: must be > 0"),
    (dict(sizes=[2, 3, 1], learn_lam="yes"), r"DualSystem\.learn_lam: must be True or False"),
    (dict(sizes=[2, 3, 1], activation="cosh"), r"DualSystem\.activation: must be one of"),
    (dict(sizes=[2, 3, 1], gain=np.ones(4)), r"DualSystem\.gain: shape must be \(3,\)"),
])
def test_bad_construction_is_refused(kwargs, match):
    with pytest.raises(nm.ValidationError, match=match):
        nm.DualSystem(**kwargs)


def test_bad_use_is_refused(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    with pytest.raises(nm.UnsupportedError, match=r"Learner\.rule: 'delta' is local to the "
                       r"readout"):
        nm.Learner(rule="delta").run(m, x, y)
    with pytest.raises(nm.ValidationError, match=r"Learner\.run\.x: last axis must match"):
        nm.Learner(rule="backprop").run(m, rng.normal(size=(6, 3)), y)
    with pytest.raises(nm.UnsupportedError, match=r"Learner\.run\.record: a DualSystem "
                       r"records 'phi', 'v', 'r', 'loss' \(got 'bias'\)"):
        nm.Learner(rule="backprop", dt=0.1, duration=1.0).run(m, x, y, record="bias")
    with pytest.raises(nm.UnsupportedError, match=r"brian2 engine cannot run this phase "
                       r"of a DualSystem"):
        nm.Learner(rule="backprop", engine="brian2", integrator="euler", dt=0.1,
                   duration=1.0).run(m, x, y)
    with pytest.raises(nm.ValidationError, match=r"Learner\.run\.phi_init\[4\]: \(readout\)"):
        nm.Learner(rule="backprop", dt=0.1, duration=1.0).run(
            m, x, y, phi_init=m.phi0[:4] + [np.zeros((2, 5))])
    t = m.theta
    t["W"][0] = np.zeros((3, 3))
    with pytest.raises(nm.ValidationError, match=r"DualSystem\.with_theta\.W\[0\]: must have "
                       r"shape \(5, 2\)"):
        m.with_theta(t)
    relu = nm.DualSystem([2, 3, 1], activation="relu")
    with pytest.raises(nm.UnsupportedError, match="analytic rate function"):
        nm.exact_meta_gradient(relu, _task(rng))


def test_divergence_stops_with_a_hint(rng):
    m = nm.DualSystem([1, 4, 1], activation="linear", lam=0.1, seed=0)
    x = 30 * rng.normal(size=(5, 1))
    y = rng.normal(size=(5, 1))
    with pytest.raises(nm.SimulationError, match=r"diverged at step \d+ .*Hint: reduce dt"):
        nm.Learner(rule="backprop", integrator="euler", dt=0.5, duration=50).run(m, x, y)


def test_checkpoint_resume_gives_the_same_meta_parameters(tmp_path):
    fam = nm.families.Sinusoid(shots=5, val=5)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-3,
                         max_duration=10)
    cml = nm.CML(beta=0.1, estimator="standard", learner=learner, nudged_duration=3.0)

    def trainer():
        m = nm.DualSystem([1, 6, 1], lam=0.5, learn_lam=True, seed=2)
        return nm.MetaTrainer(m, fam, cml, nm.optim.adam(0.01), meta_batch=4, seed=3,
                              eval_tasks=4, lam_min=0.2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.NotSettledWarning)
        straight = trainer()
        straight.train(6, eval_every=3, progress=False)
        a = trainer()
        a.train(3, eval_every=3, progress=False, checkpoint=tmp_path / "c.npz")
        b = trainer()
        b.train(6, eval_every=3, progress=False, checkpoint=tmp_path / "c.npz", resume=True)
    np.testing.assert_array_equal(nm.optim.tree_vector(straight.net.theta),
                                  nm.optim.tree_vector(b.net.theta))
    assert min(float(a.min()) for a in b.net.theta["lam_gain"]) >= 0.2


def test_unsettled_phase_warns_at_the_callers_line_with_a_dt_hint(rng):
    m = _model("gain_bias_readout")
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    with pytest.warns(nm.NotSettledWarning, match=r"1 of 1 task\(s\) did not settle.*reduce "
                      r"dt") as rec:
        nm.Learner(rule="backprop", tol=1e-12, max_duration=0.5).run(m, x, y)
    assert rec[0].filename == __file__


# -- the phase solver's Hessian-vector products (R-operator, issue 22) -----------------
def _hvp_data(net, loss, rng, B=3, S=9):
    X = rng.normal(size=(B, S, net.n_in))
    n_out = net.sizes[-1]
    if loss == "masked_squared_error":
        Y = net.loss.targets(rng.integers(0, n_out, (B, S)), rng.normal(size=(B, S)), n_out)
    elif loss == "cross_entropy":
        Y = np.eye(n_out)[rng.integers(0, n_out, (B, S))]
    else:
        Y = rng.normal(size=(B, S, n_out))
    phi = [p + 0.3 * rng.normal(size=(B,) + p.shape) for p in net.phi0]
    return X, Y, phi, rng.uniform(0.1, 1.0, size=(B, S))


@pytest.mark.parametrize("loss", ["squared_error", "masked_squared_error", "cross_entropy"])
@pytest.mark.parametrize("fast", [("gain", "bias", "readout"), ("readout",), ("gain",),
                                  ("bias", "readout")])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
def test_solver_hvp_matches_complex_step_and_finite_differences(loss, fast, activation,
                                                                  rng):
    """data_hvp_at (real forward-over-reverse, cached forward pass) against two
    independent references: the complex-step derivative of the backprop gradient
    (data_hvp) and central finite differences of the gradient."""
    net = nm.DualSystem([2, 6, 5, 4], activation=activation, fast=fast, loss=loss, seed=1,
                        gain=1.3, bias=0.2)
    X, Y, phi, c = _hvp_data(net, loss, rng)
    hvp = net.data_hvp_at(phi, X, Y, c)
    for _ in range(2):                      # several directions at one cached point
        V = [rng.normal(size=p.shape) for p in phi]
        got = hvp(V)
        ref = net.data_hvp(phi, X, Y, V, c)
        eps = 1e-5
        plus = net.data_grad([p + eps * v for p, v in zip(phi, V)], X, Y, c)
        minus = net.data_grad([p - eps * v for p, v in zip(phi, V)], X, Y, c)
        for g, r, gp, gm in zip(got, ref, plus, minus):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-12 * np.abs(r).max())
            np.testing.assert_allclose(g, (gp - gm) / (2 * eps), rtol=1e-6, atol=1e-7)


def test_solver_hvp_is_linear_and_zero_directions_are_allowed(rng):
    net = nm.DualSystem([2, 5, 4, 3], seed=0, loss="masked_squared_error")
    X, Y, phi, c = _hvp_data(net, "masked_squared_error", rng)
    hvp = net.data_hvp_at(phi, X, Y, c)
    V = [rng.normal(size=p.shape) for p in phi]
    Z = [np.zeros_like(v) for v in V]
    for i in range(len(V)):                 # one group at a time = the direct sum
        only = [v if j == i else None for j, v in enumerate(V)]
        ref = net.data_hvp(phi, X, Y, [v if j == i else z for j, (v, z)
                                       in enumerate(zip(V, Z))], c)
        for g, r in zip(hvp(only), ref):
            np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-13)


def test_settled_phase_does_not_depend_on_the_hvp_path(rng, monkeypatch):
    """The Newton-Krylov settle with the R-operator products reaches the fixed point the
    complex-step products reach (the same Newton iterates to rounding)."""
    net = nm.DualSystem([2, 8, 8, 3], seed=2, lam=0.3, loss="masked_squared_error")
    X, Y, _, _ = _hvp_data(net, "masked_squared_error", rng, B=4, S=20)
    learner = nm.Learner(rule="backprop", dt=0.02, settle="solve", tol=1e-6)
    fast = learner.run(net, X, Y).phi
    monkeypatch.setattr(nm.DualSystem, "data_hvp_at",
                        lambda self, phi, X, Y, c=None:
                        lambda V: self.data_hvp(phi, X, Y, V, c))
    slow = learner.run(net, X, Y).phi
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------- forward memo
def _loop_forward(net, x, fast):
    """The forward pass written sample by sample (an independent reference)."""
    gains, biases, R, W = net.params(fast)
    out = np.zeros(x.shape[:-1] + (net.sizes[-1],))
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            r = x[b, s]
            for l in range(net.n_hidden_layers):
                r = np.tanh(gains[l][b] * (W[l] @ r) + biases[l][b])
            out[b, s] = R[b][:, :-1] @ r + R[b][:, -1]
    return out


def test_forward_memo_never_serves_stale_values(rng):
    """The memo of forward passes is keyed by values: an in-place change of the inputs or
    of any fast variable gives the new outputs; cached arrays are read-only, predict's
    output is the caller's own copy."""
    net = nm.DualSystem([2, 5, 4, 3], seed=0, lam=0.3)
    x = rng.normal(size=(3, 7, 2))
    fast = [np.array(np.broadcast_to(p, (3,) + p.shape)) for p in net.phi0]
    first = net.predict(x, fast)
    np.testing.assert_allclose(first, _loop_forward(net, x, fast), rtol=1e-13, atol=1e-14)
    first[...] = 0.0                                    # the caller's copy
    changes = [lambda: x.__setitem__((1, 2, 0), 0.7)] + [
        lambda a=a: a.reshape(-1).__setitem__(a.size - 2, 0.3) for a in fast]
    for change in changes:
        change()
        np.testing.assert_allclose(net.predict(x, fast), _loop_forward(net, x, fast),
                                   rtol=1e-13, atol=1e-14)
    other = net.with_theta({k: [w * 1.1 for w in v] if k == "W" else v
                            for k, v in net.theta.items()})
    np.testing.assert_allclose(other.predict(x, fast), _loop_forward(other, x, fast),
                               rtol=1e-13, atol=1e-14)
    v = net.neurons(fast, x)
    assert not any(a.flags.writeable for a in v)


@pytest.mark.parametrize("memo", [0, 2])
def test_forward_memo_and_hvp_cache_leave_the_meta_gradient_bit_identical(memo, rng,
                                                                         monkeypatch):
    """A CML meta-gradient through the Newton-Krylov settle (masked squared error, as
    on the bandit) with the memo on or off: the same floating-point numbers."""
    from neuro_meta import dual
    net = nm.DualSystem([2, 8, 8, 3], seed=2, lam=0.3, loss="masked_squared_error")
    X, Y, _, _ = _hvp_data(net, "masked_squared_error", rng, B=4, S=20)
    task = nm.Task(X[:, :14], Y[:, :14], X[:, 14:], Y[:, 14:])
    learner = nm.Learner(rule="backprop", dt=0.02, settle="solve", tol=1e-6)
    cml = nm.CML(beta=0.1, learner=learner)
    monkeypatch.setattr(dual, "FORWARD_MEMO", 0)
    dual._LOCAL.__dict__.pop("memo", None)
    ref = cml.meta_gradient(net, task)
    monkeypatch.setattr(dual, "FORWARD_MEMO", memo)
    got = cml.meta_gradient(net, task)
    got2 = cml.meta_gradient(net, task)                  # now with warm memo entries
    for k in ref:
        for a, b, c in zip(ref[k], got[k], got2[k]):
            assert np.array_equal(a, b) and np.array_equal(a, c)


def test_forward_memo_is_per_thread():
    """Threads predicting with different networks and inputs at once each get their own
    forward pass (the same numbers as the memo switched off)."""
    from concurrent.futures import ThreadPoolExecutor

    from neuro_meta import dual
    rng = np.random.default_rng(5)
    nets = [nm.DualSystem([3, 6, 2], seed=s, lam=0.3) for s in range(4)]
    xs = [rng.normal(size=(30, 3)) for _ in range(4)]
    old = dual.FORWARD_MEMO
    dual.FORWARD_MEMO = 0
    try:
        ref = [n.predict(x) for n, x in zip(nets, xs)]
    finally:
        dual.FORWARD_MEMO = old
    jobs = [i % 4 for i in range(200)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: nets[i].predict(xs[i]), jobs))
    for i, g in zip(jobs, got):
        assert np.array_equal(g, ref[i])
