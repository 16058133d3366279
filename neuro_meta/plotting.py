"""Plots of consolidation dynamics and of the meta-learning rule.

Every function takes an optional ``ax`` (a new figure is made otherwise) and returns the
matplotlib ``Axes``; axes are labelled with units, one consistent style (:data:`STYLE`).
Use :func:`neuro_meta.io.save_figure` to write a figure atomically.
"""
import numpy as np

STYLE = {
    "figure.figsize": (6.0, 4.0),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}
COLORS = {"standard": "C0", "symmetric": "C1", "second_order": "C2", "free": "C0",
          "nudged": "C3", "shared": "C2", "specific": "C4", "cml": "C1", "untrained": "C7"}


def _axes(ax, figsize=None):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=figsize or STYLE["figure.figsize"])
        for k in ("axes.grid",):
            ax.grid(True, alpha=STYLE["grid.alpha"])
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
    return ax


def _reference_slope(ax, x, y_anchor, power, label, style=":"):
    x = np.asarray(x, dtype=float)
    y = y_anchor * (x / x[-1]) ** power
    ax.plot(x, y, style, color="0.4", lw=1, label=label)


def gradient_error_vs_beta(betas, errors, ax=None, title=None, references=True):
    """Relative error of the CML estimate against β, one line per estimator.

    ``errors``: dict estimator -> errors (same length as ``betas``).
    """
    ax = _axes(ax)
    betas = np.asarray(betas, dtype=float)
    for est, err in errors.items():
        ax.loglog(betas, err, "o-", color=COLORS.get(est), label=f"{est} estimator")
    if references:
        anchor = {k: np.asarray(v)[-1] for k, v in errors.items()}
        if "standard" in anchor:
            _reference_slope(ax, betas, anchor["standard"], 1, "slope 1 (∝ β)", "--")
        if "symmetric" in anchor:
            _reference_slope(ax, betas, anchor["symmetric"], 2, "slope 2 (∝ β²)", ":")
    ax.set_xlabel("nudging strength β (dimensionless)")
    ax.set_ylabel("relative error ‖ĝ − g*‖ / ‖g*‖")
    ax.set_title(title or "CML meta-gradient error vs β (exact phases)")
    ax.legend(fontsize=8)
    return ax


def gradient_error_vs_tolerance(tols, errors_by_beta, ax=None, title=None):
    """Relative error against the phases' settling tolerance δ, one line per β,
    with the δ/β reference of the theory."""
    ax = _axes(ax)
    tols = np.asarray(tols, dtype=float)
    items = sorted(errors_by_beta.items(), key=lambda kv: -kv[0])
    # One constant C for the theory's δ/β term, from the most δ-dominated point
    # (smallest β, loosest δ); each β's dotted line is C δ/β.
    b_min, e_min = items[-1][0], np.asarray(items[-1][1])
    C = e_min[np.argmax(tols)] * b_min / tols.max()
    for i, (beta, err) in enumerate(items):
        line, = ax.loglog(tols, err, "o-", color=f"C{i}", label=f"β = {beta:g}")
        ax.loglog(tols, C * tols / beta, ":", color=line.get_color(), lw=1)
    ax.set_ylim(min(np.min(e) for _, e in items) / 3, max(np.max(e) for _, e in items) * 3)
    ax.plot([], [], ":", color="0.4", label="∝ δ/β (theory)")
    ax.set_xlabel("phase tolerance δ = max |∂F/∂φ| at the end of a phase")
    ax.set_ylabel("relative error ‖ĝ − g*‖ / ‖g*‖")
    ax.set_title(title or "Inexact phases: error floor δ/β (symmetric)")
    ax.legend(fontsize=8)
    return ax


def phi_trajectories(t_free, phi_free, t_nudged, phi_nudged, labels=None, ax=None):
    """Fast weights φ(t) in the free phase, then in the nudged phase (dashed).

    ``phi_free``/``phi_nudged``: arrays (time, n_synapses) of the chosen synapses.
    The nudged phase is drawn after the free one on a common time axis.
    """
    ax = _axes(ax)
    t_free = np.asarray(t_free)
    t_n = np.asarray(t_nudged) + t_free[-1]
    phi_free = np.asarray(phi_free).reshape(len(t_free), -1)
    phi_nudged = np.asarray(phi_nudged).reshape(len(t_nudged), -1)
    for j in range(phi_free.shape[1]):
        lab = labels[j] if labels else f"synapse {j}"
        line, = ax.plot(t_free, phi_free[:, j], label=lab)
        ax.plot(t_n, phi_nudged[:, j], "--", color=line.get_color())
    ax.axvline(t_free[-1], color="0.5", lw=0.8)
    ax.text(t_free[-1], 1.0, " nudged →", transform=ax.get_xaxis_transform(),
            va="top", fontsize=8, color="0.3")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fast weight φ (dimensionless)")
    ax.set_title("Fast weights: free phase (solid), nudged phase (dashed)")
    ax.legend(fontsize=8, ncol=2, loc="best", framealpha=0.8, frameon=True)
    return ax


def lambda_by_group(lam, groups, ax=None, bins=30):
    """Histogram of consolidation strengths λ per group of synapses.

    ``groups``: dict name -> boolean mask over ``lam``.
    """
    ax = _axes(ax)
    lam = np.asarray(lam).ravel()
    hi = max(float(lam.max()), 1e-12)
    edges = np.linspace(0, hi * 1.05, bins + 1)
    for name, mask in groups.items():
        ax.hist(lam[np.asarray(mask).ravel()], bins=edges, alpha=0.6,
                color=COLORS.get(name), label=f"{name} synapses")
    ax.set_xlabel("consolidation strength λ (dimensionless)")
    ax.set_ylabel("number of synapses")
    ax.set_title("Consolidation strength by synapse group")
    ax.legend(fontsize=8)
    return ax


def meta_learning_curves(steps, curves, ax=None, ylabel="meta-test MSE", logy=True):
    """Meta-test loss against meta-steps; ``curves``: dict label -> values."""
    ax = _axes(ax)
    for label, vals in curves.items():
        ax.plot(steps, vals, "o-", ms=3, color=COLORS.get(label), label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("meta-step")
    ax.set_ylabel(ylabel + " (squared output units)")
    ax.set_title("Meta-learning curve")
    ax.legend(fontsize=8)
    return ax


def parameter_trajectories(steps, values, groups, ax=None, ylabel="λ"):
    """Mean ± s.d. of a meta-parameter (ω or λ) over meta-steps, per group of synapses.

    ``values``: array (steps, n_synapses); ``groups``: dict name -> mask (n_synapses,).
    """
    ax = _axes(ax)
    values = np.asarray(values).reshape(len(steps), -1)
    for name, mask in groups.items():
        v = values[:, np.asarray(mask).ravel()]
        m, s = v.mean(axis=1), v.std(axis=1)
        ax.plot(steps, m, color=COLORS.get(name), label=f"{name} synapses")
        ax.fill_between(steps, m - s, m + s, color=COLORS.get(name), alpha=0.2)
    ax.set_xlabel("meta-step")
    ax.set_ylabel(f"{ylabel} (dimensionless), mean ± s.d.")
    ax.set_title(f"{ylabel} across meta-learning")
    ax.legend(fontsize=8)
    return ax


def fast_patterns(model, phi, task_params, sort_by=None, title=None):
    """What a :class:`~neuro_meta.dual.DualSystem`'s fast system learned, task by task.

    One heat map per fast variable (gains and biases of each hidden layer, readout
    weights): rows are tasks (sorted by the first of ``task_params``), columns units
    (ordered by their loading on the first principal component across tasks), colour
    the change ``φ − φ₀`` from the meta-learned initial value. The last panel places
    every task by the first two principal components of its whole fast change, coloured
    by the first task parameter and sized by the second.

    ``phi``: list of fast variables with a task axis (``LearningResult.phi`` of a batch);
    ``task_params``: dict label -> values per task (e.g. phase and amplitude).
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    names = model.fast_names
    deltas = [np.asarray(p) - np.asarray(p0) for p, p0 in zip(phi, model.phi0)]
    deltas = [d.reshape(d.shape[0], -1) for d in deltas]
    labels = list(task_params)
    key = sort_by or labels[0]
    order = np.argsort(np.asarray(task_params[key]))
    n = len(deltas) + 1
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        for ax, name, d in zip(axes.ravel(), names, deltas):
            d = d[order]
            if name == "readout":
                d = d[:, :-1]          # the readout's bias column is drawn with the biases
            centred = d - d.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            cols_order = np.argsort(vt[0]) if vt.size else np.arange(d.shape[1])
            lim = float(np.abs(d).max()) or 1.0
            im = ax.imshow(d[:, cols_order], aspect="auto", cmap="RdBu_r", vmin=-lim,
                           vmax=lim, interpolation="nearest")
            ax.set_xlabel("unit (ordered by 1st principal component)")
            ax.set_ylabel(f"task (sorted by {key})")
            ax.set_title(f"Δ {name} (change from φ₀)")
            fig.colorbar(im, ax=ax, shrink=0.85, label="φ − φ₀ (dimensionless)")
        ax = axes.ravel()[n - 1]
        ax.grid(True, alpha=STYLE["grid.alpha"])
        full = np.concatenate(deltas, axis=1)
        centred = full - full.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        pcs = u[:, :2] * s[:2] if s.size >= 2 else np.c_[u[:, :1] * s[:1], np.zeros(len(u))]
        var = s ** 2 / max(float((s ** 2).sum()), 1e-300)
        c = np.asarray(task_params[labels[0]])
        size = (20 + 60 * np.asarray(task_params[labels[1]]) / max(
            float(np.max(task_params[labels[1]])), 1e-12)) if len(labels) > 1 else 30
        sc = ax.scatter(pcs[:, 0], pcs[:, 1], c=c, s=size, cmap="viridis", edgecolor="k",
                        linewidth=0.3)
        fig.colorbar(sc, ax=ax, shrink=0.85, label=labels[0])
        ax.set_xlabel(f"PC 1 of the fast change ({100 * var[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * var[1]:.0f}%)" if var.size > 1 else "PC 2")
        ax.set_title("Tasks in fast-variable space" +
                     (f" (marker size: {labels[1]})" if len(labels) > 1 else ""))
        fig.suptitle(title or "Fast system after learning each held-out task")
        fig.tight_layout()
    return fig
