"""Writing results: atomic files, so that nothing is ever half-written.

Every writer writes to a temporary file in the destination folder and renames it into
place (``os.replace`` is atomic on POSIX and Windows).
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _to_jsonable(obj, where="results"):
    """``obj`` as JSON values (numpy arrays and scalars as lists and numbers, paths as
    text); keys become strings -- two keys that would write the same string, a complex
    number, a Brian2 quantity or any other object are refused naming their place. NaN and
    ±inf have no JSON form (Python's ``NaN``/``Infinity`` are not JSON, and strict readers
    refuse the file): they are written as ``null``, like an undefined value."""
    from . import _params as P

    if isinstance(obj, dict):
        out, given = {}, {}
        for k, v in obj.items():
            key = str(k)
            if key in out:
                P.fail("write_json", where, "must not have two keys that are the same "
                       "text in JSON", f"keys {given[key]!r} and {k!r}")
            given[key] = k
            out[key] = _to_jsonable(v, f"{where}[{k!r}]")
        return out
    if P.is_quantity(obj):
        P.fail("write_json", where, "must be a plain number or array, not a Brian2 "
               "quantity (write its value in a stated unit)", P.shown(obj))
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist(), where)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    P.fail("write_json", where, "must be a dict, list, tuple, number, string, bool, None, "
           "path or numpy array (complex numbers and other objects have no JSON form)",
           f"{P.shown(obj)} of type {type(obj).__name__}")


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path, obj):
    """Write ``obj`` (numpy arrays and scalars allowed) as indented, strict JSON,
    atomically (NaN and ±inf as ``null``: :func:`_to_jsonable`)."""
    from . import _params as P

    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        P.fail("write_json", "path", "must be a file path (str or os.PathLike)",
               P.shown(path))
    if os.path.isdir(path):
        P.fail("write_json", "path", "must be a file path, not a folder", str(path))
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def software():
    """What produced a result: the versions of neuro_meta, Python and the numerical
    packages (``numba``: None when it is not installed, i.e. the numpy engines ran)."""
    import platform
    from importlib import metadata

    def version(dist):      # from the installed distributions' metadata
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"neuro_meta": version("neuro_meta"), "python": platform.python_version(),
            **{d: version(d) for d in ("numpy", "scipy", "brian2", "numba")}}


def write_results(path, results):
    """Write an experiment's ``results.json`` (:func:`write_json`), with ``software``
    (:func:`software`) added to ``results`` first, so that the returned results and the
    file agree."""
    if not isinstance(results, dict):
        from . import _params as P

        P.fail("write_results", "results", "must be a dict (the experiment's results)",
               type(results).__name__)
    results["software"] = software()
    return write_json(path, results)


def save_figure(fig, path, dpi=130):
    """Save a matplotlib figure atomically (format from the file ending)."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def step_cap_notes(methods, budget_s=None):
    """Lines for a results table: every method of a wall-time-budgeted comparison that
    its meta-step cap stopped before the budget ran out (``stop_reason == "steps"``)
    -- that method had less meta-training than the others, so the comparison is not at
    equal budgets for it. ``methods``: name -> summary with ``stop_reason``,
    ``meta_steps`` and (optionally) its own ``budget_s`` (else ``budget_s``). The key
    to raise is ``meta.steps`` for the CML methods (``cml*``), ``baselines.steps`` for
    the others."""
    import math

    out = []
    for name, r in methods.items():
        if not isinstance(r, dict) or r.get("stop_reason") != "steps" \
                or not r.get("meta_steps"):
            continue
        b = r.get("budget_s", budget_s)
        try:
            b = None if b is None or isinstance(b, bool) else float(b)
        except (TypeError, ValueError, OverflowError):
            b = None
        if b is None or not math.isfinite(b):
            continue
        key = "meta.steps" if str(name).startswith("cml") else "baselines.steps"
        out.append(f"note: {name} stopped at its step cap ({r['meta_steps']} meta-steps) "
                   f"before the {b:g}-s budget ran out: it had less meta-training than "
                   f"the others; raise {key} for an equal budget")
    return out


#: How far (a share of the horizon) the meta-steps a run made may lie from the horizon
#: its schedule over the budget measured before :func:`schedule_notes` says so.
SCHEDULE_SLACK = 0.1


def schedule_notes(methods):
    """Lines for a results table: every method whose learning rate decayed over its
    wall-time budget (``schedule_steps``, the horizon last fitted: first at 5 % of the
    budget, then every 5 %) and that made more than :data:`SCHEDULE_SLACK` more or
    fewer meta-steps than that horizon in its budget -- its meta-step rate changed after
    the last fit, or a resume gave it another budget, so its decay did not end with its
    budget. A method its step cap stopped is left to :func:`step_cap_notes`."""
    out = []
    for name, r in methods.items():
        if not isinstance(r, dict) or r.get("stop_reason") != "budget":
            continue
        n, m = r.get("schedule_steps"), r.get("meta_steps")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                   for x in (n, m)) or abs(m - n) <= SCHEDULE_SLACK * n:
            continue
        how = ("its step was still above the cosine's end when the budget ran out"
               if m < n else f"it made its last {m - n} meta-steps at the cosine's end")
        out.append(f"note: {name}'s learning-rate cosine was fitted to {n} meta-steps "
                   f"(its rate, last measured) but it made {m}: {how} "
                   "(its meta-step rate changed during the run -- e.g. another process "
                   "started or stopped -- or a --resume changed its budget)")
    return out


def budget_notes(methods, budget_s=None):
    """:func:`step_cap_notes` and :func:`schedule_notes` of a results table."""
    return step_cap_notes(methods, budget_s) + schedule_notes(methods)


def reads_results(owner, what, arg=0, name="results"):
    """Decorator of a public function that reads a results dict (its positional argument
    ``arg``, called ``name``) -- a table or a plot of what an experiment returned or its
    JSON file holds: a value that is not a mapping is one
    :class:`~neuro_meta.errors.ValidationError` ``owner.name: must be what (...)``; so
    is a missing key or a value of another type than the function reads (a hand-edited
    file, or one of an older neuro_meta) -- a ``LookupError``, ``TypeError``,
    ``AttributeError``, ``ValueError`` or ``StopIteration`` raised by the reading code
    of :mod:`neuro_meta.experiments` itself, kept as the error's cause. Errors raised
    elsewhere (matplotlib refusing a file name, numpy, the figure writer) pass through
    unchanged."""
    import functools
    from collections.abc import Mapping

    from .errors import NeuroMetaError, ValidationError

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            value = args[arg] if len(args) > arg else kwargs.get(name)
            if not isinstance(value, Mapping):
                raise ValidationError(f"{owner}.{name}: must be {what} (a mapping, as the "
                                      f"experiment returns it or its JSON file holds it) "
                                      f"(got {type(value).__name__})")
            try:
                return fn(*args, **kwargs)
            except NeuroMetaError:
                raise
            except (LookupError, TypeError, AttributeError, ValueError, StopIteration) as err:
                if not _raised_in(err, _EXPERIMENTS):
                    raise
                why = (f"it lacks the key {err.args[0]!r}" if isinstance(err, KeyError)
                       and err.args else f"{type(err).__name__}: {err}")
                raise ValidationError(f"{owner}.{name}: must be {what} ({why}; pass what "
                                      "the experiment returned or its JSON file holds)") \
                    from err
        return wrapper
    return deco


#: The folder of the experiments' code (:func:`reads_results`).
_EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


def _raised_in(err, folder):
    """Whether the innermost frame of ``err``'s traceback is code in ``folder``."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    return Path(tb.tb_frame.f_code.co_filename).resolve().parent == folder
