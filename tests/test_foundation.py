"""The foundation (issue 2): rate networks with complex synapses learning in continuous
time, checked against closed forms and independent references.

Every reference here is computed in the test from the equations of design.md /
paper-notes.md with numpy/scipy -- never with the package's own dynamics code and never
from numbers the package produced earlier:

    τ_v dv/dt = −v + W r_pre + b
    τ_φ dφ/dt = −∂L_trn/∂φ − λ(φ − ω),     L_trn = 1/(2K) Σ_k ‖ŷ_k − y_k‖²
"""
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import neuro_meta as nm



def report(name, **numbers):
    """Print measured numbers (visible with ``pytest -s``)."""
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        return f"{float(v):.4g}" if isinstance(v, (float, np.floating)) else str(v)
    print(f"\n[{name}] " + ", ".join(f"{k}={fmt(v)}" for k, v in numbers.items()))


# ============================================================== 1. closed-form fixed point
def test_contract_runs_verbatim_and_settles_at_closed_form(ridge_fixed_point):
    # --- the contract of issue 2, verbatim ---
    import numpy as np
    import neuro_meta as nm

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False,
                         synapse=nm.ComplexSynapse(omega=rng.normal(size=(2, 5)), lam=0.5))
    learner = nm.Learner(rule="delta", presentation="batch", tol=1e-10)
    res = learner.run(net, x, y, record=["phi"])
    phi = res.phi[0]                  # settled fast weights of connection 0, shape (2, 5)
    trace = res.record["phi"][0]      # shape (time, 2, 5)
    # --- end of the contract ---

    again = np.random.default_rng(0)    # redraw ω exactly as the contract did
    np.testing.assert_array_equal(again.normal(size=(10, 5)), x)
    np.testing.assert_array_equal(again.normal(size=(10, 2)), y)
    omega = again.normal(size=(2, 5))
    expected = ridge_fixed_point(x, y, omega, 0.5)
    err = np.abs(phi - expected).max()
    report("contract", max_abs_err=err, t_end=res.t_end, steps=res.steps)
    assert phi.shape == (2, 5)
    assert trace.ndim == 3 and trace.shape[1:] == (2, 5) and trace.shape[0] == len(res.t)
    assert res.settled is True
    assert err <= 1e-8
    # the trace starts at φ₀ = ω and ends at the returned φ
    np.testing.assert_array_equal(trace[0], omega)
    np.testing.assert_array_equal(trace[-1], phi)


def test_fixed_point_per_synapse_lam(linear_task, rng, ridge_fixed_point):
    x, y, omega = linear_task
    lam = rng.uniform(0.2, 2.0, size=(2, 5))
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam))
    # RK4's fixed points are exactly the ODE's, so a coarse dt is fine here
    res = nm.Learner(rule="delta", tol=1e-12, dt=0.1).run(net, x, y)
    err = np.abs(res.phi[0] - ridge_fixed_point(x, y, omega, lam)).max()
    report("fixed point, per-synapse λ", max_abs_err=err)
    assert res.settled is True
    assert err <= 1e-8


@pytest.mark.parametrize("lam_bias", [None, 0.8])
def test_fixed_point_with_bias(linear_task, rng, ridge_fixed_point, augment, lam_bias):
    x, y, omega = linear_task
    lam = rng.uniform(0.2, 2.0, size=(2, 5))
    omega_b = rng.normal(size=2)
    net = nm.RateNetwork([5, 2], activation="linear", bias=True, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam, omega_bias=omega_b,
                                                   lam_bias=lam_bias))
    res = nm.Learner(rule="delta", tol=1e-12, dt=0.1).run(net, x, y)
    # documented default: lam_bias = mean(lam) when lam is an array
    lb = np.full(2, lam.mean() if lam_bias is None else lam_bias)
    expected = ridge_fixed_point(augment(x), y, np.c_[omega, omega_b], np.c_[lam, lb])
    err = max(np.abs(res.phi[0] - expected[:, :5]).max(),
              np.abs(res.bias[0] - expected[:, 5]).max())
    report(f"fixed point with bias (lam_bias={lam_bias})", max_abs_err=err)
    assert err <= 1e-8


def test_fixed_point_with_task_axis(rng, ridge_fixed_point):
    B, K = 3, 6
    x, y = rng.normal(size=(B, K, 4)), rng.normal(size=(B, K, 3))
    omega = rng.normal(size=(3, 4))
    net = nm.RateNetwork([4, 3], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=0.7))
    res = nm.Learner(rule="delta", tol=1e-12, dt=0.1).run(net, x, y)
    assert res.phi[0].shape == (B, 3, 4)
    assert res.settled.shape == (B,) and res.settled.all()
    for b in range(B):
        err = np.abs(res.phi[0][b] - ridge_fixed_point(x[b], y[b], omega, 0.7)).max()
        assert err <= 1e-8


# ============================================================== 2. learning off: decay
@pytest.mark.parametrize("tau_neuron, tau, dt, lam_max", [
    (0.0, 0.5, 0.002, 2.0),      # instantaneous neurons, stiff synapses, fine step
    (0.02, 0.5, 0.002, 2.0),     # dynamic neurons (they stay at rest: no input)
    (0.0, 1.0, None, 1.0),       # the default time step
])
def test_decay_to_omega_without_data(rng, tau_neuron, tau, dt, lam_max):
    """With zero input rates the data gradient vanishes: φ = ω + (φ₀−ω) e^{−λt/τ_φ}."""
    omega, phi0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    lam = rng.uniform(0.2, lam_max, size=(3, 4))
    net = nm.RateNetwork([4, 3], activation="tanh", bias=False, tau_neuron=tau_neuron,
                         tau_synapse=tau,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam, phi0=phi0))
    x, y = np.zeros((3, 4)), rng.normal(size=(3, 3))
    res = nm.Learner(rule="delta", integrator="rk4", dt=dt, duration=2 * tau).run(
        net, x, y, record=["phi"])
    t = res.t
    assert t[0] == 0.0 and np.isclose(t[-1], 2 * tau) and len(t) == res.steps + 1 > 10
    # relative to the remaining deviation from ω (stricter than relative to φ)
    exact_dev = (phi0 - omega) * np.exp(-lam * t[:, None, None] / tau)
    rel = np.abs(res.record["phi"][0] - omega - exact_dev) / np.abs(exact_dev)
    report(f"decay, tau_neuron={tau_neuron}, dt={dt}", max_rel_err=rel.max(), steps=res.steps)
    assert rel.max() <= 1e-6


# ============================================================== 3. vs solve_ivp
def _tanh_net_spec(rng, n=(3, 4, 2)):
    """Per-connection arrays (ω, λ, φ₀ weights, ω bias, λ bias) for a tanh net."""
    spec = []
    for n_pre, n_post in zip(n[:-1], n[1:]):
        spec.append(dict(omega=rng.normal(scale=0.8, size=(n_post, n_pre)),
                         lam=rng.uniform(0.1, 1.0, size=(n_post, n_pre)),
                         phi0=rng.normal(scale=0.8, size=(n_post, n_pre)),
                         omega_bias=rng.normal(scale=0.3, size=n_post),
                         lam_bias=rng.uniform(0.1, 1.0, size=n_post)))
    return spec


def _tanh_net(spec, sizes, tau_neuron, tau_synapse):
    return nm.RateNetwork(sizes, activation="tanh", bias=True, tau_neuron=tau_neuron,
                          tau_synapse=tau_synapse,
                          synapse=[nm.ComplexSynapse(**s) for s in spec])


def _reference_tanh_ode(spec, X, Y, tau_v, tau_phi, t_eval):
    """The learning process of a 2-layer tanh net with biases, batch presentation and
    backprop, written out by hand and integrated with solve_ivp (DOP853, rtol 1e-10).

    Returns a dict of trajectories: W1, b1, W2, b2 (time, ...) and V1, V2 (time, K, n).
    """
    K, n0 = X.shape
    (s1, s2) = spec
    n1, n2 = s1["omega"].shape[0], s2["omega"].shape[0]
    # augmented matrices [W | b]: the bias is a synapse from a unit of rate 1
    Om1, Om2 = np.c_[s1["omega"], s1["omega_bias"]], np.c_[s2["omega"], s2["omega_bias"]]
    La1, La2 = np.c_[s1["lam"], s1["lam_bias"]], np.c_[s2["lam"], s2["lam_bias"]]
    A1, A2 = np.c_[s1["phi0"], s1["omega_bias"]], np.c_[s2["phi0"], s2["omega_bias"]]
    Xa = np.c_[X, np.ones(K)]
    sizes = [A1.size, A2.size, K * n1, K * n2]
    cuts = np.cumsum(sizes)[:-1]

    def unpack(z):
        a1, a2, v1, v2 = np.split(z, cuts)
        return (a1.reshape(n1, n0 + 1), a2.reshape(n2, n1 + 1), v1.reshape(K, n1),
                v2.reshape(K, n2))

    def rhs(t, z):
        a1, a2, v1, v2 = unpack(z)
        r1 = np.tanh(v1)
        r1a = np.c_[r1, np.ones(K)]
        r2 = np.tanh(v2)
        dv1 = (-v1 + Xa @ a1.T) / tau_v
        dv2 = (-v2 + r1a @ a2.T) / tau_v
        d2 = (Y - r2) * (1 - r2 ** 2) / K              # −∂L/∂v2 per shot
        d1 = (d2 @ a2[:, :n1]) * (1 - r1 ** 2)           # backpropagated
        da2 = (d2.T @ r1a - La2 * (a2 - Om2)) / tau_phi
        da1 = (d1.T @ Xa - La1 * (a1 - Om1)) / tau_phi
        return np.concatenate([da1.ravel(), da2.ravel(), dv1.ravel(), dv2.ravel()])

    # neurons start at their steady state for the initial weights
    v1_0 = Xa @ A1.T
    v2_0 = np.c_[np.tanh(v1_0), np.ones(K)] @ A2.T
    z0 = np.concatenate([A1.ravel(), A2.ravel(), v1_0.ravel(), v2_0.ravel()])
    sol = solve_ivp(rhs, (0.0, t_eval[-1]), z0, method="DOP853", t_eval=t_eval,
                    rtol=1e-10, atol=1e-12)
    assert sol.success
    parts = [unpack(sol.y[:, k]) for k in range(sol.y.shape[1])]
    a1, a2, v1, v2 = (np.stack(p) for p in zip(*parts))
    return dict(W1=a1[..., :n0], b1=a1[..., n0], W2=a2[..., :n1], b2=a2[..., n1],
                V1=v1, V2=v2)


def _max_traj_err(res, ref):
    rec = res.record
    return max(np.abs(rec["phi"][0] - ref["W1"]).max(), np.abs(rec["bias"][0] - ref["b1"]).max(),
               np.abs(rec["phi"][1] - ref["W2"]).max(), np.abs(rec["bias"][1] - ref["b2"]).max(),
               np.abs(rec["v"][0] - ref["V1"]).max(), np.abs(rec["v"][1] - ref["V2"]).max())


@pytest.mark.parametrize("integrator", ["rk4", "scipy"])
def test_trajectory_matches_solve_ivp(rng, integrator):
    sizes, K, tau_v, tau_phi = (3, 4, 2), 6, 0.05, 0.5
    spec = _tanh_net_spec(rng, sizes)
    X, Y = rng.normal(size=(K, 3)), rng.uniform(-0.8, 0.8, size=(K, 2))
    net = _tanh_net(spec, list(sizes), tau_v, tau_phi)
    learner = nm.Learner(rule="backprop", presentation="batch", integrator=integrator,
                         dt=0.0025, duration=1.0)
    res = learner.run(net, X, Y, record=["phi", "bias", "v"], record_every=4)
    ref = _reference_tanh_ode(spec, X, Y, tau_v, tau_phi, np.asarray(res.t))
    err = _max_traj_err(res, ref)
    moved = np.abs(ref["W1"][-1] - ref["W1"][0]).max()
    report(f"vs solve_ivp ({integrator})", max_abs_err=err, n_times=len(res.t),
           W1_moved=float(moved))
    assert moved > 0.05          # the trajectory is not trivial
    assert err <= 1e-5


# ============================================================== 4. convergence order
def _linear_closed_form(x, y, omega, lam, phi0, tau, t):
    """Exact φ(t) of the linear single-layer learning process (instantaneous neurons):
    τ dφ/dt = −(φ − φ*) M with M = XᵀX/K + λI (scalar λ),
    so φ(t) = φ* + (φ₀ − φ*) e^{−Mt/τ}."""
    K = x.shape[0]
    M = x.T @ x / K + lam * np.eye(x.shape[1])
    phi_star = np.linalg.solve(M, (y.T @ x / K + lam * omega).T).T
    return phi_star + (phi0 - phi_star) @ expm(-M * t / tau)


@pytest.mark.parametrize("integrator, order", [("euler", 1), ("expeuler", 1), ("rk4", 4)])
def test_convergence_order_linear(linear_task, rng, integrator, order):
    x, y, omega = linear_task
    phi0, lam, tau, T = rng.normal(size=(2, 5)), 0.6, 1.0, 2.0
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         tau_synapse=tau,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam, phi0=phi0))
    exact = _linear_closed_form(x, y, omega, lam, phi0, tau, T)
    errs = []
    for dt in (0.1, 0.05, 0.025):
        res = nm.Learner(rule="delta", integrator=integrator, dt=dt, duration=T).run(net, x, y)
        assert np.isclose(res.t_end, T)
        errs.append(np.abs(res.phi[0] - exact).max())
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    report(f"order, linear, {integrator}", errors=errs, ratios=ratios)
    for r in ratios:
        assert 2 ** order * 0.85 <= r <= 2 ** order * 1.15


@pytest.mark.parametrize("integrator, order", [("euler", 1), ("expeuler", 1), ("rk4", 4)])
def test_convergence_order_dynamic_neurons(rng, integrator, order):
    """Nonlinear tanh net with dynamic neurons and backprop, against the hand-written ODE."""
    sizes, K, tau_v, tau_phi, T = (3, 4, 2), 5, 0.1, 0.5, 0.4
    spec = _tanh_net_spec(rng, sizes)
    X, Y = rng.normal(size=(K, 3)), rng.uniform(-0.8, 0.8, size=(K, 2))
    net = _tanh_net(spec, list(sizes), tau_v, tau_phi)
    ref = _reference_tanh_ode(spec, X, Y, tau_v, tau_phi, np.array([0.0, T]))
    dts = (0.01, 0.005, 0.0025) if order == 1 else (0.04, 0.02, 0.01)
    errs = []
    for dt in dts:
        res = nm.Learner(rule="backprop", integrator=integrator, dt=dt, duration=T).run(
            net, X, Y)
        errs.append(max(np.abs(res.phi[0] - ref["W1"][-1]).max(),
                        np.abs(res.phi[1] - ref["W2"][-1]).max(),
                        np.abs(res.bias[1] - ref["b2"][-1]).max(),
                        np.abs(res.v[1] - ref["V2"][-1]).max()))
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    report(f"order, dynamic neurons, {integrator}", errors=errs, ratios=ratios)
    for r in ratios:
        assert 2 ** order * 0.8 <= r <= 2 ** order * 1.2


# ============================================================== 5. online → batch
def test_online_approaches_batch_fixed_point(linear_task, ridge_fixed_point):
    x, y, omega = linear_task
    K, lam = x.shape[0], 1.0
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=lam))
    batch = ridge_fixed_point(x, y, omega, lam)
    finals, dists, avg_dists = [], [], []
    t_ps = (0.04, 0.02, 0.01)
    for t_p in t_ps:
        cycle_steps = int(round(K * t_p / 0.005))
        res = nm.Learner(rule="delta", presentation="online", presentation_time=t_p,
                         dt=0.005, duration=20.0).run(net, x, y, record=["phi"])
        assert res.steps % cycle_steps == 0         # ends on a cycle boundary
        finals.append(res.phi[0])
        dists.append(np.abs(res.phi[0] - batch).max())
        # time average over the last full cycle (trapezoid rule on the recorded steps)
        last = res.record["phi"][0][-cycle_steps - 1:]
        avg = 0.5 * (last[1:] + last[:-1]).mean(axis=0)
        avg_dists.append(np.abs(avg - batch).max())
    ratios = [dists[i] / dists[i + 1] for i in range(2)]
    avg_ratios = [avg_dists[i] / avg_dists[i + 1] for i in range(2)]
    # the error is a·T_p + O(T_p²): Richardson extrapolation to T_p → 0 must land on the
    # batch fixed point much closer than any single run (a wrong online gain fails here)
    extrap_err = np.abs(2 * finals[2] - finals[1] - batch).max()
    report("online -> batch", presentation_times=list(t_ps),
           dist_cycle_end=dists, ratios=ratios, dist_cycle_avg=avg_dists,
           avg_ratios=avg_ratios, richardson_err=extrap_err)
    assert dists[0] > dists[1] > dists[2]
    for r in ratios + avg_ratios:         # first order in the presentation time
        assert 1.6 <= r <= 2.4
    assert extrap_err < 0.1 * dists[-1]
    assert dists[-1] < 0.05


# ============================================================== 6. backprop = −∇L_trn
@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_backprop_signal_equals_finite_differences(rng, lam):
    K = 7
    net = nm.RateNetwork([3, 4, 2], activation="tanh", bias=True, tau_neuron=0.01,
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.8), lam=lam,
                                                   omega_bias=nm.init.Normal(0.3)),
                         seed=3)
    x, y = rng.normal(size=(1, K, 3)), rng.uniform(-0.9, 0.9, size=(1, K, 2))
    # evaluate away from ω, where the consolidation term does not vanish
    phi = [c.omega[None] + rng.normal(scale=0.5, size=(1,) + c.shape)
           for c in net.connections]
    omega = [c.omega for c in net.connections]

    def inner_loss(ph):
        out = net.predict(x, ph)
        l_trn = 0.5 * ((out - y) ** 2).sum(axis=-1).mean()
        return l_trn + sum(0.5 * lam * ((p - o) ** 2).sum() for p, o in zip(ph, omega))

    dyn = net.dynamics("backprop")
    v = dyn.steady_v(phi, x)
    signal = dyn.plasticity(phi, v, x, y, np.full((1, K), 1.0 / K))

    h = 1e-5
    worst = 0.0
    for l, p in enumerate(phi):
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus = [q.copy() for q in phi]
            minus = [q.copy() for q in phi]
            plus[l][idx] += h
            minus[l][idx] -= h
            fd[idx] = -(inner_loss(plus) - inner_loss(minus)) / (2 * h)
        rel = np.abs(signal[l] - fd).max() / np.abs(fd).max()
        worst = max(worst, rel)
    report(f"backprop vs finite differences (lam={lam})", max_rel_err=worst)
    assert worst <= 1e-6


def test_delta_signal_equals_finite_differences(rng):
    """Single layer: the local delta rule is the exact gradient too (sigmoid, biases)."""
    K = 5
    net = nm.RateNetwork([4, 3], activation="sigmoid", bias=True, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=0.0, lam=0.0))
    x, y = rng.normal(size=(1, K, 4)), rng.uniform(0.1, 0.9, size=(1, K, 3))
    phi = [rng.normal(size=(1, 3, 5))]
    dyn = net.dynamics("delta")
    signal = dyn.plasticity(phi, dyn.steady_v(phi, x), x, y, np.full((1, K), 1.0 / K))[0]

    def loss(p):
        return 0.5 * ((net.predict(x, [p]) - y) ** 2).sum(axis=-1).mean()

    h, fd = 1e-5, np.zeros_like(phi[0])
    for idx in np.ndindex(fd.shape):
        e = np.zeros_like(fd)
        e[idx] = h
        fd[idx] = -(loss(phi[0] + e) - loss(phi[0] - e)) / (2 * h)
    assert np.abs(signal - fd).max() / np.abs(fd).max() <= 1e-6


# ============================================================== 7. batched = single
@pytest.mark.parametrize("presentation", ["batch", "online"])
@pytest.mark.parametrize("integrator", ["rk4", "euler"])
def test_batched_tasks_equal_single_runs(rng, presentation, integrator):
    B, K, sizes = 3, 4, (3, 4, 2)
    spec = _tanh_net_spec(rng, sizes)
    net = _tanh_net(spec, list(sizes), 0.05, 0.5)
    X, Y = rng.normal(size=(B, K, 3)), rng.uniform(-0.8, 0.8, size=(B, K, 2))
    learner = nm.Learner(rule="backprop", presentation=presentation, integrator=integrator,
                         dt=0.005, duration=0.4, presentation_time=(
                             0.02 if presentation == "online" else None))
    rec = ["phi", "bias", "v", "loss"]
    together = learner.run(net, X, Y, record=rec, record_every=5)
    worst = 0.0
    for b in range(B):
        alone = learner.run(net, X[b], Y[b], record=rec, record_every=5)
        pairs = [(together.phi[l][b], alone.phi[l]) for l in range(2)]
        pairs += [(together.bias[l][b], alone.bias[l]) for l in range(2)]
        pairs += [(together.v[l][b], alone.v[l]) for l in range(2)]
        pairs += [(together.record[k][l][:, b], alone.record[k][l])
                  for k in ("phi", "bias", "v") for l in range(2)]
        pairs += [(together.record["loss"][:, b], alone.record["loss"])]
        for a, s in pairs:
            assert a.shape == s.shape
            worst = max(worst, np.abs(a - s).max())
    report(f"batched vs single ({presentation}, {integrator})", max_abs_diff=worst)
    assert worst <= 1e-12


# ============================================================== 9. results and recording
def test_results_are_read_only(linear_task):
    x, y, omega = linear_task
    net = nm.RateNetwork([5, 2], activation="linear", bias=True, tau_neuron=0.01,
                         synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    res = nm.Learner(duration=0.1, dt=0.01).run(net, x, y, record=["phi", "bias", "v", "r",
                                                                    "loss"])
    arrays = [res.phi[0], res.bias[0], res.v[0], res.t, res.record["phi"][0],
              res.record["bias"][0], res.record["v"][0], res.record["r"][0],
              res.record["loss"]]
    for a in arrays:
        with pytest.raises(ValueError):
            a[(0,) * a.ndim] = 1.0
    with pytest.raises(ValueError):
        res.phi[0][0] = 0.0
    with pytest.raises(ValueError):
        res.phi[0][...] += 1.0
    # the network's own parameters cannot be changed through the result either
    assert not net.connections[0].omega.flags.writeable


def test_record_shapes_and_values(linear_task, rng):
    x, y, omega = linear_task
    net = nm.RateNetwork([5, 2], activation="tanh", bias=True, tau_neuron=0.02,
                         synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    learner = nm.Learner(duration=0.2, dt=0.01)
    res = learner.run(net, x, y, record=["phi", "bias", "v", "r", "loss"])
    n_t = len(res.t)
    assert n_t == 21
    assert res.record["phi"][0].shape == (n_t, 2, 5)
    assert res.record["bias"][0].shape == (n_t, 2)
    assert res.record["v"][0].shape == (n_t, 10, 2)
    assert res.record["loss"].shape == (n_t,)
    # r = f(v) and the recorded loss is L_trn at the recorded weights
    np.testing.assert_allclose(res.record["r"][0], np.tanh(res.record["v"][0]), rtol=0,
                               atol=1e-15)
    for k in (0, 7, n_t - 1):
        w, b = res.record["phi"][0][k], res.record["bias"][0][k]
        loss = 0.5 * ((np.tanh(x @ w.T + b) - y) ** 2).sum(axis=1).mean()
        assert abs(res.record["loss"][k] - loss) <= 1e-12

    # with a task axis
    B = 3
    xb, yb = rng.normal(size=(B, 10, 5)), rng.normal(size=(B, 10, 2))
    resb = learner.run(net, xb, yb, record=["phi", "v", "loss"])
    assert resb.record["phi"][0].shape == (n_t, B, 2, 5)
    assert resb.record["v"][0].shape == (n_t, B, 10, 2)
    assert resb.record["loss"].shape == (n_t, B)
    assert resb.phi[0].shape == (B, 2, 5) and resb.bias[0].shape == (B, 2)


@pytest.mark.parametrize("every", [1, 3, 7, 100, 1000])
def test_record_every_decimates(linear_task, every):
    x, y, omega = linear_task
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    learner = nm.Learner(duration=1.0, dt=0.01)        # 100 steps
    full = learner.run(net, x, y, record=["phi"])
    dec = learner.run(net, x, y, record=["phi"], record_every=every)
    steps = list(range(0, 101, every))
    if steps[-1] != 100:
        steps.append(100)                               # the final state is always kept
    assert len(dec.t) == len(steps) == dec.record["phi"][0].shape[0]
    np.testing.assert_allclose(dec.t, np.array(steps) * 0.01, rtol=0, atol=1e-12)
    # decimation picks samples of the same trajectory; it does not change the dynamics
    np.testing.assert_array_equal(dec.record["phi"][0], full.record["phi"][0][steps])
    np.testing.assert_array_equal(dec.phi[0], full.phi[0])


def test_brian2_quantities_are_accepted_for_times(linear_task):
    brian2 = pytest.importorskip("brian2")
    x, y, omega = linear_task
    syn = nm.ComplexSynapse(omega=omega, lam=0.5)
    net_q = nm.RateNetwork([5, 2], activation="linear", bias=False, synapse=syn,
                           tau_neuron=10 * brian2.ms, tau_synapse=1 * brian2.second)
    net_f = nm.RateNetwork([5, 2], activation="linear", bias=False, synapse=syn,
                           tau_neuron=0.01, tau_synapse=1.0)
    assert net_q.tau_synapse == 1.0 and abs(net_q.tau_neuron - 0.01) < 1e-15
    lq = nm.Learner(dt=1 * brian2.ms, duration=50 * brian2.ms)
    lf = nm.Learner(dt=0.001, duration=0.05)
    assert abs(lq.dt - 0.001) < 1e-15 and abs(lq.duration - 0.05) < 1e-15
    rq, rf = lq.run(net_q, x, y), lf.run(net_f, x, y)
    assert rq.steps == rf.steps == 50
    np.testing.assert_allclose(rq.phi[0], rf.phi[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda b2: nm.RateNetwork([5, 2], tau_synapse=1 * b2.volt),
    lambda b2: nm.RateNetwork([5, 2], tau_neuron=3 * b2.mV),
    lambda b2: nm.Learner(dt=1 * b2.volt),
    lambda b2: nm.Learner(duration=2 * b2.Hz),
])
def test_brian2_non_time_quantity_refused(make):
    brian2 = pytest.importorskip("brian2")
    with pytest.raises(nm.ValidationError, match="must have units of time") as err:
        make(brian2)
    msg = str(err.value)
    assert any(a in msg for a in ("tau_synapse", "tau_neuron", "dt", "duration"))
    assert any(u in msg for u in ("volt", "mV", "hertz"))


# ============================================================== settling
def test_settling_stops_early_and_warns_when_not_settled(linear_task):
    x, y, omega = linear_task
    net = nm.RateNetwork([5, 2], activation="linear", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    res = nm.Learner(tol=1e-6, dt=0.1).run(net, x, y)
    assert res.settled is True and res.t_end < 1000.0
    # the tolerance is met: |τ_φ dφ/dt| = |∂L_in/∂φ| < tol at the returned φ
    K = x.shape[0]
    grad = (res.phi[0] @ x.T - y.T) @ x / K + 0.5 * (res.phi[0] - omega)
    assert np.abs(grad).max() < 1e-6
    with pytest.warns(nm.NotSettledWarning, match="did not settle.*increase max_duration"):
        res = nm.Learner(tol=1e-10, dt=0.1, max_duration=1.0).run(net, x, y)
    assert res.settled is False and np.isclose(res.t_end, 1.0)
    # the hint names the bound the user gave: here duration, not max_duration
    with pytest.warns(nm.NotSettledWarning, match=r"within 1 s; increase duration or tol"):
        nm.Learner(tol=1e-10, dt=0.1, duration=1.0, settle="integrate").run(net, x, y)


# ============================================================== 10. activations
@pytest.mark.parametrize("name", ["linear", "tanh", "sigmoid", "relu", "softplus"])
def test_activation_derivatives_match_finite_differences(name):
    act = nm.ACTIVATIONS[name]
    v = np.concatenate([np.linspace(-6, -0.05, 40), np.linspace(0.05, 6, 40)])
    h = 1e-5
    d_fd = (act.f(v + h) - act.f(v - h)) / (2 * h)
    d2_fd = (act.df(v + h) - act.df(v - h)) / (2 * h)
    d2_fd_f = (act.f(v + 1e-4) - 2 * act.f(v) + act.f(v - 1e-4)) / 1e-8
    assert np.abs(act.df(v) - d_fd).max() <= 1e-8
    assert np.abs(act.d2f(v) - d2_fd).max() <= 1e-8
    assert np.abs(act.d2f(v) - d2_fd_f).max() <= 1e-5
    assert act.df(v).shape == v.shape and act.d2f(v).shape == v.shape
    # the closed forms, independently
    expected = {"linear": v, "tanh": np.tanh(v), "sigmoid": 1 / (1 + np.exp(-v)),
                "relu": np.where(v > 0, v, 0.0), "softplus": np.log1p(np.exp(v))}[name]
    np.testing.assert_allclose(act.f(v), expected, rtol=1e-12, atol=1e-14)


def test_activations_are_stable_for_large_inputs():
    v = np.array([-800.0, -50.0, 0.0, 50.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for act in nm.ACTIVATIONS.values():
            for fn in (act.f, act.df, act.d2f):
                assert np.isfinite(fn(v)).all()


# ============================================================== reprs
def test_reprs_name_the_model(linear_task):
    x, y, omega = linear_task
    shared = nm.ComplexSynapse(omega=np.ones((3, 3)), lam=0.5)
    net = nm.RateNetwork([5, 3, 3], synapse=[nm.StaticSynapse(weight=0.1), shared])
    text = repr(net)
    assert "RateNetwork(sizes=[5, 3, 3]" in text and "StaticSynapse()" in text
    assert "ComplexSynapse(omega=array(3, 3), lam=0.5)" in text
    one = nm.RateNetwork([5, 2], synapse=nm.ComplexSynapse(omega=omega, lam=0.5))
    assert repr(one).count("ComplexSynapse") == 1
    # a network with other meta-parameters (with_theta) shows those, not its descriptions
    th = one.theta
    th["lam"][0][:], th["lam_bias"][0][:] = 3.0, 3.0
    assert "ComplexSynapse(omega=array(2, 5), lam=3)" in repr(one.with_theta(th))
    th["lam"][0][1, 2] = 0.25
    assert "lam=array(2, 5) in [0.25, 3])" in repr(one.with_theta(th))
    assert "lam=0.5" in repr(one)                       # the original is unchanged
    learner = nm.Learner(rule="delta", duration=0.1, dt=0.01)
    assert "rule='delta'" in repr(learner) and "presentation_time" not in repr(learner)
    assert "presentation_time=0.02" in repr(nm.Learner(rule="delta", presentation="online",
                                                       duration=0.1, dt=0.01,
                                                       presentation_time=0.02))
    res = learner.run(nm.RateNetwork([5, 2], synapse=nm.ComplexSynapse(omega=omega)), x, y)
    assert "steps=10" in repr(res)
