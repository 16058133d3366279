"""``neuro-meta alphabets`` / :func:`omniglot.per_alphabet`: a finished run's selected
meta-parameters scored one alphabet at a time. Checked against the run's own reported
per-task accuracies, a direct loop over the tasks, numpy/scipy for the intervals, and
the doors (a folder that is not a run, a checkpoint of another run)."""
import json
import shutil

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.checkpoint import CheckpointError
from neuro_meta.cli import main
from neuro_meta.datasets import omniglot
from neuro_meta.experiments import omniglot as og
from neuro_meta.families import FewShotClassification
from neuro_meta.metatrain import TEST, task_rng

TINY = ["network.hidden=[8]", "network.lam_init=[2.0, 0.1]", "compare.budget_s=null",
        "meta.steps=3", "meta.eval_every=3", "baselines.steps=4", "baselines.eval_every=2",
        "compare.val_tasks=6", "meta.eval_tasks=6", "final.test_tasks=8",
        "meta.meta_batch=4", "baselines.meta_batch=4", "compare.workers=1",
        "final.other_shots=null", "final.official_runs=false"]
METHODS = "cml,maml,fomaml,untrained"


def tiny_seeds_run(tmp_path_factory, name, methods):
    """A tiny two-seed run (step-bound: deterministic) of ``methods`` in a new folder."""
    out = tmp_path_factory.mktemp(name) / "run"
    argv = ["run", "omniglot", "--seeds", "0,1", "--methods", methods, "--out", str(out),
            "--no-progress"]
    for o in TINY:
        argv += ["--set", o]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """CML, MAML, first-order MAML and the untrained MLP; each test copies it before
    writing into it."""
    return tiny_seeds_run(tmp_path_factory, "alphabets", METHODS)


@pytest.fixture
def run_dir(seeds_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(seeds_run, dst)
    return dst


def test_selected_models_reproduce_the_runs_reported_per_task_accuracies(run_dir):
    """Each method read back from its checkpoint scores the run's own final test tasks
    exactly as the run reported them, task by task: the checkpoints hold the selected
    meta-parameters, not the last ones."""
    res = json.loads((run_dir / "seed_1" / "results.json").read_text())
    cfg, models = og.selected_models(run_dir / "seed_1")
    assert set(models) == set(res["methods"]) == {
        "pixel_nn", "cml_untrained", "cml", "maml", "fomaml", "untrained"}
    tasks = og.families(cfg)["test"].sample(task_rng(1, TEST, 1), 8)
    for name, errors in models.items():
        got = 1.0 - np.asarray(errors(tasks))
        assert got.tolist() == res["methods"][name]["accuracy_per_task"], name
    assert list(og.selected_models(run_dir / "seed_1", "maml, cml")[1]) == ["maml", "cml"]


def test_one_alphabet_at_a_time_against_a_direct_loop(run_dir):
    """Every task's classes come from one alphabet; pixel NN by a loop over queries, the
    selected MAML and CML on the same tasks, and the paired gap and its interval by
    numpy give the numbers per_alphabet reports."""
    from scipy import stats

    out = run_dir / "seed_0"
    n = 5
    res = og.per_alphabet(out, n_tasks=n, progress=False, executor="serial")
    d = omniglot()
    assert [a["name"] for a in res["alphabets"]] == list(d.alphabet_names)
    assert {a["split"] for a in res["alphabets"]} == {"train", "validation", "test"}
    assert sum(a["characters"] for a in res["alphabets"]) == 242
    _, models = og.selected_models(out, ["cml", "maml"])
    for i, a in enumerate(d.alphabet_names):
        m = d.alphabet == i
        fam = FewShotClassification(d.images[m], d.labels[m], ways=5, shots=1, queries=5,
                                    rotations=True)
        task, classes, _ = fam.sample_with_classes(task_rng(0, og.ALPHABETS, i), n)
        assert set(d.character_alphabet[classes[..., 0]].ravel()) == {i}
        xt, yt, xv, yv = task.as_batch()
        acc = []
        for k in range(n):          # nearest shot of every query, one at a time
            right = [yt[k][np.argmin([np.sum((q - s) ** 2) for s in xt[k]])].argmax()
                     == yv[k][j].argmax() for j, q in enumerate(xv[k])]
            acc.append(np.mean(right))
        assert res["methods"]["pixel_nn"][a]["accuracy"] == pytest.approx(np.mean(acc),
                                                                          abs=1e-15)
        c = 1.0 - models["cml"](task)
        b = 1.0 - models["maml"](task)
        assert res["methods"]["cml"][a]["accuracy"] == pytest.approx(c.mean(), abs=1e-15)
        g = res["gaps"]["cml"]["maml"][a]
        assert g["mean"] == pytest.approx((c - b).mean(), abs=1e-15)
        lo, hi = stats.t.interval(0.95, n - 1, loc=(c - b).mean(), scale=stats.sem(c - b))
        assert g["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
        r = res["methods"]["cml"][a]
        lo, hi = stats.t.interval(0.95, n - 1, loc=c.mean(), scale=stats.sem(c))
        assert r["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
    # gaps only against meta-learners, never against the non-meta references
    assert set(res["gaps"]["cml"]) == {"maml", "fomaml"}
    saved = json.loads((out / "per_alphabet.json").read_text())
    assert saved["methods"]["cml"] == res["methods"]["cml"]
    assert (out / "per_alphabet.png").stat().st_size > 0
    assert "Sanskrit (test, 42)" in og.alphabets_table(res)


def test_across_seeds_mean_and_student_t_interval(run_dir):
    from scipy import stats

    res = og.per_alphabet(run_dir, n_tasks=4, methods="cml,maml", progress=False)
    assert res["seeds"] == [0, 1]
    per = [json.loads((run_dir / f"seed_{k}" / "per_alphabet.json").read_text())
           for k in (0, 1)]
    for a in ("Sanskrit", "Greek"):
        for name in ("cml", "maml"):
            vals = [p["methods"][name][a]["accuracy"] for p in per]
            r = res["methods"][name][a]
            assert r["per_seed"] == vals and r["accuracy"] == pytest.approx(np.mean(vals))
            if vals[0] != vals[1]:
                lo, hi = stats.t.interval(0.95, 1, loc=np.mean(vals), scale=stats.sem(vals))
                assert r["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
            else:
                assert r["ci95"] == 0.0
        gaps = [p["gaps"]["cml"]["maml"][a]["mean"] for p in per]
        assert res["gaps"]["cml"]["maml"][a]["per_seed"] == gaps
    json.dumps(json.loads((run_dir / "per_alphabet.json").read_text()), allow_nan=False)
    assert "mean ± 95 % CI over seeds 0, 1" in og.alphabets_table(res)
    assert (run_dir / "per_alphabet.png").stat().st_size > 0


def _no_per_alphabet_files(run_dir):
    return not list(run_dir.rglob("per_alphabet.*"))


@pytest.mark.parametrize("seeds", [[], [0, 0], [0, -1], [0, True], "0,1", None])
def test_a_seeds_folder_with_bad_seeds_is_refused_before_any_work(run_dir, seeds):
    res = json.loads((run_dir / "results.json").read_text())
    res["seeds"] = seeds
    if seeds is None:
        del res["seeds"]            # then it is one seed's folder: no results.json there
        (run_dir / "results.json").write_text(json.dumps(res))
        with pytest.raises(CheckpointError):
            og.per_alphabet(run_dir, n_tasks=2, progress=False)
    else:
        (run_dir / "results.json").write_text(json.dumps(res))
        with pytest.raises(nm.ValidationError, match="seeds: must be a non-empty list of "
                           "distinct whole numbers >= 0"):
            og.per_alphabet(run_dir, n_tasks=2, progress=False)
    assert _no_per_alphabet_files(run_dir)


def test_every_seed_is_checked_before_any_is_scored(run_dir):
    """A --seeds folder whose last seed has a broken checkpoint, or whose seed folders
    hold each other's runs: refused before any scoring -- no seed's per_alphabet.json
    written, so the folder never mixes the scores of two runs."""
    (run_dir / "seed_1" / "maml_checkpoint.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="seed_1"):
        og.per_alphabet(run_dir, n_tasks=2, methods="cml,maml", progress=False)
    assert _no_per_alphabet_files(run_dir)
    (run_dir / "seed_1").rename(run_dir / "tmp")
    (run_dir / "seed_0").rename(run_dir / "seed_1")
    (run_dir / "tmp").rename(run_dir / "seed_0")
    with pytest.raises(nm.ValidationError, match=r"seed_0.*config.meta.seed: must be 0, "
                       r"the seed of its folder \(got 1\)"):
        og.per_alphabet(run_dir, n_tasks=2, methods="cml", progress=False)
    assert _no_per_alphabet_files(run_dir)
    assert main(["alphabets", str(run_dir), "--tasks", "2", "--methods", "cml",
                 "--no-progress"]) == 2


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["methods"].pop("untrained"), "methods: must be those of seed_0"),
    (lambda r: r["config"]["final"].update(test_tasks=9),
     "config: must be that of seed_0 apart from meta.seed"),
])
def test_the_seeds_of_a_folder_must_be_one_run(run_dir, edit, match):
    """seed_1 reporting other methods or another configuration than seed_0: refused
    before any scoring, no file written (was: both seeds' files written, then a bare
    KeyError)."""
    path = run_dir / "seed_1" / "results.json"
    res = json.loads(path.read_text())
    edit(res)
    path.write_text(json.dumps(res))
    with pytest.raises(nm.ValidationError, match=match):
        og.per_alphabet(run_dir, n_tasks=2, methods=None if "methods" in match else "cml",
                        progress=False)
    assert _no_per_alphabet_files(run_dir)


def test_a_method_entry_that_is_not_a_summary_is_one_line(run_dir, capsys):
    """results.json with a method's entry damaged by hand: one line, exit 2, nothing
    written (was: AttributeError from the baseline's checkpoint lookup)."""
    path = run_dir / "seed_0" / "results.json"
    res = json.loads(path.read_text())
    res["methods"]["untrained"] = "x"
    path.write_text(json.dumps(res))
    assert main(["alphabets", str(run_dir / "seed_0"), "--tasks", "2", "--serial",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "methods.untrained: must be a method's summary" in err, err
    assert _no_per_alphabet_files(run_dir)


def test_a_bad_setting_in_results_json_names_that_file(run_dir, capsys):
    """A setting damaged in results.json's config: the error names that results.json,
    not the shipped YAML the run was made from (its recorded ``_file``)."""
    path = run_dir / "seed_0" / "results.json"
    res = json.loads(path.read_text())
    res["config"]["meta"]["meta_batch"] = 0
    path.write_text(json.dumps(res))
    assert main(["alphabets", str(run_dir / "seed_0"), "--tasks", "2", "--serial",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{path} (its config): meta:" in err, err
    assert "omniglot.yaml" not in err and "meta_batch: must be >= 1" in err, err
    assert _no_per_alphabet_files(run_dir)


def test_a_one_seed_seeds_folder_reports_its_intervals_over_tasks(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    res["seeds"] = [1]
    (run_dir / "results.json").write_text(json.dumps(res))
    agg = og.per_alphabet(run_dir, n_tasks=3, methods="cml,maml", progress=False)
    one = json.loads((run_dir / "seed_1" / "per_alphabet.json").read_text())
    assert agg["seeds"] == [1] and agg["methods"] == one["methods"]
    assert all(r["ci95"] is not None for r in agg["methods"]["cml"].values())
    assert "seed 1, ± 95 % CI over tasks" in og.alphabets_table(agg)


def test_a_checkpoint_of_another_run_is_refused(run_dir):
    """Seed 1's checkpoints swapped into seed 0's folder: other initial weights (MAML)
    and another configuration (CML) -- refused, naming what differs."""
    for name in ("maml", "cml"):
        shutil.copy(run_dir / "seed_1" / f"{name}_checkpoint.npz",
                    run_dir / "seed_0" / f"{name}_checkpoint.npz")
    with pytest.raises(CheckpointError, match="params0"):
        og.selected_models(run_dir / "seed_0", "maml")
    with pytest.raises(CheckpointError):
        og.selected_models(run_dir / "seed_0", "cml")
    (run_dir / "seed_0" / "fomaml_checkpoint.npz").unlink()
    with pytest.raises(CheckpointError):
        og.per_alphabet(run_dir / "seed_0", n_tasks=2, methods="fomaml", progress=False)


@pytest.mark.parametrize("setting, what", [
    ("baselines.learning_rate=2e-3", "optimizer"),
    ("compare.average=0.9", "average: 0.9 in the checkpoint, 0.99 now"),
    ("baselines.weight_decay=0", "written by an older neuro_meta, whose fingerprint "
                                 "lacks weight_decay"),
])
def test_a_baseline_checkpoint_of_other_training_settings_is_refused(
        run_dir, tmp_path, setting, what):
    """A MAML checkpoint of the same method, initial weights, family and step counts,
    but meta-trained under another setting, swapped into seed 0's folder: refused by
    the whole fingerprint of the run's training, naming what differs; the file kept."""
    other = tmp_path / "other"
    argv = ["run", "omniglot", "--seed", "0", "--methods", "maml", "--out", str(other),
            "--no-progress"]
    for o in TINY + [setting]:
        argv += ["--set", o]
    assert main(argv) == 0
    mine = run_dir / "seed_0" / "maml_checkpoint.npz"
    shutil.copy(other / "maml_checkpoint.npz", mine)
    before = mine.read_bytes()
    with pytest.raises(CheckpointError, match=what):
        og.selected_models(run_dir / "seed_0", "maml")
    assert mine.read_bytes() == before


def test_reading_a_baseline_checkpoint_writes_nothing(run_dir):
    """selected_models resumes a finished training with no meta-step left: the
    checkpoint's bytes and time stamp are unchanged."""
    path = run_dir / "seed_0" / "fomaml_checkpoint.npz"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    og.selected_models(run_dir / "seed_0", "fomaml")
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("argv, match", [
    (["alphabets", "{run}/nowhere"], "must be the folder of a finished `neuro-meta run "
                                     "omniglot` (with results.json)"),
    (["alphabets", "{run}/seed_0", "--tasks", "1"], "n_tasks: must be >= 2"),
    (["alphabets", "{run}/seed_0", "--methods", "cml,imaml"],
     "methods: must be a comma-separated list of the run's methods"),
])
def test_bad_command_lines_are_one_line(run_dir, capsys, argv, match):
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


@pytest.mark.parametrize("kw, match", [
    ({"executor": "threads"}, "executor: must be None, 'serial', or an executor"),
    ({"executor": 3}, "executor: must be None, 'serial', or an executor .* int"),
    ({"progress": "yes"}, "progress: must be True or False"),
    ({"n_tasks": 2.5}, "n_tasks"),
])
def test_bad_arguments_are_refused_before_any_work(run_dir, kw, match):
    with pytest.raises(nm.ValidationError, match=match):
        og.per_alphabet(run_dir / "seed_0", **kw)
    assert not (run_dir / "seed_0" / "per_alphabet.json").exists()


def test_a_method_the_run_lacks_is_named_by_the_function_called_and_the_seed(run_dir):
    """per_alphabet and adaptation_screen on a --seeds folder name themselves (not the
    helper that reads the checkpoints) and the seed folder whose run lacks the method;
    a one-seed folder's message has no seed."""
    with pytest.raises(nm.ValidationError, match=r"^omniglot\.per_alphabet: methods: must "
                       r"be a comma-separated list of the run's methods in seed_0 \(pixel_nn, "):
        og.per_alphabet(run_dir, methods="cml,imaml", progress=False)
    with pytest.raises(nm.ValidationError, match=r"^omniglot\.adaptation_screen: methods: "
                       r"must be .* of the run's screenable methods in seed_0 \(cml, "):
        og.adaptation_screen(run_dir, methods="pixel_nn", progress=False)
    with pytest.raises(nm.ValidationError, match=r"^omniglot\.selected_models: methods: "
                       r"must be a comma-separated list of the run's methods \(pixel_nn, "):
        og.selected_models(run_dir / "seed_1", methods="imaml")


def test_a_seeds_folder_is_named_for_what_it_is(run_dir):
    with pytest.raises(nm.ValidationError, match=r"^omniglot\.selected_models\.seed: must "
                       r"be one of the seeds of the --seeds run .*run \(0, 1\) \(got None\)"):
        og.selected_models(run_dir)
    with pytest.raises(nm.ValidationError, match=r"seed: must be one of .*\(got 2\)"):
        og.selected_models(run_dir, seed=2)
    for bad in (-1, 1.0, True, "1", np.True_, np.float64(1.0)):
        with pytest.raises(nm.ValidationError, match=r"seed: must be None or a whole"):
            og.selected_models(run_dir, seed=bad)
    assert list(og.selected_models(run_dir, "maml", seed=np.int64(1))[1]) == ["maml"]
    # seed=k of the --seeds folder is its seed_<k>: the same models, the same numbers
    res = json.loads((run_dir / "seed_1" / "results.json").read_text())
    cfg, models = og.selected_models(run_dir, "maml", seed=1)
    tasks = og.families(cfg)["test"].sample(task_rng(1, TEST, 1), 8)
    assert (1.0 - np.asarray(models["maml"](tasks))).tolist() == \
        res["methods"]["maml"]["accuracy_per_task"]
    # a one-seed folder takes its own seed, or none
    assert list(og.selected_models(run_dir / "seed_1", "maml", seed=1)[1]) == ["maml"]
    with pytest.raises(nm.ValidationError, match=r"seed: must be the run's seed \(1, "):
        og.selected_models(run_dir / "seed_1", "maml", seed=0)
    # a seed folder whose results say another seed (moved by hand) is refused
    res["config"]["meta"]["seed"] = 0
    (run_dir / "seed_1" / "results.json").write_text(json.dumps(res))
    with pytest.raises(nm.ValidationError, match=r"seed_1/results\.json: config\.meta\.seed: "
                       r"must be 1, the seed of its folder \(got 0\)"):
        og.selected_models(run_dir, "pixel_nn", seed=1)
    (run_dir / "results.json").unlink()
    with pytest.raises(nm.ValidationError, match="its seed_0, seed_1 are runs of their own"):
        og.per_alphabet(run_dir, progress=False)
    (run_dir / "seed_0" / "results.json").write_text("{not json")
    with pytest.raises(nm.ValidationError, match="not readable JSON"):
        og.per_alphabet(run_dir / "seed_0", progress=False)


def test_command_line_prints_the_table(run_dir, capsys):
    assert main(["alphabets", str(run_dir / "seed_0"), "--tasks", "2", "--methods",
                 "cml,maml,pixel_nn", "--serial", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "cml minus (percentage points" in text and "per_alphabet.png" in text


def test_a_budget_bound_run_is_read_back_without_training(tmp_path):
    """A run stopped by its wall-time budget (not by its step cap): reading its
    checkpoints resumes each finished training at its last meta-step, where the step
    count -- checked before the clock -- ends it, so nothing is trained or written and
    the models score the run's own test tasks as the run reported them."""
    out = tmp_path / "budget"
    argv = ["run", "omniglot", "--methods", "cml,maml", "--out", str(out), "--no-progress",
            "--budget", "0.5"]
    for o in TINY:
        if not o.startswith(("compare.budget_s", "meta.steps", "baselines.steps")):
            argv += ["--set", o]
    argv += ["--set", "meta.steps=100000", "--set", "baselines.steps=100000"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    for name in ("cml", "maml"):
        assert res["methods"][name]["stop_reason"] == "budget", name
        assert res["methods"][name]["meta_steps"] < 100000
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*_checkpoint.npz")}
    assert len(files) == 2
    cfg, models = og.selected_models(out, "cml,maml")
    tasks = og.families(cfg)["test"].sample(task_rng(0, TEST, 1), 8)
    for name, errors in models.items():
        got = 1.0 - np.asarray(errors(tasks))
        assert got.tolist() == res["methods"][name]["accuracy_per_task"], name
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files
