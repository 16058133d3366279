"""Meta-training: meta-batches of tasks, CML meta-gradients, a meta-optimiser.

Task draws are seeded per meta-step (``numpy.random.default_rng([seed, 1, step])``) and
the held-out tasks per purpose (``[seed, 2]`` meta-validation, ``[seed, 3]`` meta-test),
so meta-train, meta-validation and meta-test tasks come from disjoint seed streams and a
run is reproducible step by step.
"""
import logging
import time
from pathlib import Path
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from . import _params as P
from . import optim
from .cml import CML
from .errors import SimulationError
from .kind import check_kind
from .learning import NotSettledWarning
from .tasks import Task

TRAIN, VALIDATION, TEST = 1, 2, 3
logger = logging.getLogger(__name__)


def task_rng(seed, stream, step=0):
    """Generator of the tasks of one meta-step of one stream (train/validation/test)."""
    return np.random.default_rng([int(seed), int(stream), int(step)])


def evaluate(net, learner, task):
    """Meta-test error: per task, the validation MSE after the inner learning process.

    MSE = mean over validation points and output units of (ŷ − y)². Returns (tasks,).
    """
    xt, yt, xv, yv = task.as_batch()
    res = learner.run(net, xt, yt)
    out = net.predict(xv, [np.asarray(p) for p in res.phi_aug])
    return ((out - yv) ** 2).mean(axis=(-1, -2))


@dataclass
class History:
    """What a meta-training run recorded (one entry per evaluation)."""

    step: List[int] = field(default_factory=list)
    meta_test_mse: List[float] = field(default_factory=list)
    meta_test_sem: List[float] = field(default_factory=list)
    train_val_loss: List[float] = field(default_factory=list)
    theta: List[Dict] = field(default_factory=list)
    time_s: List[float] = field(default_factory=list)   # meta-training wall time (s) at
    #                             each evaluation, evaluations excluded
    not_settled: int = 0        # phases that reached max_duration before settling
    skipped_tasks: int = 0      # tasks left out because they diverged (on_divergence="skip")
    wall_time_s: float = 0.0


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
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
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


def _n_workers(executor):
    if executor is None:
        return 1
    if hasattr(executor, "scheduler_info"):        # dask.distributed.Client
        return max(1, len(executor.scheduler_info().get("workers", {})))
    return max(1, int(getattr(executor, "_max_workers", 1)))


class _TrainingClock:
    """Wall time of meta-training, paused during evaluations."""

    def __init__(self, elapsed=0.0):
        self.elapsed = float(elapsed)
        self.mark = time.perf_counter()

    def pause(self):
        self.elapsed += time.perf_counter() - self.mark
        return self.elapsed

    def resume(self):
        self.mark = time.perf_counter()


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
        Number of held-out meta-test tasks.
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
    lam_min : float
        Floor of the consolidation strengths (λ is projected onto ``λ ≥ lam_min`` after
        every update; default 0). A positive floor bounds the time phases need to settle.
    """

    def __init__(self, net, family, cml, optimizer=None, meta_batch=16, seed=0,
                 eval_tasks=64, executor=None, chunks=None, on_divergence="stop",
                 lam_min=0.0):
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
        self.meta_batch = P.integer(meta_batch, "MetaTrainer", "meta_batch", low=1)
        self.seed = P.integer(seed, "MetaTrainer", "seed", low=0)
        self.eval_tasks = P.integer(eval_tasks, "MetaTrainer", "eval_tasks", low=1)
        self.executor = executor
        self.chunks = P.integer(chunks, "MetaTrainer", "chunks", low=1, allow_none=True)
        self.on_divergence = P.choice(on_divergence, "MetaTrainer", "on_divergence",
                                      ("stop", "skip"))
        self.lam_min = P.real(lam_min, "MetaTrainer", "lam_min", low=0.0)
        self._not_settled = self._skipped = 0
        if executor is not None or (self.chunks or 1) > 1:
            free, _ = cml.learners(net)
            if free.dt is None:
                P.fail("MetaTrainer", "cml.learner.dt", "must be set explicitly when tasks "
                       "are split across an executor (the automatic step depends on the "
                       "batch's data)", "None")
        self.test_task = family.sample(task_rng(self.seed, TEST), self.eval_tasks)

    def evaluate(self, net=None):
        """(mean, s.e.m.) of the meta-test MSE over the held-out tasks (phases that do not
        settle are counted in ``not_settled``, not warned about)."""
        free, _ = self.cml.learners(net or self.net)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NotSettledWarning)
            mse = evaluate(net or self.net, free, self.test_task)
        for w in caught:
            if issubclass(w.category, NotSettledWarning):
                self._not_settled += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return float(mse.mean()), float(mse.std(ddof=1) / np.sqrt(len(mse))) if len(mse) > 1 \
            else 0.0

    def meta_gradient(self, task, step=None):
        """Mean CML meta-gradient of a meta-batch and the tasks' validation losses,
        computed in-process or on the executor (see ``on_divergence``)."""
        n_chunks = min(self.chunks or _n_workers(self.executor), task.n_tasks)
        skip = self.on_divergence == "skip"
        bounds = np.linspace(0, task.n_tasks, n_chunks + 1).astype(int)
        arrays = task.as_batch()
        parts = [Task(*(a[lo:hi] for a in arrays)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        try:
            if self.executor is None:
                results = [_chunk_estimate(self.cml, self.net, p, skip) for p in parts]
            else:
                futures = [self.executor.submit(_chunk_estimate, self.cml, self.net, p, skip)
                           for p in parts]
                results = [f.result() for f in futures]
        except SimulationError as err:
            raise SimulationError(
                f"MetaTrainer: meta-step {step}: {err} -- the meta-parameters were not "
                "updated (the last checkpoint holds the previous step); use "
                "on_divergence='skip' to leave such tasks out") from None
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

    def _resume(self, checkpoint, hist):
        """Load a checkpoint into ``hist`` and the network; returns (step, theta, state)."""
        from . import checkpoint as ckpt

        saved = ckpt.load(checkpoint)
        start, theta, state = saved["step"], saved["theta"], saved["opt_state"]
        self.net = self.net.with_theta(theta)
        for k, v in saved["history"].items():
            setattr(hist, k, v)
        self._not_settled = hist.not_settled
        self._skipped = hist.skipped_tasks
        logger.info("resumed from %s at meta-step %d", checkpoint, start)
        return start, theta, state

    def _record(self, step, hist, keep_theta, clock):
        """Evaluate on the meta-test tasks and append to ``hist`` (with the meta-training
        time so far, the evaluation not counted); returns the mean."""
        hist.time_s.append(clock.pause())
        m, s = self.evaluate()
        clock.resume()
        hist.step.append(step)
        hist.meta_test_mse.append(m)
        hist.meta_test_sem.append(s)
        if keep_theta:
            hist.theta.append(self.net.theta)
        return m

    def _save(self, checkpoint, step, theta, state, hist):
        """Write the checkpoint of meta-step ``step`` (atomically)."""
        from . import checkpoint as ckpt

        hist.not_settled = self._not_settled
        hist.skipped_tasks = self._skipped
        ckpt.save(checkpoint, {"step": step, "theta": theta, "opt_state": state,
                               "history": {k: getattr(hist, k) for k in (
                                   "step", "meta_test_mse", "meta_test_sem",
                                   "train_val_loss", "theta", "time_s", "not_settled",
                                   "skipped_tasks")}})

    def train(self, steps, eval_every=10, progress=True, keep_theta=True, checkpoint=None,
              resume=False, checkpoint_every=1):
        """Run meta-steps up to ``steps``; returns a :class:`History` (``self.net`` is
        updated).

        ``checkpoint``: path of a checkpoint file written atomically every
        ``checkpoint_every`` meta-steps (and at the end); with ``resume=True`` an
        existing checkpoint is loaded and training continues from its step -- the final
        meta-parameters equal those of an uninterrupted run.
        """
        from tqdm.auto import tqdm

        steps = P.integer(steps, "MetaTrainer.train", "steps", low=0)
        eval_every = P.integer(eval_every, "MetaTrainer.train", "eval_every", low=1)
        checkpoint_every = P.integer(checkpoint_every, "MetaTrainer.train",
                                     "checkpoint_every", low=1)
        hist = History()
        t0 = time.perf_counter()
        self._not_settled = self._skipped = 0
        theta = self.net.theta
        state = self.optimizer.init(theta)
        start = 0
        if resume and checkpoint is not None and Path(checkpoint).exists():
            start, theta, state = self._resume(checkpoint, hist)
        clock = _TrainingClock(hist.time_s[-1] if hist.time_s else 0.0)
        if start == 0:
            self._record(0, hist, keep_theta, clock)
        bar = tqdm(range(start + 1, steps + 1), desc="meta-training", disable=not progress,
                   initial=start, total=steps)
        for step in bar:
            task = self.family.sample(task_rng(self.seed, TRAIN, step), self.meta_batch)
            grad, losses = self.meta_gradient(task, step)
            hist.train_val_loss.append(float(np.mean(losses)))
            updates, state = self.optimizer.update(grad, state)
            theta = optim.apply_updates(theta, updates, self.lam_min)
            self.net = self.net.with_theta(theta)
            if step % eval_every == 0 or step == steps:
                m = self._record(step, hist, keep_theta, clock)
                bar.set_postfix(meta_test_mse=f"{m:.4g}")
            if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
                self._save(checkpoint, step, theta, state, hist)
        hist.not_settled = self._not_settled
        hist.skipped_tasks = self._skipped
        hist.wall_time_s = time.perf_counter() - t0
        if hist.not_settled:
            logger.info("%d phase(s) reached max_duration before settling (their "
                        "meta-gradient is less accurate)", hist.not_settled)
        return hist
