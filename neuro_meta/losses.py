"""Losses of the learning process: how a model's output ``out`` is scored against a
target ``y``, per sample, with the derivatives the learning signal and the exact
reference need.

A loss is part of the model-kind protocol (:mod:`neuro_meta.kind`): a kind's forces
start from :meth:`SquaredError.error` (``∂ℓ/∂out``) and its Hessian-vector products use
:meth:`SquaredError.curvature` (``∂²ℓ/∂out² · R``); everything else (phases, CML, the
exact reference, meta-training) sees only the scalar losses.
"""


class SquaredError:
    """``ℓ(out, y) = ½ ‖out − y‖²`` per sample (summed over output units); a set's loss
    is the mean over its K samples, ``L = 1/(2K) Σ_k ‖ŷ_k − y_k‖²``."""

    name = "squared_error"

    def per_sample(self, out, y):
        """``ℓ`` per sample, shape ``out.shape[:-1]``."""
        return 0.5 * ((out - y) ** 2).sum(axis=-1)

    def mean(self, out, y):
        """The mean over the samples (axis −2) of :meth:`per_sample`, shape
        ``out.shape[:-2]``."""
        return 0.5 * ((out - y) ** 2).sum(axis=-1).mean(axis=-1)

    def error(self, out, y):
        """``∂ℓ/∂out = out − y``."""
        return out - y

    def curvature(self, out, y, r_out):
        """``∂²ℓ/∂out² · r_out`` (the identity for squared error)."""
        return r_out

    def __repr__(self):
        return "SquaredError()"

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


SQUARED_ERROR = SquaredError()
