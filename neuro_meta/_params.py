"""Validation of parameters: one place that checks bounds, shapes and units.

All checks raise :class:`~neuro_meta.errors.ValidationError` with a message of the form
``Owner.attr: rule (got value)``.
"""
import numbers

import numpy as np

from .errors import ValidationError


def _fmt(value):
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return repr(value.reshape(-1)[0].item())
        return f"array of shape {value.shape}"
    return repr(value)


def fail(owner, attr, rule, got):
    """Raise a ValidationError ``owner.attr: rule (got got)``."""
    raise ValidationError(f"{owner}.{attr}: {rule} (got {got})")


def to_seconds(value, owner, attr, *, allow_zero=False, allow_none=False):
    """Convert a time given in seconds (float) or as a Brian2 quantity to float seconds."""
    if value is None:
        if allow_none:
            return None
        fail(owner, attr, "must be a time in seconds or a Brian2 quantity", "None")
    if hasattr(value, "dim") and hasattr(value, "dimensions"):
        # A Brian2 quantity: check that it is a time.
        from brian2 import second
        from brian2.units.fundamentalunits import have_same_dimensions

        if not have_same_dimensions(value, second):
            fail(owner, attr, "must have units of time", f"{value!r}")
        value = float(np.asarray(value / second))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(owner, attr, "must be a time in seconds (a real number) or a Brian2 quantity",
             repr(value))
    value = float(value)
    if not np.isfinite(value):
        fail(owner, attr, "must be finite", repr(value))
    if value < 0 or (value == 0 and not allow_zero):
        fail(owner, attr, "must be >= 0" if allow_zero else "must be > 0", repr(value))
    return value


def real(value, owner, attr, *, low=None, high=None, low_open=False, allow_none=False):
    """Check a real scalar, optionally bounded."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(owner, attr, "must be a real number", repr(value))
    value = float(value)
    if not np.isfinite(value):
        fail(owner, attr, "must be finite", repr(value))
    if low is not None:
        if low_open and value <= low:
            fail(owner, attr, f"must be > {low}", repr(value))
        if not low_open and value < low:
            fail(owner, attr, f"must be >= {low}", repr(value))
    if high is not None and value > high:
        fail(owner, attr, f"must be <= {high}", repr(value))
    return value


def integer(value, owner, attr, *, low=None, allow_none=False):
    """Check an integer, optionally bounded below."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(owner, attr, "must be an integer", repr(value))
    value = int(value)
    if low is not None and value < low:
        fail(owner, attr, f"must be >= {low}", repr(value))
    return value


def rng_from_seed(value, owner, attr="seed"):
    """A ``numpy.random.Generator`` from a seed: None (fresh entropy), an integer >= 0,
    or a Generator (used as is)."""
    if isinstance(value, np.random.Generator):
        return value
    if value is not None:
        integer(value, owner, attr, low=0)
    return np.random.default_rng(None if value is None else int(value))


def choice(value, owner, attr, options):
    """Check that ``value`` is one of ``options`` (strings)."""
    if not isinstance(value, str) or value not in options:
        fail(owner, attr, "must be one of " + ", ".join(repr(o) for o in options), repr(value))
    return value


DATA_LIMIT = 1e100


def finite_array(value, owner, attr, *, ndim=None, shape=None, min_value=None,
                 max_abs=None):
    """Convert to a float64 array and check that it is finite (and optionally its shape,
    lower bound and magnitude)."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        fail(owner, attr, "must be convertible to an array of real numbers",
             f"{type(value).__name__}")
    if ndim is not None:
        ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in ndims:
            fail(owner, attr, f"must have {' or '.join(map(str, ndims))} dimensions",
                 f"shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        fail(owner, attr, f"must have shape {tuple(shape)}", f"shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        fail(owner, attr, "must contain only finite values (no NaN or inf)",
             f"{int(bad.sum())} non-finite value(s), first {float(arr[idx])!r} at index {idx}")
    if min_value is not None and arr.size and arr.min() < min_value:
        fail(owner, attr, f"must be >= {min_value:g}",
             f"{_fmt(arr) if arr.size == 1 else 'minimum ' + repr(float(arr.min()))}")
    if max_abs is not None and arr.size and np.abs(arr).max() > max_abs:
        fail(owner, attr, f"must be at most {max_abs:g} in magnitude (squared errors must "
             "stay finite in float64); rescale the data",
             f"max |{attr}| = {float(np.abs(arr).max())!r}")
    return arr
