"""Engines: who integrates the phases of the learning process.

Every engine runs the same equations (:class:`~neuro_meta.kind.Dynamics`) and says,
for a phase, whether it can run it and if not why (``why_not`` -> None or a reason):

========  =====================================================================
name      what it is
========  =====================================================================
numpy     :mod:`.numpy_engine`: the numpy loop (and the ``solve_ivp`` reference);
          every model kind, presentation and integrator
fused     :mod:`.fused`: compiled numba kernels of the numpy loop for layered rate
          networks and the dual system (Euler and exponential Euler, no recording)
brian2    :mod:`.brian2_engine`: the network as Brian2 equations
========  =====================================================================

``Learner(engine="auto")`` (the default) takes the compiled kernels wherever they support
the phase (or the part of it: tasks re-run with more sub-steps) and the numpy loop
elsewhere; a named engine runs or raises :class:`~neuro_meta.errors.UnsupportedError`
with its reason. ``LearningResult.engine`` says which ran, ``Learner.describe`` which
would.
"""
import importlib

from ..errors import UnsupportedError
from . import numpy_engine

#: The engines, in the order ``"auto"`` tries them.
NAMES = ("fused", "numpy", "brian2")
_MODULES = {"numpy": ".numpy_engine", "fused": ".fused", "brian2": ".brian2_engine"}


def engine(name):
    """The module of engine ``name`` (imported on first use)."""
    from .. import _params as P

    return importlib.import_module(_MODULES[P.choice(name, "engines", "name", NAMES)],
                                   __name__)


def why_not(name, kind, spec, inp, record=(), substeps=None):
    """None if engine ``name`` can run this phase, else the reason it cannot."""
    return engine(name).why_not(kind, spec, inp, record, substeps)


def plan(requested, kind, spec, inp, record=()):
    """``(run_phase, accelerators)`` for a phase on the ``requested`` engine ("auto",
    "numpy", "fused" or "brian2"); a named engine that cannot run the phase raises
    :class:`UnsupportedError` naming the kind and the reason."""
    from .. import _params as P

    P.choice(requested, "engines.plan", "requested", ("auto",) + NAMES)
    if requested == "brian2":
        engine("brian2").check_supported(kind, spec, inp.presentation)   # raises, named
    if requested in ("fused", "brian2"):
        reason = why_not(requested, kind, spec, inp, record)
        if reason is not None:
            raise UnsupportedError(f"Learner.engine: the {requested} engine cannot run this "
                                   f"phase of a {kind.kind_name}: {reason} (got "
                                   f"{requested!r}; engine='auto' picks one that can)")
        if requested == "brian2":
            return engine("brian2").run_phase, ()
        return numpy_engine.run_phase, (engine("fused"),)
    if requested == "numpy":
        return numpy_engine.run_phase, ()
    fused = engine("fused")
    return numpy_engine.run_phase, ((fused,) if fused.AVAILABLE else ())


def describe(requested, kind, spec, inp, who="the learner"):
    """Text: for each engine, whether it can run this phase (and why not); which runs."""
    from .. import _params as P

    P.choice(requested, "engines.describe", "requested", ("auto",) + NAMES)
    lines = [f"{who} on a {kind.kind_name}:"]
    reasons = {}
    for name in NAMES:
        reasons[name] = why_not(name, kind, spec, inp)
        lines.append(f"  {name:<7} " + ("can run this phase" if reasons[name] is None
                                        else f"cannot: {reasons[name]}"))
    if requested == "auto":
        chosen = "fused" if reasons["fused"] is None else "numpy"
        how = ("engine='auto': the compiled kernels where they support the phase (tasks "
               "re-run with sub-steps may fall back to the numpy loop), else the numpy loop")
    else:
        chosen = requested if reasons[requested] is None else None
        how = f"engine={requested!r}"
    lines.append(f"runs on: {chosen or 'none -- ' + requested + ' raises UnsupportedError'}"
                 f" ({how})")
    return "\n".join(lines)
