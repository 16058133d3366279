"""Initialisers for synaptic parameters: callables ``init(shape, rng) -> array``.

Pass one wherever an array is accepted (``ComplexSynapse(omega=nm.init.Normal(0.1))``);
the network draws the values with its own seed, so the same seed gives the same numbers.
"""
from dataclasses import dataclass

import numpy as np

from ._params import real


class Initializer:
    """Base class: ``init(shape, rng)`` returns a float64 array of ``shape``."""

    def __call__(self, shape, rng):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Initializer):
    """Every entry equal to ``value``."""

    value: float = 0.0

    def __post_init__(self):
        real(self.value, "Constant", "value")

    def __call__(self, shape, rng):
        return np.full(shape, float(self.value))


@dataclass(frozen=True)
class Normal(Initializer):
    """Gaussian entries with standard deviation ``std`` and mean ``mean``."""

    std: float = 1.0
    mean: float = 0.0

    def __post_init__(self):
        real(self.std, "Normal", "std", low=0.0)
        real(self.mean, "Normal", "mean")

    def __call__(self, shape, rng):
        return self.mean + self.std * rng.standard_normal(shape)


@dataclass(frozen=True)
class Uniform(Initializer):
    """Entries uniform in ``[low, high)``."""

    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        real(self.low, "Uniform", "low")
        real(self.high, "Uniform", "high", low=self.low)

    def __call__(self, shape, rng):
        return rng.uniform(self.low, self.high, size=shape)


@dataclass(frozen=True)
class Glorot(Initializer):
    """Glorot/Xavier uniform: ``U(-a, a)`` with ``a = gain * sqrt(6 / (n_pre + n_post))``.

    For a 1-D shape (biases) it returns zeros.
    """

    gain: float = 1.0

    def __post_init__(self):
        real(self.gain, "Glorot", "gain", low=0.0)

    def __call__(self, shape, rng):
        if len(shape) < 2:
            return np.zeros(shape)
        n_post, n_pre = shape[-2], shape[-1]
        a = self.gain * np.sqrt(6.0 / (n_pre + n_post))
        return rng.uniform(-a, a, size=shape)
