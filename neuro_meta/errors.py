"""Exception hierarchy of neuro_meta.

Every exception raised on purpose by the package derives from :class:`NeuroMetaError`
*and* from the matching built-in exception, so callers may catch either::

    try:
        nm.ComplexSynapse(omega=0.0, lam=-0.5)
    except ValueError as err:          # or nm.ValidationError, or nm.NeuroMetaError
        print(err)                     # ComplexSynapse.lam: must be >= 0 (got -0.5)

Warnings point at the user's line: :func:`user_stacklevel` is the ``stacklevel`` of the
first frame outside the package, whichever public entry point the warning came through.
"""
import functools
import inspect
import os

#: The package's directory: frames of files inside it are the library's, not the user's.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def in_package(filename):
    """Whether ``filename`` (a frame's or a warning's) is a file of the package (never
    ``<string>``, ``<stdin>`` and the like: code given to the interpreter is the user's)."""
    return not filename.startswith("<") and \
        os.path.abspath(filename).startswith(PACKAGE_DIR)


@functools.lru_cache(maxsize=None)
def _stdlib_dir():                  # (177 us a call uncached: once, not per warning)
    import sysconfig

    return os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep


def user_stacklevel():
    """The ``stacklevel`` for ``warnings.warn`` called by the caller of this function
    that names the first frame outside the package (the user's line, whichever public
    entry point and internal calls led there). Where that frame is the standard
    library's -- a worker of a process or thread pool, ``runpy`` -- there is no user's
    line: 1, the line of the package that warns."""
    frame, level = inspect.currentframe().f_back, 1   # level 1: the function calling warn
    while frame.f_back is not None and in_package(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    name = frame.f_code.co_filename
    foreign = name.startswith("<frozen") or (
        not name.startswith("<") and os.path.abspath(name).startswith(_stdlib_dir()))
    return 1 if foreign and not in_package(name) else level


class NeuroMetaError(Exception):
    """Base class of every error raised by neuro_meta."""


class ValidationError(NeuroMetaError, ValueError):
    """A parameter, input array or option is invalid.

    Messages have the form ``Object.attribute: what is wrong (got value)``.
    """


class SimulationError(NeuroMetaError, RuntimeError):
    """A simulation failed while running, e.g. the state diverged.

    The message names the step and time at which it happened and gives a hint. A
    diverged simulation also carries them as attributes (None otherwise): ``step``,
    ``t`` (s), ``variable`` (e.g. ``"phi[0]"``) and ``value``, the full-precision max
    ``|variable|`` that the message shows to 4 significant digits.
    """

    step = t = variable = value = None

    def __init__(self, message, *, step=None, t=None, variable=None, value=None):
        super().__init__(message)
        self.step, self.t, self.variable, self.value = step, t, variable, value


class UnsupportedError(ValidationError):
    """An option is valid in general but not supported by the chosen engine."""
