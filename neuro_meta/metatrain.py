"""Meta-training: meta-batches of tasks, CML meta-gradients, a meta-optimiser.

Task draws are seeded per meta-step (``numpy.random.default_rng([seed, 1, step])``) and
the held-out tasks per purpose (``[seed, 2]`` meta-validation, ``[seed, 3]`` meta-test),
so meta-train, meta-validation and meta-test tasks come from disjoint seed streams and a
run is reproducible step by step.
"""
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from . import _params as P
from . import optim
from .cml import CML
from .learning import NotSettledWarning
from .network import RateNetwork

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
    not_settled: int = 0        # phases that reached max_duration before settling
    wall_time_s: float = 0.0


class MetaTrainer:
    """Meta-train the meta-parameters θ (ω, λ) of ``net`` with CML.

    Parameters
    ----------
    net : RateNetwork
    family : task family with ``sample(rng, n_tasks) -> Task``
    cml : CML
    optimizer : optim.GradientTransformation (default Adam, learning rate 0.05)
    meta_batch : int
        Tasks per meta-step.
    seed : int
    eval_tasks : int
        Number of held-out meta-test tasks.
    """

    def __init__(self, net, family, cml, optimizer=None, meta_batch=16, seed=0,
                 eval_tasks=64):
        if not isinstance(net, RateNetwork):
            P.fail("MetaTrainer", "net", "must be a RateNetwork", type(net).__name__)
        if not isinstance(cml, CML):
            P.fail("MetaTrainer", "cml", "must be a CML", type(cml).__name__)
        if not hasattr(family, "sample"):
            P.fail("MetaTrainer", "family", "must have a sample(rng, n_tasks) method",
                   type(family).__name__)
        self.net = net
        self.family = family
        self.cml = cml
        self.optimizer = optimizer if optimizer is not None else optim.adam(0.05)
        self.meta_batch = P.integer(meta_batch, "MetaTrainer", "meta_batch", low=1)
        self.seed = P.integer(seed, "MetaTrainer", "seed", low=0)
        self.eval_tasks = P.integer(eval_tasks, "MetaTrainer", "eval_tasks", low=1)
        self.test_task = family.sample(task_rng(self.seed, TEST), self.eval_tasks)

    def evaluate(self, net=None):
        """(mean, s.e.m.) of the meta-test MSE over the held-out tasks."""
        free, _ = self.cml.learners(net or self.net)
        mse = evaluate(net or self.net, free, self.test_task)
        return float(mse.mean()), float(mse.std(ddof=1) / np.sqrt(len(mse))) if len(mse) > 1 \
            else 0.0

    def train(self, steps, eval_every=10, progress=True, keep_theta=True):
        """Run ``steps`` meta-steps; returns a :class:`History` (the net is updated)."""
        from tqdm.auto import tqdm

        steps = P.integer(steps, "MetaTrainer.train", "steps", low=0)
        eval_every = P.integer(eval_every, "MetaTrainer.train", "eval_every", low=1)
        hist = History()
        t0 = time.perf_counter()
        theta = self.net.theta
        state = self.optimizer.init(theta)

        def record(step):
            m, s = self.evaluate()
            hist.step.append(step)
            hist.meta_test_mse.append(m)
            hist.meta_test_sem.append(s)
            if keep_theta:
                hist.theta.append(self.net.theta)
            return m

        record(0)
        bar = tqdm(range(1, steps + 1), desc="meta-training", disable=not progress)
        for step in bar:
            task = self.family.sample(task_rng(self.seed, TRAIN, step), self.meta_batch)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NotSettledWarning)
                est = self.cml.estimate(self.net, task)
            for w in caught:
                if issubclass(w.category, NotSettledWarning):
                    hist.not_settled += 1
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            hist.train_val_loss.append(float(np.mean(est.loss_val_free)))
            updates, state = self.optimizer.update(est.grad, state)
            theta = optim.apply_updates(theta, updates)
            self.net = self.net.with_theta(theta)
            if step % eval_every == 0 or step == steps:
                m = record(step)
                bar.set_postfix(meta_test_mse=f"{m:.4g}")
        hist.wall_time_s = time.perf_counter() - t0
        if hist.not_settled:
            logger.info("%d phase(s) reached max_duration before settling (their "
                        "meta-gradient is less accurate)", hist.not_settled)
        return hist
