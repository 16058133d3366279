"""The ``neuro-meta run vsml`` experiment: data pipeline, baselines against direct loops,
the CLI end to end (quick settings)."""
import json

import numpy as np
import pytest

from neuro_meta import vsml as V
from neuro_meta.cli import main
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import vsml as E


def test_projections():
    rng = np.random.default_rng(0)
    fit = rng.random((400, 28, 28)) * (rng.random((400, 1, 1)) + 0.5)
    rand = E.Projection(16, "random", seed=0)
    for imgs in (fit, 5.0 * (rng.random((300, 28, 28)) > 0.9)):
        f = rand(imgs)
        # unit-norm centred images times N(0, 1) entries: each feature ~ N(0, 1)
        assert f.shape == (len(imgs), 16)
        assert abs(f.var() - 1.0) < 0.15 and abs(f.mean()) < 0.1
    pca = E.Projection(5, "pca", fit_images=fit)
    f = pca(fit)
    np.testing.assert_allclose(f.std(axis=0), 1.0, rtol=1e-10)      # unit variance
    np.testing.assert_allclose(f.mean(axis=0), 0.0, atol=1e-10)
    cov = np.cov(f.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-8)  # decorrelated
    # the first component carries the most variance of the centred unit-norm images
    v = fit.reshape(400, -1)
    v = v - v.mean(1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v -= v.mean(0)
    var1 = np.var(v @ (pca.matrix[0] / np.linalg.norm(pca.matrix[0])))
    for _ in range(20):
        u = rng.standard_normal(784)
        assert np.var(v @ (u / np.linalg.norm(u))) <= var1
    with pytest.raises(ValidationError, match=r"project\.images"):
        pca(np.zeros((3, 10, 10)))
    with pytest.raises(ValidationError, match=r"Projection\.fit_images"):
        E.Projection(4, "pca")


def test_glyphs_are_seeded_and_classes_differ():
    a, la = E.glyphs(5, 4, seed=3)
    b, lb = E.glyphs(5, 4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 28, 28) and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(la, np.repeat(np.arange(5), 4))
    # examples of a class are closer to each other than to other classes' (on average)
    v = a.reshape(20, -1)
    d = ((v[:, None] - v[None]) ** 2).sum(-1)
    same = la[:, None] == la[None]
    off = ~np.eye(20, dtype=bool)
    assert d[same & off].mean() < d[~same].mean()
    with pytest.raises(ValidationError, match=r"glyphs\.n_classes"):
        E.glyphs(1)


def _direct_glyphs(n_classes, per_class, seed, side):
    """The stroke rasteriser written out: every curve point's pen disc over all pixels."""
    rng = np.random.default_rng(seed)
    tt = np.linspace(0.0, 1.0, 40)
    yy, xx = np.mgrid[0:side, 0:side]
    images = np.zeros((n_classes * per_class, side, side))
    lo, hi = 0.5 * side - 10, 0.5 * side + 10
    for k in range(n_classes):
        strokes = rng.uniform(lo, hi, size=(rng.integers(2, 5), 3, 2))
        for j in range(per_class):
            pts = strokes + rng.normal(0.0, 1.2, strokes.shape)
            ang = np.deg2rad(rng.uniform(-15, 15))
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            pts = (pts - side / 2) @ rot.T + side / 2 + rng.uniform(-2, 2, 2)
            for p0, p1, p2 in pts:
                for t in tt:
                    cx, cy = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
                    for y in range(side):
                        for x in range(side):
                            if (x - cx) ** 2 + (y - cy) ** 2 <= 1.0:
                                images[k * per_class + j, y, x] = 1.0
    return images


@pytest.mark.parametrize("args", [(3, 2, 7, 28), (4, 3, 1, 12)])
def test_glyphs_match_the_direct_rasteriser(args):
    """The vectorised rasteriser (4 x 4 pixel neighbourhoods) inks exactly the pixels a
    direct loop over every curve point and pixel inks -- on 28 x 28 and on a small canvas
    where strokes leave the image."""
    images, _ = E.glyphs(*args)
    np.testing.assert_array_equal(images, _direct_glyphs(*args))


def _direct_readout(x, y, ways, lr, method):
    """One episode, one example at a time, written out."""
    d = x.shape[1]
    W, b = np.zeros((ways, d)), np.zeros(ways)
    mW, vW, mb, vb = (np.zeros((ways, d)), np.zeros((ways, d)), np.zeros(ways),
                      np.zeros(ways))
    out = []
    for t in range(len(x)):
        z = W @ x[t] + b
        out.append(int(np.argmax(z)) == y[t])
        p = np.exp(z - z.max())
        p /= p.sum()
        p[y[t]] -= 1.0
        gW, gb = np.outer(p, x[t]), p
        if method == "sgd":
            W, b = W - lr * gW, b - lr * gb
        else:
            k = t + 1
            mW, vW = 0.9 * mW + 0.1 * gW, 0.999 * vW + 0.001 * gW ** 2
            mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb ** 2
            W = W - lr * (mW / (1 - 0.9 ** k)) / (np.sqrt(vW / (1 - 0.999 ** k)) + 1e-8)
            b = b - lr * (mb / (1 - 0.9 ** k)) / (np.sqrt(vb / (1 - 0.999 ** k)) + 1e-8)
    return np.array(out)


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_readout_baselines_equal_direct_loops(method):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 15, 5))
    y = rng.integers(0, 3, (4, 15))
    got = E.readout_correct(x, y, 3, 0.3, method)
    for e in range(4):
        np.testing.assert_array_equal(got[e], _direct_readout(x[e], y[e], 3, 0.3, method))
    with pytest.raises(ValidationError, match=r"readout_correct\.y"):
        E.readout_correct(x, y + 3, 3, 0.3, method)
    with pytest.raises(ValidationError, match=r"readout_correct\.lr"):
        E.readout_correct(x, y, 3, -1.0, method)


def test_scores_against_hand_counts():
    c = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=bool)
    s = E.scores(c)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["late_accuracy"] == pytest.approx(0.75)
    assert s["curve"] == [0.5, 0.0, 1.0, 0.5]
    assert s["ci95"] == pytest.approx(1.96 * np.std([0.75, 0.25], ddof=1) / np.sqrt(2))


def test_centered_ranks_and_rank_fitness_chunking():
    np.testing.assert_allclose(V.centered_ranks([3.0, 1.0, 2.0]), [0.5, -0.5, 0.0])

    def f(thetas, seeds):
        return np.sum(thetas ** 2, axis=1)
    a = V.es_gradient(f, np.ones(4), 0.1, 6, seed=1, fitness="rank")
    b = V.es_gradient(f, np.ones(4), 0.1, 6, seed=1, fitness="rank", chunks=4)
    np.testing.assert_array_equal(a.grad, b.grad)
    assert a.grad @ np.ones(4) > 0          # points uphill of |θ|² at θ = 1
    with pytest.raises(ValidationError, match=r"es_gradient\.fitness"):
        V.es_gradient(f, np.ones(4), 0.1, 6, fitness="ranks")


FAST = ["--set", "es.budget_s=2", "--set", "cml.budget_s=1", "--set", "final.test_episodes=12",
        "--set", "es.val_episodes=8", "--set", "baselines.tune_episodes=8"]


def test_cli_quick_run_writes_results(tmp_path, capsys):
    out = tmp_path / "vsml"
    assert main(["run", "vsml", "--quick", "--no-progress", "--out", str(out)] + FAST) == 0
    text = capsys.readouterr().out
    assert "VSML (ES)" in text and "online SGD" in text and "glyphs" in text
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"vsml", "sgd", "adam", "cml"}
    for m in res["methods"].values():
        for n in ("omniglot_test", "glyphs"):
            assert 0.0 <= m[n]["accuracy"] <= 1.0 and np.isfinite(m[n]["ci95"])
            assert len(m[n]["curve"]) == res["length"] == 24
    assert res["n_params"] == 2384 and res["chance"] == pytest.approx(1 / 3)
    assert (out / "vsml.png").stat().st_size > 0 and (out / "vsml_checkpoint.npz").is_file()
    _check_protocol(out, res)


def test_cli_errors(tmp_path, capsys):
    assert main(["run", "vsml", "--methods", "vsml,maml", "--out", str(tmp_path)]) == 2
    assert "run vsml.methods" in capsys.readouterr().err
    assert main(["run", "vsml", "--seeds", "2", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["run", "vsml", "--ways", "3", "--out", str(tmp_path)]) == 2


def test_cml_online_predictions_rigid_and_plastic():
    """A rigid complex synapse (λ huge) predicts with ω at every step; a plastic one
    (λ small) that has seen an example predicts its label when it comes again."""
    import neuro_meta as nm
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8, 4))
    y = rng.integers(0, 3, (6, 8))
    learner = nm.Learner(rule="delta", integrator="expeuler", dt=0.05, tol=1e-6,
                         max_duration=200.0, settle="solve")
    for lam, check in ((1e4, "rigid"), (1e-3, "plastic")):
        net = nm.RateNetwork([4, 3], activation="linear", synapse=nm.ComplexSynapse(
            omega=nm.init.Glorot(), lam=lam), tau_neuron=0.0, seed=3, loss="cross_entropy")
        got = E.cml_correct(net, learner, x, y)
        if check == "rigid":
            th = net.theta
            z = x @ np.asarray(th["omega"][0]).T + np.asarray(th["omega_bias"][0])
            np.testing.assert_array_equal(got, z.argmax(-1) == y)
        else:
            xr = np.concatenate([x[:, :4], x[:, :4]], axis=1)    # examples 4..7 repeat 0..3
            yr = np.concatenate([y[:, :4], y[:, :4]], axis=1)
            got = E.cml_correct(net, learner, xr, yr)
            assert got[:, 4:].all()


def test_cml_unsettled_prefixes_are_counted():
    """A learning process cut off long before it settles: every re-settled prefix is
    reported unsettled, and cml_correct says so (NotSettledWarning with the count)."""
    import neuro_meta as nm
    from neuro_meta.learning import NotSettledWarning
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 4))
    y = rng.integers(0, 3, (3, 5))
    net = nm.RateNetwork([4, 3], activation="linear", synapse=nm.ComplexSynapse(
        omega=nm.init.Glorot(), lam=1e-3), tau_neuron=0.0, seed=3, loss="cross_entropy")
    short = nm.Learner(rule="delta", integrator="expeuler", dt=0.05, tol=1e-9,
                       max_duration=0.1)
    correct, uns = E.cml_online(net, short, x, y)
    assert correct.shape == uns.shape == (3, 5)
    assert not uns[:, 0].any() and uns[:, 1:].all()
    with pytest.warns(NotSettledWarning, match="12 of 12 prefixes"):
        E.cml_correct(net, short, x, y)
    long = nm.Learner(rule="delta", integrator="expeuler", dt=0.05, tol=1e-6,
                      max_duration=200.0, settle="solve")
    assert not E.cml_online(net, long, x, y)[1].any()


def test_vsml_loss_and_accuracy_share_cells_independent_of_batch():
    """Each episode's initial cells come from [seed, 99, e] alone: the logits do not
    depend on the batch size, and an episode scored alone equals its row in a batch."""
    model = V.VSML((3, 2))
    theta = model.init_theta(1) + 0.2 * np.random.default_rng(2).standard_normal(
        model.n_params)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5, 3))
    y = rng.integers(0, 2, (7, 5))
    ref = E.vsml_logits(model, theta, x, y, seed=4, batch=7)
    for b in (1, 3, 64):
        np.testing.assert_array_equal(E.vsml_logits(model, theta, x, y, seed=4, batch=b), ref)
    # an independent computation of episode 5 alone with its own cells
    cells = [c[None, None] for c in model.initial_cells(np.random.default_rng([4, 99, 5]))]
    one = model.run(theta[None], x[None, 5:6], y[None, 5:6], cells)[0, 0]
    np.testing.assert_array_equal(one, ref[5])
    assert E.vsml_loss(model, theta, x, y, 4, batch=2) == pytest.approx(
        float(V.online_cross_entropy(ref, y).mean()), rel=1e-12)
    np.testing.assert_array_equal(E.vsml_correct(model, theta, x, y, 4, batch=3),
                                  ref.argmax(-1) == y)


def test_projection_beyond_the_rank_fails():
    rng = np.random.default_rng(0)
    base = rng.random((3, 28, 28))
    fit = np.concatenate([base * s for s in (1.0, 2.0, 3.0)])   # unit-norm: 3 images
    E.Projection(2, "pca", fit_images=fit)                        # rank 2 after centring
    with pytest.raises(ValidationError, match=r"Projection\.d"):
        E.Projection(3, "pca", fit_images=fit)
    with pytest.raises(ValidationError, match=r"Projection\.d"):
        E.Projection(20, "pca", fit_images=fit)


def _check_protocol(out, res):
    """SGD/Adam are tuned on the validation episodes (as VSML's theta) and, beside it, on
    meta-training episodes; CML reports its not-settled fraction; theta file is loadable."""
    cfg = E._cfg(quick=True, overrides=FAST[1::2])
    data = E.data_sets(cfg)
    xv, yv = E.episodes(data["validation"], E.VAL_STREAM, 0, 8)
    grid = cfg["baselines"]["lr_grid"]
    for m in ("sgd", "adam"):
        r = res["methods"][m]
        assert r["tuned_on"] == "validation"
        direct = {lr: float(np.mean([_direct_readout(xv[e], yv[e], 3, lr, m)
                                     for e in range(8)])) for lr in grid}
        assert r["learning_rate"] == max(direct, key=lambda k: (direct[k], -k))
        for n in ("omniglot_test", "glyphs"):
            assert 0.0 <= r[n]["train_tuned_accuracy"] <= 1.0
        assert "minus_sgd_train_tuned" in res["methods"]["vsml"]["glyphs"]
    c = res["methods"]["cml"]
    assert set(c["not_settled"]) == {"omniglot_test", "glyphs"}
    assert all(0.0 <= v <= 1.0 for v in c["not_settled"].values())
    theta = np.load(out / "vsml_theta.npy")
    assert theta.shape == (2384,) and np.isfinite(theta).all()
    assert not list(out.glob(".*.tmp"))
    assert "re-settled on all seen examples" in E.summary_table(res)


def test_resume_refuses_a_damaged_cml_checkpoint_before_es(tmp_path, capsys, monkeypatch):
    """--resume with a damaged CML checkpoint: one line, status 2, before ES meta-trains
    (it used to be refused only after ES's whole budget)."""
    monkeypatch.setattr(V.ESTrainer, "train", lambda *a, **k: pytest.fail("ES trained"))
    (tmp_path / "cml_checkpoint.npz").write_bytes(b"damaged")
    assert main(["run", "vsml", "--quick", "--no-progress", "--resume",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cml_checkpoint.npz: not a readable neuro_meta checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def _hand_results(length=24):
    """A well-formed vsml results dict written by hand: the four methods, ES's history."""
    rng = np.random.default_rng(0)

    def data_set(acc, minus=None, tuned=False):
        d = {"accuracy": acc, "ci95": 0.0123, "late_accuracy": acc + 0.05, "late_ci95": 0.0234,
             "episodes": 400, "curve": np.clip(acc + 0.1 * rng.normal(size=length), 0, 1).tolist()}
        if minus is not None:
            d.update(minus_sgd=minus, minus_sgd_ci95=0.0101)
        if tuned:
            d.update(train_tuned_accuracy=acc - 0.01, train_tuned_ci95=0.0111)
        return d

    def method(acc, minus=None, tuned=False, **extra):
        return dict(extra, **{n: data_set(acc, minus, tuned) for n in E.DATASETS})

    return {"ways": 3, "length": length, "chance": 1 / 3,
            "methods": {
                "vsml": method(0.539, -0.031, es_steps=3000, es_time_s=7200.0,
                               population=128, selected_step=2950),
                "sgd": method(0.509, tuned=True, learning_rate=0.3, tuned_on="validation",
                              learning_rate_train_tuned=0.1),
                "adam": method(0.501, -0.008, tuned=True, learning_rate=0.1,
                               tuned_on="validation", learning_rate_train_tuned=0.1),
                "cml": method(0.548, +0.039, not_settled={n: 0.0 for n in E.DATASETS})},
            "history": {"vsml": {"step": list(range(40)),
                                 "loss": (1.0986 + 1e-3 * rng.normal(size=40)).tolist(),
                                 "eval_step": [0, 10, 20, 30],
                                 "eval": [{"val_loss": v} for v in (1.099, 1.098, 1.097,
                                                                    1.096)]}}}


def test_summary_table_fits_100_columns_and_explains_its_abbreviations():
    table = E.summary_table(_hand_results())
    lines = table.splitlines()
    too_wide = [line for line in lines if len(line) > 100]
    assert not too_wide, too_wide
    head = next(i for i, line in enumerate(lines) if line.startswith("method"))
    for name in E.DATASETS:
        assert name in lines[head - 1]
    rows = lines[head + 1:head + 5]
    assert [r.split("  ")[0] for r in rows] == [E.SHORT[m] for m in E.METHODS]
    assert all(r.count("±") == 4 for r in rows), rows
    note = " ".join(lines[head + 5:head + 8])       # the line(s) under the table
    for abbreviation in ("all steps:", "2nd half:", "ES:", "CML synapse:"):
        assert abbreviation in note, note
    assert "re-settled on all seen examples" in note
    i = next(i for i, line in enumerate(lines) if line.startswith("Minus online SGD"))
    assert lines[i + 2].split()[:3] == ["VSML", "(ES)", "-0.031"]
    assert "online SGD" not in " ".join(lines[i + 1:i + 5])   # no difference to itself


def test_plot_legend_is_complete_and_clear_of_the_curves():
    """vsml.png: one legend naming every method, chance and ES's curves, and no legend
    drawn over a panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    res = _hand_results()
    fig = E.plot(res)
    FigureCanvasAgg(fig).draw()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    texts = {t.get_text() for lg in legends for t in lg.get_texts()}
    assert {E.LABELS[m] for m in res["methods"]} <= texts, texts
    assert any("chance" in t for t in texts) and any("ES" in t for t in texts)
    renderer = fig.canvas.get_renderer()
    for lg in legends:
        box = lg.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (lg, ax.get_title())
