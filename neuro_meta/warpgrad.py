"""WarpGrad (Flennerhag et al., ICLR 2020; Algorithm 2, offline) in numpy, vectorised over
tasks and over the buffer of trajectory points.

The network is the baselines' MLP (tanh hidden layers, linear head, biases) with a linear
*warp layer* after each hidden layer, ``head ∘ ω_L ∘ h_L ∘ … ∘ ω_1 ∘ h_1``
(:mod:`neuro_meta.warp`). Its parameters are a dict of lists::

    {"w": [W_1, …, W_L, W_head], "b": [b_1, …, b_head],      # task layers + head: fast
     "warp_w": [Ω_1, …, Ω_L], "warp_b": [c_1, …, c_L]}       # warp layers: slow

with ``W`` (n_post, n_pre) and square ``Ω_l`` (n_l, n_l), the warps starting at the
identity (:func:`init_warped_mlp`). The task parameters θ = (w, b) adapt to each task from
their meta-learned initial values θ₀; the warps are frozen within a task.

One meta-step on a meta-batch of tasks τ (α = ``inner_lr``, K = ``inner_steps``):

1. **Inner loop**: ``θ_{k+1} = θ_k − α ∇θ L(D_τ; θ_k, Ω)`` for k < K from θ₀ on the task's
   training shots D_τ; the points θ_0 … θ_{K−1} (those a step was taken from) form the
   buffer.
2. **Warp objective** at every buffered (τ, k), all at once: one more step on a batch
   B₁, ``θ' = θ_k − α ∇θ L(B₁; θ_k, Ω)``, scored on a batch B₂,
   ``J = L(B₂; θ', Ω)``. Its exact gradient::

       dJ/dΩ = ∂Ω L(B₂; θ', Ω) − α (∂²_{Ωθ} L(B₁; θ_k, Ω))ᵀ v,     v = ∇θ L(B₂; θ', Ω)

   the second term by one R-operator pass along v (:meth:`~neuro_meta.warp.WarpedPass.hvp`);
   ``first_order=True`` drops it. The warps' meta-gradient is the mean of dJ/dΩ over
   tasks and buffered points.

   **Batches.** The authors draw B₁ and B₂ from a task's (large) training stream. A
   few-shot task has only its K training shots and V validation points, so here
   **B₁ = the training shots** (θ' is the next inner step, θ_{k+1}) and **B₂ = the
   validation points** (never seen by the inner loop -- the meta-loss MAML and the other
   baselines use). J is then the validation loss one inner step after θ_k.
3. **Initialisation** (Leap, simplified, as in the authors' ``simplified_leap``):
   ``∇θ₀ = mean over tasks and steps of (θ_k − θ_{k+1}) / ‖θ_k − θ_{k+1}‖`` (the norm over
   all task parameters of that task and step; a step of length 0 contributes 0). The
   authors sum over the steps where this takes the mean: a constant factor K, which Adam
   removes.

``learn_warp=False`` keeps the warps at their initial values (the identity): the same
algorithm with θ₀ learned by the Leap objective only (``warpgrad_nowarp``, the control of
the issue's acceptance). :meth:`WarpGrad.meta_gradient` returns ``(grad, val_loss)`` like
the other baselines (:mod:`neuro_meta.baselines`) and :meth:`WarpGrad.evaluate` the
per-task validation error after the inner loop, so that it meta-trains under the same
rules (:func:`~neuro_meta.baselines.train_baseline`).
"""
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _params as P
from .activations import get_activation
from .baselines import MAX_INNER_STEPS, batch_xy, check_leaves, task_data, init_mlp
from .errors import SimulationError
from .losses import get_loss
from .warp import WarpedPass, warped_forward

__all__ = ["WarpGrad", "init_warped_mlp"]

TASK_GROUPS = ("w", "b")
WARP_GROUPS = ("warp_w", "warp_b")


def init_warped_mlp(sizes, seed=0):
    """Parameters of a warped MLP: the task layers as :func:`~neuro_meta.baselines.init_mlp`
    draws them for the same ``sizes`` and ``seed`` (Glorot-uniform weights, zero biases --
    the MAML-family baselines' initial network), and a warp layer at the identity after
    every hidden layer (``Ω_l = I``, ``c_l = 0``). ``sizes`` needs a hidden layer."""
    if isinstance(sizes, (list, tuple)) and len(sizes) == 2:
        P.fail("init_warped_mlp", "sizes", "needs at least one hidden layer (a warp layer "
               "follows each)", repr(list(sizes)))
    mlp = init_mlp(sizes, seed)
    hidden = [w.shape[0] for w in mlp["w"][:-1]]
    return {"w": mlp["w"], "b": mlp["b"], "warp_w": [np.eye(n) for n in hidden],
            "warp_b": [np.zeros(n) for n in hidden]}


def _tasks(tree, T):
    """Task parameters broadcast to a task axis (copies, writeable)."""
    return {k: [np.broadcast_to(a, (T,) + a.shape).copy() for a in tree[k]]
            for k in TASK_GROUPS}


def _sq_norm(tree, lead):
    """Per leading index (``lead`` axes) squared norm over every leaf."""
    return sum((a.reshape(a.shape[:lead] + (-1,)) ** 2).sum(axis=-1)
               for k in tree for a in tree[k])


def _check_points(points, owner, attr):
    """Task parameters ``{"w": [...], "b": [...]}`` with leading axes: real, finite,
    dimensionless numpy arrays (a NaN would read as a diverged inner loop)."""
    if not (isinstance(points, dict) and set(TASK_GROUPS) <= set(points)
            and all(isinstance(points[k], list) and points[k] for k in TASK_GROUPS)):
        P.fail(owner, attr, 'must be a dict {"w": [...], "b": [...]} of task parameters '
               "with a leading task axis", P.shown(points))
    check_leaves(points, owner, TASK_GROUPS, attr)
    if points["w"][0].ndim < 3:
        P.fail(owner, attr, "must have a leading task axis on every weight (tasks, n_post, "
               "n_pre)", f"shape {points['w'][0].shape}")


@dataclass(frozen=True)
class WarpGrad:
    """WarpGrad meta-learning of warp layers and of the task layers' initial values.

    Parameters
    ----------
    inner_lr : float
        SGD step α of the inner loop (and of the warp objective's step).
    inner_steps : int
        K, inner SGD steps per task (and buffered points per task).
    first_order : bool
        Drop the second-order term of the warp meta-gradient (``warpgrad_fo``).
    learn_warp : bool
        Meta-learn the warps (default); False keeps them at their initial values
        (``warpgrad_nowarp``: Leap-style initialisation only).
    warp_points : int, optional
        Buffered points per task the warp objective uses: all K (None, default) or this
        many, evenly spaced along the trajectory from θ_0 (``round(linspace(0, K − 1,
        n))``; deterministic). The objective costs about K times one inner step per task;
        fewer points buy more meta-steps in a wall-time budget.
    loss : str or loss object
        Loss of the inner loop and the warp objective: ``"squared_error"`` (default) or
        ``"cross_entropy"`` (outputs taken as logits, one-hot targets), or a loss object
        of :mod:`neuro_meta.losses` (stored as the object); :meth:`evaluate` reports its
        ``score`` (the MSE for squared error, the error rate for cross-entropy).

    Notes
    -----
    See the module docstring for the algorithm and :func:`init_warped_mlp` for the
    parameters.
    """

    inner_lr: float = 0.01
    inner_steps: int = 10
    first_order: bool = False
    learn_warp: bool = True
    warp_points: Any = None
    loss: Any = "squared_error"

    def __post_init__(self):
        O = "WarpGrad"
        P.real(self.inner_lr, O, "inner_lr", low=0.0, low_open=True)
        P.integer(self.inner_steps, O, "inner_steps", low=1, high=MAX_INNER_STEPS)
        for k in ("first_order", "learn_warp"):
            if not isinstance(getattr(self, k), bool):
                P.fail(O, k, "must be True or False", repr(getattr(self, k)))
        P.integer(self.warp_points, O, "warp_points", low=1, high=self.inner_steps,
                  allow_none=True)
        object.__setattr__(self, "loss", get_loss(self.loss, O, "loss"))

    @property
    def name(self):
        """``"warpgrad"``, ``"warpgrad_fo"`` (first order) or ``"warpgrad_nowarp"``."""
        if not self.learn_warp:
            return "warpgrad_nowarp"
        return "warpgrad_fo" if self.first_order else "warpgrad"

    # ------------------------------------------------------------------ the network
    def check_params(self, params, owner="WarpGrad", task_axis=False):
        """``params`` must be a warped MLP's (see :func:`init_warped_mlp`): the keys
        ``w``, ``b``, ``warp_w``, ``warp_b``; L + 1 task layers (n_post, n_pre) with bias
        vectors, each hidden layer followed by a square warp (n_l, n_l) with a bias; real,
        finite numpy arrays; no task axis (``task_axis=True``: the task layers may carry
        one leading task axis, the same for all, as :meth:`adapt` returns them)."""
        keys = set(TASK_GROUPS + WARP_GROUPS)
        if not (isinstance(params, dict) and set(params) == keys
                and all(isinstance(params[k], list) for k in keys)):
            P.fail(owner, "params", 'must be a dict {"w": [...], "b": [...], "warp_w": [...], '
                   '"warp_b": [...]} of lists (see init_warped_mlp)',
                   type(params).__name__ if not isinstance(params, dict)
                   else f"keys {sorted(map(str, params))}")
        n = len(params["w"])
        if n < 2 or len(params["b"]) != n or len(params["warp_w"]) != n - 1 \
                or len(params["warp_b"]) != n - 1:
            P.fail(owner, "params", "needs L + 1 >= 2 task layers ('w', 'b') and L warp "
                   "layers ('warp_w', 'warp_b')",
                   {k: len(params[k]) for k in sorted(keys)})
        check_leaves(params, owner, TASK_GROUPS + WARP_GROUPS)
        ndims = (2, 3) if task_axis else (2,)
        lead = None
        for l, (w, b) in enumerate(zip(params["w"], params["b"])):
            if w.ndim not in ndims or b.shape != w.shape[:-1] or (
                    lead is not None and w.shape[:-2] != lead):
                P.fail(owner, f"params['w'][{l}]", "must be a matrix (n_post, n_pre) with a "
                       "bias vector (n_post,)" + (" (or both with the same leading task "
                                                  "axis)" if task_axis else
                                                  " (no task axis in meta-parameters)"),
                       f"shapes {w.shape} and {b.shape}")
            lead = w.shape[:-2]
            if l and w.shape[-1] != params["w"][l - 1].shape[-2]:
                P.fail(owner, f"params['w'][{l}]", f"must have "
                       f"{params['w'][l - 1].shape[-2]} inputs (the previous layer's "
                       "outputs, through its warp)", f"shape {w.shape}")
        for l, (m, c) in enumerate(zip(params["warp_w"], params["warp_b"])):
            n_l = params["w"][l].shape[-2]
            if m.shape != (n_l, n_l) or c.shape != (n_l,):
                P.fail(owner, f"params['warp_w'][{l}]", f"must be a square matrix ({n_l}, "
                       f"{n_l}) (the warp of hidden layer {l}) with a bias vector ({n_l},)",
                       f"shapes {m.shape} and {c.shape}")
        return params

    def _acts(self, params):
        L = len(params["warp_w"])
        return [get_activation("tanh")] * L + [get_activation("linear")]

    def _pass(self, theta, params, X, Y, total_warp=False):
        return WarpedPass(theta["w"], theta["b"], params["warp_w"], params["warp_b"], X, Y,
                          self._acts(params), self.loss, total_warp=total_warp)

    def predict(self, params, x):
        """Outputs for inputs ``x`` (..., samples, n_in); task parameters with or without
        a task axis (e.g. from :meth:`adapt`)."""
        O = f"{type(self).__name__}.predict"
        self.check_params(params, O, task_axis=True)
        x = P.finite_array(x, O, "x", ndim=(2, 3))
        n_in = params["w"][0].shape[-1]
        if x.shape[-1] != n_in:
            P.fail(O, "x", f"must have {n_in} features per sample (the network's inputs)",
                   f"shape {x.shape}")
        w0 = params["w"][0]
        if w0.ndim == 3 and x.ndim == 3 and x.shape[0] != w0.shape[0]:
            P.fail(O, "x", f"must have {w0.shape[0]} tasks (the params' task axis)",
                   f"shape {x.shape}")
        return self._predict(params, x)

    def _predict(self, params, x):
        return warped_forward(params["w"], params["b"], params["warp_w"], params["warp_b"],
                              x, self._acts(params))[3]

    # ------------------------------------------------------------------ inner loop
    def trajectory(self, params, x, y, inner_steps=None):
        """The inner loop's points ``[θ_0, …, θ_K]`` on ``(x, y)`` (tasks, shots, ...):
        dicts ``{"w", "b"}`` with a task axis."""
        O = type(self).__name__
        self.check_params(params, O)
        steps = self.inner_steps if inner_steps is None else P.integer(
            inner_steps, f"{O}.trajectory", "inner_steps", low=0,
            high=MAX_INNER_STEPS)
        x, y = batch_xy(x, y, f"{O}.trajectory", params)
        self.loss.check_targets(y, f"{O}.trajectory", "y")
        return self._trajectory(params, x, y, steps)

    def _trajectory(self, params, x, y, steps):
        theta = _tasks(params, x.shape[0])
        points = [theta]
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(steps):
                wp = self._pass(theta, params, x, y)
                _finite(wp.loss, self.name, f"at inner step {k}")
                g = wp.grads(TASK_GROUPS)
                theta = {key: [a - self.inner_lr * d for a, d in zip(theta[key], g[key])]
                         for key in TASK_GROUPS}
                points.append(theta)
        for k in TASK_GROUPS:
            for a in theta[k]:
                _finite(a, self.name, f"at inner step {steps}")
        return points

    def adapt(self, params, x, y, inner_steps=None):
        """The parameters after the inner loop on ``(x, y)`` (the training shots): task
        parameters with a task axis, the warps as given. ``inner_steps`` overrides K."""
        points = self.trajectory(params, x, y, inner_steps)
        return {**points[-1], "warp_w": list(params["warp_w"]),
                "warp_b": list(params["warp_b"])}

    def evaluate(self, params, task, inner_steps=None):
        """Per-task validation error after the inner loop on the training shots, shape
        (tasks,): the loss's ``score`` -- for squared error the MSE, mean over validation
        points and outputs of ``(ŷ − y)²``."""
        self.check_params(params, type(self).__name__)
        xt, yt, xv, yv = task_data(task, params, type(self).__name__)
        adapted = self.adapt(params, xt, yt, inner_steps)
        with np.errstate(over="ignore", invalid="ignore"):
            err = self.loss.score(self._predict(adapted, xv), yv)
        _finite(err, self.name, "(validation error after adaptation)")
        return err

    # ------------------------------------------------------------------ meta-gradient
    def warp_objective(self, params, points, batch1, batch2, point_grad=False):
        """The warp objective at buffered task parameters ``points`` (dict ``{"w", "b"}``
        with leading axes, e.g. (tasks, K)): ``θ' = θ − α ∇θ L(B₁; θ, Ω)``,
        ``J = L(B₂; θ', Ω)``, with ``batch1 = (x₁, y₁)``, ``batch2 = (x₂, y₂)`` arrays
        (..., samples, n) broadcasting against the points' leading axes.

        Returns ``(J, grad_warp, grad_point)``: J per point; the gradient of ``Σ J`` over
        the points in the warps, ``Σ dJ/dΩ``, as a dict ``{"warp_w", "warp_b"}`` (exact, or
        without the second-order term for ``first_order=True``); and, with
        ``point_grad=True``, ``dJ/dθ = (I − α H₁) v`` per point (``v = ∇θ L(B₂; θ')``;
        first order: ``v``) as ``{"w", "b"}``, else None.
        """
        O = f"{type(self).__name__}.warp_objective"
        self.check_params(params, O)
        _check_points(points, O, "points")
        batches = []
        for name, batch in (("batch1", batch1), ("batch2", batch2)):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                P.fail(O, name, "must be a pair (x, y) of arrays", P.shown(batch))
            batches.append(tuple(P.finite_array(a, O, f"{name}[{i}]", max_abs=P.DATA_LIMIT)
                                 for i, a in enumerate(batch)))
        (x1, y1), (x2, y2) = batches
        with np.errstate(over="ignore", invalid="ignore"):
            p1 = self._pass(points, params, x1, y1, total_warp=True)
            g1 = p1.grads(TASK_GROUPS)
            moved = {k: [a - self.inner_lr * d for a, d in zip(points[k], g1[k])]
                     for k in TASK_GROUPS}
            p2 = self._pass(moved, params, x2, y2, total_warp=True)
            g2 = p2.grads()
            J = p2.loss
            gw = {"warp_w": g2["warp"], "warp_b": g2["warp_b"]}
            gp = {k: g2[k] for k in TASK_GROUPS} if point_grad else None
            if not self.first_order:
                hv = p1.hvp({"w": g2["w"], "b": g2["b"]})
                a = self.inner_lr
                gw = {"warp_w": [g - a * h for g, h in zip(g2["warp"], hv["warp"])],
                      "warp_b": [g - a * h for g, h in zip(g2["warp_b"], hv["warp_b"])]}
                if point_grad:
                    gp = {k: [g - a * h for g, h in zip(g2[k], hv[k])] for k in TASK_GROUPS}
        _finite(J, self.name, "in the warp objective")
        return J, gw, gp

    def buffer_indices(self):
        """The steps k of the buffered points θ_k the warp objective uses (see
        ``warp_points``)."""
        K = self.inner_steps
        if self.warp_points is None or self.warp_points == K:
            return list(range(K))
        return [int(k) for k in np.round(np.linspace(0, K - 1, self.warp_points))]

    def leap_gradient(self, points):
        """The simplified Leap gradient of θ₀ from trajectories ``[θ_0, …, θ_K]`` (dicts
        with a task axis): ``mean_{τ,k} (θ_k − θ_{k+1}) / ‖θ_k − θ_{k+1}‖``."""
        O = f"{type(self).__name__}.leap_gradient"
        if not isinstance(points, (list, tuple)) or not points:
            P.fail(O, "points", "must be a non-empty list of task parameters along the "
                   "inner loop", P.shown(points))
        for i, pt in enumerate(points):
            _check_points(pt, O, f"points[{i}]")
            shapes = [a.shape for k in TASK_GROUPS for a in pt[k]]
            ref = [a.shape for k in TASK_GROUPS for a in points[0][k]]
            if shapes != ref:
                P.fail(O, f"points[{i}]", "must have the shapes of points[0]",
                       f"shapes {shapes}")
        T, K = points[0]["w"][0].shape[0], len(points) - 1
        total = {k: [np.zeros(a.shape[1:]) for a in points[0][k]] for k in TASK_GROUPS}
        for a, b in zip(points[:-1], points[1:]):
            d = {k: [p - q for p, q in zip(a[k], b[k])] for k in TASK_GROUPS}
            norm = np.sqrt(_sq_norm(d, 1))
            inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
            for k in TASK_GROUPS:
                for t, dl in zip(total[k], d[k]):
                    t += (inv.reshape((T,) + (1,) * (dl.ndim - 1)) * dl).sum(axis=0)
        return {k: [t / (T * max(K, 1)) for t in total[k]] for k in TASK_GROUPS}

    def meta_gradient(self, params, task):
        """(meta-gradient in the structure of ``params``, mean validation loss after the
        inner loop): the Leap gradient for θ₀ = (w, b) and the mean warp-objective
        gradient for the warps (zeros with ``learn_warp=False``)."""
        O = type(self).__name__
        self.check_params(params, O)
        xt, yt, xv, yv = task_data(task, params, O)
        self.loss.check_targets(yt, O, "task.y_train")
        self.loss.check_targets(yv, O, "task.y_val")
        points = self._trajectory(params, xt, yt, self.inner_steps)
        grad = self.leap_gradient(points)
        if self.learn_warp:
            idx = self.buffer_indices()
            buf = {k: [np.stack([points[j][k][i] for j in idx], axis=1)
                       for i in range(len(params[k]))] for k in TASK_GROUPS}
            _, gw, _ = self.warp_objective(params, buf, (xt[:, None], yt[:, None]),
                                           (xv[:, None], yv[:, None]))
            n = xt.shape[0] * len(idx)
            grad.update({k: [g / n for g in gw[k]] for k in WARP_GROUPS})
        else:
            grad.update({k: [np.zeros_like(np.asarray(a, dtype=float)) for a in params[k]]
                         for k in WARP_GROUPS})
        with np.errstate(over="ignore", invalid="ignore"):
            val = self.loss.mean(self._predict({**points[-1], "warp_w": params["warp_w"],
                                               "warp_b": params["warp_b"]}, xv), yv)
        _finite(val, self.name, "(validation loss after adaptation)")
        return grad, float(np.mean(val))


def _finite(values, owner, where):
    """A SimulationError if ``values`` (losses) are not all finite or beyond
    :data:`~neuro_meta._params.DATA_LIMIT` (a diverged loop that has not overflowed yet)."""
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = not np.all(np.isfinite(v)) or np.any(np.abs(v) > P.DATA_LIMIT)
    if bad:
        raise SimulationError(f"{owner}: the inner loop diverged {where} (non-finite "
                              f"values or losses beyond {P.DATA_LIMIT:g}); Hint: try a "
                              "smaller inner_lr")
