"""Learning-rate schedules of the meta-optimisers (neuro_meta.optim) and the
``schedule`` setting of the experiments' ``meta`` and ``baselines`` sections.

References: the closed forms of the schedules; Adam's update is linear in its learning
rate, so a scheduled Adam equals the unit-rate Adam times the schedule, update by update."""
import math

import numpy as np
import pytest

from neuro_meta import baselines as bl
from neuro_meta import optim
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import bandit, omniglot as og, sinusoid
from neuro_meta.metatrain import optimizer_fingerprint

THETA = {"omega": [np.zeros((3, 2)), None], "lam": [np.ones(4), np.ones(2)]}


def _grads(k):
    rng = np.random.default_rng(k)
    return optim.tree_map(lambda a: rng.normal(size=np.shape(a)), THETA)


def _updates(opt, n):
    state, out = opt.init(THETA), []
    for k in range(n):
        u, state = opt.update(_grads(k), state)
        out.append(u)
    return out


def test_cosine_decay_closed_form():
    s = optim.cosine_decay(2.0, 8, alpha=0.25)
    for k in range(12):
        x = min(k, 8) / 8
        want = 2.0 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * x)))
        assert s(k) == pytest.approx(want, rel=1e-15)
    assert s(0) == 2.0 and s(8) == pytest.approx(0.5) and s(100) == pytest.approx(0.5)
    assert s(4) == pytest.approx(1.25)          # half way: the mean of start and end


def test_cosine_decay_default_ends_at_five_percent():
    """The default end (alpha) is usable -- it was 0, which the check refuses -- and is
    the shipped model files' end: 0.05 of the initial value."""
    s = optim.cosine_decay(2.0, 10)
    assert s(0) == 2.0 and s(10) == pytest.approx(0.1, rel=1e-15)
    assert s(5) == pytest.approx(2.0 * (0.05 + 0.95 * 0.5), rel=1e-15)


def test_piecewise_constant_values():
    s = optim.piecewise_constant(1.0, [3, 6], [0.5, 0.1])
    assert [s(k) for k in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.05, 0.05]


@pytest.mark.parametrize("make", [optim.adam, optim.sgd, lambda lr: optim.sgd(lr, 0.9)])
def test_constant_schedule_is_the_number(make):
    a, b = make(3e-3), make(optim.constant(3e-3))
    assert a.settings == b.settings
    # the same state too: a checkpoint of one (same fingerprint) resumes in the other
    state = a.init(THETA)
    b.update(_grads(0), state)
    for ua, ub in zip(_updates(a, 5), _updates(b, 5)):
        for x, y in zip(optim.tree_vector(ua), optim.tree_vector(ub)):
            assert x == y


@pytest.mark.parametrize("make", [optim.adam, optim.sgd, lambda lr: optim.sgd(lr, 0.9)])
def test_scheduled_update_is_unit_update_times_rate(make):
    sched = optim.cosine_decay(0.1, 5, alpha=0.1)
    got, unit = _updates(make(sched), 8), _updates(make(1.0), 8)
    for k, (g, u) in enumerate(zip(got, unit)):
        np.testing.assert_allclose(optim.tree_vector(g), sched(k) * optim.tree_vector(u),
                                   rtol=1e-13, atol=0)
    assert sched(0) == 0.1 and sched(7) == pytest.approx(0.01)


def test_schedule_is_in_the_fingerprint():
    fp = lambda lr: optimizer_fingerprint(optim.chain(optim.clip_by_global_norm(1.0),  # noqa
                                                      optim.adam(lr)), THETA)
    base = fp(5e-3)
    assert fp(optim.constant(5e-3)) == base
    cos = fp(optim.cosine_decay(5e-3, 7000, 0.05))
    assert cos != base and cos == fp(optim.cosine_decay(5e-3, 7000, 0.05))
    assert cos != fp(optim.cosine_decay(5e-3, 6000, 0.05))
    assert fp(optim.piecewise_constant(5e-3, [10], [0.2])) not in (base, cos)


@pytest.mark.parametrize("call, match", [
    (lambda: optim.cosine_decay(0.0, 10), "cosine_decay.init_value"),
    (lambda: optim.cosine_decay(1.0, 0), "cosine_decay.decay_steps"),
    (lambda: optim.cosine_decay(1.0, 2.5, 0.1), r'decay_steps: must be an integer >= 1 or '
                                                r'"budget" \(got 2.5\)'),
    (lambda: optim.cosine_decay(1.0, True, 0.1), "cosine_decay.decay_steps"),
    (lambda: optim.cosine_decay(1.0, 10, alpha=0.0), "cosine_decay.alpha"),
    (lambda: optim.cosine_decay(1.0, 10, alpha=1.5), "cosine_decay.alpha"),
    (lambda: optim.piecewise_constant(1.0, [], []), "piecewise_constant.boundaries"),
    (lambda: optim.piecewise_constant(1.0, [5, 5], [1, 1]), "boundaries: must increase"),
    (lambda: optim.piecewise_constant(1.0, [5], [1, 2]), "piecewise_constant.scales"),
    (lambda: optim.piecewise_constant(1.0, [5], [-1]), r"scales\[0\]"),
    (lambda: optim.piecewise_constant(1.0, [5, 6], [1e200, 1e200]), "finite"),
    (lambda: optim.constant(float("nan")), "constant.value"),
    (lambda: optim.adam(lambda k: 0.1), "adam.learning_rate: must be a number > 0 or"),
    (lambda: optim.sgd("fast"), "sgd.learning_rate"),
])
def test_bad_schedules_are_refused(call, match):
    with pytest.raises(ValidationError, match=match):
        call()


# ---------------------------------------------------------------------- experiments
COSINE = "{kind: cosine, steps: 70, end: 0.05}"


def _adam_rate(opt):
    """The learning-rate settings of the Adam in ``opt`` (alone or last in a chain)."""
    s = opt.settings
    return (s[-1] if s[0] == "chain" else s)[1]


def test_omniglot_meta_and_baselines_get_their_schedules():
    cfg = og._cfg(overrides=[f"meta.schedule={COSINE}",
                             "baselines.schedule={kind: piecewise, boundaries: [10, 20], "
                             "scales: [0.5, 0.5]}"])
    fams = og.families(cfg)
    trainer = og.build_cml(cfg, fams)[1]
    assert _adam_rate(trainer.optimizer) == ("cosine_decay", 5e-3, 70, 0.05)
    dual = og.build_cml(cfg, fams, model="dual")[1]        # the dual system's own rate
    assert _adam_rate(dual.optimizer)[:3] == ("cosine_decay", dual_rate(cfg), 70)
    kw = og._baseline_training(cfg, "maml", fams, trainer)[2]
    assert _adam_rate(kw["optimizer"]) == ("piecewise_constant", 1e-3, (10, 20), (0.5, 0.5))
    plain = og._cfg()
    assert _adam_rate(og.build_cml(plain, og.families(plain))[1].optimizer) == 5e-3


class Stop(Exception):
    """Raised where a run would start training (the settings were read by then)."""


def _stop_at(monkeypatch, owner, name):
    """Replace ``owner.name`` by a function that records its keyword arguments (and
    ``self.optimizer`` for a method) in the returned dict, then raises :class:`Stop`."""
    seen = {}

    def capture(*args, **kw):
        seen.update(kw)
        if args and hasattr(args[0], "optimizer"):
            seen.setdefault("optimizer", args[0].optimizer)
        raise Stop
    monkeypatch.setattr(owner, name, capture)
    return seen


def dual_rate(cfg):
    return cfg["dual"].get("learning_rate", cfg["meta"]["learning_rate"])


def test_sinusoid_meta_gets_its_schedule(monkeypatch, tmp_path):
    cfg = sinusoid._cfg(None, True, None, overrides=[f"meta.schedule={COSINE}",
                                                     "baselines.schedule={kind: cosine, "
                                                     "steps: 9, end: 0.5}"])
    trainer = sinusoid.build_cml(cfg)[1]
    assert _adam_rate(trainer.optimizer)[0] == "cosine_decay"
    seen = _stop_at(monkeypatch, bl, "train_baseline")
    with pytest.raises(Stop):
        sinusoid.run(tmp_path, quick=True, methods="maml", progress=False,
                     overrides=["baselines.schedule={kind: cosine, steps: 9, end: 0.5}"])
    assert _adam_rate(seen["optimizer"])[:3] == ("cosine_decay",
                                                 cfg["baselines"]["learning_rate"], 9)


def test_bandit_meta_and_maml_get_their_schedules(monkeypatch, tmp_path):
    cfg = bandit._cfg(None, True, None, [f"meta.schedule={COSINE}"])
    trainer = bandit.build_trainer(cfg, "cml_complex", bandit.family(cfg))
    assert _adam_rate(trainer.optimizer)[0] == "cosine_decay"
    seen = _stop_at(monkeypatch, bl, "train_baseline")
    with pytest.raises(Stop):
        bandit.run(tmp_path, quick=True, methods="maml", progress=False,
                   overrides=["baselines.schedule={kind: piecewise, boundaries: [4], "
                              "scales: [0.1]}"])
    assert _adam_rate(seen["optimizer"])[0] == "piecewise_constant"


@pytest.mark.parametrize("spec, match", [
    ("cosine", r"meta.schedule: must be a mapping with a 'kind'"),
    ("{kind: cos, steps: 3, end: 0.1}", r"meta.schedule.kind: .*did you mean 'cosine'"),
    ("{kind: [1], steps: 3, end: 0.1}", r"meta.schedule.kind: must be one of"),
    ("{kind: cosine, steps: 3, end: .nan}", r"meta.schedule.end: must be"),
    ("{kind: cosine, steps: 2.5, end: 0.1}", r"meta.schedule.steps: must be"),
    ("{kind: piecewise, boundaries: [1, 2], scales: [0.5, .inf]}", r"meta.schedule.scales"),
    ("{kind: cosine, steps: 3}", r"meta.schedule: kind cosine needs end"),
    ("{kind: cosine, steps: 3, end: 0.1, step: 2}", r"meta.schedule.step: unknown key"),
    ("{kind: cosine, steps: 0, end: 0.1}", r"meta.schedule.steps: must be >= 1"),
    ("{kind: cosine, steps: 3, end: 0}", r"meta.schedule.end: must be > 0"),
    ("{kind: piecewise, boundaries: [5, 2], scales: [1, 1]}",
     r"meta.schedule.boundaries: must increase"),
    ("{kind: piecewise, boundaries: 5, scales: [1]}", r"meta.schedule.boundaries: must be"),
    ("{kind: piecewise, boundaries: [5], scales: [0.5, 1]}", r"meta.schedule.scales: must"),
])
def test_bad_schedule_settings_name_file_and_key(spec, match):
    cfg = og._cfg(overrides=[f"meta.schedule={spec}"])
    with pytest.raises(ValidationError, match=r"omniglot\.yaml: " + match):
        og.build_cml(cfg, og.families(cfg))


def test_bad_baseline_schedule_is_refused_before_training():
    cfg = og._cfg(overrides=["baselines.schedule={kind: cosine, steps: -1, end: 0.1}"])
    with pytest.raises(ValidationError, match=r"omniglot\.yaml: baselines.schedule.steps"):
        sinusoid.check_baseline_training(cfg["_file"], cfg["baselines"])


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path):
    """--resume under another schedule: the optimiser fingerprint differs."""
    from neuro_meta.checkpoint import CheckpointError

    ov = ["compare.budget_s=null", "meta.steps=2", "meta.eval_every=1", "meta.eval_tasks=2",
          "compare.val_tasks=2", "meta.meta_batch=1", "compare.workers=1"]
    cfg = og._cfg(quick=True, overrides=ov)
    trainer = og.build_cml(cfg, og.families(cfg))[1]
    ck = tmp_path / "cml_checkpoint.npz"
    trainer.train(1, progress=False, checkpoint=ck)
    other = og._cfg(quick=True, overrides=ov + [f"meta.schedule={COSINE}"])
    again = og.build_cml(other, og.families(other))[1]
    with pytest.raises(CheckpointError, match="optimi"):
        again.train(2, progress=False, checkpoint=ck, resume=True)


def test_vsml_es_and_cml_get_their_schedules(monkeypatch, tmp_path):
    from neuro_meta import vsml as V
    from neuro_meta.experiments import vsml

    cfg = vsml._cfg(quick=True, overrides=[f"cml.schedule={COSINE}"])
    trainer = vsml._build_cml(cfg, vsml.data_sets(cfg), 0)[0]
    assert _adam_rate(trainer.optimizer)[0] == "cosine_decay"
    seen = _stop_at(monkeypatch, V.ESTrainer, "train")
    with pytest.raises(Stop):
        vsml.run(tmp_path, quick=True, methods="vsml", progress=False,
                 overrides=["es.schedule={kind: piecewise, boundaries: [3], scales: [0.5]}"])
    assert _adam_rate(seen["optimizer"])[0] == "piecewise_constant"


def test_a_resumed_schedule_continues_where_it_stopped(tmp_path):
    """The schedule's step count is the optimiser's state: 2 meta-steps, then a resume
    to 4, across the boundary at step 3, give the bits of 4 uninterrupted steps (and
    differ from the unscheduled run: the schedule acts)."""
    ov = ["compare.budget_s=null", "meta.eval_tasks=2", "compare.val_tasks=2",
          "meta.meta_batch=1", "compare.workers=1", "compare.average=null",
          "meta.schedule={kind: piecewise, boundaries: [3], scales: [0.01]}"]

    def trainer(extra=()):
        cfg = og._cfg(quick=True, overrides=ov + list(extra))
        return og.build_cml(cfg, og.families(cfg))[1]
    whole = trainer()
    whole.train(4, eval_every=2, progress=False, select=False)
    part = trainer()
    ck = tmp_path / "cml_checkpoint.npz"
    part.train(2, eval_every=2, progress=False, checkpoint=ck, select=False)
    again = trainer()
    again.train(4, eval_every=2, progress=False, checkpoint=ck, resume=True, select=False)
    flat = lambda t: optim.tree_vector(t.net.theta)     # noqa: E731
    np.testing.assert_array_equal(flat(again), flat(whole))
    plain = trainer(["meta.schedule=null"])
    plain.train(4, eval_every=2, progress=False, select=False)
    assert np.abs(flat(plain) - flat(whole)).max() > 0


# ----------------------------------------------------- a schedule over the budget
@pytest.mark.parametrize("make", [optim.adam, optim.sgd, lambda lr: optim.sgd(lr, 0.9)])
def test_schedule_over_the_budget_is_the_start_rate_then_the_cosine_of_its_horizon(make):
    """Before the trainer sets the horizon the rate is the start value; after it, update
    k has the rate of ``cosine_decay(v, n)`` at k (closed form), inside a chain too."""
    v, a, n, at = 0.1, 0.1, 6, 3
    opt = optim.chain(optim.clip_by_global_norm(1e9), make(optim.cosine_decay(v, "budget", a)))
    unit = optim.chain(optim.clip_by_global_norm(1e9), make(1.0))
    state, ustate = opt.init(THETA), unit.init(THETA)
    assert optim.horizons(state) == [None] and optim.horizons(ustate) == []
    for k in range(9):
        if k == at:
            state = optim.set_horizon(state, n)
            assert optim.horizons(optim.set_horizon(state, 99)) == [n]    # set once
        g, state = opt.update(_grads(k), state)
        u, ustate = unit.update(_grads(k), ustate)
        x = min(k, n) / n
        rate = v if k < at else v * (a + (1 - a) * 0.5 * (1 + math.cos(math.pi * x)))
        np.testing.assert_allclose(optim.tree_vector(g), rate * optim.tree_vector(u),
                                   rtol=1e-13, atol=0)
    assert optim.horizons(state) == [n]


def test_schedule_over_the_budget_settings_and_refusals():
    s = optim.cosine_decay(5e-3, "budget", 0.05)
    assert s.over_budget and s.settings == ("cosine_decay", 5e-3, "budget", 0.05)
    assert s(0) == s(10 ** 6) == 5e-3           # (no horizon yet: the start value)
    fp = lambda lr: optimizer_fingerprint(optim.adam(lr), THETA)      # noqa: E731
    assert fp(s) != fp(optim.cosine_decay(5e-3, 7000, 0.05))
    with pytest.raises(ValidationError, match=r'cosine_decay.decay_steps: must be an '
                                              r'integer >= 1 or "budget" \(got \'Budget\'\)'):
        optim.cosine_decay(1.0, "Budget", 0.1)
    with pytest.raises(ValidationError, match=r"set_horizon.steps: must be >= 1"):
        optim.set_horizon(optim.adam(s).init(THETA), 0)


def test_model_file_schedule_over_the_budget(tmp_path):
    """``steps: budget`` in a model file; ES (VSML), which does not measure a budget's
    meta-steps, refuses it naming the file and key."""
    cfg = og._cfg(overrides=["meta.schedule={kind: cosine, steps: budget, end: 0.05}",
                             "baselines.schedule={kind: cosine, steps: budget, end: 0.5}"])
    fams = og.families(cfg)
    trainer = og.build_cml(cfg, fams)[1]
    assert _adam_rate(trainer.optimizer) == ("cosine_decay", 5e-3, "budget", 0.05)
    kw = og._baseline_training(cfg, "maml", fams, trainer)[2]
    assert _adam_rate(kw["optimizer"]) == ("cosine_decay", 1e-3, "budget", 0.5)
    bad = og._cfg(overrides=["meta.schedule={kind: cosine, steps: all, end: 0.05}"])
    with pytest.raises(ValidationError, match=r"omniglot\.yaml: meta.schedule.steps: must "
                                              r"be an integer >= 1 or budget \(got 'all'\)"):
        og.build_cml(bad, og.families(bad))
    from neuro_meta.experiments import vsml

    with pytest.raises(ValidationError, match=r"vsml\.yaml: es.schedule.steps: must be a "
                                              r"number of meta-steps here"):
        vsml.run(tmp_path, quick=True, methods="vsml", progress=False,
                 overrides=["es.schedule={kind: cosine, steps: budget, end: 0.5}"])


@pytest.mark.parametrize("exp, key", [("omniglot", "meta"), ("omniglot", "baselines"),
                                      ("sinusoid", "meta"), ("sinusoid", "baselines"),
                                      ("bandit", "meta"), ("bandit", "baselines")])
def test_schedule_over_the_budget_in_a_run_without_one_is_refused_up_front(
        monkeypatch, tmp_path, exp, key):
    """``steps: budget`` with ``compare.budget_s: null``: one error naming the file and
    key before anything is evaluated or trained (no trainer is ever called)."""
    from neuro_meta.metatrain import MetaTrainer

    seen = _stop_at(monkeypatch, MetaTrainer, "evaluate")
    _stop_at(monkeypatch, bl, "train_baseline")
    # (with CML first in the list, a baseline refused only when its turn came would meet
    # the Stop of CML's first evaluation instead)
    cml = {"bandit": "cml_complex"}.get(exp, "cml")
    method = {"meta": cml, "baselines": f"{cml},maml"}[key]
    with pytest.raises(ValidationError, match=rf"{exp}\.yaml: {key}.schedule.steps: can be "
                                              r"budget only in a run with a wall-time budget "
                                              r"\(compare.budget_s is null\)"):
        {"omniglot": og, "sinusoid": sinusoid, "bandit": bandit}[exp].run(
            tmp_path, quick=True, methods=method, progress=False,
            overrides=["compare.budget_s=null",
                       f"{key}.schedule={{kind: cosine, steps: budget, end: 0.1}}"])
    assert not seen


def test_optimiser_settings_and_state_keys_of_step_counted_schedules_are_unchanged():
    """Checkpoints written before the schedule over the budget existed resume: a
    constant or step-counted rate has the settings and state entries it always had."""
    assert optim.adam(1e-3).settings == ("adam", 1e-3, 0.9, 0.999, 1e-8)
    assert optim.adam(optim.cosine_decay(1e-3, 70, 0.05)).settings == (
        "adam", ("cosine_decay", 1e-3, 70, 0.05), 0.9, 0.999, 1e-8)
    assert set(optim.adam(1e-3).init(THETA)) == {"count", "m", "v"}
    assert set(optim.adam(optim.cosine_decay(1e-3, 70, 0.05)).init(THETA)) == {
        "count", "m", "v"}
    assert optim.sgd(1e-3).init(THETA) == {}
    assert set(optim.sgd(optim.cosine_decay(1e-3, 70, 0.05), 0.9).init(THETA)) == {
        "velocity", "count"}
    assert set(optim.adam(optim.cosine_decay(1e-3, "budget", 0.05)).init(THETA)) == {
        "count", "m", "v", "horizon"}
