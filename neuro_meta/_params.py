"""Validation of parameters: one place that checks bounds, shapes and units.

All checks raise :class:`~neuro_meta.errors.ValidationError` with a message of the form
``Owner.attr: rule (got value)``.

Rules every check applies (see ``docs/errors.md``):

* numbers and arrays are **real**: complex values are refused, never cast (the imaginary
  part would be dropped), and so is text;
* **units**: a time (:func:`to_seconds`) is a float in seconds or a Brian2 quantity of
  time; every other parameter is dimensionless and refuses a Brian2 quantity with
  units (``10*mV`` is not the number 0.01);
* **sizes**: an array the package would allocate is refused, naming its shape and bytes,
  beyond :data:`MAX_ARRAY_BYTES` (:func:`check_bytes`), before it is allocated.
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


#: Largest array (bytes) the package allocates for one model or batch of tasks: a
#: size beyond it is refused up front (:func:`check_bytes`) instead of failing in numpy.
MAX_ARRAY_BYTES = 2 ** 32


def check_bytes(n_elements, owner, attr, what, got, itemsize=8):
    """Refuse an array of ``n_elements`` float64 values (``what``: its description, e.g.
    a shape) beyond :data:`MAX_ARRAY_BYTES`, before it is allocated."""
    n = int(n_elements) * int(itemsize)
    if n > MAX_ARRAY_BYTES:
        fail(owner, attr, f"would need an array {what} of {n:.3g} bytes, more than the "
             f"limit of {MAX_ARRAY_BYTES:.3g} bytes (neuro_meta._params.MAX_ARRAY_BYTES)",
             got)
    return n_elements


def is_quantity(value):
    """Whether ``value`` is a Brian2 quantity (without importing Brian2)."""
    return hasattr(value, "dim") and hasattr(value, "dimensions")


def _has_units(value, depth=0):
    """A Brian2 quantity with units in ``value`` (itself or in nested lists/tuples), or
    None."""
    if is_quantity(value):
        from brian2.units.fundamentalunits import is_dimensionless

        return None if is_dimensionless(value) else value
    if isinstance(value, (list, tuple)) and depth < 32:
        for v in value:
            q = _has_units(v, depth + 1)
            if q is not None:
                return q
    return None


def dimensionless(value, owner, attr):
    """Refuse a Brian2 quantity with units where a dimensionless number is expected."""
    q = _has_units(value)
    if q is not None:
        fail(owner, attr, "is dimensionless: give a plain number, not a Brian2 quantity "
             "with units (their value in base SI units would be taken silently)",
             shown(q))
    return value


def shown(value):
    """``repr(value)`` of a user's value for a message: one line, at most 80 characters
    (Brian2's repr of a huge quantity warns: silenced; an array with units is named by
    its shape and units; an object whose repr fails is named by its type)."""
    try:
        if is_quantity(value) and np.size(value) > 1:       # an array with units
            try:
                unit = str(value.get_best_unit())
            except Exception:
                unit = str(value.dim)
            return f"a Brian2 quantity of shape {np.shape(value)} in {unit}"
        with np.errstate(all="ignore"):
            text = " ".join(repr(value).split())            # one line
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


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
            fail(owner, attr, "must have units of time", shown(value))
        arr = np.asarray(value / second)
        if arr.size != 1:
            fail(owner, attr, "must be one time, not an array", shown(value))
        if arr.dtype.kind == "c":
            fail(owner, attr, "must be a real time (complex values are not accepted)",
                 shown(value))
        value = float(arr.reshape(-1)[0])
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(owner, attr, "must be a time in seconds (a real number) or a Brian2 quantity",
             repr(value))
    value = _as_float(value, owner, attr)
    if not np.isfinite(value):
        fail(owner, attr, "must be finite", repr(value))
    if value < 0 or (value == 0 and not allow_zero):
        fail(owner, attr, "must be >= 0" if allow_zero else "must be > 0", repr(value))
    return value


def _as_float(value, owner, attr):
    """``float(value)`` of a real number; an integer beyond the float range (Python's
    OverflowError) is refused as not finite."""
    try:
        return float(value)
    except OverflowError:
        fail(owner, attr, "must be finite (an integer beyond the float range)",
             f"an integer of about {'-' if value < 0 else ''}"
             f"1e{int(int(value).bit_length() * 0.30103)}")


def real(value, owner, attr, *, low=None, high=None, low_open=False, high_open=False,
         allow_none=False):
    """Check a real scalar, optionally bounded (a dimensionless number: Brian2
    quantities with units are refused)."""
    if value is None and allow_none:
        return None
    dimensionless(value, owner, attr)
    if isinstance(value, (bool, np.bool_)):
        fail(owner, attr, "must be a real number, not a bool", repr(value))
    if not isinstance(value, numbers.Real):
        if isinstance(value, numbers.Complex):
            fail(owner, attr, "must be a real number (complex values are not accepted)",
                 repr(value))
        fail(owner, attr, "must be a real number", shown(value))
    value = _as_float(value, owner, attr)
    if not np.isfinite(value):
        fail(owner, attr, "must be finite", repr(value))
    if low is not None:
        if low_open and value <= low:
            fail(owner, attr, f"must be > {low}", repr(value))
        if not low_open and value < low:
            fail(owner, attr, f"must be >= {low}", repr(value))
    if high is not None:
        if high_open and value >= high:
            fail(owner, attr, f"must be < {high}", repr(value))
        if not high_open and value > high:
            fail(owner, attr, f"must be <= {high}", repr(value))
    return value


def integer(value, owner, attr, *, low=None, high=None, allow_none=False):
    """Check an integer, optionally bounded."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(owner, attr, "must be an integer", shown(value))
    value = int(value)
    if low is not None and value < low:
        fail(owner, attr, f"must be >= {low}", repr(value))
    if high is not None and value > high:
        fail(owner, attr, f"must be <= {high}", repr(value))
    return value


def generator(value, owner, attr="rng"):
    """Check a ``numpy.random.Generator``."""
    if not isinstance(value, np.random.Generator):
        fail(owner, attr, "must be a numpy.random.Generator (numpy.random.default_rng(seed))",
             type(value).__name__)
    return value


def rng_from_seed(value, owner, attr="seed"):
    """A ``numpy.random.Generator`` from a seed: None (fresh entropy), an integer >= 0,
    or a Generator (used as is)."""
    if isinstance(value, np.random.Generator):
        return value
    if value is not None:
        integer(value, owner, attr, low=0)
    return np.random.default_rng(None if value is None else int(value))


def name_list(value, known, default, where, what=None):
    """The names ``value`` gives -- None (``default``), a comma-separated string or a
    list/tuple of strings, each one of ``known`` -- as a list without repeats (first
    kept); otherwise one ValidationError ``where: must be a comma-separated list of
    what (got ...)`` (``what``: default ``known`` listed)."""
    if value is None:
        value = default
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(m, str) and m in known for m in value):
        got = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else shown(value)
        raise ValidationError(f"{where}: must be a comma-separated list of "
                              f"{what or ', '.join(known)} (got {got[:80] or 'nothing'})")
    return list(dict.fromkeys(value))


def choice(value, owner, attr, options):
    """Check that ``value`` is one of ``options`` (strings)."""
    if not isinstance(value, str) or value not in options:
        fail(owner, attr, "must be one of " + ", ".join(repr(o) for o in options),
             shown(value))
    return value


DATA_LIMIT = 1e100


def as_array(value, owner, attr, rule):
    """``np.asarray(value)``; a value numpy cannot make one array of (ragged nested
    lists, objects whose conversion fails) is refused with ``rule`` (the caller's rule
    for the array, e.g. "must be integers in [0, 5) of shape (3,)")."""
    try:
        return np.asarray(value)
    except MemoryError:
        raise
    except Exception:
        fail(owner, attr, rule, shown(value))


def finite_array(value, owner, attr, *, ndim=None, shape=None, min_value=None,
                 max_abs=None):
    """Convert to a float64 array and check that it is finite (and optionally its shape,
    lower bound and magnitude). Complex values, text and Brian2 quantities with units
    are refused, not cast."""
    dimensionless(value, owner, attr)
    try:
        raw = np.asarray(value)
        kind = raw.dtype.kind
        arr = None if kind in "cUSVmM" else np.array(raw, dtype=np.float64)
    except MemoryError:     # not a conversion problem: say what it is
        raise
    except Exception:   # ragged lists, objects that are not numbers, huge integers
        fail(owner, attr, "must be convertible to an array of real numbers",
             f"{type(value).__name__}")
    if arr is None:
        fail(owner, attr, "must be real numbers (complex values are not accepted: the "
             "imaginary part would be dropped)" if kind == "c" else
             "must be plain numbers (a time or date would lose its unit: give seconds, "
             "or a Brian2 quantity where a time is expected)" if kind in "mM" else
             "must be convertible to an array of real numbers", f"{type(value).__name__}"
             + (f" of dtype {raw.dtype}" if kind in "cmM" else ""))
    if kind == "b" and raw.ndim == 0:      # True is not the number 1 (an array of
        fail(owner, attr, "must be a number, not a boolean", repr(value))   # bools is data)
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
