"""Soft-max cross-entropy as the loss of the learning process (issue 19), through the
model-kind protocol: derivatives against finite differences and a hand-written closed
form, the settled state of a linear soft-max read-out with complex synapses against
``scipy.optimize``, CML against the exact meta-gradient, and the exact reference against
finite differences of the whole learning process."""
import numpy as np
import pytest
import scipy.optimize

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.errors import UnsupportedError, ValidationError
from neuro_meta.losses import CROSS_ENTROPY, SQUARED_ERROR, get_loss
from neuro_meta.network import grad_hvp


def _onehot(rng, shape, n):
    return np.eye(n)[rng.integers(0, n, shape)]


def _readout(n_in=5, n_out=3, seed=0):
    syn = nm.ComplexSynapse(omega=nm.init.Normal(0.5), lam=nm.init.Uniform(0.5, 1.5))
    return nm.RateNetwork([n_in, n_out], activation="linear", synapse=syn, tau_neuron=0,
                          seed=seed, loss="cross_entropy")


# ---------------------------------------------------------------------- the loss itself
def test_error_and_curvature_against_finite_differences(rng):
    z = 3.0 * rng.normal(size=(3, 4, 5))
    y = rng.dirichlet(np.ones(5), size=(3, 4))          # probability (soft) targets
    e = CROSS_ENTROPY.error(z, y)
    h = 1e-6
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        num[idx] = (CROSS_ENTROPY.per_sample(zp, y)[idx[:-1]]
                    - CROSS_ENTROPY.per_sample(zm, y)[idx[:-1]]) / (2 * h)
    np.testing.assert_allclose(e, num, atol=1e-8)
    R = rng.normal(size=(2,) + z.shape)                 # directions with a leading axis
    hv = CROSS_ENTROPY.curvature(z, y, R)
    fd = (CROSS_ENTROPY.error(z + h * R, y) - CROSS_ENTROPY.error(z - h * R, y)) / (2 * h)
    np.testing.assert_allclose(hv, fd, atol=1e-8)


def test_complex_step_through_the_loss_is_exact(rng):
    """The protocol's default derivatives take complex steps: ∂ℓ/∂z from Im ℓ(z + ih)/h."""
    z, y = rng.normal(size=(2, 4)), _onehot(rng, (2,), 4)
    for j in range(4):
        dz = np.zeros(4, complex)
        dz[j] = 1e-20j
        cs = np.imag(CROSS_ENTROPY.per_sample(z + dz, y)) / 1e-20
        np.testing.assert_allclose(cs, CROSS_ENTROPY.error(z, y)[:, j], rtol=1e-13)


def test_large_logits_do_not_overflow():
    z = np.array([[1000.0, 0.0, -1000.0]])
    y = np.array([[0.0, 1.0, 0.0]])
    assert np.isclose(CROSS_ENTROPY.per_sample(z, y)[0], 1000.0)
    assert np.all(np.isfinite(CROSS_ENTROPY.error(z, y)))


def test_score_is_the_error_rate():
    z = np.array([[[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]]])
    y = np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    assert CROSS_ENTROPY.score(z, y)[0] == pytest.approx(1 / 3)
    assert CROSS_ENTROPY.accuracy(z, y)[0] == pytest.approx(2 / 3)
    assert SQUARED_ERROR.score(z, y)[0] == pytest.approx(((z - y) ** 2).mean())


def test_loss_names_and_doors():
    assert get_loss("cross_entropy") is CROSS_ENTROPY
    with pytest.raises(ValidationError, match=r"RateNetwork\.loss: must be one of"):
        nm.RateNetwork([2, 2], loss="hinge")
    with pytest.raises(ValidationError, match=r"RateNetwork\.loss: .*missing"):
        nm.RateNetwork([2, 2], loss=object())
    net = _readout()
    x = np.zeros((4, 5))
    with pytest.raises(ValidationError, match=r"Learner\.run\.y: must hold probability"):
        nm.Learner().run(net, x, np.ones((4, 3)))
    with pytest.raises(ValidationError, match=r"Learner\.run\.y: must hold probability"):
        nm.Learner().run(net, x, -np.eye(3)[[0, 1, 2, 0]] + np.array([0, 0, 2.0]))
    with pytest.raises(ValidationError, match=r"Learner\.run\.y_val"):
        nm.Learner().run(net, x, np.eye(3)[[0, 1, 2, 0]], x_val=x, y_val=np.zeros((4, 3)),
                         beta=0.1)
    assert "loss='cross_entropy'" in repr(net)


def test_engines_that_compute_squared_error_refuse_cross_entropy(rng):
    net = nm.RateNetwork([3, 2], activation="linear", tau_neuron=0.01, loss="cross_entropy",
                         seed=0)
    x, y = rng.normal(size=(4, 3)), _onehot(rng, (4,), 2)
    with pytest.raises(UnsupportedError, match=r"RateNetwork\.loss: the brian2 engine"):
        nm.Learner(engine="brian2", integrator="euler").run(net, x, y)
    with pytest.raises(UnsupportedError, match="loss"):
        nm.Learner(engine="fused", integrator="euler").run(net, x, y)
    res = nm.Learner(tol=1e-8).run(net, x, y)                       # auto: the numpy loop
    assert res.engine == "numpy" and np.all(res.settled)


# ---------------------------------------------------------------------- closed forms
def test_linear_readout_gradient_is_the_closed_form(rng):
    """∂φ mean CE = (p − y)ᵀ [x, 1] / K for a linear soft-max read-out."""
    net = _readout()
    B, K = 2, 7
    X, Y = rng.normal(size=(B, K, 5)), _onehot(rng, (B, K), 3)
    phi = [rng.normal(size=(B, 3, 6))]
    _, g, _ = grad_hvp(net, phi, X, Y)
    Xa = np.concatenate([X, np.ones((B, K, 1))], axis=-1)
    Z = np.einsum("bki,boi->bko", Xa, phi[0])
    P = np.exp(Z - Z.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    np.testing.assert_allclose(g[0], np.einsum("bko,bki->boi", P - Y, Xa) / K, rtol=1e-12)


@pytest.mark.parametrize("settle", ["solve", "integrate"])
def test_settled_readout_is_the_scipy_minimiser(rng, settle):
    """The learning process settles at argmin_φ mean CE(φ; shots) + Σ λ/2 (φ − ω)²,
    found independently by scipy.optimize (BFGS on a hand-written objective)."""
    net = _readout(seed=4)
    K = 6
    x, y = rng.normal(size=(K, 5)), _onehot(rng, (K,), 3)
    xa = np.concatenate([x, np.ones((K, 1))], axis=-1)
    omega = np.concatenate([net.connections[0].omega[..., :5],
                            net.connections[0].omega[..., 5:]], axis=-1)
    lam = net.connections[0].lam

    def F(w):
        W = w.reshape(3, 6)
        z = xa @ W.T
        m = z.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
        ce = (lse - (z * y).sum(-1)).mean()
        p = np.exp(z - lse[:, None])
        grad = (p - y).T @ xa / K + lam * (W - omega)
        return ce + 0.5 * (lam * (W - omega) ** 2).sum(), grad.ravel()

    sol = scipy.optimize.minimize(F, omega.ravel(), jac=True, method="BFGS",
                                  options={"gtol": 1e-13, "maxiter": 10000})
    assert np.abs(F(sol.x)[1]).max() < 2e-9   # strongly convex: |φ − φ*| ≤ |∇F|/λ_min (≥ 0.5)
    learner = nm.Learner(rule="delta", tol=1e-12, settle=settle, max_duration=200.0)
    res = learner.run(net, x, y)
    assert np.all(res.settled)
    np.testing.assert_allclose(res.phi_aug[0], sol.x.reshape(3, 6), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------- meta-gradients
def _classification_problem(seed=1):
    rng = np.random.default_rng(seed)
    n_in, n_out = 4, 3
    x, y = rng.normal(size=(8, n_in)), _onehot(rng, (8,), n_out)
    xv, yv = rng.normal(size=(12, n_in)), _onehot(rng, (12,), n_out)
    net = nm.RateNetwork([n_in, 5, n_out], activation=["tanh", "linear"], tau_neuron=0,
                         seed=3, loss="cross_entropy",
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.5),
                                                   lam=nm.init.Uniform(0.5, 1.5)))
    return net, nm.Task(x, y, xv, yv)


def _cos(a, b):
    a, b = optim.tree_vector(a), optim.tree_vector(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cml_against_exact_meta_gradient_on_classification():
    net, task = _classification_problem()
    learner = nm.Learner(rule="backprop", tol=1e-12)
    g = nm.CML(beta=1e-3, estimator="symmetric", learner=learner).meta_gradient(net, task)
    g_ref = nm.exact_meta_gradient(net, task)
    assert _cos(g, g_ref) >= 0.9999
    # the error of the symmetric estimator shrinks like β² (a property, not a number)
    errs = []
    for beta in (4e-2, 2e-2):
        gb = nm.CML(beta=beta, estimator="symmetric", learner=learner).meta_gradient(net, task)
        errs.append(np.linalg.norm(optim.tree_vector(gb) - optim.tree_vector(g_ref)))
    assert 3.0 < errs[0] / errs[1] < 5.0


def test_exact_reference_against_finite_differences_of_the_learning_process():
    net, task = _classification_problem(seed=2)
    g_ref = nm.exact_meta_gradient(net, task)

    def val_loss(theta):
        n2 = net.with_theta(theta)
        res = nm.Learner(rule="backprop", tol=1e-13).run(n2, task.x_train, task.y_train)
        out = n2.predict(task.x_val, [np.asarray(p) for p in res.phi_aug])
        z = out - out.max(-1, keepdims=True)
        return float((np.log(np.exp(z).sum(-1)) - (z * task.y_val).sum(-1)).mean())

    h = 1e-5
    for key, conn, idx in (("omega", 0, (1, 2)), ("lam", 1, (0, 3)),
                           ("omega_bias", 1, (1,)), ("lam", 0, (2, 1))):
        tp, tm = net.theta, net.theta
        tp[key][conn][idx] += h
        tm[key][conn][idx] -= h
        fd = (val_loss(tp) - val_loss(tm)) / (2 * h)
        assert abs(fd - g_ref[key][conn][idx]) <= 1e-5 * abs(g_ref[key][conn][idx]) + 1e-10, key


# ---------------------------------------------------------------------- the MAML family
def _ref_ce(params, x, y):
    """Mean cross-entropy of one task, example by example (an independent forward pass:
    tanh hidden layers, logits out)."""
    n = len(params["w"])
    total = 0.0
    for xk, yk in zip(x, y):
        r = xk
        for l in range(n):
            v = params["w"][l] @ r + params["b"][l]
            r = np.tanh(v) if l < n - 1 else v
        total += np.log(np.exp(r - r.max()).sum()) + r.max() - r @ yk
    return total / len(x)


def _flat(tree):
    return optim.tree_vector(tree)


def _unflat(v, like):
    out, i = {}, 0
    for k in sorted(like):
        out[k] = []
        for a in like[k]:
            out[k].append(v[..., i:i + a.size].reshape(v.shape[:-1] + a.shape))
            i += a.size
    return out


@pytest.fixture
def ce_problem():
    from neuro_meta.baselines import init_mlp

    rng = np.random.default_rng(5)
    params = init_mlp([4, 5, 3], seed=2)
    params = optim.tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape), params)
    task = nm.Task(rng.normal(size=(3, 6, 4)), _onehot(rng, (3, 6), 3),
                   rng.normal(size=(3, 9, 4)), _onehot(rng, (3, 9), 3))
    return params, task


def test_mlp_cross_entropy_gradient_and_hvp(ce_problem):
    from neuro_meta.baselines import mlp_grad, mlp_hvp, mlp_loss

    params, task = ce_problem
    xt, yt, _, _ = task.as_batch()
    loss, g = mlp_grad(params, xt, yt, loss="cross_entropy")
    np.testing.assert_allclose(mlp_loss(params, xt, yt, loss="cross_entropy"), loss)
    theta, h = _flat(params), 1e-5
    for t in range(3):
        assert loss[t] == pytest.approx(_ref_ce(params, xt[t], yt[t]), rel=1e-12)
        fd = np.array([(_ref_ce(_unflat(theta + h * e, params), xt[t], yt[t])
                        - _ref_ce(_unflat(theta - h * e, params), xt[t], yt[t])) / (2 * h)
                       for e in np.eye(theta.size)])
        gt = _flat({k: [a[t] for a in g[k]] for k in g})
        assert np.linalg.norm(gt - fd) / np.linalg.norm(fd) < 1e-8
    v = np.random.default_rng(1).standard_normal(theta.size)
    hv = mlp_hvp(params, xt, yt, _unflat(v, params), loss="cross_entropy")
    gp = mlp_grad(_unflat(theta + h * v, params), xt, yt, loss="cross_entropy")[1]
    gm = mlp_grad(_unflat(theta - h * v, params), xt, yt, loss="cross_entropy")[1]
    for t in range(3):
        fd = (_flat({k: [a[t] for a in gp[k]] for k in gp})
              - _flat({k: [a[t] for a in gm[k]] for k in gm})) / (2 * h)
        got = _flat({k: [a[t] for a in hv[k]] for k in hv})
        assert np.linalg.norm(got - fd) / np.linalg.norm(fd) < 1e-7


@pytest.mark.parametrize("method", ["maml", "imaml"])
def test_maml_family_meta_gradient_with_cross_entropy(ce_problem, method):
    """MAML (2 inner steps) and iMAML (converged proximal problem) against central finite
    differences of the validation cross-entropy after the whole inner loop."""
    from neuro_meta.baselines import IMAML, MAML

    params, task = ce_problem
    m = (MAML(inner_lr=0.5, inner_steps=2, loss="cross_entropy") if method == "maml" else
         IMAML(lam=2.0, inner_lr=0.2, inner_steps=400, cg_steps=60, cg_tol=1e-14,
               loss="cross_entropy"))
    g, _ = m.meta_gradient(params, task)
    xt, yt, xv, yv = task.as_batch()
    theta, h = _flat(params), 1e-5

    def val(v):
        p = _unflat(v, params)
        phi = m.adapt(p, xt, yt)
        return np.mean([_ref_ce({k: [a[t] for a in phi[k]] for k in phi}, xv[t], yv[t])
                         for t in range(3)])

    fd = np.array([(val(theta + h * e) - val(theta - h * e)) / (2 * h)
                   for e in np.eye(theta.size)])
    tol = 1e-6 if method == "maml" else 1e-4      # iMAML: the proximal problem's residual
    assert np.linalg.norm(_flat(g) - fd) / np.linalg.norm(fd) < tol


def test_baselines_score_classification_error_and_check_targets(ce_problem):
    from neuro_meta.baselines import MAML

    params, task = ce_problem
    m = MAML(inner_lr=0.5, inner_steps=2, loss="cross_entropy")
    err = m.evaluate(params, task)
    phi = m.adapt(params, task.x_train, task.y_train)
    from neuro_meta.baselines import mlp_predict

    pred = mlp_predict(phi, task.x_val).argmax(-1)
    np.testing.assert_allclose(err, (pred != task.y_val.argmax(-1)).mean(-1))
    bad = nm.Task(task.x_train, 2 * task.y_train, task.x_val, task.y_val)
    with pytest.raises(ValidationError, match=r"MAML\.task\.y_train: must hold probability"):
        m.meta_gradient(params, bad)
    with pytest.raises(ValidationError, match=r"MAML\.loss: must be one of"):
        MAML(loss="hinge")
