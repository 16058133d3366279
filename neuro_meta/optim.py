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
"""
from typing import Callable, NamedTuple

import numpy as np

from . import _params as P

NONNEGATIVE = ("lam", "lam_bias", "lam_gain", "lam_readout")


def tree_map(fn, *trees):
    """Apply ``fn`` leaf-wise to dicts of lists of arrays (``None`` leaves stay None)."""
    first = trees[0]
    return {k: [None if leaves[0] is None else fn(*leaves)
                for leaves in zip(*(t[k] for t in trees))] for k in first}


def tree_vector(tree):
    """All leaves flattened into one vector (fixed key order)."""
    parts = [np.ravel(a) for k in sorted(tree) for a in tree[k] if a is not None]
    return np.concatenate(parts) if parts else np.zeros(0)


class GradientTransformation(NamedTuple):
    init: Callable
    update: Callable


def sgd(learning_rate, momentum=0.0):
    """Stochastic gradient descent, ``updates = -lr * g`` (optionally heavy-ball momentum)."""
    lr = P.real(learning_rate, "sgd", "learning_rate", low=0.0, low_open=True)
    mu = P.real(momentum, "sgd", "momentum", low=0.0, high=1.0)

    def init(theta):
        return {"velocity": tree_map(np.zeros_like, theta)} if mu else {}

    def update(grads, state):
        if not mu:
            return tree_map(lambda g: -lr * g, grads), state
        vel = tree_map(lambda v, g: mu * v + g, state["velocity"], grads)
        return tree_map(lambda v: -lr * v, vel), {"velocity": vel}

    return GradientTransformation(init, update)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba 2015) with bias correction."""
    lr = P.real(learning_rate, "adam", "learning_rate", low=0.0, low_open=True)
    b1 = P.real(b1, "adam", "b1", low=0.0, high=1.0)
    b2 = P.real(b2, "adam", "b2", low=0.0, high=1.0)
    eps = P.real(eps, "adam", "eps", low=0.0, low_open=True)

    def init(theta):
        return {"count": 0, "m": tree_map(np.zeros_like, theta),
                "v": tree_map(np.zeros_like, theta)}

    def update(grads, state):
        count = state["count"] + 1
        m = tree_map(lambda m_, g: b1 * m_ + (1 - b1) * g, state["m"], grads)
        v = tree_map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, state["v"], grads)
        c1, c2 = 1 - b1 ** count, 1 - b2 ** count
        upd = tree_map(lambda m_, v_: -lr * (m_ / c1) / (np.sqrt(v_ / c2) + eps), m, v)
        return upd, {"count": count, "m": m, "v": v}

    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm):
    """Scale gradients down so that their global L2 norm is at most ``max_norm``."""
    max_norm = P.real(max_norm, "clip_by_global_norm", "max_norm", low=0.0, low_open=True)

    def init(theta):
        return {}

    def update(grads, state):
        norm = float(np.linalg.norm(tree_vector(grads)))
        scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
        return tree_map(lambda g: g * scale, grads), state

    return GradientTransformation(init, update)


def chain(*transforms):
    """Apply transformations in sequence (e.g. ``chain(clip_by_global_norm(1), adam(1e-2))``)."""

    def init(theta):
        return tuple(t.init(theta) for t in transforms)

    def update(grads, state):
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(theta, updates, lam_min=0.0):
    """``theta + updates``, then λ projected onto ``λ ≥ lam_min`` (default 0).

    A floor above 0 bounds the slowest relaxation of a fast weight (τ_φ/λ), and so the
    time a phase needs to settle.
    """
    lam_min = P.real(lam_min, "apply_updates", "lam_min", low=0.0)
    out = tree_map(lambda t, u: t + u, theta, updates)
    for key in NONNEGATIVE:
        if key in out:
            out[key] = [None if a is None else np.maximum(a, lam_min) for a in out[key]]
    return out
