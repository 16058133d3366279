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


def trainer(seed=3, lr=0.05, eval_tasks=4, average=None):
    _, tr = build(load_model("consolidation"))
    return MetaTrainer(tr.net, tr.family, tr.cml, optim.adam(lr), meta_batch=4, seed=seed,
                       eval_tasks=eval_tasks, average=average)


# ------------------------------------------------------------------ checkpoint fingerprint
@pytest.mark.parametrize("other, what", [
    (dict(seed=4), "seed: 3 in the checkpoint, 4 now"),
    (dict(lr=0.01), "optimizer"),
    (dict(eval_tasks=5), "eval_tasks: 4 in the checkpoint, 5 now"),
    (dict(average=0.9), "average: None in the checkpoint, 0.9 now"),
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


def test_resume_under_another_evaluation_cadence_is_refused(tmp_path):
    """The cadence decides the points a run selects among: a resume under another one
    is refused; ``restore`` (of a finished run, no cadence given) is not; more
    meta-steps with the same cadence resume. A checkpoint whose fingerprint lacks the
    cadence (an older neuro_meta's) is refused as such."""
    path = tmp_path / "c.npz"
    trainer().train(2, eval_every=1, progress=False, checkpoint=path)
    with pytest.raises(ckpt.CheckpointError, match="eval_every: 1 in the checkpoint, 2 now"):
        trainer().train(4, eval_every=2, progress=False, checkpoint=path, resume=True)
    with pytest.raises(ckpt.CheckpointError,
                       match="eval_every_s: None in the checkpoint, 30.0 now"):
        trainer().train(4, eval_every_s=30.0, budget_s=600.0, progress=False,
                        checkpoint=path, resume=True)
    assert trainer().restore(path).meta_steps == 2
    h = trainer().train(3, eval_every=1, progress=False, checkpoint=path, resume=True)
    assert h.meta_steps == 3 and h.step == [0, 1, 2, 3]
    saved = ckpt.load(path)
    del saved["fingerprint"]["eval_every"]
    ckpt.save(path, saved)
    with pytest.raises(ckpt.CheckpointError, match="written by an older neuro_meta, "
                       "whose fingerprint lacks eval_every: it cannot be checked; keep the file"):
        trainer().train(4, eval_every=1, progress=False, checkpoint=path, resume=True)


def test_restore_gives_the_selected_network_and_checks_its_doors(tmp_path):
    """``restore`` gives a fresh trainer the meta-parameters of the checkpoint's selected
    evaluation (``select=False``: its last ones) and says which, under the checks of a
    resume. The checkpoint's selection is set by hand to an evaluation that is not the
    last, so that ignoring ``select`` would fail."""
    path = tmp_path / "c.npz"
    a = trainer()
    hist = a.train(3, eval_every=1, progress=False, checkpoint=path, keep_theta=True)
    saved = ckpt.load(path)
    saved["best"] = {"meta_val_mse": 0.0, "index": 1, "theta": hist.theta[1]}
    ckpt.save(path, saved)
    b = trainer()
    got = b.restore(path)
    assert got.meta_steps == 3 and got.selected["index"] == 1
    assert got.selected["step"] == 1 and got.step == hist.step
    c = trainer()
    assert c.restore(path, select=False).selected["step"] == 3
    moved = False
    for k in a.net.theta:
        for x, y, z, w in zip(hist.theta[1][k], b.net.theta[k], hist.theta[-1][k],
                              c.net.theta[k]):
            if x is not None:
                np.testing.assert_array_equal(x, y)
                np.testing.assert_array_equal(z, w)
                moved = moved or not np.array_equal(x, z)
    assert moved                                # step 1 and step 3 differ
    with pytest.raises(ckpt.CheckpointError, match="seed: 3 in the checkpoint, 4 now"):
        trainer(seed=4).restore(path)
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint file"):
        trainer().restore(tmp_path / "gone.npz")
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer.restore.select: must be True"):
        trainer().restore(path, select="yes")


def test_fingerprint_names_what_decides_the_trajectory():
    fp = trainer().fingerprint()
    assert {"kind", "theta0", "family", "cml", "optimizer", "meta_batch", "seed",
            "eval_tasks", "val_tasks", "lam_min", "on_divergence", "average"} == set(fp)
    assert trainer().fingerprint() == fp                       # deterministic
    assert trainer(lr=0.02).fingerprint()["optimizer"] != fp["optimizer"]
    # a gradient clip shows in the optimiser's checksum even at a large threshold
    from neuro_meta.metatrain import optimizer_fingerprint
    theta = trainer().net.theta
    prints = {optimizer_fingerprint(o, theta) for o in (
        optim.adam(0.05), optim.chain(optim.clip_by_global_norm(1e6), optim.adam(0.05)),
        optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.05)))}
    assert len(prints) == 3
    assert optimizer_fingerprint(optim.adam(0.05), theta) == fp["optimizer"]


def test_optimizer_fingerprint_is_made_of_settings_not_of_last_bits(monkeypatch):
    """An optimiser of neuro_meta.optim is fingerprinted by its settings: a change in the
    last bit of the clip's norm (as when global_norm changed its summation) changes the
    probe checksum but not the fingerprint; other settings change it; an optimiser
    that states no settings falls back to the probe."""
    from neuro_meta.metatrain import optimizer_fingerprint, optimizer_probe

    theta = trainer().net.theta

    def opt(clip=1.0, lr=0.05):
        return optim.chain(optim.clip_by_global_norm(clip), optim.adam(lr))

    fp, probe = optimizer_fingerprint(opt(), theta), optimizer_probe(opt(), theta)
    real = optim._norm_parts
    monkeypatch.setattr(optim, "_norm_parts", lambda t: (real(t)[0],
                                                         real(t)[1] * (1 + 2.0 ** -52)))
    assert optimizer_probe(opt(), theta) != probe           # the bits did change
    assert optimizer_fingerprint(opt(), theta) == fp
    monkeypatch.setattr(optim, "_norm_parts", real)
    assert len({fp, optimizer_fingerprint(opt(clip=2.0), theta),
                optimizer_fingerprint(opt(lr=0.04), theta),
                optimizer_fingerprint(optim.adam(0.05), theta),
                optimizer_fingerprint(optim.sgd(0.05), theta)}) == 5
    bare = optim.adam(0.05)
    bare = optim.GradientTransformation(bare.init, bare.update)     # states nothing
    assert optimizer_fingerprint(bare, theta) == optimizer_probe(bare, theta)
    assert optim.chain(bare, optim.adam(0.1)).settings is None


def test_the_clip_keeps_the_bits_older_probe_checksums_were_made_with():
    """Checkpoints written before optimisers stated their settings are accepted when
    today's probe gives their bits: the clip must keep computing max_norm / norm as it
    did then (the norm by global_norm), whatever else it learns (overflow)."""
    from neuro_meta.metatrain import optimizer_probe

    def then_clip(max_norm):            # the clip of those checkpoints, stating nothing
        def update(grads, state):
            norm = optim.global_norm(grads)
            scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
            return optim.tree_map(lambda g: g * scale, grads), state
        return optim.GradientTransformation(lambda theta: {}, update)

    thetas = [trainer().net.theta] + [{"omega": [np.zeros(n)]} for n in (3, 10, 100, 1000)]
    for theta in thetas:        # (sizes at which other ways of dividing differ)
        for clip, lr in ((1.0, 0.05), (10.0, 5e-3), (1e6, 1e-3)):
            assert optimizer_probe(optim.chain(optim.clip_by_global_norm(clip),
                                               optim.adam(lr)), theta) == \
                optimizer_probe(optim.chain(then_clip(clip), optim.adam(lr)), theta)


def test_a_checkpoint_with_an_older_probe_checksum_resumes_if_the_bits_agree(tmp_path):
    """A checkpoint written before optimisers stated their settings holds the probe
    checksum: it resumes if today's updates have the same bits; otherwise it is
    refused, saying why, advising to keep the file -- and the file is kept."""
    from neuro_meta.metatrain import optimizer_probe

    path = tmp_path / "c.npz"
    tr = trainer()
    tr.train(2, progress=False, checkpoint=path)
    saved = ckpt.load(path)
    saved["fingerprint"]["optimizer"] = optimizer_probe(tr.optimizer, tr._theta0)
    ckpt.save(path, saved)
    a = trainer()
    a.train(4, progress=False, checkpoint=path, resume=True)
    b = trainer()
    b.train(4, progress=False)
    assert optim.tree_vector(a.net.theta).tolist() == optim.tree_vector(b.net.theta).tolist()
    saved = ckpt.load(path)
    saved["fingerprint"]["optimizer"] = "0123456789abcdef"     # other bits
    ckpt.save(path, saved)
    with pytest.raises(ckpt.CheckpointError, match="made by an older neuro_meta from the "
                       "bits of the optimiser's updates.*keep the file"):
        trainer().train(6, progress=False, checkpoint=path, resume=True)
    with pytest.raises(ckpt.CheckpointError, match="keep the file"):
        trainer().restore(path)
    assert ckpt.load(path)["step"] == 4                      # untouched
    saved["fingerprint"]["seed"] = 9            # with another difference: named as such
    ckpt.save(path, saved)
    with pytest.raises(ckpt.CheckpointError, match="seed: 9 in the checkpoint, 3 now"):
        trainer().train(6, progress=False, checkpoint=path, resume=True)


def test_every_checkpoint_of_a_run_carries_its_fingerprint(tmp_path, monkeypatch):
    """The fingerprint is computed once per run (not at each of its checkpoints), and
    the checkpoint of every step holds exactly the trainer's fingerprint."""
    tr = trainer()
    expected = tr.fingerprint()
    calls = []
    real = MetaTrainer.fingerprint
    monkeypatch.setattr(MetaTrainer, "fingerprint",
                        lambda self: calls.append(1) or real(self))
    path = tmp_path / "c.npz"
    tr.train(3, progress=False, checkpoint=path, checkpoint_every=1)
    assert len(calls) == 1
    # with the run's evaluation cadence (train's default: every 10 meta-steps)
    assert ckpt.load(path)["fingerprint"] == {**expected, "eval_every": 10,
                                              "eval_every_s": None}
    tr.train(3, progress=False)                   # no checkpoint: none computed
    assert len(calls) == 1


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


def test_another_programs_npz_is_named_as_such(tmp_path):
    """A plain .npz archive (no __meta__ entry) is another program's file, not a damaged
    checkpoint: said so, not "truncated or corrupted: '__meta__'" with advice to delete."""
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not a neuro_meta checkpoint (an .npz archive without "
                          "the checkpoint's __meta__ entry"), msg
    assert "corrupted" not in msg and "delete" not in msg, msg


def test_a_member_that_is_not_an_array_is_a_checkpoint_error(tmp_path):
    """numpy hands back the raw bytes of an archive member without the .npy header
    (found by the fuzz test below: zeroed bytes in a member's header); the checksum
    must not be computed over them."""
    import zipfile

    path = tmp_path / "checkpoint.npz"
    trainer().train(1, progress=False, checkpoint=path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["a0.npy"] = b"\x00" * 64 + members["a0.npy"][64:]
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint.npz: not a readable .*"
                       r"member a0 is not an array"):
        ckpt.load(path)


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


def test_a_fresh_run_drops_older_partial_results(tmp_path, monkeypatch):
    """A run without resume that crashes in its first method leaves no partial.json of
    an older run behind (a later --resume would take that run's results for this one's
    and pair them with this run's checkpoints)."""
    sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="reptile", progress=False)
    assert (tmp_path / "partial.json").exists()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sinusoid, "_run_baseline", crash)
    with pytest.raises(KeyboardInterrupt):
        sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="reptile", progress=False)
    assert not (tmp_path / "partial.json").exists()


@pytest.mark.parametrize("content", ['[1, 2]', '{"reptile": 3}', '{"fingerprint": "x"}',
                                     '{"fingerprint": "x", "methods": {"a": {}}}', "\xff",
                                     '{"fingerprint": "x", "methods": {"a": {"summary": {}, '
                                     '"fit": ["a"]}}}',
                                     '{"fingerprint": "x", "methods": {"a": {"summary": {}, '
                                     '"fit": 3}}}'])
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


# ------------------------------------------------------------------ model files
RUN_SETTINGS = ("compare: {budget_s: null, eval_every_s: null, targets: [0.5], "
                "val_tasks: null}\n")
BAD_FILES = {
    "deep": ("extends: sinusoid\nmeta: " + "[" * 200 + "]" * 200 + "\n", "meta: must be a "
             "mapping"),
    "quick_int": ("extends: sinusoid\nquick: 5\n", "quick: must be a mapping"),
    "quick_section": ("extends: sinusoid\nquick: {meta: 3}\n", "quick.meta: must be a "
                      "mapping"),
    "methods_int": ("extends: sinusoid\nmethods: 5\n", "methods: must be"),
    "variants_list": ("extends: sinusoid\nvariants: [1]\n", "variants: must be a mapping"),
    "baseline_keyword": ("extends: sinusoid\nbaselines: {steps: 3, meta_batch: 2, "
                         "learning_rate: 0.001, eval_every: 1, maml: {inner_lrr: 1}}\n"
                         + RUN_SETTINGS, r"baselines.maml.inner_lrr: unknown key \(did you "
                         r"mean 'inner_lr'\?\)"),
    "baseline_not_mapping": ("extends: sinusoid\nbaselines: {steps: 3, meta_batch: 2, "
                             "learning_rate: 0.001, eval_every: 1, maml: 7}\n" + RUN_SETTINGS,
                             "baselines.maml: must be a mapping"),
    "typo": ("extends: sinusoid\nmeta: {stepz: 3}\n", r"meta.stepz: unknown key \(did you "
             r"mean 'steps'\?\)"),
    "section_typo": ("extends: sinusoid\nbaseline: {}\n", r"baseline: unknown section \(did "
                     r"you mean 'baselines'\?\)"),
    "size_mismatch": ("extends: sinusoid\nnetwork: {sizes: [2, 7, 1], activation: [tanh, "
                      "linear], tau_neuron: 0.0, tau_synapse: 1.0, lam_init: 1.0}\n",
                      r"network.sizes: the tasks have 1 input"),
    "optimizer_list": ("extends: consolidation\nmeta: {steps: 2, meta_batch: 2, optimizer: "
                       "[adam], learning_rate: 0.05, eval_every: 1, eval_tasks: 2, seed: 0}\n",
                       "meta.optimizer: must be one of adam, sgd"),
    "invalid_utf8": (b"experiment: sinusoid\nfamily: {shots: \xff}\n", "cannot be read"),
    "bad_yaml": ("experiment: sinusoid\nfamily: {shots: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_model_files_are_one_line_before_any_work(tmp_path, capsys, case):
    text, pattern = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    code, err = _cli(capsys, "run", str(path), "--quick", "--no-progress", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(path) in err or "methods" in case
    assert __import__("re").search(pattern, err), err
    assert not (out / "results.json").exists() and not (out / "partial.json").exists()


def test_gradcheck_file_checked_before_the_sweep(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "gradcheck.yaml").write_text(
        "experiment: gradcheck\nproblem: {seed: 0, n_in: 5, n_out: 2, shots: 10, val: 20, "
        "noise: 0.5, activation: linear, lam_range: [0.5, 1.5], tau_neuron: 0.0, "
        "tau_synapse: 1.0}\nsweeps: {betas: [0.1], tight_tol: 1.0e-13, fit_range: [0.01, "
        "0.3], tol_betas: [0.1], tols: [1.0e-6]}\n")
    monkeypatch.setenv("NEURO_META_MODELS", str(folder))
    from neuro_meta.experiments import gradcheck

    def work(*a, **k):
        raise AssertionError("the sweep started before the file was checked")

    with monkeypatch.context() as mp:
        mp.setattr(gradcheck, "exact_meta_gradient", work)
        mp.setattr(gradcheck, "_sweeps", work)
        code, err = _cli(capsys, "gradcheck", "--no-progress", "--out", str(tmp_path / "o"))
    assert code == 2 and "sweeps.fit_range: must hold at least two of the betas" in err
    (folder / "gradcheck.yaml").write_text("experiment: gradcheck\n")
    code, err = _cli(capsys, "gradcheck", "--no-progress", "--out", str(tmp_path / "o"))
    assert code == 2 and "gradcheck.yaml: missing key 'problem'" in err


def test_dangling_model_link_is_not_listed(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "mine.yaml").write_text("extends: sinusoid\n")
    (folder / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    code = cli.main(["models", "--models", str(folder)])
    out = capsys.readouterr().out
    assert code == 0 and "mine" in out and "gone" not in out


@pytest.mark.parametrize("argv", [["run", "sinusoid", "--seed", "x"], ["bogus"], [],
                                  ["run", "sinusoid", "--curves", "bad"],
                                  ["run", "sinusoid", "--workers", "1.5"]])
def test_cli_usage_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("neuro-meta") and "error:" in err and "--help" in err


def test_quick_resume_of_a_longer_run_is_refused(tmp_path):
    """A checkpoint beyond the requested steps (--quick --resume on a longer run's
    checkpoint) is refused instead of reporting the wrong number of meta-steps."""
    path = tmp_path / "c.npz"
    trainer().train(3, progress=False, checkpoint=path)
    with pytest.raises(nm.ValidationError, match=r"steps: must be at least the meta-step "
                                                 r"of the checkpoint .* \(3\)"):
        trainer().train(2, progress=False, checkpoint=path, resume=True)
    h = trainer().train(3, progress=False, checkpoint=path, resume=True)   # finished: as is
    assert h.meta_steps == 3


def test_cli_negative_seed_is_one_line(tmp_path, capsys):
    code, err = _cli(capsys, "run", "sinusoid", "--quick", "--seed", "-1", "--methods",
                     "untrained", "--no-progress", "--out", str(tmp_path / "o"))
    assert code == 2 and "seed: must be >= 0 (got -1)" in err


# ------------------------------------------------------------------ checkpoint fuzz
from hypothesis import HealthCheck, given, settings          # noqa: E402
from hypothesis import strategies as st                       # noqa: E402


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "good.npz"
    trainer().train(1, progress=False, checkpoint=path)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(["flip", "truncate", "append", "zero"]),
       at=st.floats(0.0, 1.0), n=st.integers(1, 64))
def test_damaged_checkpoints_are_checkpoint_errors(tmp_path, good_checkpoint, how, at, n):
    """A checkpoint damaged anywhere (bytes flipped, cut, appended, zeroed) is a
    CheckpointError naming the file, or -- where the damage misses every byte that
    matters -- resumes as the intact one."""
    data = bytearray(good_checkpoint)
    i = int(at * (len(data) - 1))
    if how == "flip":
        for k in range(i, min(len(data), i + n)):
            data[k] ^= 0xFF
    elif how == "truncate":
        data = data[:i]
    elif how == "append":
        data += bytes(range(n))
    else:
        data[i:i + n] = bytes(min(n, len(data) - i))
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(bytes(data))
    try:
        h = trainer().train(1, progress=False, checkpoint=path, resume=True)
    except ckpt.CheckpointError as err:
        assert "checkpoint.npz" in str(err)
    else:
        assert h.meta_steps == 1


@pytest.mark.parametrize("tree", [5, "x", [1, 2], {"step": "a"}, {"step": 1, "theta": 3,
                                                                   "opt_state": None,
                                                                   "clock_s": 0.0,
                                                                   "history": []}])
def test_checkpoints_of_other_trees_are_refused(tmp_path, tree):
    path = tmp_path / "checkpoint.npz"
    ckpt.save(path, tree)
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.npz"):
        trainer().train(2, progress=False, checkpoint=path, resume=True)


def test_cli_output_folder_in_proc(tmp_path, capsys):
    code, err = _cli(capsys, "run", "sinusoid", "--quick", "--methods", "untrained",
                     "--no-progress", "--out", "/proc/neuro_meta_out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--out" in err


def test_a_damaged_checkpoint_is_refused_before_any_method_runs(tmp_path, monkeypatch):
    """--resume with a damaged checkpoint of a later method (reptile): refused before
    CML, first in line, spends its meta-training (it used to be refused only when
    reptile's turn came)."""
    (tmp_path / "reptile_checkpoint.npz").write_bytes(b"PK\x03\x04 damaged")
    trained = []
    monkeypatch.setattr(MetaTrainer, "train", lambda *a, **k: trained.append(1))
    with pytest.raises(ckpt.CheckpointError, match=r"reptile_checkpoint\.npz: not a "
                       "readable neuro_meta checkpoint"):
        sinusoid.run(tmp_path, cfg=tiny_cfg(), methods="cml,reptile", progress=False,
                     resume=True)
    assert trained == []
