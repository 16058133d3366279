"""Meta-training: meta-batches of tasks, CML meta-gradients, a meta-optimiser.

Task draws are seeded per meta-step (``numpy.random.default_rng([seed, 1, step])``) and
the held-out tasks per purpose (``[seed, 2]`` meta-validation, ``[seed, 3]`` meta-test),
so meta-train, meta-validation and meta-test tasks come from disjoint seed streams and a
run is reproducible step by step.

A run stops after a number of meta-steps or when a wall-time budget of meta-training is
spent, and keeps the meta-parameters of the evaluation with the lowest meta-validation
error (:class:`TrainingBudget`, shared with :func:`~neuro_meta.baselines.train_baseline`);
the meta-test tasks are only ever reported on, never used to choose anything.
"""
import logging
import os
import time
from pathlib import Path
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from . import _params as P
from . import optim
from .cml import CML
from .errors import SimulationError, in_package, user_stacklevel
from .kind import check_kind
from .learning import Learner, NotSettledWarning
from .tasks import Task
from .workers import map_pieces, n_workers

TRAIN, VALIDATION, TEST = 1, 2, 3
logger = logging.getLogger(__name__)

#: An evaluation of many tasks whose phases the solver settles (``Learner(settle=
#: "solve")``, a given ``dt``) solves them in pieces of at most this many numbers (tasks
#: x the network's meta-parameters, float64: 4 MiB), so that the per-task arrays of a
#: piece stay in the cache and are not allocated afresh from the system at every
#: operation. A 784-64-64-5 Omniglot network (110 000 meta-parameters) then solves 4
#: tasks at a time: 100 test tasks at its trained meta-parameters took 3.6-6.4 s, against
#: 9.1-14 s (half of it system time) in one piece of 100; a small sinusoid network
#: (about 3 500) still solves 100 tasks at once. The baselines' inner loops
#: (:func:`~neuro_meta.baselines.train_baseline`'s evaluations) are split the same way.
#: The solver decides every step per task, so a task's result does not depend on the
#: tasks it is solved with: the numbers are the same. Other phases are not split (an
#: automatic ``dt`` is chosen from the whole batch's curvature, and the compiled
#: engine picks its kernel by the batch's size).
EVAL_PIECE_NUMBERS = 1 << 19


def _numbers(tree):
    if isinstance(tree, dict):
        return sum(_numbers(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_numbers(v) for v in tree)
    return 0 if tree is None else int(np.size(tree))


def eval_piece_tasks(theta, learner=None):
    """Tasks per piece of an evaluation (:data:`EVAL_PIECE_NUMBERS`) for a network or
    baseline with meta-parameters ``theta`` (dicts, lists and tuples of arrays); with a
    ``learner`` (a :class:`~neuro_meta.Learner`) whose pieces could change the numbers
    -- phases not settled by the solver, or an automatic ``dt`` -- None: the whole
    batch at once."""
    O = "eval_piece_tasks"
    if not isinstance(theta, (dict, list, tuple)):
        P.fail(O, "theta", "must be meta-parameters: a dict (or list or tuple) of arrays",
               P.shown(theta))
    if learner is not None and not isinstance(learner, Learner):
        P.fail(O, "learner", "must be None or a Learner", P.shown(learner))
    if learner is not None and (learner.settle != "solve" or learner.dt is None):
        return None
    return max(1, EVAL_PIECE_NUMBERS // max(_numbers(theta), 1))


def _check_optimizer(optimizer, theta, owner):
    """``optimizer`` a gradient transformation (``init`` and ``update``, as
    :class:`~neuro_meta.optim.GradientTransformation`), ``theta`` a tree of real arrays
    (:func:`~neuro_meta.optim.check_params`)."""
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        P.fail(owner, "optimizer", "must be a gradient transformation with init and update "
               "(such as optim.adam(1e-3))", P.shown(optimizer))
    optim.check_params(theta, owner, "theta")


def _error_after_learning(net, learner, task):
    xt, yt, xv, yv = task.as_batch()
    res = learner.run(net, xt, yt)
    out = net.predict(xv, [np.asarray(p) for p in res.phi_aug])
    return net.loss.score(out, yv)


def omega_penalty_gradient(grad, theta, c, keys=("omega", "omega_bias")):
    """``grad`` plus the gradient ``c w`` of the penalty ``(c/2) Σ w²`` on the entries
    ``keys`` of ``theta`` (default: a complex synapse's ``omega`` and ``omega_bias``; a
    model kind's :attr:`~neuro_meta.kind.ModelKind.penalised`), every other entry (λ
    ...) unchanged; a new dict, ``grad`` is not modified."""
    out = dict(grad)
    for k in keys:
        if k in theta:
            out[k] = [g if g is None or w is None else g + c * w
                      for g, w in zip(grad[k], theta[k])]
    return out


def task_rng(seed, stream, step=0):
    """Generator of the tasks of one meta-step of one stream (train/validation/test):
    ``seed`` (the run's seed), ``stream`` (:data:`TRAIN`, :data:`VALIDATION`,
    :data:`TEST` or another experiment's stream number) and ``step`` (the meta-step, or
    another index within the stream), each an integer >= 0 (never truncated)."""
    return np.random.default_rng([P.integer(seed, "task_rng", "seed", low=0),
                                  P.integer(stream, "task_rng", "stream", low=0),
                                  P.integer(step, "task_rng", "step", low=0)])


def evaluate(net, learner, task):
    """Meta-test error: per task, the validation score of the network's loss after the
    inner learning process (``net.loss.score``): for squared error the MSE, mean over
    validation points and output units of (ŷ − y)²; for cross-entropy the error rate
    (fraction of validation points misclassified). Returns (tasks,). Many tasks settled
    by the solver are solved in pieces (:data:`EVAL_PIECE_NUMBERS`; the same numbers).
    """
    size = eval_piece_tasks(check_kind(net, "metatrain.evaluate").theta, learner)
    if size is None or task.n_tasks <= size:
        return _error_after_learning(net, learner, task)
    return np.concatenate([_error_after_learning(net, learner, t) for t in task.pieces(size)])


@dataclass
class History:
    """What a meta-training run recorded (one entry per evaluation unless said otherwise).

    ``meta_val_mse`` / ``meta_test_mse`` (squared output units): mean over the
    meta-validation / meta-test tasks of the MSE on their validation points after the
    inner learning process, with their standard errors over tasks (``*_sem``) -- for a
    network with another loss, its ``score`` (cross-entropy: the error rate; see
    :func:`evaluate`).
    ``selected``: the evaluation whose meta-parameters the trainer's network holds at the
    end -- the lowest meta-validation MSE (``select=True``) or the last one -- as a dict
    ``{"index", "step", "time_s", "meta_val_mse", "meta_test_mse", "meta_test_sem"}``.
    """

    step: List[int] = field(default_factory=list)
    meta_test_mse: List[float] = field(default_factory=list)
    meta_test_sem: List[float] = field(default_factory=list)
    meta_val_mse: List[float] = field(default_factory=list)
    meta_val_sem: List[float] = field(default_factory=list)
    train_val_loss: List[float] = field(default_factory=list)   # one per meta-step
    theta: List[Dict] = field(default_factory=list)
    time_s: List[float] = field(default_factory=list)   # meta-training wall time (s) at
    #                             each evaluation, evaluations and checkpoint writes excluded
    selected: Dict = field(default_factory=dict)
    meta_steps: int = 0         # meta-steps done
    stop_reason: str = ""       # "steps" (the cap) or "budget" (the wall-time budget)
    budget_s: Optional[float] = None
    not_settled: int = 0        # batches with a phase that reached max_duration before
    #                             settling: a piece of a meta-batch, or an evaluation
    skipped_tasks: int = 0      # tasks left out because they diverged (on_divergence="skip")
    wall_time_s: float = 0.0    # of the whole run, evaluations included; a resumed run
    #                             adds the time of the work its checkpoint kept
    schedule_steps: Optional[int] = None    # the horizon (meta-steps) of a learning-rate
    #                             schedule over the budget (cosine_decay(v, "budget")), as
    #                             measured (None: no such schedule, or not measured)


#: The per-evaluation fields of a history, in the order an evaluation point lists them.
EVALUATION_FIELDS = ("step", "time_s", "meta_val_mse", "meta_val_sem", "meta_test_mse",
                     "meta_test_sem")


def mean_sem(mse):
    """(mean, standard error of the mean) of per-task errors (s.e.m. 0 for one task)."""
    mse = np.asarray(mse, dtype=float)
    sem = float(mse.std(ddof=1) / np.sqrt(mse.size)) if mse.size > 1 else 0.0
    return float(mse.mean()), sem


#: Prefix of an optimiser fingerprint made from the optimiser's settings.
SETTINGS_PREFIX = "settings:"


def schedule_steps(state):
    """The measured horizon (meta-steps) of the learning-rate schedule over the budget
    in optimiser state ``state``, or None (none, or not measured: a run that ended
    before :attr:`TrainingBudget.HORIZON_AT` of its budget)."""
    found = [n for n in optim.horizons(state) if n is not None]
    return found[0] if found else None


def optimizer_fingerprint(optimizer, theta):
    """A checksum of what ``optimizer`` does: equal settings, equal checksums. Made from
    its ``settings`` (:class:`~neuro_meta.optim.GradientTransformation`) when it states
    them -- every optimiser of :mod:`neuro_meta.optim` does -- so that a change in the
    last bits of how an update is computed leaves checkpoints resumable; otherwise from
    its updates of probe gradients (:func:`optimizer_probe`)."""
    import hashlib

    _check_optimizer(optimizer, theta, "optimizer_fingerprint")
    settings = getattr(optimizer, "settings", None)
    if settings is None:
        return optimizer_probe(optimizer, theta)
    return SETTINGS_PREFIX + hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


def optimizer_probe(optimizer, theta):
    """A checksum of ``optimizer``'s updates of three fixed probe gradients of the shape
    of ``theta`` from its initial state (the last 1e12 times the first, so that a
    gradient clip shows even at a large threshold). Depends on the last bits of the
    updates; the optimiser fingerprint of checkpoints written before optimisers stated
    their settings."""
    from .checkpoint import checksum

    _check_optimizer(optimizer, theta, "optimizer_probe")
    probe = optim.tree_map(lambda a: np.linspace(-1.0, 1.0, np.size(a)).reshape(
        np.shape(a)) + 0.25, theta)
    state = optimizer.init(theta)
    u1, state = optimizer.update(probe, state)
    u2, state = optimizer.update(optim.tree_map(lambda a: -2.0 * a, probe), state)
    u3, _ = optimizer.update(optim.tree_map(lambda a: 1e12 * a, probe), state)
    return checksum([u1, u2, u3])[:16]


#: What a refused checkpoint's message advises: never to delete it (it may be the only
#: copy of hours of meta-training, and its run's results.json still stands).
KEEP_IT = ("keep the file (move it aside if the folder is to be reused) and restart "
           "without --resume, or in another folder")


def check_fingerprint(checkpoint, now, then, optimizer_probe=None):
    """Refuse a checkpoint whose fingerprint ``then`` differs from the run's ``now``
    (:class:`~neuro_meta.checkpoint.CheckpointError` naming what differs).

    ``optimizer_probe``: a function giving this run's :func:`optimizer_probe` checksum,
    against which an optimiser fingerprint of the older, probe-made kind is compared
    (such a checkpoint stays resumable if its optimiser's updates have the same bits
    today)."""
    from .checkpoint import CheckpointError

    if not isinstance(then, dict):
        raise CheckpointError(f"{checkpoint}: no configuration fingerprint (written by "
                              f"an older neuro_meta): it cannot be checked; {KEEP_IT}")
    missing = [k for k in now if k not in then]
    if missing:
        raise CheckpointError(f"{checkpoint}: written by an older neuro_meta, whose "
                              f"fingerprint lacks {', '.join(missing)}: it cannot be "
                              f"checked; {KEEP_IT}")
    diff = [k for k in now if then.get(k) != now[k]]
    old = then.get("optimizer")
    if "optimizer" in diff and isinstance(old, str) and not old.startswith(
            SETTINGS_PREFIX) and str(now["optimizer"]).startswith(SETTINGS_PREFIX) \
            and optimizer_probe is not None:
        if optimizer_probe() == old:
            diff.remove("optimizer")
        elif diff == ["optimizer"]:
            raise CheckpointError(
                f"{checkpoint}: its optimiser checksum ({old}) was made by an older "
                "neuro_meta from the bits of the optimiser's updates, and this version's "
                "updates differ from them -- in the settings or only in the last bits "
                f"(the gradient clip's norm changed in them): it cannot be checked; "
                f"{KEEP_IT}")
    if diff:
        def short(v):
            v = repr(v)
            return v if len(v) <= 60 else v[:57] + "..."
        what = "; ".join(f"{k}: {short(then.get(k))} in the checkpoint, "
                         f"{short(now[k])} now" for k in diff)
        raise CheckpointError(f"{checkpoint}: written by another configuration ({what}); "
                              "resume with the configuration that wrote it, or "
                              f"{KEEP_IT}")


class ParameterAverage:
    """Exponential moving average of the meta-parameters (Polyak averaging), the
    parameters a run evaluates, selects and keeps when ``decay`` is given.

    After meta-step ``t`` the average is ``Σ_s (1 − d) d^(t−s) θ_s / (1 − d^t)`` over
    the parameters ``θ_1 … θ_t`` after each update (bias-corrected: a convex
    combination, so λ ≥ 0 holds for it too, and a floor such as ``λ ≥ lam_min`` up to
    rounding -- a few ulps); before the first step, the initial parameters. Training
    itself follows the raw parameters: only what is evaluated and kept is averaged.
    ``decay=None``: no averaging (the raw parameters).

    It damps the meta-gradients' noise: with a decay of 0.99 (a window of about 100
    meta-steps) CML's best Omniglot validation accuracy rose by about 2 points, MAML's by
    about 0.5 (docs/omniglot.md).
    """

    def __init__(self, decay, owner="ParameterAverage"):
        self.decay = P.real(decay, owner, "average", low=0.0, high=1.0, high_open=True,
                            allow_none=True)
        self.t = 0
        self.acc = None

    def update(self, params):
        """Take in the parameters after a meta-step: a dict of lists of finite real
        arrays (or None), of the structure and shapes of the first update's (a
        ValidationError naming the first bad entry otherwise: a NaN would poison the
        average for good, a complex or differently shaped tree would change it silently
        or fail in numpy)."""
        if self.decay is None:
            return
        O = "ParameterAverage.update"
        if self.acc is None:
            optim.check_params(params, O, "params")
        else:
            optim.check_tree(params, self.acc, O, "params")
        for k, leaves in params.items():
            for i, a in enumerate(leaves):
                if a is None:
                    continue
                bad = ~np.isfinite(a)
                if bad.any():
                    idx = tuple(int(j) for j in np.argwhere(bad)[0])
                    P.fail(O, f"params.{k}[{i}]", "must contain only finite values (no NaN "
                           "or inf)", f"{int(bad.sum())} non-finite value(s), first "
                           f"{float(np.asarray(a)[idx])!r} at index {idx}")
        d = self.decay
        self.acc = optim.tree_map(lambda a: (1.0 - d) * np.asarray(a), params) \
            if self.acc is None else optim.tree_map(
                lambda s, a: d * s + (1.0 - d) * np.asarray(a), self.acc, params)
        self.t += 1

    def value(self, params):
        """The averaged parameters (``params``, the current raw ones, if there is no
        average yet or no averaging)."""
        if self.decay is None or self.acc is None:
            return params
        c = 1.0 - self.decay ** self.t
        return optim.tree_map(lambda s: s / c, self.acc)

    def state(self):
        return {"decay": self.decay, "t": self.t, "acc": self.acc}

    def load(self, state):
        self.t, self.acc = int(state["t"]), state["acc"]


class TrainingBudget:
    """When a meta-training run stops, when it evaluates and which parameters it keeps
    (shared by :meth:`MetaTrainer.train` and :func:`~neuro_meta.baselines.train_baseline`,
    so that every method of a comparison runs under the same rules).

    * **clock**: the wall time of meta-training (s), paused during evaluations and
      checkpoint writes (``elapsed_s``: time already spent, e.g. before a resume);
    * **stop**: after ``steps`` meta-steps or, once a meta-step ends with the clock at or
      beyond ``budget_s`` seconds, whichever comes first (the meta-step under way when
      the budget runs out is finished: a run ends less than one meta-step past its
      budget); ``budget_s=None``: the steps only;
    * **evaluate**: at step 0, then every ``eval_every`` meta-steps or -- if
      ``eval_every_s`` is given -- after the first meta-step that ends ``eval_every_s``
      seconds of clock or more after the previous evaluation, and at the end;
    * **select**: the parameters offered with the lowest meta-validation MSE (the
      earliest of equal ones; non-finite scores are never selected). Meta-test scores
      play no part;
    * **schedule over the budget** (:meth:`horizon`): an optimiser whose learning rate
      decays over the budget (``optim.cosine_decay(v, "budget")``) is told, once the
      clock passes :attr:`HORIZON_AT` of ``budget_s``, how many meta-steps the budget
      holds at the rate measured since the end of the run's first meta-step, and again
      after every further :attr:`REFIT_EVERY` of ``budget_s``, at the rate of that last
      stretch (the rest of the decay re-fitted without a jump,
      :func:`~neuro_meta.optim.refit_horizon`), so that the decay ends with the budget
      when the meta-step rate changes during the run (another process started or
      stopped beside it).

    ``clock`` is the time source (seconds); tests replace it by a fake clock.
    """

    clock = staticmethod(time.perf_counter)
    #: the share of the budget after which a schedule over the budget gets its horizon
    HORIZON_AT = 0.05
    #: the share of the budget after which the horizon is measured again (each time)
    REFIT_EVERY = 0.05

    def __init__(self, owner, steps, eval_every, budget_s=None, eval_every_s=None,
                 elapsed_s=0.0):
        self.steps = P.integer(steps, owner, "steps", low=0)
        self.eval_every = P.integer(eval_every, owner, "eval_every", low=1)
        self.budget_s = P.real(budget_s, owner, "budget_s", low=0.0, low_open=True,
                               allow_none=True)
        self.eval_every_s = P.real(eval_every_s, owner, "eval_every_s", low=0.0,
                                   low_open=True, allow_none=True)
        self.elapsed = P.real(elapsed_s, owner, "elapsed_s", low=0.0)
        self.mark = self.clock()
        self.running = True
        self.best = None            # (meta-validation MSE, evaluation index, parameters)
        self._rate_from = None      # (step, clock) where the rate's measurement starts:
        #                             the end of this run's first meta-step, then each fit
        self._next_fit = None       # the clock at which the horizon is (re-)fitted next

    def now(self):
        """The clock: meta-training time so far (s)."""
        return self.elapsed + (self.clock() - self.mark if self.running else 0.0)

    def pause(self):
        """Stop the clock (before an evaluation or a checkpoint write); returns it."""
        self.elapsed = self.now()
        self.running = False
        return self.elapsed

    def resume(self):
        self.mark = self.clock()
        self.running = True

    def stop_reason(self, step):
        """``"steps"`` or ``"budget"`` if the run stops after meta-step ``step``, else None
        (``"budget"`` when both are reached at once: the run had its whole budget)."""
        if self.budget_s is not None and self.now() >= self.budget_s:
            return "budget"
        if step >= self.steps:
            return "steps"
        return None

    def check_schedule(self, state, owner):
        """Refuse an optimiser state with a schedule over the budget in a run without
        one (its learning rate would never decay)."""
        if self.budget_s is None and None in optim.horizons(state):
            P.fail(owner, "budget_s", "must be given (s) when the optimiser's learning rate "
                   "decays over the budget (cosine_decay(v, 'budget'); in a model file "
                   "schedule: {kind: cosine, steps: budget}): a run without a wall-time "
                   "budget has no length to decay over -- give the steps instead", "None")

    def horizon(self, state, step):
        """``state`` (the optimiser's, after meta-step ``step``) with the horizon of its
        schedules over the budget set, once the clock has passed :attr:`HORIZON_AT` of
        ``budget_s``: ``step`` plus the meta-steps the rest of the budget holds at the
        rate measured since the end of this run's first meta-step (which carries
        start-up costs), at most the step cap ``steps``; then re-fitted the same way
        after every further :attr:`REFIT_EVERY` of ``budget_s``, at the rate measured
        since the previous fit (:func:`~neuro_meta.optim.refit_horizon`: no jump in the
        learning rate). A resumed run whose horizon is set re-fits it first one
        :attr:`REFIT_EVERY` after its first meta-step. Nothing on the run's last
        meta-step. Returns ``(state, horizon or None)`` (None: not (re-)fitted here)."""
        found = optim.horizons(state)
        if self.budget_s is None or not found \
                or self.stop_reason(step):      # (the run ends here: nothing to decay)
            return state, None
        now = self.now()
        unset = None in found
        if self._rate_from is None:
            self._rate_from = (step, now)
            self._next_fit = (self.HORIZON_AT * self.budget_s if unset
                              else now + self.REFIT_EVERY * self.budget_s)
            return state, None
        s0, t0 = self._rate_from
        if now < self._next_fit or step <= s0 or now <= t0:
            return state, None
        n = min(self.steps, step + max(1, int(round((self.budget_s - now) * (step - s0)
                                                    / (now - t0)))))
        logger.info("learning-rate schedule over the budget: %d meta-steps (%d meta-steps "
                    "in %.3g s of clock)", n, step - s0, now - t0)
        self._rate_from = (step, now)
        self._next_fit = now + self.REFIT_EVERY * self.budget_s
        if unset:
            return optim.set_horizon(state, n), n
        return optim.refit_horizon(state, step, n), n

    def cadence(self):
        """When this run evaluates, for a checkpoint's fingerprint (a resume under another
        cadence would select among other points): ``{"eval_every": steps or None,
        "eval_every_s": seconds or None}``, the one in force given, the other None. The
        budget and the step cap are left out: a resume may extend them."""
        if self.eval_every_s is None:
            return {"eval_every": self.eval_every, "eval_every_s": None}
        return {"eval_every": None, "eval_every_s": self.eval_every_s}

    def eval_due(self, step, last_eval_s):
        """Whether meta-step ``step`` is followed by an evaluation (the end aside);
        ``last_eval_s``: the clock at the previous evaluation."""
        if self.eval_every_s is None:
            return step % self.eval_every == 0
        return self.now() - last_eval_s >= self.eval_every_s

    def evaluation(self, step, index, evaluate, params):
        """Evaluate with the clock paused and offer ``params`` for selection.

        ``evaluate(which)`` returns (mean, s.e.m.) of the MSE on the ``"validation"`` or
        ``"test"`` tasks; ``index``: the number of this evaluation point. Returns the
        point as a dict of :data:`EVALUATION_FIELDS`.
        """
        t = self.pause()
        vm, vs = evaluate("validation")
        tm, ts = evaluate("test")
        self.resume()
        if np.isfinite(vm) and (self.best is None or vm < self.best[0]):
            self.best = (float(vm), int(index), params)
        return {"step": int(step), "time_s": t, "meta_val_mse": vm, "meta_val_sem": vs,
                "meta_test_mse": tm, "meta_test_sem": ts}

    def selected(self, points, select=True):
        """The selected evaluation (the best one, or with ``select=False`` the last) of
        ``points`` (a mapping of :data:`EVALUATION_FIELDS` to lists), as a dict with its
        ``index``."""
        i = self.best[1] if select and self.best is not None else len(points["step"]) - 1
        out = {"index": i}
        out.update({k: points[k][i] for k in ("step", "time_s", "meta_val_mse",
                                              "meta_test_mse", "meta_test_sem")})
        return out

    def selected_params(self, last, select=True):
        """The parameters to keep: the best offered ones, or ``last``."""
        return self.best[2] if select and self.best is not None else last


class CheckpointCadence:
    """When a meta-training run writes its checkpoint (shared by
    :meth:`MetaTrainer.train` and :func:`~neuro_meta.baselines.train_baseline`): after
    every evaluation and at the end; every ``every`` meta-steps (``None``: not by count);
    and after the first meta-step that ends ``every_s`` seconds of wall time or more
    after the previous write (``None``: not by time).

    Where the checkpoints fall changes nothing a run trains, evaluates or selects (a
    checkpoint holds the whole state, so a resume from any of them continues the same
    run, and the budget's clock is paused while one is written); only the wall time the
    user waits (``wall_time_s``) includes the writes. A write of ``omniglot_long``'s CML
    checkpoint (6 MB) takes about 30 ms, 8 % of its meta-step on the 2-core machine
    (``neuro-meta bench``, "checkpoint cadence"), so writing one after every meta-step
    made a 3000-s run wait some 330 s longer.

    ``every_s="default"``: :data:`neuro_meta.checkpoint.CHECKPOINT_EVERY_S` as it is now
    (30 s; ``neuro-meta run --checkpoint-every SECONDS`` sets it for a run); ``0``: after
    every meta-step. The time counts from :meth:`start` (after the run's set-up and
    first evaluation) and from each write.

    ``clock`` is the time source (seconds); tests replace it by a fake clock (apart from
    :attr:`TrainingBudget.clock`, so that the budget's clock is not read more often).
    """

    clock = staticmethod(time.perf_counter)

    def __init__(self, owner, every=None, every_s="default"):
        from . import checkpoint

        self.every = P.integer(every, owner, "checkpoint_every", low=1, allow_none=True)
        if isinstance(every_s, str) and every_s == "default":
            self.every_s = P.real(checkpoint.CHECKPOINT_EVERY_S, "neuro_meta.checkpoint",
                                  "CHECKPOINT_EVERY_S", low=0.0)
        else:
            self.every_s = P.real(every_s, owner, "checkpoint_every_s", low=0.0,
                                  allow_none=True)
        self.last = self.clock()

    def start(self):
        """The run's meta-steps begin: the time cadence counts from now (not from the
        set-up, a resume's checks or the first evaluation)."""
        self.last = self.clock()

    def due(self, step, evaluated=False):
        """Whether a checkpoint is written after meta-step ``step`` (``evaluated``: the
        step was followed by an evaluation or ends the run)."""
        return bool(evaluated
                    or (self.every is not None and step % self.every == 0)
                    or (self.every_s is not None
                        and self.clock() - self.last >= self.every_s))

    def written(self):
        """A checkpoint has just been written: the time cadence counts from now."""
        self.last = self.clock()


def _reemit(w):
    """Warn again a warning caught while estimating: where it was raised if that is the
    user's code, else at the user's line (not at the library line that raised it)."""
    level = user_stacklevel()           # 1: no user's line (a pool's worker)
    if in_package(w.filename) and level > 1:
        warnings.warn(w.message, w.category, stacklevel=level)
    else:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _chunk_estimate(cml, net, task, skip_diverged=False):
    """CML estimate of one chunk of a meta-batch, per task (runs on a worker).

    Returns (grads with a task axis, validation losses, number of skipped tasks, number
    of phases that did not settle). With ``skip_diverged``, a chunk in which a simulation
    diverges is redone task by task and the tasks that diverge are left out (a task's
    result does not depend on its chunk).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotSettledWarning)
        try:
            est = cml.estimate(net, task, reduce="none")
            out = est.grad, np.asarray(est.loss_val_free), 0
        except SimulationError:
            if not skip_diverged:
                raise
            out = None
    n_warn = 0
    for w in caught:
        if issubclass(w.category, NotSettledWarning):
            n_warn += 1
        else:
            _reemit(w)
    if out is not None:
        return out + (n_warn,)
    if task.n_tasks == 1:
        return None, np.zeros(0), 1, n_warn
    arrays = task.as_batch()
    kept, skipped = [], 0
    for b in range(task.n_tasks):
        r = _chunk_estimate(cml, net, Task(*(a[b:b + 1] for a in arrays)), True)
        skipped += r[2]
        n_warn += r[3]
        if r[0] is not None:
            kept.append(r)
    if not kept:
        return None, np.zeros(0), skipped, n_warn
    return (_concat([k[0] for k in kept]), np.concatenate([k[1] for k in kept]), skipped,
            n_warn)


def _concat(grads):
    return {k: [None if grads[0][k][i] is None else
                np.concatenate([g[k][i] for g in grads], axis=0)
                for i in range(len(grads[0][k]))] for k in grads[0]}


class MetaTrainer:
    """Meta-train the meta-parameters θ of ``net`` with CML: ω and λ of a RateNetwork's
    complex synapses, a :class:`~neuro_meta.DualSystem`'s slow weights and fast
    variables' initial values (and λ), or any model kind's ``theta``.

    Parameters
    ----------
    net : RateNetwork, DualSystem or another model kind
    family : task family with ``sample(rng, n_tasks) -> Task``
    cml : CML
    optimizer : optim.GradientTransformation (default Adam, learning rate 0.05)
    meta_batch : int
        Tasks per meta-step.
    seed : int
    eval_tasks : int
        Number of held-out meta-test tasks (``task_rng(seed, TEST)``).
    val_tasks : int, optional
        Number of meta-validation tasks (``task_rng(seed, VALIDATION)``), on which
        :meth:`train` selects the meta-parameters it keeps (default: ``eval_tasks``).
    val_task, test_task : Task, optional
        The meta-validation / meta-test tasks themselves, instead of drawing them from
        ``family`` (e.g. from other classes than the meta-training ones, as in
        few-shot classification where the splits are disjoint alphabets); a checksum of
        each is part of :meth:`fingerprint`.
    executor : None, concurrent.futures.Executor or dask.distributed.Client
        Where the meta-batch's tasks are simulated: in-process (default), or split into
        ``chunks`` submitted to the executor. Results are identical for any executor and
        any chunking (tasks are independent and a settled task stops integrating), which
        needs a learner with an explicit ``dt``.
    chunks : int, optional
        Number of pieces a meta-batch is split into (default: the executor's workers).
    on_divergence : {"stop", "skip"}
        What a diverging simulation does to a meta-step. ``"stop"`` (default): training
        stops with :class:`~neuro_meta.errors.SimulationError`; the meta-parameters keep
        their last good values (and the checkpoint its last step). ``"skip"``: the tasks
        that diverge are left out of that meta-step's mean and counted
        (``History.skipped_tasks``); θ is never updated from a non-finite gradient.
    lam_min : float or list of float
        Floor of the consolidation strengths (λ is projected onto ``λ ≥ lam_min`` after
        every update; default 0), or one floor per connection. A positive floor bounds the time phases need to settle.
    average : float in [0, 1), optional
        Decay of an exponential moving average of θ (:class:`ParameterAverage`): if
        given, evaluations, selection and the kept meta-parameters use the average,
        while meta-training follows the raw θ (default None: no averaging).
    omega_decay : float
        Strength ``c`` of an L2 penalty ``(c/2) Σ ω²`` on the weights meta-learning
        stores, the entries ``net.penalised`` of θ (:attr:`ModelKind.penalised
        <neuro_meta.kind.ModelKind.penalised>`): a complex synapse's consolidated weights
        ``omega`` and ``omega_bias`` (never λ); a :class:`~neuro_meta.DualSystem`'s slow
        weights ``W``, biases and readout (not its gains). It is added to the
        meta-objective: every meta-step adds ``c w`` to their meta-gradient, before the
        optimiser (default 0: none). A kind with no such entries refuses ``c > 0``.
    """

    def __init__(self, net, family, cml, optimizer=None, meta_batch=16, seed=0,
                 eval_tasks=64, executor=None, chunks=None, on_divergence="stop",
                 lam_min=0.0, val_tasks=None, val_task=None, test_task=None,
                 average=None, omega_decay=0.0):
        check_kind(net, "MetaTrainer")
        if not isinstance(cml, CML):
            P.fail("MetaTrainer", "cml", "must be a CML", type(cml).__name__)
        if not hasattr(family, "sample"):
            P.fail("MetaTrainer", "family", "must have a sample(rng, n_tasks) method",
                   type(family).__name__)
        if executor is not None and not hasattr(executor, "submit"):
            P.fail("MetaTrainer", "executor", "must be None, a concurrent.futures.Executor "
                   "or a dask.distributed.Client", type(executor).__name__)
        self.net = net
        self.family = family
        self.cml = cml
        self.optimizer = optimizer if optimizer is not None else optim.adam(0.05)
        if not (callable(getattr(self.optimizer, "init", None))
                and callable(getattr(self.optimizer, "update", None))):
            P.fail("MetaTrainer", "optimizer", "must be a gradient transformation with init "
                   "and update (e.g. neuro_meta.optim.adam(1e-3))", type(optimizer).__name__)
        self.meta_batch = P.integer(meta_batch, "MetaTrainer", "meta_batch", low=1)
        self.seed = P.integer(seed, "MetaTrainer", "seed", low=0)
        self.eval_tasks = P.integer(eval_tasks, "MetaTrainer", "eval_tasks", low=1)
        self.val_tasks = P.integer(val_tasks, "MetaTrainer", "val_tasks", low=1,
                                   allow_none=True) or self.eval_tasks
        self.executor = executor
        self.chunks = P.integer(chunks, "MetaTrainer", "chunks", low=1, allow_none=True)
        self.on_divergence = P.choice(on_divergence, "MetaTrainer", "on_divergence",
                                      ("stop", "skip"))
        self.lam_min = optim.lam_floor(lam_min, net.theta, "MetaTrainer")
        self.average = ParameterAverage(average, "MetaTrainer").decay
        self.omega_decay = P.real(omega_decay, "MetaTrainer", "omega_decay", low=0.0)
        keys = net.penalised
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys) or \
                not set(keys) <= set(net.theta):
            P.fail(f"MetaTrainer.net ({net.kind_name})", "penalised", "must be a tuple of "
                   f"keys of its theta {sorted(net.theta)}", repr(keys))
        self._penalised = tuple(keys)
        if self.omega_decay and not self._penalised:
            P.fail("MetaTrainer", "omega_decay", f"must be 0 for a {net.kind_name}, whose "
                   "meta-parameters hold no weights to penalise (its penalised entries "
                   "are empty)", repr(omega_decay))
        self._not_settled = self._skipped = 0
        if executor is not None or (self.chunks or 1) > 1:
            free, _ = cml.learners(net)
            if free.dt is None:
                P.fail("MetaTrainer", "cml.learner.dt", "must be set explicitly when tasks "
                       "are split across an executor (the automatic step depends on the "
                       "batch's data)", "None")
        self._theta0 = net.theta
        self._given = {}
        for name, t in (("val_task", val_task), ("test_task", test_task)):
            if t is not None and not isinstance(t, Task):
                P.fail("MetaTrainer", name, "must be a Task or None", type(t).__name__)
            if t is not None:
                self._given[name] = t
        self.test_task = test_task if test_task is not None else family.sample(
            task_rng(self.seed, TEST), self.eval_tasks)
        self.val_task = val_task if val_task is not None else family.sample(
            task_rng(self.seed, VALIDATION), self.val_tasks)
        for t in (self.test_task, self.val_task):
            if not isinstance(t, Task):
                P.fail("MetaTrainer", "family", "must return a Task from sample(rng, "
                       "n_tasks)", f"{type(family).__name__}.sample returned "
                       f"{type(t).__name__}")

    def evaluate(self, net=None, tasks="test"):
        """(mean, s.e.m.) of the MSE over the held-out meta-test tasks (``tasks="test"``)
        or meta-validation tasks (``"validation"``), in squared output units (phases that
        do not settle are counted in ``not_settled``, not warned about)."""
        task = {"test": self.test_task, "validation": self.val_task}[
            P.choice(tasks, "MetaTrainer.evaluate", "tasks", ("test", "validation"))]
        if net is not None:
            check_kind(net, "MetaTrainer.evaluate")
        free, _ = self.cml.learners(net or self.net)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NotSettledWarning)
            mse = evaluate(net or self.net, free, task)
        unsettled = False
        for w in caught:
            if issubclass(w.category, NotSettledWarning):
                unsettled = True        # once per evaluation, in pieces or not
            else:
                _reemit(w)
        self._not_settled += unsettled
        return mean_sem(mse)

    def meta_gradient(self, task, step=None):
        """Mean CML meta-gradient of a meta-batch and the tasks' validation losses,
        computed in-process or on the executor (see ``on_divergence``)."""
        if not isinstance(task, Task):
            P.fail("MetaTrainer.meta_gradient", "task", "must be a Task", type(task).__name__)
        n_chunks = min(self.chunks or n_workers(self.executor), task.n_tasks)
        skip = self.on_divergence == "skip"
        bounds = np.linspace(0, task.n_tasks, n_chunks + 1).astype(int)
        arrays = task.as_batch()
        parts = [Task(*(a[lo:hi] for a in arrays)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        try:
            results = map_pieces(_chunk_estimate, [(self.cml, self.net, p, skip)
                                                   for p in parts], self.executor)
        except SimulationError as err:
            raise SimulationError(
                f"MetaTrainer: meta-step {step}: {err} -- the meta-parameters were not "
                "updated (the last checkpoint holds the previous step); use "
                "on_divergence='skip' to leave such tasks out", step=err.step, t=err.t,
                variable=err.variable, value=err.value) from None
        self._not_settled += sum(r[3] for r in results)
        self._skipped += sum(r[2] for r in results)
        kept = [r for r in results if r[0] is not None]
        if not kept:
            raise SimulationError(f"MetaTrainer: meta-step {step}: every task of the "
                                  "meta-batch diverged. Hint: reduce dt, beta or the "
                                  "meta-learning rate")
        per_task = _concat([r[0] for r in kept])
        mean = optim.tree_map(lambda a: a.mean(axis=0), per_task)
        return mean, np.concatenate([r[1] for r in kept])

    def _resume(self, checkpoint, hist, average=None, cadence=None):
        """Load a checkpoint into ``hist`` and the network (and ``average``, a
        :class:`ParameterAverage`, if given); returns (step, theta, state, training clock
        (s), best evaluation ``(meta_val_mse, index, theta)`` or None)."""
        from . import checkpoint as ckpt

        saved = ckpt.load(checkpoint)
        if not isinstance(saved, dict) or not all(
                k in saved for k in ("step", "theta", "opt_state", "clock_s", "history")) \
                or not isinstance(saved["history"], dict):
            raise ckpt.CheckpointError(f"{checkpoint}: not a MetaTrainer checkpoint (missing "
                                       "step, theta, opt_state, clock_s or history)")
        if "meta_val_mse" not in saved["history"] or "best" not in saved:
            raise ckpt.CheckpointError(
                f"{checkpoint}: written by an older neuro_meta, without the "
                f"meta-validation scores that model selection needs; {KEEP_IT}")
        self._check_fingerprint(checkpoint, saved, cadence)
        start, theta, state = saved["step"], saved["theta"], saved["opt_state"]
        self._wall_before = float(saved.get("wall_s", 0.0))
        self.net = self.net.with_theta(theta)
        for k, v in saved["history"].items():
            setattr(hist, k, v)
        self._not_settled = hist.not_settled
        self._skipped = hist.skipped_tasks
        b = saved["best"]
        best = None if b is None else (b["meta_val_mse"], b["index"], b["theta"])
        if average is not None and average.decay is not None:
            if not isinstance(saved.get("average"), dict):
                raise ckpt.CheckpointError(f"{checkpoint}: no parameter average (written "
                                           f"without averaging); {KEEP_IT}")
            average.load(saved["average"])
        logger.info("resumed from %s at meta-step %d", checkpoint, start)
        return start, theta, state, saved["clock_s"], best

    @property
    def resumed_wall_s(self):
        """Wall time (s) of the work the checkpoint of the last :meth:`train` or
        :meth:`restore` call kept (0 if it started afresh): the part of
        ``History.wall_time_s`` not spent in this process."""
        return getattr(self, "_wall_before", 0.0)

    def restore(self, checkpoint, select=True):
        """Give the network the meta-parameters a run kept in ``checkpoint`` -- those of
        its evaluation with the lowest meta-validation MSE (``select=True``, what
        :meth:`train` leaves at the end) or its last ones -- for a run resumed after this
        trainer had finished (its plots and scores need the trained network). The
        checkpoint is checked against this trainer's configuration as for a resume.
        Returns the checkpoint's :class:`History`, with ``meta_steps`` (the checkpoint's
        meta-step) and ``selected`` (the evaluation whose meta-parameters the network now
        holds) as :meth:`train` would have returned them."""
        if not isinstance(select, bool):
            P.fail("MetaTrainer.restore", "select", "must be True or False", repr(select))
        hist = History()
        average = ParameterAverage(self.average, "MetaTrainer.restore")
        step, theta, _, _, best = self._resume(checkpoint, hist, average)
        if select and best is not None:
            self.net = self.net.with_theta(best[2])
        elif average.decay is not None:     # what train keeps: the average, not the raw θ
            self.net = self.net.with_theta(average.value(theta))
        hist.meta_steps = step
        hist.wall_time_s = self._wall_before
        i = best[1] if select and best is not None else len(hist.step) - 1
        hist.selected = {"index": i}
        hist.selected.update({k: getattr(hist, k)[i] for k in (
            "step", "time_s", "meta_val_mse", "meta_test_mse", "meta_test_sem")})
        return hist

    def _record(self, step, hist, keep_theta, budget, theta, net=None):
        """Evaluate ``net`` (default ``self.net``), whose meta-parameters are ``theta``
        (raw or averaged), on the meta-validation and meta-test tasks (the clock paused)
        and append to ``hist``; ``theta`` is offered for selection. Returns the meta-test
        mean."""
        net = self.net if net is None else net
        point = budget.evaluation(step, len(hist.step),
                                  lambda which: self.evaluate(net, tasks=which), theta)
        for k in EVALUATION_FIELDS:
            getattr(hist, k).append(point[k])
        if keep_theta:
            hist.theta.append(theta)
        return point["meta_test_mse"]

    def fingerprint(self):
        """What decides this trainer's meta-training, as readable items (stored in every
        checkpoint with the run's evaluation cadence, :meth:`TrainingBudget.cadence`; a
        resume under a different one is refused): the kind and a checksum
        of its initial θ, the task family, the CML rule (with its learner), the
        optimiser (:func:`optimizer_fingerprint`: a checksum of its settings), the meta-batch,
        the seed, the numbers of meta-test and meta-validation tasks, ``lam_min``,
        ``on_divergence``, ``average`` and a nonzero ``omega_decay``."""
        from .checkpoint import checksum

        theta = self._theta0
        out = {"kind": self.net.kind_name, "theta0": checksum(theta)[:16],
               "family": repr(self.family), "cml": repr(self.cml),
               "optimizer": optimizer_fingerprint(self.optimizer, theta),
               "meta_batch": self.meta_batch,
               "seed": self.seed, "eval_tasks": self.eval_tasks,
               "val_tasks": self.val_tasks, "lam_min": list(self.lam_min) if isinstance(
                   self.lam_min, tuple) else self.lam_min,
               "on_divergence": self.on_divergence, "average": self.average}
        if self.omega_decay:        # (absent when 0: older checkpoints stay resumable)
            out["omega_decay"] = self.omega_decay
        for name, t in self._given.items():
            out[name] = checksum(list(t.as_batch()))[:16]
        return out

    def _check_fingerprint(self, checkpoint, saved, cadence=None):
        """Refuse a checkpoint written under another configuration, naming what differs
        (``cadence``: the run's evaluation cadence, :meth:`TrainingBudget.cadence`;
        None, as for :meth:`restore`, leaves it unchecked)."""
        now = self.fingerprint()
        if cadence is not None:
            now.update(cadence)
        check_fingerprint(checkpoint, now, saved.get("fingerprint"),
                          lambda: optimizer_probe(self.optimizer, self._theta0))

    def _save(self, checkpoint, step, theta, state, hist, budget, average=None):
        """Write the checkpoint of meta-step ``step`` (atomically; the clock paused)."""
        from . import checkpoint as ckpt

        clock_s = budget.pause()
        hist.not_settled = self._not_settled
        hist.skipped_tasks = self._skipped
        best = None if budget.best is None else {
            "meta_val_mse": budget.best[0], "index": budget.best[1], "theta": budget.best[2]}
        ckpt.save(checkpoint, {"step": step, "theta": theta, "opt_state": state,
                               "clock_s": clock_s, "best": best,
                               "wall_s": self._wall_before + time.perf_counter()
                               - self._t0,                # (set by train)
                               "average": None if average is None else average.state(),
                               "fingerprint": (getattr(self, "_run_fingerprint", None)
                                               or self.fingerprint()),
                               "history": {k: getattr(hist, k) for k in (
                                   "step", "meta_test_mse", "meta_test_sem", "meta_val_mse",
                                   "meta_val_sem", "train_val_loss", "theta", "time_s",
                                   "not_settled", "skipped_tasks")}})
        budget.resume()

    def train(self, steps, eval_every=10, progress=True, keep_theta=True, checkpoint=None,
              resume=False, checkpoint_every=None, budget_s=None, eval_every_s=None,
              select=True, checkpoint_every_s="default"):
        """Run meta-steps until ``steps`` are done or the wall-time budget ``budget_s``
        (s) is spent; returns a :class:`History` (``self.net`` is updated).

        The training clock (``History.time_s``) counts the meta-steps' wall time, not
        evaluations or checkpoint writes; training stops at the end of the first
        meta-step at which it reaches ``budget_s`` (``None``: no budget, the old
        step-bound run, fully deterministic). Evaluations -- on the meta-validation and
        the meta-test tasks -- happen at step 0, every ``eval_every`` meta-steps or, if
        ``eval_every_s`` is given, each time the clock has advanced ``eval_every_s``
        seconds since the previous one, and at the end (:class:`TrainingBudget`).

        ``select=True`` (default): ``self.net`` ends with the meta-parameters of the
        evaluation with the lowest meta-validation MSE, and ``History.selected`` says
        which (its meta-test MSE is the number to report); ``select=False`` keeps the
        last meta-parameters.

        ``checkpoint``: path of a checkpoint file written atomically after every
        evaluation, at the end, every ``checkpoint_every`` meta-steps if given, and after
        the first meta-step that ends ``checkpoint_every_s`` seconds of wall time after
        the previous write (default: :data:`neuro_meta.checkpoint.CHECKPOINT_EVERY_S`,
        30 s; ``None``: not by time; ``0`` or ``checkpoint_every=1``: after every
        meta-step, as before 2026-12; :class:`CheckpointCadence`); with ``resume=True`` an
        existing checkpoint is loaded and training continues from its step and its
        clock (with the best evaluation so far) -- without a budget, the final
        meta-parameters equal those of an uninterrupted run.

        With ``average`` (the trainer's decay), what is evaluated, selected and kept is
        the moving average of θ (:class:`ParameterAverage`), kept in the checkpoint too.
        """
        from ._progress import bar as tqdm

        O = "MetaTrainer.train"
        cadence = CheckpointCadence(O, checkpoint_every, checkpoint_every_s)
        for name, flag in (("select", select), ("resume", resume), ("progress", progress),
                           ("keep_theta", keep_theta)):
            if not isinstance(flag, (bool, np.bool_)):
                P.fail(O, name, "must be True or False", repr(flag))
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            P.fail(O, "checkpoint", "must be a path (str or os.PathLike) or None",
                   type(checkpoint).__name__)
        budget = TrainingBudget(O, steps, eval_every, budget_s, eval_every_s)
        hist = History(budget_s=budget.budget_s)
        t0 = self._t0 = time.perf_counter()
        self._wall_before = 0.0         # wall time of the work a resumed checkpoint kept
        self._not_settled = self._skipped = 0
        theta = self.net.theta
        state = self.optimizer.init(theta)
        budget.check_schedule(state, O)
        step = 0
        average = ParameterAverage(self.average, O)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            step, theta, state, clock_s, budget.best = self._resume(
                checkpoint, hist, average, budget.cadence())
            budget.elapsed = clock_s
            if step > budget.steps:
                P.fail(O, "steps", f"must be at least the meta-step of the checkpoint "
                       f"{checkpoint} ({step}) to resume it (a run with fewer steps is "
                       "another run: restart without resume)", repr(budget.steps))
        # what decides this meta-training is fixed for the run: its fingerprint is
        # computed once (checksums of the evaluation tasks, an optimiser probe), not at
        # every checkpoint
        self._run_fingerprint = None if checkpoint is None else {
            **self.fingerprint(), **budget.cadence()}
        def record(step):
            shown = average.value(theta)
            return self._record(step, hist, keep_theta, budget, shown,
                                None if shown is theta else self.net.with_theta(shown))

        budget.resume()
        if not hist.step:
            record(0)
            if checkpoint is not None:      # (as a baseline's: every evaluation)
                self._save(checkpoint, step, theta, state, hist, budget, average)
        cadence.start()
        bar = tqdm(desc="meta-training", disable=not progress, initial=step,
                   total=budget.steps if budget.budget_s is None else None)
        stop = budget.stop_reason(step)
        while stop is None:
            step += 1
            task = self.family.sample(task_rng(self.seed, TRAIN, step), self.meta_batch)
            grad, losses = self.meta_gradient(task, step)
            if self.omega_decay:
                grad = omega_penalty_gradient(grad, theta, self.omega_decay, self._penalised)
            hist.train_val_loss.append(float(np.mean(losses)))
            updates, state = self.optimizer.update(grad, state)
            theta = optim.apply_updates(theta, updates, self.lam_min)
            average.update(theta)
            self.net = self.net.with_theta(theta)
            bar.update(1)
            stop = budget.stop_reason(step)
            state = budget.horizon(state, step)[0]
            evaluated = stop or budget.eval_due(step, hist.time_s[-1])
            if evaluated:
                m = record(step)
                bar.set_postfix(meta_test_mse=f"{m:.4g}")
            if checkpoint is not None and cadence.due(step, evaluated):
                self._save(checkpoint, step, theta, state, hist, budget, average)
                cadence.written()
        bar.close()
        if hist.step[-1] != step:       # resumed at a step without an evaluation
            record(step)
            if checkpoint is not None:
                self._save(checkpoint, step, theta, state, hist, budget, average)
        hist.meta_steps, hist.stop_reason = step, stop
        hist.selected = budget.selected(vars(hist), select)
        kept = budget.selected_params(average.value(theta), select)
        if kept is not theta:
            self.net = self.net.with_theta(kept)
        hist.not_settled = self._not_settled
        hist.skipped_tasks = self._skipped
        hist.schedule_steps = schedule_steps(state)
        hist.wall_time_s = self._wall_before + time.perf_counter() - t0
        if hist.not_settled:
            logger.info("%d phase(s) reached max_duration before settling (their "
                        "meta-gradient is less accurate)", hist.not_settled)
        return hist
