"""The ``neuro-meta`` command line.

    neuro-meta run consolidation|sinusoid|FILE.yaml [--quick] [--out DIR] [--seed N]
                   [--seeds N|LIST] [--set KEY.PATH=VALUE ...] [--models DIR]
    neuro-meta run sinusoid [--model complex|dual|readout] [--methods LIST] [--curves ...]
                            [--budget SECONDS|none]
    neuro-meta run omniglot [--ways N] [--shots K] [--methods LIST] [--budget SECONDS|none]
                            [--seeds N|LIST]
    neuro-meta run bandit [--methods LIST] [--budget SECONDS|none] [--curves ...]
    neuro-meta run vsml [--methods LIST] [--budget SECONDS|none]
    neuro-meta gradcheck [--out DIR]
    neuro-meta gradquality [--quick] [--out DIR]
    neuro-meta bench [--quick] [--out DIR]
    neuro-meta alphabets RUN_DIR [--tasks N] [--methods LIST]
    neuro-meta adaptation RUN_DIR [--tasks N] [--methods LIST]
    neuro-meta combine RUN_DIR RUN_DIR ... --out DIR
    neuro-meta models
    neuro-meta describe NAME

Errors of the package are printed as one line and exit with status 2 (``--debug``,
before or after the command, shows the traceback).
"""
import argparse
import contextlib
import math
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """Command-line errors as one line, ``neuro-meta <command>: error: ...`` (``--help``
    shows the usage), and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see "
                     f"{self.prog} --help)\n")


def _parser():
    p = _Parser(prog="neuro-meta", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)

    _run_parser(sub)
    g = sub.add_parser("gradcheck", help="CML meta-gradient error vs beta and vs the phases' "
                       "tolerance; writes results.json and gradcheck.png")
    g.add_argument("--out", default="results/gradcheck", help="output folder")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = sub.add_parser("gradquality", help="meta-gradient error vs compute of CML, CG, "
                       "Neumann, T1-T2, first-order MAML, Reptile; writes results.json and "
                       "gradquality.png")
    q.add_argument("--quick", action="store_true", help="short sweeps (about 15 s)")
    q.add_argument("--out", default="results/gradquality", help="output folder")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")

    b = sub.add_parser("bench", help="engine benchmarks: throughput against Brian2, "
                       "per-phase overhead, scaling; writes results.json")
    b.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes "
                   "with numba)")
    b.add_argument("--out", default="results/bench", help="output folder")

    a = sub.add_parser("alphabets", help="a finished omniglot run's selected methods "
                       "scored one alphabet at a time (where each wins and loses); "
                       "writes per_alphabet.json and per_alphabet.png into RUN_DIR")
    a.add_argument("run_dir", metavar="RUN_DIR", help="folder of neuro-meta run omniglot "
                   "(one seed, or the folder of --seeds: every seed_<k> in turn)")
    a.add_argument("--tasks", type=int, default=400, metavar="N",
                   help="tasks per alphabet (default 400)")
    a.add_argument("--methods", default=None, help="a comma-separated subset of the run's "
                   "methods (default: all)")
    a.add_argument("--serial", action="store_true", help="all in this process (default: "
                   "the run's compare.workers processes; the same numbers)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")

    ad = sub.add_parser("adaptation", help="a finished omniglot run's selected methods "
                        "scored under scaled test-time learning (CML's lambda, the MLP "
                        "methods' inner step and step count; MLPs also with the read-out "
                        "adapting alone), chosen on validation tasks; writes "
                        "adaptation.json and adaptation.png into RUN_DIR")
    ad.add_argument("run_dir", metavar="RUN_DIR", help="folder of neuro-meta run omniglot "
                    "(one seed, or the folder of --seeds: every seed_<k> in turn)")
    ad.add_argument("--tasks", type=int, default=500, metavar="N",
                    help="validation tasks the setting is chosen on (default 500)")
    ad.add_argument("--methods", default=None, help="a comma-separated subset of the run's "
                    "cml, maml, fomaml, anil, anil_fo, untrained (default: all of them it has)")
    ad.add_argument("--hidden", default="0.5,2", metavar="LIST", help="factors of CML's "
                    "hidden-layer lambda (default 0.5,2; 1 is always scored)")
    ad.add_argument("--readout", default="0.5,2", metavar="LIST", help="factors of CML's "
                    "read-out lambda (default 0.5,2; 1 is always scored)")
    ad.add_argument("--scales", default="0.5,0.7,1.4", metavar="LIST", help="factors of "
                    "the MLP methods' inner learning rate (default 0.5,0.7,1.4; 1 always)")
    ad.add_argument("--steps", default=None, metavar="LIST", help="inner step counts "
                    "besides the trained one (default: twice the trained one)")
    ad.add_argument("--serial", action="store_true", help="all in this process (default: "
                    "the run's compare.workers processes; the same numbers)")
    ad.add_argument("--no-progress", action="store_true", help="no progress bar")

    co = sub.add_parser("combine", help="one omniglot results table from runs made side by "
                        "side with a subset of the methods each (same configuration "
                        "otherwise): CML minus the MAML family paired over their test "
                        "tasks; writes results.json, omniglot.png and the checkpoints "
                        "into --out")
    co.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                    help="folders of finished neuro-meta run omniglot runs (two or more; "
                    "one seed each -- runs of several seeds are combined seed by seed, "
                    "then across the seeds -- or --seeds runs of the same seeds; a --seeds "
                    "folder beside runs of other seeds counts as its seed_<k> folders)")
    co.add_argument("--out", required=True, help="output folder (not one of the runs')")
    co.add_argument("--curves", choices=("time", "steps"), default="time",
                    help="x-axis of the learning curves (default time)")
    co.add_argument("--no-progress", action="store_true", help="accepted as by every "
                    "command (combine trains nothing and shows no progress bar)")

    mo = sub.add_parser("models", help="list the model/experiment files and where they "
                        "come from")
    mo.add_argument("--models", action="append", default=[], metavar="DIR",
                    help="a folder of model files searched before the shipped ones")
    d = sub.add_parser("describe", help="what a model file builds (model kind, fast "
                       "variables, meta-parameters, learning process) and which engine "
                       "runs its phases")
    d.add_argument("name", help="a model file's name (see neuro-meta models) or path")
    d.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="a folder of model files searched before the shipped ones")
    for command in sub.choices.values():    # --debug after the command too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks of errors")
    return p


def _run_parser(sub):
    """The options of ``neuro-meta run``."""
    r = sub.add_parser("run", help="meta-train on an experiment, print a results table, "
                       "write results.json and plots")
    r.add_argument("experiment", help="a shipped experiment (sinusoid, sinusoid_dual, "
                   "omniglot, omniglot_long, consolidation, bandit, vsml; see neuro-meta "
                   "models) or your own YAML file (which may 'extends:' a shipped one)")
    r.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY.PATH=VALUE", help="override one value of the file, e.g. "
                   "--set meta.steps=100 --set learner.dt=0.005 (repeatable)")
    r.add_argument("--seeds", default=None, help="run whole meta-trainings per seed and "
                   "report mean ± 95%% CI across them: a count (3: seeds 0, 1, 2) or a "
                   "list (0,4,7); with --executor each seed is one job (omniglot: seeds in "
                   "turn, each on the same processes; CML minus the MAML family paired "
                   "by seed)")
    r.add_argument("--curves", choices=("time", "steps"), default=None,
                   help="sinusoid, omniglot, bandit: x-axis of the learning curves: "
                   "meta-training wall time (default) or meta-steps")
    r.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="a folder of model files searched before the shipped ones")
    r.add_argument("--quick", action="store_true", help="a short run (seconds)")
    r.add_argument("--out", default=None, help="output folder (default results/EXPERIMENT)")
    r.add_argument("--seed", type=int, default=None, help="meta-training seed")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--methods", default=None,
                   help="sinusoid, omniglot: comma-separated methods (default all: "
                   "cml,maml,fomaml,reptile,imaml,untrained; opt-in: anil, anil_fo, warpgrad, "
                   "...); bandit: of cml_dual,"
                   "cml_complex,maml,uniform,lingreedy,linfullpost (default all); vsml: "
                   "of vsml,sgd,adam,cml (default all)")
    r.add_argument("--budget", default=None, metavar="SECONDS|none",
                   help="sinusoid, omniglot, bandit: wall-time budget of meta-training per "
                   "method, the same for every method (sets compare.budget_s); 'none': run "
                   "meta.steps / baselines.steps instead; vsml: evolution strategies' "
                   "wall time (sets es.budget_s)")
    r.add_argument("--model", choices=("complex", "dual", "readout"), default=None,
                   help="sinusoid: the CML model -- complex synapses (default), the dual "
                   "system (slow weights, fast gains/biases/readout) or its readout-only "
                   "variant")
    r.add_argument("--ways", type=int, default=None, metavar="N",
                   help="omniglot: classes per task (sets family.ways; default 5)")
    r.add_argument("--shots", type=int, default=None, metavar="K",
                   help="omniglot: training images per class (sets family.shots; default 1)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoints and "
                   "partial.json in OUT (with --seeds: every seed from OUT/seed_<k>/; "
                   "finished methods are not trained again); a step-bound run ends with "
                   "the numbers of an uninterrupted one")
    r.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="write each method's checkpoint after the first meta-step that "
                   "ends this much wall time after the previous write, besides at every "
                   "evaluation and the end (default 30; 0: after every meta-step; vsml's "
                   "evolution strategies keep theirs: every 10 ES steps). A crash loses "
                   "at most about this much meta-training; nothing the run trains or "
                   "selects depends on it, only the wall time it takes")
    r.add_argument("--executor", choices=("serial", "processes", "dask"), default="serial",
                   help="where tasks are simulated: in-process (default), a local process "
                   "pool, or Dask (a local cluster, or --scheduler ADDRESS)")
    r.add_argument("--workers", type=int, default=2, help="workers of the process pool or "
                   "local Dask cluster (default 2)")
    r.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    r.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up connecting to --scheduler after this long (default 10 s)")



def main(argv=None):
    args = _parser().parse_args(argv)
    from ._progress import add_bar_hook, remove_bar_hook
    from .errors import NeuroMetaError, ValidationError

    _CREATED.clear()
    held = _HeldWarnings()
    try:
        with warnings.catch_warnings():
            if not args.debug:      # a warning as one line, not with its source line
                warnings.showwarning = held.show
                add_bar_hook(held.release)
            try:
                code = _dispatch(args)
            except ValidationError:
                raise               # a refused setting: its held warnings go with it
            except BaseException:   # the work failed: what led up to it is shown first
                held.release()
                raise
            finally:
                remove_bar_hook(held.release)
        held.release()
        return code
    except NeuroMetaError as err:
        _remove_empty_created()
        if args.debug:          # the traceback, and the same exit status as without
            traceback.print_exc()
            return 2
        print(f"neuro-meta: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:      # a path the OS refuses (the package's own errors above)
        if args.debug:
            traceback.print_exc()
            return 2
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"neuro-meta: error: {where}{err.strerror or err} (--debug shows the "
              "traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuro-meta: interrupted", file=sys.stderr)
        return 130


class _HeldWarnings:
    """The warnings of a command, each one line (:func:`_warning_line`). Those raised
    before its long work starts (its first progress bar, shown or not) -- while its
    settings are read and checked -- are held: shown when the work starts, when the
    command ends or fails, and dropped only if a setting is refused (ValidationError),
    so that a refused command prints one line, its error. Later ones are shown at once,
    and so are a forked worker process's (which must not show the parent's held ones
    again)."""

    def __init__(self):
        self.held = []
        self.live = False
        self.pid = os.getpid()

    def show(self, message, category, filename, lineno, file=None, line=None):
        if self.live or os.getpid() != self.pid:
            _warning_line(message, category, filename, lineno)
        else:
            self.held.append((message, category, filename, lineno))

    def release(self):
        if os.getpid() != self.pid:     # a forked worker's bar: the parent's to show
            return
        self.live = True
        held, self.held = self.held, []
        for item in held:
            _warning_line(*item)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """A warning of a command as one line, ``neuro-meta: warning: ...`` (its category's
    name if it is not a plain UserWarning), on standard error."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    print(f"neuro-meta: warning{kind}: {' '.join(str(message).split())}", file=sys.stderr)


def _dispatch(args):
    if args.command == "models":
        from .models import available_models

        for name, source, path in available_models(args.models):
            print(f"{name:<20} {source:<18} {path}")
        return 0
    if args.command == "describe":
        from .experiments.describe import describe

        print(describe(args.name, args.models))
        return 0
    if args.command == "bench":
        from . import bench

        bench.main(quick=args.quick, out=_out_dir(args.out, "bench"))
        return 0
    if args.command == "gradcheck":
        from .experiments import gradcheck

        t0 = time.perf_counter()
        res = gradcheck.run(_out_dir(args.out, "gradcheck"), progress=not args.no_progress)
        print(gradcheck.summary_table(res))
        print(f"wrote {args.out}/results.json and {args.out}/gradcheck.png "
              f"({time.perf_counter() - t0:.1f} s)")
        return 0
    if args.command == "gradquality":
        from .experiments import gradquality

        res = gradquality.run(_out_dir(args.out, "gradquality"), quick=args.quick,
                              progress=not args.no_progress)
        print(gradquality.summary_table(res))
        print(f"wrote {args.out}/results.json and {args.out}/gradquality.png")
        return 0
    if args.command == "run":
        from .errors import ValidationError

        try:
            return _run(args)
        except ValidationError as err:      # (the same error, its traceback kept)
            err.args = (_blame_set(str(err), args.overrides),)
            raise
    if args.command == "alphabets":
        from .experiments import omniglot

        res = omniglot.per_alphabet(args.run_dir, n_tasks=args.tasks, methods=args.methods,
                                    progress=not args.no_progress,
                                    executor="serial" if args.serial else None)
        print(omniglot.alphabets_table(res))
        print(f"wrote {args.run_dir}/per_alphabet.json and {args.run_dir}/per_alphabet.png")
        return 0
    if args.command == "combine":
        from .experiments import omniglot

        res = omniglot.combine(args.run_dirs, _out_dir(args.out, "combine"),
                               curves=args.curves)
        if res.get("seeds") is not None:
            print(omniglot.seeds_table(res))
            print(f"wrote {args.out}/results.json, {args.out}/seeds.png and "
                  f"{args.out}/seed_*/ (each with the runs' checkpoints)")
        else:
            print(omniglot.summary_table(res))
            print(f"wrote {args.out}/results.json, {args.out}/omniglot.png and the runs' "
                  "checkpoints")
        return 0
    if args.command == "adaptation":
        from .experiments import omniglot

        res = omniglot.adaptation_screen(
            args.run_dir, n_val=args.tasks, methods=args.methods, hidden=args.hidden,
            readout=args.readout, scales=args.scales, steps=args.steps,
            progress=not args.no_progress, executor="serial" if args.serial else None)
        print(omniglot.adaptation_table(res))
        print(f"wrote {args.run_dir}/adaptation.json and {args.run_dir}/adaptation.png")
        return 0
    raise AssertionError(args.command)


def _blame_set(message, overrides):
    """``message`` saying which ``--set`` it is about: an error about a value names the
    model file the other values came from, not the command line the offending one came
    from. What the error is about is the key path right after the file's name: a
    ``--set`` of that very key: `` (the value given by --set)`` (key and value not
    repeated); a bare section (a rule between its keys) that a ``--set`` changed:
    `` (with --set KEY=VALUE)``; anything else is left as it is."""
    if "--set" in message:
        return message
    head = re.match(r"(?:.*?\.ya?ml: )?([A-Za-z_][\w.]*):", message)
    if head is None:
        return message
    head = head.group(1)
    keys = [(i, i.split("=", 1)[0].strip()) for i in overrides or ()]
    if any(k == head for _, k in keys):
        return f"{message} (the value given by --set)"
    blamed = [i for i, k in keys if "." not in head and k.split(".", 1)[0] == head]
    return f"{message} (with --set {', --set '.join(blamed)})" if blamed else message


def _run(args):
    """``neuro-meta run``: load the experiment file, apply the overrides, run one seed or
    several, print the table."""
    from .errors import ValidationError
    from .experiments import bandit, consolidation, omniglot, seeds as seeds_mod, sinusoid
    from .experiments import vsml
    from .models import load_model

    name = args.experiment
    if args.model not in (None, "complex"):
        if name != "sinusoid":
            raise ValidationError(f"neuro-meta run.--model: only with the shipped sinusoid "
                                  f"experiment; for a file of your own give network.kind "
                                  f"(got --model {args.model} with {name!r})")
        name = "sinusoid_dual"
    cfg = load_model(name, dirs=args.models)
    experiment = cfg.get("experiment")
    runners = {"sinusoid": sinusoid, "omniglot": omniglot, "consolidation": consolidation,
               "bandit": bandit, "vsml": vsml}
    if experiment in ("gradcheck", "gradquality"):
        raise ValidationError(f"neuro-meta run.experiment: {name} is not run by neuro-meta "
                              f"run: it has a command of its own, neuro-meta {experiment} "
                              f"(got {name!r})")
    if not isinstance(experiment, str) or experiment not in runners:
        raise ValidationError(f"{cfg['_file']}: experiment: must be one of "
                              f"{', '.join(runners)} (a file that extends a shipped one "
                              f"inherits it) (got {experiment!r})")
    exp = runners[experiment]
    model = args.model or ("dual" if sinusoid.is_dual(cfg) else "complex")
    stem = name if args.model in (None, "complex") else f"sinusoid_{model}"
    out = _out_dir(f"results/{Path(stem).stem}" if args.out is None else args.out)
    overrides = list(args.overrides)
    only = {"sinusoid": ("model",), "omniglot": ("ways", "shots")}
    for opt in ("model", "ways", "shots", "methods", "budget", "curves"):
        allowed = [e for e, opts in only.items() if opt in opts] if opt in (
            "model", "ways", "shots") else ["sinusoid", "omniglot", "bandit"] + (
            [] if opt == "curves" else ["vsml"])
        if getattr(args, opt) is not None and experiment not in allowed:
            raise ValidationError(f"neuro-meta run.--{opt}: only for the "
                                  f"{' and '.join(allowed)} experiment"
                                  f"{'s' if len(allowed) > 1 else ''} "
                                  f"(got {getattr(args, opt)!r} with {experiment})")
    if args.seed is not None and args.seed < 0:
        raise ValidationError(f"neuro-meta run.--seed: must be >= 0 (got {args.seed})")
    kw = {}
    if experiment in ("sinusoid", "omniglot", "bandit"):
        kw = {"methods": args.methods, "curves": args.curves or "time"}
        if args.budget is not None:
            budget = _budget(args.budget)
            if budget == "null" and args.quick and not any(
                    o.split("=", 1)[0].strip() in ("meta.steps", "baselines.steps")
                    for o in args.overrides):
                raise ValidationError(
                    "neuro-meta run.--budget: 'none' with --quick runs the file's step "
                    "counts (its caps, up to 100000 meta-steps: no quick run); give them, "
                    "e.g. --set meta.steps=20 --set baselines.steps=200, or keep --quick's "
                    "budget (got --budget none --quick)")
            overrides.append(f"compare.budget_s={budget}")
    if experiment == "sinusoid":
        kw["model"] = model if args.model else "complex"
    if experiment == "omniglot":
        kw.update(ways=args.ways, shots=args.shots)
    if experiment == "bandit" and args.seeds is not None:
        raise ValidationError("neuro-meta run.--seeds: not for the bandit experiment "
                              "(its deployment's streams are deploy.seeds; run --seed N "
                              "per meta-training seed) "
                              f"(got --seeds {args.seeds})")
    if experiment == "vsml":        # ES's budget; methods of neuro_meta.experiments.vsml
        kw = {"methods": args.methods}
        if args.budget is not None:
            overrides.append(f"es.budget_s={_budget(args.budget)}")
        if args.seeds is not None:
            raise ValidationError("neuro-meta run.--seeds: not for the vsml experiment "
                                  f"(run --seed N per seed) (got --seeds {args.seeds})")
    kw.update(quick=args.quick, cfg=cfg, overrides=overrides)
    every_s = args.checkpoint_every
    if every_s is not None and not (math.isfinite(every_s) and every_s >= 0):
        raise ValidationError("neuro-meta run.--checkpoint-every: must be a finite number "
                              f"of seconds >= 0 (got {every_s!r})")
    run = exp.run
    if every_s is not None:         # set where each run executes: here, or on the
        import functools            # workers of a --seeds run's seed jobs

        from .checkpoint import with_cadence

        run = functools.partial(with_cadence, every_s, exp.run)
    with _executor(args) as executor:
        if args.seeds is not None:
            if args.seed is not None:
                raise ValidationError("neuro-meta run.--seeds: not with --seed "
                                      f"(got --seeds {args.seeds})")
            kw["resume"] = args.resume      # each seed from its own OUT/seed_<k>/
            if experiment == "omniglot":    # seeds in turn, each on the same processes
                res = seeds_mod.run_seeds(
                    run, out, seeds_mod.parse_seeds(args.seeds), executor=executor,
                    progress=not args.no_progress, aggregate_fn=exp.aggregate_seeds,
                    plot_fn=exp.plot_seeds, seed_jobs=False, **kw)
                print(exp.seeds_table(res))
            else:
                res = seeds_mod.run_seeds(run, out, seeds_mod.parse_seeds(args.seeds),
                                          executor=executor, progress=not args.no_progress,
                                          **kw)
                print(seeds_mod.summary_table(res))
            print(f"wrote {out}/results.json, {out}/seeds.png and {out}/seed_*/")
            return 0
        res = run(out, seed=args.seed, progress=not args.no_progress,
                  resume=args.resume, executor=executor, **kw)
    print(exp.summary_table(res))
    extra = " and fast_patterns.png" if experiment == "sinusoid" and sinusoid.is_dual(
        res["config"]) else ""
    if experiment == "omniglot":
        extra = (", omniglot_tasks.png and omniglot_consolidation.png"
                 if "cml" in res["methods"] else "")
    if experiment == "bandit":
        extra = " and bandit_meta.png" if res.get("meta") else ""
    print(f"wrote {out}/results.json, {out}/{experiment}.png{extra}")
    return 0


#: The folders :func:`_out_dir` created in this call of :func:`main` (deepest first):
#: a refused run removes those it left empty, so a mistyped setting leaves no folder.
_CREATED = []


def _remove_empty_created():
    for p in _CREATED:
        try:
            p.rmdir()           # (only an empty folder: anything written stays)
        except OSError:
            break
    _CREATED.clear()


def _out_dir(path, command="run"):
    """``--out`` of ``neuro-meta COMMAND``: a folder that exists or can be created
    (checked before any work; a folder created here and still empty when the command is
    refused is removed). Errors name ``neuro-meta COMMAND.--out``."""
    from .errors import ValidationError

    where = f"neuro-meta {command}.--out"
    if not str(path).strip():     # (Path("") is the current folder: never meant)
        raise ValidationError(f"{where}: must name a folder (got an empty path)")
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise ValidationError(f"{where}: must be a folder, not a file (got {path!r})")
        new = [q for q in (p.absolute(), *p.absolute().parents) if not q.exists()]
        p.mkdir(parents=True, exist_ok=True)
        _CREATED.extend(q for q in new if q not in _CREATED)
        probe = p / ".neuro_meta_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValidationError(f"{where}: cannot write the output folder "
                              f"({err.strerror or err}) (got {path!r})") from None
    return str(p)


def _budget(text):
    """``--budget``: seconds (> 0) or ``none``, as the YAML value of compare.budget_s."""
    from . import _params as P

    if text.strip().lower() in ("none", "null"):
        return "null"
    try:
        value = float(text)
    except ValueError:
        P.fail("neuro-meta run", "--budget", "must be a number of seconds > 0 or 'none'",
               repr(text))
    return repr(P.real(value, "neuro-meta run", "--budget", low=0.0, low_open=True))


def _connect(Client, address, timeout):
    """A ``dask.distributed.Client`` of the scheduler at ``address``, or one line saying
    why not within ``timeout`` seconds."""
    from .errors import ValidationError

    if not timeout > 0:
        raise ValidationError(f"neuro-meta run.--scheduler-timeout: must be > 0 s "
                              f"(got {timeout!r})")
    try:
        return Client(address, timeout=f"{timeout}s")
    except (OSError, ValueError, TypeError, TimeoutError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValidationError(f"neuro-meta run.--scheduler: no Dask scheduler answered "
                              f"within {timeout:g} s ({msg}) (got {address!r})") from None


class _executor:
    """Context manager giving the executor chosen on the command line."""

    def __init__(self, args):
        self.args = args
        self._stack = contextlib.ExitStack()   # what to close, in reverse order

    def __enter__(self):
        a = self.args
        from .workers import check_workers

        if not a.scheduler:             # (a remote cluster's workers are its own)
            check_workers(a.workers, "neuro-meta run", "--workers")
        if a.executor == "processes":
            from .workers import process_pool

            ex = process_pool(a.workers)
            self._stack.callback(ex.shutdown)
            return ex
        if a.executor == "dask" or a.scheduler:
            try:
                from dask.distributed import Client
            except ImportError:
                from .errors import ValidationError

                raise ValidationError("neuro-meta run.--executor: 'dask' needs the "
                                      "distributed extra: pip install -e '.[distributed]' "
                                      "(got 'dask')") from None
            if a.scheduler:
                client = _connect(Client, a.scheduler, a.scheduler_timeout)
                self._stack.callback(client.close)
                return client
            from .workers import local_cluster

            return self._stack.enter_context(local_cluster(a.workers))
        return None

    def __exit__(self, *exc):
        self._stack.close()     # every step runs even if an earlier one raises
        return False


if __name__ == "__main__":
    sys.exit(main())
