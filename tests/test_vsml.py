"""VSML (LSTM synapses) and antithetic evolution strategies (neuro_meta.vsml).

References are independent of the code under test: a per-synapse, per-time-step loop of
the LSTM written from the equations; the closed-form error of the antithetic estimator
on a quadratic; direct loops for the online read-out baselines.
"""
import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from neuro_meta import optim
from neuro_meta import vsml as V
from neuro_meta.checkpoint import CheckpointError
from neuro_meta.errors import SimulationError, ValidationError


# ---------------------------------------------------------------------- reference loop
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ticks(model, p, h, c, k, a, b, fwd, bwd):
    """The micro-ticks of synapse (a, b) of layer k, in place on h, c; returns its h."""
    S = model.state_size
    hh, cc = h[k][a, b].copy(), c[k][a, b].copy()
    for _ in range(model.micro_ticks):
        z = np.concatenate([fwd, bwd, hh]) @ p["W"] + p["b"]
        i, g, f, o = z[:S], z[S:2 * S], z[2 * S:3 * S], z[3 * S:]
        cc = _sig(f + model.forget_bias) * cc + _sig(i + model.input_bias) * np.tanh(g)
        hh = _sig(o) * np.tanh(cc)
    h[k][a, b], c[k][a, b] = hh, cc
    return hh


def reference_run(model, theta, x, y, cells):
    """One member, one episode, every synapse by itself: x (L, n_in), y (L,), cells per
    layer (n_pre, n_post, S). Written from the module docstring's equations."""
    m = model.msg_size
    p = {k: np.asarray(v) for k, v in model.unpack(theta).items()}
    sizes, nl = model.sizes, len(model.sizes) - 1
    c = [np.array(ci, dtype=float) for ci in cells]
    h = [np.zeros_like(ci) for ci in c]
    fwd_in = [np.zeros((a, m)) for a in sizes[:-1]]
    bwd_in = [np.zeros((b, m)) for b in sizes[1:]]
    logits = []
    for t in range(len(x)):
        fwd_in[0] = np.zeros((sizes[0], m))
        fwd_in[0][:, 0] = x[t]
        for k in range(nl):
            a_n, b_n = sizes[k], sizes[k + 1]
            f_out = np.zeros((a_n, b_n, m))
            b_out = np.zeros((a_n, b_n, m))
            for a in range(a_n):
                for b in range(b_n):
                    hh = _ticks(model, p, h, c, k, a, b, fwd_in[k][a], bwd_in[k][b])
                    f_out[a, b] = hh @ p["W_fwd"] + p["b_fwd"]
                    b_out[a, b] = hh @ p["W_bwd"] + p["b_bwd"]
            fwd = f_out.mean(axis=0)
            if k > 0:
                bwd_in[k - 1] = b_out.mean(axis=1)
            if k < nl - 1:
                fwd_in[k + 1] = fwd
        zt = fwd[:, model.output_channel]
        zt = model.tanh_bound * np.tanh(zt / model.tanh_bound)
        logits.append(zt)
        e = np.exp(zt - zt.max())
        onehot = np.eye(sizes[-1])[y[t]]
        bwd_in[-1] = np.zeros((sizes[-1], m))
        bwd_in[-1][:, 0] = e / e.sum() - onehot
        if model.feed_label:
            bwd_in[-1][:, 1] = onehot
        if model.backward_pass:            # layers in reverse, same forward messages
            for k in reversed(range(nl)):
                a_n, b_n = sizes[k], sizes[k + 1]
                b_out = np.zeros((a_n, b_n, m))
                for a in range(a_n):
                    for b in range(b_n):
                        hh = _ticks(model, p, h, c, k, a, b, fwd_in[k][a], bwd_in[k][b])
                        b_out[a, b] = hh @ p["W_bwd"] + p["b_bwd"]
                if k > 0:
                    bwd_in[k - 1] = b_out.mean(axis=1)
            bwd_in[-1] = np.zeros((sizes[-1], m))
    return np.array(logits)


@pytest.mark.parametrize("sizes,feed_label,backward", [
    ((3, 2), True, False), ((3, 2, 3), True, False), ((2, 3, 2), False, False),
    ((3, 2), True, True), ((3, 2, 3), True, True)])
def test_forward_pass_equals_per_synapse_loop(sizes, feed_label, backward):
    model = V.VSML(sizes, feed_label=feed_label, backward_pass=backward)
    rng = np.random.default_rng(1)
    M, E, L = 2, 2, 5
    theta = np.stack([model.init_theta(s) for s in (3, 4)]) + 0.3 * rng.standard_normal(
        (M, model.n_params))          # larger than the initial values: gates not saturated
    x = rng.standard_normal((M, E, L, sizes[0]))
    y = rng.integers(0, sizes[-1], (M, E, L))
    cells = model.initial_cells(rng, (M, E))
    got = model.run(theta, x, y, cells)
    assert got.shape == (M, E, L, sizes[-1])
    for i in range(M):
        for e in range(E):
            ref = reference_run(model, theta[i], x[i, e], y[i, e], [c[i, e] for c in cells])
            np.testing.assert_allclose(got[i, e], ref, rtol=0, atol=1e-12)
    # online: the prediction at step t depends on the labels of steps < t only
    y2 = y.copy()
    y2[..., 2] = (y2[..., 2] + 1) % sizes[-1]
    got2 = model.run(theta, x, y2, cells)
    np.testing.assert_array_equal(got2[:, :, :3], got[:, :, :3])
    assert np.all(np.abs(got2[:, :, 3:] - got[:, :, 3:]).max(axis=(2, 3)) > 0)


def test_parameter_count_and_layout():
    model = V.VSML((4, 3))
    assert model.n_params == 32 * 64 + 64 + 2 * (16 * 8 + 8) == 2384
    parts = model.unpack(np.arange(model.n_params, dtype=float))
    assert parts["W"].shape == (32, 64) and parts["b_bwd"].shape == (8,)
    assert sum(v.size for v in parts.values()) == model.n_params
    assert model.n_synapses == 12


def test_initial_cells_statistics():
    """Half of c truncated-normal with std 1/sqrt(fan_in) (truncation at 2 std leaves
    0.8796 of it), half zero; h starts at 0 (checked through the reference)."""
    model = V.VSML((25, 40))
    (c,) = model.initial_cells(np.random.default_rng(0), (20,))
    assert c.shape == (20, 25, 40, 16)
    assert np.all(c[..., 8:] == 0)
    r = c[..., :8]
    assert np.abs(r).max() <= 2.0 / 5.0 + 1e-15
    std_trunc = 0.2 * np.sqrt(1 - 2 * 2 * np.exp(-2) / np.sqrt(2 * np.pi)
                              / (2 * 0.5 * (1 + math.erf(2 / np.sqrt(2))) - 1))
    assert abs(r.std() - std_trunc) < 0.01 * std_trunc
    assert abs(r.mean()) < 3 * std_trunc / np.sqrt(r.size)


# ---------------------------------------------------------------------- ES estimator
class Quadratic:
    """f(θ) = ½ θᵀAθ + bᵀθ: ∇f = Aθ + b."""

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        q = rng.standard_normal((n, n))
        self.A = q @ q.T / n + np.eye(n)
        self.b = rng.standard_normal(n)

    def grad(self, theta):
        return self.A @ theta + self.b

    def __call__(self, thetas, seeds):
        return 0.5 * np.einsum("ki,ij,kj->k", thetas, self.A, thetas) + thetas @ self.b


def test_es_error_shrinks_like_inverse_sqrt_population():
    """On a quadratic the antithetic difference is exactly εᵀ∇f, so ĝ = (1/P) Σ εεᵀ ∇f
    and E‖ĝ − ∇f‖² = (n + 1)‖∇f‖² / P (Gaussian ε). Monte Carlo over ES seeds: the
    mean squared error matches this closed form and the RMS error falls like 1/√P."""
    n = 10
    f = Quadratic(n)
    theta = np.linspace(-1, 1, n)
    g = f.grad(theta)
    rms = []
    pops = [4, 16, 64, 256]
    for pairs in pops:
        errs = np.array([np.sum((V.es_gradient(f, theta, 0.1, pairs, seed=s).grad - g) ** 2)
                         for s in range(200)])
        expected = (n + 1) * g @ g / pairs
        # the MC mean of 200 draws: within 5 standard errors of the closed form
        assert abs(errs.mean() - expected) < 5 * errs.std() / np.sqrt(len(errs)) + 1e-12
        rms.append(np.sqrt(errs.mean()))
    slope = np.polyfit(np.log(pops), np.log(rms), 1)[0]
    assert -0.6 < slope < -0.4
    # unbiased: the mean estimate over many seeds approaches ∇f
    mean = np.mean([V.es_gradient(f, theta, 0.1, 64, seed=s).grad for s in range(200)], 0)
    assert np.linalg.norm(mean - g) < 4 * np.sqrt((n + 1) * g @ g / (64 * 200))


def test_es_independent_of_sigma_on_quadratic_and_of_chunking():
    f = Quadratic(6, seed=3)
    theta = np.ones(6)
    a = V.es_gradient(f, theta, 0.05, 9, seed=2, step=5)
    b = V.es_gradient(f, theta, 0.5, 9, seed=2, step=5)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9)        # exact for a quadratic
    for chunks in (2, 4, 9):
        c = V.es_gradient(f, theta, 0.05, 9, seed=2, step=5, chunks=chunks)
        np.testing.assert_array_equal(c.grad, a.grad)
    # a member's noise is its seed's alone: the first pairs of a larger population agree
    big = V.es_gradient(f, theta, 0.05, 12, seed=2, step=5)
    np.testing.assert_array_equal(big.loss_plus[:9], a.loss_plus)


def test_es_trainer_descends_a_quadratic():
    f = Quadratic(5, seed=1)
    tr = V.ESTrainer(f, np.full(5, 3.0), sigma=0.1, pairs=32, optimizer=optim.adam(0.05))
    hist = tr.train(300, progress=False)
    opt = -np.linalg.solve(f.A, f.b)
    assert np.linalg.norm(tr.theta - opt) < 0.1 * np.linalg.norm(np.full(5, 3.0) - opt)
    assert hist.loss[-1] < hist.loss[0]


def test_non_finite_loss_is_a_simulation_error():
    def bad(thetas, seeds):
        return np.full(len(thetas), np.nan)
    with pytest.raises(SimulationError, match="not finite"):
        V.es_gradient(bad, np.zeros(3), 0.1, 2)


# ---------------------------------------------------------------------- executors
def _small_objective():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((60, 4))
    labels = np.repeat(np.arange(6), 10)
    ep = V.OnlineEpisodes(feats, labels, ways=2, length=6)
    return V.VSMLObjective(V.VSML((4, 2)), ep, episodes_per_member=2)


def _train(executor=None, chunks=None, steps=3):
    # 9 pairs = 18 rows: more than MEMBER_BATCH (16) rows, so a chunk's rows are run in
    # several batches and the draw cache is crossed mid-pair-list (chunks of 4/5 pairs)
    assert 2 * 9 > V.MEMBER_BATCH
    obj = _small_objective()
    tr = V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.05, pairs=9, seed=11,
                     executor=executor, chunks=chunks)
    tr.train(steps, progress=False)
    return tr.theta


def test_same_theta_on_serial_processes_and_dask():
    ref = _train()
    np.testing.assert_array_equal(_train(chunks=3), ref)
    np.testing.assert_array_equal(_train(chunks=2), ref)
    with ProcessPoolExecutor(2) as ex:
        np.testing.assert_array_equal(_train(ex, chunks=2), ref)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster) as client:
        np.testing.assert_array_equal(_train(client, chunks=2), ref)
    assert not np.array_equal(ref, _small_objective().model.init_theta(5))


def test_resume_gives_the_same_theta(tmp_path):
    obj = _small_objective()
    ck = tmp_path / "es.npz"

    def trainer():
        return V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.05, pairs=4, seed=1)
    one = trainer()
    one.train(4, progress=False)
    part = trainer()
    part.train(2, progress=False, checkpoint=ck)
    rest = trainer()
    hist = rest.train(4, progress=False, checkpoint=ck, resume=True)
    np.testing.assert_array_equal(rest.theta, one.theta)
    assert hist.step == [1, 2, 3, 4]
    other = V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.1, pairs=4, seed=1)
    with pytest.raises(CheckpointError, match="sigma"):
        other.train(5, progress=False, checkpoint=ck, resume=True)


def test_an_older_checkpoint_with_the_probe_checksum_resumes_if_its_bits_agree(tmp_path):
    """Checkpoints written before optimisers stated their settings hold the bits of one
    probe update as the optimiser's checksum: accepted when today's update gives them,
    refused (naming the optimiser) when not; another optimiser setting is refused."""
    from neuro_meta import checkpoint as ckpt
    from neuro_meta import optim

    ck = tmp_path / "c.npz"

    def trainer(lr=0.025):
        return V.ESTrainer(Quadratic(3), np.ones(3), sigma=0.1, pairs=2, seed=0,
                           optimizer=optim.adam(lr))
    trainer().train(2, progress=False, checkpoint=ck)
    saved = ckpt.load(ck)
    assert saved["fingerprint"]["optimizer"].startswith("settings:")
    with pytest.raises(CheckpointError, match="optimizer"):
        trainer(0.05).train(3, progress=False, checkpoint=ck, resume=True)
    saved["fingerprint"]["optimizer"] = trainer()._optimizer_probe()
    ckpt.save(ck, saved)
    a = trainer()
    a.train(3, progress=False, checkpoint=ck, resume=True)
    b = trainer()
    b.train(3, progress=False)
    np.testing.assert_array_equal(a.theta, b.theta)
    saved["fingerprint"]["optimizer"] = "0123456789abcdef"
    ckpt.save(ck, saved)
    with pytest.raises(CheckpointError, match="optimizer"):
        trainer().train(4, progress=False, checkpoint=ck, resume=True)


def test_resumed_wall_time_counts_the_work_the_checkpoint_kept(tmp_path):
    """``wall_s`` is the wall time of all the work behind the history, evaluations
    included: a first process whose evaluations take 0.5 s each, then a resume -- the
    resumed total is at least the first process's, while the second process alone took a
    fraction of it."""
    import time

    obj = _small_objective()
    ck = tmp_path / "es.npz"

    def trainer():
        return V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.05, pairs=4, seed=1)

    def slow(theta):
        time.sleep(0.5)
        return {"loss": float(np.sum(theta ** 2))}

    first = trainer()
    assert first.wall_s == 0.0 and first.resumed_wall_s == 0.0
    first.train(2, progress=False, checkpoint=ck, evaluate=slow, eval_every=1)
    assert first.resumed_wall_s == 0.0 and first.wall_s >= 1.5     # 3 evaluations
    again = trainer()
    t0 = time.perf_counter()
    again.train(3, progress=False, checkpoint=ck, resume=True,
                evaluate=lambda th: {"loss": 0.0}, eval_every=1)
    alone = time.perf_counter() - t0
    assert again.resumed_wall_s == pytest.approx(first.wall_s, rel=0.05)
    assert 0 < again.wall_s - again.resumed_wall_s <= alone < 0.5 * first.wall_s
    assert again.wall_s >= 0.98 * first.wall_s


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("kw,match", [
    ({"sizes": (4,)}, r"VSML\.sizes"), ({"sizes": (4, 1)}, r"VSML\.sizes\[-1\]"),
    ({"sizes": (4, 2), "msg_size": 1}, r"VSML\.msg_size"),
    ({"sizes": (4, 2), "init_rand_fraction": 1.5}, r"VSML\.init_rand_fraction"),
    ({"sizes": (4, 2), "output_channel": 8}, r"VSML\.output_channel"),
    ({"sizes": (4, 2), "feed_label": 1}, r"VSML\.feed_label"),
    ({"sizes": (4, 2), "backward_pass": "yes"}, r"VSML\.backward_pass"),
    ({"sizes": (4, 2), "tanh_bound": 0.0}, r"VSML\.tanh_bound")])
def test_model_validation(kw, match):
    with pytest.raises(ValidationError, match=match):
        V.VSML(**kw)


def test_input_validation():
    model = V.VSML((3, 2))
    th = model.init_theta(0)[None]
    rng = np.random.default_rng(0)
    cells = model.initial_cells(rng, (1, 1))
    x = np.zeros((1, 1, 4, 3))
    with pytest.raises(ValidationError, match=r"VSML\.run\.y"):
        model.run(th, x, np.full((1, 1, 4), 2), cells)
    with pytest.raises(ValidationError, match=r"VSML\.run\.x"):
        model.run(th, np.zeros((1, 1, 4, 5)), np.zeros((1, 1, 4), int), cells)
    with pytest.raises(ValidationError, match=r"VSML\.run\.theta"):
        model.run(th[:, :10], x, np.zeros((1, 1, 4), int), cells)
    with pytest.raises(ValidationError, match=r"VSML\.run\.cells\[0\]"):
        model.run(th, x, np.zeros((1, 1, 4), int), [np.zeros((1, 1, 3, 3, 16))])
    with pytest.raises(ValidationError, match=r"es_gradient\.sigma"):
        V.es_gradient(Quadratic(2), np.zeros(2), 0.0, 2)
    with pytest.raises(ValidationError, match=r"es_gradient\.executor"):
        V.es_gradient(Quadratic(2), np.zeros(2), 0.1, 2, executor=object())
    with pytest.raises(ValidationError, match=r"OnlineEpisodes\.labels"):
        V.OnlineEpisodes(np.zeros((6, 2)), np.array([0, 0, 1, 1, 2, 2]), ways=4, length=2)
    with pytest.raises(ValidationError, match=r"VSMLObjective\.model\.sizes"):
        V.VSMLObjective(V.VSML((5, 2)), _small_objective().episodes)


def test_episodes_labels_iid_and_seeded():
    """Labels i.i.d. uniform over the ways (frequencies: binomial check), one original
    class per episode label, distinct examples while a class has unseen ones."""
    feats = np.arange(80, dtype=float)[:, None] * np.ones((1, 2))
    labels = np.repeat(np.arange(8), 10)
    ep = V.OnlineEpisodes(feats, labels, ways=3, length=12)
    x, y = ep.sample(np.random.default_rng(0), 400)
    assert x.shape == (400, 12, 2) and y.shape == (400, 12)
    freq = np.bincount(y.ravel(), minlength=3) / y.size
    assert np.all(np.abs(freq - 1 / 3) < 4 * np.sqrt(2 / 9 / y.size))
    # the label at step t is independent of the counts so far: P(y_t = least seen) = 1/3
    least = [np.argmin(np.bincount(y[e, :t], minlength=3)) == y[e, t]
             for e in range(400) for t in range(6, 12)]
    assert abs(np.mean(least) - 1 / 3) < 4 * np.sqrt(2 / 9 / len(least))
    for e in range(50):
        orig = labels[x[e, :, 0].astype(int)]
        for k in range(3):
            assert len(set(orig[y[e] == k])) <= 1
        assert len(set(x[e, :, 0])) == 12          # at most 10 per class: all distinct here
    x2, _ = ep.sample(np.random.default_rng(0), 400)
    np.testing.assert_array_equal(x, x2)


def test_selection_keeps_the_best_evaluated_theta(tmp_path):
    """``select``: θ of the evaluation with the lowest score; it equals the θ of a run
    stopped at that step (every step is seeded), also across a resume."""
    obj = _small_objective()
    scores = iter([3.0, 1.0, 2.0, 5.0, 4.0])

    def evaluate(theta):
        return {"val": next(scores)}

    def trainer():
        return V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.05, pairs=3, seed=2)
    tr = trainer()
    tr.train(4, progress=False, evaluate=evaluate, eval_every=1, select="val",
             checkpoint=tmp_path / "c.npz", checkpoint_every=1)
    assert tr.best_step == 1
    short = trainer()
    short.train(1, progress=False)
    np.testing.assert_array_equal(tr.best_theta, short.theta)
    again = trainer()
    again.train(4, progress=False, checkpoint=tmp_path / "c.npz", resume=True,
                evaluate=evaluate, eval_every=1, select="val")
    assert again.best_step == 1
    np.testing.assert_array_equal(again.best_theta, short.theta)
    with pytest.raises(ValidationError, match=r"ESTrainer\.train\.select"):
        trainer().train(1, progress=False, evaluate=lambda th: {"val": 1.0}, select="nope")


def test_select_needs_evaluate_and_falls_back_to_the_final_theta():
    obj = _small_objective()

    def trainer():
        return V.ESTrainer(obj, obj.model.init_theta(5), sigma=0.05, pairs=3, seed=2)
    with pytest.raises(ValidationError, match=r"ESTrainer\.train\.select: needs evaluate"):
        trainer().train(2, progress=False, select="val")
    with pytest.raises(ValidationError, match=r"ESTrainer\.train\.select: must be"):
        trainer().train(2, progress=False, evaluate=lambda th: {"val": 1.0}, select=1)
    tr = trainer()
    with pytest.warns(RuntimeWarning, match="no evaluation gave a finite"):
        tr.train(2, progress=False, evaluate=lambda th: {"val": float("nan")},
                 eval_every=1, select="val")
    assert tr.best_step == 2
    np.testing.assert_array_equal(tr.best_theta, tr.theta)
    assert not np.array_equal(tr.theta, tr.theta0)


@pytest.mark.parametrize("extra_rows", [1, -1])
def test_objective_must_return_one_loss_per_row(extra_rows):
    """An objective returning 2k±1 losses would pair L+ and L- of different members."""
    f = Quadratic(3)

    def bad(thetas, seeds):
        out = f(thetas, seeds)
        return np.append(out, 0.0) if extra_rows > 0 else out[:-1]
    with pytest.raises(ValidationError, match=r"es_gradient\.objective: must return one "
                                              r"loss per row"):
        V.es_gradient(bad, np.zeros(3), 0.1, 2)


def test_resume_refused_under_other_selection_settings(tmp_path):
    """The checkpoint holds the selection settings (``extra``, eval_every); an objective
    without ``fingerprint()`` is named by its type, so its resume is accepted."""
    ck = tmp_path / "c.npz"

    def ev(theta):
        return {"val": float(theta @ theta)}

    def trainer():
        return V.ESTrainer(Quadratic(3), np.ones(3), sigma=0.1, pairs=2, seed=0)
    trainer().train(2, progress=False, checkpoint=ck, evaluate=ev, eval_every=1,
                    select="val", extra={"val_episodes": 8})
    again = trainer()            # a new Quadratic object: another repr, same type
    again.train(3, progress=False, checkpoint=ck, resume=True, evaluate=ev, eval_every=1,
                select="val", extra={"val_episodes": 8})
    assert again.best_step in (0, 1, 2, 3)
    with pytest.raises(CheckpointError, match=r"extra\.val_episodes"):
        trainer().train(3, progress=False, checkpoint=ck, resume=True, evaluate=ev,
                        eval_every=1, select="val", extra={"val_episodes": 16})
    with pytest.raises(CheckpointError, match=r"extra\.eval_every"):
        trainer().train(3, progress=False, checkpoint=ck, resume=True, evaluate=ev,
                        eval_every=2, select="val", extra={"val_episodes": 8})
    with pytest.raises(ValidationError, match=r"ESTrainer\.train\.extra"):
        trainer().train(1, progress=False, extra=[1])
    fp = V.ESTrainer(_small_objective(), np.zeros(2384)).fingerprint()
    assert fp["objective"].startswith("VSMLObjective(") and "0x" not in fp["objective"]


def test_more_input_checks():
    model = V.VSML((3, 2))
    obj = _small_objective()
    th = obj.model.init_theta(0)[None]
    with pytest.raises(ValidationError, match=r"VSMLObjective\.seeds"):
        obj(th, [3])
    with pytest.raises(ValidationError, match=r"VSMLObjective\.seeds"):
        obj(th, 5)
    with pytest.raises(ValidationError, match=r"online_cross_entropy\.logits"):
        V.online_cross_entropy(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(ValidationError, match=r"online_cross_entropy\.y"):
        V.online_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValidationError, match=r"online_cross_entropy\.y"):
        V.online_cross_entropy(np.zeros((2, 3)), np.array([0, -1]))
    with pytest.raises(ValidationError, match=r"online_cross_entropy\.y"):
        V.online_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValidationError, match=r"online_cross_entropy\.y"):
        V.online_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValidationError, match=r"softmax\.z"):
        V.softmax(np.array([np.inf, 0.0]))
    # closed form: uniform logits -> ln N
    np.testing.assert_allclose(V.online_cross_entropy(np.zeros((2, 4)), np.array([1, 3])),
                               np.log(4), rtol=1e-15)
    rng = np.random.default_rng(0)
    with pytest.raises(ValidationError, match=r"VSML\.initial_cells\.lead"):
        model.initial_cells(rng, 3)
    with pytest.raises(ValidationError, match=r"VSML\.initial_cells\.lead\[0\]"):
        model.initial_cells(rng, (-1,))
    p = model.unpack(model.init_theta(0)[None])
    h = np.zeros((1, 1, 3, 2, 16))
    fwd, bwd = np.zeros((1, 1, 3, 8)), np.zeros((1, 1, 2, 8))
    with pytest.raises(ValidationError, match=r"VSML\.lstm_step\.h"):
        model.lstm_step(p, fwd, bwd, h[..., :4], h)
    with pytest.raises(ValidationError, match=r"VSML\.lstm_step\.bwd"):
        model.lstm_step(p, fwd, fwd, h, h)
    with pytest.raises(ValidationError, match=r"VSML\.lstm_step\.c"):
        model.lstm_step(p, fwd, bwd, h, np.full_like(h, np.nan))
    with pytest.raises(ValidationError, match=r"VSML\.lstm_step\.p"):
        model.lstm_step({"W": 1}, fwd, bwd, h, h)
    h2, c2 = model.lstm_step(p, fwd, bwd, h, h)
    assert h2.shape == c2.shape == h.shape


def test_episodes_show_every_example_before_repeating():
    """The k-th occurrence of a class shows element k of a permutation of its examples,
    tiled: with 3 examples per class, occurrences 0-2, 3-5, ... are each all distinct."""
    feats = np.arange(12, dtype=float)[:, None]
    labels = np.repeat(np.arange(4), 3)
    ep = V.OnlineEpisodes(feats, labels, ways=2, length=20)
    x, y = ep.sample(np.random.default_rng(3), 200)
    for e in range(200):
        for k in range(2):
            shown = x[e, y[e] == k, 0].astype(int)
            for lo in range(0, len(shown), 3):
                block = shown[lo:lo + 3]
                assert len(set(block)) == len(block)
            if len(shown) >= 3:        # the permutation is tiled: period 3
                np.testing.assert_array_equal(shown[3:], np.resize(shown[:3], len(shown) - 3))
