"""`neuro-meta bench`: runs and writes the keys the performance issue asks for (no timing
assertions: benchmarks report, tests do not judge speed)."""
import json

import numpy as np
import pytest

from neuro_meta import bench


@pytest.mark.slow
def test_bench_quick_writes_results(tmp_path):
    bench.main(quick=True, out=tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    for key in ("ratio_vs_brian2_cython", "ratio_vs_brian2_naive", "small_phase_overhead_ms"):
        assert key in res and np.isfinite(res[key]) and res[key] > 0
    assert "large_gsyn_steps_per_s" in res
    for case in ("stiff", "sinusoid"):
        assert res["settle"][case]["solve_s"] > 0
    assert res["checkpoint_cadence"]["ratio"] > 0
    assert all(m["same_errors"] for m in res["evaluation_pieces"].values())
    ttt = res["sinusoid_time_to_target"]["methods"]
    assert {"cml", "maml", "fomaml", "reptile", "imaml"} <= set(ttt)
    assert all(set(m["time_to_target"]) == {"0.5", "0.2", "0.1", "0.065"}
               for name, m in ttt.items() if "untrained" not in name)


def test_checkpoint_cadence_times_both_cadences_on_the_shipped_model():
    r = bench.checkpoint_cadence(meta_steps=2, rounds=1)
    assert r["meta_steps"] == 2 and r["checkpoint_bytes"] > 1e6    # omniglot_long's CML
    for key in ("every_step_s", "default_s", "ratio"):
        assert np.isfinite(r[key]) and r[key] > 0
    assert r["ratio"] == pytest.approx(r["every_step_s"] / r["default_s"])


def test_evaluation_pieces_times_both_ways_on_the_same_errors():
    r = bench.evaluation_pieces(tasks=10, rounds=1)
    assert set(r) == {"cml", "maml"}
    for m in r.values():
        assert m["tasks"] == 10 and m["same_errors"] is True
        assert 1 <= m["tasks_per_piece"] < 10     # 784-64-64-5: pieces of a few tasks
        for key in ("one_batch_s", "pieces_s", "ratio"):
            assert np.isfinite(m[key]) and m[key] > 0
        assert m["ratio"] == pytest.approx(m["one_batch_s"] / m["pieces_s"])


def test_settle_cases_reach_the_same_states():
    """The settle benchmark compares like with like: both settle every task of the stiff
    case to the same fixed point (to the state error of tol = 1e-6 with lam = 0.05)."""
    got = bench.settle_cases(1, cases=("stiff",))
    assert set(got) == {"stiff"}
    res = got["stiff"]
    assert res["integrate_settled"] == res["tasks"]
    assert res["max_abs_phi_diff"] < 1e-3
    assert res["work_ratio_min"] >= 10


@pytest.mark.parametrize("cases", ["stiff", (), ("stiff", "other"), 3, [None]])
def test_settle_cases_refuses_unknown_cases(cases):
    import neuro_meta as nm
    with pytest.raises(nm.ValidationError, match=r"bench.settle_cases.cases: must be"):
        bench.settle_cases(1, cases=cases)


def test_engine_rate_runs_the_same_model_on_both_engines():
    """The benchmark times the same phase on both engines: same final weights."""
    net, x, y = bench._model(20, 10, 3)
    rate_f, wall_f, phi_f = bench.engine_rate(net, x, y, steps=50, repeats=1, engine="fused")
    rate_n, wall_n, phi_n = bench.engine_rate(net, x, y, steps=50, repeats=1, engine="numpy")
    assert rate_f > 0 and rate_n > 0 and wall_f > 0 and wall_n > 0
    np.testing.assert_allclose(phi_f, phi_n, rtol=0, atol=1e-12)
