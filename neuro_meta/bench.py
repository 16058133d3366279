"""``neuro-meta bench``: engine throughput against Brian2, per-phase overhead, scaling,
the sinusoid CML meta-training time, settling by solving vs by integration, and the
sinusoid comparison's time to target (CML beside each baseline, equal wall-time
budgets), measured side by side in one run.

Throughput model (issue 8): per task ``N_in`` input rates and ``N_out`` tanh rate units
(``tau_neuron`` = 10 ms), complex synapses (lam = 0.5) with the delta rule, online
presentation (10 shots, 10 ms each), forward Euler, dt = 1 ms, float64, B tasks, no
biases. Synapse-steps per second = B * N_in * N_out * steps / wall time.

* ``fused``: the compiled kernel (:mod:`neuro_meta.engines.fused`), through
  ``Learner.run`` (every per-phase cost included).
* ``numpy``: the numpy engine's Python loop on the same phase.
* ``brian2 cython``: the same model exported by :func:`RateNetwork.to_brian2` (rates and
  output error stored once per neuron by custom operations), run by Brian2's cython
  target; ``brian2 naive``: the same model written with subexpressions (``r =
  tanh(v)``, the input rate a ``TimedArray`` subexpression, the error too), evaluated
  per synapse. Brian2's rates are marginal (two runs of different lengths after a
  warm-up, so compilation and the ~0.1 s per-``run()`` overhead are excluded: the
  comparison is Brian2's best case); the per-run overhead is reported separately.

Also: the scaling of the fused kernel with synapses and tasks (through ``Learner.run``
and through ``fused.run_phase`` alone, float64 and float32; one-connection models of at
least ``fused.config.ROWS_MIN_SYNAPSES`` weights run on the rows kernel), the per-phase cost on
a small network, and meta-trainings fused vs the numpy loop: two sinusoid CML ones (a
stable setting, dt 5 ms, results equal to rounding, and the experiment's own model file)
and the dual system's (``models/sinusoid_dual.yaml``, the compiled gain kernel); and what
writing a checkpoint after every meta-step costs the Omniglot CML meta-training of
``models/omniglot_long.yaml`` against the default cadence (:func:`checkpoint_cadence`);
and scoring many Omniglot tasks in one batch against the pieces evaluations solve them
in (:func:`evaluation_pieces`).

No timing is asserted anywhere (numbers depend on the machine and its load).
"""
import contextlib
import platform
import time

import numpy as np

import neuro_meta as nm
from . import _params as P
from .engines import fused
from .io import write_json

DT = 1e-3


def _model(n_in, n_out, n_tasks, shots=10, seed=0):
    rng = np.random.default_rng(seed)
    net = nm.RateNetwork([n_in, n_out], activation="tanh", bias=False, tau_neuron=0.01,
                         tau_synapse=1.0, seed=seed,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5))
    x = rng.normal(size=(n_tasks, shots, n_in))
    y = 0.5 * rng.normal(size=(n_tasks, shots, n_out))
    return net, x, y


def _learner(steps):
    return nm.Learner(rule="delta", presentation="online", integrator="euler", dt=DT,
                      duration=steps * DT)


def _best(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def engine_rate(net, x, y, steps, repeats, engine="fused"):
    """(synapse-steps/s, wall s, final phi) of one phase on the numpy engine."""
    learner = _learner(steps)
    ctx = fused.disabled() if engine == "numpy" else contextlib.nullcontext()
    with ctx:
        _learner(2).run(net, x, y)                       # warm-up (and compilation)
        wall, res = _best(lambda: learner.run(net, x, y), repeats)
    n_syn = x.shape[0] * net.sizes[0] * net.sizes[1]
    return n_syn * res.steps / wall, wall, np.asarray(res.phi_aug[0])


# ---------------------------------------------------------------------- Brian2
def _brian2_naive(net, x, y):
    """The model written naively: rates, input and error as subexpressions."""
    import brian2 as b2

    B, S, n_in = x.shape
    n_out = y.shape[-1]
    k = 10                              # presentation: 10 steps of 1 ms per sample
    tp = k * DT * b2.second
    rows = np.arange(S + 1) % S
    to_2d = (lambda a: np.ascontiguousarray(np.swapaxes(a[:, rows], 0, 1).reshape(S + 1, -1)))
    ns = {"x_in": b2.TimedArray(to_2d(x), dt=tp),
          "y_target": b2.TimedArray(to_2d(y), dt=tp),
          "gain_in": b2.TimedArray(to_2d(np.full(y.shape, 1.0 / S) * S), dt=tp),
          "T_cycle": S * tp, "tau_v": net.tau_neuron * b2.second,
          "tau_phi": net.tau_synapse * b2.second}
    clock = b2.Clock(dt=DT * b2.second)
    inp = b2.NeuronGroup(B * n_in, "r = x_in(t % T_cycle, i) : 1", clock=clock, namespace=ns)
    out = b2.NeuronGroup(B * n_out, """dv/dt = (-v + I)/tau_v : 1
                         I : 1
                         r = tanh(v) : 1
                         err = gain_in(t % T_cycle, i)*(y_target(t % T_cycle, i) - r)*(1 - r**2) : 1""",
                         method="euler", clock=clock, namespace=ns)
    syn = b2.Synapses(inp, out, """dphi/dt = (err_post*r_pre - lam*(phi - omega))/tau_phi : 1 (clock-driven)
                      omega : 1 (constant)
                      lam : 1 (constant)
                      I_post = phi*r_pre : 1 (summed)""", method="euler", clock=clock,
                      namespace=ns)
    b, j, i = np.meshgrid(np.arange(B), np.arange(n_out), np.arange(n_in), indexing="ij")
    syn.connect(i=(b * n_in + i).ravel(), j=(b * n_out + j).ravel())
    c = net.connections[0]
    syn.omega = np.broadcast_to(c.omega, (B,) + c.shape).ravel()
    syn.lam = np.broadcast_to(c.lam, (B,) + c.shape).ravel()
    syn.phi = np.broadcast_to(c.phi0, (B,) + c.shape).ravel()
    out.v = net.forward(x[:, :1])[-1][0][:, 0, :].ravel()
    # the numpy engine's order: currents, neurons, then synapses at the end-of-step state
    for upd in syn.summed_updaters.values():
        upd.when, upd.order = "before_groups", 1
    out.state_updater.when, out.state_updater.order = "groups", 0
    syn.state_updater.when, syn.state_updater.order = "groups", 2
    network = b2.Network(inp, out, syn)
    network.store()
    return network, syn


def brian2_rate(net, x, y, steps, formulation):
    """Marginal synapse-steps/s of Brian2's cython target (run of ``steps`` minus a run of
    ``steps // 4``, after a warm-up), the per-run overhead (s) and the final phi."""
    import brian2 as b2

    from .engines.brian2_engine import codegen_target

    with codegen_target("cython"):
        if formulation == "naive":
            network, syn = _brian2_naive(net, x, y)
        else:
            network = net.to_brian2(x=x, y=y, presentation="online", dt=DT)
            syn = network["conn_0"]
        network.run(2 * DT * b2.second)                  # warm-up: compile / load
        times = {}
        for n in (steps // 4, steps):
            network.restore()
            t0 = time.perf_counter()
            network.run(n * DT * b2.second)
            times[n] = time.perf_counter() - t0
        phi = np.asarray(syn.phi[:]).reshape((x.shape[0],) + net.connections[0].shape)
    n_syn = x.shape[0] * net.sizes[0] * net.sizes[1]
    d_steps = steps - steps // 4
    per_step = (times[steps] - times[steps // 4]) / d_steps
    overhead = times[steps] - steps * per_step
    return n_syn / per_step, overhead, phi


# ---------------------------------------------------------------------- small phases
@contextlib.contextmanager
def _serial_kernel():
    """Within the block, fused phases run in the calling thread whatever their length."""
    old = fused.config.PARALLEL_MIN_WORK
    fused.config.PARALLEL_MIN_WORK = float("inf")
    try:
        yield
    finally:
        fused.config.PARALLEL_MIN_WORK = old


def small_phase_overhead(repeats=20):
    """Per-phase cost on a 1-40-40-1 backprop network, 10 shots, 25 tasks (fused): the time
    of a 1-step phase minus the cost of one step (from an 11-step phase). Both phases run
    in the calling thread (a 1-step phase does anyway), so that the step cost subtracted
    is the one paid in the 1-step phase."""
    rng = np.random.default_rng(0)
    net = nm.RateNetwork([1, 40, 40, 1], activation=["tanh", "tanh", "linear"],
                         tau_neuron=0.0, seed=0,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5))
    task = nm.families.Sinusoid(shots=10, val=10).sample(rng, 25)
    out = {}
    for label, ctx in (("fused", _serial_kernel), ("numpy", fused.disabled)):
        with ctx():
            t = {}
            for n in (1, 11):
                learner = nm.Learner(rule="backprop", presentation="batch",
                                     integrator="expeuler", dt=0.01, duration=n * 0.01)
                learner.run(net, task.x_train, task.y_train)
                t[n], _ = _best(lambda: learner.run(net, task.x_train, task.y_train), repeats)
        per_step = (t[11] - t[1]) / 10
        out[label] = {"phase_1_step_ms": 1e3 * t[1], "per_step_ms": 1e3 * per_step,
                      "overhead_ms": 1e3 * (t[1] - per_step)}
    return out


def sinusoid_cml(steps, meta_batch=25, max_duration=100.0):
    """Wall time of ``steps`` CML meta-steps on sinusoids (1-40-40-1 backprop network,
    expeuler, dt 5 ms, tol 1e-6, phases of at most ``max_duration`` s; SGD 1e-3, so
    that theta differs exactly as the meta-gradients do) with the fused kernel and with
    the numpy loop; max |dtheta| between the two."""
    def train():
        net = nm.RateNetwork([1, 40, 40, 1], activation=["tanh", "tanh", "linear"],
                             tau_neuron=0.0, seed=0,
                             synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5))
        learner = nm.Learner(rule="backprop", presentation="batch", integrator="expeuler",
                             dt=0.005, tol=1e-6, max_duration=max_duration)
        cml = nm.CML(beta=0.05, estimator="symmetric", learner=learner)
        return nm.MetaTrainer(net, nm.families.Sinusoid(shots=10, val=10), cml,
                              nm.optim.sgd(1e-3), meta_batch=meta_batch, eval_tasks=meta_batch)

    return {"meta_steps": steps, "meta_batch": meta_batch, "max_duration_s": max_duration,
            **_fused_vs_numpy(train, steps)}


def _fused_vs_numpy(make_trainer, steps):
    """Meta-train ``steps`` steps with the fused kernel, then with the numpy loop:
    wall times, speed-up and max |dtheta|."""
    import warnings

    def timed(n=steps):
        trainer = make_trainer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nm.NotSettledWarning)
            t0 = time.perf_counter()
            trainer.train(n, eval_every=n, progress=False, select=False)
            return time.perf_counter() - t0, trainer.net.theta

    timed(1)          # warm-up: compilation or cache load, the kernels' thread pool
    wall_f, th_f = timed()
    with fused.disabled():
        wall_n, th_n = timed()
    return {"fused_s": wall_f, "numpy_s": wall_n, "speedup": wall_n / wall_f,
            "max_abs_theta_diff": _theta_diff(th_f, th_n)}


def sinusoid_model(steps, eval_tasks=25):
    """Wall time of ``steps`` meta-steps of the sinusoid experiment's CML model as
    configured in ``models/sinusoid.yaml`` (expeuler dt 10 ms with per-task sub-steps
    from the stiffness, tol 1e-3, phases of at most 30 s, Adam), fused vs the numpy loop,
    and max |dtheta| between the two.

    Note: a phase whose step is beyond the stable one amplifies rounding differences, so
    any two summation orders then drift apart (with one 10 ms step for every task, theta
    differed by 2e-3 after 30 meta-steps); the per-task sub-steps keep every phase
    stable, and theta agrees to rounding (6e-14 after 30 meta-steps).
    """
    from .experiments.consolidation import merge
    from .experiments.sinusoid import build_cml
    from .models import load_model

    cfg = merge(load_model("sinusoid"), {"meta": {"eval_tasks": int(eval_tasks)}})
    return {"meta_steps": steps, "config": "models/sinusoid.yaml", "eval_tasks": eval_tasks,
            **_fused_vs_numpy(lambda: build_cml(cfg)[1], steps)}


def dual_model(steps, eval_tasks=25):
    """The same for the dual system of ``models/sinusoid_dual.yaml`` (its gains, biases
    and readout fast): the compiled gain kernel vs the numpy loop."""
    from .experiments.consolidation import merge
    from .experiments.sinusoid import build_cml
    from .models import load_model

    cfg = merge(load_model("sinusoid_dual"), {"meta": {"eval_tasks": int(eval_tasks)}})
    return {"meta_steps": steps, "config": "models/sinusoid_dual.yaml",
            "eval_tasks": eval_tasks, **_fused_vs_numpy(lambda: build_cml(cfg)[1], steps)}


def settle_cases(repeats=3, cases=("stiff", "sinusoid")):
    """Settling a phase by integration (the compiled kernels, per-task sub-steps) and by
    the phase solver, side by side: wall time, work in right-hand-side evaluations (an
    R-operator product counted as two) and max |dphi| between the settled states, for
    each of ``cases`` (names among):

    * ``stiff``: the stiff process of ``tests/test_solver.py`` (inputs of scale 8 and
      0.3, lam 0.05, tol 1e-6);
    * ``sinusoid``: 25 sinusoid tasks on the experiment's untrained 1-40-40-1 network
      (tol 1e-3, dt 10 ms).
    """
    import warnings

    known = ("stiff", "sinusoid")
    try:
        picked = () if isinstance(cases, str) else tuple(cases)
    except TypeError:
        picked = ()
    if not picked or not all(isinstance(c, str) and c in known for c in picked):
        P.fail("bench.settle_cases", "cases", f"must be a non-empty sequence of {known}",
               repr(cases))
    out = {}
    rng = np.random.default_rng(5)
    net = nm.RateNetwork([2, 16, 1], activation=["tanh", "linear"], bias=True, seed=1,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.05))
    x = rng.normal(size=(4, 12, 2)) * np.array([8.0, 0.3])
    y = np.sin(x[..., :1]) + 0.1 * x[..., 1:]
    kw = dict(rule="backprop", integrator="expeuler", dt=0.01, tol=1e-6, substeps="auto",
              max_substeps=512, max_duration=2000.0)
    specs = {"stiff": (net, x, y, kw)}      # (building both is cheap; running is not)
    sin = nm.RateNetwork([1, 40, 40, 1], activation=["tanh", "tanh", "linear"],
                         tau_neuron=0.0, seed=0,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=1.0))
    task = nm.families.Sinusoid(shots=10, val=10).sample(np.random.default_rng(1), 25)
    xt, yt, _, _ = task.as_batch()
    specs["sinusoid"] = (sin, xt, yt, dict(kw, tol=1e-3, max_substeps=64,
                                            max_duration=30.0))
    for name, (n, xx, yy, k) in specs.items():
        if name not in picked:
            continue
        integ, solve = nm.Learner(**k), nm.Learner(settle="solve", **k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nm.NotSettledWarning)
            integ.run(n, xx, yy)                    # warm-up (compilation)
            t_i, a = _best(lambda: integ.run(n, xx, yy), repeats)
            t_s, b = _best(lambda: solve.run(n, xx, yy), repeats)
        work_i = a.steps * np.asarray(a.substeps)
        work_s = np.asarray(b.solver["steps"]) + 2 * np.asarray(b.solver["hvps"])
        out[name] = {"integrate_s": t_i, "solve_s": t_s, "speedup": t_i / t_s,
                     "integrate_steps": int(a.steps), "integrate_engine": a.engine,
                     "integrate_settled": int(np.sum(a.settled)), "tasks": int(len(xx)),
                     "work_ratio_min": float((work_i / work_s).min()),
                     "solver_steps_max": int(np.max(b.solver["steps"])),
                     "max_abs_phi_diff": max(float(np.abs(p - q).max())
                                             for p, q in zip(a.phi_aug, b.phi_aug))}
    return out


def time_to_target(quick, out):
    """The sinusoid comparison as ``neuro-meta run sinusoid`` runs it (``--quick``: its
    quick setting): every method the same wall-time budget of meta-training, the
    meta-parameters selected on meta-validation tasks; per method the final meta-test MSE
    and the meta-training time to first reach each target meta-test MSE (the run is
    written to ``OUT/sinusoid``)."""
    from .experiments import sinusoid

    res = sinusoid.run(f"{out}/sinusoid", quick=quick, progress=False)
    return {"budget_s": res["config"]["compare"]["budget_s"],
            "methods": {name: {"meta_test_mse": m["meta_test_mse"],
                               "meta_steps": m["meta_steps"],
                               "time_to_target": m.get("time_to_target")}
                        for name, m in res["methods"].items()}}


def _print_time_to_target(ttt):
    targets = None
    for name, m in ttt["methods"].items():
        if m["time_to_target"] is None:
            continue
        targets = targets or list(m["time_to_target"])
        cells = ["not reached" if m["time_to_target"][t] is None
                 else f"{m['time_to_target'][t]['time_s']:.1f} s" for t in targets]
        print(f"{'sinusoid: ' + name:<24}{'time to MSE ' + '/'.join(targets):<22} "
              f"{' | '.join(cells)}  (final {m['meta_test_mse']:.4f} after "
              f"{m['meta_steps']} meta-steps, budget {ttt['budget_s']:g} s)")


def _theta_diff(th_a, th_b):
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for key in th_a for a, b in zip(th_a[key], th_b[key]) if a is not None)


# ---------------------------------------------------------------------- main
def main(quick=False, out="results/bench"):
    """Run the benchmarks, print a table, write ``OUT/results.json``; returns the dict."""
    t_start = time.perf_counter()
    res = {"machine": {"python": platform.python_version(), "processor": platform.processor(),
                       "numba": fused.AVAILABLE,
                       "threads": (fused.threads() if fused.AVAILABLE else 1)},
           "quick": bool(quick)}
    rows = []

    def row(model, engine, rate, note=""):
        rows.append((model, engine, rate, note))
        print(f"{model:<24}{engine:<22}{rate / 1e6:>12.0f}  {note}", flush=True)

    if not fused.AVAILABLE:
        print("numba is not installed: the 'fused' rows run the numpy fallback, far slower "
              "than the compiled kernel (pip install '.[fast]')", flush=True)
    print(f"{'model':<24}{'engine':<22}{'M syn-steps/s':>12}  note")
    print("-" * 78)
    res.update(_throughput(quick, row))
    res.update(_scaling(quick, row))
    res.update(_meta_training(quick))
    res["sinusoid_time_to_target"] = time_to_target(quick, out)
    _print_time_to_target(res["sinusoid_time_to_target"])
    res["table"] = [{"model": m, "engine": e, "synapse_steps_per_s": r, "note": n}
                    for m, e, r, n in rows]
    res["wall_time_s"] = time.perf_counter() - t_start
    print("-" * 78)
    for key in ("ratio_vs_brian2_cython", "ratio_vs_brian2_naive", "ratio_vs_numpy",
                "large_gsyn_steps_per_s", "small_phase_overhead_ms"):
        val = res.get(key)
        print(f"{key:<28}{'n/a' if val is None else f'{val:.3g}'}")
    path = write_json(f"{out}/results.json", res)
    print(f"wrote {path} ({res['wall_time_s']:.0f} s)")
    return res


def _throughput(quick, row):
    """The 100 x 100 x 50 tasks model: fused, numpy loop, Brian2 cython (two ways)."""
    res = {}
    n_in, n_out, B = 100, 100, 50
    net, x, y = _model(n_in, n_out, B)
    label = f"{n_in}x{n_out}x{B} tasks"
    steps_f, steps_b, steps_naive, steps_np = ((400, 400, 120, 100) if quick
                                               else (2000, 1200, 400, 300))
    rep = 2 if quick else 3
    r_f, w_f, phi_f = engine_rate(net, x, y, steps_f, rep)
    row(label, "fused (numba)" if fused.AVAILABLE else "fused (numpy: no numba)", r_f)
    r_np, _, _ = engine_rate(net, x, y, steps_np, 1 if quick else 2, engine="numpy")
    row(label, "numpy loop", r_np)
    base = {"fused": r_f, "numpy": r_np}
    try:
        r_bw, ov_bw, phi_bw = brian2_rate(net, x, y, steps_b, "well")
        r_f_same, _, phi_f_same = engine_rate(net, x, y, steps_b, 1)
        dphi = float(np.abs(phi_bw - phi_f_same).max())
        row(label, "brian2 cython", r_bw, f"per-run overhead {ov_bw * 1e3:.0f} ms; "
            f"max|dphi| vs fused {dphi:.1e}")
        r_bn, ov_bn, phi_bn = brian2_rate(net, x, y, steps_naive, "naive")
        row(label, "brian2 cython naive", r_bn, f"per-run overhead {ov_bn * 1e3:.0f} ms")
        base.update(brian2_cython=r_bw, brian2_naive=r_bn, brian2_run_overhead_s=ov_bw,
                    brian2_phi_diff=dphi)
        res["ratio_vs_brian2_cython"] = r_f / r_bw
        res["ratio_vs_brian2_naive"] = r_f / r_bn
    except Exception as err:  # noqa: BLE001 - e.g. no C compiler: report, go on
        print(f"{label:<24}brian2: not measured ({type(err).__name__}: {err})")
        res["ratio_vs_brian2_cython"] = res["ratio_vs_brian2_naive"] = None
    res["throughput_100x100x50"] = base
    res["ratio_vs_numpy"] = r_f / r_np
    return res


def _scaling(quick, row):
    """The fused kernel's scaling with synapses and tasks (float64 and float32) and the
    per-phase overhead on a small network."""
    res = {}
    scaling = []
    rep = 2 if quick else 3
    sizes = ([(100, 100, 4), (2000, 2000, 4)] if not quick
             else [(100, 100, 4), (1000, 1000, 4)])
    sizes = [(100, 100, 1), (100, 100, 16), (300, 300, 16)] + sizes
    for n_in, n_out, B in sizes:
        net, x, y = _model(n_in, n_out, B)
        n_syn = n_in * n_out * B
        # >= 100 steps: the large model's per-phase copies (Learner.run) stay a few %
        steps = int(np.clip(4e8 / n_syn, 100, 2000)) // (4 if quick else 1)
        r, _, _ = engine_rate(net, x, y, steps, 1 if n_syn > 1e6 else rep)
        r_k = _rate_run_phase(net, x, y, steps)
        r32 = _rate_run_phase(net, x, y, steps, np.float32)
        scaling.append({"n_in": n_in, "n_out": n_out, "tasks": B, "synapses": n_syn,
                        "steps": steps, "fused_float64": r, "fused_float64_run_phase": r_k,
                        "fused_float32_run_phase": r32,
                        "kernel": "rows" if B * n_in * n_out >= fused.config.ROWS_MIN_SYNAPSES
                        else "tasks"})
        row(f"{n_in}x{n_out}x{B} tasks", "fused f64", r,
            f"run_phase alone: f64 {r_k / 1e6:.0f} M, f32 {r32 / 1e6:.0f} M")
    res["scaling"] = scaling
    large = [e for e in scaling if e["synapses"] >= 16_000_000]
    res["large_gsyn_steps_per_s"] = large[0]["fused_float64"] / 1e9 if large else None
    res["large_gsyn_steps_per_s_run_phase"] = (large[0]["fused_float64_run_phase"] / 1e9
                                               if large else None)
    res["large_model"] = "2000x2000x4 tasks, float64" if large else \
        "not run (--quick); see scaling for the 1000x1000x4 model"
    small = small_phase_overhead(10 if quick else 30)
    res["small_phase"] = small
    res["small_phase_overhead_ms"] = small["fused"]["overhead_ms"]
    print(f"{'1-40-40-1, 25 tasks':<24}{'per-phase overhead':<22}"
          f"{small['fused']['overhead_ms']:>9.3f} ms  (numpy loop: "
          f"{small['numpy']['overhead_ms']:.3f} ms; per step {small['fused']['per_step_ms']:.3f}"
          f" vs {small['numpy']['per_step_ms']:.3f} ms)")
    return res


def _meta_training(quick):
    """Meta-training fused vs the numpy loop: the sinusoid CML model (a stable setting and
    the model file) and the dual system."""
    res = {"sinusoid_cml": sinusoid_cml(1, 5, 5.0) if quick else sinusoid_cml(3, 25, 20.0),
           "sinusoid_model": sinusoid_model(1 if quick else 3),
           "dual_model": dual_model(1 if quick else 3),
           "checkpoint_cadence": checkpoint_cadence(10 if quick else 40,
                                                    1 if quick else 2),
           "evaluation_pieces": evaluation_pieces(20 if quick else 100, 1 if quick else 2)}
    res["settle"] = settle_cases(1 if quick else 3)
    for key, r in res["settle"].items():
        print(f"{'settle: ' + key:<24}{'solve vs integrate':<22}{r['speedup']:>10.1f}x  "
              f"(integrate {r['integrate_s']:.3f} s, {r['integrate_steps']} steps, "
              f"{r['integrate_settled']}/{r['tasks']} settled; solve {r['solve_s']:.3f} s, "
              f"<= {r['solver_steps_max']} steps; work ratio >= {r['work_ratio_min']:.0f}; "
              f"max|dphi| {r['max_abs_phi_diff']:.1e})")
    for key, label in (("sinusoid_cml", "sinusoid CML"),
                       ("sinusoid_model", "sinusoid (yaml model)"),
                       ("dual_model", "dual system (yaml)")):
        r = res[key]
        print(f"{label:<24}{'meta-training':<22}{r['speedup']:>10.1f}x  "
              f"({r['meta_steps']} meta-steps: fused {r['fused_s']:.2f} s, numpy "
              f"{r['numpy_s']:.2f} s; max|dtheta| {r['max_abs_theta_diff']:.1e})")
    return res


def checkpoint_cadence(meta_steps=40, rounds=2):
    """Wall time of ``meta_steps`` meta-steps of ``omniglot_long``'s CML (one process,
    its model file otherwise, the cosine counted in steps: 18 000, a few evaluation
    tasks) writing its checkpoint after every meta-step (``checkpoint_every_s=0``, the
    cadence before 2026-12) against the default cadence
    (:data:`neuro_meta.checkpoint.CHECKPOINT_EVERY_S`), ``rounds`` pairs run
    alternately in this process, the best of each kept. Returns the two times, the
    ratio and the cost of a write per meta-step (ms)."""
    import tempfile
    from pathlib import Path

    from .checkpoint import CHECKPOINT_EVERY_S
    from .experiments import omniglot
    from .models import load_model

    cfg = omniglot.effective_config(load_model("omniglot_long"), overrides=(
        "compare.workers=1", "compare.val_tasks=4", "meta.eval_tasks=4",
        "meta.schedule={kind: cosine, steps: 18000, end: 0.05}"))
    fams = omniglot.families(cfg)
    best = {"every_step": np.inf, "default": np.inf}
    size = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for key, every_s in (("every_step", 0.0), ("default", "default")):
                tr = omniglot.build_cml(cfg, fams)[1]
                path = Path(tmp) / f"{key}_{r}.npz"
                t0 = time.perf_counter()
                tr.train(meta_steps, eval_every=10 * meta_steps, progress=False,
                         checkpoint=path, checkpoint_every_s=every_s)
                best[key] = min(best[key], time.perf_counter() - t0)
                size = path.stat().st_size
    out = {"meta_steps": meta_steps, "rounds": rounds,
           "every_step_s": best["every_step"], "default_s": best["default"],
           "default_every_s": CHECKPOINT_EVERY_S, "checkpoint_bytes": size,
           "ratio": best["every_step"] / best["default"],
           "write_ms_per_step": 1e3 * (best["every_step"] - best["default"]) / meta_steps}
    print(f"{'omniglot_long CML':<24}{'checkpoint cadence':<22}{out['ratio']:>10.3f}x  "
          f"({meta_steps} meta-steps: a write after each {out['every_step_s']:.2f} s, "
          f"every {CHECKPOINT_EVERY_S:g} s {out['default_s']:.2f} s; "
          f"{out['write_ms_per_step']:.1f} ms per meta-step; checkpoint "
          f"{size / 1e6:.1f} MB)", flush=True)
    return out


def evaluation_pieces(tasks=100, rounds=2):
    """Wall time of scoring ``tasks`` Omniglot test tasks (``models/omniglot.yaml``, seed
    0, initial meta-parameters, one process) by CML's learning process and by MAML's
    inner loop, all the tasks in one batch against the pieces of
    :data:`neuro_meta.metatrain.EVAL_PIECE_NUMBERS` numbers that Omniglot's scoring,
    ``MetaTrainer``'s and the baselines' evaluations solve them in (after a warm-up),
    ``rounds`` pairs run alternately in this process, the best of each kept. Returns per
    method the two times, the ratio (one batch / pieces), the tasks per piece and whether
    the per-task errors are identical."""
    from . import baselines as bl
    from . import metatrain as mt
    from .experiments import omniglot
    from .models import load_model

    cfg = omniglot.effective_config(load_model("omniglot"), seed=0)
    fams = omniglot.families(cfg)
    task = fams["test"].sample(mt.task_rng(0, mt.TEST), tasks)
    learner, trainer = omniglot.build_cml(cfg, fams)
    maml, _ = omniglot.baseline_method(cfg, "maml")
    params = bl.init_mlp(omniglot.mlp_sizes(cfg), 0)
    cases = {"cml": (lambda: omniglot.cml_errors(trainer.net, learner, task),
                     trainer.net.theta),
             "maml": (lambda: omniglot.baseline_errors(maml, params, task), params)}
    out = {}
    for name, (errors, theta) in cases.items():
        errors()                                        # warm-up
        best, got = {"one_batch": np.inf, "pieces": np.inf}, {}
        for _ in range(rounds):
            for key, numbers in (("one_batch", 1 << 62), ("pieces", mt.EVAL_PIECE_NUMBERS)):
                saved = mt.EVAL_PIECE_NUMBERS
                mt.EVAL_PIECE_NUMBERS = numbers
                try:
                    t0 = time.perf_counter()
                    got[key] = errors()
                    best[key] = min(best[key], time.perf_counter() - t0)
                finally:
                    mt.EVAL_PIECE_NUMBERS = saved
        r = out[name] = {"tasks": tasks, "rounds": rounds,
                         "tasks_per_piece": mt.eval_piece_tasks(theta),
                         "one_batch_s": best["one_batch"], "pieces_s": best["pieces"],
                         "ratio": best["one_batch"] / best["pieces"],
                         "same_errors": bool(np.array_equal(got["one_batch"],
                                                            got["pieces"]))}
        print(f"{'omniglot ' + name:<24}{'evaluation in pieces':<22}{r['ratio']:>10.2f}x  "
              f"({tasks} test tasks: one batch {r['one_batch_s']:.2f} s, pieces of "
              f"{r['tasks_per_piece']} {r['pieces_s']:.2f} s; same errors: "
              f"{r['same_errors']})", flush=True)
    return out


def _rate_run_phase(net, x, y, steps, dtype=np.float64):
    """Synapse-steps/s of :func:`fused.run_phase` alone on the same phase (the kernel and
    its packing, without ``Learner.run``'s validation and copies); ``dtype`` float32 runs
    the kernel in single precision."""
    learner = _learner(steps)
    inp, _, _ = learner.phase_input(net, x, y)
    X = inp.X
    phi = learner.initial_state(net, None, X.shape[0])
    v = net.dynamics("delta").steady_v(phi, inp.at_step(0)[0])
    fused.run_phase(net, inp, phi, v, _learner(2).phase_spec(net, inp), dtype=dtype)
    spec = learner.phase_spec(net, inp)
    wall, _ = _best(lambda: fused.run_phase(net, inp, phi, v, spec, dtype=dtype), 1)
    return X.shape[0] * net.sizes[0] * net.sizes[1] * steps / wall
