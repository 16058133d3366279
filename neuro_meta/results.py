"""Results of a learning phase: read-only arrays with a time axis."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


def readonly(a):
    """A read-only float64 copy of ``a``."""
    a = np.array(a, dtype=np.float64) if not isinstance(a, np.ndarray) or a.dtype != bool \
        else np.array(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class LearningResult:
    """The outcome of one phase of the learning process.

    Attributes
    ----------
    phi : list of arrays
        Final fast weights per connection, ``([tasks,] n_post, n_pre)``.
    bias : list of arrays or None
        Final fast biases per connection, ``([tasks,] n_post)`` (``None`` without biases).
    v : list of arrays
        Final membrane potentials per non-input layer, ``([tasks,] samples, n)``.
    t : array
        Times (s) of the recorded samples.
    record : dict
        Recorded variables, each with a leading time axis: ``"phi"`` and ``"bias"``
        (lists per connection, ``(time, [tasks,] n_post, n_pre)``), ``"v"`` and ``"r"``
        (lists per layer, ``(time, [tasks,] samples, n)``), ``"loss"``
        (``(time, [tasks])``: the training loss at the current fast weights).
    settled : bool or array of bool
        Whether each task's phase met the tolerance (always False for fixed durations).
    t_end : float
        Simulated time (s).
    steps : int
        Number of integration steps (of ``dt``).
    substeps : int or array of int or None
        Sub-steps per step of each task (see ``Learner(substeps=...)``; with ``"auto"``,
        after any rerun); ``None`` for engines without sub-steps.
    engine : str
        The engine(s) that integrated the phase: ``"fused"`` (compiled kernels),
        ``"numpy"`` (the numpy loop), ``"scipy"`` (``solve_ivp``), ``"brian2"``; joined
        by ``+`` when parts of the phase ran on different ones (e.g. tasks re-run with
        more sub-steps); ``"solver"`` when the phase was settled by solving
        (``Learner(settle="solve")``), ``"solver+fused"`` etc. when tasks the solver
        did not settle were integrated from where it stopped.
    solver : dict or None
        With ``settle="solve"``: per task (arrays, or ints for one task) the solver's
        accepted pseudo-time ``"steps"`` and Hessian-vector products ``"hvps"``; then
        ``t_end`` is the pseudo-time reached (s) and ``steps`` the most steps of a task.
    """

    phi: List[np.ndarray]
    bias: List[Optional[np.ndarray]]
    v: List[np.ndarray]
    t: np.ndarray
    record: Dict[str, object]
    settled: object
    t_end: float
    steps: int
    phi_aug: List[np.ndarray] = field(repr=False, default=None)
    substeps: object = None
    engine: str = ""
    solver: Optional[Dict[str, object]] = None

    def __repr__(self):
        shapes = [p.shape for p in self.phi]
        # a solved phase's t_end is the solver's pseudo-time, not a simulated time
        when = (f"t_end={self.t_end:.4g} s" if self.solver is None else
                f"t_end={self.t_end:.4g} s of the solver's pseudo-time")
        return (f"LearningResult(phi shapes={shapes}, {when}, "
                f"steps={self.steps}, settled={self.settled}, engine={self.engine!r}, "
                f"recorded={sorted(self.record)})")
