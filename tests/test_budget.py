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
from neuro_meta.io import step_cap_notes
from neuro_meta.baselines import MAML, init_mlp, train_baseline
from neuro_meta.experiments.consolidation import build
from neuro_meta.families import Sinusoid
from neuro_meta.metatrain import (VALIDATION, MetaTrainer, ParameterAverage, TrainingBudget,
                                  task_rng)
from neuro_meta.models import load_model

STEP_S = 1.0        # fake seconds per meta-step
EVAL_S = 100.0      # fake seconds per evaluation: must never reach time_s


@pytest.fixture
def clock(monkeypatch, fake_clock):
    monkeypatch.setattr(TrainingBudget, "clock", staticmethod(fake_clock))
    return fake_clock


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
    # both reached on the same meta-step: the run had its whole budget, so "budget"
    # (no "stopped at its step cap before the budget ran out" note)
    _, h = maml_run(steps=4, budget_s=4.0, eval_every=2)
    assert h["stop_reason"] == "budget" and h["meta_steps"] == 4
    assert not step_cap_notes({"maml": h}, 4.0)
    _, h = maml_run(steps=4, budget_s=4.5, eval_every=2)
    assert h["stop_reason"] == "steps" and step_cap_notes({"maml": h}, 4.5)


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


def test_baseline_resume_continues_the_clock_and_the_selection(ticking_maml, tmp_path):
    """The baselines' checkpoint, under the rules of CML's (above): a run resumed with a
    larger budget equals one run with that budget from the start -- evaluations, clock,
    selection and parameters -- and resuming a finished run does nothing more."""
    path = tmp_path / "maml.npz"
    _, h1 = maml_run(budget_s=3.5, eval_every_s=2.0, checkpoint=path)
    assert h1["meta_steps"] == 4 and ckpt.load(path)["clock_s"] == 4.0
    p2, h2 = maml_run(budget_s=6.5, eval_every_s=2.0, checkpoint=path, resume=True)
    ticking_maml.t = 0.0
    p3, h3 = maml_run(budget_s=6.5, eval_every_s=2.0)
    assert h2["step"] == h3["step"] == [0, 2, 4, 6, 7] and h2["time_s"] == h3["time_s"]
    for k in ("meta_test_mse", "meta_val_mse", "train_val_loss", "selected"):
        assert h2[k] == h3[k], k
    assert h2["stop_reason"] == "budget" and h2["meta_steps"] == 7
    assert ckpt.checksum(p2) == ckpt.checksum(p3)
    p4, h4 = maml_run(budget_s=6.5, eval_every_s=2.0, checkpoint=path, resume=True)
    assert h4["step"] == h2["step"] and h4["meta_steps"] == 7
    assert h4["selected"] == h2["selected"] and ckpt.checksum(p4) == ckpt.checksum(p3)


class Killed(Exception):
    pass


@pytest.mark.parametrize("who", ["cml", "maml"])
def test_resumed_run_wall_time_counts_the_work_its_checkpoint_kept(monkeypatch, tmp_path,
                                                                     who):
    """``wall_time_s`` of a resumed run is that of the whole run: the first process's
    work (here made slow: 1 s per meta-step) plus the resumed one's."""
    import time

    path = tmp_path / "c.npz"
    kept = []                                   # MetaTrainer.resumed_wall_s per run
    cls, attr = (MetaTrainer, "meta_gradient") if who == "cml" else (MAML, "meta_gradient")
    real = getattr(cls, attr)

    def slow(self, *a):
        time.sleep(1.0)
        return real(self, *a)

    def run(steps, **kw):
        if who == "cml":
            tr = trainer()
            h = tr.train(steps, eval_every=1, progress=False, checkpoint=path, **kw)
            kept.append(tr.resumed_wall_s)
            return h.wall_time_s
        return maml_run(steps=steps, eval_every=1, checkpoint=path, **kw)[1]["wall_time_s"]

    with monkeypatch.context() as mp:
        mp.setattr(cls, attr, slow)
        first = run(3)
    assert first >= 3.0 and ckpt.load(path)["wall_s"] == pytest.approx(first, rel=0.1)
    t0 = time.perf_counter()
    total = run(4, resume=True)
    second = time.perf_counter() - t0
    assert second < 3.0 <= first                # the resumed process alone was quicker
    assert 0.9 * first <= total <= first + second
    if who == "cml":                            # restore: the finished run's wall time
        assert kept[0] == 0.0 and kept[1] == pytest.approx(first, rel=0.1)
        assert total == pytest.approx(kept[1] + second, rel=0.1, abs=0.2)
        assert trainer().restore(path).wall_time_s == pytest.approx(total, rel=0.1)


@pytest.mark.parametrize("every, kill_at, resumed_at, average", [
    (None, 6, 4, None), (3, 8, 6, None), (None, 7, 4, 0.8)])
def test_baseline_killed_and_resumed_equals_an_uninterrupted_run(monkeypatch, tmp_path,
                                                                  every, kill_at,
                                                                  resumed_at, average):
    """A baseline killed during meta-step ``kill_at`` resumes from its last checkpoint
    (the last evaluation, or every ``every`` steps) and ends with the parameters,
    history and selection of a run never stopped (no budget: bit for bit)."""
    path = tmp_path / "maml.npz"
    calls = []
    real = MAML.meta_gradient

    def dying(self, params, task):
        calls.append(1)
        if len(calls) == kill_at:
            raise Killed
        return real(self, params, task)

    with monkeypatch.context() as mp:
        mp.setattr(MAML, "meta_gradient", dying)
        with pytest.raises(Killed):
            maml_run(steps=10, eval_every=4, checkpoint=path, checkpoint_every=every,
                     average=average)
    assert ckpt.load(path)["step"] == resumed_at
    taken = []
    with monkeypatch.context() as mp:
        mp.setattr(MAML, "meta_gradient",
                   lambda self, params, task: taken.append(1) or real(self, params, task))
        p1, h1 = maml_run(steps=10, eval_every=4, checkpoint=path, resume=True,
                          checkpoint_every=every, average=average)
    assert len(taken) == 10 - resumed_at                 # no meta-step done twice
    p2, h2 = maml_run(steps=10, eval_every=4, average=average)
    assert ckpt.checksum(p1) == ckpt.checksum(p2)
    for k in ("step", "meta_test_mse", "meta_val_mse", "train_val_loss", "meta_steps"):
        assert h1[k] == h2[k], k
    assert {k: v for k, v in h1["selected"].items() if k != "time_s"} == \
        {k: v for k, v in h2["selected"].items() if k != "time_s"}
    assert ckpt.load(path)["step"] == 10


@pytest.mark.parametrize("other, what", [
    (dict(seed=4), "seed: 3 in the checkpoint, 4 now"),
    (dict(meta_batch=4), "meta_batch: 3 in the checkpoint, 4 now"),
    (dict(method=MAML(0.02, 1)), r"method: 'MAML\(inner_lr=0.01"),
    (dict(optimizer=optim.adam(0.5)), "optimizer"),
    (dict(eval_tasks=5), "test_task"),
    (dict(average=0.9), "average: None in the checkpoint, 0.9 now"),
    (dict(chunks=2), "chunks: 1 in the checkpoint, 2 now"),
    # another evaluation cadence would select among other points
    (dict(eval_every=3), "eval_every: 2 in the checkpoint, 3 now"),
    (dict(eval_every_s=1.5, budget_s=100.0), "eval_every_s: None in the checkpoint, 1.5 now"),
])
def test_baseline_resume_under_another_configuration_is_refused(tmp_path, other, what):
    path = tmp_path / "maml.npz"
    kw = dict(method=MAML(0.01, 1), seed=3, meta_batch=3, eval_tasks=4, eval_every=2)

    def run(**o):
        args = {**kw, **o}
        return train_baseline(args.pop("method"), init_mlp([1, 8, 1], 0), Sinusoid(), 4,
                              progress=False, checkpoint=path, resume=True, **args)

    run()
    with pytest.raises(ckpt.CheckpointError, match=what):
        run(**other)
    run()                                       # its own configuration resumes


def test_baseline_refuses_files_that_are_not_its_checkpoints(tmp_path):
    path = tmp_path / "c.npz"
    trainer().train(1, progress=False, checkpoint=path)      # CML's checkpoint
    with pytest.raises(ckpt.CheckpointError, match="c.npz: not a train_baseline checkpoint"):
        maml_run(steps=2, checkpoint=path, resume=True)
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(ckpt.CheckpointError, match="c.npz: not a readable"):
        maml_run(steps=2, checkpoint=path, resume=True)
    _, h = maml_run(steps=2, checkpoint=path)           # no resume: a fresh run
    assert h["meta_steps"] == 2 and ckpt.load(path)["step"] == 2
    with pytest.raises(nm.ValidationError, match=r"train_baseline\.steps: must be at least "
                       r"the meta-step of the checkpoint"):
        maml_run(steps=1, checkpoint=path, resume=True)


# ------------------------------------------------------------------ parameter averaging
def ema_reference(thetas, d):
    """Bias-corrected exponential moving average of a trajectory, from its weights."""
    t = len(thetas)
    w = np.array([(1 - d) * d ** (t - 1 - s) for s in range(t)]) / (1 - d ** t)
    assert w.sum() == pytest.approx(1.0)
    return optim.tree_map(lambda *a: sum(wi * ai for wi, ai in zip(w, a)), *thetas)


def flat(tree):
    return optim.tree_vector(tree)


def test_parameter_average_against_its_weights():
    rng = np.random.default_rng(0)
    seq = [{"w": [rng.normal(size=(3, 2)), None], "lam": [rng.uniform(1, 2, 4)]}
           for _ in range(7)]
    avg = ParameterAverage(0.9)
    assert avg.value(seq[0]) is seq[0]                  # nothing averaged yet
    for k in range(7):
        avg.update(seq[k])
        np.testing.assert_allclose(flat(avg.value(seq[k])),
                                   flat(ema_reference(seq[:k + 1], 0.9)), rtol=1e-13)
    assert avg.value(seq[0])["w"][1] is None
    assert avg.value(seq[0])["lam"][0].min() >= 1.0     # a convex combination: floors hold
    off = ParameterAverage(None)
    off.update(seq[1])
    assert off.value(seq[2]) is seq[2]
    with pytest.raises(nm.ValidationError, match=r"X\.average: must be < 1\.0 \(got 1\.0\)"):
        ParameterAverage(1.0, "X")


def test_cml_trainer_evaluates_selects_and_keeps_the_average():
    """With ``average``, the recorded θ and scores are those of the moving average of the
    raw trajectory (taken from a run without averaging, which it does not change), and
    the network keeps it."""
    raw = trainer()
    h_raw = raw.train(4, eval_every=1, progress=False, select=False)
    avg = trainer(average=0.7)
    h = avg.train(4, eval_every=1, progress=False, select=False)
    for k in range(1, 5):
        want = ema_reference(h_raw.theta[1:k + 1], 0.7)
        np.testing.assert_allclose(flat(h.theta[k]), flat(want), rtol=1e-12)
    assert h.train_val_loss == h_raw.train_val_loss       # training follows the raw θ
    np.testing.assert_allclose(flat(avg.net.theta), flat(h.theta[-1]), rtol=0, atol=0)
    m, _ = raw.evaluate(raw.net.with_theta(h.theta[2]), tasks="validation")
    assert h.meta_val_mse[2] == pytest.approx(m, rel=1e-12)
    assert not np.allclose(flat(h.theta[-1]), flat(h_raw.theta[-1]))
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer\.average: must be >= 0\.0"):
        trainer(average=-0.1)


def test_cml_killed_and_resumed_with_an_average_equals_an_uninterrupted_run(tmp_path):
    """The average's state is in CML's checkpoint: killed during meta-step 3 and
    resumed, the run keeps the averaged θ of a run never stopped; ``restore`` gives a
    fresh trainer the checkpoint's kept θ (the average, also with ``select=False``)."""
    path = tmp_path / "c.npz"
    tr = trainer(average=0.6)
    real, calls = tr.meta_gradient, []

    def dying(task, s=None):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real(task, s)

    tr.meta_gradient = dying
    with pytest.raises(Killed):
        tr.train(5, eval_every=5, progress=False, checkpoint=path, checkpoint_every=1)
    assert ckpt.load(path)["step"] == 2 and ckpt.load(path)["average"]["t"] == 2
    resumed = trainer(average=0.6)
    h1 = resumed.train(5, eval_every=5, progress=False, checkpoint=path, resume=True,
                       select=False)
    straight = trainer(average=0.6)
    h2 = straight.train(5, eval_every=5, progress=False, select=False)
    assert h1.meta_val_mse == h2.meta_val_mse and h1.train_val_loss == h2.train_val_loss
    assert ckpt.checksum(resumed.net.theta) == ckpt.checksum(straight.net.theta)
    for select in (False, True):
        fresh = trainer(average=0.6)
        fresh.restore(path, select=select)
        want = h2.theta[int(np.argmin(h2.meta_val_mse)) if select else -1]
        assert ckpt.checksum(fresh.net.theta) == ckpt.checksum(want), select


def test_baseline_evaluates_selects_and_keeps_the_average():
    thetas = [maml_run(steps=k, eval_every=100, select=False)[0] for k in range(1, 5)]
    p, h = maml_run(steps=4, eval_every=1, average=0.7, select=False)
    np.testing.assert_allclose(flat(p), flat(ema_reference(thetas, 0.7)), rtol=1e-12)
    _, h_raw = maml_run(steps=4, eval_every=1)
    assert h["train_val_loss"] == h_raw["train_val_loss"]
    m = MAML(0.01, 1).evaluate(ema_reference(thetas[:2], 0.7),
                               Sinusoid().sample(task_rng(0, VALIDATION), 4)).mean()
    assert h["meta_val_mse"][2] == pytest.approx(m, rel=1e-12)
    assert h["meta_val_mse"][2] != h_raw["meta_val_mse"][2]


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
    ({"resume": "yes"}, r"train_baseline\.resume: must be True or False \(got 'yes'\)"),
    ({"checkpoint": 3}, r"train_baseline\.checkpoint: must be a path .* \(got int\)"),
    ({"checkpoint_every": 0}, r"train_baseline\.checkpoint_every: must be >= 1 \(got 0\)"),
    ({"optimizer": "adam"}, r"train_baseline\.optimizer: must be a gradient transformation"),
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


# ------------------------------------------- a learning-rate schedule over the budget
def _recording(opt, seen):
    """``opt`` that records the horizons of its state at every update."""
    def update(grads, state):
        seen.append(optim.horizons(state)[0])
        return opt.update(grads, state)
    return optim.GradientTransformation(opt.init, update, opt.settings)


@pytest.mark.parametrize("step_s, budget_s, steps", [(1.0, 20.0, 20), (2.0, 20.0, 10),
                                                     (0.5, 20.0, 40)])
def test_schedule_over_the_budget_lasts_the_budget_on_any_machine(monkeypatch, clock,
                                                                  step_s, budget_s, steps):
    """MAML on a machine 1x, 2x slower, 2x faster: the horizon is measured once the clock
    passes 5 % of the budget (1 s) at the rate since the end of the first meta-step --
    here after the second -- and equals the meta-steps the budget then holds:
    2 + (budget - 2 step_s) / step_s."""
    meta_gradient = MAML.meta_gradient

    def tick(self, params, task):
        clock.t += step_s
        return meta_gradient(self, params, task)
    monkeypatch.setattr(MAML, "meta_gradient", tick)
    seen = []
    opt = _recording(optim.adam(optim.cosine_decay(1e-3, "budget", 0.05)), seen)
    _, h = maml_run(budget_s=budget_s, eval_every_s=5.0, optimizer=opt)
    at = 2
    want = at + round((budget_s - at * step_s) / step_s)
    assert h["meta_steps"] == steps == want and h["schedule_steps"] == want
    assert seen[:at] == [None] * at and set(seen[at:]) == {want}


@pytest.mark.parametrize("refit", [True, False])
def test_schedule_over_the_budget_follows_a_rate_that_changes(monkeypatch, clock, refit):
    """The machine gets 4x faster a quarter into the budget (another process ended):
    1 s per meta-step for the first 10 s, then 0.25 s, 130 meta-steps in 40 s. Measured
    once (the old rule, ``REFIT_EVERY`` beyond the budget), the horizon is 40 and 90
    meta-steps run at the cosine's end; re-fitted every 5 % of the budget, the decay
    ends with the budget (the last update at >= 95 % of the cosine, the last horizon
    within 10 % of the steps made) and the learning rate never rises, whatever the
    re-fits -- the rates are recomputed here from the recorded horizons and anchors
    with the closed-form cosine."""
    meta_gradient = MAML.meta_gradient

    def tick(self, params, task):
        clock.t += 1.0 if clock.t < 10.0 - 1e-9 else 0.25
        return meta_gradient(self, params, task)
    monkeypatch.setattr(MAML, "meta_gradient", tick)
    if not refit:
        monkeypatch.setattr(TrainingBudget, "REFIT_EVERY", 10.0)
    seen = []
    inner = optim.adam(optim.cosine_decay(1e-3, "budget", 0.05))

    def update(grads, state):
        seen.append((state["count"], state["horizon"], state.get("anchor")))
        return inner.update(grads, state)
    opt = optim.GradientTransformation(inner.init, update, inner.settings)
    _, h = maml_run(budget_s=40.0, eval_every_s=10.0, optimizer=opt)
    assert h["meta_steps"] == 130

    def rate(k, n, anchor):       # the cosine of cosine_decay, written out
        if n is None:
            return 1e-3
        if anchor is None:
            x = min(k, n) / n
        else:
            k0, x0 = anchor
            x = 1.0 if k >= n else x0 + (1 - x0) * (k - k0) / (n - k0)
        return 1e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * x)))
    lrs = np.array([rate(*s) for s in seen])
    assert np.all(np.diff(lrs) <= 1e-18)                    # never rises
    at_end = int(np.sum(np.isclose(lrs, 5e-5, rtol=1e-12, atol=0)))
    if refit:
        assert abs(h["schedule_steps"] - 130) <= 13 and at_end <= 7
        assert lrs[-1] <= 1e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 0.95)))
    else:
        assert h["schedule_steps"] == 40 and at_end == 90


def test_refit_horizon_keeps_the_rate_and_refuses_a_horizon_behind():
    """refit_horizon at update k: the same rate at k under the old and the new horizon,
    the new cosine ending at the new horizon; a horizon not after k is refused; a
    schedule not measured yet is left unmeasured."""
    sched = optim.cosine_decay(1.0, "budget", 0.1)
    opt = optim.adam(sched)
    state = optim.set_horizon(opt.init({"w": [np.zeros((2, 3))], "b": [np.zeros(3)]}), 100)
    for k, n in ((30, 200), (30, 50), (99, 400)):
        new = optim.refit_horizon(state, k, n)
        assert optim.horizons(new) == [n]
        assert sched.value(k, 100) == pytest.approx(sched.value(k, n, new["anchor"]),
                                                     rel=1e-15)
        assert sched.value(n, n, new["anchor"]) == pytest.approx(0.1, rel=1e-15)
        assert sched.value(n + 7, n, new["anchor"]) == pytest.approx(0.1, rel=1e-15)
    with pytest.raises(nm.ValidationError, match=r"refit_horizon\.steps: must be >= 31"):
        optim.refit_horizon(state, 30, 30)
    assert optim.horizons(optim.refit_horizon(opt.init({"w": [np.zeros((2, 3))], "b": [np.zeros(3)]}), 3, 9)) == [None]


def test_schedule_over_the_budget_in_the_cml_trainer_and_its_checkpoint(clock, tmp_path):
    """CML's trainer measures the same horizon (1 fake s per meta-step, 4-s budget: set
    after meta-step 2 to 4); the checkpoint keeps it and a resume with a larger budget
    continues on it (no second measurement)."""
    _, tr = build(load_model("consolidation"))
    seen = []
    opt = _recording(optim.chain(optim.clip_by_global_norm(1.0),
                                 optim.adam(optim.cosine_decay(0.05, "budget", 0.05))), seen)
    new = lambda: ticking(MetaTrainer(tr.net, tr.family, tr.cml, opt, meta_batch=1,  # noqa
                                      seed=3, eval_tasks=2), clock)
    ck = tmp_path / "cml.npz"
    h = new().train(1000, budget_s=4.0, eval_every_s=3.0, progress=False, checkpoint=ck)
    assert (h.meta_steps, h.schedule_steps) == (4, 4) and seen == [None, None, 4, 4]
    assert optim.horizons(ckpt.load(ck)["opt_state"]) == [4]
    h2 = new().train(1000, budget_s=5.0, eval_every_s=3.0, progress=False, checkpoint=ck,
                     resume=True)
    assert (h2.meta_steps, h2.schedule_steps) == (5, 4) and seen[4:] == [4]


def test_schedule_over_the_budget_is_measured_after_a_resume_and_kept_under_the_cap(
        ticking_maml, tmp_path):
    """A checkpoint written before the horizon was measured (a 1-s budget: the run ends
    at meta-step 1, where nothing is measured) resumes with a 40-s budget and measures it
    from its own first meta-step (2, at 2 s; at 3 s: 3 + 37); a step cap below what the
    budget holds bounds the horizon; a run whose clock passes 5 % only on its last
    meta-step measures nothing."""
    opt = optim.adam(optim.cosine_decay(1e-3, "budget", 0.05))
    ck = tmp_path / "maml.npz"
    _, h = maml_run(budget_s=1.0, eval_every_s=10.0, optimizer=opt, checkpoint=ck)
    assert h["meta_steps"] == 1 and h["schedule_steps"] is None
    assert optim.horizons(ckpt.load(ck)["opt_state"]) == [None]
    _, h = maml_run(budget_s=40.0, eval_every_s=10.0, optimizer=opt, checkpoint=ck,
                    resume=True)
    assert (h["meta_steps"], h["schedule_steps"]) == (40, 40)
    ticking_maml.t = 0.0
    _, h = maml_run(steps=10, budget_s=40.0, eval_every_s=10.0, optimizer=opt)
    assert (h["meta_steps"], h["stop_reason"], h["schedule_steps"]) == (10, "steps", 10)
    ticking_maml.t = 0.0
    _, h = maml_run(budget_s=2.0, optimizer=opt)
    assert h["meta_steps"] == 2 and h["schedule_steps"] is None


def test_schedule_over_the_budget_needs_a_budget(ticking_maml):
    opt = optim.adam(optim.cosine_decay(1e-3, "budget", 0.05))
    with pytest.raises(nm.ValidationError, match=r"train_baseline.budget_s: must be given "
                                                 r"\(s\) when the optimiser's learning rate "
                                                 r"decays over the budget"):
        maml_run(steps=3, optimizer=opt)
    _, tr = build(load_model("consolidation"))
    cml = MetaTrainer(tr.net, tr.family, tr.cml, opt, meta_batch=2, seed=3, eval_tasks=2)
    with pytest.raises(nm.ValidationError, match=r"MetaTrainer.train.budget_s: must be"):
        cml.train(3, progress=False)
    # a budget that ends before it is measured leaves the start rate, and says so: None
    _, h = maml_run(budget_s=1.0, optimizer=opt)
    assert h["meta_steps"] == 1 and h["schedule_steps"] is None


def test_es_trainer_refuses_a_schedule_over_the_budget():
    from neuro_meta import vsml as V

    es = V.ESTrainer(lambda thetas, seeds: np.sum(thetas ** 2, axis=1), np.ones(3),
                     sigma=0.1, pairs=1,
                     optimizer=optim.adam(optim.cosine_decay(1e-3, "budget", 0.05)))
    with pytest.raises(nm.ValidationError, match=r"ESTrainer.train.optimizer: must not decay"):
        es.train(2, progress=False)
