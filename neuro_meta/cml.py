"""The contrastive meta-learning rule (CML).

Run the learning process twice -- free (β = 0) to the settled state φ⁰, then nudged by
the validation loss with strength β, starting from φ⁰, to φᵝ -- and estimate the
meta-gradient from the difference of ∂θ L_in at the settled states
(Zucchet et al., NeurIPS 2022)::

    standard      ĝ = [∂θL_in(φᵝ) − ∂θL_in(φ⁰)] / β                     bias O(β)
    symmetric     ĝ = [∂θL_in(φ⁺ᵝ) − ∂θL_in(φ⁻ᵝ)] / (2β)                bias O(β²)
    second_order  ĝ = [−1.5 ∂θL_in(φ⁰) + 2 ∂θL_in(φᵝ) − 0.5 ∂θL_in(φ²ᵝ)] / β   bias O(β²)

For complex synapses ``L_in = L_trn(φ) + Σ λ/2 (φ − ω)²``, so ``∂ω L_in = −λ(φ − ω)`` and
``∂λ L_in = ½(φ − ω)²``: the estimate of every synapse uses only that synapse's own
φ at the end of the phases, ω and λ. For the standard estimator this reads::

    ĝ_ω = −(λ/β) (φᵝ − φ⁰)                 (so Δω = −η ĝ_ω = +η (λ/β)(φᵝ − φ⁰))
    ĝ_λ = [(φᵝ − ω)² − (φ⁰ − ω)²] / (2β)

No second derivative and no backward pass in time is ever computed.
"""
from dataclasses import dataclass
from typing import Dict, List

import copy

import numpy as np

from . import _params as P
from .learning import Learner
from .network import RateNetwork, split_aug
from .tasks import Task

ESTIMATORS = {
    # estimator: list of (nudging multiple of β, weight multiple of 1/β)
    "standard": ((0.0, -1.0), (1.0, 1.0)),
    "symmetric": ((-1.0, -0.5), (1.0, 0.5)),
    "second_order": ((0.0, -1.5), (1.0, 2.0), (2.0, -0.5)),
}


def inner_partials(phi, omega, lam):
    """``∂ω L_in`` and ``∂λ L_in`` of one complex-synapse connection at fast weights φ.

    The synapse-local part of the CML rule: ``∂ω = −λ (φ − ω)``, ``∂λ = ½ (φ − ω)²``.
    Arrays are augmented (weights and bias column), φ may carry a task axis.
    """
    d = phi - omega
    return -lam * d, 0.5 * d * d


def split_theta_like(aug_list, net, key):
    """Split augmented per-connection arrays into the ``theta`` dict structure."""
    out = {key: [], key + "_bias": []}
    for c, a in zip(net.connections, aug_list):
        if a is None:
            out[key].append(None)
            out[key + "_bias"].append(None)
            continue
        w, b = split_aug(a, c)
        out[key].append(w)
        out[key + "_bias"].append(b)
    return out


def default_learner(net, tol):
    if not isinstance(net, RateNetwork):
        from .dual import default_learner as dual_default

        return dual_default(tol)
    plastic = [c.plastic for c in net.connections]
    rule = "delta" if not any(plastic[:-1]) else "backprop"
    return Learner(rule=rule, presentation="batch", integrator="expeuler", tol=tol)


@dataclass(frozen=True)
class CMLResult:
    """Meta-gradient estimate with the settled states of the phases.

    ``grad``: meta-gradient in the structure of :attr:`RateNetwork.theta` (averaged over
    tasks unless ``reduce="none"``); ``phi_free``: augmented settled free-phase weights per
    connection (tasks, ...); ``phi_nudged``: dict nudging strength -> settled weights;
    ``loss_val_free``: validation loss after the free phase per task.
    """

    grad: Dict[str, List]
    phi_free: List[np.ndarray]
    phi_nudged: Dict[float, List[np.ndarray]]
    loss_train_free: np.ndarray
    loss_val_free: np.ndarray


class CML:
    """Contrastive meta-learning: meta-gradients from a free and a nudged phase.

    Parameters
    ----------
    beta : float
        Nudging strength β ≠ 0 (a small positive number such as 1e-3 ... 1e-1).
    estimator : {"standard", "symmetric", "second_order"}
    learner : Learner, optional
        The learning process of both phases. Default: exponential Euler with its
        automatic step (only the settled states matter to CML, and they do not depend on
        the integrator), batch presentation, the ``delta`` rule for single-layer
        plasticity and ``backprop`` otherwise.
    tol : float, optional
        Settling tolerance of the phases (overrides the learner's; default 1e-10 when no
        learner is given).
    nudged_duration : float or Brian2 quantity, optional
        Run the nudged phases for this fixed duration instead of until settled.
    """

    def __init__(self, beta=1e-3, estimator="symmetric", learner=None, tol=None,
                 nudged_duration=None):
        beta = P.real(beta, "CML", "beta")
        if beta == 0.0:
            P.fail("CML", "beta", "must be nonzero: with beta = 0 the nudged phase equals the "
                   "free phase and carries no meta-gradient information", repr(beta))
        self.beta = beta
        self.estimator = P.choice(estimator, "CML", "estimator", tuple(ESTIMATORS))
        if learner is not None and not isinstance(learner, Learner):
            P.fail("CML", "learner", "must be a Learner", type(learner).__name__)
        self.learner = learner
        self.tol = P.real(tol, "CML", "tol", low=0.0, low_open=True, allow_none=True)
        self.nudged_duration = P.to_seconds(nudged_duration, "CML", "nudged_duration",
                                            allow_none=True)

    def __repr__(self):
        return (f"CML(beta={self.beta:g}, estimator={self.estimator!r}, "
                f"learner={self.learner!r}, tol={self.tol}, "
                f"nudged_duration={self.nudged_duration})")

    def learners(self, net):
        """(free-phase learner, nudged-phase learner) used for ``net``."""
        if self.learner is None:
            free = default_learner(net, self.tol if self.tol is not None else 1e-10)
        else:
            free = copy.copy(self.learner)
            if self.tol is not None:
                free.tol = self.tol
        nudged = copy.copy(free)
        if self.nudged_duration is not None:
            nudged.duration, nudged.tol = self.nudged_duration, None
        return free, nudged

    def estimate(self, net, task, reduce="mean"):
        """Run the phases and return a :class:`CMLResult` (``net``: a RateNetwork or a
        :class:`~neuro_meta.dual.DualSystem`)."""
        from .dual import DualSystem, cml_estimate

        if not isinstance(net, (RateNetwork, DualSystem)):
            P.fail("CML.meta_gradient", "net", "must be a RateNetwork or a DualSystem",
                   type(net).__name__)
        if not isinstance(task, Task):
            P.fail("CML.meta_gradient", "task", "must be a Task", type(task).__name__)
        P.choice(reduce, "CML.meta_gradient", "reduce", ("mean", "none"))
        if isinstance(net, DualSystem):
            return cml_estimate(self, net, task, reduce)
        xt, yt, xv, yv = task.as_batch()
        free_l, nudged_l = self.learners(net)
        free = free_l.run(net, xt, yt)
        phi0 = [np.asarray(p) for p in free.phi_aug]
        states = {0.0: phi0}
        for mult, _ in ESTIMATORS[self.estimator]:
            if mult == 0.0:
                continue
            b = mult * self.beta
            res = nudged_l.run(net, xt, yt, x_val=xv, y_val=yv, beta=b, phi_init=phi0)
            states[b] = [np.asarray(p) for p in res.phi_aug]
        grad_aug = {"omega": [], "lam": []}
        for i, c in enumerate(net.connections):
            if not c.plastic:
                grad_aug["omega"].append(None)
                grad_aug["lam"].append(None)
                continue
            g_om = np.zeros_like(phi0[i])
            g_lam = np.zeros_like(phi0[i])
            for mult, weight in ESTIMATORS[self.estimator]:
                d_om, d_lam = inner_partials(states[mult * self.beta][i], c.omega, c.lam)
                g_om += (weight / self.beta) * d_om
                g_lam += (weight / self.beta) * d_lam
            if reduce == "mean":
                g_om, g_lam = g_om.mean(axis=0), g_lam.mean(axis=0)
            elif not task.batched:
                g_om, g_lam = g_om[0], g_lam[0]
            grad_aug["omega"].append(g_om)
            grad_aug["lam"].append(g_lam)
        grad = {**split_theta_like(grad_aug["omega"], net, "omega"),
                **split_theta_like(grad_aug["lam"], net, "lam")}
        loss_t = _loss(net, xt, yt, phi0)
        loss_v = _loss(net, xv, yv, phi0)
        return CMLResult(grad, phi0, {k: v for k, v in states.items() if k != 0.0},
                         loss_t, loss_v)

    def meta_gradient(self, net, task, reduce="mean"):
        """The CML estimate of ``dL_out/dθ`` in the structure of ``net.theta``.

        For a batch of tasks the gradients are averaged over tasks (``reduce="mean"``) or
        returned per task with a leading task axis (``reduce="none"``).
        """
        return self.estimate(net, task, reduce).grad


def _loss(net, x, y, phi):
    out = net.predict(x, phi)
    return 0.5 * ((out - y) ** 2).sum(axis=-1).mean(axis=-1)
