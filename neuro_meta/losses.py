"""Losses of the learning process: how a model's output ``out`` is scored against a
target ``y``, per sample, with the derivatives the learning signal and the exact
reference need.

A loss is part of the model-kind protocol (:mod:`neuro_meta.kind`): a kind's forces
start from :meth:`SquaredError.error` (``∂ℓ/∂out``) and its Hessian-vector products use
:meth:`SquaredError.curvature` (``∂²ℓ/∂out² · R``); everything else (phases, CML, the
exact reference, meta-training) sees only the scalar losses.

Three losses ship: :data:`SQUARED_ERROR` (regression), :data:`CROSS_ENTROPY` (soft-max
cross-entropy on the outputs taken as logits, for classification with one-hot or
probability targets) and :data:`MASKED_SQUARED_ERROR` (squared error on the observed
outputs only: a bandit's pulled arm). :func:`get_loss` turns a name into one. All are written with
complex-safe numpy (the protocol's default derivatives take complex steps through them).
Each loss also has a :meth:`~SquaredError.score` -- the per-task number experiments
report (mean squared error; classification error rate) -- and
:meth:`~SquaredError.check_targets`, the door for targets.
"""
import numpy as np

from . import _params as P


def _numbers(value, owner, attr):
    """``value`` as a numeric array (integer, float, bool or complex), without copying an
    array; text, ragged lists and objects are refused (an object array of numbers is
    converted). Cheap: no pass over the values of an array."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return value
    try:
        arr = np.asarray(value)
    except Exception:       # ragged lists
        P.fail(owner, attr, "must be convertible to an array of real numbers",
               type(value).__name__)
    if arr.dtype.kind == "O":   # numbers as Python objects: data; None or text: refused
        return P.finite_array(arr, owner, attr)
    if arr.dtype.kind not in "biufc":
        P.fail(owner, attr, "must be an array of real numbers", f"dtype {arr.dtype}")
    return arr


def _pair(out, y, owner, ndim):
    """``out`` and ``y`` as numeric arrays (:func:`_numbers`) of at least ``ndim``
    dimensions, the same last axis (outputs) and shapes that broadcast (leading axes).
    Cheap (shapes and dtypes only): the losses' methods run inside simulation loops."""
    out, y = _numbers(out, owner, "out"), _numbers(y, owner, "y")
    what = "(samples, outputs)" if ndim == 2 else "(outputs)"
    for name, a in (("out", out), ("y", y)):
        if a.ndim < ndim:
            P.fail(owner, name, f"must have at least {ndim} dimension"
                   f"{'s' if ndim > 1 else ''} {what}", f"shape {a.shape}")
    if out.shape != y.shape:
        if out.shape[-1] != y.shape[-1]:
            P.fail(owner, "y", f"last axis must match out's ({out.shape[-1]} outputs)",
                   f"shape {y.shape}")
        for a, b in zip(out.shape[::-1], y.shape[::-1]):    # (np.broadcast_shapes:
            if a != b and a != 1 and b != 1:                # several times slower)
                P.fail(owner, "y", f"must broadcast against out of shape {out.shape}",
                       f"shape {y.shape}")
    return out, y


def _targets(y, owner, attr):
    """Targets ``y`` as a numeric array of at least one dimension (:func:`_numbers`)."""
    y = _numbers(y, owner, attr)
    if y.ndim < 1:
        P.fail(owner, attr, "must have at least 1 dimension (outputs)", f"shape {y.shape}")
    return y


class SquaredError:
    """``ℓ(out, y) = ½ ‖out − y‖²`` per sample (summed over output units); a set's loss
    is the mean over its K samples, ``L = 1/(2K) Σ_k ‖ŷ_k − y_k‖²``."""

    name = "squared_error"

    def per_sample(self, out, y):
        """``ℓ`` per sample, shape ``out.shape[:-1]``."""
        out, y = _pair(out, y, "SquaredError.per_sample", 1)
        return 0.5 * ((out - y) ** 2).sum(axis=-1)

    def mean(self, out, y):
        """The mean over the samples (axis −2) of :meth:`per_sample`, shape
        ``out.shape[:-2]``."""
        out, y = _pair(out, y, "SquaredError.mean", 2)
        return 0.5 * ((out - y) ** 2).sum(axis=-1).mean(axis=-1)

    def error(self, out, y):
        """``∂ℓ/∂out = out − y``."""
        return out - y

    def curvature(self, out, y, r_out):
        """``∂²ℓ/∂out² · r_out`` (the identity for squared error)."""
        return r_out

    #: What :meth:`score` measures (for tables and plots).
    score_name = "MSE"

    def score(self, out, y):
        """Per-task mean over samples and outputs of ``(out − y)²``, shape
        ``out.shape[:-2]`` (lower is better)."""
        out, y = _pair(out, y, "SquaredError.score", 2)
        return ((out - y) ** 2).mean(axis=(-1, -2))

    def check_targets(self, y, owner, attr):
        """Targets ``y`` as an array (any real values; finiteness is checked elsewhere):
        text, ragged lists and scalars are refused, naming ``owner.attr``."""
        return _targets(y, owner, attr)

    def __repr__(self):
        return "SquaredError()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


SQUARED_ERROR = SquaredError()


class SoftmaxCrossEntropy:
    """Soft-max cross-entropy of the outputs taken as logits ``z``:
    ``ℓ(z, y) = −Σ_j y_j log softmax(z)_j = Σ_j y_j (logsumexp(z) − z_j)`` per sample, for
    targets ``y`` that are probability vectors (one-hot for class labels; each row
    non-negative, summing to 1). A set's loss is the mean over its samples.

    Its derivatives: ``∂ℓ/∂z = softmax(z) − y`` and ``∂²ℓ/∂z² · R = p ⊙ R − p (p · R)``
    (``p = softmax(z)``). The learning process of a network with this loss descends the
    cross-entropy of the training shots; use a linear output layer (the logits).
    """

    name = "cross_entropy"
    score_name = "error rate"

    @staticmethod
    def _shifted(out):
        # complex-safe: shift by the real maximum (a constant for the complex step)
        m = np.max(np.real(out), axis=-1, keepdims=True)
        e = np.exp(out - m)
        return m, e, e.sum(axis=-1, keepdims=True)

    def log_softmax(self, out):
        """``log softmax(out)`` along the last axis, without overflow."""
        m, _, tot = self._shifted(out)
        return out - m - np.log(tot)

    def softmax(self, out):
        """``softmax(out)`` along the last axis, without overflow."""
        _, e, tot = self._shifted(out)
        return e / tot

    def _per_sample(self, out, y):
        return -(y * self.log_softmax(out)).sum(axis=-1)

    def per_sample(self, out, y):
        """``ℓ`` per sample, shape ``out.shape[:-1]``."""
        return self._per_sample(*_pair(out, y, "SoftmaxCrossEntropy.per_sample", 1))

    def mean(self, out, y):
        """The mean over the samples (axis −2) of :meth:`per_sample`."""
        return self._per_sample(*_pair(out, y, "SoftmaxCrossEntropy.mean", 2)).mean(axis=-1)

    def error(self, out, y):
        """``∂ℓ/∂out = softmax(out) Σ_j y_j − y`` (``softmax − y`` for probability
        targets)."""
        return self.softmax(out) * y.sum(axis=-1, keepdims=True) - y

    def curvature(self, out, y, r_out):
        """``∂²ℓ/∂out² · r_out = (Σ_j y_j) (p ⊙ r − p (p · r))``, ``p = softmax(out)``;
        ``r_out`` may carry extra leading axes (directions)."""
        p = self.softmax(out)
        pr = p * r_out
        return (pr - p * pr.sum(axis=-1, keepdims=True)) * y.sum(axis=-1, keepdims=True)

    def score(self, out, y):
        """Per-task classification error rate: the fraction of samples whose largest
        output is not the target's largest entry, shape ``out.shape[:-2]`` (lower is
        better; ties go to the first index)."""
        return self._score(*_pair(out, y, "SoftmaxCrossEntropy.score", 2))

    @staticmethod
    def _score(out, y):
        return (np.argmax(np.real(out), axis=-1) != np.argmax(y, axis=-1)).mean(axis=-1)

    def accuracy(self, out, y):
        """Per-task fraction of samples classified correctly (``1 − score``)."""
        return 1.0 - self._score(*_pair(out, y, "SoftmaxCrossEntropy.accuracy", 2))

    def check_targets(self, y, owner, attr):
        """Refuse targets that are not probability vectors: negative entries or rows
        not summing to 1 (within 1e-6), or not numbers at all (text, ragged lists),
        naming ``owner.attr``."""
        y = _targets(y, owner, attr)
        if y.size and np.iscomplexobj(y):
            return y            # complex values are refused by the real-value checks
        if y.size and (np.min(y) < 0 or not np.allclose(y.sum(axis=-1), 1.0, atol=1e-6)):
            bad = np.argwhere(~np.isclose(y.sum(axis=-1), 1.0, atol=1e-6))
            where = tuple(int(i) for i in bad[0]) if len(bad) else "a negative entry"
            P.fail(owner, attr, "must hold probability vectors for the cross-entropy loss "
                   "(one-hot class labels: entries >= 0, each row summing to 1)",
                   f"row {where}" if len(bad) else f"minimum {float(np.min(y))!r}")
        return y

    def __repr__(self):
        return "SoftmaxCrossEntropy()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


CROSS_ENTROPY = SoftmaxCrossEntropy()

class MaskedSquaredError:
    """Squared error on the observed outputs only -- the loss of a contextual bandit's
    reward model, where each sample reveals the reward of the one arm that was pulled.

    Targets ``y`` have one entry per output (arm): the observed reward where the arm was
    pulled and the marker :attr:`UNOBSERVED` everywhere else (build them with
    :meth:`targets`). With the mask ``m_j = [y_j ≠ UNOBSERVED]``::

        ℓ(out, y) = ½ Σ_j m_j (out_j − y_j)²          (per sample; a set's loss is the
                                                        mean over its K samples)

    so ``∂ℓ/∂out = m ⊙ (out − y)`` and ``∂²ℓ/∂out² · R = m ⊙ R``: unobserved arms send no
    error and have no curvature. Why a marker and not NaN: every door of the package
    (:class:`~neuro_meta.Task`, ``Learner.run``, the baselines) refuses non-finite data,
    so that a NaN is always an error; the marker is a finite number no reward can take
    (−10¹⁰⁰, the largest magnitude the doors accept), and :meth:`check_targets` refuses
    any other entry beyond ±10⁵⁰. Everything is complex-safe (the mask depends on the
    real targets only).
    """

    name = "masked_squared_error"
    score_name = "MSE on pulled arms"
    #: The target of an arm that was not pulled (not observed).
    UNOBSERVED = -1e100
    #: Largest magnitude of an observed target.
    MAX_TARGET = 1e50

    def observed(self, y):
        """The mask ``m`` (bool, shape of ``y``): which targets were observed."""
        return np.real(y) != self.UNOBSERVED

    def targets(self, arms, rewards, n_arms):
        """Targets from the pulled ``arms`` (int, shape (..., S)) and their observed
        ``rewards`` (shape (..., S)): shape (..., S, n_arms), the reward at the pulled
        arm and :attr:`UNOBSERVED` elsewhere."""
        O = "MaskedSquaredError.targets"
        try:
            arms = np.asarray(arms)
        except Exception:       # ragged lists
            P.fail(O, "arms", "must be convertible to an array of integers",
                   type(arms).__name__)
        n_arms = P.integer(n_arms, O, "n_arms", low=1)
        P.check_bytes(arms.size * n_arms, O, "n_arms", f"of shape {arms.shape + (n_arms,)}",
                      repr(n_arms))
        if arms.dtype.kind not in "iu" or (arms.size and (arms.min() < 0
                                                          or arms.max() >= n_arms)):
            P.fail("MaskedSquaredError.targets", "arms", f"must be integers in [0, {n_arms})",
                   f"dtype {arms.dtype}" if arms.dtype.kind not in "iu" else
                   f"range [{arms.min()}, {arms.max()}]")
        rewards = P.finite_array(rewards, "MaskedSquaredError.targets", "rewards",
                                 max_abs=self.MAX_TARGET)
        if rewards.shape != arms.shape:
            P.fail("MaskedSquaredError.targets", "rewards", f"must have the shape of arms "
                   f"{arms.shape}", f"shape {rewards.shape}")
        y = np.full(arms.shape + (n_arms,), self.UNOBSERVED)
        np.put_along_axis(y, arms[..., None], rewards[..., None], axis=-1)
        return y

    def _diff(self, out, y):
        return np.where(self.observed(y), out - np.where(self.observed(y), y, 0.0), 0.0)

    def _per_sample(self, out, y):
        d = self._diff(out, y)
        return 0.5 * (d * d).sum(axis=-1)

    def per_sample(self, out, y):
        """``ℓ`` per sample, shape ``out.shape[:-1]``."""
        return self._per_sample(*_pair(out, y, "MaskedSquaredError.per_sample", 1))

    def mean(self, out, y):
        """The mean over the samples (axis −2) of :meth:`per_sample`."""
        return self._per_sample(*_pair(out, y, "MaskedSquaredError.mean", 2)).mean(axis=-1)

    def error(self, out, y):
        """``∂ℓ/∂out = m ⊙ (out − y)``."""
        return self._diff(out, y)

    def curvature(self, out, y, r_out):
        """``∂²ℓ/∂out² · r_out = m ⊙ r_out`` (``r_out`` may carry extra leading axes)."""
        return np.where(self.observed(y), r_out, 0.0)

    def score(self, out, y):
        """Per-task mean of ``(out − y)²`` over the observed targets (the pulled arms),
        shape ``out.shape[:-2]`` (0 for a task without any observed target)."""
        out, y = _pair(out, y, "MaskedSquaredError.score", 2)
        d = self._diff(np.real(out), y)
        n = self.observed(y).sum(axis=(-1, -2))
        return (d * d).sum(axis=(-1, -2)) / np.maximum(n, 1)

    def check_targets(self, y, owner, attr):
        """Refuse targets that are neither :attr:`UNOBSERVED` nor within
        ±:attr:`MAX_TARGET`, or not numbers at all (text, ragged lists), naming
        ``owner.attr``."""
        y = _targets(y, owner, attr)
        if not y.size or np.iscomplexobj(y):
            return y            # complex values are refused by the real-value checks
        bad = self.observed(y) & ~(np.abs(y) <= self.MAX_TARGET)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            P.fail(owner, attr, "must hold observed rewards within +-1e50 and "
                   "MaskedSquaredError.UNOBSERVED (-1e100) for arms not pulled (build "
                   "them with MaskedSquaredError().targets(arms, rewards, n_arms))",
                   f"{float(y[where])!r} at index {where}")
        return y

    def __repr__(self):
        return "MaskedSquaredError()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


MASKED_SQUARED_ERROR = MaskedSquaredError()


#: The losses by name (what ``RateNetwork(loss=...)`` and model files accept).
LOSSES = {"squared_error": SQUARED_ERROR, "cross_entropy": CROSS_ENTROPY,
          "masked_squared_error": MASKED_SQUARED_ERROR}


def get_loss(loss, owner="RateNetwork", attr="loss"):
    """A loss object from a name in :data:`LOSSES` or a loss object (one with
    ``per_sample``, ``mean``, ``error``, ``curvature``, ``score``)."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            P.fail(owner, attr, f"must be one of {', '.join(map(repr, LOSSES))} or a loss "
                   "object", repr(loss))
        return LOSSES[loss]
    need = ("per_sample", "mean", "error", "curvature", "score", "check_targets", "name")
    missing = [k for k in need if not hasattr(loss, k)]
    if missing:
        P.fail(owner, attr, f"must be one of {', '.join(map(repr, LOSSES))} or a loss object "
               f"(missing {', '.join(missing)})", P.shown(loss))
    return loss
