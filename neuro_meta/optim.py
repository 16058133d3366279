"""Meta-optimisers as small composable pieces (in the style of optax).

A *gradient transformation* is a pair of pure functions::

    state = opt.init(theta)
    updates, state = opt.update(grads, state)
    theta = apply_updates(theta, updates)

All state is explicit (plain arrays in dicts and tuples), so it can be checkpointed.
Meta-parameters are dicts of lists with one entry per connection (``None`` where a
connection has no such parameter), as returned by :attr:`RateNetwork.theta`.

λ ≥ 0 is kept by **projection**: :func:`apply_updates` clips the consolidation strengths
(``lam``, ``lam_bias``; the dual system's ``lam_gain``, ``lam_readout``) at 0 after
every update.

A learning rate is a number or a :class:`Schedule` of the meta-step
(:func:`constant`, :func:`cosine_decay`, :func:`piecewise_constant`), in the style of
optax's schedules: update number ``k`` (0, 1, 2, ...) uses ``schedule(k)``. The schedule's
settings are part of the optimiser's ``settings`` and so of a checkpoint's fingerprint.
``cosine_decay(v, "budget")`` lasts as many meta-steps as a wall-time budget holds: the
trainer measures that number early in the run and writes it into the optimiser's state
(:func:`set_horizon`, :func:`horizons`), where checkpoints keep it.

Hyper-parameters are checked where the maths breaks: learning rates finite and > 0,
momentum and Adam's ``b1``, ``b2`` in ``[0, 1)`` (at 1 the bias correction divides by
zero), ``eps`` finite and > 0. Gradients holding NaN or inf, and updates that overflow
from finite ones, are refused by the ``update`` that meets them, and
:func:`apply_updates` checks that the updates have the structure of the parameters and
refuses a non-finite result (each a :class:`~neuro_meta.errors.SimulationError`, with a
hint).

What comes in is checked too (a :class:`~neuro_meta.errors.ValidationError`): trees
(θ, gradients, updates) are dicts of lists of real arrays or None -- complex values,
booleans, text and Brian2 quantities with units are refused, never cast; an ``update``
takes only its own transformation's state (from its ``init`` or a previous ``update``);
trees combined leaf-wise must have the same structure; a schedule's update number is an
integer >= 0. (Plain SGD keeps no state, so it cannot compare the gradients with the
parameters: :func:`apply_updates` does.)
"""
import bisect
import math
import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

from . import _params as P
from .errors import SimulationError

NONNEGATIVE = ("lam", "lam_bias", "lam_gain", "lam_readout")


def tree_map(fn, *trees):
    """Apply ``fn`` leaf-wise to dicts of lists of arrays (``None`` leaves stay None).
    The trees must have the structure of the first: the same keys, list lengths and
    ``None`` entries (a ValidationError otherwise, never a list cut short)."""
    O = "tree_map"
    if not callable(fn):
        P.fail(O, "fn", "must be a function of one leaf per tree", type(fn).__name__)
    if not trees:
        P.fail(O, "trees", "must give at least one tree (a dict of lists of arrays)",
               "none")
    first = trees[0]
    _check_lists(first, O, "trees[0]")
    for j, tree in enumerate(trees[1:], 1):
        _check_same_structure(tree, first, O, f"trees[{j}]")
    return {k: [None if leaves[0] is None else fn(*leaves)
                for leaves in zip(*(t[k] for t in trees))] for k in first}


def _check_lists(tree, owner, attr):
    """``tree`` must be a dict of lists (or tuples): O(number of keys)."""
    if not isinstance(tree, dict):
        P.fail(owner, attr, "must be a dict of lists of arrays (like net.theta)",
               type(tree).__name__)
    for k, leaves in tree.items():
        if not isinstance(leaves, (list, tuple)):
            P.fail(owner, f"{attr}.{k}", "must be a list of arrays (None where absent)",
                   type(leaves).__name__)
    return tree


def _check_same_structure(tree, like, owner, attr, whose="the first tree", leaf="a leaf"):
    """``tree`` must have the keys, list lengths and ``None`` entries of ``like`` (a dict
    of lists already checked; ``whose``: what the messages call it); its leaves are not
    looked at."""
    poss = whose + ("'" if whose.endswith("s") else "'s")
    if not isinstance(tree, dict) or set(tree) != set(like):
        P.fail(owner, attr, f"must be a dict with the keys {sorted(map(str, like))} of "
               f"{whose}", sorted(map(str, tree)) if isinstance(tree, dict)
               else type(tree).__name__)
    for k, ref in like.items():
        leaves = tree[k]
        if not isinstance(leaves, (list, tuple)) or len(leaves) != len(ref):
            P.fail(owner, f"{attr}.{k}", f"must be a list of {len(ref)} entries like "
                   f"{poss}", type(leaves).__name__ if not isinstance(
                       leaves, (list, tuple)) else f"{len(leaves)} entries")
        for i, (a, r) in enumerate(zip(leaves, ref)):
            if (a is None) != (r is None):
                P.fail(owner, f"{attr}.{k}[{i}]", f"must be None where {poss} entry is "
                       f"None, {leaf} elsewhere", type(a).__name__)
    return tree


def _vector(tree):
    """All leaves of a checked tree flattened into one vector (fixed key order)."""
    parts = [np.ravel(a) for k in sorted(tree) for a in tree[k] if a is not None]
    return np.concatenate(parts) if parts else np.zeros(0)


def tree_vector(tree):
    """All leaves flattened into one vector (fixed key order); ``tree`` a dict of lists
    of real arrays or None (:func:`check_params`)."""
    return _vector(check_params(tree, "tree_vector", "tree"))


def _no_units(a, owner, attr):
    """Refuse a leaf that is a Brian2 quantity with units (cheap: two ``hasattr``)."""
    if P.is_quantity(a):
        P.dimensionless(a, owner, attr)


def check_params(tree, owner, attr="theta"):
    """``tree`` must be a dict of lists whose entries are real (integer or float, not
    bool or complex) arrays or None, without units (a Brian2 quantity with units is
    refused)."""
    _check_lists(tree, owner, attr)
    for k, leaves in tree.items():
        for i, a in enumerate(leaves):
            if a is None:
                continue
            _no_units(a, owner, f"{attr}.{k}[{i}]")
            if not (isinstance(a, (np.ndarray, numbers.Real))
                    and np.asarray(a).dtype.kind in "iuf"):
                P.fail(owner, f"{attr}.{k}[{i}]", "must be a real (integer or float) array "
                       "or None",
                       type(a).__name__ + (f" of dtype {a.dtype}" if isinstance(
                           a, np.ndarray) else ""))
    return tree


def _finite_tree(tree, owner, attr, produced=False):
    """``tree`` (checked by :func:`check_params`) must hold only finite numbers: a NaN or
    inf in the gradients an optimiser is given (``produced`` False) or in the updates it
    computed from finite ones (True) is a SimulationError with a hint, never passed
    on. O(size)."""
    for k, leaves in tree.items():
        for i, a in enumerate(leaves):
            if a is None:
                continue
            a = np.asarray(a)
            if np.isfinite(a).all():
                continue
            idx = tuple(int(j) for j in np.argwhere(~np.isfinite(a))[0])
            first = f"first {float(a[idx])!r} at index {idx}"
            if produced:
                raise SimulationError(
                    f"{owner}: the update of {k}[{i}] overflowed from finite gradients "
                    f"({first}). Hint: reduce the learning rate, or clip the gradients "
                    "(optim.chain(optim.clip_by_global_norm(...), ...))")
            raise SimulationError(
                f"{owner}: {attr}.{k}[{i}] holds NaN or inf ({first}): the gradients "
                "diverged before they reached the optimiser. Hint: reduce the learning "
                "rate, clip the gradients, or check the simulation that computed them "
                "(a phase that diverged)")
    return tree


def _quiet(update):
    """An update computed without numpy's overflow warnings: a non-finite result is
    reported by the update itself (:func:`_finite_tree`) or by :func:`apply_updates` (a
    SimulationError with a hint)."""
    def wrapped(grads, state):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return update(grads, state)
    wrapped.__doc__ = update.__doc__
    return wrapped


class GradientTransformation(NamedTuple):
    """An optimiser as a pair of pure functions ``init(theta) -> state`` and
    ``update(grads, state) -> (updates, state)``. ``settings``: what it does, as plain
    values (e.g. ``("adam", 0.001, 0.9, 0.999, 1e-08)``), from which a checkpoint's
    optimiser fingerprint is made (:func:`neuro_meta.metatrain.optimizer_fingerprint`);
    None for a transformation that does not say (its fingerprint is then taken from the
    bits of its updates of probe gradients)."""
    init: Callable
    update: Callable
    settings: Any = None


class Schedule(NamedTuple):
    """A learning rate as a function of the update number ``k`` (0 for the first update):
    ``value(k)`` > 0; ``settings``: what it is, as plain values (for fingerprints; a
    float means the constant rate of :func:`constant`). ``over_budget``: a schedule
    whose length is the number of meta-steps a wall-time budget holds
    (``cosine_decay(v, "budget")``): ``value(k, horizon)``, with ``horizon`` None until
    the trainer has measured it (:func:`set_horizon`)."""
    value: Callable
    settings: Any
    over_budget: bool = False

    def __call__(self, k):
        return self.value(k)


def constant(value):
    """The same learning rate at every update (its settings: the number itself, so that
    ``adam(constant(x))`` and ``adam(x)`` have the same fingerprint)."""
    v = P.real(value, "constant", "value", low=0.0, low_open=True)

    def rate(k):
        _update_number(k, "constant")
        return v
    return Schedule(rate, v)


def _update_number(k, owner, attr="k"):
    """``k``, an update number: an integer >= 0 (not a bool, NaN, inf or text)."""
    return P.integer(k, owner, attr, low=0)


def _horizon(n, owner, attr="horizon"):
    """``n``, the horizon of a schedule: an integer >= 1."""
    return P.integer(n, owner, attr, low=1)


def _anchor(anchor, owner, attr="anchor"):
    """``anchor``: None or ``(k0, x0)`` (:func:`refit_horizon`), an update number and a
    place along the schedule (a finite number, in [0, 1] when made by refit_horizon)."""
    if anchor is None:
        return None
    if not isinstance(anchor, (list, tuple)) or len(anchor) != 2:
        P.fail(owner, attr, "must be None or a pair (update number, place along the "
               "schedule) from refit_horizon", P.shown(anchor))
    return (_update_number(anchor[0], owner, f"{attr}[0]"),
            P.real(anchor[1], owner, f"{attr}[1]"))


def cosine_decay(init_value, decay_steps, alpha=0.05):
    """Cosine decay (Loshchilov & Hutter 2017, as optax's ``cosine_decay_schedule``):
    ``init_value * (alpha + (1 - alpha) * (1 + cos(pi * min(k, decay_steps) /
    decay_steps)) / 2)``: from ``init_value`` at update 0 to ``alpha * init_value`` at
    update ``decay_steps``, then constant. ``alpha`` in (0, 1] (a learning rate of 0
    would end learning without saying so; optax's default 0 is refused), default 0.05,
    the end of the shipped model files' cosines (``schedule: {kind: cosine, ..., end:
    0.05}``; until 2026-12 the default was 0, which the check refused).

    ``decay_steps="budget"``: the decay lasts as many updates as the run's wall-time
    budget holds, so that a run decays fully on a slow machine as on a fast one. The
    trainer (:meth:`~neuro_meta.MetaTrainer.train`,
    :func:`~neuro_meta.baselines.train_baseline`, both with ``budget_s``) measures its
    meta-step rate over the first part of the budget and sets that number in the
    optimiser's state (:func:`set_horizon`, recorded in the checkpoint and the run's
    history), then re-fits it as the run goes (:func:`refit_horizon`); until then the
    rate is ``init_value`` (the cosine's first 5 % lie within 0.7 % of it). Such a run
    depends on the measured rate, like any run a wall-time budget stops, so it is not
    repeatable to the bit; the measured number is recorded
    (:func:`horizons`; the trainers' ``schedule_steps``)."""
    O = "cosine_decay"
    v = P.real(init_value, O, "init_value", low=0.0, low_open=True)
    over_budget = isinstance(decay_steps, str) and decay_steps == "budget"
    if not over_budget and (isinstance(decay_steps, (str, bool)) or not isinstance(
            decay_steps, numbers.Integral) or decay_steps < 1):
        P.fail(O, "decay_steps", 'must be an integer >= 1 or "budget"', P.shown(decay_steps))
    n = "budget" if over_budget else int(decay_steps)
    a = P.real(alpha, O, "alpha", low=0.0, high=1.0, low_open=True)

    def value(k, n, anchor=None):
        x = _progress(k, n, anchor)
        return v * (a + (1.0 - a) * 0.5 * (1.0 + math.cos(math.pi * x)))

    if over_budget:
        def rate(k, h=None, anchor=None):
            k = _update_number(k, O)
            if h is None:
                return v
            return value(k, _horizon(h, O), _anchor(anchor, O))
        return Schedule(rate, ("cosine_decay", v, n, a), True)
    return Schedule(lambda k: value(_update_number(k, O), n), ("cosine_decay", v, n, a))


def budget_progress(k, n, anchor=None):
    """How far (0 to 1) update ``k`` lies along a schedule of horizon ``n`` updates:
    ``min(k, n) / n``; with ``anchor = (k0, x0)`` (a horizon re-fitted at update ``k0``,
    :func:`refit_horizon`) ``x0`` at ``k0``, then linearly to 1 at ``n``, so that a new
    horizon moves the rest of the schedule without a jump in the learning rate. ``k`` an
    integer >= 0, ``n`` an integer >= 1."""
    O = "budget_progress"
    return _progress(_update_number(k, O), _horizon(n, O, "n"), _anchor(anchor, O))


def _progress(k, n, anchor=None):
    """:func:`budget_progress` of checked arguments."""
    k = int(k)
    if anchor is None:
        return min(k, n) / n
    k0, x0 = int(anchor[0]), float(anchor[1])
    if k >= n:
        return 1.0
    if k <= k0:                 # (updates before the re-fit: already made)
        return x0
    return x0 + (1.0 - x0) * (k - k0) / (n - k0)


def piecewise_constant(init_value, boundaries, scales):
    """``init_value`` until update ``boundaries[0]``, then multiplied by ``scales[0]``,
    from update ``boundaries[1]`` by ``scales[1]`` as well, ... (optax's
    ``piecewise_constant_schedule``). ``boundaries``: increasing integers >= 1;
    ``scales``: one factor > 0 per boundary."""
    O = "piecewise_constant"
    v = P.real(init_value, O, "init_value", low=0.0, low_open=True)
    if not isinstance(boundaries, (list, tuple)) or not boundaries:
        P.fail(O, "boundaries", "must be a non-empty list of update numbers",
               P.shown(boundaries))
    if not isinstance(scales, (list, tuple)) or len(scales) != len(boundaries):
        P.fail(O, "scales", f"must be a list of {len(boundaries)} factor(s), one per "
               "boundary", P.shown(scales))
    b = [P.integer(x, O, f"boundaries[{i}]", low=1) for i, x in enumerate(boundaries)]
    if any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
        P.fail(O, "boundaries", "must increase", b)
    s = [P.real(x, O, f"scales[{i}]", low=0.0, low_open=True) for i, x in enumerate(scales)]
    levels, acc = [], v
    for f in s:
        acc *= f
        levels.append(acc)
    if not all(0.0 < x < math.inf for x in levels):
        P.fail(O, "scales", "must keep the learning rate finite and > 0", s)

    def value(k):
        i = bisect.bisect_right(b, _update_number(k, O))
        return v if i == 0 else levels[i - 1]
    return Schedule(value, ("piecewise_constant", v, tuple(b), tuple(s)))


def _schedule(learning_rate, owner):
    """``learning_rate`` (a number > 0 or a :class:`Schedule`) as a Schedule."""
    if isinstance(learning_rate, Schedule):      # constant(x): the number x itself
        return Schedule(None, learning_rate.settings) if isinstance(
            learning_rate.settings, float) else learning_rate
    if callable(learning_rate):
        P.fail(owner, "learning_rate", "must be a number > 0 or a neuro_meta.optim.Schedule "
               "(constant, cosine_decay, piecewise_constant)", type(learning_rate).__name__)
    return Schedule(None, P.real(learning_rate, owner, "learning_rate", low=0.0,
                                 low_open=True))


def _rate(sched, k, state):
    """The learning rate of update ``k`` (0-based) of a schedule from :func:`_schedule`
    (``state``: the optimiser's, whose ``"horizon"`` a schedule over the budget reads)."""
    if sched.value is None:
        return sched.settings
    if sched.over_budget:
        return sched.value(k, state["horizon"], state.get("anchor"))
    return sched.value(k)


def _horizon_state(sched, state):
    """``state`` with the ``"horizon"`` entry of a schedule over the budget (None: not
    measured yet), for :func:`set_horizon` to fill."""
    return {**state, "horizon": None} if sched.over_budget else state


def _walk(state, fn):
    """``state`` (an optimiser's: dicts, tuples of a chain's parts) with ``fn`` applied
    to every dict that has a ``"horizon"`` entry."""
    if isinstance(state, tuple):
        return tuple(_walk(s, fn) for s in state)
    if isinstance(state, list):
        return [_walk(s, fn) for s in state]
    if isinstance(state, dict) and "horizon" in state:
        return fn(state)
    return state


def horizons(state):
    """The horizons (meta-steps) of the schedules over the budget in optimiser state
    ``state`` (:func:`cosine_decay` with ``"budget"``): a list with one entry per such
    schedule, None where it is not measured yet; empty if it has none."""
    found = []
    _walk(state, lambda d: found.append(d["horizon"]) or d)
    return found


def set_horizon(state, steps):
    """``state`` with every not-yet-measured schedule over the budget set to last
    ``steps`` meta-steps (an integer >= 1; one already measured keeps its own)."""
    n = P.integer(steps, "set_horizon", "steps", low=1)
    return _walk(state, lambda d: d if d["horizon"] is not None else {**d, "horizon": n})


def refit_horizon(state, k, steps):
    """``state`` with every measured schedule over the budget re-fitted to end after
    ``steps`` updates (an integer > ``k``) from update ``k`` on: update ``k`` keeps the
    place along the schedule the old horizon gave it (:func:`budget_progress`), and the
    rest of the schedule is stretched or squeezed to end at the new horizon -- for a run
    whose meta-step rate changed after the horizon was first measured (another process
    started or stopped beside it). A schedule not measured yet is left as it is."""
    k = P.integer(k, "refit_horizon", "k", low=0)
    n = P.integer(steps, "refit_horizon", "steps", low=k + 1)

    def refit(d):
        if d["horizon"] is None:
            return d
        x = budget_progress(k, d["horizon"], d.get("anchor"))
        return {**d, "horizon": n, "anchor": (k, x)}
    return _walk(state, refit)


def _keep_horizon(state, new):
    """``new`` with ``state``'s ``"horizon"`` (and ``"anchor"``) entries, if it has
    them."""
    if "horizon" not in state:
        return new
    kept = {**new, "horizon": state["horizon"]}
    if "anchor" in state:
        kept["anchor"] = state["anchor"]
    return kept


def _own_state(state, owner, keys=(), sched=None):
    """``state`` must be the state its transformation's ``init`` made (or an ``update``
    returned): a dict with exactly the keys ``keys``, plus a schedule's ``"count"`` (an
    update number), and for a schedule over the budget its ``"horizon"`` (None or an
    integer >= 1) and, once re-fitted, ``"anchor"``. O(number of keys)."""
    need, optional = set(keys), set()
    if sched is not None and sched.value is not None:
        need.add("count")
        if sched.over_budget:
            need.add("horizon")
            optional.add("anchor")
    if not isinstance(state, dict) or not need <= set(state) <= need | optional:
        what = f"a dict with the keys {sorted(need)}" if need else "an empty dict"
        P.fail(owner, "state", "must be this transformation's own state, from its "
               f"init(theta) or update: {what}",
               f"a dict with the keys {sorted(map(str, state))}" if isinstance(state, dict)
               else type(state).__name__)
    if "count" in need:
        _update_number(state["count"], owner, "state.count")
    if "horizon" in need:
        P.integer(state["horizon"], owner, "state.horizon", low=1, allow_none=True)
    if "anchor" in state:
        _anchor(state["anchor"], owner, "state.anchor")
    return state


def sgd(learning_rate, momentum=0.0):
    """Stochastic gradient descent, ``updates = -lr * g`` (optionally heavy-ball momentum);
    ``learning_rate`` a number or a :class:`Schedule`."""
    sched = _schedule(learning_rate, "sgd")
    mu = P.real(momentum, "sgd", "momentum", low=0.0, high=1.0, high_open=True)
    scheduled = sched.value is not None

    def init(theta):
        check_params(theta, "sgd.init")
        state = {"velocity": tree_map(np.zeros_like, theta)} if mu else {}
        return _horizon_state(sched, {**state, "count": 0}) if scheduled else state

    @_quiet
    def update(grads, state):
        O = "sgd.update"
        check_params(grads, O, "grads")
        _own_state(state, O, ("velocity",) if mu else (), sched)
        if mu:
            check_params(state["velocity"], O, "state.velocity")
            check_tree(grads, state["velocity"], O, "grads")
            _finite_tree(state["velocity"], O, "state.velocity")
        _finite_tree(grads, O, "grads")
        new = {"count": state["count"] + 1} if scheduled else {}
        lr = _rate(sched, state["count"] if scheduled else 0, state)
        if not mu:
            return _finite_tree(tree_map(lambda g: -lr * g, grads), O, "", True), \
                {**state, **new}
        vel = _finite_tree(tree_map(lambda v, g: mu * v + g, state["velocity"], grads), O,
                           "", True)
        return _finite_tree(tree_map(lambda v: -lr * v, vel), O, "", True), \
            _keep_horizon(state, {"velocity": vel, **new})

    return GradientTransformation(init, update, ("sgd", sched.settings, mu))


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba 2015) with bias correction; ``learning_rate`` a number or a
    :class:`Schedule` of the update number."""
    sched = _schedule(learning_rate, "adam")
    b1 = P.real(b1, "adam", "b1", low=0.0, high=1.0, high_open=True)
    b2 = P.real(b2, "adam", "b2", low=0.0, high=1.0, high_open=True)
    eps = P.real(eps, "adam", "eps", low=0.0, low_open=True)

    def init(theta):
        check_params(theta, "adam.init")
        return _horizon_state(sched, {"count": 0, "m": tree_map(np.zeros_like, theta),
                                      "v": tree_map(np.zeros_like, theta)})

    @_quiet
    def update(grads, state):
        O = "adam.update"
        _own_state(state, O, ("count", "m", "v"), sched)
        check_params(state["m"], O, "state.m")
        check_tree(state["v"], state["m"], O, "state.v")
        check_tree(grads, state["m"], O, "grads")
        _finite_tree(grads, O, "grads")
        count = state["count"] + 1
        m = tree_map(lambda m_, g: b1 * m_ + (1 - b1) * g, state["m"], grads)
        v = tree_map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, state["v"], grads)
        if not all(np.isfinite(a).all() for k in v for a in v[k] if a is not None):
            raise SimulationError(      # (it would make every later update zero, silently)
                f"{O}: the second moment of the gradients overflowed (gradients beyond "
                "~1e154). Hint: clip the gradients (clip_by_global_norm) or rescale the "
                "problem")
        c1, c2 = 1 - b1 ** count, 1 - b2 ** count
        lr = _rate(sched, count - 1, state)
        upd = tree_map(lambda m_, v_: -lr * (m_ / c1) / (np.sqrt(v_ / c2) + eps), m, v)
        return upd, _keep_horizon(state, {"count": count, "m": m, "v": v})

    return GradientTransformation(init, update, ("adam", sched.settings, b1, b2, eps))


def global_norm(tree):
    """The L2 norm of every entry of ``tree`` together, by numpy's pairwise summation of
    the squares (scaled by the largest magnitude, so no square overflows): the same bits
    for any number of BLAS threads, which ``np.linalg.norm`` (BLAS ``nrm2``, split over
    threads for long vectors) does not give. ``tree``: a dict of lists of real arrays
    or None (:func:`check_params`), its entries finite. A norm beyond the largest float
    is inf -- its true value rounded -- (:func:`clip_by_global_norm` still scales such a
    tree correctly, from the norm's parts)."""
    O = "global_norm"
    check_params(tree, O, "tree")
    m, r = _norm_parts(tree)
    if not np.isfinite(m):
        P.fail(O, "tree", "must hold finite numbers", f"largest magnitude {m!r}")
    with np.errstate(over="ignore"):
        return m * r


def _norm_parts(tree):
    """``(m, r)``, the global L2 norm of ``tree`` (checked) being ``m * r``: ``m`` the
    largest magnitude, ``r`` in [1, sqrt(size)] (``r`` = 1 when ``m`` is 0 or not
    finite)."""
    v = _vector(tree)
    m = float(np.max(np.abs(v))) if v.size else 0.0
    if m == 0.0 or not np.isfinite(m):
        return m, 1.0
    return m, float(np.sqrt(np.sum(np.square(v / m))))


def clip_by_global_norm(max_norm):
    """Scale gradients down so that their global L2 norm is at most ``max_norm``."""
    max_norm = P.real(max_norm, "clip_by_global_norm", "max_norm", low=0.0, low_open=True)

    def init(theta):
        check_params(theta, "clip_by_global_norm.init")
        return {}

    @_quiet
    def update(grads, state):
        check_params(grads, "clip_by_global_norm.update", "grads")
        _own_state(state, "clip_by_global_norm.update")
        _finite_tree(grads, "clip_by_global_norm.update", "grads")
        m, r = _norm_parts(grads)
        norm = m * r
        if not m > 0 or norm <= max_norm:
            return tree_map(lambda g: g * 1.0, grads), state
        if np.isfinite(norm):
            scale = max_norm / norm
            return tree_map(lambda g: g * scale, grads), state
        # a norm beyond the largest float: scaled by parts, never zeroed
        inner = max_norm / r
        return tree_map(lambda g: (g / m) * inner, grads), state

    return GradientTransformation(init, update, ("clip_by_global_norm", max_norm))


def _tie_spec(keys, layer, owner):
    if isinstance(keys, str) or not isinstance(keys, (list, tuple)) or not keys or \
            not all(isinstance(k, str) for k in keys):
        P.fail(owner, "keys", "must be a non-empty list of parameter names (e.g. "
               "['w', 'b'])", repr(keys))
    return tuple(keys), P.integer(layer, owner, "layer")


def tied_rows(tree, keys, layer=-1):
    """``tree`` with the entries ``tree[k][layer]`` (``k`` in ``keys``) replaced by their
    mean over the first axis -- the post-synaptic units: every row of a weight matrix
    becomes the mean row, a bias vector its mean value -- a new dict, ``tree`` unchanged.

    For a read-out whose output labels are a random permutation in every task
    (few-shot classification), the meta-parameters that matter are the ones symmetric
    under permuting the output units; this is the orthogonal projection onto them. A
    soft-max read-out with equal rows gives every class the same logit, so a tied
    read-out starts every task neutral. The other entries are left alone (``None``
    entries stay ``None``)."""
    O = "tied_rows"
    keys, layer = _tie_spec(keys, layer, O)
    check_params(tree, O, "tree")
    out = dict(tree)
    for k in keys:
        if k not in tree:
            P.fail(O, "keys", f"must name entries of the tree {sorted(tree)}", repr(k))
        leaves = list(tree[k])
        if not -len(leaves) <= layer < len(leaves):
            P.fail(O, "layer", f"must index the {len(leaves)} entries of {k!r}", repr(layer))
        a = leaves[layer]
        if a is not None:
            a = np.asarray(a)
            if a.ndim == 0:
                P.fail(O, f"tree.{k}[{layer}]", "must have a first axis to tie "
                       "(post-synaptic units)", "a scalar")
            leaves[layer] = np.broadcast_to(a.mean(axis=0, keepdims=True), a.shape).copy()
        out[k] = leaves
    return out


def tie_rows(keys, layer=-1):
    """A transformation that replaces the updates of ``keys`` at connection ``layer``
    (default the last: the read-out) by their mean over the post-synaptic units
    (:func:`tied_rows`), so that parameters that start tied stay tied: put it first
    in a :func:`chain`, and start from ``tied_rows(theta, keys, layer)``."""
    keys, layer = _tie_spec(keys, layer, "tie_rows")

    def init(theta):
        tied_rows(theta, keys, layer)       # (checks that the keys and layer exist)
        return {}

    def update(grads, state):
        tied = tied_rows(grads, keys, layer)
        return tied, _own_state(state, "tie_rows.update")

    return GradientTransformation(init, update, ("tie_rows", keys, layer))


def chain(*transforms):
    """Apply transformations in sequence (e.g. ``chain(clip_by_global_norm(1), adam(1e-2))``);
    each a :class:`GradientTransformation`. Its state: a tuple of theirs."""
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            P.fail("chain", f"transforms[{i}]", "must be a GradientTransformation such as "
                   "adam(0.01) or clip_by_global_norm(1.0)", P.shown(t))

    def init(theta):
        return tuple(t.init(theta) for t in transforms)

    def update(grads, state):
        if not isinstance(state, (tuple, list)) or len(state) != len(transforms):
            P.fail("chain.update", "state", "must be this transformation's own state, "
                   f"from its init(theta) or update: a tuple of {len(transforms)} states, "
                   "one per transformation", f"{len(state)} entries" if isinstance(
                       state, (tuple, list)) else type(state).__name__)
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s)
            new_state.append(s)
        return grads, tuple(new_state)

    parts = tuple(getattr(t, "settings", None) for t in transforms)
    return GradientTransformation(init, update, None if any(
        p is None for p in parts) else ("chain",) + parts)


def check_tree(tree, like, owner, attr):
    """``tree`` must have the structure of ``like`` (a dict of lists of arrays or None):
    the same keys, list lengths, None entries and array shapes; its arrays real (integer
    or float: not bool or complex) and without units (a Brian2 quantity with units is
    refused)."""
    _check_same_structure(tree, like, owner, attr, "the parameters", "an array")
    for k, ref in like.items():
        for i, (a, r) in enumerate(zip(tree[k], ref)):
            if a is None:
                continue
            _no_units(a, owner, f"{attr}.{k}[{i}]")
            kind = np.asarray(a).dtype.kind if isinstance(a, (np.ndarray, numbers.Real)) \
                else ""
            if kind not in ("i", "u", "f") or np.shape(a) != np.shape(r):
                P.fail(owner, f"{attr}.{k}[{i}]", "must be a real array of shape "
                       f"{np.shape(r)} like the parameters'",
                       f"shape {np.shape(a)}" if kind in ("i", "u", "f")
                       else type(a).__name__ + (f" of dtype {a.dtype}" if isinstance(
                           a, np.ndarray) else ""))
    return tree


def lam_floor(lam_min, theta, owner, attr="lam_min"):
    """``lam_min`` checked against the parameters ``theta``: a number ≥ 0 (the same floor
    for every connection), or a list of one number ≥ 0 per connection -- per entry of
    each of ``theta``'s consolidation strengths (``lam``, ``lam_bias``, ...) -- returned
    as a float or a tuple of floats."""
    if isinstance(lam_min, (list, tuple)):
        floors = tuple(P.real(v, owner, f"{attr}[{i}]", low=0.0)
                       for i, v in enumerate(lam_min))
        if not floors:
            P.fail(owner, attr, "must be a number or a list of one number per connection",
                   "[]")
        if isinstance(theta, dict):
            for key in NONNEGATIVE:
                leaves = theta.get(key)
                if isinstance(leaves, (list, tuple)) and len(leaves) != len(floors):
                    P.fail(owner, attr, f"must have one floor per connection ({len(leaves)}, "
                           f"the entries of {key!r}) or be one number", list(floors))
        return floors
    return P.real(lam_min, owner, attr, low=0.0)


def apply_updates(theta, updates, lam_min=0.0):
    """``theta + updates``, then λ projected onto ``λ ≥ lam_min`` (default 0; a list:
    one floor per connection, :func:`lam_floor`).

    A floor above 0 bounds the slowest relaxation of a fast weight (τ_φ/λ), and so the
    time a phase needs to settle; a floor per connection can keep some layers rigid
    while others stay plastic. ``updates`` must have the structure of ``theta``; a
    non-finite result (an update that overflowed) is a
    :class:`~neuro_meta.errors.SimulationError`.
    """
    O = "apply_updates"
    lam_min = lam_floor(lam_min, theta, O)
    if not isinstance(theta, dict) or not all(isinstance(v, (list, tuple))
                                              for v in theta.values()):
        P.fail(O, "theta", "must be a dict of lists of arrays (like net.theta)",
               type(theta).__name__)
    check_params(theta, O, "theta")
    check_tree(updates, theta, O, "updates")
    with np.errstate(over="ignore", invalid="ignore"):
        out = tree_map(lambda t, u: t + u, theta, updates)
    for k, leaves in out.items():
        for i, a in enumerate(leaves):
            if a is not None and not np.isfinite(a).all():
                raise SimulationError(
                    f"apply_updates: {k}[{i}] is not finite after the update (the "
                    "parameters or the update overflowed or held NaN). Hint: reduce the "
                    "learning rate, or clip the gradients (optim.chain("
                    "optim.clip_by_global_norm(...), ...))")
    for key in NONNEGATIVE:
        if key in out:
            floors = lam_min if isinstance(lam_min, tuple) else (lam_min,) * len(out[key])
            out[key] = [None if a is None else np.maximum(a, f)
                        for a, f in zip(out[key], floors)]
    return out
