"""``neuro-meta adaptation`` / :func:`omniglot.adaptation_screen`: a finished run's
selected meta-parameters scored under scaled test-time learning. Checked against the
run's own reported accuracy, a direct per-task settle of a hand-scaled network, a
direct SGD loop on the read-out alone, and the doors."""
import json
import shutil
import warnings

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.baselines import mlp_grad, mlp_predict
from neuro_meta.cli import main
from neuro_meta.experiments import omniglot as og
from neuro_meta.learning import NotSettledWarning
from neuro_meta.metatrain import VALIDATION, task_rng

# the tiny run's settings, how it is made and its copy per test, as the alphabets tests'
from test_omniglot_alphabets import TINY, run_dir, tiny_seeds_run  # noqa: F401

SMALL = dict(n_val=4, hidden=(2.0,), readout=(0.5,), scales=(1.4,), steps=(2,),
             progress=False, executor="serial")


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """CML, MAML, ANIL and Reptile (which the screen cannot scale); each test copies it
    (``run_dir``) before writing into it."""
    return tiny_seeds_run(tmp_path_factory, "adaptation", "cml,maml,anil,reptile")


@pytest.fixture(scope="module")
def screened(seeds_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("screened") / "run"
    shutil.copytree(seeds_run, dst)
    return dst, og.adaptation_screen(dst, **SMALL)


def test_the_trained_setting_reproduces_the_reported_accuracy(screened):
    """Setting 0 of every method is its trained learning, scored on the run's own test
    tasks: exactly the accuracy the run reported (so the screen reads the selected
    meta-parameters, not the last ones, and scores the same tasks)."""
    out, res = screened
    assert res["seeds"] == [0, 1] and res["n_val"] == 4 and res["n_test"] == 8
    for seed in ("0", "1"):
        reported = json.loads((out / f"seed_{seed}" / "results.json").read_text())
        per = res["runs"][seed]
        assert set(per) == {"cml", "maml", "anil"}         # reptile: not screenable
        for name, r in per.items():
            t = r["settings"][r["trained"]]
            assert t["test_accuracy"] == reported["methods"][name]["accuracy"], name
            assert r["reported_accuracy"] == reported["methods"][name]["accuracy"]
        assert (per["cml"]["settings"][0]["hidden"], per["cml"]["settings"][0]["readout"]) \
            == (1.0, 1.0)
        m0 = per["maml"]["settings"][0]
        assert (m0["layers"], m0["scale"], m0["inner_steps"]) == ("all", 1.0, 5)
        assert m0["inner_lr"] == pytest.approx(0.6)
        # the grid: 1 and the given factors; the trained step count and the given one
        assert len(per["cml"]["settings"]) == 2 * 2
        assert len(per["maml"]["settings"]) == 2 * 2 * 2          # all / read-out alone
        assert len(per["anil"]["settings"]) == 2 * 2              # is its read-out
    # each seed's own files, and the combined ones
    for p in (out, out / "seed_0", out / "seed_1"):
        assert (p / "adaptation.json").is_file() and (p / "adaptation.png").is_file()
    assert json.loads((out / "seed_1" / "adaptation.json").read_text())["runs"]["1"] == \
        res["runs"]["1"]


def test_the_choice_is_the_best_validation_accuracy(screened):
    _, res = screened
    for per in res["runs"].values():
        for name, r in per.items():
            rows = r["settings"]
            for layers, key in (("all", "chosen"), ("readout", "readout_chosen")):
                idx = [i for i, s in enumerate(rows) if s["layers"] == layers]
                if not idx:
                    assert key not in r
                    continue
                best = max(rows[i]["val_accuracy"] for i in idx)
                first = next(i for i in idx if rows[i]["val_accuracy"] == best)
                assert r[key] == first, (name, key)


def test_across_seeds_is_the_paired_mean_and_interval(screened):
    """For a --seeds folder, chosen minus trained and read-out alone minus trained on
    test, paired by seed: mean and Student's-t interval recomputed with scipy from the
    per-seed rows; printed by the table; absent for one seed."""
    from scipy import stats

    out, res = screened
    across = res["across_seeds"]
    assert set(across) == {"cml", "maml", "anil"}
    for name, keys in (("cml", ("chosen",)), ("maml", ("chosen", "readout_trained")),
                       ("anil", ("chosen",))):
        for key, field in (("chosen", "chosen_minus_trained"),
                           ("readout_trained", "readout_minus_trained")):
            if key not in keys:
                assert across[name][field] is None, (name, field)
                continue
            d = np.array([r["settings"][r[key]]["test_accuracy"]
                          - r["settings"][r["trained"]]["test_accuracy"]
                          for r in (res["runs"][s][name] for s in ("0", "1"))])
            ci = stats.t.ppf(0.975, 1) * stats.sem(d)
            got = across[name][field]
            assert got["n"] == 2 and got["mean"] == pytest.approx(d.mean(), abs=1e-15)
            assert got["ci95"] == pytest.approx(ci, rel=1e-12, abs=1e-15), (name, field)
    text = og.adaptation_table(res)
    m = across["maml"]["readout_minus_trained"]
    assert f"{100 * m['mean']:+.2f} ± {100 * m['ci95']:.2f} (2 seeds)" in text
    one = json.loads((out / "seed_0" / "adaptation.json").read_text())
    assert "across_seeds" not in one and "paired by seed" not in og.adaptation_table(one)


def _row(test, layers="all"):
    return {"layers": layers, "scale": 1.0, "inner_lr": 0.6, "inner_steps": 5,
            "val_accuracy": 0.8, "val_ci95": 0.01, "test_accuracy": test,
            "test_ci95": None if test is None else 0.01, "diverged": False,
            "test_diverged": test is None}


def test_across_seeds_pairs_by_seed_and_skips_what_is_missing():
    """Three seeds by hand: a seed whose trained setting has no test accuracy drops out
    of both differences, a seed with nothing chosen out of that one; fewer than two
    pairs give None; the interval is Student's t with n - 1 degrees of freedom."""
    from scipy import stats

    def run(trained, chosen, readout, chosen_idx=1):
        return {"maml": {"settings": [_row(trained), _row(chosen), _row(readout, "readout")],
                         "trained": 0, "chosen": chosen_idx, "readout_trained": 2,
                         "readout_chosen": 2, "reported_accuracy": trained}}
    runs = {"0": run(0.70, 0.72, 0.69), "1": run(0.75, 0.74, 0.73),
            "2": run(None, 0.80, 0.79), "3": run(0.71, 0.0, 0.70, chosen_idx=None)}
    got = og._screen_across_seeds(runs)["maml"]
    d = np.array([0.02, -0.01])
    assert got["chosen_minus_trained"]["n"] == 2
    assert got["chosen_minus_trained"]["mean"] == pytest.approx(d.mean())
    assert got["chosen_minus_trained"]["ci95"] == pytest.approx(
        stats.t.ppf(0.975, 1) * stats.sem(d))
    r = np.array([-0.01, -0.02, -0.01])
    assert got["readout_minus_trained"]["n"] == 3
    assert got["readout_minus_trained"]["ci95"] == pytest.approx(
        stats.t.ppf(0.975, 2) * stats.sem(r))
    assert all(type(v) in (float, int) for v in got["readout_minus_trained"].values())
    one = og._screen_across_seeds({"0": runs["0"], "3": runs["3"]})["maml"]
    assert one["chosen_minus_trained"] is None and one["readout_minus_trained"]["n"] == 2
    res = {"runs": runs, "ways": 5, "shots": 1, "n_val": 2, "n_test": 2,
           "seeds": [0, 1, 2, 3], "across_seeds": og._screen_across_seeds(runs)}
    assert "+0.50 ± " in og.adaptation_table(res)          # chosen: mean of +2 and -1
    bad = dict(res, across_seeds={"maml": {"chosen_minus_trained": {"mean": "x"}}})
    with pytest.raises(nm.ValidationError, match=r"^omniglot\.adaptation_table\.res"):
        og.adaptation_table(bad)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["methods"].pop("anil"), "methods: must be those of seed_0"),
    (lambda r: r["config"]["final"].update(test_tasks=9),
     "config: must be that of seed_0 apart from meta.seed"),
])
def test_the_seeds_of_a_folder_must_be_one_run(run_dir, edit, match):
    """seed_1 reporting other (screenable) methods or another configuration than
    seed_0: refused before any scoring, no file written (the interval over seeds pairs
    them, so they must be one run's)."""
    path = run_dir / "seed_1" / "results.json"
    res = json.loads(path.read_text())
    edit(res)
    path.write_text(json.dumps(res))
    with pytest.raises(nm.ValidationError, match=match):
        og.adaptation_screen(run_dir, n_val=2, scales=(0.5,), steps=(1,), progress=False,
                             executor="serial")
    assert not any(run_dir.rglob("adaptation.*"))


def _val_tasks(cfg, n):
    return og.families(cfg)["validation"].sample(task_rng(cfg["meta"]["seed"], VALIDATION,
                                                          og.SCREEN), n)


@pytest.mark.parametrize("h, r", [(2.0, 0.5), (1.0, 0.5), (2.0, 1.0)])
def test_cml_scaled_lambda_against_a_direct_settle(screened, h, r):
    """A network whose λ the test scales by hand (the hidden connection's by h, the
    read-out's by r), settled task by task, gives the screen's validation accuracy."""
    out, res = screened
    cfg, _ = og.selected_models(out / "seed_0", ["cml"])
    learner, trainer = og.build_cml(cfg, og.families(cfg))
    trainer.restore(out / "seed_0" / "cml_checkpoint.npz")
    net = trainer.net
    th = {k: (None if v is None else [None if a is None else np.array(a, copy=True)
                                      for a in v]) for k, v in net.theta.items()}
    for key in ("lam", "lam_bias"):
        th[key][0] = th[key][0] * h          # the one hidden connection
        th[key][1] = th[key][1] * r          # the read-out
    net2 = net.with_theta(th)
    task = _val_tasks(cfg, 4)
    xt, yt, xv, yv = task.as_batch()
    acc = []
    for i in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotSettledWarning)
            run = learner.run(net2, xt[i:i + 1], yt[i:i + 1])
        pred = net2.predict(xv[i:i + 1], [np.asarray(p) for p in run.phi_aug])
        acc.append(np.mean(pred.argmax(-1) == yv[i:i + 1].argmax(-1)))
    row = next(s for s in res["runs"]["0"]["cml"]["settings"]
               if (s["hidden"], s["readout"]) == (h, r))
    assert row["val_accuracy"] == pytest.approx(np.mean(acc), abs=1e-12)


def test_maml_read_out_alone_against_a_direct_sgd_loop(screened):
    """The read-out-only setting at the trained step: SGD on the shots with the hidden
    layers' gradients dropped, written out here with mlp_grad, task by task."""
    out, res = screened
    cfg, _ = og.selected_models(out / "seed_1", ["maml"])
    fams = og.families(cfg)
    trainer = og.build_cml(cfg, fams)[1]
    summary = json.loads((out / "seed_1" / "results.json").read_text())["methods"]["maml"]
    method, params = og._selected_baseline(cfg, "maml", out / "seed_1" /
                                           "maml_checkpoint.npz", summary, fams, trainer)
    task = _val_tasks(cfg, 4)
    xt, yt, xv, yv = task.as_batch()
    acc = []
    for i in range(4):
        p = {k: [np.array(a, copy=True) for a in v] for k, v in params.items()}
        for _ in range(method.inner_steps):
            _, g = mlp_grad(p, xt[i], yt[i], loss="cross_entropy")
            p["w"][-1] = p["w"][-1] - method.inner_lr * g["w"][-1][0]
            p["b"][-1] = p["b"][-1] - method.inner_lr * g["b"][-1][0]
        acc.append(np.mean(mlp_predict(p, xv[i]).argmax(-1) == yv[i].argmax(-1)))
    r = res["runs"]["1"]["maml"]
    row = r["settings"][r["readout_trained"]]
    assert (row["layers"], row["scale"], row["inner_steps"]) == ("readout", 1.0, 5)
    assert row["val_accuracy"] == pytest.approx(np.mean(acc), abs=1e-12)


def test_a_diverging_setting_is_recorded_and_never_chosen(run_dir, monkeypatch):
    """A setting whose inner loop diverges (here: made to, at the large step; a
    cross-entropy inner loop of this tiny network stays finite) is recorded as diverged,
    not chosen, and the table says so."""
    errors = og.baseline_errors

    def diverging(method, params, task, executor=None):
        if method.inner_lr > 1.0:
            raise nm.SimulationError(f"{type(method).__name__}: the inner loop diverged")
        return errors(method, params, task, executor)

    monkeypatch.setattr(og, "baseline_errors", diverging)
    res = og.adaptation_screen(run_dir / "seed_0", n_val=2, methods="maml", scales=(4.0,),
                               steps=(1,), progress=False, executor="serial")
    r = res["runs"]["0"]["maml"]
    bad = [s for s in r["settings"] if s["scale"] == 4.0]
    assert len(bad) == 4 and all(s["diverged"] and s["val_accuracy"] is None for s in bad)
    assert not r["settings"][r["chosen"]]["diverged"]
    assert not r["settings"][r["readout_chosen"]]["diverged"]
    og.plot_adaptation(run_dir / "a.png", res)
    assert "diverged" not in og.adaptation_table(res)    # neither chosen nor trained


def test_validation_chooses_when_test_disagrees(run_dir, monkeypatch):
    """Errors made to rank the settings one way on the validation tasks (4) and the
    other way on the test tasks (8): the choice follows validation; a divergence on the
    test tasks only neither removes a setting nor decides."""
    def fake(method, params, task, executor=None):
        n = task.as_batch()[0].shape[0]
        big = method.inner_lr > 0.7
        if n == 8 and big and method.inner_steps == 5 and method.name == "maml":
            raise nm.SimulationError("MAML: the inner loop diverged (test task)")
        good = big if n == 4 else not big
        return np.full(n, 0.2 if good else 0.6)

    monkeypatch.setattr(og, "baseline_errors", fake)
    res = og.adaptation_screen(run_dir / "seed_0", n_val=4, methods="maml",
                               scales=(1.4,), steps=(1,), progress=False,
                               executor="serial")
    r = res["runs"]["0"]["maml"]
    c = r["settings"][r["chosen"]]
    assert (c["scale"], c["inner_steps"], c["layers"]) == (1.4, 5, "all")
    assert c["test_diverged"] and c["test_accuracy"] is None and not c["diverged"]
    assert c["val_accuracy"] == pytest.approx(0.8)
    rc = r["settings"][r["readout_chosen"]]
    assert (rc["scale"], rc["layers"]) == (1.4, "readout") and rc["test_accuracy"] == \
        pytest.approx(0.4)
    assert "diverged" in og.adaptation_table(res)


def test_when_every_setting_diverges_nothing_is_chosen(run_dir, monkeypatch):
    def diverge(method, params, task, executor=None):
        raise nm.SimulationError("diverged")

    monkeypatch.setattr(og, "baseline_errors", diverge)
    res = og.adaptation_screen(run_dir / "seed_0", n_val=2, methods="maml", scales=(2.0,),
                               steps=(1,), progress=False, executor="serial")
    r = res["runs"]["0"]["maml"]
    assert r["chosen"] is None and r["readout_chosen"] is None
    assert all(s["diverged"] for s in r["settings"])
    text = og.adaptation_table(res)
    assert "diverged / diverged" in text
    og.plot_adaptation(run_dir / "all_diverged.png", res)
    assert (run_dir / "all_diverged.png").is_file()


def test_a_failing_seed_leaves_no_seeds_files(run_dir, monkeypatch):
    """Every seed's files are written after all seeds are scored: a failure in the
    second seed's scoring leaves none (never a mixture of old and new)."""
    calls = []
    one = og._screen_one

    def second_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise nm.SimulationError("the second seed failed")
        return one(*args, **kw)

    monkeypatch.setattr(og, "_screen_one", second_fails)
    with pytest.raises(nm.SimulationError, match="second seed"):
        og.adaptation_screen(run_dir, n_val=2, methods="maml", scales=(0.5,), steps=(1,),
                             progress=False, executor="serial")
    assert not any(run_dir.rglob("adaptation.*"))


def test_grids_from_strings_and_arrays(run_dir):
    res = og.adaptation_screen(run_dir / "seed_0", n_val=2, methods="maml",
                               scales=np.array([0.5]), steps=" 1 , 1", progress=False,
                               executor="serial")
    got = {(s["scale"], s["inner_steps"]) for s in res["runs"]["0"]["maml"]["settings"]}
    assert got == {(1.0, 5), (1.0, 1), (0.5, 5), (0.5, 1)}


@pytest.mark.parametrize("kw, match", [
    ({"executor": np.zeros(2)}, r"executor: must be None, 'serial', or an executor"),
    ({"steps": ","}, r"adaptation_screen\.steps: must be a non-empty list .*\(got ','\)"),
    ({"n_val": 1}, r"adaptation_screen\.n_val: must be >= 2"),
    ({"hidden": ()}, r"adaptation_screen\.hidden: must be a non-empty list"),
    ({"hidden": (0.0,)}, r"adaptation_screen\.hidden\[0\]: must be > 0"),
    ({"readout": "1,x"}, r"adaptation_screen\.readout: must be a comma-separated list"),
    ({"scales": (float("nan"),)}, r"adaptation_screen\.scales\[0\]"),
    ({"steps": (0,)}, r"adaptation_screen\.steps\[0\]: must be >= 1"),
    ({"steps": "2.5"}, r"adaptation_screen\.steps: must be a comma-separated list of whole"),
    ({"steps": (5000,)}, r"adaptation_screen\.steps: must be <= 1000"),
    ({"methods": "cml,reptile"}, r"methods: must be a comma-separated list of the run's "
                                 r"screenable methods \(cml, maml, anil;"),
    ({"executor": "threads"}, r"executor: must be None, 'serial', or an executor"),
    ({"progress": 1}, r"progress: must be True or False"),
])
def test_bad_arguments_are_refused_before_any_work(run_dir, kw, match):
    with pytest.raises(nm.ValidationError, match=match):
        og.adaptation_screen(run_dir / "seed_0", **dict(dict(progress=False), **kw))
    assert not (run_dir / "seed_0" / "adaptation.json").exists()


def test_a_run_without_screenable_methods_is_named(tmp_path):
    out = tmp_path / "r"
    argv = ["run", "omniglot", "--methods", "reptile", "--out", str(out), "--no-progress"]
    for o in TINY:
        argv += ["--set", o]
    assert main(argv) == 0
    with pytest.raises(nm.ValidationError, match="has no method the screen can scale"):
        og.adaptation_screen(out, progress=False)


def test_command_line(run_dir, capsys):
    assert main(["adaptation", str(run_dir / "seed_0"), "--tasks", "2", "--methods",
                 "maml", "--scales", "0.5", "--steps", "1", "--serial",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "the read-out adapting alone" in text and "adaptation.png" in text
    assert (run_dir / "seed_0" / "adaptation.png").is_file()
    for argv, match in ((["--hidden", "0,1"], "hidden[0]: must be > 0"),
                        (["--tasks", "1"], "n_val: must be >= 2"),
                        (["--methods", "pixel_nn"], "screenable methods")):
        assert main(["adaptation", str(run_dir / "seed_0"), "--no-progress"] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and match in err, err
