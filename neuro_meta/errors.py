"""Exception hierarchy of neuro_meta.

Every exception raised on purpose by the package derives from :class:`NeuroMetaError`
*and* from the matching built-in exception, so callers may catch either::

    try:
        nm.ComplexSynapse(omega=0.0, lam=-0.5)
    except ValueError as err:          # or nm.ValidationError, or nm.NeuroMetaError
        print(err)                     # ComplexSynapse.lam: must be >= 0 (got -0.5)
"""


class NeuroMetaError(Exception):
    """Base class of every error raised by neuro_meta."""


class ValidationError(NeuroMetaError, ValueError):
    """A parameter, input array or option is invalid.

    Messages have the form ``Object.attribute: what is wrong (got value)``.
    """


class SimulationError(NeuroMetaError, RuntimeError):
    """A simulation failed while running, e.g. the state diverged.

    The message names the step and time at which it happened and gives a hint.
    """


class UnsupportedError(ValidationError):
    """An option is valid in general but not supported by the chosen engine."""
