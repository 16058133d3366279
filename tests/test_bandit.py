"""The wheel bandit (issue 22): reward model, masked squared error, agents, deployment.

Checks against independent references: a direct per-context loop of Riquelme et al.'s
reward rule, Monte-Carlo estimates, finite differences, the exact meta-gradient, closed
forms of (Bayesian) linear regression.
"""
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import baselines as bl
from neuro_meta import exact
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import bandit
from neuro_meta.experiments import bandit_agents as ag
from neuro_meta.families import WheelBandit
from neuro_meta.learning import Learner
from neuro_meta.losses import MASKED_SQUARED_ERROR as M, get_loss
from neuro_meta.metatrain import MetaTrainer

U = M.UNOBSERVED


# ---------------------------------------------------------------------- reward model
def _riquelme_means(x, delta):
    """Mean rewards by a direct loop of Riquelme et al.'s rule (their large arms 0-3,
    safe arm 4, quadrants (+,+), (+,−), (−,+), (−,−)), mapped to the safe arm first."""
    out = []
    for c in x:
        r = [1.0, 1.0, 1.0, 1.0, 1.2]                     # theirs: safe arm last
        if np.linalg.norm(c) >= delta:
            if c[0] > 0:
                r[0 if c[1] > 0 else 1] = 50.0
            else:
                r[2 if c[1] > 0 else 3] = 50.0
        out.append([r[4]] + r[:4])                        # ours: safe arm first
    return np.array(out)


@pytest.mark.parametrize("delta", [0.0, 0.5, 0.95, 1.0])
def test_reward_means_and_optimal_arm_follow_the_wheel_rule(delta):
    f = WheelBandit()
    x = f.contexts(np.random.default_rng(1), 2000)
    x[:4] = [[0.9, 0.0], [0.0, 0.9], [-0.9, 0.0], [0.0, -0.99]]      # axes: the ≤ side
    ref = _riquelme_means(x, delta)
    np.testing.assert_array_equal(f.mean_rewards(x, delta), ref)
    np.testing.assert_array_equal(f.optimal_arm(x, delta), np.argmax(ref, axis=1))
    arms = np.random.default_rng(2).integers(0, 5, len(x))
    np.testing.assert_allclose(f.regret(x, delta, arms),
                               ref.max(1) - ref[np.arange(len(x)), arms])


def test_contexts_uniform_in_the_disc_and_reward_noise():
    """Monte Carlo: P(‖x‖ < δ) = δ², quadrants equally likely, reward noise N(0, σ²)."""
    f = WheelBandit()
    rng = np.random.default_rng(3)
    x = f.contexts(rng, 200_000)
    r = np.linalg.norm(x, axis=1)
    assert r.max() <= 1.0
    for d in (0.3, 0.7, 0.95):
        p = (r < d).mean()
        assert abs(p - d ** 2) < 4 * np.sqrt(d ** 2 * (1 - d ** 2) / r.size)
    q = np.bincount(f.large_arm(x), minlength=5)[1:] / len(x)
    assert np.all(np.abs(q - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(x)))
    R = f.rewards(rng, x, 0.6)
    noise = R - f.mean_rewards(x, 0.6)
    assert abs(noise.mean()) < 4 * 0.01 / np.sqrt(noise.size)
    assert abs(noise.std() / 0.01 - 1) < 0.01


@pytest.mark.parametrize("delta", [0.5, 0.9, 0.99])
def test_uniform_regret_closed_form_matches_monte_carlo(delta):
    """Issue acceptance 1: δ²·0.16 + (1 − δ²)·39.16 against a Monte-Carlo estimate of the
    uniform policy's realised regret (optimal arm's reward − pulled arm's reward)."""
    f = WheelBandit()
    assert f.uniform_regret(delta) == pytest.approx(
        delta ** 2 * (1.2 - 1.04) + (1 - delta ** 2) * (50 - (1.2 + 50 + 3.0) / 5), abs=1e-12)
    rng = np.random.default_rng(4)
    n = 400_000
    x = f.contexts(rng, n)
    R = f.rewards(rng, x, delta)
    arms = rng.integers(0, 5, n)
    best = R[np.arange(n), f.optimal_arm(x, delta)]
    reg = best - R[np.arange(n), arms]
    assert abs(reg.mean() - f.uniform_regret(delta)) < 4 * reg.std() / np.sqrt(n)


def test_uniform_regret_and_optimal_arm_with_other_means():
    """Review item 7: with μ_L in any arm's place (here arm 2 pays 30 everywhere) the
    closed form averages the four quadrants (Monte Carlo); with μ_L below another arm's
    mean the optimal arm is the arg max of the means, not the quadrant's arm."""
    f = WheelBandit(mu=(1.2, 1.0, 30.0, 1.0, 1.0))
    rng = np.random.default_rng(6)
    n = 400_000
    x = f.contexts(rng, n)
    mu = f.mean_rewards(x, 0.5)
    reg = mu.max(1) - mu[np.arange(n), rng.integers(0, 5, n)]
    assert abs(reg.mean() - f.uniform_regret(0.5)) < 4 * reg.std() / np.sqrt(n)
    # closed form by hand: inside max 30, mean 6.84; outside quadrant arm k pays 50
    # (for k = 2 in place of the 30)
    outs = []
    for k in range(1, 5):
        m = np.array([1.2, 1.0, 30.0, 1.0, 1.0])
        m[k] = 50.0
        outs.append(m.max() - m.mean())
    assert f.uniform_regret(0.5) == pytest.approx(0.25 * (30 - 6.84) + 0.75 * np.mean(outs))
    g = WheelBandit(mu=(1.2, 1.0, 2.0, 1.0, 1.0), mu_large=1.1)
    xs = np.array([[0.9, -0.1], [0.9, 0.1], [0.1, 0.1]])
    # outside at (0.9, -0.1) the quadrant's arm 2 pays 1.1 < arm 0's 1.2
    np.testing.assert_array_equal(g.optimal_arm(xs, 0.5), [0, 2, 2])
    h = WheelBandit(mu_large=1.1)                      # μ_L < 1.2: the safe arm outside
    np.testing.assert_array_equal(h.optimal_arm(xs, 0.5), [0, 0, 0])
    for fam in (g, h):
        z = fam.contexts(rng, 2000)
        np.testing.assert_array_equal(fam.optimal_arm(z, 0.5),
                                      np.argmax(fam.mean_rewards(z, 0.5), axis=1))
        assert np.all(fam.regret(z, 0.5, fam.optimal_arm(z, 0.5)) == 0)


def test_family_tasks_reveal_only_the_pulled_arm():
    f = WheelBandit(shots=40, queries=10, scale=10.0)
    rng = np.random.default_rng(5)
    task, deltas, arms = f.sample_with_deltas(rng, 3)
    assert task.x_train.shape == (3, 40, 2) and task.y_val.shape == (3, 10, 5)
    y = np.concatenate([task.y_train, task.y_val], axis=1)
    obs = M.observed(y)
    assert np.all(obs.sum(-1) == 1) and np.all(obs.argmax(-1) == arms)
    x = np.concatenate([task.x_train, task.x_val], axis=1)
    mu = f.mean_rewards(x, deltas[:, None])
    seen = y[obs].reshape(arms.shape) * 10.0
    assert np.all(np.abs(seen - np.take_along_axis(mu, arms[..., None], -1)[..., 0]) < 0.06)
    again = f.sample(np.random.default_rng(5), 3)
    np.testing.assert_array_equal(again.y_train, task.y_train)


@pytest.mark.parametrize("kw, match", [
    ({"shots": 0}, "WheelBandit.shots: must be >= 1"),
    ({"delta_range": (0.5, 0.2)}, r"WheelBandit.delta_range\[1\]: must be >= 0.5"),
    ({"delta_range": (0.0, 1.5)}, r"delta_range\[1\]: must be <= 1"),
    ({"mu": (1.0, 2.0)}, "WheelBandit.mu: must be 5"),
    ({"sigma": -1.0}, "WheelBandit.sigma: must be >= 0"),
    ({"scale": 0.0}, "WheelBandit.scale: must be > 0"),
])
def test_family_refuses_bad_settings(kw, match):
    with pytest.raises(ValidationError, match=match):
        WheelBandit(**kw)


def test_reward_model_refuses_bad_inputs():
    f = WheelBandit()
    with pytest.raises(ValidationError, match="WheelBandit.mean_rewards.delta: must be in"):
        f.mean_rewards(np.zeros((3, 2)), 1.5)
    with pytest.raises(ValidationError, match="WheelBandit.optimal_arm.x: must have a last"):
        f.optimal_arm(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValidationError, match="WheelBandit.regret.arms"):
        f.regret(np.zeros((3, 2)), 0.5, np.array([0, 1, 7]))
    with pytest.raises(ValidationError, match="WheelBandit.sample.rng"):
        f.sample(0, 2)


# ---------------------------------------------------------------------- masked loss
def _y(rng, S=6, n=5):
    arms = rng.integers(0, n, (2, S))
    return arms, M.targets(arms, rng.normal(size=(2, S)), n)


def test_masked_loss_derivatives_match_finite_differences(rng):
    arms, y = _y(rng)
    out = rng.normal(size=y.shape)
    # value: the pulled arm's squared error only
    direct = 0.5 * (np.take_along_axis(out - np.where(y == U, 0, y), arms[..., None],
                                       -1)[..., 0]) ** 2
    np.testing.assert_allclose(M.per_sample(out, y), direct)
    h = 1e-6
    e = M.error(out, y)
    r = rng.normal(size=out.shape)
    fd = (M.per_sample(out + h * r, y) - M.per_sample(out - h * r, y)) / (2 * h)
    np.testing.assert_allclose((e * r).sum(-1), fd, rtol=1e-6, atol=1e-9)
    fd2 = (M.error(out + h * r, y) - M.error(out - h * r, y)) / (2 * h)
    np.testing.assert_allclose(M.curvature(out, y, r), fd2, atol=1e-8)
    assert np.all(e[y == U] == 0)
    # the score: MSE over pulled arms
    np.testing.assert_allclose(M.score(out, y), (2 * direct).mean(-1))


def test_masked_loss_doors():
    assert get_loss("masked_squared_error") is M
    with pytest.raises(ValidationError, match=r"Learner.run.y: must hold observed rewards"):
        M.check_targets(np.array([[1e60, U]]), "Learner.run", "y")
    with pytest.raises(ValidationError, match=r"MaskedSquaredError.targets.arms"):
        M.targets(np.array([0, 5]), np.zeros(2), 5)
    with pytest.raises(ValidationError, match=r"MaskedSquaredError.targets.rewards"):
        M.targets(np.array([0, 1]), np.array([0.0, np.nan]), 5)


def test_mlp_gradient_and_hvp_with_masked_loss(rng):
    """The baselines' MLP (MAML) with the masked loss: gradient and HVP against finite
    differences of the loss."""
    p = bl.init_mlp([2, 6, 5], 0)
    x = rng.normal(size=(2, 7, 2))
    _, y = _y(rng, S=7)
    _, g = bl.mlp_grad(p, x, y, loss="masked_squared_error")
    d = {k: [rng.normal(size=a.shape) for a in v] for k, v in p.items()}
    h = 1e-6

    def shifted(s):
        return {k: [a + s * b for a, b in zip(p[k], d[k])] for k in p}
    fd = (bl.mlp_loss(shifted(h), x, y, "masked_squared_error")
          - bl.mlp_loss(shifted(-h), x, y, "masked_squared_error")) / (2 * h)
    an = sum((gg * dd).sum(axis=tuple(range(1, gg.ndim)))
             for k in p for gg, dd in zip(g[k], d[k]))
    np.testing.assert_allclose(an, fd, rtol=1e-6)
    hv = bl.mlp_hvp(p, x, y, d, loss="masked_squared_error")
    g_p = bl.mlp_grad(shifted(h), x, y, loss="masked_squared_error")[1]
    g_m = bl.mlp_grad(shifted(-h), x, y, loss="masked_squared_error")[1]
    for k in p:
        for a, b, c in zip(hv[k], g_p[k], g_m[k]):
            np.testing.assert_allclose(a, (b - c) / (2 * h), rtol=1e-5, atol=1e-7)


def _bandit_task(rng, B=2, K=8, V=6):
    f = WheelBandit(shots=K, queries=V, scale=10.0)
    return f.sample(rng, B)


@pytest.mark.parametrize("kind", ["dual", "complex"])
def test_cml_matches_exact_meta_gradient_with_masked_loss(kind, rng):
    """Through the protocol: the masked loss in the dual system's and a complex-synapse
    network's learning process; exact reference vs finite differences of the whole
    learning process, and CML (symmetric, small β) vs the exact reference."""
    if kind == "dual":
        net = nm.DualSystem([2, 5, 4, 5], seed=0, lam=0.5, gain=nm.init.Uniform(0.8, 1.2),
                            loss="masked_squared_error")
    else:
        net = nm.RateNetwork([2, 5, 5], activation=["tanh", "linear"], tau_neuron=0.0,
                             synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5),
                             seed=0, loss="masked_squared_error")
    task = _bandit_task(rng)
    ex = nm.exact_meta_gradient(net, task)
    theta = net.theta
    h = 1e-5
    for k in theta:
        for i, a in enumerate(theta[k]):
            if a is None:
                continue
            d = rng.normal(size=a.shape)

            def loss(s):
                t = {kk: [None if v is None else v.copy() for v in vv]
                     for kk, vv in theta.items()}
                t[k][i] = t[k][i] + s * d
                return exact.outer_loss(net.with_theta(t), task)
            fd = (loss(h) - loss(-h)) / (2 * h)
            an = float((ex[k][i] * d).sum())
            assert abs(fd - an) <= 1e-5 * abs(an) + 1e-10, (k, i, fd, an)
    learner = nm.Learner(rule="backprop", integrator="expeuler", tol=1e-11,
                         max_duration=500)
    g = nm.CML(beta=1e-3, estimator="symmetric", learner=learner).meta_gradient(net, task)
    for k in ex:
        for a, b in zip(ex[k], g[k]):
            if a is None:
                continue
            assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a) + 1e-12, k


# ---------------------------------------------------------------------- agents
def test_lingreedy_is_greedy_on_ridge_regression(rng):
    a = ag.LinGreedy(epsilon=0.0, prior_precision=2.0, initial_pulls=0)
    x = rng.normal(size=(40, 2))
    arms = rng.integers(0, 5, 40)
    r = rng.normal(size=40)
    a.update(x, arms, r)
    q = rng.normal(size=(10, 2))
    F = np.c_[x, np.ones(40)]
    pred = []
    for k in range(5):
        Fk, rk = F[arms == k], r[arms == k]
        w = np.linalg.solve(Fk.T @ Fk + 2.0 * np.eye(3), Fk.T @ rk)
        pred.append(np.c_[q, np.ones(10)] @ w)
    np.testing.assert_array_equal(a.act(q, rng), np.argmax(pred, axis=0))


def _nig_reference(x, arms, r, k, lam=0.25, a0=6.0, b0=6.0):
    """The closed-form Normal-Inverse-Gamma posterior of arm ``k`` from the raw data."""
    F = np.c_[x, np.ones(len(x))][arms == k]
    rk = r[arms == k]
    L = F.T @ F + lam * np.eye(3)
    mu = np.linalg.solve(L, F.T @ rk)
    return mu, np.linalg.inv(L), a0 + len(rk) / 2, b0 + 0.5 * (rk @ rk - mu @ L @ mu)


def test_linfullpost_posterior_is_the_closed_form_and_draws_match_it(rng):
    """Review item 10: every arm with data (two updates, so the sufficient statistics
    accumulate): μ, Λ⁻¹, a, b against the closed form from the raw data; the Thompson
    draws β have mean μ and covariance b/(a − 1) Λ⁻¹ (the multivariate-t marginal), by
    Monte Carlo; an arm is chosen as argmax fᵀβ."""
    a = ag.LinFullPost(initial_pulls=0)
    x = rng.normal(size=(60, 2))
    arms = rng.integers(0, 5, 60)
    w = rng.normal(size=(5, 3))
    r = (np.c_[x, np.ones(60)] * w[arms]).sum(1) + 0.3 * rng.normal(size=60)
    a.update(x[:25], arms[:25], r[:25])
    a.update(x[25:], arms[25:], r[25:])
    refs = [_nig_reference(x, arms, r, k) for k in range(5)]
    for k, ref in enumerate(refs):
        got = a.posterior(k)
        for g, e in zip(got, ref):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    mc = np.random.default_rng(9)
    n = 20_000
    draws = np.stack([a.sample(mc) for _ in range(n)])          # (n, 5, 3)
    for k, (mu, cov, an, bn) in enumerate(refs):
        c = bn / (an - 1) * cov
        se = np.sqrt(np.diag(c) / n)
        assert np.all(np.abs(draws[:, k].mean(0) - mu) < 4.5 * se), k
        emp = np.cov(draws[:, k].T)
        # the variance of a sample covariance of a t with 2a >= 12 dof: a few % here
        np.testing.assert_allclose(emp, c, rtol=0.08, atol=0.08 * np.sqrt(
            np.outer(np.diag(c), np.diag(c))).max())
    q = np.array([[0.5, -0.2]])
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert a.act(q, r1)[0] == int(np.argmax(a.sample(r2) @ np.array([0.5, -0.2, 1.0])))
    with pytest.raises(ValidationError, match="LinFullPost.posterior.arm"):
        a.posterior(5)


def test_settled_agent_learns_a_fixed_bandit(rng):
    """A (not meta-learned) dual system settled on a history where arm 3 pays 5 and the
    others 0 then pulls arm 3."""
    net = nm.DualSystem([2, 8, 8, 5], seed=0, lam=0.1, loss="masked_squared_error")
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.02, tol=1e-4,
                         max_duration=200, settle="solve")
    agent = ag.SettledAgent(net, learner, "dual", update_every=30, window=30)
    x = rng.uniform(-1, 1, (30, 2))
    arms = np.arange(30) % 5
    agent.update(x, arms, np.where(arms == 3, 5.0, 0.0))
    assert np.all(agent.act(rng.uniform(-1, 1, (20, 2)), rng) == 3)


# ---------------------------------------------------------------------- experiment
def _quick_spec():
    cfg = bandit._cfg(None, True, None, ["meta.steps=2", "baselines.steps=2",
                                         "compare.budget_s=null", "deploy.trials=60"])
    fam = bandit.family(cfg)
    nets = {k: bandit.build_net(cfg, k, 0) for k in ("cml_dual", "cml_complex")}
    maml, _ = bandit.build_maml(cfg)
    return {"family": fam, "deploy": bandit.deploy_cfg(cfg), "methods": list(bandit.METHODS),
            "nets": nets, "params": {"maml": bl.init_mlp([2, 16, 16, 5], 0)},
            "maml": maml, "learner": bandit.build_learner(cfg), "scale": fam.scale,
            "seed": 0}


def _regrets(done, name):
    return {k: v[name]["regret"] for k, v in done.items()}


def test_deployment_identical_serial_processes_and_dask(tmp_path):
    """Issue acceptance 3: the same regret curves in-process, on a process pool and on a
    Dask LocalCluster."""
    from concurrent.futures import ProcessPoolExecutor

    spec = _quick_spec()
    ref = bandit.run_deployment(spec, tmp_path / "a", progress=False)
    with ProcessPoolExecutor(2) as ex:
        pool = bandit.run_deployment(spec, tmp_path / "b", progress=False, executor=ex)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cl, \
            distributed.Client(cl) as c:
        dsk = bandit.run_deployment(spec, tmp_path / "c", progress=False, executor=c)
    assert set(ref) == set(pool) == set(dsk)
    for key in ref:
        assert set(ref[key]) == set(spec["methods"])
        for name in spec["methods"]:
            for other in (pool, dsk):
                np.testing.assert_array_equal(ref[key][name]["regret"],
                                              other[key][name]["regret"])
                assert ref[key][name]["not_settled"] == other[key][name]["not_settled"]


class _Spy(ag.Agent):
    """Wraps an agent; records the contexts it is shown and the rewards it receives."""

    def __init__(self, agent, log):
        self.agent, self.log = agent, log
        self.update_every = agent.update_every

    def act(self, x, rng):
        a = self.agent.act(x, rng)
        self.log.append(("act", np.array(x), np.array(a)))
        return a

    def update(self, x, arms, rewards):
        self.log.append(("update", np.array(x), np.array(arms), np.array(rewards)))
        self.agent.update(x, arms, rewards)


class _Oracle(ag.Agent):
    def __init__(self, fam, delta):
        self.fam, self.delta, self.update_every = fam, delta, 7

    def act(self, x, rng):
        return self.fam.optimal_arm(x, self.delta)


def test_every_agent_sees_the_same_stream_and_the_regret_is_right(monkeypatch):
    """Review item 8: a spy around every agent of a job: all are shown the same contexts
    (the job's stream) and, for the arm each pulls, receive that stream's pre-drawn reward
    of that arm; the reported regret is the regret of the arms pulled. An oracle pulling
    ``optimal_arm`` has exactly zero regret on the stream; Uniform's normalised regret
    is within 4 standard errors of 1."""
    spec = _quick_spec()
    spec["deploy"] = dict(spec["deploy"], trials=100, seeds=3)
    fam = spec["family"]
    logs = {}
    orig = bandit.make_agents

    def spied(sp, methods=None):
        agents = orig(sp, methods)
        for name in agents:
            logs[name] = []
        return {n: _Spy(a, logs[n]) for n, a in agents.items()}
    monkeypatch.setattr(bandit, "make_agents", spied)
    d = spec["deploy"]
    per_trial = {}
    for i, delta in enumerate(d["deltas"]):
        for s in range(d["seeds"]):
            res = bandit.deploy_job(spec, i, s)
            x, R = bandit.stream(fam, delta, i, s, spec["seed"], d["trials"])
            assert set(logs) == set(spec["methods"])
            for name, log in logs.items():
                shown = np.concatenate([e[1] for e in log if e[0] == "act"])
                np.testing.assert_array_equal(shown, x)
                ups = [e for e in log if e[0] == "update"]
                np.testing.assert_array_equal(np.concatenate([e[1] for e in ups]), x)
                pulled = np.concatenate([e[2] for e in ups])
                got = np.concatenate([e[3] for e in ups])
                np.testing.assert_array_equal(got, R[np.arange(len(x)), pulled])
                mu = fam.mean_rewards(x, delta)
                np.testing.assert_allclose(res[name]["regret"],
                                           mu.max(1) - mu[np.arange(len(x)), pulled])
            oracle = ag.deploy(_Oracle(fam, delta), x, R, np.random.default_rng(0))
            assert np.all(fam.regret(x, delta, oracle) == 0)
            per_trial.setdefault(i, []).append(res["uniform"]["regret"]
                                               / fam.uniform_regret(delta))
    for i, v in per_trial.items():
        v = np.concatenate(v)
        assert abs(v.mean() - 1) < 4 * v.std(ddof=1) / np.sqrt(v.size), (i, v.mean())


def test_deploy_refuses_arms_out_of_range(rng):
    """Minor review item: an agent returning a negative or too-large arm, or the wrong
    number of arms, is an error (not another arm's reward)."""
    class Bad(ag.Agent):
        def __init__(self, arms):
            self.arms = arms

        def act(self, x, rng):
            return self.arms
    x, R = np.zeros((3, 2)), np.zeros((3, 5))
    for arms in ([0, -1, 2], [0, 5, 1], [0, 1], [0.5, 1, 1]):
        with pytest.raises(ValidationError, match=r"deploy.agent.act: must return 1 "
                                                  r"integer arms in \[0, 5\)"):
            ag.deploy(Bad(np.array(arms)), x, R, rng)


def test_summarise_uses_student_t_intervals():
    """Review item 6: the CI is t_{0.975, n−1} s.e.m.; for n = 3 the closed form of the
    t quantile with 2 degrees of freedom, t = (2p − 1) √(2 / (1 − (2p − 1)²)) = 4.3027
    (1.96 would be far too narrow)."""
    spec = _quick_spec()
    spec["methods"] = ["uniform"]
    spec["deploy"] = dict(spec["deploy"], trials=4, seeds=3, deltas=[0.5])
    u = spec["family"].uniform_regret(0.5)
    norm = np.array([0.2, 0.5, 1.1])
    done = {(0, s): {"uniform": {"regret": np.full(4, norm[s] * u), "updates": 0,
                                 "not_settled": None}} for s in range(3)}
    table = bandit.summarise(done, spec)[0]["uniform"]["0.5"]
    t2 = 0.95 * np.sqrt(2 / (1 - 0.95 ** 2))
    assert table["normalised_regret"] == pytest.approx(norm.mean())
    assert table["ci95"] == pytest.approx(t2 * norm.std(ddof=1) / np.sqrt(3), rel=1e-9)
    assert bandit.t95(10) == pytest.approx(2.2621571627, rel=1e-9)
    spec["deploy"]["seeds"] = 1
    assert bandit.summarise({(0, 0): done[(0, 0)]}, spec)[0]["uniform"]["0.5"]["ci95"] \
        is None


class _CountingLearner:
    """A learner proxy recording the ``phi_init`` of every run."""

    def __init__(self, learner):
        self.learner, self.inits = learner, []

    def run(self, net, x, y, **kw):
        self.inits.append(kw.get("phi_init"))
        return self.learner.run(net, x, y, **kw)


def test_settled_agent_starts_every_update_from_phi0_and_counts_unsettled(rng):
    """Review items 4 and 5: every deployment update settles from the meta-learned φ₀
    (``phi_init=None``, as meta-training's free phase), so its result is that of a fresh
    settling on the history; updates whose learning process does not settle are counted
    and reach the job's result and the summary."""
    net = nm.DualSystem([2, 6, 5], seed=0, lam=0.1, loss="masked_squared_error")
    good = nm.Learner(rule="backprop", integrator="expeuler", dt=0.02, tol=1e-6,
                      max_duration=200, settle="solve")
    proxy = _CountingLearner(good)
    agent = ag.SettledAgent(net, proxy, "dual", update_every=10, window=15)
    x = rng.uniform(-1, 1, (30, 2))
    arms = np.arange(30) % 5
    r = np.where(arms == 3, 5.0, 0.0) + x[:, 0]
    for k in range(3):
        agent.update(x[10 * k:10 * k + 10], arms[10 * k:10 * k + 10], r[10 * k:10 * k + 10])
    assert proxy.inits == [None, None, None]
    assert agent.updates == 3 and agent.not_settled == 0
    fresh = good.run(net, x[-15:], M.targets(arms[-15:], r[-15:], 5))
    for a, b in zip(agent.phi, fresh.phi_aug):
        np.testing.assert_array_equal(a, b)
    # a learner stopped long before it settles: every update is counted as unsettled
    spec = _quick_spec()
    spec["methods"] = ["cml_dual", "uniform"]
    spec["learner"] = nm.Learner(rule="backprop", integrator="expeuler", dt=0.02,
                                 tol=1e-9, max_duration=0.04, settle="integrate")
    res = bandit.deploy_job(spec, 0, 0)
    n_up = -(-spec["deploy"]["trials"] // spec["deploy"]["update_every"])
    assert res["cml_dual"]["updates"] == n_up and res["cml_dual"]["not_settled"] == n_up
    assert res["uniform"]["not_settled"] is None
    d = spec["deploy"]
    done = {(i, s): bandit.deploy_job(spec, i, s) for i in range(len(d["deltas"]))
            for s in range(d["seeds"])}
    table = bandit.summarise(done, spec)[0]
    assert all(v["not_settled"] == v["updates"] == d["seeds"] * n_up
               for v in table["cml_dual"].values())
    text = bandit.summary_table({"deploy": table, "config": {}})
    total = len(d["deltas"]) * d["seeds"] * n_up
    assert f"{total}/{total}" in text


def test_deployment_resumes_finished_jobs(tmp_path):
    spec = _quick_spec()
    full = bandit.run_deployment(spec, tmp_path, progress=False, fingerprint="x")
    calls = []
    orig = bandit.deploy_job

    def counted(*a):
        calls.append(a[1:])
        return orig(*a)
    bandit.deploy_job = counted
    try:
        again = bandit.run_deployment(spec, tmp_path, progress=False, resume=True,
                                      fingerprint="x")
    finally:
        bandit.deploy_job = orig
    assert calls == []
    for key in full:
        for n in full[key]:
            np.testing.assert_array_equal(full[key][n]["regret"], again[key][n]["regret"])
    with pytest.raises(nm.NeuroMetaError, match="another configuration"):
        bandit.run_deployment(spec, tmp_path, progress=False, resume=True, fingerprint="y")


def test_resume_with_more_methods_runs_only_the_missing_ones(tmp_path, monkeypatch):
    """Review item 2: resuming with a method added runs that method on the finished jobs
    (and nothing else); a method whose meta-parameters changed (another tag) runs again;
    the results equal one run with all methods."""
    spec = _quick_spec()
    ref = bandit.run_deployment(dict(spec), tmp_path / "ref", progress=False)
    first = dict(spec, methods=["uniform", "cml_dual"])
    bandit.run_deployment(first, tmp_path / "r", progress=False, fingerprint="x",
                          tags={"cml_dual": "a"})
    calls = []
    orig = bandit.deploy_job

    def counted(sp, i, s, methods=None):
        calls.append(tuple(methods))
        return orig(sp, i, s, methods)
    monkeypatch.setattr(bandit, "deploy_job", counted)
    second = dict(spec, methods=["uniform", "cml_dual", "lingreedy"])
    got = bandit.run_deployment(second, tmp_path / "r", progress=False, resume=True,
                                fingerprint="x", tags={"cml_dual": "a"})
    n_jobs = len(spec["deploy"]["deltas"]) * spec["deploy"]["seeds"]
    assert calls == [("lingreedy",)] * n_jobs
    table = bandit.summarise(got, second)[0]
    assert set(table) == {"uniform", "cml_dual", "lingreedy"}
    for key in ref:
        for n in second["methods"]:
            np.testing.assert_array_equal(got[key][n]["regret"], ref[key][n]["regret"])
    calls.clear()
    bandit.run_deployment(second, tmp_path / "r", progress=False, resume=True,
                          fingerprint="x", tags={"cml_dual": "b"})
    assert calls == [("cml_dual",)] * n_jobs


def test_run_refuses_bad_methods_and_settings(tmp_path):
    with pytest.raises(ValidationError, match="run bandit.methods"):
        bandit.run(tmp_path, quick=True, methods="cml,foo", progress=False)
    with pytest.raises(ValidationError, match=r"deploy.deltas"):
        bandit.run(tmp_path, quick=True, overrides=["deploy.deltas=[1.5]"], progress=False)
    with pytest.raises(ValidationError, match=r"deploy.lingreedy"):
        bandit.run(tmp_path, quick=True, overrides=["deploy.lingreedy.epsilon=2"],
                   progress=False)


@pytest.mark.parametrize("override, match", [
    ("network.dual.loss=cross_entropy", r"network.dual: must not set loss"),
    ("network.dual.seed=3", r"network.dual: must not set seed"),
    ("network.complex.seed=3", r"network.complex: must not set seed"),
    ("network.complex.activation=relu", r"network.complex: must not set activation"),
    ("baselines.maml.loss=mse", r"baselines.maml: must not set loss"),
    ("network.dual=5", r"network.dual: must be a mapping of settings \(got 5\)"),
    ("network.complex=[1]", r"network.complex: must be a mapping"),
    ("baselines.maml=x", r"baselines.maml: must be a mapping"),
    ("deploy.linfullpost.n_in=3", r"deploy.linfullpost: must not set n_in"),
    ("deploy.lingreedy.n_arms=4", r"deploy.lingreedy: must not set n_arms"),
    ("deploy.linfullpost=2", r"deploy.linfullpost: must be a mapping"),
    ("deploy.deltas=[0.5, 0.5]", r"deploy.deltas: must be distinct"),
    ("deploy.deltas=[0.9, 0.90000001]", r"deploy.deltas: must be distinct"),
])
def test_config_errors_are_validation_errors_before_any_work(override, match, tmp_path,
                                                             monkeypatch):
    """Review item 3 and a minor item: settings the experiment sets itself, non-mappings
    and colliding radii are ValidationErrors naming the key -- raised before any
    meta-training (not a TypeError, not minutes later)."""
    def work(*a, **k):
        raise AssertionError("meta-training or deployment started before the check")

    for owner, name in ((MetaTrainer, "train"), (bl, "train_baseline"),
                        (bandit, "run_deployment"), (Learner, "run")):
        monkeypatch.setattr(owner, name, work)
    with pytest.raises(ValidationError, match=match):
        bandit.run(tmp_path, quick=True, overrides=[override], progress=False)
    assert not (tmp_path / "meta_params.npz").exists()


def test_average_and_penalties_reach_every_method(tmp_path, monkeypatch):
    """``compare.average``, ``meta.omega_decay`` and ``baselines.weight_decay`` (off by
    default) reach both CML trainers and MAML's training, and change what a step-bound
    run reports (the dual system's penalty on its weights, biases and readout); bad
    values are refused before any work."""
    seen = {}
    real_init, real_train = bandit.MetaTrainer.__init__, bandit.bl.train_baseline

    def init(self, net, *a, **k):
        seen[type(net).__name__] = (k.get("average"), k.get("omega_decay"))
        real_init(self, net, *a, **k)

    def train(*a, **k):
        seen["maml"] = (k.get("average"), k.get("weight_decay"))
        return real_train(*a, **k)

    monkeypatch.setattr(bandit.MetaTrainer, "__init__", init)
    monkeypatch.setattr(bandit.bl, "train_baseline", train)
    step_bound = ["compare.budget_s=null", "meta.steps=3", "baselines.steps=6",
                  "deploy.trials=10", "deploy.seeds=1", "deploy.deltas=[0.5]"]
    extra = ["compare.average=0.5", "meta.omega_decay=0.01", "baselines.weight_decay=0.01"]
    methods = "cml_dual,cml_complex,maml"
    on = bandit.run(tmp_path / "on", quick=True, methods=methods, progress=False,
                    overrides=step_bound + extra)
    assert seen == {"DualSystem": (0.5, 0.01), "RateNetwork": (0.5, 0.01),
                    "maml": (0.5, 0.01)}
    off = bandit.run(tmp_path / "off", quick=True, methods=methods, progress=False,
                     overrides=step_bound)
    assert seen == {"DualSystem": (None, 0.0), "RateNetwork": (None, 0.0),
                    "maml": (None, 0.0)}
    for name in ("cml_dual", "cml_complex", "maml"):
        assert on["meta"][name]["meta_val_mse"] != off["meta"][name]["meta_val_mse"]
    for override, match in [
            ("compare.average=1.0", r"compare\.average: .*must be < 1\.0 \(got 1\.0\)"),
            ("meta.omega_decay=-1", r"meta\.omega_decay: .*must be >= 0\.0"),
            ("baselines.weight_decay=x", r"baselines\.weight_decay: .*must be a real")]:
        with pytest.raises(ValidationError, match=match):
            bandit.run(tmp_path / "bad", quick=True, methods=methods, progress=False,
                       overrides=[override])
        assert not (tmp_path / "bad" / "meta_params.npz").exists()


def test_window_other_than_the_support_set_warns(tmp_path, monkeypatch):
    """Minor review item: deploy.window is meant to be family.shots; another value
    warns (a deliberate diagnostic stays possible)."""
    monkeypatch.setattr(bandit, "build_trainer", _stop)        # stop before training
    with pytest.warns(UserWarning, match=r"deploy.window \(32\) differs from "
                                         r"family.shots \(64\)"):
        with pytest.raises(_Stop):
            bandit.run(tmp_path, quick=True, overrides=["deploy.window=32"],
                       methods="cml_dual", progress=False)


class _Stop(Exception):
    pass


def _stop(*a, **k):
    raise _Stop


class _RecordingExecutor:
    """An in-process executor recording what is submitted (a process pool's interface:
    ``submit`` and ``_max_workers``)."""

    _max_workers = 2

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args, **kw):
        from concurrent.futures import Future

        self.submitted.append(fn.__name__)
        f = Future()
        f.set_result(fn(*args, **kw))
        return f


@pytest.mark.parametrize("budget", [0.5, None])
def test_wall_time_budget_meta_trains_in_process_whatever_the_executor(budget, tmp_path):
    """Review item 1: under a wall-time budget the CML meta-batches do not go to the
    executor (MAML has none: same compute per method); with ``--budget none``
    (step-bound, deterministic) they do. The executor, its workers and where
    meta-training ran are recorded in results.json."""
    ex = _RecordingExecutor()
    res = bandit.run(tmp_path, quick=True, methods="cml_dual,uniform", progress=False,
                     executor=ex, overrides=[f"compare.budget_s={budget or 'null'}",
                                             "meta.steps=2", "deploy.trials=10"])
    meta_jobs = [n for n in ex.submitted if n != "deploy_job"]
    n_jobs = len(res["config"]["deploy"]["deltas"]) * res["config"]["deploy"]["seeds"]
    assert ex.submitted.count("deploy_job") == n_jobs
    assert res["executor"]["kind"] == "_RecordingExecutor"
    assert res["executor"]["workers"] == 2
    if budget is None:
        assert meta_jobs and res["executor"]["meta_training"] == "_RecordingExecutor"
    else:
        assert meta_jobs == [] and res["executor"]["meta_training"] == "serial"
    import json

    assert json.loads((tmp_path / "results.json").read_text())["executor"] == \
        res["executor"]


# ---------------------------------------------------------------------- kill and resume
QUICK = ("--quick", "--no-progress", "--budget", "none", "--set", "meta.steps=12",
         "--set", "baselines.steps=40", "--set", "deploy.trials=150")


def _cli(out, *extra):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "neuro_meta.cli", "run", "bandit",
                             "--out", str(out), *QUICK, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_regrets(tmp_path):
    """Issue acceptance 3: ``kill -9`` during CML meta-training, after meta-training and
    during deployment, resuming each time: the same regrets as one uninterrupted run
    (step-bound meta-training: deterministic)."""
    import json
    import os
    import signal
    import time

    from neuro_meta import checkpoint as ckpt

    p = _cli(tmp_path / "ref")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    out = tmp_path / "killed"

    def reached(stage):
        try:
            if stage == 0:
                return ckpt.load(out / "cml_dual_checkpoint.npz")["step"] >= 4
            if stage == 1:
                return "maml" in ckpt.load(out / "meta_params.npz")["methods"]
            return len(ckpt.load(out / "deploy_checkpoint.npz")["jobs"]) >= 1
        except ckpt.CheckpointError:
            return False

    killed = []
    for stage in range(3):
        p = _cli(out, "--resume")
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not reached(stage):
            time.sleep(0.01)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        killed.append(p.returncode == -signal.SIGKILL and reached(stage))
    assert killed == [True, True, True]         # each of the three stages was interrupted
    assert len(ckpt.load(out / "deploy_checkpoint.npz")["jobs"]) < 4
    p = _cli(out, "--resume")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    res = json.loads((out / "results.json").read_text())
    assert res["deploy"] == ref["deploy"] and res["curves"] == ref["curves"]


@pytest.mark.parametrize("loss", ["masked_squared_error", "cross_entropy"])
def test_dual_system_loss_through_the_protocol(loss, rng):
    """``DualSystem(loss=...)``: the force of the learning process (``data_grad``) is the
    gradient of the loss the kind reports (``loss_value``), by finite differences."""
    net = nm.DualSystem([2, 4, 3, 5], seed=1, loss=loss, gain=nm.init.Uniform(0.8, 1.2))
    assert net.loss is get_loss(loss) and loss in repr(net)
    x = rng.normal(size=(2, 7, 2))
    if loss == "cross_entropy":
        y = np.eye(5)[rng.integers(0, 5, (2, 7))]
    else:
        y = _y(rng, S=7)[1]
    phi = [np.broadcast_to(p, (2,) + p.shape) + 0.1 * rng.normal(size=(2,) + p.shape)
           for p in net.phi0]
    g = net.data_grad(phi, x, y)
    d = [rng.normal(size=p.shape) for p in phi]
    h = 1e-6
    fd = (net.loss_value(x, y, [p + h * e for p, e in zip(phi, d)])
          - net.loss_value(x, y, [p - h * e for p, e in zip(phi, d)])) / (2 * h)
    an = sum((a * e).reshape(2, -1).sum(-1) for a, e in zip(g, d))
    np.testing.assert_allclose(an, fd, rtol=1e-6)
    with pytest.raises(ValidationError, match="DualSystem.loss: must be one of"):
        nm.DualSystem([2, 4, 5], loss="hinge")


def test_a_damaged_checkpoint_is_refused_before_meta_training(tmp_path, monkeypatch):
    """--resume with a damaged MAML checkpoint: refused before the CML methods ahead of
    MAML spend their meta-training (it used to be refused only at MAML's turn)."""
    from neuro_meta import checkpoint as ckpt
    from neuro_meta.metatrain import MetaTrainer

    (tmp_path / "maml_checkpoint.npz").write_bytes(b"damaged")
    monkeypatch.setattr(MetaTrainer, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ckpt.CheckpointError, match=r"maml_checkpoint\.npz: not a readable"):
        bandit.run(tmp_path, quick=True, methods="cml_dual,maml", progress=False,
                   resume=True)
