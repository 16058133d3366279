"""The learning process (inner loop): how a network learns one task in continuous time.

For a network with fast weights φ (complex synapses), neurons v and rates r = f(v)::

    τ_v dv/dt = −v + W r_pre + b
    τ_φ dφ/dt = −∂L_trn/∂φ − λ (φ − ω) − β ∂L_out/∂φ

with ``L_trn = 1/(2K) Σ_k ‖ŷ_k − y_k‖²`` over the K training shots and L_out the same
loss on validation points (only in the nudged phase of CML, β ≠ 0). The gradient is
computed from the neurons' current states: at the output layer the *delta rule*
(postsynaptic error × f′(v) × presynaptic rate, local to the synapse); in deeper
networks ``backprop`` sends the error down through the current weights. At the joint
fixed point the fast weights minimise ``F = L_trn + Σ λ/2 (φ − ω)² + β L_out``.
"""
import warnings

import numpy as np

from . import _params as P
from . import engines
from .engines import phase
from .engines.phase import MAX_PHASE_STEPS, MAX_SCIPY_EVALUATIONS, MAX_SUBSTEPS, PhaseSpec
from .errors import UnsupportedError, user_stacklevel
from .kind import check_kind, trial_states
from .results import LearningResult, readonly

RULES = ("delta", "backprop")
PRESENTATIONS = ("batch", "online")
INTEGRATORS = ("euler", "expeuler", "rk4", "scipy")
ENGINES = ("auto",) + engines.NAMES
SETTLE = ("integrate", "solve")
RECORDABLE = ("phi", "bias", "v", "r", "loss")


def _readonly_ints(a):
    a = np.array(a, dtype=np.int64)
    a.setflags(write=False)
    return a


class NotSettledWarning(UserWarning):
    """A phase with a tolerance reached its maximal duration before settling."""


def warn_not_settled(learner, net, settled, t_end, solver_steps=None):
    """Warn (:class:`NotSettledWarning`), at the user's line, if a phase with a tolerance
    left tasks unsettled.

    ``t_end``: the time the phase was integrated (s). ``solver_steps`` (per task), when
    the phase solver ran first: its pseudo-time means nothing to a user (implicit steps
    of up to ``1e8 tau``), so the message gives the solver's steps and the integration
    that followed them for the phase's bound (every task the solver does not settle is
    integrated from where it stopped)."""
    if learner.tol is None or settled.all():
        return
    bound, t_max = learner._phase_length(net)   # the attribute that ended the phase
    if solver_steps is None:
        where = f" within {t_end:g} s"
    else:
        n = int(np.max(np.asarray(solver_steps)[~settled]))
        default = " (default 1000 tau)" if (bound == "max_duration"
                                            and learner.max_duration is None) else ""
        where = (f": not in {n} step(s) of the phase solver, nor in the {bound} = "
                 f"{t_max:g} s{default} integrated after them")
    warnings.warn(f"Learner.run: {int((~settled).sum())} of {settled.size} task(s) did not "
                  f"settle to tol={learner.tol:g}{where}; increase {bound} "
                  "or tol -- or reduce dt: beyond its stable step an explicit integrator "
                  "oscillates around the fixed point instead of settling"
                  + ("" if getattr(learner, "substeps", 1) == "auto"
                     or getattr(learner, "presentation", "batch") != "batch" else
                     " (substeps='auto' picks each task's step from its stiffness)")
                  + ("" if solver_steps is None else
                     "; a task that never settles may have no minimum (lam = 0 and a "
                     "loss without one)"),
                  NotSettledWarning, stacklevel=user_stacklevel())


class Learner:
    """How a network learns a task: learning signal, presentation, integration.

    Parameters
    ----------
    rule : {"delta", "backprop"}
        Learning signal. ``"delta"``: only the last connection is plastic and learns from
        the local postsynaptic error (the network's other connections must be static).
        ``"backprop"``: every plastic connection follows the exact gradient of the loss,
        sent down through the current weights.
    presentation : {"batch", "online"}
        ``"batch"``: all shots at once (one copy of the neurons per shot, sharing the
        synapses: exact gradient flow). ``"online"``: shots in sequence, each for
        ``presentation_time``, cycling.
    integrator : {"rk4", "euler", "expeuler", "scipy"}
        Fixed-step RK4, forward Euler or exponential Euler (Euler-type steps advance the
        neurons first and the synapses second, like Brian2's schedule), or
        ``scipy.integrate.solve_ivp`` as a reference (``scipy_method``, ``scipy_rtol``,
        ``scipy_atol``; fixed durations only; at most :data:`MAX_SCIPY_EVALUATIONS`
        right-hand-side evaluations per phase, beyond which it stops with a
        :class:`~neuro_meta.errors.SimulationError`).
    dt : float or Brian2 quantity, optional
        Time step (s). Default: chosen from the stiffness of the system (see
        :meth:`dt_for`). The automatic step depends on the data of the batch of tasks
        being run: pass ``dt`` explicitly when results must not depend on how tasks are
        batched (the experiments in ``models/`` do).
    duration : float or Brian2 quantity, optional
        Length of a phase (s). With ``tol`` as well, the phase stops at whichever comes
        first.
    tol : float, optional
        The phase ends when settled: ``max |τ_φ dφ/dt| < tol`` (the inner objective's
        gradient) and ``max |τ_v dv/dt| < tol``, for every task. For online presentation
        the drift of φ over one presentation cycle is used instead. Default when neither
        ``duration`` nor ``tol`` is given: ``tol = 1e-8``.
    max_duration : float, optional
        Upper bound of a settling phase (default ``1000 τ_φ``); a phase that reaches it
        emits :class:`NotSettledWarning`.

        A phase integrated in time takes at most :data:`MAX_PHASE_STEPS` (``10**8``)
        steps (time steps × sub-steps): ``duration`` (or ``max_duration``) over ``dt`` --
        the automatic ``dt`` included -- beyond it is refused before the phase starts,
        with the estimate and a hint (a larger ``dt``, a shorter ``duration`` /
        ``max_duration``, or ``settle="solve"``, which does not step in time). ``dt``
        may not exceed ``duration`` (a phase takes whole steps).
    presentation_time : float, optional
        Online presentation: time each sample is shown (default ``τ_φ/100``); must be a
        multiple of ``dt``. Only used with ``presentation="online"``: refused with
        ``"batch"``.
    engine : {"auto", "numpy", "fused", "brian2"}
        Who integrates the phases (see :mod:`neuro_meta.engines`): ``"auto"`` (default)
        the compiled kernels (``"fused"``, numba) where they support the phase, else the
        numpy loop; ``"numpy"`` the numpy loop only; ``"fused"`` the compiled kernels
        (an :class:`~neuro_meta.errors.UnsupportedError` says why not when they cannot);
        ``"brian2"`` Brian2 itself (see the Brian2 engine's docs). The result's
        ``engine`` says which ran; :meth:`describe` says which would, and why.
    substeps : int or "auto"
        Each step of ``dt`` is taken as this many equal sub-steps (default 1). ``"auto"``
        chooses the count per task at the start of each phase from the stiffness of that
        task's learning process (a power iteration on its synaptic Jacobian; see "Sub-steps"
        in the user guide's concepts), so that the step stays inside
        the integrator's stability region however steep the task's loss is. ``dt`` then
        keeps the time grid (recording, settling tests, durations) and is the largest
        step taken. Needs a fixed-step integrator (not the brian2 engine). At most
        :data:`MAX_SUBSTEPS` (``10**4``).
    max_substeps : int
        Upper bound of the automatic count (default 64; at most :data:`MAX_SUBSTEPS`).
    settle : {"integrate", "solve"}
        How a phase with a tolerance reaches its fixed point. ``"integrate"`` (default):
        steps of the integrator until settled. ``"solve"``: the fixed point of the same
        learning process found by implicit steps of growing length with Newton--Krylov
        solves (:mod:`neuro_meta.engines.solver`) -- the same state to the tolerance, at
        a cost that does not grow with the stiffness of the process. Phases without a
        fixed point (fixed durations, online presentation) and recorded trajectories
        are integrated; ``LearningResult.engine`` reads ``"solver"`` when solved.
    """

    def __init__(self, rule="delta", presentation="batch", integrator="rk4", dt=None,
                 duration=None, tol=None, max_duration=None, presentation_time=None,
                 engine="auto", scipy_method="LSODA", scipy_rtol=1e-10, scipy_atol=1e-12,
                 brian2_target="numpy", substeps=1, max_substeps=64, settle="integrate"):
        O = "Learner"
        self.rule = P.choice(rule, O, "rule", RULES)
        self.presentation = P.choice(presentation, O, "presentation", PRESENTATIONS)
        self.integrator = P.choice(integrator, O, "integrator", INTEGRATORS)
        self.engine = P.choice(engine, O, "engine", ENGINES)
        self.dt = P.to_seconds(dt, O, "dt", allow_none=True)
        self.duration = P.to_seconds(duration, O, "duration", allow_none=True)
        self.tol = P.real(tol, O, "tol", low=0.0, low_open=True, allow_none=True)
        if self.duration is None and self.tol is None:
            self.tol = 1e-8
        self.max_duration = P.to_seconds(max_duration, O, "max_duration", allow_none=True)
        self.presentation_time = P.to_seconds(presentation_time, O, "presentation_time",
                                              allow_none=True)
        if self.presentation_time is not None and self.presentation != "online":
            P.fail(O, "presentation_time", "is only used with presentation='online' (with "
                   f"presentation={self.presentation!r} every shot is shown at once): "
                   "leave it None or present the shots online", repr(self.presentation_time))
        self.scipy_method = P.choice(scipy_method, O, "scipy_method",
                                     ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"))
        self.scipy_rtol = P.real(scipy_rtol, O, "scipy_rtol", low=0.0, low_open=True)
        self.scipy_atol = P.real(scipy_atol, O, "scipy_atol", low=0.0, low_open=True)
        self.brian2_target = P.choice(brian2_target, O, "brian2_target", ("numpy", "cython"))
        if self.integrator == "scipy" and self.duration is None:
            P.fail(O, "duration", "is required with integrator='scipy' (solve_ivp integrates "
                   "a fixed interval)", "None")
        if self.dt is not None:
            for name in ("duration", "max_duration"):
                t = getattr(self, name)
                if name == "max_duration" and self.tol is None:
                    continue    # a fixed-duration phase ignores max_duration
                if t is not None and self.dt > t * (1 + 1e-9):
                    P.fail(O, "dt", f"must be <= {name} ({t:g} s): a phase takes whole "
                           "steps of dt", repr(self.dt))
        if isinstance(substeps, str):
            self.substeps = P.choice(substeps, O, "substeps", ("auto",))
        else:
            self.substeps = P.integer(substeps, O, "substeps", low=1, high=MAX_SUBSTEPS)
        self.max_substeps = P.integer(max_substeps, O, "max_substeps", low=1,
                                      high=MAX_SUBSTEPS)
        self.settle = P.choice(settle, O, "settle", SETTLE)
        if self.settle == "solve" and self.engine == "brian2":
            P.fail(O, "settle", "must be 'integrate' with engine='brian2' (Brian2 "
                   "integrates in time; the solver runs in numpy)", repr(self.settle))
        if self.substeps != 1 and self.integrator == "scipy":
            P.fail(O, "substeps", "must be 1 with integrator='scipy' (solve_ivp chooses its "
                   "own steps)", repr(self.substeps))
        if self.substeps == "auto" and self.presentation != "batch":
            P.fail(O, "substeps", "'auto' needs presentation='batch' (its stiffness estimate "
                   "is the batch objective's); give a count", repr(self.substeps))
        if self.substeps != 1 and self.engine == "brian2":
            P.fail(O, "substeps", "must be 1 with engine='brian2' (Brian2 advances every "
                   "synapse on one clock: choose a smaller dt)", repr(self.substeps))

    def __repr__(self):
        return (f"Learner(rule={self.rule!r}, presentation={self.presentation!r}, "
                f"integrator={self.integrator!r}, dt={self.dt}, duration={self.duration}, "
                f"tol={self.tol}, engine={self.engine!r}"
                + (f", presentation_time={self.presentation_time}"
                   if self.presentation_time is not None else "")
                + (f", substeps={self.substeps!r}" if self.substeps != 1 else "")
                + (f", settle={self.settle!r}" if self.settle != "integrate" else "") + ")")

    # ------------------------------------------------------------------ timing
    def dt_for(self, net, inp=None):
        """The time step (s): ``dt`` if given, else chosen from the system's stiffness.

        The automatic step keeps every mode well inside the integrator's stability
        region: ``dt = s · τ_φ / (λ_max + h_max)`` with ``h_max`` the model kind's bound
        of its data curvature (:meth:`~neuro_meta.kind.ModelKind.curvature`; for a
        :class:`~neuro_meta.RateNetwork` the output layer's mean squared presynaptic
        rate, summed over the presented samples' weights) and ``s = 1`` for RK4, ``0.5``
        for (exponential) Euler; never above ``τ_φ/20``; and ``dt ≤ τ_v/10`` for dynamic
        neurons. Exponential Euler integrates the neurons' leak and the consolidation
        term exactly, so neither τ_v nor λ limits its step: it is the efficient choice
        for phases that run until settled, whose fixed points every integrator
        reproduces exactly (CML's default). Online presentation rounds the step down to
        divide the presentation time.
        """
        net = self._checked(net, "Learner.dt_for")
        if inp is not None and not isinstance(inp, phase.PhaseInput):
            P.fail("Learner.dt_for", "inp", "must be None or a phase's input (from "
                   "Learner.phase_input)", P.shown(inp))
        return self._dt_for(net, inp)

    def _dt_for(self, net, inp):
        """:meth:`dt_for` without its checks (the learner's own calls)."""
        if self.dt is not None:
            return self.dt
        return phase.auto_dt(net, self.integrator, inp, self.presentation_time)

    def _checked(self, net, owner):
        net = check_kind(net, owner)
        net.check_rule(self.rule)
        return net

    def _phase_length(self, net):
        """(the attribute bounding a phase, its length in s)."""
        if self.tol is None:
            return "duration", self.duration
        attr, t_max = "max_duration", (self.max_duration if self.max_duration is not None
                                       else 1000 * net.tau_fast)
        if self.duration is not None and self.duration <= t_max:
            attr, t_max = "duration", self.duration
        return attr, t_max

    def _solvable(self, inp, record=()):
        """Whether a phase may be settled by the phase solver (which does not step in
        time: it is not bound by :data:`MAX_PHASE_STEPS`)."""
        from .engines import solver

        return self.settle == "solve" and solver.reason(
            self.tol, self.integrator, inp.presentation, record) is None

    def _check_steps(self, net, inp, dt, record=()):
        """The steps of a phase, refused beyond :data:`MAX_PHASE_STEPS` (time steps ×
        sub-steps) unless the phase solver settles it, and when shorter than one step."""
        attr, t = self._phase_length(net)
        est = t / dt if dt > 0 else np.inf
        auto = "" if self.dt is not None else (
            f", the automatic step from the stiffness of the {net.kind_name}")
        if est < 1 - 1e-9:
            P.fail("Learner", attr, f"is shorter than one time step (dt = {dt:g} s{auto}): "
                   f"a phase takes whole steps; give dt <= {attr}", repr(t))
        per_step = self.substeps if isinstance(self.substeps, int) else 1
        if not est * per_step <= MAX_PHASE_STEPS and not self._solvable(inp, record):
            default = " (default 1000 tau)" if (attr == "max_duration"
                                                and self.max_duration is None) else ""
            sub = f" x {per_step} sub-steps" if per_step > 1 else ""
            hint = (("a larger dt" + (", fewer substeps" if per_step > 1 else "")
                     + f" or a shorter {attr}") if self.tol is None
                    else f"a larger dt or tol, a shorter {attr}, or settle='solve' (finds "
                    "the fixed point without stepping in time)")
            if self.dt is None:
                hint += (f"; the automatic dt is small because the {net.kind_name} is stiff "
                         f"({net.tau_fast_name}, tau_neuron, lam or the scale of the data): "
                         "give dt or rescale the data")
            P.fail("Learner", attr, f"{t:g} s{default} needs {est:.3g} steps of dt = {dt:.3g} "
                   f"s{auto}{sub}, more than the maximum of {MAX_PHASE_STEPS:.0e} steps per "
                   f"phase (neuro_meta.learning.MAX_PHASE_STEPS); use {hint}", repr(t))
        return max(1, int(round(min(est, 1e18))))

    def steps_for(self, net, inp):
        """(maximal number of steps, tolerance) of a phase; a phase that would take more
        than :data:`MAX_PHASE_STEPS` steps is refused (:class:`ValidationError`) unless
        the phase solver settles it (``settle="solve"``)."""
        dt = self._dt_for(net, inp)
        return self._check_steps(net, inp, dt), self.tol

    def presentation_steps(self, net):
        """Steps per presented sample (online), or None with the automatic step."""
        if self.dt is None:
            return None   # chosen together with the automatic time step
        return phase.presentation_steps(net, self.dt, self.presentation_time)

    def check_every(self, inp):
        """How often (steps) settling is tested: once per presentation cycle online."""
        if inp.presentation == "online":
            return inp.steps_per_sample * inp.n_samples
        return 10

    # ------------------------------------------------------------------ validation
    def _record_names(self, net, record, record_every):
        O = "Learner.run"
        if record is None:
            record = ()
        if isinstance(record, str):
            record = (record,)
        if not isinstance(record, (list, tuple, set)):
            P.fail(O, "record", "must be a name or a list of names of "
                   f"{', '.join(net.probeable)} (what a {net.kind_name} records)",
                   P.shown(record))
        for r in record:
            P.choice(r, O, "record", RECORDABLE)
            if r not in net.probeable:
                raise UnsupportedError(
                    f"Learner.run.record: a {net.kind_name} records "
                    f"{', '.join(map(repr, net.probeable))} (got {r!r})")
        return tuple(record), P.integer(record_every, O, "record_every", low=1)

    def check(self, net):
        """Raise :class:`~neuro_meta.errors.UnsupportedError` (or ValidationError) if
        ``net`` cannot learn with these options, naming the kind and the option."""
        return self._checked(net, "Learner.run")

    # ------------------------------------------------------------------ running
    def run(self, net, x, y, record=(), record_every=1, x_val=None, y_val=None, beta=0.0,
            phi_init=None):
        """Let ``net`` learn the task(s) ``(x, y)``; returns a :class:`LearningResult`.

        Parameters
        ----------
        net : RateNetwork, DualSystem or another model kind
            (a :class:`~neuro_meta.dual.DualSystem` learns its fast gains, biases and
            readout; ``phi`` of the result then lists them in ``net.fast_names`` order)
        x, y : arrays ``(shots, n_in)``, ``(shots, n_out)`` or with a leading task axis
            ``(tasks, shots, ...)``; tasks are simulated together, vectorised.
        record : sequence of str
            Variables to record (``net.probeable``): ``"phi"``, ``"bias"``, ``"v"``,
            ``"r"``, ``"loss"``.
        record_every : int
            Record every n-th step (decimation).
        x_val, y_val, beta : optional
            Nudging: add ``beta * L_out`` on the validation set (the nudged phase of CML).
        phi_init : list of arrays, optional
            Initial fast variables per fast array (default: the model's φ₀; augmented
            weights per connection for a RateNetwork).
        """
        net = self.check(net)
        record, record_every = self._record_names(net, record, record_every)
        inp, batched, K = self.phase_input(net, x, y, x_val, y_val, beta)
        phi0 = self.initial_state(net, phi_init, inp.X.shape[0])
        spec = self._phase_spec(net, inp, beta)
        X_trn, Y_trn = inp.X[:, :K], inp.Y[:, :K]

        def loss_fn(phi):
            return net.loss_value(X_trn, Y_trn, phi)

        rec_names = [n for n in ("phi", "v", "loss") if n in record
                     or (n == "phi" and "bias" in record) or (n == "v" and "r" in record)]
        if rec_names:   # a recorded phase is integrated, never solved
            self._check_steps(net, inp, spec.dt, rec_names)
        run_phase, accelerators = engines.plan(self.engine, net, spec, inp, rec_names)
        with trial_states():    # the engine evaluates trial states (RK stages, solver
            #                     steps, recorded losses) through the kind, non-finite
            #                     ones included, and reports a diverging one itself
            phi, v, rec, settled, t_end, steps = run_phase(
                net, inp, phi0, spec, rec_names, record_every, loss_fn, accelerators)
        warn_not_settled(self, net, settled, t_end,
                         None if getattr(rec, "solver", None) is None
                         else rec.solver["steps"])
        return self._result(net, phi, v, rec, settled, t_end, steps, record, batched)

    def phase_spec(self, net, inp, beta=0.0):
        """The :class:`~neuro_meta.engines.phase.PhaseSpec` of a phase of ``net`` on
        ``inp`` (what the engines are told): ``inp`` from :meth:`phase_input`, ``beta``
        the phase's nudging strength (for its messages; ``inp`` holds its weights)."""
        O = "Learner.phase_spec"
        net = self._checked(net, O)
        if not isinstance(inp, phase.PhaseInput):
            P.fail(O, "inp", "must be a phase's input (from Learner.phase_input)",
                   P.shown(inp))
        beta = P.real(beta, O, "beta", low=-phase.BETA_MAX, high=phase.BETA_MAX)
        return self._phase_spec(net, inp, beta)

    def _phase_spec(self, net, inp, beta=0.0):
        """:meth:`phase_spec` without its checks (the learner's own calls)."""
        n_max, tol = self.steps_for(net, inp)
        return PhaseSpec(rule=self.rule, integrator=self.integrator,
                         dt=self._dt_for(net, inp), n_max=n_max, tol=tol,
                         check=self.check_every(inp), substeps=self.substeps,
                         max_substeps=self.max_substeps, scipy_method=self.scipy_method,
                         scipy_rtol=self.scipy_rtol, scipy_atol=self.scipy_atol,
                         brian2_target=self.brian2_target, beta=float(beta),
                         settle=self.settle)

    def describe(self, net, x=None, y=None):
        """Which engine would run a phase of ``net`` (on data ``x``, ``y`` if given) and
        why each other engine would not, as text."""
        net = self.check(net)
        if (x is None) != (y is None):
            P.fail("Learner.describe", "y" if y is None else "x", "must be given with "
                   + ("x" if y is None else "y") + " (or neither: a stand-in sample)", "None")
        if x is None:
            x, y = np.zeros((1, net.n_in)), np.full((1, net.n_out), 1.0 / net.n_out)
        inp, _, _ = self.phase_input(net, x, y, owner="Learner.describe")
        spec = self._phase_spec(net, inp)
        text = engines.describe(self.engine, net, spec, inp, repr(self))
        if self.settle == "solve":
            from .engines import solver

            reason = solver.why_not(net, spec, inp)
            text += ("\nsettle='solve': " + (
                "the fixed point is found by the phase solver (Newton-Krylov, "
                "neuro_meta.engines.solver); the engine above integrates only tasks it "
                "hands over" if reason is None else f"integrated instead: {reason}"))
        return text

    def phase_input(self, net, x, y, x_val=None, y_val=None, beta=0.0, owner="Learner.run"):
        """Validated data of one phase as a ``PhaseInput``, with the sample weights
        ``c = 1/K`` for the K training shots and ``beta/V`` for the V validation points
        (nudged phase), and the online presentation length in steps.

        Returns ``(inp, batched, K)`` (``batched``: whether ``x`` had a task axis).
        """
        inp, batched, K = phase.phase_input(net, x, y, x_val, y_val, beta,
                                            self.presentation, owner)
        phase.set_presentation_steps(net, inp, self.dt, self.integrator,
                                     self.presentation_time)
        return inp, batched, K

    def initial_state(self, net, phi_init, B):
        """Validated initial fast variables for ``B`` tasks (one array per fast array,
        with a task axis), from ``phi_init`` or the model's φ₀."""
        return phase.initial_state(net, phi_init, B)

    def _result(self, net, phi, v, rec, settled, t_end, steps, record, batched):
        sq = (lambda a: a) if batched else (lambda a: a[0])
        sq_t = (lambda a: a) if batched else (lambda a: a[:, 0])
        ro = (lambda a: None if a is None else readonly(a))
        weights, biases = net.split_fast([sq(p) for p in phi])
        out_rec = {}
        if "phi" in record or "bias" in record:
            ws, bs = net.split_fast([np.stack(series) for series in zip(*rec.data["phi"])])
            if "phi" in record:
                out_rec["phi"] = [ro(sq_t(w)) for w in ws]
            if "bias" in record:
                out_rec["bias"] = [ro(None if b is None else sq_t(b)) for b in bs]
        if "v" in record or "r" in record:
            per_layer = net.potentials([np.stack(s) for s in zip(*rec.data["v"])])
            if "v" in record:
                out_rec["v"] = [readonly(sq_t(a)) for a in per_layer]
            if "r" in record:
                out_rec["r"] = [readonly(sq_t(a)) for a in net.rates(per_layer)]
        if "loss" in record:
            out_rec["loss"] = readonly(sq_t(np.stack(rec.data["loss"])))
        return LearningResult(
            phi=[ro(w) for w in weights], bias=[ro(b) for b in biases],
            v=[readonly(sq(a)) for a in net.potentials(v)],
            t=readonly(np.array(rec.t)), record=out_rec,
            settled=bool(settled[0]) if not batched else readonly(settled),
            t_end=float(t_end), steps=int(steps),
            phi_aug=[readonly(sq(p)) for p in phi],
            substeps=None if rec.substeps is None else (
                int(rec.substeps[0]) if not batched else _readonly_ints(rec.substeps)),
            engine="+".join(rec.engines),
            solver=None if rec.solver is None else (
                {k: int(a[0]) for k, a in rec.solver.items()} if not batched else
                {k: _readonly_ints(a) for k, a in rec.solver.items()}))
