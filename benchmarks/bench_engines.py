"""Cost of the Brian2 engine beside the numpy engine, on the same learning process.

The model: an online delta-rule network with complex synapses, ``tanh`` outputs and
biases, B tasks simulated together, forward Euler, ``dt = 1 ms``, a fixed duration. Each
engine runs the identical phase (the trajectories agree to ~1e-16, see
``tests/test_brian2_engine.py``); we report the wall time of one phase (best of
``repeats``, after a warm-up run that also compiles the Cython code), the throughput in
synapse-steps per second (synapses incl. bias synapses x time steps / wall time) and the
ratio to the numpy engine. Brian2's per-run set-up (code generation, ~0.1 s) is included:
it is what a user pays per phase.

Usage::

    python benchmarks/bench_engines.py           # full sizes
    python benchmarks/bench_engines.py --quick   # small, ~20 s (plus a first compile)

No timing is asserted anywhere: numbers depend on the machine.
"""
import argparse
import time

import numpy as np

import neuro_meta as nm

ENGINES = (("numpy", "numpy engine", {}),
           ("brian2", "brian2 / numpy target", {"brian2_target": "numpy"}),
           ("brian2", "brian2 / cython target", {"brian2_target": "cython"}))


def _model(n_in, n_out, n_tasks, shots, seed=0):
    rng = np.random.default_rng(seed)
    net = nm.RateNetwork([n_in, n_out], activation="tanh", bias=True, seed=seed,
                         synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=0.5))
    x = rng.normal(size=(n_tasks, shots, n_in))
    y = 0.5 * rng.normal(size=(n_tasks, shots, n_out))
    return net, x, y


def _time(learner, net, x, y, repeats):
    learner.run(net, x, y)                      # warm-up (and Cython compilation)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = learner.run(net, x, y)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main(quick=False):
    """Run the benchmark, print a table, return ``{model: {engine: {...}}}``."""
    if quick:
        sizes = [(5, 2, 3, 0.5), (50, 10, 16, 0.5)]
        repeats = 1
    else:
        sizes = [(5, 2, 3, 3.0), (50, 10, 16, 3.0), (200, 20, 32, 2.0)]
        repeats = 3
    results = {}
    header = (f"{'model':<28}{'engine':<25}{'wall (s)':>10}{'syn-steps/s':>14}"
              f"{'vs numpy':>10}{'max|dphi|':>11}")
    print(header)
    print("-" * len(header))
    for n_in, n_out, n_tasks, duration in sizes:
        net, x, y = _model(n_in, n_out, n_tasks, shots=10)
        n_syn = n_tasks * n_out * (n_in + 1)
        label = f"[{n_in}, {n_out}] x {n_tasks} tasks"
        rows = results.setdefault(label, {})
        ref_time = ref_phi = None
        for engine, name, extra in ENGINES:
            learner = nm.Learner(rule="delta", presentation="online", integrator="euler",
                                 dt=1e-3, duration=duration, engine=engine, **extra)
            wall, res = _time(learner, net, x, y, repeats)
            rate = n_syn * res.steps / wall
            if ref_time is None:
                ref_time, ref_phi = wall, res.phi_aug[0]
            diff = float(np.abs(res.phi_aug[0] - ref_phi).max())
            rows[name] = {"wall_s": wall, "steps": res.steps, "synapses": n_syn,
                          "synapse_steps_per_s": rate, "time_ratio_to_numpy": wall / ref_time,
                          "max_abs_phi_diff": diff}
            print(f"{label:<28}{name:<25}{wall:>10.3f}{rate:>14.3g}"
                  f"{wall / ref_time:>9.1f}x{diff:>11.1e}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    main(quick=parser.parse_args().quick)
