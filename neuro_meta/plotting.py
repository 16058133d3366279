"""Plots of consolidation dynamics and of the meta-learning rule.

Every function takes an optional ``ax`` (a new figure is made otherwise) and returns the
matplotlib ``Axes``; axes are labelled with units, one consistent style (:data:`STYLE`).
Use :func:`neuro_meta.io.save_figure` to write a figure atomically.

Every function checks its input first: a bad argument is one
:class:`~neuro_meta.errors.ValidationError` naming the function and the argument
(``plotting.meta_learning_curves.curves['cml']: ...``), never a plot that is silently
wrong. Series are real, finite and of matching lengths; values drawn on a log axis are
> 0; groups of synapses are boolean masks (integer indices are refused, not read as
a mask).
"""
import numbers
from collections.abc import Mapping

import numpy as np

from . import _params as P

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


def _array(owner, attr, values, time=False):
    """``values`` as a finite real float array (not booleans; with ``time``, a Brian2
    quantity of time is taken in seconds)."""
    if time and P.is_quantity(values):
        from brian2 import second
        from brian2.units.fundamentalunits import have_same_dimensions

        if not have_same_dimensions(values, second):
            P.fail(owner, attr, "must be times in seconds (floats) or a Brian2 quantity "
                   "of time", P.shown(values))
        values = np.asarray(values / second)
    arr = P.finite_array(values, owner, attr)
    if np.asarray(values).dtype.kind == "b":
        P.fail(owner, attr, "must be numbers, not booleans", P.shown(values))
    return arr


def _series(owner, attr, values, n=None, positive=False, time=False, increasing=False):
    """``values`` as a non-empty finite real 1-D float array: of length ``n`` (a pair
    (length, what it is the length of)), > 0 with ``positive`` (drawn on a log axis),
    non-decreasing with ``increasing``; else one ValidationError ``owner.attr: ...``."""
    arr = _array(owner, attr, values, time)
    if arr.ndim != 1:
        P.fail(owner, attr, "must be a 1-D sequence of numbers", f"shape {arr.shape}")
    if n is not None and arr.size != n[0]:
        P.fail(owner, attr, f"must have one value per entry of {n[1]} ({n[0]})",
               f"length {arr.size}")
    if arr.size == 0:
        P.fail(owner, attr, "must not be empty", "length 0")
    if positive and arr.min() <= 0:
        P.fail(owner, attr, "must be > 0 (it is drawn on a log axis)",
               f"minimum {float(arr.min())!r}")
    if increasing and arr.size > 1 and np.any(np.diff(arr) < 0):
        i = int(np.argmax(np.diff(arr) < 0))
        P.fail(owner, attr, "must be non-decreasing (the times of a trajectory)",
               f"{float(arr[i])!r} then {float(arr[i + 1])!r} at index {i + 1}")
    return arr


def _items(owner, attr, value, what, labels=True):
    """The items of a non-empty mapping ``value`` (``what``: what it maps); with
    ``labels`` its keys name lines or groups in a legend: strings or numbers."""
    if not isinstance(value, Mapping) or not value:
        P.fail(owner, attr, f"must be a dict {what} with at least one entry",
               P.shown(value))
    if labels:
        for key in value:
            if not isinstance(key, (str, numbers.Real)) or P.is_quantity(key):
                P.fail(owner, attr, f"must have strings (or numbers) as keys: they label "
                       "the legend", f"key {P.shown(key)}")
    return list(value.items())


def _mask(owner, attr, mask, shape):
    """``mask`` as a flat boolean array over an array of ``shape`` (given flat or of that
    shape): integer indices are refused (a list [0, 1, 1] would select columns 0, 1, 1)."""
    n = int(np.prod(shape))
    where = f"shape {tuple(shape)} or ({n},)" if len(shape) != 1 else f"length {n}"
    rule = (f"must be a boolean mask over the {n} synapses ({where}); "
            "integer indices are not accepted (np.isin(np.arange(n), indices) makes a "
            "mask of them)")
    try:
        arr = None if P.is_quantity(mask) else np.asarray(mask)
    except Exception:
        arr = None
    if arr is None or arr.dtype.kind != "b":
        P.fail(owner, attr, rule, P.shown(mask) if arr is None or arr.size < 20
               else f"array of dtype {arr.dtype}")
    if arr.shape != tuple(shape) and arr.shape != (n,):
        P.fail(owner, attr, rule, f"shape {arr.shape}")
    return arr.ravel()


def _text(owner, attr, value, allow_none=True):
    if not (isinstance(value, str) or (allow_none and value is None)):
        P.fail(owner, attr, "must be a string" + (" or None" if allow_none else ""),
               P.shown(value))
    return value


def _flag(owner, attr, value):
    if not isinstance(value, (bool, np.bool_)):
        P.fail(owner, attr, "must be True or False", P.shown(value))
    return bool(value)


def _check_ax(owner, ax):
    if ax is not None:
        from matplotlib.axes import Axes

        if not isinstance(ax, Axes):
            P.fail(owner, "ax", "must be a matplotlib Axes or None (a new figure)",
                   P.shown(ax))
    return ax


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

    ``betas``: values of β > 0; ``errors``: dict estimator -> errors > 0 (same length as
    ``betas``; both axes are logarithmic).
    """
    owner = "plotting.gradient_error_vs_beta"
    betas = _series(owner, "betas", betas, positive=True)
    errors = {est: _series(owner, f"errors[{P.shown(est)}]", err,
                           n=(betas.size, "betas"), positive=True)
              for est, err in _items(owner, "errors", errors, "estimator -> errors")}
    _text(owner, "title", title)
    references = _flag(owner, "references", references)
    ax = _axes(_check_ax(owner, ax))
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
    with the δ/β reference of the theory.

    ``tols``: tolerances δ > 0; ``errors_by_beta``: dict β (a number > 0) -> errors > 0
    (same length as ``tols``; both axes are logarithmic).
    """
    owner = "plotting.gradient_error_vs_tolerance"
    tols = _series(owner, "tols", tols, positive=True)
    items = []
    for beta, err in _items(owner, "errors_by_beta", errors_by_beta, "β -> errors",
                            labels=False):
        try:
            ok = (not isinstance(beta, (bool, np.bool_)) and not P.is_quantity(beta)
                  and isinstance(beta, numbers.Real) and 0 < float(beta) < np.inf)
        except OverflowError:   # an integer beyond float
            ok = False
        if not ok:
            P.fail(owner, "errors_by_beta", "must have the values of β as keys (real "
                   "numbers > 0)", f"key {P.shown(beta)}")
        items.append((beta, _series(owner, f"errors_by_beta[{P.shown(beta)}]", err,
                                    n=(tols.size, "tols"), positive=True)))
    _text(owner, "title", title)
    ax = _axes(_check_ax(owner, ax))
    items = sorted(items, key=lambda kv: -kv[0])
    # One constant C for the theory's δ/β term, from the most δ-dominated point
    # (smallest β, loosest δ); each β's dotted line is C δ/β.
    b_min, e_min = items[-1][0], np.asarray(items[-1][1])
    C = e_min[np.argmax(tols)] * b_min / tols.max()
    for i, (beta, err) in enumerate(items):
        line, = ax.loglog(tols, err, "o-", color=f"C{i}", label=f"β = {float(beta):g}")
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
    ``t_free``/``t_nudged``: non-decreasing times (s, or a Brian2 quantity of time), one
    per row of ``phi_free``/``phi_nudged``; both phases have the same synapses;
    ``labels``: one per synapse (None: "synapse j").
    """
    owner = "plotting.phi_trajectories"
    t_free = _series(owner, "t_free", t_free, time=True, increasing=True)
    t_nudged = _series(owner, "t_nudged", t_nudged, time=True, increasing=True)
    phis = []
    for attr, phi, t, t_name in (("phi_free", phi_free, t_free, "t_free"),
                                 ("phi_nudged", phi_nudged, t_nudged, "t_nudged")):
        phi = _array(owner, attr, phi)
        if phi.ndim == 0 or phi.shape[0] != t.size:
            P.fail(owner, attr, f"must be an array (time, n_synapses) with one row per "
                   f"time of {t_name} ({t.size})", f"shape {phi.shape}")
        phi = phi.reshape(t.size, -1)
        if phi.shape[1] == 0:
            P.fail(owner, attr, "must have at least one synapse", f"shape {phi.shape}")
        phis.append(phi)
    phi_free, phi_nudged = phis
    if phi_nudged.shape[1] != phi_free.shape[1]:
        P.fail(owner, "phi_nudged", f"must have the synapses of phi_free "
               f"({phi_free.shape[1]})", f"{phi_nudged.shape[1]} synapses")
    if labels is not None:
        if not (isinstance(labels, (list, tuple)) or (isinstance(labels, np.ndarray)
                                                      and labels.ndim == 1)) \
                or len(labels) not in (0, phi_free.shape[1]):
            P.fail(owner, "labels", f"must be None or a list of one label per synapse "
                   f"({phi_free.shape[1]})", P.shown(labels))
        labels = list(labels)
    ax = _axes(_check_ax(owner, ax))
    t_n = t_nudged + t_free[-1]
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

    ``lam``: strengths λ >= 0 (any shape); ``groups``: dict name -> boolean mask over
    ``lam`` (its shape, or flat); ``bins``: number of bins (1 to 10000) over
    [0, 1.05 max λ].
    """
    owner = "plotting.lambda_by_group"
    lam = _array(owner, "lam", lam)
    if lam.size == 0:
        P.fail(owner, "lam", "must not be empty", f"shape {lam.shape}")
    if lam.min() < 0:
        P.fail(owner, "lam", "must be >= 0 (the histogram covers [0, 1.05 max λ])",
               f"minimum {float(lam.min())!r}")
    groups = {name: _mask(owner, f"groups[{P.shown(name)}]", mask, lam.shape)
              for name, mask in _items(owner, "groups", groups, "name -> boolean mask")}
    bins = P.integer(bins, owner, "bins", low=1, high=10_000)
    ax = _axes(_check_ax(owner, ax))
    lam = lam.ravel()
    hi = max(float(lam.max()), 1e-12)
    edges = np.linspace(0, hi * 1.05, bins + 1)
    for name, mask in groups.items():
        ax.hist(lam[mask], bins=edges, alpha=0.6,
                color=COLORS.get(name), label=f"{name} synapses")
    ax.set_xlabel("consolidation strength λ (dimensionless)")
    ax.set_ylabel("number of synapses")
    ax.set_title("Consolidation strength by synapse group")
    ax.legend(fontsize=8)
    return ax


def meta_learning_curves(steps, curves, ax=None, ylabel="meta-test MSE", logy=True):
    """Meta-test loss against meta-steps; ``curves``: dict label -> values (one per
    step; > 0 with ``logy``, the log scale)."""
    owner = "plotting.meta_learning_curves"
    steps = _series(owner, "steps", steps)
    logy = _flag(owner, "logy", logy)
    curves = {label: _series(owner, f"curves[{P.shown(label)}]", vals,
                             n=(steps.size, "steps"), positive=logy)
              for label, vals in _items(owner, "curves", curves, "label -> values")}
    _text(owner, "ylabel", ylabel, allow_none=False)
    ax = _axes(_check_ax(owner, ax))
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

    ``values``: array (steps, n_synapses); ``groups``: dict name -> boolean mask
    (n_synapses,) (integer indices are refused; a group without synapses is listed in
    the legend as "(none)").
    """
    owner = "plotting.parameter_trajectories"
    steps = _series(owner, "steps", steps)
    values = _array(owner, "values", values)
    if values.ndim == 0 or values.shape[0] != steps.size or values.size == 0:
        P.fail(owner, "values", f"must be an array (steps, n_synapses) with one row per "
               f"step ({steps.size}) and at least one synapse", f"shape {values.shape}")
    masks = {}
    for name, mask in _items(owner, "groups", groups, "name -> boolean mask"):
        attr = f"groups[{P.shown(name)}]"
        masks[name] = _mask(owner, attr, mask, values.shape[1:] or (1,))
    _text(owner, "ylabel", ylabel, allow_none=False)
    ax = _axes(_check_ax(owner, ax))
    values = values.reshape(steps.size, -1)
    for name, mask in masks.items():
        if not mask.any():      # an empty group (e.g. shared_fraction 0): said, not drawn
            ax.plot([], [], color=COLORS.get(name), label=f"{name} synapses (none)")
            continue
        v = values[:, mask]
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

    ``phi``: list of fast variables with a task axis (``LearningResult.phi`` of a batch):
    ``phi[i]`` of shape ``(tasks,) + model.phi0[i].shape``;
    ``task_params``: dict label -> values per task (e.g. phase and amplitude), one finite
    number per task (the second sets the marker size: >= 0); ``sort_by``: one of
    ``task_params`` (None: the first).
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .kind import ModelKind

    owner = "plotting.fast_patterns"
    if not isinstance(model, ModelKind):
        P.fail(owner, "model", "must be a model kind with fast variables (a DualSystem)",
               type(model).__name__)
    names = model.fast_names
    phi0 = [np.asarray(p0) for p0 in model.phi0]
    if not phi0:
        P.fail(owner, "model", "must have fast variables (a DualSystem)",
               "no fast variable")
    if not isinstance(phi, (list, tuple)) or len(phi) != len(phi0):
        P.fail(owner, "phi", f"must be a list of the model's {len(phi0)} fast variables "
               f"({', '.join(names)}), each with a task axis", P.shown(phi))
    phi = [_array(owner, f"phi[{i}]", p) for i, p in enumerate(phi)]
    n_tasks = phi[0].shape[0] if phi and phi[0].ndim else 0
    for i, (p, p0) in enumerate(zip(phi, phi0)):
        if p.shape != (n_tasks,) + p0.shape or n_tasks == 0:
            P.fail(owner, f"phi[{i}]", f"must have shape (tasks,) + {p0.shape} ({names[i]}"
                   f" with a task axis: at least one task, the same for every fast "
                   f"variable)",
                   f"shape {p.shape}")
    task_params = {label: _series(owner, f"task_params[{P.shown(label)}]", v,
                                  n=(n_tasks, "the task axis of phi"))
                   for label, v in _items(owner, "task_params", task_params,
                                          "label -> values per task")}
    labels = list(task_params)
    if len(labels) > 1 and task_params[labels[1]].min() < 0:
        P.fail(owner, f"task_params[{P.shown(labels[1])}]", "must be >= 0 (the second "
               "task parameter sets the marker size)",
               f"minimum {float(task_params[labels[1]].min())!r}")
    try:
        known = sort_by is None or sort_by in task_params
    except TypeError:           # not hashable
        known = False
    if not known:
        P.fail(owner, "sort_by", "must be None or one of task_params: "
               + ", ".join(P.shown(k) for k in labels), P.shown(sort_by))
    _text(owner, "title", title)
    for i, p in enumerate(phi):     # (their principal components square them)
        if p.size and np.abs(p).max() > P.DATA_LIMIT:
            P.fail(owner, f"phi[{i}]", f"must be at most {P.DATA_LIMIT:g} in magnitude (a "
                   "fast variable beyond it is a diverged simulation, not a pattern)",
                   f"max |phi[{i}]| = {float(np.abs(p).max())!r}")
    deltas = [p - p0 for p, p0 in zip(phi, phi0)]
    deltas = [d.reshape(d.shape[0], -1) for d in deltas]
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
