"""`neuro-meta combine`: runs made side by side with one method each, put together into
one table with CML minus the MAML family paired over the test tasks -- against the same
methods run in one invocation (a step-bound run is deterministic, so the two must agree
to the last digit) and against the paired differences computed here with scipy."""
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from neuro_meta import checkpoint as ckpt
from neuro_meta.cli import main
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import omniglot as og
from neuro_meta.experiments import seeds

TINY = ["network.hidden=[8]", "network.lam_init=[2.0, 0.1]", "compare.budget_s=null",
        "meta.steps=3", "meta.eval_every=3", "baselines.steps=4", "baselines.eval_every=2",
        "compare.val_tasks=6", "meta.eval_tasks=6", "final.test_tasks=8",
        "meta.meta_batch=4", "baselines.meta_batch=4", "final.other_shots=null",
        "final.official_runs=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("combine")
    for methods in ("cml", "maml", "cml,maml"):
        og.run(root / methods.replace(",", "_"), progress=False, methods=methods,
               overrides=TINY)
    return root


def test_combined_runs_equal_one_run_of_both_methods(runs, tmp_path):
    res = og.combine([runs / "cml", runs / "maml"], tmp_path / "both")
    joint = json.loads((runs / "cml_maml" / "results.json").read_text())
    assert set(res["methods"]) == set(joint["methods"])
    for name, r in joint["methods"].items():
        assert res["methods"][name]["accuracy_per_task"] == r["accuracy_per_task"], name
        assert res["methods"][name]["accuracy"] == r["accuracy"], name
    assert res["gaps"] == joint["gaps"]
    # the paired difference, computed here: mean and Student's t interval of the per-task
    # differences of the two runs' own results.json
    a = np.array(json.loads((runs / "cml" / "results.json").read_text())
                 ["methods"]["cml"]["accuracy_per_task"])
    b = np.array(json.loads((runs / "maml" / "results.json").read_text())
                 ["methods"]["maml"]["accuracy_per_task"])
    d = a - b
    g = res["gaps"]["cml"]["maml"]
    assert g["mean"] == pytest.approx(d.mean(), abs=1e-15)
    assert g["ci95"] == pytest.approx(stats.t.ppf(0.975, d.size - 1) * stats.sem(d),
                                      rel=1e-12)
    written = json.loads((tmp_path / "both" / "results.json").read_text())
    assert written["combined_from"] == [str(runs / "cml"), str(runs / "maml")]
    assert written["config"]["methods"] == ["cml", "maml"]
    assert (tmp_path / "both" / "omniglot.png").stat().st_size > 0
    # the checkpoints came along: the selected models load from the combined folder
    cfg, models = og.selected_models(tmp_path / "both", "cml,maml")
    assert set(models) == {"cml", "maml"}


def test_cli_prints_the_paired_table(runs, tmp_path, capsys):
    assert main(["combine", str(runs / "maml"), str(runs / "cml"),
                 "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "cml minus the MAML family" in out and "paired over the 8 test tasks" in out
    assert f"Put together by neuro-meta combine from runs made side by side: {runs / 'maml'}, " \
        f"{runs / 'cml'}" in out
    assert (tmp_path / "c" / "cml_checkpoint.npz").is_file()
    assert not list((tmp_path / "c").glob(".*tmp"))


def _copy(src, dst, edit):
    shutil.copytree(src, dst)
    res = json.loads((dst / "results.json").read_text())
    edit(res)
    (dst / "results.json").write_text(json.dumps(res))
    return dst


def test_refusals_name_what_is_wrong(runs, tmp_path, capsys):
    def seed(res):
        res["config"]["meta"]["seed"] = 1

    other = _copy(runs / "maml", tmp_path / "seed1", seed)

    def val_tasks(res):
        res["config"]["compare"]["val_tasks"] = 7

    differs = _copy(runs / "maml", tmp_path / "val7", val_tasks)
    with pytest.raises(ValidationError, match=r"omniglot\.combine: run_dirs\[1\]: must be a "
                       r"run of the same configuration as .*cml but for its methods .*"
                       r"compare\.val_tasks is 7 in .*val7, 6 in"):
        og.combine([runs / "cml", differs], tmp_path / "o")

    def tasks(res):
        res["methods"]["pixel_nn"]["accuracy_per_task"][0] = 1.0 - \
            res["methods"]["pixel_nn"]["accuracy_per_task"][0]

    moved = _copy(runs / "maml", tmp_path / "tasks", tasks)
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]: must have the test tasks of "
                       r".*cml: pixel_nn \(no meta-learning\) scores test task 0"):
        og.combine([runs / "cml", moved], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]: must add a method"):
        og.combine([runs / "cml_maml", runs / "cml"], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]: must be another run"):
        og.combine([runs / "cml", runs / "cml"], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"out_dir: must be a folder of its own"):
        og.combine([runs / "cml", runs / "maml"], runs / "maml")
    with pytest.raises(ValidationError, match=r"out_dir: must not hold the runs"):
        og.combine([runs / "cml", runs / "maml"], runs)
    with pytest.raises(ValidationError, match=r"run_dirs: must hold two or more"):
        og.combine([runs / "cml"], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs: must be a list"):
        og.combine(str(runs / "cml"), tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]: must be the folder of a "
                       r"finished"):
        og.combine([runs / "cml", tmp_path / "nothing"], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # a run of another seed is another seed of the comparison (combined seed by seed),
    # which must have the methods of seed 0; a seed-0 run relabelled seed 1 does not hold
    # seed 1's test tasks
    code = main(["combine", str(runs / "cml"), str(other), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "run_dirs[1] (seed 1): methods: must be those " \
        "of seed 0 (run_dirs[0]), every seed the same -- runs of another meta.seed are " \
        "combined as another seed" in err[0], err
    relabelled = _copy(runs / "cml_maml", tmp_path / "both_seed1", seed)
    code = main(["combine", str(runs / "cml_maml"), str(relabelled), "--out",
                 str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "run_dirs[1] (seed 1): must hold the test " \
        "tasks its configuration draws" in err[0], err
    assert not (tmp_path / "c").exists()


def _seeds_run(out, methods, which=(0, 1)):
    return seeds.run_seeds(og.run, out, list(which), progress=False, methods=methods,
                           overrides=TINY, aggregate_fn=og.aggregate_seeds,
                           plot_fn=og.plot_seeds, seed_jobs=False)


def test_seeds_runs_combine_seed_by_seed_and_aggregate_as_one_run(runs, tmp_path, capsys):
    """Two --seeds runs of one method each, combined: every seed as the one run of both
    methods gave it, and the aggregate (gaps paired by seed) that run's aggregate."""
    for methods in ("cml", "maml", "cml,maml"):
        _seeds_run(tmp_path / methods.replace(",", "_"), methods)
    agg = og.combine([tmp_path / "cml", tmp_path / "maml"], tmp_path / "both")
    joint = json.loads((tmp_path / "cml_maml" / "results.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["gaps"] == joint["gaps"]
    for name, m in joint["methods"].items():     # (wall times differ from run to run)
        assert {k: v for k, v in agg["methods"][name].items() if "time" not in k} == \
            {k: v for k, v in m.items() if "time" not in k}, name
    for k in (0, 1):
        got = json.loads((tmp_path / "both" / f"seed_{k}" / "results.json").read_text())
        want = json.loads((tmp_path / "cml_maml" / f"seed_{k}" / "results.json").read_text())
        assert got["gaps"] == want["gaps"]
        assert (tmp_path / "both" / f"seed_{k}" / "maml_checkpoint.npz").is_file()
    assert (tmp_path / "both" / "seeds.png").stat().st_size > 0
    assert main(["combine", str(tmp_path / "cml"), str(tmp_path / "maml"),
                 "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "paired by seed" in out and "Put together by neuro-meta combine" in out
    # one-seed runs of several seeds (each --seeds run's seed folders are runs of their
    # own): combined seed by seed, then aggregated -- the joint run's aggregate again,
    # in any order of the folders; an earlier combination counts as one seed's run
    ones = [tmp_path / "maml" / "seed_1", tmp_path / "cml" / "seed_0",
            tmp_path / "cml" / "seed_1", tmp_path / "maml" / "seed_0"]
    for folders in (ones, [tmp_path / "both" / "seed_0", *ones[:1], *ones[2:3]]):
        again = og.combine(folders, tmp_path / "ones")
        assert again["seeds"] == [0, 1] and again["gaps"] == joint["gaps"]
        for name, m in joint["methods"].items():
            assert {k: v for k, v in again["methods"][name].items() if "time" not in k} \
                == {k: v for k, v in m.items() if "time" not in k}, name
        assert list(again["methods"]) == list(joint["methods"])
    assert og.per_alphabet(tmp_path / "ones", n_tasks=4, methods="cml,maml",
                           progress=False)["seeds"] == [0, 1]
    def targets(res):           # (a setting no training or checkpoint depends on)
        res["config"]["compare"]["targets"] = [0.1]

    bad = [_copy(d, tmp_path / f"{d.parent.name}_b1", targets) for d in (ones[2], ones[0])]
    with pytest.raises(ValidationError, match=r"run_dirs\[2\] \(seed 1\): must be a run of "
                       r"the configuration of run_dirs\[0\] \(seed 0\) apart from meta\.seed "
                       r"and methods .*compare\.targets is \[0\.1\] for seed 1, \[.*\] for "
                       r"seed 0"):
        og.combine([ones[1], ones[3], *bad], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs\[2\] \(seed 1\): methods: must be "
                       r"those of seed 0 \(run_dirs\[0, 1\]\), every seed the same -- runs "
                       r"of another meta\.seed are combined as another seed \(got pixel_nn, "
                       r"maml in run_dirs\[2\] against pixel_nn, cml_untrained, cml, maml\)"):
        og.combine([ones[1], ones[3], ones[0]], tmp_path / "o")
    # a --seeds folder beside runs of other seeds: its seed folders are one-seed runs,
    # combined across the seeds (a seed added to a comparison) -- and every seed must
    # then have the same methods; refused before anything is written
    with pytest.raises(ValidationError, match=r"run_dirs\[0\]/seed_1 \(seed 1\): methods: "
                       r"must be those of seed 0 \(\[run_dirs\[0\]/seed_0, run_dirs\[1\]\]\)"):
        og.combine([tmp_path / "cml", runs / "maml"], tmp_path / "o")
    _seeds_run(tmp_path / "maml_02", "maml", (0, 2))
    with pytest.raises(ValidationError, match=r"run_dirs\[0\]/seed_1 \(seed 1\): methods: "
                       r"must be those of seed 0 \(\[run_dirs\[0\]/seed_0, "
                       r"run_dirs\[1\]/seed_0\]\)"):
        og.combine([tmp_path / "cml", tmp_path / "maml_02"], tmp_path / "o")
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]/seed_0: must be another run"):
        og.combine([tmp_path / "both" / "seed_0", tmp_path / "both"], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    _seeds_run(tmp_path / "both_2", "cml,maml", (2,))
    more = og.combine([tmp_path / "both_2", tmp_path / "both"], tmp_path / "three")
    assert more["seeds"] == [0, 1, 2]
    for k, src in ((0, tmp_path / "both"), (1, tmp_path / "both"), (2, tmp_path / "both_2")):
        got = json.loads((tmp_path / "three" / f"seed_{k}" / "results.json").read_text())
        want = json.loads((src / f"seed_{k}" / "results.json").read_text())
        assert got["gaps"] == want["gaps"], k
    assert more["combined_from"] == [str(tmp_path / "both_2"), str(tmp_path / "both")]
    # the documented case: a --seeds comparison and one-seed runs of a new seed
    again = og.combine([tmp_path / "both", tmp_path / "both_2" / "seed_2"], tmp_path / "3b")
    assert again["seeds"] == [0, 1, 2] and again["gaps"] == more["gaps"]
    # never written into (or inside) a folder it reads, a seed folder included
    for bad_out in (tmp_path / "both" / "seed_0", tmp_path / "both" / "seed_1" / "x"):
        with pytest.raises(ValidationError, match=r"out_dir: must be a folder of its own, "
                           r"outside the runs' folders \(one is .*both/seed_"):
            og.combine([tmp_path / "both_2", tmp_path / "both"], bad_out)
    assert (tmp_path / "both" / "seed_0" / "results.json").is_file()
    assert not (tmp_path / "both" / "seed_1" / "x").exists()


def test_output_is_written_whole_or_not_at_all(runs, tmp_path, monkeypatch):
    """A failure while writing leaves no output folder and no temporary one; an earlier
    combination is replaced whole; a folder holding other files is refused."""
    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(og, "plot", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        og.combine([runs / "cml", runs / "maml"], tmp_path / "o")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    og.combine([runs / "cml", runs / "maml"], tmp_path / "o")
    (tmp_path / "o" / "stale.txt").write_text("from before")
    og.combine([runs / "maml", runs / "cml"], tmp_path / "o")     # replaces the earlier one
    assert not (tmp_path / "o" / "stale.txt").exists()
    assert json.loads((tmp_path / "o" / "results.json").read_text())["combined_from"][0] \
        == str(runs / "maml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match=r"out_dir: must be a new or empty folder"):
        og.combine([runs / "cml", runs / "maml"], tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_runs_without_task_check_or_with_a_foreign_checkpoint_are_refused(runs, tmp_path):
    def old(res):
        del res["methods"]["pixel_nn"]["accuracy_per_task"]

    older = _copy(runs / "maml", tmp_path / "older", old)
    with pytest.raises(ValidationError, match=r"run_dirs\[1\]: methods\.pixel_nn\."
                       r"accuracy_per_task: must be in .*to check that the runs' test tasks"):
        og.combine([runs / "cml", older], tmp_path / "o")
    # a maml checkpoint of another training (2 meta-steps) beside this run's results
    og.run(tmp_path / "short", progress=False, methods="maml",
           overrides=TINY + ["baselines.steps=2"])
    foreign = _copy(runs / "maml", tmp_path / "foreign", lambda res: None)
    shutil.copyfile(tmp_path / "short" / "maml_checkpoint.npz",
                    foreign / "maml_checkpoint.npz")
    with pytest.raises(ckpt.CheckpointError):
        og.combine([runs / "cml", foreign], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    (foreign / "maml_checkpoint.npz").unlink()          # missing: combined, with a warning
    with pytest.warns(UserWarning, match=r"maml_checkpoint\.npz: missing"):
        og.combine([runs / "cml", foreign], tmp_path / "o")


def test_results_that_are_not_their_configurations_test_tasks_are_refused(runs, tmp_path):
    """Both runs' results.json agree with each other but not with the data: pixel nearest
    neighbour, scored again on the tasks the configuration draws, catches it (the first
    run is the one checked; the others are checked equal to it)."""
    def flipped(res):
        acc = res["methods"]["pixel_nn"]["accuracy_per_task"]
        acc[3] = 1.0 - acc[3]

    a = _copy(runs / "cml", tmp_path / "a", flipped)
    b = _copy(runs / "maml", tmp_path / "b", flipped)
    want = json.loads((runs / "cml" / "results.json").read_text())["methods"]["pixel_nn"]
    with pytest.raises(ValidationError, match=(
            r"omniglot\.combine: run_dirs\[0\]: must hold the test tasks its configuration "
            r"draws: pixel_nn \(no meta-learning\), scored again on them, gets test task 3 "
            + str(want["accuracy_per_task"][3]).replace(".", r"\."))):
        og.combine([a, b], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # one task fewer in both: refused too
    def shorter(res):
        res["methods"]["pixel_nn"]["accuracy_per_task"].pop()

    short = [_copy(runs / m, tmp_path / f"short_{m}", shorter) for m in ("cml", "maml")]
    with pytest.raises(ValidationError, match=r"8 tasks now, 7 there"):
        og.combine(short, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", [None, "1", True, 1.0, -1])
def test_a_run_without_a_whole_seed_is_refused_in_one_line(runs, tmp_path, capsys, seed):
    """A hand-made meta.seed that is missing, not a whole number or negative: one line
    naming the run, before anything is read further or written (with runs of another
    seed beside it, and alone)."""
    def edit(res):
        if seed is None:
            del res["config"]["meta"]["seed"]
        else:
            res["config"]["meta"]["seed"] = seed

    odd = _copy(runs / "maml", tmp_path / "odd", edit)
    for first in (runs / "cml", runs / "cml_maml"):
        code = main(["combine", str(first), str(odd), "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"omniglot.combine: run_dirs[1]: config.meta.seed: must be a whole number " \
            f">= 0 (got {seed!r})" in err[0], err
        assert not (tmp_path / "c").exists()
