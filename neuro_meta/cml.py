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
import warnings

import numpy as np

from . import _params as P
from .engines.phase import BETA_MAX
from .errors import user_stacklevel
from .kind import check_kind, pull_partials
from .learning import Learner
from .tasks import Task

#: Smallest magnitude of β: below it the phases' difference (of order β) is lost in the
#: rounding of the settled states, and ``1/β`` overflows for subnormal β.
BETA_MIN = 1e-12

ESTIMATORS = {
    # estimator: list of (nudging multiple of β, weight multiple of 1/β)
    "standard": ((0.0, -1.0), (1.0, 1.0)),
    "symmetric": ((-1.0, -0.5), (1.0, 0.5)),
    "second_order": ((0.0, -1.5), (1.0, 2.0), (2.0, -0.5)),
}


#: ``∂ω`` and ``∂λ`` of one complex synapse's ``λ/2 (φ − ω)²`` (the synapse-local part of
#: the CML rule): ``−λ (φ − ω)`` and ``½ (φ − ω)²``.
inner_partials = pull_partials


def default_learner(net, tol):
    """The learning process CML and the exact reference use when none is given:
    batch presentation, until settled to ``tol`` -- found by the phase solver
    (``settle="solve"``; only the settled states matter to CML) -- with the kind's
    default rule; exponential Euler with its automatic step where a phase is
    integrated."""
    return Learner(rule=net.default_rule(), presentation="batch", integrator="expeuler",
                   tol=tol, settle="solve")


def tree_reduce(tree, reduce, batched):
    """Average per-task arrays over the task axis (``"mean"``) or keep it (``"none"``;
    dropped for an unbatched task)."""
    def red(a):
        if a is None:
            return None
        if reduce == "mean":
            return a.mean(axis=0)
        return a if batched else a[0]
    return {k: [red(a) for a in v] for k, v in tree.items()}


class UnsettledEstimateWarning(UserWarning):
    """A CML estimate dominated by how far the phases are from settled: an estimator that
    takes the free phase's state as one of its terms (``standard``, ``second_order``) on
    a free phase of fixed duration (the learning that continues during the nudged phases
    is counted as meta-gradient), or a nudging ``abs(beta)`` less than 10 times the
    phases' settling tolerance (the settled states' error, divided by β, swamps their
    difference) (:class:`CML`)."""


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
        Nudging strength β ≠ 0 (a small positive number such as 1e-3 ... 1e-1), with
        ``abs(beta)`` at least :data:`BETA_MIN` (1e-12) and the largest nudging of a
        phase (``2 abs(beta)`` for ``second_order``) at most
        :data:`~neuro_meta.engines.phase.BETA_MAX` (1e6).
    estimator : {"standard", "symmetric", "second_order"}
    learner : Learner, optional
        The learning process of both phases. Default: phases settled by the phase solver
        (``Learner(settle="solve")``: only the settled states matter to CML, and they do
        not depend on how they are reached), batch presentation, the ``delta`` rule for
        single-layer plasticity and ``backprop`` otherwise.
    tol : float, optional
        Settling tolerance of the phases (overrides the learner's; default 1e-10 when no
        learner is given).
    nudged_duration : float or Brian2 quantity, optional
        Run the nudged phases for this fixed duration instead of until settled.

    Notes
    -----
    A free phase of fixed length (a ``learner`` with ``duration`` and no ``tol``) has not
    settled: it keeps learning the shots during the nudged phases, and the ``standard``
    and ``second_order`` estimators, which compare a nudged state with the free one,
    count that drift divided by β (their estimate grows like 1/β). They warn
    (:class:`UnsettledEstimateWarning`); ``symmetric`` compares two nudged phases that
    share the drift, which cancels.
    """

    def __init__(self, beta=1e-3, estimator="symmetric", learner=None, tol=None,
                 nudged_duration=None):
        beta = P.real(beta, "CML", "beta")
        if beta == 0.0:
            P.fail("CML", "beta", "must be nonzero: with beta = 0 the nudged phase equals the "
                   "free phase and carries no meta-gradient information", repr(beta))
        if abs(beta) < BETA_MIN:
            P.fail("CML", "beta", f"must be at least {BETA_MIN:g} in magnitude: the phases' "
                   "difference, of order beta, would be lost in the rounding of the settled "
                   "states", repr(beta))
        self.estimator = P.choice(estimator, "CML", "estimator", tuple(ESTIMATORS))
        mult = max(abs(m) for m, _ in ESTIMATORS[self.estimator])
        if abs(beta) * mult > BETA_MAX:
            P.fail("CML", "beta", f"must be at most {BETA_MAX / mult:g} in magnitude with "
                   f"estimator {self.estimator!r} (a phase nudged with "
                   f"{'2 beta' if mult == 2 else 'beta'} beyond {BETA_MAX:g} is the "
                   "validation loss alone, and the sample weights overflow)", repr(beta))
        self.beta = beta
        if learner is not None and not isinstance(learner, Learner):
            P.fail("CML", "learner", "must be a Learner", type(learner).__name__)
        self.learner = learner
        self.tol = P.real(tol, "CML", "tol", low=0.0, low_open=True, allow_none=True)
        self.nudged_duration = P.to_seconds(nudged_duration, "CML", "nudged_duration",
                                            allow_none=True)
        tol_used = (self.tol if self.tol is not None else
                    1e-10 if learner is None else learner.tol)
        if tol_used is not None and abs(beta) < 10 * tol_used:
            warnings.warn(
                f"CML: beta ({beta:g}) is less than 10 times the phases' settling tolerance "
                f"({tol_used:g}): the settled states are known to about the tolerance, and "
                "that error, divided by beta, swamps the meta-gradient (with beta <= tol "
                "it can have the wrong sign). Use a larger beta or a smaller tol",
                UnsettledEstimateWarning, stacklevel=user_stacklevel())
        drift = sum(w for m, w in ESTIMATORS[self.estimator] if m != 0.0)
        if learner is not None and learner.tol is None and self.tol is None and drift:
            warnings.warn(
                f"CML: the free phase has a fixed duration ({learner.duration:g} s, "
                f"learner.tol None) and estimator {self.estimator!r} does not cancel its "
                "drift: a phase that has not settled keeps learning the shots during the "
                "nudged phase, and that change enters the meta-gradient divided by beta "
                "(on Omniglot, meta-learning fell below the untrained network). Settle the "
                "phases (tol) or use estimator='symmetric', whose two nudged phases share "
                "the drift", UnsettledEstimateWarning, stacklevel=user_stacklevel())

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
        """Run the phases and return a :class:`CMLResult` (``net``: any model kind).

        ``ĝ = Σ_j (w_j/β) ∂θ F(φ_j, θ, m_j β)`` over the estimator's phases j (nudging
        multiple ``m_j``, weight ``w_j``), with ``∂θ F`` the kind's
        :meth:`~neuro_meta.kind.ModelKind.theta_partials` -- local to every synapse.
        """
        return self._estimate(net, task, reduce, "CML.estimate")

    def _estimate(self, net, task, reduce, O):
        """:meth:`estimate`, its errors naming ``O``, the door the user called."""
        check_kind(net, O)
        if not isinstance(task, Task):
            P.fail(O, "task", "must be a Task", type(task).__name__)
        P.choice(reduce, O, "reduce", ("mean", "none"))
        xt, yt, xv, yv = task.as_batch()
        B, K = xt.shape[:2]
        V = xv.shape[1]
        free_l, nudged_l = self.learners(net)
        phi0 = [np.asarray(p) for p in free_l.run(net, xt, yt).phi_aug]
        states = {0.0: phi0}
        for mult, _ in ESTIMATORS[self.estimator]:
            if mult != 0.0:
                b = mult * self.beta
                res = nudged_l.run(net, xt, yt, x_val=xv, y_val=yv, beta=b, phi_init=phi0)
                states[b] = [np.asarray(p) for p in res.phi_aug]
        X = np.concatenate([xt, xv], axis=1)
        Y = np.concatenate([yt, yv], axis=1)
        grad = None
        for mult, weight in ESTIMATORS[self.estimator]:
            b = mult * self.beta
            c = np.concatenate([np.full((B, K), 1.0 / K), np.full((B, V), b / V)], axis=1)
            part = net.theta_partials(states[b], X, Y, c)
            s = weight / self.beta
            grad = ({k: [None if a is None else s * a for a in v] for k, v in part.items()}
                    if grad is None else
                    {k: [None if g is None else g + s * a for g, a in zip(grad[k], part[k])]
                     for k in grad})
        grad = tree_reduce(grad, reduce, task.batched)
        return CMLResult(grad, phi0, {k: v for k, v in states.items() if k != 0.0},
                         net.loss_value(xt, yt, phi0), net.loss_value(xv, yv, phi0))

    def meta_gradient(self, net, task, reduce="mean"):
        """The CML estimate of ``dL_out/dθ`` in the structure of ``net.theta``.

        For a batch of tasks the gradients are averaged over tasks (``reduce="mean"``) or
        returned per task with a leading task axis (``reduce="none"``).
        """
        return self._estimate(net, task, reduce, "CML.meta_gradient").grad
