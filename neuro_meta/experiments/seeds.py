"""Whole experiments across meta-training seeds, with 95 % confidence intervals.

``neuro-meta run EXPERIMENT --seeds 0,1,2`` (or ``--seeds 3``: seeds 0, 1, 2) runs the
experiment once per seed -- in this process, or each seed as one job of an executor (a
process pool or a Dask cluster), with identical numbers either way -- into
``OUT/seed_<k>/``, and aggregates: per method the mean over seeds of the meta-test MSE
and its 95 % confidence interval (Student's t with n - 1 degrees of freedom, the seeds
being the independent samples), beside the mean per-task s.e.m. of a single run, which
says how precisely each seed's number is measured but nothing about the seed's luck.
Where the runs report a time to target (the sinusoid comparison), also its mean and 95 %
CI per target over the seeds that reached the target, with how many did ("reached k/n").
"""
import numpy as np
from scipy import stats

from .. import _params as P
from ..errors import SimulationError, ValidationError
from ..io import reads_results, save_figure, write_results


#: The most seeds one call runs (each is a whole meta-training).
MAX_SEEDS = 1000


def parse_seeds(text, owner="neuro-meta run.--seeds"):
    """``"3"`` -> [0, 1, 2]; ``"0,4,7"`` -> [0, 4, 7] (distinct, >= 0; at most
    :data:`MAX_SEEDS` of them)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValidationError(f"{owner}: must be a number of seeds or a comma-separated "
                              f"list of seeds (got {text!r})") from None
    if len(values) == 1 and "," not in str(text):
        if not 1 <= values[0] <= MAX_SEEDS:
            raise ValidationError(f"{owner}: the number of seeds must be in 1..{MAX_SEEDS} "
                                  f"(each is a whole meta-training) (got {text!r})")
        return list(range(values[0]))
    if len(values) > MAX_SEEDS:
        raise ValidationError(f"{owner}: at most {MAX_SEEDS} seeds (each is a whole "
                              f"meta-training) (got {len(values)})")
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ValidationError(f"{owner}: seeds must be distinct integers >= 0 "
                              f"(got {text!r})")
    return values


def ci95(values):
    """(mean, half-width of the 95 % confidence interval of the mean); the half-width is
    nan for a single value. ``values``: one or more finite real numbers."""
    v = P.finite_array(values, "seeds.ci95", "values", ndim=1)
    if v.size == 0:
        P.fail("seeds.ci95", "values", "must hold at least one value", "an empty sequence")
    if v.size < 2:
        return float(v.mean()), float("nan")
    t = stats.t.ppf(0.975, v.size - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = v.mean(), v.std(ddof=1)
        half = t * std / np.sqrt(v.size)
        if not (np.isfinite(mean) and np.isfinite(half)):
            # the sums of squares (or the sum) overflowed: the same numbers computed on
            # v scaled by its largest magnitude (only here: other values keep theirs)
            scale = float(np.abs(v).max())
            u = v / scale
            mean = scale * u.mean()
            half = scale * (t * u.std(ddof=1) / np.sqrt(v.size))
    if not (np.isfinite(mean) and np.isfinite(half)):
        raise SimulationError(
            f"seeds.ci95: the {'mean' if not np.isfinite(mean) else 'half-width'} of the "
            f"95 % confidence interval of {v.size} values up to {float(np.abs(v).max()):.3g}"
            " in magnitude exceeds the float range. Hint: the per-seed results diverged; "
            "check the runs, or rescale the values before aggregating them")
    return float(mean), float(half)


def run_seeds(run, out_dir, seeds, executor=None, progress=True, aggregate_fn=None,
              plot_fn=None, seed_jobs=True, **kwargs):
    """Run ``run(out_dir/seed_<k>, seed=k, **kwargs)`` for every seed and aggregate;
    writes ``OUT/results.json`` and ``OUT/seeds.png``; returns the aggregate.

    ``seed_jobs=True``: each seed is one job of ``executor`` if given (seeds in
    parallel). ``seed_jobs=False``: the seeds run one after the other in this process,
    each given ``executor=executor`` (an experiment that spreads its own work -- e.g.
    every method's meta-batches for an equal-processes comparison -- over it).
    ``aggregate_fn(seeds, per_seed)`` and ``plot_fn(path, agg)`` replace
    :func:`aggregate` and :func:`plot` (the meta-test MSE of regression experiments).
    ``resume=True`` (passed on to ``run``) continues every seed from its own folder with
    that experiment's resume: what had finished is not trained again, an interrupted
    meta-training continues from its checkpoint, a seed not begun starts; every seed's
    checkpoints and partial results are read first (:func:`check_resumable`), so a
    damaged file of a later seed stops the run before any seed trains."""
    from pathlib import Path

    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        P.fail("run_seeds", "seeds", "must be a list of seeds (integers >= 0; "
               "parse_seeds turns '3' into [0, 1, 2])", P.shown(seeds))
    seeds = [P.integer(s, "run_seeds", "seeds", low=0) for s in seeds]
    if not seeds:
        P.fail("run_seeds", "seeds", "must name at least one seed", repr(seeds))
    if len(set(seeds)) != len(seeds):       # one folder, one run: counted twice in the CI
        P.fail("run_seeds", "seeds", "must be distinct (a repeated seed is the same run, "
               "counted twice in the confidence interval)", repr(seeds))
    if len(seeds) > MAX_SEEDS:
        P.fail("run_seeds", "seeds", f"must be at most {MAX_SEEDS} seeds (each is a whole "
               "meta-training)", f"{len(seeds)} seeds")
    for attr, flag in (("seed_jobs", seed_jobs), ("progress", progress)):
        if not isinstance(flag, (bool, np.bool_)):
            P.fail("run_seeds", attr, "must be True or False", repr(flag))
    if seed_jobs and executor is not None and not hasattr(executor, "submit"):
        P.fail("run_seeds", "executor", "must be None or an executor with submit (a "
               "concurrent.futures executor or a dask.distributed.Client) when the seeds "
               "are its jobs (seed_jobs=True)", P.shown(executor))
    if not isinstance(out_dir, (str, __import__("os").PathLike)):
        P.fail("run_seeds", "out_dir", "must be a folder path (str or os.PathLike)",
               P.shown(out_dir))
    if not callable(run):
        P.fail("run_seeds", "run", "must be an experiment's run function (e.g. "
               "neuro_meta.experiments.sinusoid.run)", P.shown(run))
    for attr, fn in (("aggregate_fn", aggregate_fn), ("plot_fn", plot_fn)):
        if fn is not None and not callable(fn):
            P.fail("run_seeds", attr, "must be a function", repr(fn))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kwargs.get("resume"):
        for s in seeds:
            check_resumable(out / f"seed_{s}")
    if not seed_jobs:
        per_seed = []
        for i, s in enumerate(seeds):
            if progress:
                print(f"seed {s} ({i + 1} of {len(seeds)})", flush=True)
            per_seed.append(run(out / f"seed_{s}", seed=s, progress=progress,
                                executor=executor, **kwargs))
    elif executor is None:
        per_seed = [run(out / f"seed_{s}", seed=s, progress=progress, **kwargs)
                    for s in seeds]
    else:
        futures = [executor.submit(run, out / f"seed_{s}", seed=s, progress=False,
                                   **kwargs) for s in seeds]
        per_seed = [f.result() for f in futures]
    agg = (aggregate_fn or aggregate)(seeds, per_seed)
    write_results(out / "results.json", agg)
    (plot_fn or plot)(out / "seeds.png", agg)
    return agg


def check_resumable(folder):
    """Before a resumed ``--seeds`` run trains anything: the files a seed's resume reads
    from ``folder`` -- every ``*checkpoint.npz`` and ``partial.json`` -- must be readable
    (:class:`~neuro_meta.checkpoint.CheckpointError`, or
    :class:`~neuro_meta.errors.ValidationError` for a partial-results file that is not
    JSON), so that a damaged file of a later seed is refused before the earlier seeds
    spend their budgets, not when its seed starts. A folder that does not exist is a seed
    not begun. Whether the files belong to the run's configuration is checked when the
    seed starts (the experiment's own resume)."""
    import json
    from pathlib import Path

    from .. import checkpoint as ckpt

    import os

    if not isinstance(folder, (str, os.PathLike)):
        P.fail("check_resumable", "folder", "must be a path (str or os.PathLike)",
               type(folder).__name__)
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*checkpoint.npz")):
        ckpt.load(path)
    partial = folder / "partial.json"
    if partial.exists():
        try:
            json.loads(partial.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValidationError(f"{partial}: not valid JSON ({err}); move it aside or "
                                  "restart without --resume") from None


def _half(half):
    """A CI half-width for the JSON: None where it is undefined (one seed), never NaN."""
    return float(half) if np.isfinite(half) else None


def aggregate(seeds, per_seed):
    """Per method: mean ± 95 % CI of the meta-test MSE across seeds, the per-seed
    numbers, the mean per-task s.e.m., wall time and meta-steps (which differ between
    seeds under a wall-time budget), and -- if the runs have one -- the time to each
    target (:func:`time_to_target`); the per-seed histories."""
    methods = {}
    for name in per_seed[0]["methods"]:
        runs = [r["methods"][name] for r in per_seed if name in r["methods"]]
        mse = [m["meta_test_mse"] for m in runs]
        mean, half = ci95(mse)
        steps = [m["meta_steps"] for m in runs]
        methods[name] = {"meta_test_mse": mean, "ci95": _half(half), "n_seeds": len(mse),
                         "per_seed": mse, "sem_per_seed": [m["sem"] for m in runs],
                         "mean_sem": float(np.mean([m["sem"] for m in runs])),
                         "wall_time_s": float(np.mean([m["wall_time_s"] for m in runs])),
                         "meta_steps": int(round(float(np.mean(steps)))),
                         "meta_steps_per_seed": steps}
        if any("time_to_target" in m for m in runs):
            methods[name]["time_to_target"] = time_to_target(
                [m.get("time_to_target") or {} for m in runs])
    history = {name: [r["history"][name] for r in per_seed]
               for name in per_seed[0].get("history", {})
               if isinstance(per_seed[0]["history"].get(name), dict)}
    if not history and "step" in per_seed[0].get("history", {}):   # one-method experiments
        history = {"cml": [r["history"] for r in per_seed]}
    return {"seeds": list(seeds), "methods": methods, "history": history,
            "per_seed": {str(s): r for s, r in zip(seeds, per_seed)},
            "config": per_seed[0].get("config")}


def time_to_target(runs):
    """Across seeds, per target: mean and 95 % CI half-width (s) of the time to target
    over the seeds that reached it (None if none did), ``reached`` of ``n`` seeds, and
    the per-seed times (None: not reached). ``runs``: per seed, ``{target: {"time_s",
    "step"} or None}``."""
    out = {}
    for key in dict.fromkeys(k for r in runs for k in r):
        times = [None if r.get(key) is None else r[key]["time_s"] for r in runs]
        hit = [t for t in times if t is not None]
        mean, half = ci95(hit) if hit else (None, None)
        out[key] = {"mean_s": mean, "ci95_s": None if half is None else _half(half),
                    "reached": len(hit), "n": len(runs),
                    "per_seed_s": times}
    return out


@reads_results("seeds.summary_table", "the aggregate of a --seeds run", arg=0, name="agg")
def summary_table(agg):
    """The across-seed table as text (and the time-to-target table, if any)."""
    lines = [f"{len(agg['seeds'])} seeds: {', '.join(map(str, agg['seeds']))}",
             f"{'method':<15}{'meta-test MSE':>14}{'± 95% CI':>11}{'per-task s.e.m.':>17}"
             f"{'wall time (s)':>15}{'meta-steps':>12}"]
    for name, m in agg["methods"].items():
        ci = "n/a" if m["ci95"] is None else f"{m['ci95']:.4f}"
        lines.append(f"{name:<15}{m['meta_test_mse']:>14.4f}{ci:>11}{m['mean_sem']:>17.4f}"
                     f"{m['wall_time_s']:>15.1f}{m['meta_steps']:>12d}")
    lines.append("(mean over seeds; CI: Student's t over the seeds; s.e.m.: over the test "
                 "tasks of one run, averaged over seeds; meta-steps: mean over seeds)")
    targets = list(dict.fromkeys(k for m in agg["methods"].values()
                                 for k in m.get("time_to_target", {})))
    if targets:
        lines += ["", "Time to target meta-test MSE (s): mean ± 95% CI over the seeds that "
                  "reached it (reached k/n seeds)"]
        lines.append(f"{'method':<15}" + "".join(f"{'≤ ' + t:>24}" for t in targets))
        for name, m in agg["methods"].items():
            cells = []
            for t in targets:
                c = m.get("time_to_target", {}).get(t)
                if c is None or not c["reached"]:
                    cell = "not reached" + (f" (0/{c['n']})" if c else "")
                else:
                    ci = "" if c["ci95_s"] is None else f" ± {c['ci95_s']:.1f}"
                    cell = f"{c['mean_s']:.1f}{ci} s ({c['reached']}/{c['n']})"
                cells.append(f"{cell:>24}")
            lines.append(f"{name:<15}" + "".join(cells))
    return "\n".join(lines)


@reads_results("seeds.plot", "the aggregate of a --seeds run", arg=1, name="agg")
def plot(path, agg):
    """Learning curves across seeds: mean and 95 % CI band of the meta-test MSE against
    the mean meta-training wall time of each evaluation point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting
    from .sinusoid import COLORS

    with plt.rc_context(plotting.STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for name, runs in agg["history"].items():
            n = min(len(r["meta_test_mse"]) for r in runs)
            if n < 2 or "time_s" not in runs[0]:
                continue
            y = np.array([r["meta_test_mse"][:n] for r in runs])
            t = np.array([r["time_s"][:n] for r in runs]).mean(axis=0)
            stats_ = [ci95(col) for col in y.T]
            mean = np.array([m for m, _ in stats_])
            half = np.nan_to_num(np.array([h for _, h in stats_]))
            color = COLORS.get(name)
            ax.plot(t, mean, "o-", ms=3, color=color, label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(t, np.maximum(mean - half, 1e-12), mean + half, color=color,
                            alpha=0.2)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0)
        ax.set_yscale("log")
        ax.set_xlabel("wall time of meta-training (s), mean over seeds")
        ax.set_ylabel("meta-test MSE (squared output units)")
        ax.set_title("Meta-learning curves across seeds (mean, 95 % CI)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path)
        plt.close(fig)
