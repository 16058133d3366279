"""Compute-fair meta-training: wall-time budgets, evaluation schedules, selection on
meta-validation tasks, checkpoints -- for CML (MetaTrainer) and the baselines alike.

The budget tests run on a fake clock that advances only when a meta-step is taken (and,
to prove they are excluded, by a lot during evaluations), so their numbers are exact.
"""
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import checkpoint as ckpt
from neuro_meta import optim
from neuro_meta.baselines import MAML, init_mlp, train_baseline
from neuro_meta.experiments.consolidation import build
from neuro_meta.families import Sinusoid
from neuro_meta.metatrain import MetaTrainer, TrainingBudget
from neuro_meta.models import load_model

STEP_S = 1.0        # fake seconds per meta-step
EVAL_S = 100.0      # fake seconds per evaluation: must never reach time_s


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(TrainingBudget, "clock", staticmethod(c))
    return c


def trainer(**kw):
    _, tr = build(load_model("consolidation"))
    return MetaTrainer(tr.net, tr.family, tr.cml, tr.optimizer, meta_batch=4, seed=3,
                       eval_tasks=4, **kw)


def ticking(tr, clock):
    """``tr`` whose meta-steps and evaluations advance the fake clock."""
    step, evaluate = tr.meta_gradient, tr.evaluate

    def meta_gradient(task, s=None):
        clock.t += STEP_S
        return step(task, s)

    def timed_evaluate(net=None, tasks="test"):
        clock.t += EVAL_S
        return evaluate(net, tasks)

    tr.meta_gradient, tr.evaluate = meta_gradient, timed_evaluate
    return tr


@pytest.fixture
def ticking_maml(monkeypatch, clock):
    meta_gradient, evaluate = MAML.meta_gradient, MAML.evaluate

    def tick(self, params, task):
        clock.t += STEP_S
        return meta_gradient(self, params, task)

    def timed(self, params, task, inner_steps=None):
        clock.t += EVAL_S
        return evaluate(self, params, task, inner_steps)

    monkeypatch.setattr(MAML, "meta_gradient", tick)
    monkeypatch.setattr(MAML, "evaluate", timed)
    return clock


def maml_run(steps=1000, **kw):
    return train_baseline(MAML(0.01, 1), init_mlp([1, 8, 1], 0), Sinusoid(), steps,
                          meta_batch=3, eval_tasks=4, progress=False, **kw)


# ------------------------------------------------------------------ the budget
def test_budget_stops_baseline_within_one_meta_step(ticking_maml):
    _, h = maml_run(budget_s=10.5, eval_every_s=3.0)
    assert h["stop_reason"] == "budget" and h["meta_steps"] == 11 < 1000
    # evaluated at 0 and after the first step >= 3 s past the last one, and at the end;
    # the 100 s of every evaluation are not counted
    assert h["step"] == [0, 3, 6, 9, 11]
    assert h["time_s"] == [0.0, 3.0, 6.0, 9.0, 11.0]
    assert 10.5 <= h["time_s"][-1] < 10.5 + STEP_S
    assert len(h["train_val_loss"]) == 11
    # the cap binds first
    _, h = maml_run(steps=4, budget_s=10.5, eval_every=2)
    assert h["stop_reason"] == "steps" and h["meta_steps"] == 4 and h["step"] == [0, 2, 4]


def test_budget_stops_cml_within_one_meta_step(clock):
    tr = ticking(trainer(), clock)
    h = tr.train(1000, budget_s=3.5, eval_every_s=2.0, progress=False)
    assert (h.stop_reason, h.meta_steps, h.budget_s) == ("budget", 4, 3.5)
    assert h.step == [0, 2, 4] and h.time_s == [0.0, 2.0, 4.0]
    assert len(h.meta_val_mse) == len(h.meta_test_mse) == 3


def test_budget_run_is_reproduced_by_its_steps(clock):
    """A budget run that stopped after N meta-steps equals the step-bound run of N steps
    evaluated at the same steps (the recipe of docs/sinusoid.md), and a budget that never
    binds changes nothing."""
    budget = ticking(trainer(), clock).train(1000, budget_s=3.5, eval_every_s=2.0,
                                             progress=False, keep_theta=False)
    clock.t = 0.0
    runs = {"budget": (budget, None)}
    for name, kw in (("steps", {}), ("loose budget", {"budget_s": 1e9})):
        tr = trainer()
        runs[name] = (tr.train(4, eval_every=2, progress=False, keep_theta=False, **kw), tr)
    ref = runs["steps"][0]
    assert ref.stop_reason == "steps"
    for name in ("budget", "loose budget"):
        h = runs[name][0]
        for k in ("step", "meta_val_mse", "meta_test_mse", "train_val_loss", "selected"):
            got, want = getattr(h, k), getattr(ref, k)
            if k == "selected":
                got, want = ({f: d[f] for f in d if f != "time_s"} for d in (got, want))
            assert got == want, (name, k)


def test_resume_continues_the_clock_and_the_selection(clock, tmp_path):
    path = tmp_path / "c.npz"
    first = ticking(trainer(), clock)
    h1 = first.train(1000, budget_s=3.5, eval_every_s=2.0, progress=False, checkpoint=path)
    assert h1.meta_steps == 4 and ckpt.load(path)["clock_s"] == 4.0
    resumed = ticking(trainer(), clock)
    h2 = resumed.train(1000, budget_s=6.5, eval_every_s=2.0, progress=False,
                       checkpoint=path, resume=True)
    clock.t = 0.0
    straight = ticking(trainer(), clock)
    h3 = straight.train(1000, budget_s=6.5, eval_every_s=2.0, progress=False)
    assert h2.step == h3.step == [0, 2, 4, 6, 7] and h2.time_s == h3.time_s
    assert h2.meta_test_mse == h3.meta_test_mse and h2.meta_val_mse == h3.meta_val_mse
    assert h2.selected == h3.selected and h2.stop_reason == "budget"
    assert ckpt.checksum(resumed.net.theta) == ckpt.checksum(straight.net.theta)
    # resuming a finished run takes no step and evaluates nothing more
    again = ticking(trainer(), clock)
    h4 = again.train(1000, budget_s=6.5, eval_every_s=2.0, progress=False,
                     checkpoint=path, resume=True)
    assert h4.step == h2.step and h4.meta_steps == 7 and h4.selected == h2.selected
    assert ckpt.checksum(again.net.theta) == ckpt.checksum(straight.net.theta)


def test_old_checkpoint_without_validation_scores_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    trainer().train(1, progress=False, checkpoint=path)
    state = ckpt.load(path)
    del state["best"]
    ckpt.save(path, state)
    with pytest.raises(ckpt.CheckpointError, match="c.npz.*meta-validation"):
        trainer().train(2, progress=False, checkpoint=path, resume=True)


# ------------------------------------------------------------------ selection
# Scripted evaluation scores: validation and test disagree on the best point, so a
# selection that looked at the test tasks would pick index 1, not 3.
VAL = [5.0, 3.0, 4.0, 1.0, 2.0]
TEST = [5.0, 0.5, 4.0, 3.0, 2.0]


def scripted(calls):
    """(mean, s.e.m.) from VAL / TEST, one per call for each kind of task."""
    def score(which):
        seen = [c for c in calls if c[0] == which]
        return (VAL if which == "validation" else TEST)[len(seen) - 1], 0.1
    return score


def test_baseline_selects_on_validation_never_on_test(monkeypatch):
    calls = []
    score = scripted(calls)

    def evaluate(self, params, task, inner_steps=None):
        which = "validation" if task is val_task else "test"
        calls.append((which, optim.tree_vector(params).copy()))
        return np.full(4, score(which)[0])

    monkeypatch.setattr(MAML, "evaluate", evaluate)
    val_task = Sinusoid().sample(np.random.default_rng(9), 4)
    params, h = maml_run(steps=4, eval_every=1, val_task=val_task)
    assert h["meta_val_mse"] == VAL and h["meta_test_mse"] == TEST
    assert h["selected"] == {"index": 3, "step": 3, "time_s": h["time_s"][3],
                             "meta_val_mse": 1.0, "meta_test_mse": 3.0,
                             "meta_test_sem": 0.0}
    theta_at = [v for which, v in calls if which == "validation"]
    np.testing.assert_array_equal(optim.tree_vector(params), theta_at[3])
    assert not np.array_equal(theta_at[3], theta_at[4])
    calls.clear()
    last, h = maml_run(steps=4, eval_every=1, val_task=val_task, select=False)
    assert h["selected"]["index"] == 4 and h["selected"]["meta_test_mse"] == 2.0
    np.testing.assert_array_equal(optim.tree_vector(last), theta_at[4])


def scripted_trainer(calls):
    """A trainer whose evaluations return the scripted scores and note its θ."""
    tr = trainer()
    score = scripted(calls)

    def evaluate(net=None, tasks="test"):
        calls.append((tasks, optim.tree_vector(tr.net.theta).copy()))
        return score(tasks)

    tr.evaluate = evaluate
    return tr


def test_cml_selects_on_validation_never_on_test():
    calls = []
    tr = scripted_trainer(calls)
    h = tr.train(4, eval_every=1, progress=False, keep_theta=False)
    assert h.meta_val_mse == VAL and h.meta_test_mse == TEST
    assert h.selected == {"index": 3, "step": 3, "time_s": h.time_s[3],
                          "meta_val_mse": 1.0, "meta_test_mse": 3.0, "meta_test_sem": 0.1}
    theta_at = [v for which, v in calls if which == "validation"]
    np.testing.assert_array_equal(optim.tree_vector(tr.net.theta), theta_at[3])
    assert not np.array_equal(theta_at[3], theta_at[4])
    calls.clear()
    tr = scripted_trainer(calls)
    h = tr.train(4, eval_every=1, progress=False, select=False)
    assert h.selected["index"] == 4
    np.testing.assert_array_equal(optim.tree_vector(tr.net.theta), theta_at[4])


def test_validation_and_test_tasks_are_disjoint_streams():
    tr = trainer(val_tasks=3)
    assert tr.val_task.n_tasks == 3 and tr.test_task.n_tasks == 4
    assert not np.array_equal(tr.val_task.x_train[0], tr.test_task.x_train[0])
    m, s = tr.evaluate(tasks="validation")
    assert np.isfinite(m) and s >= 0


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    ({"budget_s": -1.0}, r"MetaTrainer\.train\.budget_s: must be > 0\.0 \(got -1\.0\)"),
    ({"budget_s": 0}, r"MetaTrainer\.train\.budget_s: must be > 0\.0 \(got 0\.0\)"),
    ({"eval_every_s": float("nan")}, r"MetaTrainer\.train\.eval_every_s: must be finite"),
    ({"eval_every_s": "3"}, r"MetaTrainer\.train\.eval_every_s: must be a real number"),
    ({"select": "yes"}, r"MetaTrainer\.train\.select: must be True or False \(got 'yes'\)"),
])
def test_invalid_train_arguments(kw, match):
    with pytest.raises(nm.ValidationError, match=match):
        trainer().train(2, progress=False, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"budget_s": -2}, r"train_baseline\.budget_s: must be > 0\.0 \(got -2\.0\)"),
    ({"eval_every_s": 0.0}, r"train_baseline\.eval_every_s: must be > 0\.0 \(got 0\.0\)"),
    ({"val_tasks": 0}, r"train_baseline\.val_tasks: must be >= 1 \(got 0\)"),
    ({"val_task": "tasks"}, r"train_baseline\.val_task: must be a Task \(got str\)"),
    ({"select": 1}, r"train_baseline\.select: must be True or False \(got 1\)"),
])
def test_invalid_baseline_arguments(kw, match):
    with pytest.raises(nm.ValidationError, match=match):
        maml_run(steps=2, **kw)


def test_invalid_trainer_and_evaluate_arguments():
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.val_tasks: must be >= 1"):
        trainer(val_tasks=0)
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.evaluate\.tasks: must be "
                       r"one of 'test', 'validation' \(got 'val'\)"):
        trainer().evaluate(tasks="val")
