"""Whole experiments across meta-training seeds, with 95 % confidence intervals.

``neuro-meta run EXPERIMENT --seeds 0,1,2`` (or ``--seeds 3``: seeds 0, 1, 2) runs the
experiment once per seed -- in this process, or each seed as one job of an executor (a
process pool or a Dask cluster), with identical numbers either way -- into
``OUT/seed_<k>/``, and aggregates: per method the mean over seeds of the meta-test MSE
and its 95 % confidence interval (Student's t with n - 1 degrees of freedom, the seeds
being the independent samples), beside the mean per-task s.e.m. of a single run, which
says how precisely each seed's number is measured but nothing about the seed's luck.
"""
import numpy as np
from scipy import stats

from .. import _params as P
from ..errors import ValidationError
from ..io import save_figure, write_json


def parse_seeds(text, owner="neuro-meta run.--seeds"):
    """``"3"`` -> [0, 1, 2]; ``"0,4,7"`` -> [0, 4, 7] (distinct, >= 0)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValidationError(f"{owner}: must be a number of seeds or a comma-separated "
                              f"list of seeds (got {text!r})") from None
    if len(values) == 1 and "," not in str(text):
        if values[0] < 1:
            raise ValidationError(f"{owner}: the number of seeds must be >= 1 (got {text!r})")
        return list(range(values[0]))
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ValidationError(f"{owner}: seeds must be distinct integers >= 0 "
                              f"(got {text!r})")
    return values


def ci95(values):
    """(mean, half-width of the 95 % confidence interval of the mean); the half-width is
    nan for a single value."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)


def run_seeds(run, out_dir, seeds, executor=None, progress=True, **kwargs):
    """Run ``run(out_dir/seed_<k>, seed=k, **kwargs)`` for every seed (each seed one job
    of ``executor`` if given) and aggregate; writes ``OUT/results.json`` and
    ``OUT/seeds.png``; returns the aggregate."""
    from pathlib import Path

    seeds = [P.integer(s, "run_seeds", "seeds", low=0) for s in seeds]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if executor is None:
        per_seed = [run(out / f"seed_{s}", seed=s, progress=progress, **kwargs)
                    for s in seeds]
    else:
        futures = [executor.submit(run, out / f"seed_{s}", seed=s, progress=False,
                                   **kwargs) for s in seeds]
        per_seed = [f.result() for f in futures]
    agg = aggregate(seeds, per_seed)
    write_json(out / "results.json", agg)
    plot(out / "seeds.png", agg)
    return agg


def aggregate(seeds, per_seed):
    """Per method: mean ± 95 % CI of the meta-test MSE across seeds, the per-seed
    numbers, the mean per-task s.e.m. and wall time; the per-seed histories."""
    methods = {}
    for name in per_seed[0]["methods"]:
        runs = [r["methods"][name] for r in per_seed if name in r["methods"]]
        mse = [m["meta_test_mse"] for m in runs]
        mean, half = ci95(mse)
        methods[name] = {"meta_test_mse": mean, "ci95": half, "n_seeds": len(mse),
                         "per_seed": mse, "sem_per_seed": [m["sem"] for m in runs],
                         "mean_sem": float(np.mean([m["sem"] for m in runs])),
                         "wall_time_s": float(np.mean([m["wall_time_s"] for m in runs])),
                         "meta_steps": runs[0]["meta_steps"]}
    history = {name: [r["history"][name] for r in per_seed]
               for name in per_seed[0].get("history", {})
               if isinstance(per_seed[0]["history"].get(name), dict)}
    if not history and "step" in per_seed[0].get("history", {}):   # one-method experiments
        history = {"cml": [r["history"] for r in per_seed]}
    return {"seeds": list(seeds), "methods": methods, "history": history,
            "per_seed": {str(s): r for s, r in zip(seeds, per_seed)},
            "config": per_seed[0].get("config")}


def summary_table(agg):
    """The across-seed table as text."""
    lines = [f"{len(agg['seeds'])} seeds: {', '.join(map(str, agg['seeds']))}",
             f"{'method':<15}{'meta-test MSE':>14}{'± 95% CI':>11}{'per-task s.e.m.':>17}"
             f"{'wall time (s)':>15}{'meta-steps':>12}"]
    for name, m in agg["methods"].items():
        ci = "n/a" if not np.isfinite(m["ci95"]) else f"{m['ci95']:.4f}"
        lines.append(f"{name:<15}{m['meta_test_mse']:>14.4f}{ci:>11}{m['mean_sem']:>17.4f}"
                     f"{m['wall_time_s']:>15.1f}{m['meta_steps']:>12d}")
    lines.append("(mean over seeds; CI: Student's t over the seeds; s.e.m.: over the test "
                 "tasks of one run, averaged over seeds)")
    return "\n".join(lines)


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
