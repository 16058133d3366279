"""VSML: every synapse a tiny LSTM, meta-trained by evolution strategies.

Variable Shared Meta Learning (Kirsch & Schmidhuber, NeurIPS 2021; paper-notes §3)
replaces every weight of a network by a small recurrent network with its own state.
All synapses share the recurrent network's parameters θ; what a network *learns* lives
in the synapses' states, updated in forward mode only. This module implements the model
as the authors' code does (``louiskirsch/vsml-neurips2021``), in numpy, batched over
population members and episodes, and the antithetic evolution strategies (ES) that
meta-train θ, with the population evaluated on the package's executors.

The synapse (a → b) of a dense layer holds an LSTM state (h, c) of ``state_size`` = 16
units. Per time step it reads a forward message f_a (8 channels) and a backward message
m_b (8 channels) and, ``micro_ticks`` = 2 times with the same messages::

    z = [f_a, m_b, h] · W + b_W                      (W: 32 × 64, split i, g, f, o)
    c ← σ(z_f + 5) ⊙ c + σ(z_i − 5) ⊙ tanh(z_g)      (forget bias +5, input bias −5)
    h ← σ(z_o) ⊙ tanh(c)

then emits the forward message ``h · W_fwd + b_fwd`` and the backward message
``h · W_bwd + b_bwd`` (8 channels each). Unit b of the next layer receives the mean over
its inputs a of the synapses' forward messages; unit a of the previous layer the mean
over b of their backward messages (used there at the next time step). The network's
input x_a enters layer 0 in channel 0 of the forward message; the last layer's backward
message carries, in channels 0 and 1, the previous step's error ``e_b = softmax_b −
onehot_b`` and (``feed_label=True``) the previous step's label ``onehot_b``. The
prediction (logits) is channel ``output_channel`` = 1 of the last layer's forward
messages, soft-clipped ``B·tanh(·/B)`` with ``B = tanh_bound`` = 100.

Initial state of a synapse of a layer with ``fan_in`` inputs: h = 0; the first half of
c drawn from a normal distribution of standard deviation 1/√fan_in truncated at ±2
standard deviations (Haiku's ``TruncatedNormal``, the authors' initialiser), the second
half 0 -- the random half breaks the symmetry between synapses that share θ.

Meta-parameters θ (one flat vector, :meth:`VSML.unpack` names its parts): W (32 × 64),
b_W (64), W_fwd (16 × 8), b_fwd (8), W_bwd (16 × 8), b_bwd (8): 2,384 numbers with the
default sizes. Meta-objective: the mean *online* cross-entropy over an episode -- at
every step the network predicts the label of the current input, then sees it.

ES (:func:`es_gradient`): for a population of ``pairs`` noise vectors ε_i ~ N(0, I), the
antithetic estimate of ∇θ E[L] is ``ĝ = (1/P) Σ_i (L(θ+σε_i) − L(θ−σε_i)) / (2σ) · ε_i``;
the two members of a pair see the same episodes and initial states (common random
numbers). The member ``i`` of ES step ``t`` draws its noise and its episodes from
``SeedSequence([seed, t]).spawn(pairs)[i]`` alone, so the population can be split into
any chunks, on any executor, and give the same numbers; chunk results are gathered in
member order and the estimate is summed in that order.
"""
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _params as P
from . import optim
from .errors import SimulationError, user_stacklevel
from .workers import map_pieces, n_workers

#: Population members per in-process batch (bounds memory; results do not depend on it).
MEMBER_BATCH = 16


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _truncated_normal(rng, std, shape):
    """Normal(0, std) truncated at ±2 std (resampled), as Haiku's TruncatedNormal."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


@dataclass(frozen=True)
class VSML:
    """A VSML network of dense layers whose synapses are LSTMs sharing their parameters.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first: ``(n_in, n_out)`` is one VSML layer, ``(n_in, h,
        n_out)`` two. ``n_out`` is the number of classes.
    state_size : int
        LSTM units per synapse (16).
    msg_size : int
        Channels of the forward and backward messages (8; at least 2).
    micro_ticks : int
        LSTM steps per layer and time step, with the same incoming messages (2).
    forget_bias, input_bias : float
        Constant offsets of the forget and input gates (+5, −5: the synapse starts by
        remembering and by ignoring its inputs).
    init_rand_fraction : float
        Fraction of the cell state drawn at random at the start of an episode (0.5).
    tanh_bound : float or None
        Soft clip of the logits, ``B·tanh(z/B)`` (100; ``None``: none).
    output_channel : int
        Channel of the last layer's forward message read as the logit (1).
    feed_label : bool
        Whether the backward message carries the previous label (channel 1) besides
        the error (channel 0).
    backward_pass : bool
        ``False`` (default): the error and label of step t reach the last layer with
        the input of step t+1. ``True`` (the authors' Omniglot configuration): after
        the prediction of step t, a *backward tick* runs the layers in reverse order
        (``micro_ticks`` each) with the same forward messages and the error and label of
        step t; the next forward tick then gets a zero backward message at the last
        layer. Twice the compute per step.
    """

    sizes: tuple = (16, 5)
    state_size: int = 16
    msg_size: int = 8
    micro_ticks: int = 2
    forget_bias: float = 5.0
    input_bias: float = -5.0
    init_rand_fraction: float = 0.5
    tanh_bound: float = 100.0
    output_channel: int = 1
    feed_label: bool = True
    backward_pass: bool = False
    _layout: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        O = "VSML"
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
            P.fail(O, "sizes", "must be a sequence of at least two layer sizes (inputs, "
                   "..., classes)", P.shown(sizes))
        sizes = tuple(P.integer(s, O, f"sizes[{i}]", low=1) for i, s in enumerate(sizes))
        if sizes[-1] < 2:
            P.fail(O, "sizes[-1]", "must be >= 2 (the number of classes)", sizes[-1])
        object.__setattr__(self, "sizes", sizes)
        S = P.integer(self.state_size, O, "state_size", low=1)
        m = P.integer(self.msg_size, O, "msg_size", low=2)
        P.integer(self.micro_ticks, O, "micro_ticks", low=1)
        P.real(self.forget_bias, O, "forget_bias")
        P.real(self.input_bias, O, "input_bias")
        P.real(self.init_rand_fraction, O, "init_rand_fraction", low=0.0, high=1.0)
        P.real(self.tanh_bound, O, "tanh_bound", low=0.0, low_open=True, allow_none=True)
        P.integer(self.output_channel, O, "output_channel", low=0, high=m - 1)
        for name in ("feed_label", "backward_pass"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                P.fail(O, name, "must be True or False", P.shown(getattr(self, name)))
        n_lstm_in = 2 * m + S
        shapes = (("W", (n_lstm_in, 4 * S)), ("b", (4 * S,)), ("W_fwd", (S, m)),
                  ("b_fwd", (m,)), ("W_bwd", (S, m)), ("b_bwd", (m,)))
        layout, start = {}, 0
        for name, shape in shapes:
            n = int(np.prod(shape))
            layout[name] = (start, start + n, shape)
            start += n
        object.__setattr__(self, "_layout", layout)
        P.check_bytes(start, O, "state_size", f"of {start} meta-parameters", repr(S))
        cells = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * S
        P.check_bytes(2 * cells, O, "sizes", f"of {cells} x 2 LSTM states (h and c of "
                      "every synapse, one episode)", repr(sizes))

    # ----------------------------------------------------------------- parameters
    @property
    def n_params(self):
        """Number of meta-parameters (2,384 with the default sizes)."""
        return max(hi for _, hi, _ in self._layout.values())

    @property
    def n_synapses(self):
        """Number of synapses (LSTMs) of the network."""
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def init_theta(self, seed=0):
        """Initial meta-parameters as the authors' code draws them: weight matrices
        truncated normal (±2 std) with std 1/√fan_in, biases 0. Returns (n_params,)."""
        rng = P.rng_from_seed(seed, "VSML.init_theta")
        theta = np.zeros(self.n_params)
        for name, (lo, hi, shape) in self._layout.items():
            if len(shape) == 2:
                theta[lo:hi] = _truncated_normal(rng, 1.0 / np.sqrt(shape[0]), shape).ravel()
        return theta

    def check_theta(self, theta, owner="VSML", attr="theta"):
        """``theta`` as a float64 array (n_params,) or (members, n_params), finite."""
        t = P.finite_array(theta, owner, attr, ndim=(1, 2))
        if t.shape[-1] != self.n_params:
            P.fail(owner, attr, f"must have {self.n_params} meta-parameters on its last "
                   "axis", f"shape {t.shape}")
        return t

    def unpack(self, theta):
        """The named parts of θ: ``{"W", "b", "W_fwd", "b_fwd", "W_bwd", "b_bwd"}``, each
        with a leading member axis if ``theta`` is (members, n_params)."""
        t = self.check_theta(theta, "VSML.unpack")
        lead = t.shape[:-1]
        return {k: t[..., lo:hi].reshape(lead + shape)
                for k, (lo, hi, shape) in self._layout.items()}

    # ----------------------------------------------------------------- state
    def initial_cells(self, rng, lead=()):
        """Initial cell states per layer, ``lead + (n_pre, n_post, state_size)``: the
        first ``round(init_rand_fraction·state_size)`` units truncated normal with std
        1/√n_pre, the rest 0 (h starts at 0)."""
        rng = P.generator(rng, "VSML.initial_cells")
        if isinstance(lead, (str, bytes)) or not hasattr(lead, "__len__"):
            P.fail("VSML.initial_cells", "lead", "must be a tuple of non-negative integers "
                   "(the leading axes)", P.shown(lead))
        lead = tuple(P.integer(v, "VSML.initial_cells", f"lead[{i}]", low=0)
                     for i, v in enumerate(lead))
        n_lead = int(np.prod(lead, dtype=object)) if lead else 1
        cells = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])) * self.state_size
        P.check_bytes(n_lead * cells, "VSML.initial_cells", "lead", f"of {lead} x {cells} "
                      "cell states", repr(lead))
        k = int(self.init_rand_fraction * self.state_size)
        out = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            c = np.zeros(tuple(lead) + (a, b, self.state_size))
            c[..., :k] = _truncated_normal(rng, 1.0 / np.sqrt(a), tuple(lead) + (a, b, k))
            out.append(c)
        return out

    # ----------------------------------------------------------------- dynamics
    def lstm_step(self, p, fwd, bwd, h, c):
        """One micro-tick of every synapse of a layer (vectorised).

        ``p``: :meth:`unpack` of a (members, n_params) θ; ``fwd`` (M, E, n_pre, m) and
        ``bwd`` (M, E, n_post, m) the incoming messages; ``h``, ``c`` (M, E, n_pre,
        n_post, S). ``z = [f_a, m_b, h_ab] · W + b_W`` is computed as the sum of the
        three blocks of W (the message blocks once per unit, not per synapse). Returns
        the new (h, c).
        """
        O = "VSML.lstm_step"
        S, m = self.state_size, self.msg_size
        if not isinstance(p, dict) or any(k not in p for k in self._layout):
            P.fail(O, "p", "must be VSML.unpack of a (members, n_params) theta",
                   type(p).__name__)
        W = np.asarray(p["W"])
        if W.ndim != 3 or W.shape[1:] != (2 * m + S, 4 * S):
            P.fail(O, "p", "must be VSML.unpack of a (members, n_params) theta (with a "
                   "member axis)", f"W of shape {W.shape}")
        h = P.finite_array(h, O, "h", ndim=5)
        M, E, a, b, _ = h.shape
        if h.shape[-1] != S or W.shape[0] != M:
            P.fail(O, "h", f"must have shape ({W.shape[0]}, episodes, n_pre, n_post, {S})",
                   f"shape {h.shape}")
        c = P.finite_array(c, O, "c", shape=h.shape)
        fwd = P.finite_array(fwd, O, "fwd", shape=(M, E, a, m))
        bwd = P.finite_array(bwd, O, "bwd", shape=(M, E, b, m))
        return self._lstm_step(p, fwd, bwd, h, c)

    def _lstm_step(self, p, fwd, bwd, h, c):
        """:meth:`lstm_step` without the input checks (the inner loop of :meth:`run`)."""
        S, m = self.state_size, self.msg_size
        W = p["W"]
        M, E, a, b, _ = h.shape
        zf = np.matmul(fwd.reshape(M, E * a, m), W[:, :m]).reshape(M, E, a, 1, 4 * S)
        zb = np.matmul(bwd.reshape(M, E * b, m), W[:, m:2 * m]).reshape(M, E, 1, b, 4 * S)
        zh = np.matmul(h.reshape(M, E * a * b, S), W[:, 2 * m:]).reshape(M, E, a, b, 4 * S)
        z = zh + zf + zb + p["b"][:, None, None, None, :]
        i, g, f, o = (z[..., k * S:(k + 1) * S] for k in range(4))
        c = _sigmoid(f + self.forget_bias) * c + _sigmoid(i + self.input_bias) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return h, c

    def run(self, theta, x, y, cells):
        """Run the networks of ``theta`` online through episodes; return the logits.

        Parameters
        ----------
        theta : (M, n_params)
            One θ per population member.
        x : (M, E, L, n_in)
            E episodes of L inputs per member.
        y : (M, E, L) integers in [0, n_out)
            The labels, each shown (as error and label) at the step after its input.
        cells : list of (M, E, n_pre, n_post, S)
            Initial cell states per layer (:meth:`initial_cells` with ``lead=(M, E)``).

        Returns
        -------
        logits : (M, E, L, n_out)
            The prediction for input t, made before its label is seen.
        """
        O = "VSML.run"
        theta = self.check_theta(theta, O)
        if theta.ndim == 1:
            theta = theta[None]
        M = theta.shape[0]
        x = P.finite_array(x, O, "x", ndim=4)
        if x.shape[0] != M or x.shape[-1] != self.sizes[0]:
            P.fail(O, "x", f"must have shape ({M}, episodes, steps, {self.sizes[0]})",
                   f"shape {x.shape}")
        _, E, L, _ = x.shape
        y = np.asarray(y)
        if y.shape != (M, E, L) or y.dtype.kind not in "iu" or (
                y.size and (y.min() < 0 or y.max() >= self.sizes[-1])):
            P.fail(O, "y", f"must be integers in [0, {self.sizes[-1]}) of shape {(M, E, L)}",
                   f"shape {y.shape} dtype {y.dtype}")
        if not isinstance(cells, (list, tuple)) or len(cells) != len(self.sizes) - 1:
            P.fail(O, "cells", f"must be a list of {len(self.sizes) - 1} arrays (one per "
                   "layer)", P.shown(cells))
        cs = []
        for k, (c, a, b) in enumerate(zip(cells, self.sizes[:-1], self.sizes[1:])):
            c = P.finite_array(c, O, f"cells[{k}]", shape=(M, E, a, b, self.state_size))
            cs.append(c)
        p = {k: v for k, v in self.unpack(theta).items()}
        m, n_out, nl = self.msg_size, self.sizes[-1], len(self.sizes) - 1
        hs = [np.zeros_like(c) for c in cs]
        fwd_in = [np.zeros((M, E, a, m)) for a in self.sizes[:-1]]
        bwd_in = [np.zeros((M, E, b, m)) for b in self.sizes[1:]]
        logits = np.empty((M, E, L, n_out))
        onehot = np.eye(n_out)[y]                      # (M, E, L, n_out)
        for t in range(L):
            fwd_in[0] = np.zeros((M, E, self.sizes[0], m))
            fwd_in[0][..., 0] = x[:, :, t]
            for k in range(nl):
                h, c = hs[k], cs[k]
                for _ in range(self.micro_ticks):
                    h, c = self._lstm_step(p, fwd_in[k], bwd_in[k], h, c)
                hs[k], cs[k] = h, c
                M_, E_, a, b, S = h.shape
                hr = h.reshape(M, E * a * b, S)
                out = (np.matmul(hr, p["W_fwd"]).reshape(M, E, a, b, m)
                       + p["b_fwd"][:, None, None, None, :]).mean(axis=2)
                if k > 0:
                    bwd_in[k - 1] = (np.matmul(hr, p["W_bwd"]).reshape(M, E, a, b, m)
                                     + p["b_bwd"][:, None, None, None, :]).mean(axis=3)
                if k < nl - 1:
                    fwd_in[k + 1] = out
            z = out[..., self.output_channel]
            if self.tanh_bound is not None:
                z = self.tanh_bound * np.tanh(z / self.tanh_bound)
            logits[:, :, t] = z
            err = softmax(z) - onehot[:, :, t]
            new = np.zeros((M, E, n_out, m))
            new[..., 0] = err
            if self.feed_label:
                new[..., 1] = onehot[:, :, t]
            bwd_in[nl - 1] = new
            if self.backward_pass:
                for k in reversed(range(nl)):
                    h, c = hs[k], cs[k]
                    for _ in range(self.micro_ticks):
                        h, c = self._lstm_step(p, fwd_in[k], bwd_in[k], h, c)
                    hs[k], cs[k] = h, c
                    if k > 0:
                        M_, E_, a, b, S = h.shape
                        bwd_in[k - 1] = (np.matmul(h.reshape(M, E * a * b, S), p["W_bwd"])
                                         .reshape(M, E, a, b, m)
                                         + p["b_bwd"][:, None, None, None, :]).mean(axis=3)
                bwd_in[nl - 1] = np.zeros((M, E, n_out, m))
        if not np.isfinite(logits).all():
            raise SimulationError("VSML.run: the logits are not finite (a synapse state "
                                  "overflowed). Hint: smaller meta-parameters (a smaller "
                                  "ES learning rate or sigma)")
        return logits


def softmax(z):
    """Soft-max along the last axis, without overflow. ``z``: finite logits, at least 1-d
    with a non-empty last axis."""
    z = P.finite_array(z, "softmax", "z")
    if z.ndim < 1 or z.shape[-1] < 1:
        P.fail("softmax", "z", "must have a non-empty last axis (the classes)",
               f"shape {z.shape}")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def online_cross_entropy(logits, y):
    """Cross-entropy of each prediction, ``−log softmax(logits)[y]``, shape ``y.shape``
    (nats). ``logits`` finite, shape ``y.shape + (classes,)``; ``y`` integers in
    [0, classes)."""
    O = "online_cross_entropy"
    logits = P.finite_array(logits, O, "logits")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        P.fail(O, "logits", "must have a non-empty last axis (the classes)",
               f"shape {logits.shape}")
    n = logits.shape[-1]
    rule = (f"must be integers in [0, {n}) of shape {logits.shape[:-1]} (the logits' "
            "without the class axis)")
    y = P.as_array(y, O, "y", rule)
    if y.shape != logits.shape[:-1] or y.dtype.kind not in "iu" or (
            y.size and (y.min() < 0 or y.max() >= n)):
        P.fail(O, "y", rule, f"shape {y.shape} dtype {y.dtype}"
               + (f" range [{y.min()}, {y.max()}]" if y.size and y.dtype.kind in "iuf"
                  else ""))
    with np.errstate(over="ignore", invalid="ignore"):
        out = _cross_entropy(logits, y)
    if not np.isfinite(out).all():
        raise SimulationError(
            f"{O}: the cross-entropy overflowed for finite logits (largest magnitude "
            f"{float(np.abs(logits).max()):.3g}): the model producing them diverged. Hint: "
            "lower the ES step or noise (es.learning_rate, es.sigma), or check the "
            "meta-parameters")
    return out


def _cross_entropy(logits, y):
    """:func:`online_cross_entropy` without its checks (ES ranks a diverged member's
    loss, however large)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]


# ---------------------------------------------------------------------- episodes
@dataclass(frozen=True, eq=False)
class OnlineEpisodes:
    """Streams of N-way online classification drawn from a labelled feature set.

    An episode: ``ways`` distinct classes of ``labels`` in a random order (episode label
    j = the j-th drawn class) and ``length`` steps whose labels are drawn **i.i.d.
    uniformly** from the ``ways`` (as the authors' streams: a balanced stream would let
    a learner guess the least-seen label from the labels alone). The k-th occurrence of
    a class in the episode shows element k of a random permutation of that class's
    examples, the permutation tiled when the class has fewer examples than occurrences:
    every example of the class is shown once before any is shown again. ``sample(rng, n)`` returns ``x`` (n, length, d) float64
    and ``y`` (n, length) int64. All randomness from ``rng``. ``name`` labels the set.
    """

    features: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    ways: int = 5
    length: int = 30
    name: str = "data"

    def __post_init__(self):
        O = "OnlineEpisodes"
        f = P.finite_array(self.features, O, "features", ndim=2, max_abs=P.DATA_LIMIT)
        lab = np.asarray(self.labels)
        if lab.shape != (f.shape[0],) or lab.dtype.kind not in "iu":
            P.fail(O, "labels", f"must be {f.shape[0]} integers (one per feature row)",
                   f"shape {lab.shape} dtype {lab.dtype}")
        ways = P.integer(self.ways, O, "ways", low=2)
        length = P.integer(self.length, O, "length", low=1)
        classes = np.unique(lab)
        if len(classes) < ways:
            P.fail(O, "labels", f"must have at least ways={ways} classes",
                   f"{len(classes)} classes")
        f.setflags(write=False)
        object.__setattr__(self, "features", f)
        object.__setattr__(self, "labels", lab.copy())
        object.__setattr__(self, "ways", ways)
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "_by_class", [np.flatnonzero(lab == k) for k in classes])

    @property
    def n_features(self):
        return self.features.shape[1]

    def sample(self, rng, n):
        """``n`` episodes: ``x`` (n, length, d), ``y`` (n, length) int64."""
        rng = P.generator(rng, "OnlineEpisodes.sample")
        n = P.integer(n, "OnlineEpisodes.sample", "n", low=1)
        P.check_bytes(n * self.length * (self.n_features + 1), "OnlineEpisodes.sample", "n",
                      f"of {n} episodes x {self.length} steps x {self.n_features + 1}",
                      repr(n))
        L = self.length
        x = np.empty((n, L, self.n_features))
        y = np.empty((n, L), dtype=np.int64)
        for e in range(n):
            cls = rng.choice(len(self._by_class), self.ways, replace=False)
            lab = rng.integers(0, self.ways, L)
            idx = np.empty(L, dtype=np.int64)
            for j, c in enumerate(cls):
                where = np.flatnonzero(lab == j)
                pool = self._by_class[c]
                reps = -(-len(where) // len(pool))           # ceil
                idx[where] = np.tile(rng.permutation(pool), reps)[:len(where)]
            x[e] = self.features[idx]
            y[e] = lab
        return x, y

    def __repr__(self):
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return (f"OnlineEpisodes(name={self.name!r}, ways={self.ways}, length={self.length}, "
                f"examples={len(self.labels)}, d={self.n_features}, "
                f"sha256={h.hexdigest()[:12]})")


@dataclass(frozen=True, eq=False)
class VSMLObjective:
    """The ES meta-objective: mean online cross-entropy of a :class:`VSML` over
    ``episodes_per_member`` episodes of ``episodes`` (:class:`OnlineEpisodes`).

    ``objective(thetas, seeds)``: ``thetas`` (k, n_params), ``seeds`` k
    ``numpy.random.SeedSequence``; row ``j`` is scored on episodes and initial cell
    states drawn from ``seeds[j]`` alone (rows with equal seeds see the same episodes).
    Returns (k,) losses (nats).
    """

    model: VSML
    episodes: OnlineEpisodes
    episodes_per_member: int = 1

    def __post_init__(self):
        if not isinstance(self.model, VSML):
            P.fail("VSMLObjective", "model", "must be a VSML", type(self.model).__name__)
        if not isinstance(self.episodes, OnlineEpisodes):
            P.fail("VSMLObjective", "episodes", "must be OnlineEpisodes",
                   type(self.episodes).__name__)
        if self.model.sizes[0] != self.episodes.n_features or \
                self.model.sizes[-1] != self.episodes.ways:
            P.fail("VSMLObjective", "model.sizes", f"must start with the episodes' "
                   f"{self.episodes.n_features} features and end with their "
                   f"{self.episodes.ways} ways", self.model.sizes)
        P.integer(self.episodes_per_member, "VSMLObjective", "episodes_per_member", low=1)

    def draw(self, seed):
        """Episodes and initial cells of one seed: (x (E, L, d), y (E, L), cells)."""
        rng = np.random.default_rng(seed)
        x, y = self.episodes.sample(rng, self.episodes_per_member)
        cells = self.model.initial_cells(rng, (self.episodes_per_member,))
        return x, y, cells

    def fingerprint(self):
        """What decides the objective's values (for :meth:`ESTrainer.fingerprint`)."""
        return repr(self)

    def __call__(self, thetas, seeds):
        thetas = self.model.check_theta(thetas, "VSMLObjective", "thetas")
        if thetas.ndim == 1:
            thetas = thetas[None]
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or any(
                not isinstance(s, np.random.SeedSequence) for s in seeds):
            P.fail("VSMLObjective", "seeds", "must be a sequence of numpy.random."
                   "SeedSequence (one per row of thetas)", P.shown(seeds))
        if len(seeds) != thetas.shape[0]:
            P.fail("VSMLObjective", "seeds", f"must give one seed per row of thetas "
                   f"({thetas.shape[0]})", len(seeds))
        out = np.empty(thetas.shape[0])
        cache = {}
        for lo in range(0, thetas.shape[0], MEMBER_BATCH):
            hi = min(lo + MEMBER_BATCH, thetas.shape[0])
            draws = []
            for s in seeds[lo:hi]:
                key = (s.entropy if not isinstance(s.entropy, list) else tuple(s.entropy),
                       tuple(s.spawn_key))
                if key not in cache:
                    cache = {key: self.draw(s)}
                draws.append(cache[key])
            x = np.stack([d[0] for d in draws])
            y = np.stack([d[1] for d in draws])
            cells = [np.stack([d[2][k] for d in draws]) for k in range(len(draws[0][2]))]
            logits = self.model.run(thetas[lo:hi], x, y, cells)
            out[lo:hi] = _cross_entropy(logits, y).mean(axis=(1, 2))
        return out


# ---------------------------------------------------------------------- ES
#: Most antithetic pairs of an ES step (10**12 would spend minutes making seeds, then
#: run out of memory).
MAX_PAIRS = 10 ** 6


def member_seeds(seed, step, pairs):
    """``SeedSequence([seed, step]).spawn(pairs)``: one seed per antithetic pair of ES
    step ``step``. A member's noise is drawn from its seed's child ``(…, 0)`` and its
    data from child ``(…, 1)`` (:func:`member_streams`)."""
    O = "member_seeds"
    return np.random.SeedSequence([P.integer(seed, O, "seed", low=0),
                                   P.integer(step, O, "step", low=0)]).spawn(
        P.integer(pairs, O, "pairs", low=1, high=MAX_PAIRS))


def member_streams(ss):
    """(noise seed, data seed) of a member seed, without mutating it."""
    return tuple(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (k,))
                 for k in (0, 1))


def member_noise(ss, n):
    """The noise vector ε ~ N(0, I_n) of a member."""
    return np.random.default_rng(member_streams(ss)[0]).standard_normal(n)


def pair_losses(objective, theta, sigma, seeds):
    """Losses (L⁺, L⁻) of the antithetic pairs of ``seeds`` (runs on a worker). The
    objective must return exactly one loss per row (``2·len(seeds)``), else a
    ValidationError."""
    n = theta.shape[0]
    thetas = np.empty((2 * len(seeds), n))
    data = []
    for j, ss in enumerate(seeds):
        eps = member_noise(ss, n)
        thetas[2 * j] = theta + sigma * eps
        thetas[2 * j + 1] = theta - sigma * eps
        d = member_streams(ss)[1]
        data += [d, d]
    raw = objective(thetas, data)
    if P.is_quantity(raw) or np.asarray(raw).dtype.kind not in "iuf":
        P.fail("es_gradient", "objective", "must return real, dimensionless losses (no "
               "complex values, booleans or Brian2 units)", P.shown(raw) if np.ndim(raw) == 0
               else f"{type(raw).__name__} of dtype {np.asarray(raw).dtype}")
    loss = np.asarray(raw, dtype=float)
    if loss.shape != (2 * len(seeds),):
        P.fail("es_gradient", "objective", "must return one loss per row of thetas, shape "
               f"({2 * len(seeds)},) for {2 * len(seeds)} rows", f"shape {loss.shape}")
    return loss[0::2], loss[1::2]


@dataclass(frozen=True)
class ESEstimate:
    """One antithetic ES estimate: ``grad`` (n,), the pairs' losses ``loss_plus`` and
    ``loss_minus`` (pairs,), and ``loss`` their mean (the population's meta-loss)."""

    grad: np.ndarray
    loss_plus: np.ndarray
    loss_minus: np.ndarray

    @property
    def loss(self):
        return float(0.5 * (self.loss_plus.mean() + self.loss_minus.mean()))


def centered_ranks(losses):
    """Ranks of ``losses`` mapped linearly onto [−0.5, 0.5] (ties: by order of
    appearance), the fitness shaping of Salimans et al. (2017)."""
    a = P.finite_array(losses, "centered_ranks", "losses").ravel()
    r = np.empty(a.size)
    r[np.argsort(a, kind="stable")] = np.arange(a.size)
    return (r / max(a.size - 1, 1) - 0.5).reshape(np.shape(losses))


def es_gradient(objective, theta, sigma, pairs, seed=0, step=0, executor=None, chunks=None,
                fitness="raw"):
    """Antithetic ES estimate of ∇θ E[objective]:
    ``ĝ = (1/P) Σ_i (L(θ+σε_i) − L(θ−σε_i)) / (2σ) · ε_i``, i = 1..P = ``pairs``.

    ``objective(thetas (k, n), seeds)`` -> (k,) losses (e.g. :class:`VSMLObjective`;
    picklable for an executor). Member i's noise and data come from
    ``member_seeds(seed, step, pairs)[i]``; the pairs are split into ``chunks``
    contiguous pieces (default: the executor's workers) evaluated in-process
    (``executor=None``), on a ``concurrent.futures`` executor or a
    ``dask.distributed.Client``; the estimate is the same for every executor and
    chunking. A non-finite loss is a :class:`SimulationError`.

    ``fitness="rank"`` replaces the 2P losses by their :func:`centered_ranks` before
    differencing (robust to outliers; then ĝ estimates the direction of the
    rank-transformed objective, not ∇θ E[L]); ``"raw"`` (default, the authors' rule)
    uses the losses.
    """
    O = "es_gradient"
    if not callable(objective):
        P.fail(O, "objective", "must be callable as objective(thetas, seeds)",
               type(objective).__name__)
    theta = P.finite_array(theta, O, "theta", ndim=1)
    if theta.size == 0:
        P.fail(O, "theta", "must hold at least one meta-parameter", "shape (0,)")
    sigma = P.real(sigma, O, "sigma", low=0.0, low_open=True)
    pairs = P.integer(pairs, O, "pairs", low=1, high=MAX_PAIRS)
    P.check_bytes(2 * pairs * theta.size, O, "pairs", f"of {2 * pairs} members x "
                  f"{theta.size} parameters (the perturbed thetas)", repr(pairs))
    seed = P.integer(seed, O, "seed", low=0)
    step = P.integer(step, O, "step", low=0)
    if executor is not None and not hasattr(executor, "submit"):
        P.fail(O, "executor", "must be None, a concurrent.futures.Executor or a "
               "dask.distributed.Client", type(executor).__name__)
    chunks = P.integer(chunks, O, "chunks", low=1, allow_none=True)
    fitness = P.choice(fitness, O, "fitness", ("raw", "rank"))
    seeds = member_seeds(seed, step, pairs)
    k = min(chunks or n_workers(executor), pairs)
    bounds = np.linspace(0, pairs, k + 1).astype(int)
    parts = [seeds[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
    results = map_pieces(pair_losses, [(objective, theta, sigma, part) for part in parts],
                         executor)
    lp = np.concatenate([r[0] for r in results])
    lm = np.concatenate([r[1] for r in results])
    if not (np.isfinite(lp).all() and np.isfinite(lm).all()):
        raise SimulationError(f"es_gradient: step {step}: a population member's loss is "
                              "not finite. Hint: a smaller sigma or ES learning rate")
    fp, fm = lp, lm
    if fitness == "rank":
        ranks = centered_ranks(np.concatenate([lp, lm]))
        fp, fm = ranks[:pairs], ranks[pairs:]
    grad = np.zeros_like(theta)
    for i, ss in enumerate(seeds):
        grad += ((fp[i] - fm[i]) / (2.0 * sigma)) * member_noise(ss, theta.size)
    return ESEstimate(grad / pairs, lp, lm)


@dataclass
class ESHistory:
    """What an ES run recorded per step: ``step``, ``time_s`` (meta-training wall time,
    evaluations excluded), ``loss`` (population mean meta-loss, nats), ``grad_norm``;
    and per evaluation ``eval_step`` and ``eval`` (whatever ``evaluate(theta)``
    returned: a dict of numbers)."""

    step: list = field(default_factory=list)
    time_s: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    eval: list = field(default_factory=list)

    def as_dict(self):
        return {k: list(getattr(self, k)) for k in ("step", "time_s", "loss", "grad_norm",
                                                    "eval_step", "eval")}


class ESTrainer:
    """Meta-train θ by antithetic ES with an optimiser on top (default Adam 0.025, the
    authors' setting).

    Parameters
    ----------
    objective : callable ``(thetas, seeds) -> losses`` (e.g. :class:`VSMLObjective`)
    theta0 : (n,) initial meta-parameters
    sigma : float
        Noise scale (0.05).
    pairs : int
        Antithetic pairs per step (population = 2·pairs evaluations).
    optimizer : optim.GradientTransformation (default ``optim.adam(0.025)``)
    seed : int
    executor, chunks : see :func:`es_gradient` (results identical on every executor).
    fitness : ``"raw"`` (default) or ``"rank"`` (see :func:`es_gradient`).
    """

    def __init__(self, objective, theta0, sigma=0.05, pairs=64, optimizer=None, seed=0,
                 executor=None, chunks=None, fitness="raw"):
        O = "ESTrainer"
        if not callable(objective):
            P.fail(O, "objective", "must be callable as objective(thetas, seeds)",
                   type(objective).__name__)
        self.objective = objective
        self.theta0 = P.finite_array(theta0, O, "theta0", ndim=1)
        self.theta0.setflags(write=False)
        self.sigma = P.real(sigma, O, "sigma", low=0.0, low_open=True)
        self.pairs = P.integer(pairs, O, "pairs", low=1, high=MAX_PAIRS)
        self.optimizer = optimizer if optimizer is not None else optim.adam(0.025)
        self.wall_s = self.resumed_wall_s = 0.0     # set by train()
        if not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            P.fail(O, "optimizer", "must be an optim.GradientTransformation",
                   type(self.optimizer).__name__)
        self.seed = P.integer(seed, O, "seed", low=0)
        if executor is not None and not hasattr(executor, "submit"):
            P.fail(O, "executor", "must be None, a concurrent.futures.Executor or a "
                   "dask.distributed.Client", type(executor).__name__)
        self.executor = executor
        self.chunks = P.integer(chunks, O, "chunks", low=1, allow_none=True)
        self.fitness = P.choice(fitness, O, "fitness", ("raw", "rank"))
        self.theta = self.theta0.copy()

    def fingerprint(self):
        """What decides the run (stored in checkpoints; a resume under another one is
        refused): the objective (its ``fingerprint()`` if it has one, else its type's
        name -- a default ``repr`` holds a memory address), checksum of θ₀, σ, pairs, the
        optimiser (:func:`~neuro_meta.metatrain.optimizer_fingerprint`: a checksum of its
        settings), seed, fitness."""
        from .checkpoint import checksum
        from .metatrain import optimizer_fingerprint

        fpo = getattr(self.objective, "fingerprint", None)
        if callable(fpo):
            obj = str(fpo())
        else:
            t = type(self.objective)
            obj = f"{t.__module__}.{t.__qualname__}"

        tree = {"theta": [self.theta0.copy()]}
        return {"objective": obj, "theta0": checksum(tree)[:16],
                "sigma": self.sigma, "pairs": self.pairs,
                "optimizer": optimizer_fingerprint(self.optimizer, tree), "seed": self.seed,
                "fitness": self.fitness}

    def _optimizer_probe(self):
        """The optimiser checksum of checkpoints written before optimisers stated their
        settings: the bits of its update of one probe gradient."""
        from .checkpoint import checksum

        tree = {"theta": [self.theta0.copy()]}
        probe = {"theta": [np.linspace(-1.0, 1.0, self.theta0.size) + 0.25]}
        u1, _ = self.optimizer.update(probe, self.optimizer.init(tree))
        return checksum([u1])[:16]

    def train(self, steps, progress=True, checkpoint=None, resume=False, checkpoint_every=10,
              evaluate=None, eval_every=None, budget_s=None, select=None, extra=None):
        """Run ES steps until ``steps`` (or ``budget_s`` seconds of meta-training) and
        return the :class:`ESHistory`; ``self.theta`` holds the final θ.

        ``evaluate(theta) -> dict`` is called (clock paused) at step 0, every
        ``eval_every`` steps and at the end. ``checkpoint``: a file written atomically
        every ``checkpoint_every`` steps and at the end; with ``resume=True`` an existing
        one (of the same :meth:`fingerprint`) is continued -- same final numbers as one
        uninterrupted run. A progress bar shows the ES step and the current meta-loss.

        ``select``: a key of ``evaluate``'s dict (e.g. ``"val_loss"``); the θ of the
        evaluation with its lowest value (the earliest of equal ones; non-finite values
        never) is kept in ``self.best_theta`` / ``self.best_step`` (and in the
        checkpoint); it needs ``evaluate``. If no evaluation gave a finite value, the final
        θ is kept and a ``RuntimeWarning`` says so. Without ``select``, ``best_theta`` is
        the final θ.

        ``extra``: a dict of JSON-able settings that also decide the run without being
        the trainer's (e.g. the validation set and ``eval_every`` behind ``select``);
        stored with :meth:`fingerprint` in the checkpoint, so a resume under other ones
        is refused. ``eval_every``, ``select`` and whether there is an ``evaluate`` are
        always part of it.

        ``self.wall_s``, after the call: the wall time of all the work behind the returned
        history, evaluations included -- for a resumed run, this process's plus what the
        checkpoint kept (``self.resumed_wall_s``; 0 without a resume).
        """
        from ._progress import bar as tqdm

        from . import checkpoint as ckpt

        O = "ESTrainer.train"
        for name, flag in (("progress", progress), ("resume", resume)):
            if not isinstance(flag, (bool, np.bool_)):
                P.fail(O, name, "must be True or False", P.shown(flag))
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            P.fail(O, "checkpoint", "must be a path (str or os.PathLike) or None",
                   P.shown(checkpoint))
        steps = P.integer(steps, O, "steps", low=0)
        checkpoint_every = P.integer(checkpoint_every, O, "checkpoint_every", low=1)
        eval_every = P.integer(eval_every, O, "eval_every", low=1, allow_none=True)
        budget_s = P.real(budget_s, O, "budget_s", low=0.0, low_open=True, allow_none=True)
        if evaluate is not None and not callable(evaluate):
            P.fail(O, "evaluate", "must be None or callable as evaluate(theta)",
                   type(evaluate).__name__)
        if select is not None:
            if not isinstance(select, str):
                P.fail(O, "select", "must be None or a key (str) of the dict evaluate "
                       "returns", P.shown(select))
            if evaluate is None:
                P.fail(O, "select", "needs evaluate (the selection score comes from it)",
                       repr(select))
        if extra is not None and not isinstance(extra, dict):
            P.fail(O, "extra", "must be None or a dict of settings", P.shown(extra))
        tree = {"theta": [self.theta0.copy()]}
        state = self.optimizer.init(tree)
        if None in optim.horizons(state):
            P.fail(O, "optimizer", "must not decay its learning rate over the budget "
                   "(cosine_decay(v, 'budget') is for MetaTrainer and train_baseline): "
                   "give the schedule's steps", "a schedule over the budget")
        hist, step, elapsed = ESHistory(), 0, 0.0
        t_call, self.resumed_wall_s = time.perf_counter(), 0.0
        best = {"score": None, "step": 0, "theta": self.theta0.copy()}
        fp = self.fingerprint()
        fp["extra"] = {"eval_every": eval_every, "select": select,
                       "evaluate": evaluate is not None, **(extra or {})}
        if resume and checkpoint is not None and Path(checkpoint).exists():
            saved = ckpt.load(checkpoint)
            then = saved.get("fingerprint")
            if isinstance(then, dict) and then != fp and {**then, "optimizer": fp[
                    "optimizer"]} == fp and then.get("optimizer") == self._optimizer_probe():
                then = fp           # an older checkpoint: the same bits of the update
            if then != fp:
                then = then or {}
                diff = [k for k in fp if then.get(k) != fp[k]] or ["format"]
                if "extra" in diff and isinstance(then.get("extra"), dict):
                    sub = [f"extra.{k}" for k in {**then["extra"], **fp["extra"]}
                           if then["extra"].get(k) != fp["extra"].get(k)]
                    diff = [d for d in diff if d != "extra"] + sub
                raise ckpt.CheckpointError(
                    f"{checkpoint}: written by another configuration (differs in "
                    f"{', '.join(diff)}); resume with the configuration that wrote it, or "
                    "move it aside / restart without --resume")
            step, elapsed = int(saved["step"]), float(saved["elapsed_s"])
            # (absent in an older neuro_meta's checkpoint: its ES time is the best bound)
            self.resumed_wall_s = float(saved.get("wall_s", elapsed))
            tree, state = saved["theta"], saved["state"]
            best = saved["best"]
            for k, v in saved["history"].items():
                setattr(hist, k, list(v))
            if step > steps:
                P.fail(O, "steps", f"must be at least the step of the checkpoint "
                       f"{checkpoint} ({step}) to resume it", steps)

        def save():
            ckpt.save(checkpoint, {"fingerprint": fp, "step": step, "elapsed_s": elapsed,
                                   "wall_s": self.resumed_wall_s + time.perf_counter()
                                   - t_call,
                                   "theta": tree, "state": state, "best": best,
                                   "history": hist.as_dict()})

        def do_eval():
            if evaluate is not None and (not hist.eval_step or hist.eval_step[-1] != step):
                hist.eval_step.append(step)
                hist.eval.append(dict(evaluate(tree["theta"][0].copy())))
                if select is not None:
                    score = hist.eval[-1].get(select)
                    if score is None:
                        P.fail(O, "select", "must be a key of the dict evaluate returns "
                               f"({', '.join(hist.eval[-1])})", repr(select))
                    score = float(score)
                    if np.isfinite(score) and (best["score"] is None or score < best["score"]):
                        best.update(score=score, step=step, theta=tree["theta"][0].copy())

        if step == 0:
            do_eval()
        bar = tqdm(total=steps if budget_s is None else None, initial=step, desc="ES",
                   disable=not progress, unit="step", leave=False)
        try:
            while step < steps and (budget_s is None or elapsed < budget_s):
                t0 = time.perf_counter()
                est = es_gradient(self.objective, tree["theta"][0], self.sigma, self.pairs,
                                  self.seed, step, self.executor, self.chunks,
                                  self.fitness)
                upd, state = self.optimizer.update({"theta": [est.grad]}, state)
                tree = optim.apply_updates(tree, upd)
                step += 1
                elapsed += time.perf_counter() - t0
                hist.step.append(step)
                hist.time_s.append(elapsed)
                hist.loss.append(est.loss)
                hist.grad_norm.append(float(np.linalg.norm(est.grad)))
                bar.update(1)
                bar.set_postfix_str(f"step {step} meta-loss {est.loss:.4f}")
                if eval_every is not None and step % eval_every == 0:
                    do_eval()
                if checkpoint is not None and step % checkpoint_every == 0:
                    save()
        finally:
            bar.close()
        do_eval()
        if checkpoint is not None:
            save()
        self.theta = np.array(tree["theta"][0])
        if select is None:
            best.update(step=step, theta=self.theta.copy())
        elif best["score"] is None:
            import warnings

            warnings.warn(f"{O}: no evaluation gave a finite {select!r}; the final theta "
                          f"(step {step}) is kept", RuntimeWarning, stacklevel=user_stacklevel())
            best.update(step=step, theta=self.theta.copy())
        self.best_theta, self.best_step = np.array(best["theta"]), int(best["step"])
        self.wall_s = self.resumed_wall_s + time.perf_counter() - t_call
        return hist
