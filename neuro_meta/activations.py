"""Rate functions r = f(v) of the rate neurons, with first and second derivatives.

Each activation also carries the Brian2 expression of ``f`` so that the Brian2 engine
can emit readable equations.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

from ._params import fail, shown


@dataclass(frozen=True)
class Activation:
    """A rate function with its derivatives.

    Attributes
    ----------
    name : str
        Name used in model files and reprs.
    f, df, d2f : callable
        ``f(v)``, ``f'(v)`` and ``f''(v)`` on numpy arrays.
    brian2_expr : str
        ``f`` written in Brian2's equation language with the variable ``v``.
    """

    name: str
    f: Callable
    df: Callable
    d2f: Callable
    brian2_expr: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            fail("Activation", "name", "must be a non-empty string", shown(self.name))
        for attr in ("f", "df", "d2f"):
            if not callable(getattr(self, attr)):
                fail("Activation", attr, "must be callable (a function of a numpy array "
                     "of pre-activations v)", shown(getattr(self, attr)))
        if not isinstance(self.brian2_expr, str):
            fail("Activation", "brian2_expr", "must be a string (f in Brian2's equation "
                 "language, with the variable v)", shown(self.brian2_expr))

    def __repr__(self):
        return f"Activation({self.name!r})"

    def __reduce__(self):
        # Built-in activations pickle by name (their functions are lambdas), so networks
        # can be sent to worker processes and Dask workers.
        if ACTIVATIONS.get(self.name) is self:
            return (get_activation, (self.name,))
        return super().__reduce__()


def _tanh_d(v):
    t = np.tanh(v)
    return 1.0 - t * t


def _tanh_d2(v):
    t = np.tanh(v)
    return -2.0 * t * (1.0 - t * t)


def _sig_d(v):
    s = expit(v)
    return s * (1.0 - s)


def _sig_d2(v):
    s = expit(v)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _softplus(v):
    return np.logaddexp(0.0, v)


def _relu_d(v):
    return (v > 0).astype(np.result_type(v, np.float64))


ACTIVATIONS = {
    "linear": Activation("linear", lambda v: v, np.ones_like, np.zeros_like, "v"),
    "tanh": Activation("tanh", np.tanh, _tanh_d, _tanh_d2, "tanh(v)"),
    "sigmoid": Activation("sigmoid", expit, _sig_d, _sig_d2, "1/(1 + exp(-v))"),
    "relu": Activation("relu", lambda v: np.maximum(v, 0.0), _relu_d, np.zeros_like,
                       "clip(v, 0, inf)"),
    "softplus": Activation("softplus", _softplus, expit, _sig_d, "log(1 + exp(v))"),
}


def get_activation(spec, owner="RateNetwork", attr="activation"):
    """Return the :class:`Activation` named by ``spec`` (or ``spec`` itself)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str) and spec in ACTIVATIONS:
        return ACTIVATIONS[spec]
    fail(owner, attr, "must be one of " + ", ".join(repr(k) for k in ACTIVATIONS)
         + " or an Activation", shown(spec))
