"""Progress bars of long work: tqdm, quieter when they are written to a log file."""

import os
import sys

#: s between a progress bar's updates when its stream is not a terminal (a log file).
LOG_INTERVAL = 30.0


def bar(*args, **kwargs):
    """A ``tqdm.auto.tqdm`` bar. Written to a stream that is not a terminal (standard
    error redirected to a log file, e.g. under ``nohup`` or a batch system) it updates
    every :data:`LOG_INTERVAL` s instead of ten times a second, unless the call or the
    user (``TQDM_MININTERVAL``) gives the interval; on a terminal and in Jupyter it is
    tqdm's own bar (a widget if ipywidgets is installed; without it tqdm's text bar, with no
    warning that the widget is missing)."""
    tqdm = _tqdm()
    if "mininterval" not in kwargs and "TQDM_MININTERVAL" not in os.environ:
        stream = kwargs.get("file") or sys.stderr
        isatty = getattr(stream, "isatty", None)
        try:
            terminal = bool(isatty()) if isatty is not None else False
        except (OSError, ValueError):       # a closed or detached stream
            terminal = False
        if not terminal and "ipykernel" not in sys.modules:     # (Jupyter: as tqdm's)
            kwargs["mininterval"] = LOG_INTERVAL
    return tqdm(*args, **kwargs)


def _tqdm():
    """tqdm's class for where the bar runs: ``tqdm.auto``'s, except in a Jupyter kernel
    without ipywidgets, where ``tqdm.auto`` warns that it falls back to the text bar."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            from tqdm.std import tqdm
            return tqdm
    from tqdm.auto import tqdm
    return tqdm
