"""Progress bars of long work: tqdm, quieter when they are written to a log file."""

import os
import sys

#: s between a progress bar's updates when its stream is not a terminal (a log file).
LOG_INTERVAL = 30.0

_BAR_HOOKS = []


def add_bar_hook(callback):
    """Call ``callback()`` whenever a progress bar is made, shown or not (``disable``):
    long work is starting. The command line shows then the warnings it held while a
    command's settings were read."""
    _BAR_HOOKS.append(callback)


def remove_bar_hook(callback):
    """Undo :func:`add_bar_hook` (no error if ``callback`` is not there)."""
    if callback in _BAR_HOOKS:
        _BAR_HOOKS.remove(callback)


def bar(*args, **kwargs):
    """A ``tqdm.auto.tqdm`` bar. Written to a stream that is not a terminal (standard
    error redirected to a log file, e.g. under ``nohup`` or a batch system) it updates
    every :data:`LOG_INTERVAL` s instead of ten times a second -- ``set_postfix`` then
    waits for the next update instead of redrawing the bar -- unless the call or the
    user (``TQDM_MININTERVAL``, seconds) gives the interval; on a terminal and in
    Jupyter it is tqdm's own bar (a widget if ipywidgets is installed; without it tqdm's
    text bar, with no warning that the widget is missing)."""
    for callback in list(_BAR_HOOKS):
        callback()
    tqdm = _tqdm()
    if "mininterval" not in kwargs:
        given = _env_interval()
        if given is not None:           # (read here: tqdm < 4.66 does not read it)
            kwargs["mininterval"] = given
        elif not _interactive(kwargs.get("file") or sys.stderr):
            kwargs["mininterval"] = LOG_INTERVAL
            return _quiet(tqdm)(*args, **kwargs)
    return tqdm(*args, **kwargs)


def _env_interval():
    text = os.environ.get("TQDM_MININTERVAL")
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def _interactive(stream):
    """A terminal, or a Jupyter kernel's output (no terminal, but read as it is drawn)."""
    if _in_jupyter():
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):       # a closed or detached stream
        return False


_QUIET = {}


def _quiet(cls):
    """``cls`` whose ``set_postfix``/``set_postfix_str`` do not redraw the bar by default
    (tqdm's redraw at once, whatever the interval: in a log file a bar whose postfix is
    set at every step would write at every step)."""
    if cls not in _QUIET:
        class Quiet(cls):
            def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
                return super().set_postfix(ordered_dict, refresh, **kwargs)

            def set_postfix_str(self, s="", refresh=False):
                return super().set_postfix_str(s, refresh)

        Quiet.__name__ = Quiet.__qualname__ = f"Quiet{cls.__name__}"
        _QUIET[cls] = Quiet
    return _QUIET[cls]


def _tqdm():
    """tqdm's class for where the bar runs: ``tqdm.auto``'s, except in a Jupyter kernel
    without ipywidgets, where ``tqdm.auto`` warns that it falls back to the text bar."""
    if _in_jupyter():
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            from tqdm.std import tqdm
            return tqdm
    from tqdm.auto import tqdm
    return tqdm


def _in_jupyter():
    """Whether this runs in a Jupyter kernel (as ``tqdm.autonotebook`` tells: an IPython
    shell run by an ``IPKernelApp``; a module that merely imported ipykernel is not)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:               # an IPython without a shell or a config
        return False
