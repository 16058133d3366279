"""The command line as a user drives it: shipped and own model files, overrides, seeds,
and a wheel installed outside the repository."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import cli
from neuro_meta.errors import ValidationError
from neuro_meta.experiments.seeds import ci95, parse_seeds
from neuro_meta.models import SHIPPED, apply_overrides, available_models, load_model

ROOT = Path(__file__).resolve().parent.parent
TINY = """extends: sinusoid
compare: {budget_s: null, eval_every_s: null, targets: [0.5], val_tasks: null}   # steps
meta: {steps: 2, meta_batch: 3, learning_rate: 6.0e-3, clip: 1.0, lam_min: 0.5,
       eval_every: 2, eval_tasks: 6, seed: 0}
baselines: {steps: 4, meta_batch: 3, learning_rate: 1.0e-3, eval_every: 2,
            maml: {inner_lr: 0.01, inner_steps: 2}}
"""


def _main(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "user" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(TINY)
    return path


# ---------------------------------------------------------------------- model files
def test_shipped_files_are_package_data():
    """The shipped files are in the package (wheels carry them) and are the repository's
    top-level models/ folder."""
    names = {n: (src, p) for n, src, p in available_models()}
    assert {"sinusoid", "sinusoid_dual", "consolidation", "gradcheck"} <= set(names)
    assert all(src == "shipped" for src, _ in names.values())
    assert SHIPPED.resolve() == (ROOT / "models").resolve()
    assert load_model("sinusoid_dual")["experiment"] == "sinusoid"      # inherited


def test_user_folders_come_first_and_are_listed_with_their_source(tmp_path, monkeypatch,
                                                                   capsys):
    mine, env = tmp_path / "mine", tmp_path / "env"
    mine.mkdir()
    env.mkdir()
    (mine / "sinusoid.yaml").write_text("experiment: sinusoid\nfamily: {shots: 3, val: 3}\n")
    (env / "other.yaml").write_text("extends: consolidation\n")
    monkeypatch.setenv("NEURO_META_MODELS", str(env))
    code, out, _ = _main(capsys, "models", "--models", str(mine))
    assert code == 0
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert lines["sinusoid"] == "--models" and lines["other"] == "NEURO_META_MODELS"
    assert lines["consolidation"] == "shipped"
    assert load_model("sinusoid", dirs=[mine])["family"]["shots"] == 3
    assert load_model("other")["experiment"] == "consolidation"


@pytest.mark.parametrize("given, why", [("", "an empty path"), ("afile", "a file, not a folder"),
                                        ("nowhere", "no such folder")])
def test_models_folder_must_be_a_folder(tmp_path, capsys, given, why):
    """--models "" listed the working folder's files (Path("") is "."); a file was
    reported as missing."""
    (tmp_path / "afile").write_text("x")
    path = str(tmp_path / given) if given else ""
    code, out, err = _main(capsys, "models", "--models", path)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("neuro-meta: error: --models: must name a folder of model files "
                          f"(got {path!r}: {why})"), err


def test_overrides_replace_single_values_and_refuse_unknown_sections():
    cfg = load_model("sinusoid")
    new = apply_overrides(cfg, ["meta.steps=7", "learner.dt=0.005", "family.amplitude=[1, 2]",
                                "learner.substeps=auto"])
    assert new["meta"]["steps"] == 7 and new["learner"]["dt"] == 0.005
    assert new["family"]["amplitude"] == [1, 2] and new["learner"]["substeps"] == "auto"
    assert cfg["meta"]["steps"] != 7                            # the original is untouched


def test_exponent_numbers_without_a_dot_are_numbers_everywhere(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as the string "1e-3": in --set values, inside lists
    and in model files alike it is the number; quoted, it stays a string."""
    cfg = load_model("sinusoid")
    new = apply_overrides(cfg, ["family.amplitude=[1, 5e0]", "learner.dt=2e-2",
                                "meta.learning_rate=-1E-3"])
    assert new["family"]["amplitude"] == [1, 5.0] and new["learner"]["dt"] == 0.02
    assert new["meta"]["learning_rate"] == -1e-3
    assert apply_overrides(cfg, ['learner.substeps="1e3"'])["learner"]["substeps"] == "1e3"
    (tmp_path / "mine.yaml").write_text("extends: sinusoid\nlearner: {rule: backprop, "
                                        "integrator: expeuler, dt: 2e-2, tol: [1e-3, .5e1]}\n")
    got = load_model(str(tmp_path / "mine.yaml"))["learner"]
    assert got["dt"] == 0.02 and got["tol"] == [1e-3, 5.0]


def test_a_files_quick_overlay_is_checked_on_every_run(tmp_path, capsys):
    """A misspelt key in the file's quick: overlay is refused with or without --quick
    (it was found only under --quick), before any work."""
    import yaml

    cfg = load_model("sinusoid")
    cfg.pop("_file")
    cfg["quick"]["meta"]["stepz"] = 3
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    for extra in ([], ["--quick"]):
        code = cli.main(["run", str(tmp_path / "mine.yaml"), "--methods", "untrained",
                         "--out", str(tmp_path / "o")] + extra)
        err = capsys.readouterr().err
        assert code == 2 and "meta.stepz: unknown key (did you mean 'steps'?)" in err, err
        assert "quick.meta.stepz" in err or extra
    assert not (tmp_path / "o" / "results.json").exists()


# ---------------------------------------------------------------------- running
def test_run_a_user_file_with_overrides(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _main(capsys, "run", str(tiny), "--set", "meta.steps=3",
                            "--set", "meta.eval_every=3", "--methods", "cml,maml",
                            "--no-progress", "--out", str(out))
    assert code == 0 and "cml" in stdout and "maml" in stdout
    res = json.loads((out / "results.json").read_text())
    assert res["methods"]["cml"]["meta_steps"] == 3
    assert res["config"]["_overrides"] == ["meta.steps=3", "meta.eval_every=3"]
    assert res["config"]["_file"] == str(tiny)
    hist = res["history"]["cml"]
    assert len(hist["time_s"]) == len(hist["step"]) and hist["time_s"][0] < 0.05
    assert np.all(np.diff(hist["time_s"]) > 0)
    assert (out / "sinusoid.png").stat().st_size > 10_000


BAD = {
    "no '='": ["--set", "meta.steps"],
    "empty key": ["--set", "=3"],
    "empty key part": ["--set", "meta..steps=3"],
    "unknown section": ["--set", "nosuch.x=1"],
    "a value, not a section": ["--set", "meta.steps.x=1"],
    "not an integer": ["--set", "meta.steps=abc"],
    "negative steps": ["--set", "meta.steps=-1"],
    "unknown key": ["--set", "meta.unknown=1"],
    "negative dt": ["--set", "learner.dt=-0.1"],
    "unknown integrator": ["--set", "learner.integrator=foo"],
    "no shots": ["--set", "family.shots=0"],
    "beta 0": ["--set", "cml.beta=0"],
    "broken YAML value": ["--set", "meta.learning_rate=[1,2"],
    "one layer": ["--set", "network.sizes=[1]"],
    "negative seed": ["--set", "meta.seed=-1"],
    "missing folder": ["--models", "/no/such/folder"],
    "no seeds": ["--seeds", "0"],
    "bad seeds": ["--seeds", "a,b"],
    "repeated seeds": ["--seeds", "1,1"],
    "seeds and seed": ["--seeds", "2", "--seed", "1"],
}
BAD_FILES = {
    "missing file": "",
    "not YAML": "a: [1, 2\n",
    "a list": "- 1\n- 2\n",
    "unknown parent": "extends: nosuch\n",
    "no experiment": "family: {shots: 3, val: 3}\n",
    "unknown experiment": "experiment: nope\n",
    "unknown section": "extends: sinusoid\nfoo: 1\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_overrides_are_one_line_and_status_2(case, tiny, tmp_path, capsys):
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                         "--no-progress", "--out", str(tmp_path / "o"), *BAD[case])
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("neuro-meta: error: "), err


def test_a_refused_run_leaves_no_folder_it_created(tiny, tmp_path, capsys):
    """--out a/b, both new, and a setting refused: neither folder is left behind; an
    --out that existed before stays (and a run that succeeds keeps its new folder)."""
    bad = ("--set", "meta.steps=0")
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                         "--no-progress", "--out", str(tmp_path / "a" / "b"), *bad)
    assert code == 2 and "meta.steps" in err and not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    code, _, _ = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                       "--no-progress", "--out", str(tmp_path / "kept"), *bad)
    assert code == 2 and (tmp_path / "kept").is_dir()
    code, _, _ = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                       "--no-progress", "--out", str(tmp_path / "ok"))
    assert code == 0 and (tmp_path / "ok" / "results.json").exists()


@pytest.mark.parametrize("command", [
    ("run", "sinusoid", "--quick"), ("bench", "--quick"), ("gradcheck",),
    ("gradquality", "--quick"), ("combine", "r1", "r2")])
def test_out_errors_name_the_command_they_belong_to(command, tmp_path, capsys):
    """--out that is a file, or empty: one line naming ``neuro-meta <command>.--out``
    (not another command's), status 2, nothing run."""
    afile = tmp_path / "a_file"
    afile.write_text("")
    for out, rule in ((str(afile), "must be a folder, not a file"),
                      ("", "must name a folder")):
        code, _, err = _main(capsys, *command, "--no-progress", "--out", out) \
            if command[0] in ("run", "gradcheck", "gradquality") else \
            _main(capsys, *command, "--out", out)
        assert code == 2, err
        assert err.count("\n") == 1, err
        assert f"neuro-meta {command[0]}.--out: {rule}" in err, err


def test_warnings_of_a_command_are_one_line(tiny, tmp_path, capsys):
    """A warning a run gives (here: --resume in a folder with nothing to resume) is one
    line ``neuro-meta: warning: ...`` without its source line; --debug keeps Python's."""
    (tmp_path / "empty").mkdir()
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                         "--no-progress", "--resume", "--out", str(tmp_path / "empty"))
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("neuro-meta: warning: --resume: ") and "starting afresh" in \
        lines[0] and "cli.py" not in err, err


def test_a_refused_command_prints_only_its_error(tiny, tmp_path, capsys):
    """A setting that warns (beta < 10 tol) and a later one that is refused: one line,
    the error; the warning of a setting is held until the work starts and dropped with
    the command. The same warning setting alone is shown (one line) and the run goes on."""
    beta = ("--set", "cml.beta=1e-6")
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", *beta,
                         "--set", "baselines.maml.inner_lr=-1", "--out", str(tmp_path / "a"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("neuro-meta: error: ") and "MAML.inner_lr" in err, err
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--methods",
                         "cml", *beta, "--out", str(tmp_path / "b"))
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("neuro-meta: warning (UnsettledEstimateWarning): CML: beta"), err


def test_held_warnings_are_shown_when_the_work_fails(capsys, monkeypatch):
    """Only a refused setting (ValidationError) drops the warnings held before the work
    started; a simulation that fails shows them before its error, and a forked worker
    shows its own at once and never the parent's held ones."""
    import warnings as w

    def fails(args):
        w.warn("beta is small for this tolerance", UserWarning)
        raise nm.SimulationError("the phase diverged. Hint: lower dt")

    monkeypatch.setattr(cli, "_dispatch", fails)
    code, _, err = _main(capsys, "models")
    assert code == 2 and err.splitlines() == [
        "neuro-meta: warning: beta is small for this tolerance",
        "neuro-meta: error: the phase diverged. Hint: lower dt"], err

    def refused(args):
        w.warn("beta is small for this tolerance", UserWarning)
        raise nm.ValidationError("meta.steps: must be >= 1 (got 0)")

    monkeypatch.setattr(cli, "_dispatch", refused)
    code, _, err = _main(capsys, "models")
    assert code == 2 and err == "neuro-meta: error: meta.steps: must be >= 1 (got 0)\n", err

    held = cli._HeldWarnings()
    held.show("the parent's", UserWarning, "f.py", 1)
    monkeypatch.setattr(cli.os, "getpid", lambda: held.pid + 1)     # as in a forked child
    held.show("the child's", UserWarning, "f.py", 2)
    held.release()
    assert capsys.readouterr().err == "neuro-meta: warning: the child's\n"
    monkeypatch.undo()
    held.release()
    assert capsys.readouterr().err == "neuro-meta: warning: the parent's\n"


@pytest.mark.parametrize("item, rule, end", [
    ("meta.learning_rate=-1", "meta.learning_rate: adam.learning_rate: must be > 0",
     "(the value given by --set)"),
    ("meta.betta=1", "meta.betta: unknown key", "(the value given by --set)"),
    ("network.activation=[tanh]", "network: RateNetwork.activation: needs one",  # a rule
     "(with --set network.activation=[tanh])"),                    # between two keys
])
def test_an_error_from_a_set_value_names_the_set(tiny, tmp_path, capsys, item, rule, end):
    """An error about a value a --set gave names the file the other values came from;
    it also says the value came from --set (the key named once), or which --set of the
    section it names it is about."""
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--set",
                         "meta.steps=2", "--set", item, "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    assert rule in err and str(tiny) in err, err
    assert err.rstrip().endswith(end), err
    if end == "(the value given by --set)":
        assert err.count(item.split("=")[0]) == 1, err         # the key named once


def test_a_key_put_in_the_wrong_section_is_pointed_to_its_own(tiny, tmp_path, capsys):
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--set",
                         "meta.dt=0.01", "--out", str(tmp_path / "o"))
    assert code == 2 and "meta.dt: unknown key (a key of the learner section)" in err, err
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--set",
                         "meta.learner=1", "--out", str(tmp_path / "o"))
    assert code == 2 and "meta.learner: unknown key (a top-level section, not a key of " \
        "meta)" in err, err


@pytest.mark.parametrize("item", ["learner.dt=0.01", "meta.steps=2", "meta.dt=0.01"])
def test_an_error_not_from_a_set_value_does_not_name_it(tiny, tmp_path, capsys, item):
    """The file's own bad value, with a --set of another section, of another key of the
    same section, or of a key whose name the message's hint mentions: no --set named."""
    tiny.write_text(tiny.read_text().replace("learning_rate: 6.0e-3",
                                             "learning_rate: -6.0e-3", 1))
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--set",
                         item, "--out", str(tmp_path / "o"))
    if item == "meta.dt=0.01":          # its own error comes first: named once, as its own
        assert code == 2 and "(the value given by --set)" in err, err
        return
    assert code == 2 and "must be > 0" in err and "--set" not in err, err


def test_a_files_wrong_key_is_not_blamed_on_a_set_its_hint_names(tiny, tmp_path, capsys):
    tiny.write_text(tiny.read_text().replace("eval_every: 2, eval_tasks: 6, seed: 0}",
                                             "eval_every: 2, eval_tasks: 6, seed: 0, dt: 1}"))
    code, _, err = _main(capsys, "run", str(tiny), "--quick", "--no-progress", "--set",
                         "learner.dt=0.01", "--out", str(tmp_path / "o"))
    assert code == 2 and "meta.dt: unknown key" in err and "--set" not in err, err


def test_gradcheck_given_to_run_points_to_its_command(tmp_path, capsys):
    code, _, err = _main(capsys, "run", "gradcheck", "--no-progress", "--out",
                         str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1, err
    assert "gradcheck is not run by neuro-meta run: it has a command of its own, " \
        "neuro-meta gradcheck" in err, err


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_and_status_2(case, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    if BAD_FILES[case]:
        path.write_text(BAD_FILES[case])
    code, _, err = _main(capsys, "run", str(path), "--quick", "--no-progress", "--out",
                         str(tmp_path / "o"))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("neuro-meta: error: "), err


# ---------------------------------------------------------------------- seeds
def test_seed_lists_and_confidence_intervals():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4,7") == [0, 4, 7]
    assert len(parse_seeds("1000")) == 1000
    # a count beyond the limit (or beyond a C integer) is refused, not an OverflowError
    for text in ("1001", "99999999999999999999", ",".join(map(str, range(1001)))):
        with pytest.raises(ValidationError, match=r"--seeds: .*(1\.\.1000|at most 1000)"):
            parse_seeds(text)
    rng = np.random.default_rng(0)
    # the CI covers the mean of normal samples in ~95 % of repeats (independent check)
    hits = 0
    for _ in range(2000):
        v = rng.normal(1.0, 2.0, size=4)
        m, h = ci95(v)
        hits += abs(m - 1.0) <= h
    assert 0.93 < hits / 2000 < 0.97
    m, h = ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302652729749464 * 1.0 / np.sqrt(3))


def test_seeds_serial_and_dask_give_identical_per_seed_numbers(tiny, tmp_path, capsys):
    pytest.importorskip("dask.distributed")
    runs = {}
    for label, extra in (("serial", []), ("dask", ["--executor", "dask", "--workers", "2"])):
        out = tmp_path / label
        code, stdout, err = _main(capsys, "run", str(tiny), "--seeds", "2", "--methods",
                                  "cml,maml", "--no-progress", "--out", str(out), *extra)
        assert code == 0, err
        assert "± 95% CI" in stdout and "2 seeds: 0, 1" in stdout
        runs[label] = json.loads((out / "results.json").read_text())
    a, b = runs["serial"], runs["dask"]
    for name in ("cml", "maml", "cml_untrained"):
        assert a["methods"][name]["per_seed"] == b["methods"][name]["per_seed"]
        assert len(set(a["methods"][name]["per_seed"])) == 2       # the seeds differ
    assert (tmp_path / "serial" / "seeds.png").exists()
    assert (tmp_path / "serial" / "seed_1" / "results.json").exists()


def test_seeds_resume_refuses_a_damaged_later_seed_before_any_seed_runs(tiny, tmp_path,
                                                                       capsys):
    """``--seeds 2 --resume`` with seed 1's checkpoint truncated: one line, exit 2, and
    seed 0 -- finished or not -- is not touched (its folder's files keep their bytes and
    no results.json appears); the same with a partial.json that is not JSON. A seed
    folder that does not exist is a seed not begun, not an error."""
    out = tmp_path / "run"
    code, _, err = _main(capsys, "run", str(tiny), "--seeds", "1", "--methods", "cml",
                         "--no-progress", "--out", str(out))
    assert code == 0, err
    seed0 = out / "seed_0"
    (seed0 / "results.json").unlink()
    (out / "results.json").unlink()
    before = {p.name: p.read_bytes() for p in seed0.iterdir() if p.is_file()}
    assert "cml_checkpoint.npz" in before
    damaged = out / "seed_1"
    damaged.mkdir()
    (damaged / "cml_checkpoint.npz").write_bytes(before["cml_checkpoint.npz"][:500])
    for bad in ("checkpoint", "partial"):
        code, stdout, err = _main(capsys, "run", str(tiny), "--seeds", "2", "--methods",
                                  "cml", "--no-progress", "--out", str(out), "--resume")
        assert code == 2 and stdout == ""
        line = err.strip()
        assert "\n" not in line and "seed_1" in line
        assert ("cml_checkpoint.npz" in line) if bad == "checkpoint" else \
            ("partial.json: not valid JSON" in line)
        assert {p.name: p.read_bytes() for p in seed0.iterdir() if p.is_file()} == before
        assert not (out / "results.json").exists()
        (damaged / "cml_checkpoint.npz").unlink(missing_ok=True)
        (damaged / "partial.json").write_text('{"methods": ')
    (damaged / "partial.json").unlink()
    damaged.rmdir()
    from neuro_meta.experiments.seeds import check_resumable
    check_resumable(out / "seed_7")          # not begun: nothing to check
    with pytest.raises(ValidationError, match=r"check_resumable\.folder: must be a path"):
        check_resumable(3)


# ---------------------------------------------------------------------- the wheel
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """``pip install`` of the wheel (not -e) into a new virtual environment (the test
    environment's packages reachable, not its editable neuro_meta); from a folder outside
    the repository: the shipped files are listed, a quick experiment runs."""
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("neuro_meta-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True,
                          text=True).stdout.strip()
    Path(site, "test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEURO_META_MODELS")}
    where = subprocess.run([py, "-c", "import neuro_meta; print(neuro_meta.__file__)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True)
    assert where.stdout.startswith(str(venv))
    exe = venv / "bin" / "neuro-meta"
    listed = subprocess.run([exe, "models"], cwd=work, env=env, check=True,
                            capture_output=True, text=True).stdout
    assert "sinusoid" in listed and "consolidation" in listed and str(venv) in listed
    run = subprocess.run([exe, "run", "sinusoid", "--quick", "--no-progress", "--out", "out"],
                         cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    methods = json.loads((work / "out" / "results.json").read_text())["methods"]
    assert {"cml", "maml", "fomaml", "reptile", "imaml", "untrained"} <= set(methods)


def test_results_record_the_software_that_made_them(tiny, tmp_path, capsys):
    """results.json's ``software``: the installed versions (from the package metadata,
    independently of neuro_meta's own reading), numba null when it is not installed."""
    from importlib import metadata

    import neuro_meta
    from neuro_meta.engines import fused

    code, _, _ = _main(capsys, "run", str(tiny), "--quick", "--methods", "cml",
                       "--no-progress", "--out", str(tmp_path / "o"))
    sw = json.loads((tmp_path / "o" / "results.json").read_text())["software"]
    assert code == 0 and sw["neuro_meta"] == neuro_meta.__version__
    assert sw["python"] == ".".join(map(str, sys.version_info[:3]))
    assert (sw["numpy"], sw["brian2"]) == (np.__version__, metadata.version("brian2"))
    assert (sw["numba"] is not None) == fused.AVAILABLE
