"""`neuro-meta run sinusoid`: CML and baselines on the same tasks."""
import json

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta.experiments import sinusoid


def test_quick_run_schema_and_cml_beats_untrained(tmp_path):
    res = sinusoid.run(tmp_path, quick=True, methods="cml,reptile,untrained", progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["methods"]
    assert {"cml", "reptile", "untrained", "cml_untrained"} <= set(m)
    for r in m.values():
        assert {"meta_test_mse", "sem", "wall_time_s", "meta_steps"} <= set(r)
        assert np.isfinite(r["meta_test_mse"])
    # issue acceptance (--quick): CML <= 0.5 x untrained
    assert m["cml"]["meta_test_mse"] <= 0.5 * m["untrained"]["meta_test_mse"]
    assert saved["config"]["meta"]["steps"] == 20
    assert (tmp_path / "sinusoid.png").stat().st_size > 10_000
    assert res["methods"]["cml"] == m["cml"]


def test_resume_skips_finished_methods(tmp_path):
    cfg = sinusoid._cfg(None, True, None)
    cfg["meta"].update(steps=2, eval_every=1, eval_tasks=4)
    cfg["baselines"].update(steps=3, eval_every=3)
    a = sinusoid.run(tmp_path, cfg=cfg, methods="reptile,cml", progress=False)
    b = sinusoid.run(tmp_path, cfg=cfg, methods="reptile,cml", progress=False, resume=True)
    assert a["methods"]["reptile"] == b["methods"]["reptile"]
    assert a["methods"]["cml"]["meta_test_mse"] == b["methods"]["cml"]["meta_test_mse"]


def test_all_methods_see_the_same_tasks():
    """Baselines and CML draw meta-training tasks from the same seeded stream."""
    from neuro_meta.metatrain import TRAIN, task_rng

    fam = nm.families.Sinusoid()
    a = fam.sample(task_rng(0, TRAIN, 5), 3)
    b = fam.sample(task_rng(0, TRAIN, 5), 3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = fam.sample(task_rng(0, TRAIN, 6), 3)
    assert not np.array_equal(a.x_train, c.x_train)


def test_bad_methods_are_refused():
    with pytest.raises(nm.ValidationError, match=r"run sinusoid\.methods: .*\(got cml,mamal\)"):
        sinusoid.parse_methods("cml,mamal")


@pytest.mark.slow
def test_default_run_cml_matches_baselines(tmp_path):
    """Issue acceptance: CML <= 1.2 x the best baseline and <= 0.25 x untrained (about
    7 minutes on 2 cores)."""
    res = sinusoid.run(tmp_path, progress=False)
    m = {k: v["meta_test_mse"] for k, v in res["methods"].items()}
    best = min(m[k] for k in ("maml", "fomaml", "reptile", "imaml"))
    assert m["cml"] <= 1.2 * best
    assert m["cml"] <= 0.25 * m["untrained"]


def test_dual_quick_run_beats_untrained_and_plots_fast_patterns(tmp_path):
    """Issue acceptance (dual system, --quick): CML <= 0.5 x untrained."""
    res = sinusoid.run(tmp_path, quick=True, model="dual", methods="cml,untrained",
                       progress=False)
    m = res["methods"]
    assert m["cml"]["meta_test_mse"] <= 0.5 * m["untrained"]["meta_test_mse"]
    assert res["config"]["network"]["kind"] == "dual"
    assert res["config"]["network"]["fast"] == ["gain", "bias", "readout"]
    assert (tmp_path / "fast_patterns.png").stat().st_size > 20_000


def test_readout_variant_config():
    cfg = sinusoid._cfg(None, False, None, "readout")
    assert cfg["network"]["fast"] == ["readout"] and cfg["network"]["kind"] == "dual"
    # inherited from sinusoid.yaml through `extends`
    assert cfg["baselines"]["maml"] == sinusoid._cfg(None, False, None)["baselines"]["maml"]
    _, trainer = sinusoid.build_cml(cfg)
    assert trainer.net.fast == ("readout",)
    with pytest.raises(nm.ValidationError, match=r"run sinusoid\.model: must be one of"):
        sinusoid._cfg(None, False, None, "dule")


@pytest.mark.slow
def test_dual_default_run_matches_maml(tmp_path):
    """Issue acceptance (dual system): CML <= 1.2 x MAML in the same run (about 8 minutes
    on 2 cores)."""
    res = sinusoid.run(tmp_path, model="dual", progress=False)
    m = {k: v["meta_test_mse"] for k, v in res["methods"].items()}
    assert m["cml"] <= 1.2 * m["maml"]
