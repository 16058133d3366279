"""The ``neuro-meta`` command line.

    neuro-meta run consolidation [--quick] [--out DIR] [--seed N]
    neuro-meta run sinusoid [--model complex|dual|readout] [--methods LIST] [--quick] ...
    neuro-meta gradcheck [--out DIR]
    neuro-meta bench [--quick] [--out DIR]
    neuro-meta models
    neuro-meta describe NAME

Errors of the package are printed as one line and exit with status 2 (``--debug`` shows
the traceback).
"""
import argparse
import sys
import time

EXPERIMENTS = ("consolidation", "sinusoid")


def _parser():
    p = argparse.ArgumentParser(prog="neuro-meta", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="meta-train on an experiment, print a results table, "
                       "write results.json and plots")
    r.add_argument("experiment", choices=EXPERIMENTS)
    r.add_argument("--quick", action="store_true", help="a short run (seconds)")
    r.add_argument("--out", default=None, help="output folder (default results/EXPERIMENT)")
    r.add_argument("--seed", type=int, default=None, help="meta-training seed")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--methods", default=None,
                   help="sinusoid: comma-separated methods (default all: "
                   "cml,maml,fomaml,reptile,imaml,untrained)")
    r.add_argument("--model", choices=("complex", "dual", "readout"), default=None,
                   help="sinusoid: the CML model -- complex synapses (default), the dual "
                   "system (slow weights, fast gains/biases/readout) or its readout-only "
                   "variant")
    r.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz (same final numbers as one run)")
    r.add_argument("--executor", choices=("serial", "processes", "dask"), default="serial",
                   help="where tasks are simulated: in-process (default), a local process "
                   "pool, or Dask (a local cluster, or --scheduler ADDRESS)")
    r.add_argument("--workers", type=int, default=2, help="workers of the process pool or "
                   "local Dask cluster (default 2)")
    r.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")

    g = sub.add_parser("gradcheck", help="CML meta-gradient error vs beta and vs the phases' "
                       "tolerance; writes results.json and gradcheck.png")
    g.add_argument("--out", default="results/gradcheck", help="output folder")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    b = sub.add_parser("bench", help="engine benchmarks: throughput against Brian2, "
                       "per-phase overhead, scaling; writes results.json")
    b.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    b.add_argument("--out", default="results/bench", help="output folder")

    sub.add_parser("models", help="list the model/experiment files")
    d = sub.add_parser("describe", help="what a model file builds (model kind, fast "
                       "variables, meta-parameters, learning process) and which engine "
                       "runs its phases")
    d.add_argument("name", help="a model file's name (see neuro-meta models) or path")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    from .errors import NeuroMetaError

    try:
        return _dispatch(args)
    except NeuroMetaError as err:
        if args.debug:
            raise
        print(f"neuro-meta: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuro-meta: interrupted", file=sys.stderr)
        return 130


def _dispatch(args):
    if args.command == "models":
        from .models import available_models, find_model

        for name in available_models():
            print(f"{name:<20} {find_model(name)}")
        return 0
    if args.command == "describe":
        from .experiments.describe import describe

        print(describe(args.name))
        return 0
    if args.command == "bench":
        from . import bench

        bench.main(quick=args.quick, out=args.out)
        return 0
    if args.command == "gradcheck":
        from .experiments import gradcheck

        t0 = time.perf_counter()
        res = gradcheck.run(args.out, progress=not args.no_progress)
        print(gradcheck.summary_table(res))
        print(f"wrote {args.out}/results.json and {args.out}/gradcheck.png "
              f"({time.perf_counter() - t0:.1f} s)")
        return 0
    if args.command == "run":
        from .experiments import consolidation

        model = args.model or "complex"
        out = args.out or (f"results/{args.experiment}" if model == "complex"
                           else f"results/{args.experiment}_{model}")
        if args.experiment == "sinusoid":
            from .experiments import sinusoid as exp

            kw = {"methods": args.methods, "model": model}
        else:
            exp, kw = consolidation, {}
            for opt in ("methods", "model"):
                if getattr(args, opt) is not None:
                    from .errors import ValidationError

                    raise ValidationError(f"neuro-meta run.--{opt}: only for the sinusoid "
                                          f"experiment (got {getattr(args, opt)!r})")
        with _executor(args) as executor:
            res = exp.run(out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
                          resume=args.resume, executor=executor, **kw)
        print(exp.summary_table(res))
        extra = f" and {out}/fast_patterns.png" if model != "complex" else ""
        print(f"wrote {out}/results.json, {out}/{args.experiment}.png{extra}")
        return 0
    raise AssertionError(args.command)


class _executor:
    """Context manager giving the executor chosen on the command line."""

    def __init__(self, args):
        self.args = args
        self._close = []

    def __enter__(self):
        a = self.args
        if a.workers < 1:
            from .errors import ValidationError

            raise ValidationError(f"neuro-meta run.--workers: must be >= 1 (got {a.workers})")
        if a.executor == "processes":
            from concurrent.futures import ProcessPoolExecutor

            ex = ProcessPoolExecutor(a.workers)
            self._close.append(lambda: ex.shutdown())
            return ex
        if a.executor == "dask" or a.scheduler:
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:
                from .errors import ValidationError

                raise ValidationError("neuro-meta run.--executor: 'dask' needs the "
                                      "distributed extra: pip install -e '.[distributed]' "
                                      "(got 'dask')") from None
            if a.scheduler:
                client = Client(a.scheduler)
            else:
                cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address=None)
                self._close.append(cluster.close)
                client = Client(cluster)
            self._close.insert(0, client.close)
            return client
        return None

    def __exit__(self, *exc):
        for fn in self._close:
            fn()
        return False


if __name__ == "__main__":
    sys.exit(main())
