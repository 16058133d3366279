"""When the meta-training loops write their checkpoints (CheckpointCadence): after every
evaluation and at the end, every N meta-steps if asked, and after the first meta-step
that ends a given wall time after the previous write -- on a fake clock that a meta-step
advances by a known amount, against the writes worked out by hand."""
import numpy as np
import pytest

from neuro_meta import checkpoint as ckpt
from neuro_meta import cli
from neuro_meta.baselines import MAML, init_mlp, train_baseline
from neuro_meta.errors import ValidationError
from neuro_meta.experiments.consolidation import build
from neuro_meta.families import Sinusoid
from neuro_meta.metatrain import CheckpointCadence, MetaTrainer
from neuro_meta.models import load_model

STEP_S = 12.0       # fake wall seconds per meta-step


@pytest.fixture
def clock(monkeypatch, fake_clock):
    monkeypatch.setattr(CheckpointCadence, "clock", staticmethod(fake_clock))
    return fake_clock


@pytest.fixture
def writes(monkeypatch):
    """The meta-step of every checkpoint written (any trainer)."""
    seen, real = [], ckpt.save

    def save(path, payload):
        seen.append(int(payload["step"]))
        return real(path, payload)

    monkeypatch.setattr(ckpt, "save", save)
    return seen


def cml(clock, tmp_path, steps=10, eval_every=100, **kw):
    _, tr = build(load_model("consolidation"))
    tr = MetaTrainer(tr.net, tr.family, tr.cml, tr.optimizer, meta_batch=2, seed=3,
                     eval_tasks=2)
    real = tr.meta_gradient

    def step(task, s=None):
        clock.t += STEP_S
        return real(task, s)

    tr.meta_gradient = step
    return tr.train(steps, eval_every=eval_every, progress=False,
                    checkpoint=tmp_path / "c.npz", **kw)


class TickingMAML(MAML):
    """MAML whose meta-gradient advances the fake clock by STEP_S."""
    clock = None

    def meta_gradient(self, *a, **k):
        TickingMAML.clock.t += STEP_S
        return super().meta_gradient(*a, **k)


def maml(clock, tmp_path, steps=10, eval_every=100, **kw):
    TickingMAML.clock = clock
    return train_baseline(TickingMAML(0.01, 1), init_mlp([1, 8, 1], 0), Sinusoid(), steps, meta_batch=2,
                          eval_tasks=2, progress=False, eval_every=eval_every,
                          checkpoint=tmp_path / "b.npz", **kw)


# both write after their evaluation at step 0
START = {cml: [0], maml: [0]}


@pytest.mark.parametrize("run", [cml, maml])
@pytest.mark.parametrize("kw, want", [
    # 12 s per meta-step, a write once 30 s have passed since the last: 36, 72, 108 s
    ({"checkpoint_every_s": 30.0}, [3, 6, 9, 10]),
    ({}, [3, 6, 9, 10]),                                    # the default: 30 s
    ({"checkpoint_every_s": 0}, list(range(1, 11))),        # after every meta-step
    ({"checkpoint_every_s": None}, [10]),                   # the end only
    ({"checkpoint_every_s": None, "checkpoint_every": 4}, [4, 8, 10]),
    ({"checkpoint_every_s": 30.0, "checkpoint_every": 4}, [3, 4, 7, 8, 10]),
    ({"checkpoint_every_s": None, "eval_every": 5}, [5, 10]),   # evaluations
    ({"checkpoint_every_s": 50.0, "eval_every": 5}, [5, 10]),   # 60 s since step 0
])
def test_writes_fall_where_the_cadence_says(clock, writes, tmp_path, run, kw, want):
    run(clock, tmp_path, **kw)
    assert writes == START[run] + want


@pytest.mark.parametrize("run", [cml, maml])
def test_the_default_is_read_when_the_run_starts(monkeypatch, clock, writes, tmp_path, run):
    monkeypatch.setattr(ckpt, "CHECKPOINT_EVERY_S", 60.0)      # 60, 120 s: steps 5, 10
    run(clock, tmp_path)
    assert writes == START[run] + [5, 10]


@pytest.mark.parametrize("run", [cml, maml])
def test_the_time_counts_from_the_first_evaluation(monkeypatch, clock, writes, tmp_path,
                                                   run):
    """Set-up and the step-0 evaluation (here 100 s) do not count towards the first
    timed write: still steps 3, 6, 9."""
    if run is cml:
        real_eval = MetaTrainer.evaluate

        def evaluate(self, *a, **k):
            clock.t += 50.0
            return real_eval(self, *a, **k)

        monkeypatch.setattr(MetaTrainer, "evaluate", evaluate)
    else:
        real_eval = TickingMAML.evaluate

        def evaluate(self, *a, **k):
            clock.t += 50.0
            return real_eval(self, *a, **k)

        monkeypatch.setattr(TickingMAML, "evaluate", evaluate)
    run(clock, tmp_path)
    assert writes == START[run] + [3, 6, 9, 10]


@pytest.mark.parametrize("run", [cml, maml])
def test_nothing_trained_or_selected_depends_on_the_cadence(monkeypatch, clock, tmp_path,
                                                            run):
    """Under a wall-time budget, with a write costing (fake) time: a write after every
    meta-step and none but the evaluations' give the same meta-steps, clock readings,
    scores and parameters -- the budget's clock is paused while one is written -- and
    only the wall time differs."""
    from neuro_meta import metatrain

    monkeypatch.setattr(metatrain.TrainingBudget, "clock", staticmethod(clock))
    real = ckpt.save

    def costly(path, payload):
        clock.t += 5.0
        return real(path, payload)

    monkeypatch.setattr(ckpt, "save", costly)
    out = {}
    for every_s in (0, None):
        clock.t = 0.0
        r = run(clock, tmp_path / str(every_s), steps=1000, budget_s=100.0,
                eval_every_s=40.0, checkpoint_every_s=every_s)
        h = vars(r) if run is cml else r[1]
        theta = h["theta"][-1] if run is cml else r[0]
        out[every_s] = (h, ckpt.checksum(theta))
    (a, ta), (b, tb) = out[0], out[None]
    for key in ("step", "time_s", "meta_val_mse", "meta_test_mse", "train_val_loss"):
        assert a[key] == b[key], key
    assert a["meta_steps"] == b["meta_steps"] == 9 and ta == tb   # 9 x 12 s >= 100 s


@pytest.mark.parametrize("value, message", [
    (-1.0, r"checkpoint_every_s: must be >= 0\.0 \(got -1\.0\)"),
    (float("nan"), r"checkpoint_every_s: must be .*\(got nan\)"),
    ("soon", r"checkpoint_every_s: must be a (real )?number"),
])
@pytest.mark.parametrize("run, owner", [(cml, "MetaTrainer.train"), (maml, "train_baseline")])
def test_bad_cadence_is_refused(clock, tmp_path, run, owner, value, message):
    with pytest.raises(ValidationError, match=owner + r"\." + message):
        run(clock, tmp_path, checkpoint_every_s=value)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_cli_refuses_a_bad_cadence_in_one_line(capsys, tmp_path, value):
    code = cli.main(["run", "consolidation", "--quick", "--no-progress",
                     "--out", str(tmp_path / "o"), "--checkpoint-every", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "neuro-meta run.--checkpoint-every: must be a finite number of seconds >= 0" \
        in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_sets_the_cadence_for_its_run_only(monkeypatch, tmp_path):
    seen = []
    real = CheckpointCadence.__init__

    def init(self, owner, every=None, every_s="default"):
        real(self, owner, every, every_s)
        seen.append(self.every_s)

    monkeypatch.setattr(CheckpointCadence, "__init__", init)
    assert cli.main(["run", "consolidation", "--quick", "--no-progress",
                     "--out", str(tmp_path / "o"), "--checkpoint-every", "7.5"]) == 0
    assert seen and all(s == 7.5 for s in seen)
    assert ckpt.CHECKPOINT_EVERY_S == 30.0          # restored after the command
    assert np.isfinite(ckpt.CHECKPOINT_EVERY_S)


def _seen_cadence():
    return CheckpointCadence("t").every_s


def test_with_cadence_sets_it_for_one_call_and_travels_to_workers():
    """What `--checkpoint-every` sends with a --seeds run's seed jobs: a picklable call
    that sets the cadence where it runs (a spawned process here, as on Dask or macOS),
    restored afterwards, also after an error."""
    import functools
    import multiprocessing
    import pickle

    call = functools.partial(ckpt.with_cadence, 7.5, _seen_cadence)
    assert call() == 7.5 and ckpt.CHECKPOINT_EVERY_S == 30.0
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(pickle.loads(pickle.dumps(call))) == 7.5
        assert pool.apply(_seen_cadence) == 30.0

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        ckpt.with_cadence(1.0, boom)
    assert ckpt.CHECKPOINT_EVERY_S == 30.0


def test_a_bad_module_default_names_itself(monkeypatch):
    monkeypatch.setattr(ckpt, "CHECKPOINT_EVERY_S", -1.0)
    with pytest.raises(ValidationError, match=r"neuro_meta\.checkpoint\.CHECKPOINT_EVERY_S: "
                       r"must be >= 0\.0 \(got -1\.0\)"):
        CheckpointCadence("MetaTrainer.train")
