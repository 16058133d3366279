"""Meta-training: identical results on every executor, checkpoints, kill-and-resume."""
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import checkpoint as ckpt
from neuro_meta.experiments.consolidation import build
from neuro_meta.metatrain import MetaTrainer
from neuro_meta.models import load_model


def trainer(**kw):
    cfg = load_model("consolidation")
    _, tr = build(cfg)
    return MetaTrainer(tr.net, tr.family, tr.cml, tr.optimizer, meta_batch=12, seed=3,
                       eval_tasks=6, **kw)


def final_checksum(tr, steps=4):
    tr.train(steps, eval_every=2, progress=False)
    return ckpt.checksum(tr.net.theta)


def test_chunked_and_process_pool_equal_serial():
    ref = final_checksum(trainer())
    assert final_checksum(trainer(chunks=5)) == ref
    with ProcessPoolExecutor(2) as ex:
        assert final_checksum(trainer(executor=ex)) == ref


def test_dask_local_cluster_equals_serial():
    distributed = pytest.importorskip("dask.distributed")
    ref = final_checksum(trainer())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster) as client:
        assert final_checksum(trainer(executor=client)) == ref


def test_batched_settling_independent_of_batch_composition():
    """A settled task is frozen: its result is bitwise the same alone or in a batch."""
    rng = np.random.default_rng(0)
    net = nm.RateNetwork([4, 3], activation="tanh", tau_neuron=0, seed=1,
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.3),
                                                   lam=nm.init.Uniform(0.05, 2.0)))
    x, y = rng.normal(size=(5, 6, 4)), rng.normal(size=(5, 6, 3))
    learner = nm.Learner(rule="delta", integrator="expeuler", dt=0.05, tol=1e-9)
    batched = learner.run(net, x, y).phi_aug
    for b in range(5):
        alone = learner.run(net, x[b:b + 1], y[b:b + 1]).phi_aug
        assert np.array_equal(alone[0][0], batched[0][b])


def _pieces_problem(n_tasks=11):
    rng = np.random.default_rng(1)
    net = nm.RateNetwork([4, 6, 3], activation="tanh", tau_neuron=0, seed=2,
                         synapse=nm.ComplexSynapse(omega=nm.init.Normal(0.4),
                                                   lam=nm.init.Uniform(0.05, 2.0)))
    task = nm.Task(rng.normal(size=(n_tasks, 5, 4)), rng.normal(size=(n_tasks, 5, 3)),
                   rng.normal(size=(n_tasks, 7, 4)), rng.normal(size=(n_tasks, 7, 3)))
    return net, task, sum(a.size for v in net.theta.values() for a in v if a is not None)


@pytest.mark.parametrize("learner, split", [
    (nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-9, settle="solve"),
     True),
    (nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-9), False),
    (nm.Learner(rule="backprop", integrator="expeuler", tol=1e-9, settle="solve"), False),
], ids=["solved", "integrated", "automatic-dt"])
def test_evaluation_in_pieces_equals_one_batch(monkeypatch, learner, split):
    """Many tasks settled by the solver (a given dt) are evaluated in pieces of
    EVAL_PIECE_NUMBERS numbers: per task the same error, bitwise, as all the tasks in
    one batch; integrated phases and an automatic dt (chosen from the whole batch)
    are never split."""
    from neuro_meta import metatrain as mt
    net, task, n = _pieces_problem()
    monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", 10 ** 9)
    whole = mt.evaluate(net, learner, task)
    calls = []
    run = nm.Learner.run
    monkeypatch.setattr(nm.Learner, "run", lambda self, net_, x, y, **kw: (
        calls.append(x.shape[0]), run(self, net_, x, y, **kw))[1])
    monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", 3 * n + n // 2)
    assert mt.eval_piece_tasks(net.theta) == 3
    assert mt.eval_piece_tasks(net.theta, learner) == (3 if split else None)
    pieces = mt.evaluate(net, learner, task)
    assert calls == ([3, 3, 3, 2] if split else [11])
    assert np.array_equal(pieces, whole) and whole.shape == (11,)
    monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", 1)      # fewer than one network
    assert mt.eval_piece_tasks(net.theta) == 1
    assert np.array_equal(mt.evaluate(net, learner, task), whole)
    with pytest.raises(nm.ValidationError, match="metatrain.evaluate.net: must be a model"):
        mt.evaluate(net.theta, learner, task)


def test_unsettled_evaluation_in_pieces_counts_once(monkeypatch):
    """MetaTrainer counts an evaluation whose phases did not all settle once, however
    many pieces it was solved in."""
    from neuro_meta import metatrain as mt
    net, task, n = _pieces_problem(6)
    learner = nm.Learner(rule="backprop", integrator="expeuler", dt=0.05, tol=1e-30,
                         settle="solve", max_duration=0.1)
    cml = nm.CML(beta=0.1, learner=learner)
    from neuro_meta.families import Sinusoid
    fam = Sinusoid()
    counts = []
    for numbers in (10 ** 9, 2 * n):
        monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", numbers)
        tr = MetaTrainer(net, fam, cml, meta_batch=2, eval_tasks=6, test_task=task,
                         val_task=task)
        tr.evaluate(tasks="test")
        tr.evaluate(tasks="validation")
        counts.append(tr._not_settled)
    assert counts == [2, 2]


def test_omniglot_scoring_runs_in_pieces(monkeypatch):
    """Omniglot's scoring of CML (784-64-64-5, settled by the solver) and of MAML runs
    10 tasks in pieces of a few (4 and 9), the same errors as in one batch."""
    from neuro_meta import baselines as bl
    from neuro_meta import metatrain as mt
    from neuro_meta.experiments import omniglot
    cfg = omniglot.effective_config(load_model("omniglot"), seed=0)
    fams = omniglot.families(cfg)
    task = fams["test"].sample(np.random.default_rng(0), 10)
    learner, tr = omniglot.build_cml(cfg, fams)
    maml, params = omniglot.baseline_method(cfg, "maml")[0], bl.init_mlp(omniglot.mlp_sizes(cfg), 0)
    calls = []
    run, evaluate = nm.Learner.run, bl.MAML.evaluate
    monkeypatch.setattr(nm.Learner, "run", lambda self, net_, x, y, **kw: (
        calls.append(("cml", x.shape[0])), run(self, net_, x, y, **kw))[1])
    monkeypatch.setattr(bl.MAML, "evaluate", lambda self, p, t, *a: (
        calls.append(("maml", t.n_tasks)), evaluate(self, p, t, *a))[1])
    got = {}
    for numbers in (mt.EVAL_PIECE_NUMBERS, 10 ** 9):
        monkeypatch.setattr(mt, "EVAL_PIECE_NUMBERS", numbers)
        got[numbers] = (omniglot.cml_errors(tr.net, learner, task),
                        omniglot.baseline_errors(maml, params, task))
    assert calls == [("cml", 4), ("cml", 4), ("cml", 2), ("maml", 9), ("maml", 1),
                     ("cml", 10), ("maml", 10)]
    (a, b), (c, d) = got.values()
    assert np.array_equal(a, c) and np.array_equal(b, d) and a.shape == b.shape == (10,)


def test_task_pieces():
    rng = np.random.default_rng(0)
    task = nm.Task(*(rng.normal(size=(5, 2, 3)) for _ in range(4)))
    pieces = task.pieces(2)
    assert [p.n_tasks for p in pieces] == [2, 2, 1]
    for name in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(np.concatenate([getattr(p, name) for p in pieces]),
                              getattr(task, name))
    assert task.pieces(9)[0] is task and task.pieces(5)[0] is task
    one = nm.Task(*(rng.normal(size=(2, 3)) for _ in range(4)))
    (alone,) = one.pieces(4)
    assert alone.batched and np.array_equal(alone.x_train[0], one.x_train)
    for bad in (0, -1, 1.5, True, "2", None):
        with pytest.raises(nm.ValidationError, match=r"Task\.pieces\.size: must be"):
            task.pieces(bad)


def test_executor_needs_explicit_dt():
    cml = nm.CML(beta=0.01)     # default learner: automatic dt
    net = nm.RateNetwork([2, 1], activation="linear", tau_neuron=0)
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.cml\.learner\.dt"):
        MetaTrainer(net, nm.families.LinearTeacher(n_in=2, n_out=1), cml, chunks=2)
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.executor"):
        MetaTrainer(net, nm.families.LinearTeacher(n_in=2, n_out=1), cml, executor=3)


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    state = {"theta": {"omega": [np.arange(6.0).reshape(2, 3), None]}, "step": 7,
             "opt": ({"m": [np.ones(2)]}, 3)}
    path = tmp_path / "c.npz"
    ckpt.save(path, state)
    back = ckpt.load(path)
    assert back["step"] == 7 and back["opt"][1] == 3
    np.testing.assert_array_equal(back["theta"]["omega"][0], state["theta"]["omega"][0])
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ckpt.CheckpointError, match="trunc.npz"):
        ckpt.load(tmp_path / "trunc.npz")
    # flip bytes inside an array payload: the checksum catches it
    i = raw.find(np.arange(6.0).tobytes())
    bad = bytearray(raw)
    bad[i + 8] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(bad))
    with pytest.raises(ckpt.CheckpointError, match="flip.npz"):
        ckpt.load(tmp_path / "flip.npz")
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load(tmp_path / "missing.npz")


EXPERIMENTS = {   # experiment: (extra CLI arguments, checkpoint file, meta-steps)
    "consolidation": ((), "checkpoint.npz", load_model("consolidation")["quick"]["meta"]["steps"]),
    # step-bound: a wall-time budget would stop at a machine-dependent step
    "sinusoid": (("--methods", "cml", "--budget", "none", "--set", "meta.steps=20"),
                 "cml_checkpoint.npz", 20),
}


def _run_cli(out, *extra, experiment="consolidation"):
    return subprocess.Popen(
        [sys.executable, "-m", "neuro_meta.cli", "run", experiment, "--quick",
         "--no-progress", "--out", str(out), *EXPERIMENTS[experiment][0], *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_theta(path):
    state = ckpt.load(path)
    return state["step"], ckpt.checksum(state["theta"])


@pytest.mark.parametrize("experiment", ["consolidation", "sinusoid"])
def test_kill_and_resume_gives_identical_results(tmp_path, experiment):
    """kill -9 at five points of a meta-training run, resume each time: the final
    meta-parameters are bit-identical to those of an uninterrupted run."""
    ckpt_name = EXPERIMENTS[experiment][1]
    ref_dir = tmp_path / "ref"
    p = _run_cli(ref_dir, experiment=experiment)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    steps = EXPERIMENTS[experiment][2]
    ref = _final_theta(ref_dir / ckpt_name)
    assert ref[0] == steps
    kill_points = [round(f * steps) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    out = tmp_path / "killed"
    killed = []
    for k in kill_points:       # (a checkpoint after every meta-step: killed anywhere)
        p = _run_cli(out, "--resume", "--checkpoint-every", "0", experiment=experiment)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            try:
                if ckpt.load(out / ckpt_name)["step"] >= k:
                    break
            except ckpt.CheckpointError:
                pass
            time.sleep(0.02)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        if p.returncode == -signal.SIGKILL:
            killed.append(ckpt.load(out / ckpt_name)["step"])
    assert len(killed) == len(kill_points) and max(killed) < steps, killed
    p = _run_cli(out, "--resume", experiment=experiment)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert _final_theta(out / ckpt_name) == ref


def test_kill_between_timed_checkpoints_and_resume_gives_identical_results(tmp_path):
    """With checkpoints by time (here every 1 s of wall time, besides the evaluations
    every 10 meta-steps) a run killed after a timed checkpoint -- at a meta-step that is
    not an evaluation's -- resumes from it and ends bit-identical to an uninterrupted
    run."""
    args = ("--methods", "cml", "--budget", "none", "--set", "meta.steps=40")

    def start(out, *extra):
        return subprocess.Popen(
            [sys.executable, "-m", "neuro_meta.cli", "run", "sinusoid", "--quick",
             "--no-progress", "--out", str(out), *args, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    name = "cml_checkpoint.npz"
    p = start(tmp_path / "ref")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    ref = _final_theta(tmp_path / "ref" / name)
    assert ref[0] == 40
    out = tmp_path / "killed"
    p = start(out, "--checkpoint-every", "1")
    deadline, at = time.time() + 120, 0
    while time.time() < deadline and p.poll() is None:
        try:
            at = ckpt.load(out / name)["step"]
        except (ckpt.CheckpointError, FileNotFoundError):
            pass
        if at % 10:                 # a timed checkpoint, not an evaluation's
            os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    p.wait()
    assert p.returncode == -signal.SIGKILL, (at, p.returncode)
    assert 0 < ckpt.load(out / name)["step"] < 40
    p = start(out, "--resume")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert _final_theta(out / name) == ref

def test_dask_equals_serial_on_sinusoid():
    """Issue acceptance: serial and Dask LocalCluster (2 workers on loopback) give
    identical meta-parameters after N meta-steps of the sinusoid CML meta-training."""
    distributed = pytest.importorskip("dask.distributed")
    from neuro_meta.experiments import sinusoid

    cfg = sinusoid._cfg(None, True, None)
    cfg["meta"].update(meta_batch=6, eval_tasks=2, eval_every=2)

    def run(executor=None):
        _, tr = sinusoid.build_cml(cfg, executor)
        tr.train(2, eval_every=2, progress=False, keep_theta=False)
        return ckpt.checksum(tr.net.theta)

    ref = run()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster) as client:
        assert run(client) == ref


def test_cli_corrupted_checkpoint_clear_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 garbage")
    p = _run_cli(tmp_path, "--resume")
    assert p.wait(timeout=120) == 2
    err = p.stderr.read()
    assert "checkpoint.npz" in err and "Traceback" not in err


class ExplodingTeacher(nm.families.LinearTeacher):
    """Linear-teacher tasks, but in every meta-batch of 12 the first task's inputs are
    scaled so that its simulation diverges at the trainer's time step."""

    def sample(self, rng, n_tasks):
        task = super().sample(rng, n_tasks)
        if n_tasks == 12:
            x, y, xv, yv = (np.array(a) for a in task.as_batch())
            x[0] *= 1e3
            return nm.Task(x, y, xv, yv)
        return task


def _exploding(**kw):
    base = trainer()
    fam = ExplodingTeacher(**{k: getattr(base.family, k) for k in (
        "n_in", "n_out", "shots", "val", "shared_fraction", "noise_std")})
    return MetaTrainer(base.net, fam, base.cml, base.optimizer, meta_batch=12, seed=3,
                       eval_tasks=6, **kw)


def test_divergence_stop_keeps_theta_and_names_the_step(tmp_path):
    tr = _exploding()
    before = ckpt.checksum(tr.net.theta)
    with pytest.raises(nm.SimulationError, match=r"meta-step 1: .*diverged.*not updated"):
        tr.train(3, progress=False, checkpoint=tmp_path / "c.npz")
    assert ckpt.checksum(tr.net.theta) == before
    saved = ckpt.load(tmp_path / "c.npz")       # written after the step-0 evaluation only:
    assert saved["step"] == 0 and ckpt.checksum(saved["theta"]) == before   # never step 1


def test_divergence_skip_counts_and_is_deterministic():
    a = _exploding(on_divergence="skip")
    h = a.train(3, eval_every=3, progress=False)
    assert h.skipped_tasks == 3   # the first task of each of the 3 meta-steps
    assert all(np.isfinite(x).all() for x in a.net.theta["lam"] if x is not None)
    b = _exploding(on_divergence="skip", chunks=4)
    b.train(3, eval_every=3, progress=False)
    assert ckpt.checksum(a.net.theta) == ckpt.checksum(b.net.theta)


class KillWorkerOnceCML(nm.CML):
    """A CML whose first estimate (in any process) kills that process, as a crashed or
    lost worker would; the marker file makes it happen once."""

    marker = None

    def estimate(self, net, task, reduce="mean"):
        if self.marker is not None and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().estimate(net, task, reduce)


def test_dask_worker_killed_mid_step_is_recomputed(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ref = final_checksum(trainer(), steps=3)
    base = trainer()
    cml = KillWorkerOnceCML(beta=base.cml.beta, estimator=base.cml.estimator,
                            learner=base.cml.learner)
    cml.marker = str(tmp_path / "killed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster) as client:
        tr = MetaTrainer(base.net, base.family, cml, base.optimizer, meta_batch=12, seed=3,
                         eval_tasks=6, executor=client)
        got = final_checksum(tr, steps=3)
    assert os.path.exists(cml.marker), "no worker was killed"
    assert got == ref


def test_omega_decay_adds_c_omega_to_the_meta_gradient_of_omega_only():
    """One meta-step with plain SGD (no clipping): θ₁(c) − θ₁(0) = −lr·c·ω₀ for the
    omega and omega_bias entries, and 0 for λ -- the gradient of (c/2) Σ ω² on ω only."""
    cfg = load_model("consolidation")
    _, base = build(cfg)
    lr, c = 0.05, 0.3
    rng = np.random.default_rng(7)
    theta0 = dict(base.net.theta)
    theta0["omega"] = [rng.normal(0, 0.3, np.shape(w)) for w in theta0["omega"]]
    if "omega_bias" in theta0:
        theta0["omega_bias"] = [None if w is None else rng.normal(0, 0.3, np.shape(w))
                                for w in theta0["omega_bias"]]
    net = base.net.with_theta(theta0)

    def one_step(decay):
        tr = MetaTrainer(net, base.family, base.cml, nm.optim.sgd(lr), meta_batch=4,
                         seed=3, eval_tasks=2, omega_decay=decay)
        tr.train(1, eval_every=1, progress=False)
        return tr.net.theta

    with_c, without = one_step(c), one_step(0.0)
    for k in theta0:
        for a, b, w in zip(with_c[k], without[k], theta0[k]):
            if a is None:
                continue
            want = -lr * c * w if k in ("omega", "omega_bias") else np.zeros_like(w)
            np.testing.assert_allclose(a - b, want, rtol=0, atol=1e-12)


def test_omega_decay_penalises_a_dual_systems_weights_biases_and_readout_only():
    """The dual system's stored weights are W, the biases and the readout (their initial
    values where fast): one meta-step with plain SGD gives θ₁(c) − θ₁(0) = −lr·c·w on
    those and exactly 0 on the gains (neutral at 1) and on the meta-learned λ."""
    cfg = load_model("consolidation")
    _, base = build(cfg)
    lr, c = 0.05, 0.3
    rng = np.random.default_rng(11)
    net = nm.DualSystem([10, 6, 5], lam=0.5, learn_lam=True, seed=4)
    cml = nm.CML(beta=0.05, learner=nm.Learner(rule="backprop", integrator="expeuler",
                                                dt=0.05, tol=1e-9, max_duration=200))
    theta0 = {k: [a + rng.normal(0, 0.2, a.shape) if not k.startswith("lam_") else a
                  for a in v] for k, v in net.theta.items()}
    net = net.with_theta(theta0)
    assert net.penalised == ("W", "bias", "readout")

    def one_step(decay):
        tr = MetaTrainer(net, base.family, cml, nm.optim.sgd(lr), meta_batch=3,
                         seed=2, eval_tasks=2, omega_decay=decay)
        tr.train(1, eval_every=1, progress=False, select=False)
        return tr.net.theta

    with_c, without = one_step(c), one_step(0.0)
    moved = set()
    for k in theta0:
        for a, b, w in zip(with_c[k], without[k], theta0[k]):
            want = -lr * c * w if k in ("W", "bias", "readout") else np.zeros_like(w)
            np.testing.assert_allclose(a - b, want, rtol=0, atol=1e-12, err_msg=k)
            if np.any(want):
                moved.add(k)
    assert moved == {"W", "bias", "readout"}


def test_omega_decay_doors_and_fingerprint():
    cfg = load_model("consolidation")
    _, base = build(cfg)
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.omega_decay: must be >= 0"):
        MetaTrainer(base.net, base.family, base.cml, omega_decay=-1.0)
    from neuro_meta.examples.gained_linear import GainedLinear

    class Unweighted(GainedLinear):         # a kind that declares nothing to penalise
        penalised = property(lambda self: ())

    with pytest.raises(nm.ValidationError, match="no weights to penalise"):
        MetaTrainer(Unweighted(1, 1), base.family, base.cml, omega_decay=0.1)
    MetaTrainer(Unweighted(1, 1), base.family, base.cml, omega_decay=0.0)   # 0: fine

    class Misdeclared(GainedLinear):        # names an entry its theta does not have
        penalised = property(lambda self: ("omega", "W"))

    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.net \(Misdeclared\)"
                       r"\.penalised: must be a tuple of keys of its theta"):
        MetaTrainer(Misdeclared(1, 1), base.family, base.cml, omega_decay=0.1)
    plain = MetaTrainer(base.net, base.family, base.cml).fingerprint()
    assert "omega_decay" not in plain         # older checkpoints stay resumable
    assert MetaTrainer(base.net, base.family, base.cml,
                       omega_decay=0.1).fingerprint()["omega_decay"] == 0.1
