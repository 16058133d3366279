"""Golden numbers of the learning process, CML, the exact reference and meta-training.

A refactoring tool (issue 15: "nothing changed numerically"): run it on the code before a
change to store every number, and on the code after it to compare::

    python tests/golden/capture.py save DIR        # before
    python tests/golden/capture.py compare DIR     # after: bit-identical or not, per key
    python tests/golden/capture.py save DIR --cli  # also `neuro-meta run sinusoid --quick`
                                                   # and `--model dual --quick` (~1 min)

What it covers (public API only, so that it runs on both sides of a change):

* ``Learner.run`` over rule x presentation x integrator x tau_v in {0, >0} x bias x
  sub-steps in {1, "auto"} x engine in {numpy loop, fused, brian2}: a recorded
  fixed-duration phase, a settling phase and a nudged phase from its end (phi, v, t,
  records, settled, steps, sub-steps); an invalid combination stores its error class;
* the three DualSystem variants x every integrator (the same three phases);
* the three CML estimators for both kinds, the exact reference (dense and CG) for both;
* theta after 3 meta-steps of a complex-synapse network and of a dual system;
* with ``--cli``: the two quick sinusoid runs' results.json without wall times (run
  step-bound: ``--budget none`` with 20 CML and 200 baseline meta-steps).

The stored file is machine-specific (BLAS and the compiled kernels' vectorisation depend on
the CPU) and large (~5 MB): keep it outside the repository, and compare on the machine
that saved it. It is a refactoring tool, not a test: the test suite checks numbers
against closed forms and independent references, never against numbers the code
produced earlier.
"""
import contextlib
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import neuro_meta as nm

RULE_NETS = (("delta", "shallow"), ("backprop", "shallow"), ("backprop", "deep"))
PRESENTATIONS = ("batch", "online")
INTEGRATORS = ("euler", "expeuler", "rk4", "scipy")
TAU_V = (0.0, 0.05)
BIAS = (False, True)
SUBSTEPS = (1, "auto")
ENGINES = ("loop", "fused", "brian2")
DUAL_VARIANTS = {
    "gain_bias_readout": dict(fast=("gain", "bias", "readout"),
                              lam={"gain": 1.0, "bias": 0.7, "readout": 0.5}),
    "learned_lam": dict(fast=("gain", "bias", "readout"), lam=0.8, learn_lam=True),
    "readout_only": dict(fast=("readout",), lam=0.5),
}


# ---------------------------------------------------------------------- engines
@contextlib.contextmanager
def numpy_loop():
    """The numpy engine's Python loop (no compiled kernel), on either side of a change."""
    try:
        from neuro_meta.engines import fused
    except ImportError:   # pragma: no cover
        yield
        return
    with fused.disabled():
        yield


def learner(engine, **kw):
    """A Learner running on ``engine`` ("loop", "fused" or "brian2")."""
    if engine == "brian2":
        return nm.Learner(engine="brian2", **kw)
    try:      # after the refactoring: engines are chosen by name
        return nm.Learner(engine="numpy" if engine == "loop" else "auto", **kw)
    except nm.ValidationError:
        return nm.Learner(engine="numpy", **kw)


def run_on(engine, fn):
    if engine == "loop":
        with numpy_loop():
            return fn()
    return fn()


# ---------------------------------------------------------------------- flattening
def flat_result(prefix, res, out):
    for i, a in enumerate(res.phi):
        out[f"{prefix}/phi{i}"] = np.asarray(a)
    for i, a in enumerate(res.bias):
        if a is not None:
            out[f"{prefix}/bias{i}"] = np.asarray(a)
    for i, a in enumerate(res.v):
        out[f"{prefix}/v{i}"] = np.asarray(a)
    out[f"{prefix}/t"] = np.asarray(res.t)
    for k, v in res.record.items():
        if isinstance(v, list):
            for i, a in enumerate(v):
                if a is not None:
                    out[f"{prefix}/rec_{k}{i}"] = np.asarray(a)
        else:
            out[f"{prefix}/rec_{k}"] = np.asarray(v)
    out[f"{prefix}/settled"] = np.asarray(res.settled)
    out[f"{prefix}/steps"] = np.asarray(res.steps)
    out[f"{prefix}/t_end"] = np.asarray(res.t_end)
    if res.substeps is not None:
        out[f"{prefix}/substeps"] = np.asarray(res.substeps)


def flat_tree(prefix, tree, out):
    for k, v in tree.items():
        for i, a in enumerate(v):
            if a is not None:
                out[f"{prefix}/{k}{i}"] = np.asarray(a)


def guarded(prefix, out, fn):
    """Run ``fn``; an error is stored as its class name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as err:   # noqa: BLE001 - the error class is the golden value
        out[f"{prefix}/error"] = np.asarray(type(err).__name__)


# ---------------------------------------------------------------------- models
def rate_net(kind, bias, tau_v, seed=1):
    syn = nm.ComplexSynapse(omega=nm.init.Glorot(), lam=nm.init.Uniform(0.5, 1.5))
    static = nm.StaticSynapse(weight=nm.init.Normal(0.8), bias=nm.init.Normal(0.3))
    synapses = [static, syn] if kind == "shallow" else [syn, syn]
    return nm.RateNetwork([3, 4, 2], activation=["tanh", "sigmoid"], synapse=synapses,
                          bias=bias, tau_neuron=tau_v, tau_synapse=1.0, seed=seed)


def data(B=2, K=4, V=3, n_in=3, n_out=2, seed=5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, K, n_in)), rng.normal(size=(B, K, n_out)),
            rng.normal(size=(B, V, n_in)), rng.normal(size=(B, V, n_out)))


def dual_model(variant, seed=0):
    return nm.DualSystem([2, 5, 4, 1], seed=seed, gain=nm.init.Uniform(0.8, 1.2),
                         bias=nm.init.Normal(0.1), **DUAL_VARIANTS[variant])


def three_phases(prefix, out, net, make, record, x, y, xv, yv):
    """A recorded fixed-duration phase, a settling phase and a nudged phase from it."""
    guarded(prefix + "/rec", out, lambda: flat_result(
        prefix + "/rec", make(duration=0.3).run(net, x, y, record=record, record_every=3),
        out))
    state = {}

    def settle():
        res = make(tol=1e-6, max_duration=20.0).run(net, x, y)
        state["phi"] = list(res.phi_aug)
        flat_result(prefix + "/free", res, out)

    guarded(prefix + "/free", out, settle)
    if "phi" in state:
        guarded(prefix + "/nudged", out, lambda: flat_result(
            prefix + "/nudged", make(tol=1e-6, max_duration=20.0).run(
                net, x, y, x_val=xv, y_val=yv, beta=0.1, phi_init=state["phi"]), out))


# ---------------------------------------------------------------------- captures
def capture_learner(out):
    x, y, xv, yv = data()
    for rule, kind in RULE_NETS:
        for pres in PRESENTATIONS:
            for integ in INTEGRATORS:
                for tau_v in TAU_V:
                    for bias in BIAS:
                        net = rate_net(kind, bias, tau_v)
                        for sub in SUBSTEPS:
                            for eng in ENGINES:
                                p = f"learn/{rule}-{kind}/{pres}/{integ}/tv{tau_v}/b{int(bias)}" \
                                    f"/s{sub}/{eng}"

                                def make(eng=eng, rule=rule, pres=pres, integ=integ,
                                         sub=sub, **kw):
                                    return learner(eng, rule=rule, presentation=pres,
                                                   integrator=integ, dt=0.01, substeps=sub,
                                                   **kw)

                                def go(p=p, net=net, make=make):
                                    three_phases(p, out, net, make,
                                                 ["phi", "bias", "v", "r", "loss"],
                                                 x, y, xv, yv)

                                guarded(p, out, lambda eng=eng, go=go: run_on(eng, go))
    # the automatic time step
    net = rate_net("deep", True, 0.0)
    guarded("learn/auto_dt", out, lambda: flat_result(
        "learn/auto_dt", nm.Learner(rule="backprop", tol=1e-8).run(net, x, y), out))


def capture_dual(out):
    x, y, xv, yv = data(B=2, K=6, V=5, n_in=2, n_out=1, seed=7)
    for variant in DUAL_VARIANTS:
        m = dual_model(variant)
        for integ in INTEGRATORS:
            p = f"dual/{variant}/{integ}"

            def make(integ=integ, **kw):
                return nm.Learner(rule="backprop", integrator=integ, dt=0.01, **kw)

            three_phases(p, out, m, make, ["phi", "loss"], x, y, xv, yv)
        guarded(f"dual/{variant}/auto_dt", out, lambda m=m, variant=variant: flat_result(
            f"dual/{variant}/auto_dt", nm.Learner(rule="backprop", integrator="expeuler",
                                                  tol=1e-9).run(m, x, y), out))


def capture_meta_gradients(out):
    x, y, xv, yv = data()
    task = nm.Task(x, y, xv, yv)
    for kind in ("shallow", "deep"):
        net = rate_net(kind, True, 0.0)
        for est in ("standard", "symmetric", "second_order"):
            p = f"cml/{kind}/{est}"
            guarded(p, out, lambda p=p, est=est, net=net: flat_tree(
                p, nm.CML(beta=1e-3, estimator=est, tol=1e-12).meta_gradient(
                    net, task, reduce="none"), out))
        for method in ("dense", "cg"):
            p = f"exact/{kind}/{method}"
            guarded(p, out, lambda p=p, method=method, net=net: flat_tree(
                p, nm.exact_meta_gradient(net, task, method=method, reduce="none"), out))
    xd, yd, xvd, yvd = data(B=2, K=6, V=5, n_in=2, n_out=1, seed=7)
    dtask = nm.Task(xd, yd, xvd, yvd)
    for variant in DUAL_VARIANTS:
        m = dual_model(variant)
        for est in ("standard", "symmetric", "second_order"):
            p = f"cml/dual-{variant}/{est}"
            guarded(p, out, lambda p=p, est=est, m=m: flat_tree(
                p, nm.CML(beta=1e-3, estimator=est, tol=1e-12).meta_gradient(
                    m, dtask, reduce="none"), out))
        p = f"exact/dual-{variant}"
        guarded(p, out, lambda p=p, m=m: flat_tree(
            p, nm.exact_meta_gradient(m, dtask, reduce="none"), out))


def capture_meta_training(out):
    fam = nm.families.Sinusoid()
    lrn = nm.Learner(rule="backprop", integrator="expeuler", dt=0.01, substeps="auto",
                     tol=1e-3, max_duration=30.0)
    nets = {
        "complex": nm.RateNetwork([1, 8, 8, 1], activation=["tanh", "tanh", "linear"],
                                  synapse=nm.ComplexSynapse(omega=nm.init.Glorot(), lam=1.0),
                                  tau_neuron=0.0, seed=0),
        "dual": nm.DualSystem([1, 8, 8, 1], lam=1.0, seed=0),
    }
    for name, net in nets.items():
        def go(name=name, net=net):
            cml = nm.CML(beta=0.1, estimator="standard",
                         learner=lrn if name == "complex" else nm.Learner(
                             rule="backprop", integrator="expeuler", dt=0.01, tol=1e-3,
                             max_duration=30.0))
            tr = nm.MetaTrainer(net, fam, cml, nm.optim.adam(6e-3), meta_batch=4, seed=0,
                                eval_tasks=4, lam_min=0.5)
            hist = tr.train(3, eval_every=10, progress=False)
            flat_tree(f"meta/{name}/theta", tr.net.theta, out)
            out[f"meta/{name}/mse"] = np.asarray(hist.meta_test_mse)
            out[f"meta/{name}/val"] = np.asarray(hist.train_val_loss)

        guarded(f"meta/{name}", out, go)


WALL = ("wall_time_s", "time_s", "seconds", "wall")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if not any(w in k for w in WALL) and k not in ("out", "_file")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


#: The quick runs step-bound (a wall-time budget stops at a machine-dependent step).
STEP_BOUND = ["--budget", "none", "--set", "meta.steps=20", "--set", "baselines.steps=200"]


def capture_cli(out):
    for name, extra in (("complex", []), ("dual", ["--model", "dual"])):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, "-m", "neuro_meta.cli", "run", "sinusoid",
                            "--quick", "--no-progress", "--out", d] + extra + STEP_BOUND,
                           check=True, capture_output=True)
            res = json.loads((Path(d) / "results.json").read_text())
        out[f"cli/{name}"] = np.asarray(json.dumps(_strip(res), sort_keys=True))


def capture(cli=False, parts=None):
    out = {}
    steps = {"learner": capture_learner, "dual": capture_dual,
             "meta_gradients": capture_meta_gradients, "meta_training": capture_meta_training}
    for name, fn in steps.items():
        if parts is None or name in parts:
            fn(out)
    if cli:
        capture_cli(out)
    return out


# ---------------------------------------------------------------------- comparing
def compare(old, new):
    """Per key: ("same" | "missing" | "new" | "error-changed" | max abs difference)."""
    report = {}
    for k in sorted(set(old) | set(new)):
        if k not in new:
            report[k] = "missing"
        elif k not in old:
            report[k] = "new"
        else:
            a, b = np.asarray(old[k]), np.asarray(new[k])
            if a.dtype.kind in "US" or b.dtype.kind in "US":
                if a.dtype.kind in "US" and b.dtype.kind in "US" and str(a) == str(b):
                    report[k] = "same"
                elif k.startswith("cli/"):
                    report[k] = _json_diff(json.loads(str(a)), json.loads(str(b)))
                else:
                    report[k] = f"changed: {a} -> {b}"
            elif a.shape != b.shape:
                report[k] = f"shape {a.shape} -> {b.shape}"
            elif np.array_equal(a, b, equal_nan=True):
                report[k] = "same"
            else:
                report[k] = float(np.max(np.abs(a.astype(float) - b.astype(float))))
    return report


def _json_diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [_json_diff(a.get(k), b.get(k), f"{path}.{k}") for k in set(a) | set(b)]
        return max((d for d in diffs if not isinstance(d, str)), default=0.0) \
            if all(not isinstance(d, str) or d == "same" for d in diffs) else \
            "; ".join(d for d in diffs if isinstance(d, str) and d != "same")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return _json_diff(dict(enumerate(a)), dict(enumerate(b)), path)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return "same" if a == b else abs(a - b)
    return "same" if a == b else f"{path}: {a!r} -> {b!r}"


def main(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("save", "compare"))
    p.add_argument("dir")
    p.add_argument("--cli", action="store_true")
    a = p.parse_args(argv)
    path = Path(a.dir) / "golden.npz"
    new = capture(cli=a.cli)
    if a.action == "save":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **new)
        print(f"{len(new)} keys -> {path}")
        return 0
    with np.load(path) as f:
        old = {k: f[k] for k in f.files}
    if not a.cli:
        old = {k: v for k, v in old.items() if not k.startswith("cli/")}
    rep = compare(old, new)
    same = sum(v == "same" for v in rep.values())
    print(f"{same} of {len(rep)} keys bit-identical")
    worst = {}
    for k, v in rep.items():
        if v != "same":
            print(f"  {k}: {v}")
            if isinstance(v, float):
                worst[k.split("/")[0]] = max(worst.get(k.split("/")[0], 0.0), v)
    for group, v in sorted(worst.items()):
        print(f"max |difference| in {group}: {v:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
