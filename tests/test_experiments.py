"""Experiments and the command line: outputs, science checks, errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from neuro_meta.errors import ValidationError
from neuro_meta.experiments import consolidation, gradcheck
from neuro_meta.models import load_model


def test_roc_auc_against_definition():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([False, False, True, True])
    # pairs (pos, neg): (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4
    assert consolidation.roc_auc(scores, labels) == 0.75
    assert consolidation.roc_auc([1, 1], [True, False]) == 0.5
    assert consolidation.roc_auc([1, 2], [True, True]) is None     # no negatives


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_consolidation_with_one_group_writes_strict_json(tmp_path, fraction):
    """shared_fraction 0 or 1 leaves one group of synapses empty: its statistics are
    undefined -- null in results.json (it held NaN, which is not JSON), n/a in the table
    -- not NaN with a RuntimeWarning."""
    import warnings

    def strict(name):
        raise AssertionError(f"not JSON: {name}")

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = consolidation.run(tmp_path, quick=True, progress=False,
                                overrides=[f"family.shared_fraction={fraction}"])
    back = json.loads((tmp_path / "results.json").read_text(), parse_constant=strict)
    empty = "specific" if fraction == 1.0 else "shared"
    assert back["lambda_auc"] is None and back["lambda_mean"][empty] is None
    assert (back["omega_shared_rmse"] is None) == (fraction == 0.0)
    line = consolidation.summary_table(back).splitlines()[-1]
    assert line.startswith("lambda_auc = n/a") and "n/a" in line.split("=")[-1]
    assert consolidation.summary_table(res) == consolidation.summary_table(back)


def test_gradcheck_writes_results_with_theory_slopes(tmp_path):
    cfg = load_model("gradcheck")
    cfg["sweeps"]["betas"] = [0.1, 0.05, 0.02, 0.01, 0.005]
    cfg["sweeps"]["fit_range"] = [0.004, 0.11]
    cfg["sweeps"]["tols"] = [1e-10, 1e-7, 1e-4]
    res = gradcheck.run(tmp_path, cfg=cfg, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "gradcheck.png").stat().st_size > 10_000
    assert 0.9 <= saved["fitted_slope"]["standard"] <= 1.1
    assert 1.9 <= saved["fitted_slope"]["symmetric"] <= 2.1
    # the δ/β floor: at β = 1e-3 a loose tolerance is much worse than a tight one
    e = saved["tolerance_sweep"]["error_by_beta"]["0.001"]
    assert e[-1] > 100 * e[0]
    assert res["beta"][0] == 0.1


def _title_then_header(table, header_start):
    """A printed table starts with its title (wrapped to at most 100 columns), then the
    column heads; the title, unwrapped."""
    lines = table.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(header_start))
    assert head >= 1, lines[0]
    assert all(len(ln) <= 100 for ln in lines[:head]), lines[:head]
    return " ".join(lines[:head])


def test_consolidation_table_has_a_title_with_what_and_units():
    cfg = load_model("consolidation")
    row = {"meta_test_mse": 1.0, "sem": 0.1, "wall_time_s": 2.0, "meta_steps": 3}
    res = {"methods": {"cml": row, "untrained": dict(row, meta_steps=0)}, "lambda_auc": 0.9,
           "omega_shared_rmse": 0.1, "lambda_mean": {"shared": 2.0, "specific": 0.2},
           "config": cfg}
    title = _title_then_header(consolidation.summary_table(res), "method")
    assert title.startswith("Consolidation")
    assert "meta-test MSE (squared output units) ± s.e.m." in title
    assert f"over {cfg['meta']['eval_tasks']} held-out test tasks" in title
    assert "wall time in s" in title
    # a results dict without its configuration (an older file) still gets its title
    res.pop("config")
    assert _title_then_header(consolidation.summary_table(res), "method").startswith(
        "Consolidation")


def test_gradcheck_table_has_a_title_with_what_and_units():
    cfg = load_model("gradcheck")
    res = {"beta": [0.1, 0.01], "error_vs_beta": {"standard": [0.1, 0.01],
                                                  "symmetric": [0.01, 0.0001]},
           "fitted_slope": {"standard": 1.0, "symmetric": 2.0}, "config": cfg}
    title = _title_then_header(gradcheck.summary_table(res), "beta")
    assert title.startswith("CML meta-gradient error against the nudging strength β")
    assert "relative error ‖g_cml\u2009−\u2009g_exact‖/‖g_exact‖" in title   # unbroken
    assert "(both dimensionless)" in title
    assert f"tolerance δ = {cfg['sweeps']['tight_tol']:g}" in title
    res.pop("config")
    assert "relative error" in _title_then_header(gradcheck.summary_table(res), "beta")


def test_gradcheck_slope_skips_errors_without_a_logarithm():
    """The fitted slope of exact power laws, over the points whose error is positive
    and finite; None (shown n/a, as results.json's null is) if fewer than two remain."""
    betas = np.array([1e-3, 1e-2, 1e-1, 1.0])
    assert gradcheck.fitted_slope(betas, 0.5 * betas ** 2) == pytest.approx(2.0, abs=1e-12)
    with_zero = np.array([0.0, 3e-2, 3e-1, np.nan])       # exactly 0: no logarithm
    assert gradcheck.fitted_slope(betas, with_zero) == pytest.approx(1.0, abs=1e-12)
    assert gradcheck.fitted_slope(betas, np.array([0.0, 0.0, 1e-3, np.nan])) is None
    res = {"beta": [0.1, 0.01], "error_vs_beta": {"standard": [0.1, None],
                                                  "symmetric": [0.0, float("nan")]},
           "fitted_slope": {"standard": None, "symmetric": 2.0}}
    lines = gradcheck.summary_table(res).splitlines()
    assert lines[-1] == "fitted slopes: standard n/a (theory 1), symmetric 2.00 (theory 2)"
    assert lines[-2].split() == ["1.0e-02", "n/a", "n/a"]
    assert lines[-3].split() == ["1.0e-01", "1.000e-01", "0.000e+00"]


def test_gradcheck_plots_only_errors_a_log_axis_can_show():
    """An error of exactly 0 (or NaN) is left out of the log-log figure, at every series'
    shared x, instead of the plot refusing it after results.json was written."""
    x, errs = gradcheck.plottable([1e-3, 1e-2, 1e-1], {"standard": [0.0, 2e-2, 3e-1],
                                                        "symmetric": [1e-6, np.nan, 1e-2]})
    np.testing.assert_array_equal(x, [1e-1])
    assert errs == {"standard": [3e-1], "symmetric": [1e-2]}
    x, errs = gradcheck.plottable([1.0], {"standard": [0.0]})
    assert x.size == 0 and errs["standard"].size == 0


def test_consolidation_quick_beats_untrained(tmp_path):
    res = consolidation.run(tmp_path, quick=True, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["methods"]
    assert m["cml"]["meta_test_mse"] <= 0.5 * m["untrained"]["meta_test_mse"]
    assert saved["lambda_mean"]["shared"] > saved["lambda_mean"]["specific"]
    assert (tmp_path / "consolidation.png").stat().st_size > 10_000
    assert set(m["cml"]) == {"meta_test_mse", "sem", "wall_time_s", "meta_steps"}
    assert res["lambda_auc"] == saved["lambda_auc"]
    assert _title_then_header(consolidation.summary_table(saved), "method").startswith(
        "Consolidation")


def test_consolidation_is_deterministic(tmp_path):
    cfg = load_model("consolidation")
    cfg["meta"].update(steps=4, eval_every=2, eval_tasks=8)
    a = consolidation.run(tmp_path / "a", cfg=cfg, progress=False)
    b = consolidation.run(tmp_path / "b", cfg=cfg, progress=False)
    np.testing.assert_array_equal(a["meta_parameters"]["lam"], b["meta_parameters"]["lam"])


@pytest.mark.slow
def test_consolidation_default_run_finds_shared_synapses(tmp_path):
    """Issue acceptance: lambda_auc >= 0.95 and omega_shared_rmse <= 0.05."""
    res = consolidation.run(tmp_path, progress=False)
    assert res["lambda_auc"] >= 0.95
    assert res["omega_shared_rmse"] <= 0.05


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "neuro_meta.cli", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_bad_model_file_gives_clear_error_without_traceback(tmp_path):
    import os

    good = load_model("consolidation")
    text = open(good["_file"]).read().replace("  shots: 5 ", "  shotz: 5 ")
    (tmp_path / "consolidation.yaml").write_text(text)
    env = dict(os.environ, NEURO_META_MODELS=str(tmp_path))
    r = _cli("run", "consolidation", "--quick", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "consolidation.yaml" in r.stderr and "family" in r.stderr and "shots" in r.stderr
    (tmp_path / "consolidation.yaml").write_text(text.replace("shotz: 5", "shots: -5"))
    r = _cli("run", "consolidation", "--quick", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "LinearTeacher.shots: must be >= 1 (got -5)" in r.stderr
    (tmp_path / "consolidation.yaml").write_text("family: [1, 2\n")
    r = _cli("run", "consolidation", "--quick", env=env)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = _cli("--debug", "run", "consolidation", "--quick", env=env)
    assert r.returncode == 2 and "Traceback" in r.stderr    # the status as without
    r = _cli("run", "consolidation", "--quick", "--debug", env=env)     # after the command
    assert r.returncode == 2 and "Traceback" in r.stderr and "not valid YAML" in r.stderr


def test_cli_models_lists_files():
    r = _cli("models")
    assert r.returncode == 0
    assert "consolidation" in r.stdout and "gradcheck" in r.stdout


def test_model_files_extend_others_section_by_section(tmp_path, monkeypatch):
    from neuro_meta.errors import ValidationError

    monkeypatch.setenv("NEURO_META_MODELS", str(tmp_path))
    (tmp_path / "base.yaml").write_text("a: {x: 1, y: 2}\nb: {z: 3}\n")
    (tmp_path / "child.yaml").write_text("extends: base\na: {x: 10}\nc: 4\n")
    cfg = load_model("child")
    assert cfg["a"] == {"x": 10} and cfg["b"] == {"z": 3} and cfg["c"] == 4
    assert cfg["_file"].endswith("child.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop2\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop\n")
    with pytest.raises(ValidationError, match=r"extends: must name another model file"):
        load_model("loop")


@pytest.mark.parametrize("lam_range", [float("nan"), "x", None, [[[]]], [1.0], [0.0, 1.0],
                                       [2.0, 1.0], [0.5, float("inf")]])
def test_gradcheck_refuses_a_bad_lam_range_before_any_work(lam_range):
    """problem.lam_range (lambda ~ U(low, high) per synapse): two positive numbers, low <=
    high -- a ValidationError naming the key (was a raw TypeError/ValueError from numpy,
    found by the CLI fuzz's example database)."""
    cfg = load_model("gradcheck")
    cfg["problem"]["lam_range"] = lam_range
    with pytest.raises(ValidationError, match="problem.lam_range"):
        gradcheck.check_cfg(cfg)


class _Stop(Exception):
    pass


def test_resume_with_nothing_to_resume_warns_consolidation_and_bandit(tmp_path, monkeypatch):
    """--resume in a folder with nothing to resume (a mistyped --out) warns, naming the
    folder, before any work (consolidation: no checkpoint; bandit: no meta-parameters nor
    checkpoints); with the file there, no warning."""
    import warnings

    from neuro_meta.experiments import bandit

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(consolidation.MetaTrainer, "evaluate", stop)
    with pytest.warns(UserWarning, match=r"--resume: .*typo holds no checkpoint; starting"):
        with pytest.raises(_Stop):
            consolidation.run(tmp_path / "typo", quick=True, progress=False, resume=True)
    monkeypatch.setattr(bandit, "check_checkpoints", stop)
    with pytest.warns(UserWarning, match=r"--resume: .*typo2 holds no meta-parameters nor "
                      r"checkpoints; starting afresh"):
        with pytest.raises(_Stop):
            bandit.run(tmp_path / "typo2", quick=True, progress=False, resume=True)
    (tmp_path / "typo" / "checkpoint.npz").write_bytes(b"")
    (tmp_path / "typo2" / "maml_checkpoint.npz").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="--resume")
        with pytest.raises(_Stop):
            consolidation.run(tmp_path / "typo", quick=True, progress=False, resume=True)
        with pytest.raises(_Stop):
            bandit.run(tmp_path / "typo2", quick=True, progress=False, resume=True)
