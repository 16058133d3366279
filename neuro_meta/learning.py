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
from .errors import ValidationError
from .network import RateNetwork, split_aug
from .results import LearningResult, readonly

RULES = ("delta", "backprop")
PRESENTATIONS = ("batch", "online")
INTEGRATORS = ("euler", "expeuler", "rk4", "scipy")
ENGINES = ("numpy", "brian2")
RECORDABLE = ("phi", "bias", "v", "r", "loss")


def _readonly_ints(a):
    a = np.array(a, dtype=np.int64)
    a.setflags(write=False)
    return a


class NotSettledWarning(UserWarning):
    """A phase with a tolerance reached its maximal duration before settling."""


def warn_not_settled(learner, settled, t_end, stacklevel=2):
    """Warn (:class:`NotSettledWarning`) if a phase with a tolerance left tasks unsettled."""
    if learner.tol is None or settled.all():
        return
    warnings.warn(f"Learner.run: {int((~settled).sum())} of {settled.size} task(s) did not "
                  f"settle to tol={learner.tol:g} within {t_end:g} s; increase max_duration "
                  "or tol -- or reduce dt: beyond its stable step an explicit integrator "
                  "oscillates around the fixed point instead of settling"
                  + ("" if getattr(learner, "substeps", 1) == "auto" else
                     " (substeps='auto' picks each task's step from its stiffness)"),
                  NotSettledWarning, stacklevel=stacklevel + 1)


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
        ``scipy_atol``; fixed durations only).
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
    presentation_time : float, optional
        Online presentation: time each sample is shown (default ``τ_φ/100``); must be a
        multiple of ``dt``.
    engine : {"numpy", "brian2"}
        Simulator. ``"brian2"`` emits Brian2 equations (see the Brian2 engine's docs).
    substeps : int or "auto"
        Each step of ``dt`` is taken as this many equal sub-steps (default 1). ``"auto"``
        chooses the count per task at the start of each phase from the stiffness of that
        task's learning process (a power iteration on its synaptic Jacobian; see "Sub-steps"
        in the user guide's concepts), so that the step stays inside
        the integrator's stability region however steep the task's loss is. ``dt`` then
        keeps the time grid (recording, settling tests, durations) and is the largest
        step taken. Needs ``engine="numpy"`` and a fixed-step integrator.
    max_substeps : int
        Upper bound of the automatic count (default 64).
    """

    def __init__(self, rule="delta", presentation="batch", integrator="rk4", dt=None,
                 duration=None, tol=None, max_duration=None, presentation_time=None,
                 engine="numpy", scipy_method="LSODA", scipy_rtol=1e-10, scipy_atol=1e-12,
                 brian2_target="numpy", substeps=1, max_substeps=64):
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
        self.scipy_method = P.choice(scipy_method, O, "scipy_method",
                                     ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"))
        self.scipy_rtol = P.real(scipy_rtol, O, "scipy_rtol", low=0.0, low_open=True)
        self.scipy_atol = P.real(scipy_atol, O, "scipy_atol", low=0.0, low_open=True)
        self.brian2_target = P.choice(brian2_target, O, "brian2_target", ("numpy", "cython"))
        if self.integrator == "scipy" and self.duration is None:
            P.fail(O, "duration", "is required with integrator='scipy' (solve_ivp integrates "
                   "a fixed interval)", "None")
        if isinstance(substeps, str):
            self.substeps = P.choice(substeps, O, "substeps", ("auto",))
        else:
            self.substeps = P.integer(substeps, O, "substeps", low=1)
        self.max_substeps = P.integer(max_substeps, O, "max_substeps", low=1)
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
                + (f", substeps={self.substeps!r}" if self.substeps != 1 else "") + ")")

    # ------------------------------------------------------------------ timing
    def dt_for(self, net, inp=None):
        """The time step (s): ``dt`` if given, else chosen from the system's stiffness.

        The automatic step keeps every mode well inside the integrator's stability
        region: ``dt = s · τ_φ / (λ_max + h_max)`` with ``h_max`` a bound of the
        output layer's data curvature (mean squared presynaptic rate, summed over the
        presented samples' weights) and ``s = 1`` for RK4, ``0.5`` for (exponential)
        Euler; never above ``τ_φ/20``; and ``dt ≤ τ_v/10`` for dynamic neurons.
        Exponential Euler integrates the neurons' leak and the consolidation term
        exactly, so neither τ_v nor λ limits its step: it is the efficient choice for
        phases that run until settled, whose fixed points every integrator reproduces
        exactly (CML's default). Online presentation rounds the step down to divide the
        presentation time. For a :class:`~neuro_meta.DualSystem` see
        :func:`neuro_meta.dual.auto_dt`.
        """
        if self.dt is not None:
            return self.dt
        if not isinstance(net, RateNetwork):
            from .dual import auto_dt

            return auto_dt(net, self, inp)
        lam_max = max((float(c.lam.max()) for c in net.connections if c.plastic), default=0.0)
        curv = 1.0
        if inp is not None:
            r_pre = inp.X if len(net.connections) == 1 else net.forward(
                inp.X)[-2][1]
            sq = (r_pre ** 2).sum(axis=-1) + (1.0 if net.connections[-1].has_bias else 0.0)
            weights = np.abs(inp.c)
            if inp.presentation == "online":
                weights = weights * inp.n_samples
                curv = float((sq * weights).max())
            else:
                curv = float((sq * weights).sum(axis=-1).max())
            curv *= float(np.max(np.abs(net.activations[-1].df(np.zeros(1)))) or 1.0)
        safety = 1.0 if self.integrator in ("rk4", "scipy") else 0.5
        if self.integrator == "expeuler":
            lam_max = 0.0   # the consolidation term is integrated exactly
        dt = safety * net.tau_synapse / (lam_max + curv + 1e-12)
        dt = min(dt, net.tau_synapse / 20)
        if net.tau_neuron > 0 and self.integrator != "expeuler":
            dt = min(dt, net.tau_neuron / 10)
        if inp is not None and inp.presentation == "online":
            t_p = self.presentation_time if self.presentation_time is not None \
                else net.tau_synapse / 100
            dt = t_p / int(np.ceil(t_p / dt - 1e-9))
        return dt

    def _steps(self, t, dt):
        return max(1, int(round(t / dt)))

    def steps_for(self, net, inp):
        """(maximal number of steps, tolerance) of a phase."""
        dt = self.dt_for(net, inp)
        if self.tol is None:
            return self._steps(self.duration, dt), None
        t_max = self.max_duration if self.max_duration is not None else 1000 * net.tau_synapse
        if self.duration is not None:
            t_max = min(t_max, self.duration)
        return self._steps(t_max, dt), self.tol

    def presentation_steps(self, net):
        if self.dt is None:
            return None   # chosen together with the automatic time step
        dt = self.dt
        t_p = self.presentation_time if self.presentation_time is not None \
            else net.tau_synapse / 100
        k = int(round(t_p / dt))
        if k < 1 or abs(k * dt - t_p) > 1e-9 * max(t_p, dt):
            P.fail("Learner", "presentation_time", f"must be a positive multiple of dt "
                   f"({dt:g} s)", repr(t_p))
        return k

    def check_every(self, inp):
        """How often (steps) settling is tested: once per presentation cycle online."""
        if inp.presentation == "online":
            return inp.steps_per_sample * inp.n_samples
        return 10

    # ------------------------------------------------------------------ validation
    def _check_network(self, net):
        if not isinstance(net, RateNetwork):
            P.fail("Learner.run", "net", "must be a RateNetwork or a DualSystem",
                   type(net).__name__)
        plastic = [c.plastic for c in net.connections]
        if not any(plastic):
            P.fail("Learner.run", "net", "has no plastic connection: use a ComplexSynapse",
                   repr(net))
        if self.rule == "delta" and any(plastic[:-1]):
            raise ValidationError(
                "Learner.rule: 'delta' is local to the output connection, so the "
                "connections before it must be StaticSynapse; use rule='backprop' for a "
                "multi-layer plastic network (got 'delta' with plastic connections "
                f"{[i for i, p in enumerate(plastic[:-1]) if p]}, sizes {list(net.sizes)})")

    @staticmethod
    def _data(net, x, y, name_x="x", name_y="y"):
        """Validate data; returns (X (B,K,n_in), Y (B,K,n_out), had_task_axis)."""
        O = "Learner.run"
        x = P.finite_array(x, O, name_x, ndim=(2, 3), max_abs=P.DATA_LIMIT)
        y = P.finite_array(y, O, name_y, ndim=(2, 3), max_abs=P.DATA_LIMIT)
        if x.ndim != y.ndim:
            P.fail(O, name_y, f"must have the same number of dimensions as {name_x} "
                   f"({x.ndim})", f"shape {y.shape}")
        batched = x.ndim == 3
        shape_x, shape_y = x.shape, y.shape   # as given, for messages
        if not batched:
            x, y = x[None], y[None]
        if x.shape[-1] != net.sizes[0]:
            P.fail(O, name_x, f"last axis must match the network's input layer "
                   f"({net.sizes[0]} units)", f"shape {x.shape if batched else x.shape[1:]}")
        if y.shape[-1] != net.sizes[-1]:
            P.fail(O, name_y, f"last axis must match the network's output layer "
                   f"({net.sizes[-1]} units)", f"shape {y.shape if batched else y.shape[1:]}")
        if x.shape[:2] != y.shape[:2]:
            P.fail(O, name_y, f"must have as many {'tasks and ' if batched else ''}samples "
                   f"as {name_x} {shape_x[:-1]}", f"shape {shape_y}")
        if x.shape[1] == 0:
            P.fail(O, name_x, "needs at least one sample", f"shape {x.shape}")
        return x, y, batched

    # ------------------------------------------------------------------ running
    def run(self, net, x, y, record=(), record_every=1, x_val=None, y_val=None, beta=0.0,
            phi_init=None):
        """Let ``net`` learn the task(s) ``(x, y)``; returns a :class:`LearningResult`.

        Parameters
        ----------
        net : RateNetwork or neuro_meta.DualSystem
            (a :class:`~neuro_meta.dual.DualSystem` learns its fast gains, biases and
            readout; ``phi`` of the result then lists them in ``net.fast_names`` order)
        x, y : arrays ``(shots, n_in)``, ``(shots, n_out)`` or with a leading task axis
            ``(tasks, shots, ...)``; tasks are simulated together, vectorised.
        record : sequence of str
            Variables to record: ``"phi"``, ``"bias"``, ``"v"``, ``"r"``, ``"loss"``.
        record_every : int
            Record every n-th step (decimation).
        x_val, y_val, beta : optional
            Nudging: add ``beta * L_out`` on the validation set (the nudged phase of CML).
        phi_init : list of arrays, optional
            Augmented initial fast weights per connection (default: the network's φ₀).
        """
        from .dual import DualSystem, learn

        if isinstance(net, DualSystem):
            return learn(self, net, x, y, record, record_every, x_val, y_val, beta, phi_init)
        self._check_network(net)
        inp, batched, K = self.phase_input(net, x, y, x_val, y_val, beta)
        B = inp.X.shape[0]
        X, Y = inp.X, inp.Y
        if record is None:
            record = ()
        if isinstance(record, str):
            record = (record,)
        if not isinstance(record, (list, tuple, set)):
            P.fail("Learner.run", "record", "must be a name or a list of names of "
                   f"{', '.join(RECORDABLE)}", repr(record))
        for r in record:
            P.choice(r, "Learner.run", "record", RECORDABLE)
        record_every = P.integer(record_every, "Learner.run", "record_every", low=1)
        beta = float(beta)
        phi0 = self._phi_init(net, phi_init, B)
        X_trn, Y_trn = X[:, :K], Y[:, :K]

        def loss_fn(phi):
            out = net.predict(X_trn, phi)
            return 0.5 * ((out - Y_trn) ** 2).sum(axis=-1).mean(axis=-1)

        rec_names = [n for n in ("phi", "v", "loss") if n in record
                     or (n == "phi" and "bias" in record) or (n == "v" and "r" in record)]
        if self.engine == "brian2":
            from .engines import brian2_engine as engine
        else:
            from .engines import numpy_engine as engine
        phi, v, rec, settled, t_end, steps = engine.run_phase(
            net, inp, phi0, self, rec_names, record_every, beta, loss_fn)
        warn_not_settled(self, settled, t_end, stacklevel=2)
        return self._result(net, phi, v, rec, settled, t_end, steps, record, batched)

    def phase_input(self, net, x, y, x_val=None, y_val=None, beta=0.0, owner="Learner.run"):
        """Validated data of one phase as a ``PhaseInput``, with the sample weights
        ``c = 1/K`` for the K training shots and ``beta/V`` for the V validation points
        (nudged phase), and the online presentation length in steps.

        Returns ``(inp, batched, K)`` (``batched``: whether ``x`` had a task axis).
        """
        from .engines.numpy_engine import PhaseInput

        X, Y, batched = self._data(net, x, y)
        B, K = X.shape[:2]
        beta = P.real(beta, owner, "beta")
        c = np.full((B, K), 1.0 / K)
        if beta != 0.0:
            if x_val is None or y_val is None:
                P.fail(owner, "x_val", "is required when beta != 0", "None")
            Xv, Yv, bv = self._data(net, x_val, y_val, "x_val", "y_val")
            if bv != batched or Xv.shape[0] != B:
                P.fail(owner, "x_val", f"must have the same task axis as x ({B} "
                       "tasks)" if batched else "must have no task axis, like x",
                       f"shape {np.shape(x_val)}")
            V = Xv.shape[1]
            X = np.concatenate([X, Xv], axis=1)
            Y = np.concatenate([Y, Yv], axis=1)
            c = np.concatenate([c, np.full((B, V), beta / V)], axis=1)
        inp = PhaseInput(X, Y, c, self.presentation, 1)
        if self.presentation == "online":
            k = self.presentation_steps(net)
            if k is None:
                t_p = self.presentation_time if self.presentation_time is not None \
                    else net.tau_synapse / 100
                k = int(round(t_p / self.dt_for(net, inp)))
            inp.steps_per_sample = k
        return inp, batched, K

    def _phi_init(self, net, phi_init, B):
        out = []
        for i, c in enumerate(net.connections):
            p = c.phi0 if phi_init is None else phi_init[i]
            p = np.asarray(p, dtype=np.float64)
            if p.shape == c.shape:
                p = np.broadcast_to(p, (B,) + c.shape)
            elif p.shape != (B,) + c.shape:
                P.fail("Learner.run", f"phi_init[{i}]", f"must have shape {c.shape} or "
                       f"{(B,) + c.shape}", f"shape {p.shape}")
            out.append(np.array(p))
        return out

    def _result(self, net, phi, v, rec, settled, t_end, steps, record, batched):
        sq = (lambda a: a) if batched else (lambda a: a[0])
        sq_t = (lambda a: a) if batched else (lambda a: a[:, 0])
        weights, biases = [], []
        for c, p in zip(net.connections, phi):
            w, b = split_aug(p, c)
            weights.append(readonly(sq(w)))
            biases.append(None if b is None else readonly(sq(b)))
        out_rec = {}
        if record:
            if "phi" in record or "bias" in record:
                per_conn = list(zip(*rec.data["phi"]))
                ws, bs = [], []
                for c, series in zip(net.connections, per_conn):
                    arr = np.stack(series)
                    w, b = split_aug(arr, c)
                    ws.append(readonly(sq_t(w)))
                    bs.append(None if b is None else readonly(sq_t(b)))
                if "phi" in record:
                    out_rec["phi"] = ws
                if "bias" in record:
                    out_rec["bias"] = bs
            if "v" in record or "r" in record:
                per_layer = [np.stack(s) for s in zip(*rec.data["v"])]
                if "v" in record:
                    out_rec["v"] = [readonly(sq_t(a)) for a in per_layer]
                if "r" in record:
                    out_rec["r"] = [readonly(sq_t(act.f(a)))
                                    for act, a in zip(net.activations, per_layer)]
            if "loss" in record:
                out_rec["loss"] = readonly(sq_t(np.stack(rec.data["loss"])))
        return LearningResult(
            phi=weights, bias=biases, v=[readonly(sq(a)) for a in v],
            t=readonly(np.array(rec.t)), record=out_rec,
            settled=bool(settled[0]) if not batched else readonly(settled),
            t_end=float(t_end), steps=int(steps),
            phi_aug=[readonly(sq(p)) for p in phi],
            substeps=None if getattr(rec, "substeps", None) is None else (
                int(rec.substeps[0]) if not batched else _readonly_ints(rec.substeps)))
