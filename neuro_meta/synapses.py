"""Synapse models: what a connection between two rate populations is.

* :class:`ComplexSynapse` -- three variables per synapse: the fast weight ``phi`` that
  learns within a task, the consolidated weight ``omega`` and the consolidation strength
  ``lam >= 0``. During a task

      tau_phi dphi/dt = -dL_trn/dphi - lam * (phi - omega)   [- beta dL_out/dphi]

  i.e. the fast weight descends the inner objective
  ``L_in = L_trn + sum_i lam_i/2 (phi_i - omega_i)^2``. ``omega`` and ``lam`` are
  meta-parameters.
* :class:`StaticSynapse` -- a fixed weight that does not change within a task.

Parameters accept scalars (broadcast to every synapse of the connection), arrays of the
connection's shape ``(n_post, n_pre)`` or initialisers (:mod:`neuro_meta.initializers`),
drawn with the network's seed.
"""
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._params import check_bytes, fail, finite_array
from .initializers import Initializer


def _check_value(value, owner, attr, *, min_value=None):
    """Validate a parameter given as scalar, array or initialiser (shape checked later)."""
    if isinstance(value, Initializer) or (callable(value) and not isinstance(value, np.ndarray)):
        return value
    arr = finite_array(value, owner, attr, ndim=(0, 1, 2))
    if min_value is not None and arr.size and arr.min() < min_value:
        got = repr(float(arr)) if arr.ndim == 0 else f"minimum {float(arr.min())!r}"
        fail(owner, attr, f"must be >= {min_value:g}", got)
    return arr


def resolve(value, shape, rng, owner, attr, *, min_value=None):
    """Turn a scalar / array / initialiser into a float64 array of ``shape``."""
    check_bytes(int(np.prod(shape, dtype=object)), owner, attr, f"of shape {tuple(shape)}",
                f"shape {tuple(shape)}")
    if isinstance(value, Initializer) or (callable(value)
                                          and not isinstance(value, np.ndarray)):
        try:
            arr = value(tuple(shape), rng)
        except Exception as err:  # a user initialiser failed
            fail(owner, attr, f"initialiser failed for shape {tuple(shape)}: {err}", repr(value))
        arr = finite_array(arr, owner, attr)
    else:   # scalars and arrays (already checked by the synapse, or given directly)
        arr = finite_array(value, owner, attr, ndim=(0, 1, 2))
    if min_value is not None and arr.size and arr.min() < min_value:
        fail(owner, attr, f"must be >= {min_value:g}",
             repr(float(arr)) if arr.ndim == 0 else f"minimum {float(arr.min())!r}")
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != tuple(shape):
        fail(owner, attr, f"shape must be {tuple(shape)} to match the connection "
             "(n_post, n_pre) or (n_post,) for biases, or a scalar", f"shape {arr.shape}")
    return np.array(arr, dtype=np.float64)


@dataclass(frozen=True, init=False, eq=False)
class ComplexSynapse:
    """Synapse with a fast weight, a consolidated weight and a consolidation strength.

    Parameters
    ----------
    omega : scalar, array (n_post, n_pre) or initialiser
        Consolidated weight ω (meta-parameter).
    lam : scalar, array (n_post, n_pre) or initialiser
        Consolidation strength λ >= 0 (meta-parameter, dimensionless: it multiplies a
        squared weight difference in the inner objective).
    phi0 : scalar, array or initialiser, optional
        Fast weight at the start of every task; default: ``omega``.
    omega_bias, lam_bias : scalar, array (n_post,) or initialiser, optional
        The same for the postsynaptic biases when the network has biases (a bias is a
        synapse from a unit of constant rate 1). Defaults: ``omega_bias = 0``,
        ``lam_bias = lam`` when ``lam`` is a scalar, else the mean of ``lam``.
    """

    omega: Any
    lam: Any
    phi0: Any
    omega_bias: Any
    lam_bias: Any

    plastic = True

    def __init__(self, omega=0.0, lam=1.0, phi0=None, omega_bias=0.0, lam_bias=None):
        set_ = object.__setattr__
        set_(self, "omega", _check_value(omega, "ComplexSynapse", "omega"))
        set_(self, "lam", _check_value(lam, "ComplexSynapse", "lam", min_value=0.0))
        set_(self, "phi0", None if phi0 is None else _check_value(phi0, "ComplexSynapse", "phi0"))
        set_(self, "omega_bias", _check_value(omega_bias, "ComplexSynapse", "omega_bias"))
        set_(self, "lam_bias", None if lam_bias is None
             else _check_value(lam_bias, "ComplexSynapse", "lam_bias", min_value=0.0))

    def __repr__(self):
        def short(v):
            if isinstance(v, np.ndarray):
                return repr(float(v)) if v.ndim == 0 else f"array{v.shape}"
            return repr(v)
        return f"ComplexSynapse(omega={short(self.omega)}, lam={short(self.lam)})"


@dataclass(frozen=True, init=False, eq=False)
class StaticSynapse:
    """A fixed synaptic weight (no plasticity within a task).

    Parameters
    ----------
    weight : scalar, array (n_post, n_pre) or initialiser
    bias : scalar, array (n_post,) or initialiser, used when the network has biases.
    """

    weight: Any
    bias: Any

    plastic = False

    def __init__(self, weight=0.0, bias=0.0):
        object.__setattr__(self, "weight", _check_value(weight, "StaticSynapse", "weight"))
        object.__setattr__(self, "bias", _check_value(bias, "StaticSynapse", "bias"))

    def __repr__(self):
        return "StaticSynapse()"
