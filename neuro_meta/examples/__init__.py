"""Examples: small model kinds written against the protocol (:mod:`neuro_meta.kind`),
to read and to copy.

* :class:`~neuro_meta.examples.gained_linear.GainedLinear` -- linear neurons with fast
  weights and slow output gains, in under 60 lines (``docs/architecture.md``).
"""
from .gained_linear import GainedLinear

__all__ = ["GainedLinear"]
