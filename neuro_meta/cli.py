"""The ``neuro-meta`` command line.

    neuro-meta run consolidation [--quick] [--out DIR] [--seed N]
    neuro-meta gradcheck [--out DIR]
    neuro-meta models

Errors of the package are printed as one line and exit with status 2 (``--debug`` shows
the traceback).
"""
import argparse
import sys
import time

EXPERIMENTS = ("consolidation",)


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

    g = sub.add_parser("gradcheck", help="CML meta-gradient error vs beta and vs the phases' "
                       "tolerance; writes results.json and gradcheck.png")
    g.add_argument("--out", default="results/gradcheck", help="output folder")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("models", help="list the model/experiment files")
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

        out = args.out or f"results/{args.experiment}"
        res = consolidation.run(out, quick=args.quick, seed=args.seed,
                                progress=not args.no_progress)
        print(consolidation.summary_table(res))
        print(f"wrote {out}/results.json and {out}/consolidation.png")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
