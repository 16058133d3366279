"""Issue 18, the doors of runs: checkpoints and partial results that do not belong to
the run resuming them, files that are not what they claim, output folders and Dask
schedulers the OS refuses -- one clear error each (CLI: one line, status 2)."""
import json
import time

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import checkpoint as ckpt
from neuro_meta import cli, optim
from neuro_meta.experiments import sinusoid
from neuro_meta.experiments.consolidation import build
from neuro_meta.metatrain import MetaTrainer
from neuro_meta.models import load_model


def trainer(seed=3, lr=0.05, eval_tasks=4):
    _, tr = build(load_model("consolidation"))
    return MetaTrainer(tr.net, tr.family, tr.cml, optim.adam(lr), meta_batch=4, seed=seed,
                       eval_tasks=eval_tasks)


# ------------------------------------------------------------------ checkpoint fingerprint
@pytest.mark.parametrize("other, what", [
    (dict(seed=4), "seed: 3 in the checkpoint, 4 now"),
    (dict(lr=0.01), "optimizer"),
    (dict(eval_tasks=5), "eval_tasks: 4 in the checkpoint, 5 now"),
])
def test_resume_under_another_configuration_is_refused(tmp_path, other, what):
    path = tmp_path / "c.npz"
    trainer().train(2, progress=False, checkpoint=path)
    with pytest.raises(ckpt.CheckpointError, match=what):
        trainer(**other).train(4, progress=False, checkpoint=path, resume=True)
    # the same configuration resumes (and equals an uninterrupted run)
    a = trainer()
    a.train(4, progress=False, checkpoint=path, resume=True)
    b = trainer()
    b.train(4, progress=False)
    for k in a.net.theta:
        for x, y in zip(a.net.theta[k], b.net.theta[k]):
            if x is not None:
                np.testing.assert_array_equal(x, y)


def test_fingerprint_names_what_decides_the_trajectory():
    fp = trainer().fingerprint()
    assert {"kind", "theta0", "family", "cml", "optimizer", "meta_batch", "seed",
            "eval_tasks", "val_tasks", "lam_min", "on_divergence"} == set(fp)
    assert trainer().fingerprint() == fp                       # deterministic
    assert trainer(lr=0.02).fingerprint()["optimizer"] != fp["optimizer"]


@pytest.mark.parametrize("case", ["npy", "meta_type", "missing_key", "tree_mismatch"])
def test_files_that_are_not_checkpoints(tmp_path, case):
    path = tmp_path / "checkpoint.npz"
    if case == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    elif case == "meta_type":
        np.savez(path, __meta__=np.array("5"))
    elif case == "missing_key":
        trainer().train(1, progress=False, checkpoint=path)
        state = ckpt.load(path)
        del state["opt_state"]
        ckpt.save(path, state)
    else:
        np.savez(path, __meta__=np.array(json.dumps(
            {"format": "neuro_meta-checkpoint", "version": ckpt.FORMAT_VERSION,
             "sha256": "x", "tree": json.dumps({"__array__": 3})})))
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.npz"):
        trainer().train(2, progress=False, checkpoint=path, resume=True)


# ------------------------------------------------------------------ partial results
def tiny_cfg():
    cfg = sinusoid._cfg(None, True, None)
    cfg["meta"].update(steps=2, eval_every=1, eval_tasks=4)
    cfg["baselines"].update(steps=3, eval_every=3)
    cfg["compare"]["budget_s"] = None
    return cfg


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    """results.json of a finished run is byte-identical after --resume (the
    cml_untrained row included: it was lost before)."""
    cfg = tiny_cfg()
    sinusoid.run(tmp_path, cfg=cfg, methods="cml,reptile", progress=False)
    before = (tmp_path / "results.json").read_bytes()
    assert "cml_untrained" in json.loads(before)["methods"]
    time.sleep(0.01)
    sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="cml,reptile", progress=False,
                 resume=True)
    assert (tmp_path / "results.json").read_bytes() == before


def test_partial_results_of_another_configuration_are_refused(tmp_path):
    sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="reptile", progress=False)
    other = tiny_cfg()
    other["meta"]["seed"] = 1
    with pytest.raises(nm.ValidationError, match="partial.json: written by another "
                                                 "configuration"):
        sinusoid.run(tmp_path, cfg=other, methods="reptile", progress=False, resume=True)


@pytest.mark.parametrize("content", ['[1, 2]', '{"reptile": 3}', '{"fingerprint": "x"}',
                                     '{"fingerprint": "x", "methods": {"a": {}}}', "\xff"])
def test_malformed_partial_results(tmp_path, content):
    (tmp_path / "partial.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(nm.ValidationError, match="partial.json"):
        sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="reptile", progress=False,
                     resume=True)


# ------------------------------------------------------------------ CLI
def _cli(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("where", ["file", "under_file", "too_long"])
def test_cli_output_folder_errors_are_one_line(tmp_path, capsys, where):
    f = tmp_path / "afile"
    f.write_text("x")
    out = {"file": f, "under_file": f / "sub", "too_long": tmp_path / ("a" * 300)}[where]
    code, err = _cli(capsys, "run", "sinusoid", "--quick", "--methods", "untrained",
                     "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--out" in err and str(out)[:40] in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "not an address"])
def test_cli_unreachable_scheduler_fails_within_its_timeout(tmp_path, capsys, address):
    pytest.importorskip("dask.distributed")
    t0 = time.perf_counter()
    code, err = _cli(capsys, "run", "sinusoid", "--quick", "--methods", "untrained",
                     "--scheduler", address, "--scheduler-timeout", "1",
                     "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--scheduler" in err
    assert time.perf_counter() - t0 < 10


def test_cli_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """An OS error anywhere in a run (here: the results file cannot be written) is one
    line and status 2, not a traceback."""
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o" / "results.json"))

    monkeypatch.setattr(sinusoid, "write_json", refuse)
    code, err = _cli(capsys, "run", "sinusoid", "--quick", "--methods", "untrained",
                     "--no-progress", "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Permission denied" in err and "results.json" in err
