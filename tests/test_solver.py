"""Settling by solving (``Learner(settle="solve")``, :mod:`neuro_meta.engines.solver`)
against settling by integration: the same fixed points, the same CML estimates, and the
work each needs on a stiff process."""
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.engines import solver
from neuro_meta.families import Sinusoid
from neuro_meta.kind import Packer
from neuro_meta.examples.gained_linear import GainedLinear
from neuro_meta.learning import NotSettledWarning


def sinusoid_net(seed=0, lam=1.0, sizes=(1, 20, 20, 1)):
    return nm.RateNetwork(list(sizes), activation=["tanh", "tanh", "linear"], bias=True,
                          tau_neuron=0.0, synapse=nm.ComplexSynapse(omega=nm.init.Glorot(),
                                                                    lam=lam), seed=seed)


def tasks(n=6, seed=1, shots=10, val=10):
    return Sinusoid(shots=shots, val=val).sample(np.random.default_rng(seed), n)


def learners(tol, **kw):
    base = dict(rule="backprop", integrator="expeuler", dt=0.01, tol=tol,
                max_duration=400.0)
    base.update(kw)
    return nm.Learner(**base), nm.Learner(settle="solve", **base)


def residual(net, phi, x, y, c=None):
    """max |∂φ F| per task, from the kind's gradient (independent of both settlings)."""
    g = net.data_grad(phi, x, y, c)
    return np.max([np.abs(gl + lm * (p - om)).reshape(len(p), -1).max(axis=1)
                   for gl, p, lm, om, pl in zip(g, phi, net.lam, net.anchor, net.plastic)
                   if pl], axis=0)


def max_diff(a, b):
    return max(float(np.abs(p - q).max()) for p, q in zip(a, b))


def polish(net, x, y, phi, c=None, steps=3):
    """Newton steps on ``∂φ F = 0`` with a dense Hessian built from the kind's
    Hessian-vector products: the fixed point near ``phi``, exact to rounding."""
    pk = Packer(net, x.shape[0])
    lam, anchor = pk.broadcast(net.lam), pk.broadcast(net.anchor)
    phi = [np.array(p) for p in phi]
    eye = np.broadcast_to(np.eye(pk.P)[:, None, :], (pk.P, pk.B, pk.P))
    for _ in range(steps):
        grad = pk.pack(net.data_grad(phi, x, y, c)) + lam * (pk.pack(phi) - anchor)
        H = np.moveaxis(pk.pack(net.data_hvp(phi, x, y, pk.unpack(eye), c)), 0, -1)
        H = H + lam[:, :, None] * np.eye(pk.P)
        new = pk.unpack(pk.pack(phi) - np.linalg.solve(H, grad[..., None])[..., 0])
        phi = [n if n is not None else p for n, p in zip(new, phi)]
    return phi


def same_fixed_point(net, x, y, a, b, tol, c=None, factor=100):
    """``a`` and ``b`` (settled states) polish to the same fixed point, and each is
    within ``factor * tol`` of it (the state error of a residual below tol)."""
    pa, pb = polish(net, x, y, a, c), polish(net, x, y, b, c)
    assert max_diff(pa, pb) < 1e-11
    assert max_diff(a, pa) < factor * tol and max_diff(b, pb) < factor * tol


# ------------------------------------------------------------------ same fixed point
@pytest.mark.parametrize("substeps", [1, "auto"])
def test_rate_network_same_fixed_point_as_integration(substeps):
    net = sinusoid_net()
    xt, yt, _, _ = tasks().as_batch()
    integ, solve = learners(1e-9, substeps=substeps)
    a, b = integ.run(net, xt, yt), solve.run(net, xt, yt)
    assert b.engine == "solver" and a.engine != "solver"
    assert np.all(a.settled) and np.all(b.settled)
    assert residual(net, b.phi_aug, xt, yt).max() < 1e-9
    same_fixed_point(net, xt, yt, a.phi_aug, b.phi_aug, 1e-9)


def test_delta_rule_same_fixed_point():
    net = nm.RateNetwork([3, 8, 2], activation=["tanh", "linear"], bias=True,
                         synapse=[nm.StaticSynapse(weight=nm.init.Glorot()),
                                  nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5)], seed=3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 7, 3)), rng.normal(size=(4, 7, 2))
    integ, solve = learners(1e-10, rule="delta")
    a, b = integ.run(net, x, y), solve.run(net, x, y)
    assert b.engine == "solver"
    same_fixed_point(net, x, y, a.phi_aug, b.phi_aug, 1e-10)


def test_dual_system_same_fixed_point():
    net = nm.DualSystem([1, 12, 12, 1], fast=["gain", "bias", "readout"], lam=0.3, seed=2)
    xt, yt, _, _ = tasks(4).as_batch()
    integ, solve = learners(1e-7, dt=0.02)
    a, b = integ.run(net, xt, yt), solve.run(net, xt, yt)
    assert b.engine == "solver" and np.all(a.settled)
    same_fixed_point(net, xt, yt, a.phi_aug, b.phi_aug, 1e-7)


def test_own_kind_with_default_hessian_products():
    net = GainedLinear(4, 3, lam=0.7, seed=1)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 9, 4)), rng.normal(size=(5, 9, 3))
    integ, solve = learners(1e-11, rule="backprop")
    a, b = integ.run(net, x, y), solve.run(net, x, y)
    assert b.engine == "solver"
    # the kind is linear: one Newton step after the continuation reaches the minimum
    assert max_diff(a.phi_aug, b.phi_aug) < 1e-10


def test_nudged_phase_same_fixed_point():
    net = sinusoid_net()
    xt, yt, xv, yv = tasks().as_batch()
    integ, solve = learners(1e-9)
    a = integ.run(net, xt, yt, x_val=xv, y_val=yv, beta=0.3)
    b = solve.run(net, xt, yt, x_val=xv, y_val=yv, beta=0.3)
    # the nudged objective: c = 1/K on the shots, beta/V on the validation points
    c = np.concatenate([np.full(xt.shape[:2], 1 / xt.shape[1]),
                        np.full(xv.shape[:2], 0.3 / xv.shape[1])], axis=1)
    X, Y = np.concatenate([xt, xv], 1), np.concatenate([yt, yv], 1)
    assert residual(net, b.phi_aug, X, Y, c).max() < 1e-9
    same_fixed_point(net, X, Y, a.phi_aug, b.phi_aug, 1e-9, c)


# ------------------------------------------------------------------ CML estimates
# a slow mode keeps one integrated nudged phase of the rate network just above 1e-10 at
# 400 s; its estimate still agrees (the solver's phases all settle)
@pytest.mark.filterwarnings("ignore::neuro_meta.NotSettledWarning")
@pytest.mark.parametrize("kind", ["rate", "dual"])
def test_cml_estimates_equal(kind):
    if kind == "rate":
        net, dt = sinusoid_net(), 0.01
    else:
        net, dt = nm.DualSystem([1, 10, 10, 1], fast=["gain", "bias", "readout"], lam=0.5,
                                seed=4), 0.02
    task = tasks(5)
    integ, solve = learners(1e-10, dt=dt, substeps="auto" if kind == "rate" else 1)
    g_i = nm.CML(beta=0.05, estimator="symmetric", learner=integ).meta_gradient(net, task)
    g_s = nm.CML(beta=0.05, estimator="symmetric", learner=solve).meta_gradient(net, task)
    for k in g_i:
        for a, b in zip(g_i[k], g_s[k]):
            if a is None:
                continue
            # the states agree to ~100 tol (see same_fixed_point), divided by 2 beta
            assert np.abs(a - b).max() <= 100 * 1e-10 / (2 * 0.05), k


# ------------------------------------------------------------------ properties
def test_batched_equals_alone():
    net = sinusoid_net()
    xt, yt, _, _ = tasks(5).as_batch()
    _, solve = learners(1e-8)
    together = solve.run(net, xt, yt)
    for b in (0, 3):
        alone = solve.run(net, xt[b:b + 1], yt[b:b + 1])
        for p, q in zip(together.phi_aug, alone.phi_aug):
            np.testing.assert_array_equal(p[b], q[0])


def test_stiff_process_integration_needs_ten_times_more_work():
    """Large inputs make the data curvature large (stiff), a weak pull leaves a slow mode:
    explicit steps are limited by the fast mode and must wait for the slow one."""
    net = nm.RateNetwork([2, 16, 1], activation=["tanh", "linear"], bias=True,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.05), seed=1)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 12, 2)) * np.array([8.0, 0.3])
    y = np.sin(x[..., :1]) + 0.1 * x[..., 1:]
    integ, solve = learners(1e-6, substeps="auto", max_substeps=512, max_duration=2000.0)
    a, b = integ.run(net, x, y), solve.run(net, x, y)
    assert np.all(a.settled) and b.engine == "solver"
    # work in right-hand-side evaluations (an R-operator product costs about two)
    work_int = a.steps * np.asarray(a.substeps)
    work_sol = b.solver["steps"] + 2 * b.solver["hvps"]
    assert np.all(work_int >= 10 * work_sol), (work_int, work_sol)
    # a weak pull (lam = 0.05): the state error of a residual below tol is ~ tol / lam
    same_fixed_point(net, x, y, a.phi_aug, b.phi_aug, 1e-6, factor=1000)


def test_unsettled_tasks_are_integrated_from_where_the_solver_stopped(monkeypatch):
    net = sinusoid_net()
    xt, yt, _, _ = tasks(3).as_batch()
    integ, solve = learners(1e-9)
    monkeypatch.setattr(solver, "MAX_ITER", 2)
    b = solve.run(net, xt, yt)
    assert b.engine.startswith("solver+") and np.all(b.settled)
    same_fixed_point(net, xt, yt, integ.run(net, xt, yt).phi_aug, b.phi_aug, 1e-9)


@pytest.mark.parametrize("case", ["duration", "online", "record"])
def test_phases_without_fixed_point_are_integrated(case):
    net = nm.RateNetwork([1, 5, 1], activation=["tanh", "linear"], seed=0,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=1.0))
    x, y = np.linspace(-1, 1, 4)[:, None], np.zeros((4, 1))
    kw = {"duration": {"duration": 0.5, "tol": None},
          "online": {"presentation": "online", "tol": 1e-3}, "record": {}}[case]
    base = dict(rule="backprop", integrator="expeuler", dt=0.01, max_duration=5.0,
                tol=1e-4)
    base.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotSettledWarning)
        res = nm.Learner(settle="solve", **base).run(
            net, x, y, record=("phi",) if case == "record" else ())
    assert "solver" not in res.engine and res.solver is None


def test_settle_is_validated():
    with pytest.raises(nm.ValidationError, match="settle"):
        nm.Learner(settle="newton")
    with pytest.raises(nm.ValidationError, match="settle"):
        nm.Learner(settle="solve", engine="brian2")


# ------------------------------------------------------------------ conjugate gradients
def _spd_low_rank_plus_diagonal(B=3, P=60, rank=4, seed=0):
    """Systems like the solver's: a low-rank data curvature plus a diagonal shift
    (lambda + 1/h) that spans two decades across the variables."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(B, P, rank))
    d = np.exp(rng.uniform(np.log(0.05), np.log(5.0), size=(B, P)))
    A = U @ np.swapaxes(U, 1, 2) + d[:, :, None] * np.eye(P)
    return A, d, rng.normal(size=(B, P))


@pytest.mark.parametrize("precondition", [False, True])
def test_cg_solves_to_its_tolerance(precondition):
    A, d, b = _spd_low_rank_plus_diagonal()
    rtol = np.array([1e-10, 1e-6, 1e-3])

    def apply(idx, p):
        return np.einsum("bij,bj->bi", A[idx], p)

    x, no_step, products = solver._cg(apply, b, rtol, 500, d if precondition else None)
    exact = np.linalg.solve(A, b[..., None])[..., 0]
    res = np.linalg.norm(b - np.einsum("bij,bj->bi", A, x), axis=1)
    # the stopping test is on the unpreconditioned residual, whatever the preconditioner
    assert np.all(res <= rtol * np.linalg.norm(b, axis=1) * (1 + 1e-9))
    np.testing.assert_allclose(x[0], exact[0], rtol=1e-6, atol=1e-9)   # cond(A) ~ 1e3
    assert not no_step.any() and np.all(products > 0)


def test_jacobi_preconditioner_cuts_products_on_a_spread_shift():
    """With the shift's diagonal as preconditioner the system is I + low rank in the
    scaled variables: CG needs about rank + a few products instead of tens."""
    A, d, b = _spd_low_rank_plus_diagonal(P=200, rank=4)
    rtol = np.full(3, 1e-8)

    def apply(idx, p):
        return np.einsum("bij,bj->bi", A[idx], p)

    _, _, plain = solver._cg(apply, b, rtol, 500)
    _, _, jacobi = solver._cg(apply, b, rtol, 500, d)
    assert np.all(jacobi <= 4 + 4) and np.all(plain >= 3 * jacobi), (plain, jacobi)


def test_cg_stops_at_negative_curvature_with_a_descent_direction():
    P = 5
    A = np.diag([1.0, 2.0, -3.0, 1.0, 1.0])[None]
    b = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]])     # along the negative-curvature direction

    def apply(idx, p):
        return np.einsum("bij,bj->bi", A[idx], p)

    for diag in (None, np.full((1, P), 2.0)):
        x, no_step, _ = solver._cg(apply, b, np.array([1e-12]), 50, diag)
        assert no_step[0] and not x.any()


def test_preconditioning_does_not_move_the_fixed_point(monkeypatch):
    net = nm.RateNetwork([1, 20, 20, 1], activation=["tanh", "tanh", "linear"], bias=True,
                         tau_neuron=0.0, seed=0,
                         synapse=[nm.ComplexSynapse(omega=nm.init.Glorot(), lam=v)
                                  for v in (2.0, 0.5, 0.05)])
    xt, yt, _, _ = tasks(4).as_batch()
    _, solve = learners(1e-9)
    with_p = solve.run(net, xt, yt)
    monkeypatch.setattr(solver, "PRECONDITION", False)
    without = solve.run(net, xt, yt)
    assert with_p.engine == without.engine == "solver"
    same_fixed_point(net, xt, yt, with_p.phi_aug, without.phi_aug, 1e-9, factor=1000)
    assert with_p.solver["hvps"].sum() < without.solver["hvps"].sum()


# -- the not-settled message of a solved phase (issue: "within 1.9e10 s") --------------
@pytest.mark.parametrize("max_duration", [10.0, None])
def test_unsettled_solved_phase_reports_the_users_bound_not_pseudo_time(max_duration):
    """λ = 0 and a loss without a minimum (sigmoid output, target 2): the phase solver's
    steps grow to ~1e8 tau of pseudo-time without settling. The warning gives no time
    beyond the bound the user set (max_duration, or its default 1000 tau), names that
    attribute, and counts the solver's steps."""
    import re

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 5)), np.full((2, 1), 2.0)
    net = nm.RateNetwork([5, 1], activation="sigmoid", bias=False, tau_neuron=0,
                         synapse=nm.ComplexSynapse(omega=0.0, lam=0.0))
    learner = nm.Learner(tol=1e-20, settle="solve", integrator="expeuler", dt=0.1,
                         max_duration=max_duration)
    with pytest.warns(NotSettledWarning) as rec:
        res = learner.run(net, x, y)
    assert res.settled is False and res.solver is not None
    msg = str(rec[0].message)
    bound = max_duration if max_duration is not None else 1000 * net.tau_fast
    times = [float(t) for t in re.findall(r"([-+0-9.eE]+) s\b", msg)]
    assert times and max(times) <= bound * (1 + 1e-9), msg
    assert f"max_duration = {bound:g} s" in msg and "increase max_duration" in msg, msg
    assert f"{res.solver['steps']} step(s) of the phase solver" in msg, msg
    assert ("default 1000 tau" in msg) == (max_duration is None), msg
    assert rec[0].filename == __file__


def test_a_solved_results_repr_says_its_time_is_pseudo_time():
    """A solved phase's ``t_end`` is the solver's pseudo-time (can be 1e10 s): the repr
    says so, an integrated phase's repr does not."""
    net = sinusoid_net()
    xt, yt, _, _ = tasks().as_batch()
    integ, solve = learners(1e-6)
    a, b = integ.run(net, xt, yt), solve.run(net, xt, yt)
    assert "pseudo-time" in repr(b) and f"t_end={b.t_end:.4g} s" in repr(b)
    assert "pseudo-time" not in repr(a) and f"t_end={a.t_end:.4g} s," in repr(a)
