"""MAML-family baselines in numpy: MAML, first-order MAML, ANIL, Reptile, iMAML and an
untrained reference, on a plain multi-layer perceptron, vectorised over tasks.

The network is the one the CML model uses for few-shot regression (e.g. sizes
``[1, 40, 40, 1]``): tanh hidden layers, a linear output, biases. Its parameters are a
dict of lists ``{"w": [W0, W1, ...], "b": [b0, b1, ...]}`` with ``W`` of shape
(n_post, n_pre) (``v = W r + b``), so that :mod:`neuro_meta.optim` works on them. Fast
(adapted) parameters carry a leading task axis: ``W`` (tasks, n_post, n_pre), ``b``
(tasks, n_post).

Losses follow the package convention: on a set of K examples
``L = 1/(2K) Σ_k ‖ŷ_k − y_k‖²`` (sum over outputs, mean over examples), or with
``loss="cross_entropy"`` the mean soft-max cross-entropy of the outputs taken as logits
(one-hot targets; :mod:`neuro_meta.losses`); ``L_trn`` on the training shots, ``L_out``
on the validation points. Every method adapts the initial
parameters θ to each task with its own inner loop, and its meta-gradient is that of the
meta-loss ``mean_τ L_out(φ_τ(θ))`` (exactly, or the method's approximation of it):

* :class:`MAML` -- ``inner_steps`` SGD steps ``φ_{j+1} = φ_j − α ∇L_trn(φ_j)``, φ_0 = θ;
  exact second-order meta-gradient by backpropagation through the unrolled loop,
  ``g_N = ∇L_out(φ_N)``, ``g_j = g_{j+1} − α H_trn(φ_j) g_{j+1}``, meta-gradient
  ``g_0``; Hessian-vector products exact by Pearlmutter's R-operator
  (:func:`mlp_hvp`). ``first_order=True`` drops the Hessian terms (FOMAML: ``g_N``).
* :class:`ANIL` -- MAML with the inner loop on the output layer only (the hidden layers
  run once per set); exact meta-gradient by reverse mode through the head's steps and
  backpropagation of the features' adjoints into the hidden layers.
* :class:`Reptile` -- the same SGD inner loop (optionally, as Nichol et al. 2018, on the
  training shots *and* the validation points, full batch or in minibatches);
  meta-gradient direction ``(θ − φ_N) / (α N)``; adaptation on the shots only.
* :class:`IMAML` -- proximal inner problem ``L_trn(φ) + λ/2 ‖φ − θ‖²`` solved by gradient
  descent with per-task backtracking; implicit meta-gradient
  ``(I + H_trn(φ*)/λ)⁻¹ ∇L_out(φ*)`` by conjugate gradients with exact Hessian-vector
  products.
* :class:`Untrained` -- the SGD inner loop from θ, no meta-learning (zero meta-gradient).

All tasks of a batch are processed at once (no Python loop over tasks).
"""
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _params as P
from . import optim
from .errors import SimulationError
from .losses import SQUARED_ERROR, get_loss
from .tasks import Task
from .workers import map_pieces, n_workers

#: Most steps of an inner loop (``inner_steps``, ``eval_steps``, iMAML's ``cg_steps``):
#: more is refused up front (a typo like 10**9 would run for days).
MAX_INNER_STEPS = 10 ** 6

logger = logging.getLogger(__name__)

__all__ = ["init_mlp", "mlp_predict", "mlp_loss", "mlp_grad", "mlp_hvp", "MAML", "ANIL",
           "Reptile", "IMAML", "Untrained", "train_baseline"]


# ------------------------------------------------------------------ the network
def init_mlp(sizes, seed=0):
    """Seeded MLP parameters: Glorot-uniform weights, zero biases.

    ``W_l ~ U[−s, s]`` with ``s = sqrt(6 / (n_pre + n_post))``, shape (n_post, n_pre).
    ``seed`` is an int ≥ 0 or a :class:`numpy.random.Generator`.
    """
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
        P.fail("init_mlp", "sizes", "must be a list of at least two layer sizes", repr(sizes))
    sizes = [P.integer(n, "init_mlp", f"sizes[{i}]", low=1) for i, n in enumerate(sizes)]
    n_params = sum(n_post * (n_pre + 1) for n_pre, n_post in zip(sizes[:-1], sizes[1:]))
    P.check_bytes(n_params, "init_mlp", "sizes", f"of {n_params} weights and biases",
                  repr(sizes))
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        rng = np.random.default_rng(P.integer(seed, "init_mlp", "seed", low=0))
    w, b = [], []
    for n_pre, n_post in zip(sizes[:-1], sizes[1:]):
        s = np.sqrt(6.0 / (n_pre + n_post))
        w.append(rng.uniform(-s, s, size=(n_post, n_pre)))
        b.append(np.zeros(n_post))
    return {"w": w, "b": b}


def _check_params(params, owner, task_axis=False):
    """``params`` must be an MLP's ``{"w": [...], "b": [...]}`` (see init_mlp): real,
    finite numpy arrays, layers (n_post, n_pre) with bias vectors (n_post,) that chain;
    with ``task_axis`` every leaf may carry one leading task axis, the same for all."""
    if not (isinstance(params, dict) and set(params) == {"w", "b"}
            and isinstance(params["w"], list) and isinstance(params["b"], list)
            and len(params["w"]) == len(params["b"]) >= 1):
        P.fail(owner, "params", 'must be a dict {"w": [W0, ...], "b": [b0, ...]} of equal-length '
               "lists (see init_mlp)", type(params).__name__ if not isinstance(params, dict)
               else f"keys {sorted(map(str, params))}")
    check_leaves(params, owner, ("w", "b"))
    ndims = (2, 3) if task_axis else (2,)
    lead = None
    for l, (w, b) in enumerate(zip(params["w"], params["b"])):
        if w.ndim not in ndims or b.shape != w.shape[:-1] or (lead is not None and
                                                              w.shape[:-2] != lead):
            P.fail(owner, f"params['w'][{l}]", "must be a matrix (n_post, n_pre) with a bias "
                   "vector (n_post,)" + (" (or both with the same leading task axis)"
                                          if task_axis else
                                          " (no task axis in meta-parameters)"),
                   f"shapes {w.shape} and {b.shape}")
        lead = w.shape[:-2]
        if l and w.shape[-1] != params["w"][l - 1].shape[-2]:
            P.fail(owner, f"params['w'][{l}]", f"must have {params['w'][l - 1].shape[-2]} "
                   "inputs (the previous layer's outputs)", f"shape {w.shape}")
    return params


def _check_tasks(params, x, owner, xattr="x"):
    """Params with a task axis of T > 1 need T tasks in ``x`` (batched)."""
    T = params["w"][0].shape[:-2]
    if T and T[0] != 1 and x.shape[0] != T[0]:
        P.fail(owner, xattr, f"must have {T[0]} tasks (the params' task axis)",
               f"shape {x.shape}")


def check_leaves(params, owner, groups, name="params"):
    """Every leaf of ``params[k]`` (k in ``groups``) must be a real, finite numpy array (a
    list, a complex or an object array, NaN or inf is refused naming the leaf)."""
    for k in groups:
        for i, a in enumerate(params[k]):
            attr = f"{name}['{k}'][{i}]"
            if not isinstance(a, np.ndarray):
                P.fail(owner, attr, "must be a numpy array (np.asarray it; see init_mlp)",
                       type(a).__name__)
            if P.is_quantity(a):            # an ndarray subclass: 10*mV is not 0.01
                P.dimensionless(a, owner, attr)
            if a.dtype.kind not in "iuf":
                P.fail(owner, attr, "must be a real (integer or float) array",
                       f"dtype {a.dtype}")
            if not np.isfinite(a).all():
                P.fail(owner, attr, "must be finite", f"{int(a.size - np.isfinite(a).sum())} "
                       "non-finite entries")


def check_widths(params, x, y, owner, xattr="x", yattr="y"):
    """Inputs and targets must fit the network: ``x`` (..., n_in of the first layer),
    ``y`` (..., n_out of the last); params with or without a task axis."""
    n_in, n_out = np.shape(params["w"][0])[-1], np.shape(params["w"][-1])[-2]
    if x.shape[-1] != n_in:
        P.fail(owner, xattr, f"must have {n_in} features per sample (the network's inputs)",
               f"shape {x.shape}")
    if y.shape[-1] != n_out:
        P.fail(owner, yattr, f"must have {n_out} entries per sample (the network's outputs)",
               f"shape {y.shape}")


def task_data(task, params, owner):
    """``(x_train, y_train, x_val, y_val)`` of ``task`` (a Task) with a task axis, their
    widths checked against the network ``params``."""
    task = _task(task, owner)
    check_widths(params, task.x_train, task.y_train, owner, "task.x_train", "task.y_train")
    check_widths(params, task.x_val, task.y_val, owner, "task.x_val", "task.y_val")
    return task.as_batch()


def _T(a):
    return np.swapaxes(a, -1, -2)


def _forward(params, x):
    """Rates of every layer: ``[x, r_1, ..., ŷ]`` (tanh hidden, linear output)."""
    acts = [x]
    n = len(params["w"])
    for l, (w, b) in enumerate(zip(params["w"], params["b"])):
        z = acts[-1] @ _T(w) + b[..., None, :]
        acts.append(np.tanh(z) if l < n - 1 else z)
    return acts


def _backprop(params, x, y, loss_fn=SQUARED_ERROR):
    """Per-task ``L_trn``, its gradient (with a task axis) and the cache for the R-pass.

    ``δ_{L−1} = ∂ℓ/∂ŷ / K`` (``(ŷ − y)/K`` for squared error, ``(softmax(ŷ) − y)/K``
    for cross-entropy), ``∂W_l = δ_lᵀ r_l``, ``∂b_l = Σ_k δ_l``,
    ``δ_{l−1} = (δ_l W_l) ⊙ (1 − r_l²)``.
    """
    acts = _forward(params, x)
    K = x.shape[-2]
    res = loss_fn.error(acts[-1], y)
    if loss_fn.name == "squared_error":
        loss = 0.5 * (res * res).sum(axis=(-1, -2)) / K
    else:
        loss = loss_fn.per_sample(acts[-1], y).sum(axis=-1) / K
    n = len(params["w"])
    deltas, backs = [None] * n, [None] * n
    gw, gb = [None] * n, [None] * n
    d = res / K
    for l in range(n - 1, -1, -1):
        deltas[l] = d
        gw[l] = _T(d) @ acts[l]
        gb[l] = d.sum(axis=-2)
        if l:
            backs[l] = d @ params["w"][l]
            d = backs[l] * (1.0 - acts[l] ** 2)
    return loss, {"w": gw, "b": gb}, (acts, deltas, backs, K, y, loss_fn)


def _rop(params, cache, v):
    """Hessian-vector product ``H v`` of ``L_trn`` by Pearlmutter's R-operator.

    Forward: ``R z_l = R r_l W_lᵀ + r_l V_lᵀ + v_l``, ``R r_{l+1} = (1 − r_{l+1}²) R z_l``
    (hidden) or ``R z_l`` (output). Backward: ``R δ_{L−1} = ∂²ℓ/∂ŷ² R ŷ / K``
    (``R ŷ / K`` for squared error),
    ``R δ_{l−1} = (R δ_l W_l + δ_l V_l) ⊙ (1 − r_l²) − 2 (δ_l W_l) ⊙ r_l ⊙ R r_l``;
    ``(Hv)_{W_l} = R δ_lᵀ r_l + δ_lᵀ R r_l``, ``(Hv)_{b_l} = Σ_k R δ_l``.
    """
    acts, deltas, backs, K, y, loss_fn = cache
    n = len(params["w"])
    rr = [None] * (n + 1)          # R r_l; R r_0 = 0 (the inputs do not depend on θ)
    for l in range(n):
        rz = acts[l] @ _T(v["w"][l]) + v["b"][l][..., None, :]
        if l:
            rz = rz + rr[l] @ _T(params["w"][l])
        rr[l + 1] = (1.0 - acts[l + 1] ** 2) * rz if l < n - 1 else rz
    hw, hb = [None] * n, [None] * n
    rd = (rr[n] if loss_fn.name == "squared_error"
          else loss_fn.curvature(acts[n], y, rr[n])) / K
    for l in range(n - 1, -1, -1):
        hw[l] = _T(rd) @ acts[l]
        if l:
            hw[l] = hw[l] + _T(deltas[l]) @ rr[l]
        hb[l] = rd.sum(axis=-2)
        if l:
            rd = ((rd @ params["w"][l] + deltas[l] @ v["w"][l]) * (1.0 - acts[l] ** 2)
                  - 2.0 * backs[l] * acts[l] * rr[l])
    return {"w": hw, "b": hb}


def batch_xy(x, y, owner, params=None):
    """``x``, ``y`` as finite arrays with a task axis (added to 2-d input); with ``params``
    their widths are checked against the network first. Errors show the shapes the
    caller passed."""
    x = P.finite_array(x, owner, "x", ndim=(2, 3), max_abs=P.DATA_LIMIT)
    y = P.finite_array(y, owner, "y", ndim=(2, 3), max_abs=P.DATA_LIMIT)
    if params is not None:
        check_widths(params, x, y, owner)
    xb = x if x.ndim == 3 else x[None]
    yb = y if y.ndim == 3 else y[None]
    if xb.shape[:-1] != yb.shape[:-1]:
        P.fail(owner, "y", f"must have as many tasks and samples as x {x.shape[:-1]}",
               f"shape {y.shape}")
    if xb.shape[0] == 0 or xb.shape[1] == 0:
        P.fail(owner, "x", "must have at least one task and one sample", f"shape {x.shape}")
    return xb, yb


def mlp_predict(params, x):
    """Network output ``ŷ`` for inputs ``x`` (..., samples, n_in); params with or without
    a task axis."""
    _check_params(params, "mlp_predict", task_axis=True)
    x = P.finite_array(x, "mlp_predict", "x", ndim=(2, 3))
    n_in = params["w"][0].shape[-1]
    if x.shape[-1] != n_in:
        P.fail("mlp_predict", "x", f"must have {n_in} features per sample (the network's "
               "inputs)", f"shape {x.shape}")
    if x.ndim == 3:
        _check_tasks(params, x, "mlp_predict")
    return _predict(params, x)


def _predict(params, x):
    return _forward(params, x)[-1]


def mlp_loss(params, x, y, loss="squared_error"):
    """Per-task loss, shape (tasks,): ``1/(2K) Σ_k ‖ŷ_k − y_k‖²``, or the mean of another
    ``loss`` (``"cross_entropy"``, :mod:`neuro_meta.losses`)."""
    loss = get_loss(loss, "mlp_loss", "loss")
    _check_params(params, "mlp_loss", task_axis=True)
    x, y = batch_xy(x, y, "mlp_loss", params)
    _check_tasks(params, x, "mlp_loss")
    loss.check_targets(y, "mlp_loss", "y")
    with np.errstate(over="ignore", invalid="ignore"):     # overflow: the error below
        if loss.name == "squared_error":
            res = _predict(params, x) - y
            value = 0.5 * (res * res).sum(axis=(-1, -2)) / x.shape[-2]
        else:
            value = loss.mean(_predict(params, x), y)
    _finite_loss(value, "mlp_loss")
    return value


def _finite_loss(value, owner):
    """A SimulationError instead of an overflowed (inf) loss."""
    if not np.all(np.isfinite(value)):
        raise SimulationError(f"{owner}: the loss overflowed (not finite) for "
                              f"{int(np.size(value) - np.isfinite(value).sum())} task(s). "
                              "Hint: the parameters or data are too large; rescale them")


def mlp_grad(params, x, y, loss="squared_error"):
    """(per-task loss (tasks,), gradient w.r.t. params with a task axis), by backprop."""
    loss = get_loss(loss, "mlp_grad", "loss")
    _check_params(params, "mlp_grad", task_axis=True)
    x, y = batch_xy(x, y, "mlp_grad", params)
    _check_tasks(params, x, "mlp_grad")
    loss.check_targets(y, "mlp_grad", "y")
    with np.errstate(over="ignore", invalid="ignore"):     # overflow: the error below
        value, grad, _ = _backprop(params, x, y, loss)
    _finite_loss(value, "mlp_grad")
    if not _all_finite(grad):
        raise SimulationError("mlp_grad: the gradient overflowed (not finite). Hint: the "
                              "parameters or data are too large; rescale them")
    return value, grad


def mlp_hvp(params, x, y, v, loss="squared_error"):
    """Exact Hessian-vector product ``H v`` of the per-task loss (R-operator); ``v`` in the
    params structure, with or without a task axis. Returns a task axis."""
    loss = get_loss(loss, "mlp_hvp", "loss")
    _check_params(params, "mlp_hvp", task_axis=True)
    x, y = batch_xy(x, y, "mlp_hvp", params)
    _check_tasks(params, x, "mlp_hvp")
    loss.check_targets(y, "mlp_hvp", "y")
    n = len(params["w"])
    if not (isinstance(v, dict) and set(v) == {"w", "b"} and isinstance(v["w"], list)
            and isinstance(v["b"], list) and len(v["w"]) == len(v["b"]) == n):
        P.fail("mlp_hvp", "v", f'must be a dict {{"w": [...], "b": [...]}} of {n} layers '
               "like params", type(v).__name__ if not isinstance(v, dict)
               else f"keys {sorted(map(str, v))}")
    check_leaves(v, "mlp_hvp", ("w", "b"), name="v")
    for k in ("w", "b"):
        for i, (a, p) in enumerate(zip(v[k], params[k])):
            core = p.shape[-(2 if k == "w" else 1):]
            if a.shape[-len(core):] != core or a.ndim > len(core) + 1:
                P.fail("mlp_hvp", f"v['{k}'][{i}]", f"must have the shape of params['{k}'][{i}] "
                       f"{core} (with or without a task axis)", f"shape {a.shape}")
    _, _, cache = _backprop(params, x, y, loss)
    return _rop(params, cache, v)


# ------------------------------------------------------------------ tree helpers
def _axpy(a, x, y):
    """``a x + y`` leaf-wise; ``a`` a scalar or a per-task vector (tasks,)."""
    a = np.asarray(a, dtype=float)

    def f(xl, yl):
        return (a.reshape(a.shape + (1,) * (xl.ndim - 1)) if a.ndim else a) * xl + yl

    return optim.tree_map(f, x, y)


def _tdot(x, y):
    """Per-task inner product of two task-batched trees, shape (tasks,)."""
    return sum((xl * yl).reshape(xl.shape[0], -1).sum(axis=1)
               for k in x for xl, yl in zip(x[k], y[k]))


def _where(mask, x, y):
    """Per task ``x`` where ``mask`` (tasks,) else ``y``."""
    return optim.tree_map(
        lambda a, b: np.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), x, y)


def _broadcast(params, n_tasks):
    return optim.tree_map(lambda a: np.broadcast_to(a, (n_tasks,) + a.shape), params)


def _task_mean(tree):
    return optim.tree_map(lambda a: a.mean(axis=0), tree)


def _all_finite(tree):
    return all(np.isfinite(a).all() for k in tree for a in tree[k])


def _check_finite(values, owner, where, hint):
    """A SimulationError if ``values`` (losses) are not all finite or beyond
    :data:`~neuro_meta._params.DATA_LIMIT` (1e100: a loss of 1e251 is a diverged loop
    that has not overflowed yet); ``where`` says where it happened (an inner step number
    or a phrase)."""
    with np.errstate(invalid="ignore"):
        bad = not np.all(np.isfinite(values)) or np.any(np.abs(values) > P.DATA_LIMIT)
    if bad:
        where = f"at inner step {where}" if isinstance(where, int) else where
        raise SimulationError(f"{owner}: the inner loop diverged {where} (non-finite values "
                              f"or losses beyond {P.DATA_LIMIT:g}); Hint: {hint}")


# ------------------------------------------------------------------ methods
class _Baseline:
    """Shared by the methods: the inner loop ``inner_steps`` steps
    ``φ_{j+1} = φ_j − α ∇L_trn(φ_j)`` from θ (α = ``inner_lr``), adaptation, evaluation.
    Subclasses are frozen dataclasses with fields ``inner_lr``, ``inner_steps`` and
    ``loss`` (``"squared_error"`` or ``"cross_entropy"``, or a loss object of
    :mod:`neuro_meta.losses`; stored as the object)."""

    def __post_init__(self):
        O = type(self).__name__
        P.real(self.inner_lr, O, "inner_lr", low=0.0, low_open=True)
        P.integer(self.inner_steps, O, "inner_steps", low=1, high=MAX_INNER_STEPS)
        object.__setattr__(self, "loss", get_loss(self.loss, O, "loss"))

    @property
    def name(self):
        return type(self).__name__.lower()

    def _inner(self, params, x, y, steps, keep):
        """Adapted params (task axis) and, if ``keep``, the caches of every step."""
        owner = type(self).__name__
        phi = _broadcast(params, x.shape[0])
        caches = []
        with np.errstate(over="ignore", invalid="ignore"):
            for j in range(steps):
                loss, g, cache = _backprop(phi, x, y, self.loss)
                _check_finite(loss, owner, j, "try a smaller inner_lr")
                if keep:
                    caches.append((phi, cache))
                phi = _axpy(-self.inner_lr, g, phi)
        if not _all_finite(phi):
            _check_finite(np.nan, owner, steps, "try a smaller inner_lr")
        return phi, caches

    def adapt(self, params, x, y, inner_steps=None):
        """Fast parameters after the inner loop on ``(x, y)`` (the training shots), with a
        task axis. ``inner_steps`` overrides the method's number of steps."""
        _check_params(params, type(self).__name__)
        x, y = batch_xy(x, y, f"{type(self).__name__}.adapt", params)
        self.loss.check_targets(y, f"{type(self).__name__}.adapt", "y")
        steps = self.inner_steps if inner_steps is None else P.integer(
            inner_steps, f"{type(self).__name__}.adapt", "inner_steps", low=0,
            high=MAX_INNER_STEPS)
        phi = self._inner(params, x, y, steps, keep=False)[0]
        return optim.tree_map(lambda a: a if a.flags.writeable else a.copy(), phi)

    def evaluate(self, params, task, inner_steps=None):
        """Per-task validation score after the method's inner loop on the training shots,
        shape (tasks,): the loss's ``score`` -- the MSE (mean over validation points and
        outputs of ``(ŷ − y)²``) for squared error, the error rate for cross-entropy."""
        _check_params(params, type(self).__name__)
        xt, yt, xv, yv = task_data(task, params, type(self).__name__)
        phi = self.adapt(params, xt, yt, inner_steps)
        with np.errstate(over="ignore", invalid="ignore"):
            mse = self.loss.score(_predict(phi, xv), yv)
        _check_finite(mse, type(self).__name__, "(validation error after adaptation)",
                      "try a smaller inner_lr")
        return mse

    def _adapt_and_validate(self, params, task, keep=False):
        """Shared prelude of the meta-gradients: check the inputs, run the inner loop on
        the training shots and take the validation loss and its gradient at the adapted
        parameters. Returns (phi, caches, loss, grad, (xt, yt, xv, yv))."""
        owner = type(self).__name__
        _check_params(params, owner)
        data = task_data(task, params, owner)
        xt, yt, xv, yv = data
        self.loss.check_targets(yt, owner, "task.y_train")
        self.loss.check_targets(yv, owner, "task.y_val")
        phi, caches = self._inner(params, xt, yt, self.inner_steps, keep=keep)
        loss, g = self._val_grad(phi, xv, yv)
        return phi, caches, loss, g, data

    def _val_grad(self, phi, xv, yv):
        with np.errstate(over="ignore", invalid="ignore"):
            loss, g, _ = _backprop(phi, xv, yv, self.loss)
        _check_finite(loss, type(self).__name__, "(validation loss after adaptation)",
                      "try a smaller inner_lr")
        return loss, g


def _task(task, owner, attr="task"):
    if not isinstance(task, Task):
        P.fail(owner, attr, "must be a Task", type(task).__name__)
    return task


@dataclass(frozen=True)
class MAML(_Baseline):
    """Model-agnostic meta-learning (Finn et al. 2017) with the exact meta-gradient.

    Inner loop: ``φ_0 = θ``, ``φ_{j+1} = φ_j − α ∇L_trn(φ_j)`` for ``j < N`` (α =
    ``inner_lr``, N = ``inner_steps``). Meta-gradient of ``mean_τ L_out(φ_N)``:
    ``g_N = ∇L_out(φ_N)``, ``g_j = (I − α H_trn(φ_j)) g_{j+1}``, result ``mean_τ g_0``
    (Hessian-vector products exact, R-operator). ``first_order=True`` (FOMAML) drops
    the Hessian terms: ``mean_τ g_N``.
    """

    inner_lr: float = 0.01
    inner_steps: int = 1
    first_order: bool = False
    loss: object = "squared_error"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.first_order, bool):
            P.fail(type(self).__name__, "first_order", "must be True or False",
                   repr(self.first_order))

    @property
    def name(self):
        return "fomaml" if self.first_order else "maml"

    def meta_gradient(self, params, task):
        """(meta-gradient in the structure of ``params``, mean validation loss L_out)."""
        phi, caches, loss, g, (xt, yt, xv, yv) = self._adapt_and_validate(
            params, task, keep=not self.first_order)
        for phi_j, cache in reversed(caches):
            g = _axpy(-self.inner_lr, _rop(phi_j, cache, g), g)
        return _task_mean(g), float(loss.mean())


@dataclass(frozen=True)
class ANIL(MAML):
    """Almost no inner loop (Raghu, Raghu, Bengio & Vinyals 2020): MAML whose inner loop
    adapts the output layer (the head ``A = W_{L-1}``, ``c = b_{L-1}``) only; the hidden
    layers are meta-learned and frozen within a task.

    With the features ``F = r_{L-1}(x_trn)`` of the training shots (computed once),
    inner loop ``(A, c)_{j+1} = (A, c)_j − α ∇_{A,c} L_trn`` for ``j < N`` (α =
    ``inner_lr``, N = ``inner_steps``) from the meta-learned head; meta-loss
    ``mean_τ L_out`` of the adapted head on the features ``G = r_{L-1}(x_val)``.
    Meta-gradient exact (second order) by reverse mode through the head's steps: with
    the adjoint ``(V, v)`` of step j+1's head, ``z = F Aᵀ + c``, ``E = ∂ℓ/∂z / K``,
    ``u = F Vᵀ + v`` and ``R = ∂²ℓ/∂z² u / K`` (the head's Hessian-vector product is
    ``(Rᵀ F, Σ_k R_k)``), ``(V, v) ← (V, v) − α (Rᵀ F, Σ_k R_k)`` and the features'
    adjoint gains ``−α (E V + R A)``; the adjoints of ``F`` and ``G`` are then
    backpropagated into the hidden layers. ``first_order=True`` drops the terms through
    the inner loop (the head's gradient ``(V, v)_N``, the hidden layers' through ``G``
    only). One forward pass of the hidden layers per set, however many inner steps: a
    meta-step costs a fraction of MAML's on the same network. Fields and their checks
    are MAML's (``inner_lr``, ``inner_steps``, ``first_order``, ``loss``).
    """

    @property
    def name(self):
        return "anil_fo" if self.first_order else "anil"

    def _features(self, params, x):
        """Rates of every layer below the head, ``[x, r_1, ..., r_{L-1}]``."""
        acts = [x]
        for w, b in zip(params["w"][:-1], params["b"][:-1]):
            acts.append(np.tanh(acts[-1] @ _T(w) + b[..., None, :]))
        return acts

    def _loss_and_error(self, z, y):
        """Per-task loss and ``∂ℓ/∂z / K`` of logits ``z`` (tasks, K, C)."""
        K = z.shape[-2]
        if self.loss.name == "squared_error":
            res = self.loss.error(z, y)
            return 0.5 * (res * res).sum(axis=(-1, -2)) / K, res / K
        return self.loss.per_sample(z, y).sum(axis=-1) / K, self.loss.error(z, y) / K

    def _head_loop(self, params, F, y, steps, keep):
        """The head after ``steps`` steps on the features ``F`` (tasks, K, H), and, if
        ``keep``, ``(A_j, c_j, z_j, E_j)`` of every step."""
        T = F.shape[0]
        A = np.broadcast_to(params["w"][-1], (T,) + np.shape(params["w"][-1]))
        c = np.broadcast_to(params["b"][-1], (T,) + np.shape(params["b"][-1]))
        trace = []
        with np.errstate(over="ignore", invalid="ignore"):
            for j in range(steps):
                z = F @ _T(A) + c[:, None, :]
                loss, E = self._loss_and_error(z, y)
                _check_finite(loss, "ANIL", j, "try a smaller inner_lr")
                if keep:
                    trace.append((A, c, z, E))
                A = A - self.inner_lr * (_T(E) @ F)
                c = c - self.inner_lr * E.sum(axis=-2)
        if not (np.isfinite(A).all() and np.isfinite(c).all()):
            _check_finite(np.nan, "ANIL", steps, "try a smaller inner_lr")
        return A, c, trace

    def adapt(self, params, x, y, inner_steps=None):
        """Fast parameters after the inner loop on ``(x, y)``, with a task axis: the
        hidden layers as meta-learned (copied per task), the head adapted."""
        O = "ANIL.adapt"
        _check_params(params, "ANIL")
        x, y = batch_xy(x, y, O, params)
        self.loss.check_targets(y, O, "y")
        steps = self.inner_steps if inner_steps is None else P.integer(
            inner_steps, O, "inner_steps", low=0,
            high=MAX_INNER_STEPS)
        F = self._features(params, x)[-1]
        A, c, _ = self._head_loop(params, F, y, steps, keep=False)
        T = x.shape[0]
        return {"w": [np.repeat(np.asarray(w, dtype=float)[None], T, axis=0)
                      for w in params["w"][:-1]] + [np.array(A)],
                "b": [np.repeat(np.asarray(b, dtype=float)[None], T, axis=0)
                      for b in params["b"][:-1]] + [np.array(c)]}

    def evaluate(self, params, task, inner_steps=None):
        """Per-task validation score after the head's inner loop on the training shots
        (as :meth:`_Baseline.evaluate`; the hidden layers are run once per set)."""
        O = "ANIL"
        _check_params(params, O)
        xt, yt, xv, yv = task_data(task, params, O)
        self.loss.check_targets(yt, O, "task.y_train")
        steps = self.inner_steps if inner_steps is None else P.integer(
            inner_steps, "ANIL.evaluate", "inner_steps", low=0,
            high=MAX_INNER_STEPS)
        A, c, _ = self._head_loop(params, self._features(params, xt)[-1], yt, steps, False)
        with np.errstate(over="ignore", invalid="ignore"):
            z = self._features(params, xv)[-1] @ _T(A) + c[:, None, :]
            score = self.loss.score(z, yv)
        _check_finite(score, O, "(validation error after adaptation)",
                      "try a smaller inner_lr")
        return score

    def meta_gradient(self, params, task):
        """(meta-gradient in the structure of ``params``, mean validation loss L_out)."""
        O = "ANIL"
        _check_params(params, O)
        xt, yt, xv, yv = task_data(task, params, O)
        self.loss.check_targets(yt, O, "task.y_train")
        self.loss.check_targets(yv, O, "task.y_val")
        acts_t, acts_v = self._features(params, xt), self._features(params, xv)
        F, G = acts_t[-1], acts_v[-1]
        A, c, trace = self._head_loop(params, F, yt, self.inner_steps,
                                      keep=not self.first_order)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, Ev = self._loss_and_error(G @ _T(A) + c[:, None, :], yv)
        _check_finite(loss, O, "(validation loss after adaptation)", "try a smaller inner_lr")
        V, v = _T(Ev) @ G, Ev.sum(axis=-2)          # adjoint of the adapted head
        G_bar, F_bar = Ev @ A, None                 # adjoints of the features
        a = self.inner_lr
        for A_j, c_j, z_j, E_j in reversed(trace):
            u = F @ _T(V) + v[:, None, :]
            R = self.loss.curvature(z_j, yt, u) / F.shape[-2]
            fb = -a * (E_j @ V + R @ A_j)
            F_bar = fb if F_bar is None else F_bar + fb
            V, v = V - a * (_T(R) @ F), v - a * R.sum(axis=-2)
        T = xt.shape[0]
        n = len(params["w"])
        gw, gb = [None] * n, [None] * n
        gw[-1], gb[-1] = V.mean(axis=0), v.mean(axis=0)
        for l in range(n - 2, -1, -1):
            gw[l], gb[l] = 0.0, 0.0
        for acts, d in ((acts_t, F_bar), (acts_v, G_bar)):
            if d is None:
                continue
            for l in range(n - 2, -1, -1):
                dz = d * (1.0 - acts[l + 1] ** 2)
                gw[l] = gw[l] + (dz.reshape(-1, dz.shape[-1]).T
                                 @ acts[l].reshape(-1, acts[l].shape[-1])) / T
                gb[l] = gb[l] + dz.sum(axis=(0, 1)) / T
                if l:
                    d = dz @ params["w"][l]
        return {"w": gw, "b": gb}, float(loss.mean())


@dataclass(frozen=True)
class Reptile(_Baseline):
    """Reptile (Nichol, Achiam & Schulman 2018, "On first-order meta-learning algorithms").

    Inner loop: ``inner_steps`` SGD steps ``φ_{j+1} = φ_j − α ∇L_j(φ_j)`` from φ_0 = θ
    (α = ``inner_lr``, N = ``inner_steps``); meta-gradient direction
    ``mean_τ (θ − φ_N) / (α N)`` -- the usual Reptile step ``θ ← θ + ε mean_τ(φ_N − θ)``
    written as a gradient for any optimiser (with SGD of learning rate η,
    ``ε = η / (α N)``). What ``L_j`` sees during meta-training is set by ``inner_set``:

    * ``"shots"`` (default): the task's training shots, full batch, ``L_j = L_trn``. For
      N = 1 the direction is the gradient of the training loss at θ.
    * ``"all"``: as in Nichol et al.'s Omniglot/Mini-ImageNet runs (code
      openai/supervised-reptile, where meta-training tasks have more examples per class
      than the evaluation shots) -- Reptile has no train/validation split, so the inner
      loop learns *all* of the task's examples, the training shots together with the
      validation (query) points. ``inner_batch=None``: full batch on the joint set (for
      N = 1 the direction is the gradient of the joint loss at θ); an integer b:
      minibatches of b examples (at most the task's size), taken in order from a stream
      of per-task random permutations of the joint set (each example once per pass, like
      the reference's sampling without replacement). The permutations come from a
      generator seeded, per task, by ``seed`` and that task's data, so each task's
      direction is a deterministic function of (θ, task, seed), whatever other tasks
      share its meta-batch (or its chunk, :func:`chunked_meta_gradient`).

    Evaluation and adaptation (:meth:`adapt`, :meth:`evaluate`) always learn the
    training shots only, full batch: ``eval_steps`` steps (default ``inner_steps``) of
    SGD at ``eval_lr`` (default ``inner_lr``) -- Nichol et al.'s separate "eval-iters".
    (An explicit ``inner_steps`` argument to them overrides ``eval_steps``.) The loss
    returned with the direction is ``mean_τ L_out`` at the φ_N of meta-training; with
    ``inner_set="all"`` those points were learned, so it is not a held-out loss.
    """

    inner_lr: float = 0.01
    inner_steps: int = 10
    loss: object = "squared_error"
    inner_set: str = "shots"
    inner_batch: object = None
    eval_steps: object = None
    eval_lr: object = None
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        P.choice(self.inner_set, "Reptile", "inner_set", ("shots", "all"))
        P.integer(self.inner_batch, "Reptile", "inner_batch", low=1, allow_none=True)
        if self.inner_batch is not None and self.inner_set != "all":
            P.fail("Reptile", "inner_batch", 'must be None unless inner_set is "all" (the '
                   "shots are learned full batch)", repr(self.inner_batch))
        P.integer(self.eval_steps, "Reptile", "eval_steps", low=0, high=MAX_INNER_STEPS,
                  allow_none=True)
        P.real(self.eval_lr, "Reptile", "eval_lr", low=0.0, low_open=True, allow_none=True)
        P.integer(self.seed, "Reptile", "seed", low=0)

    def _sgd(self, params, x, y, steps, lr, batches=None):
        """``steps`` SGD steps from θ (task axis added); step j on the examples
        ``batches[:, j]`` (per-task indices) or, if None, on all of ``(x, y)``."""
        phi = _broadcast(params, x.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            for j in range(steps):
                if batches is None:
                    xj, yj = x, y
                else:
                    idx = batches[:, j, :, None]
                    xj = np.take_along_axis(x, idx, axis=1)
                    yj = np.take_along_axis(y, idx, axis=1)
                loss, g, _ = _backprop(phi, xj, yj, self.loss)
                _check_finite(loss, "Reptile", j, "try a smaller inner_lr")
                phi = _axpy(-lr, g, phi)
        if not _all_finite(phi):
            _check_finite(np.nan, "Reptile", steps, "try a smaller inner_lr")
        return phi

    def _batches(self, x, y):
        """Per-task minibatch indices, shape (tasks, inner_steps, b), or None (full batch)."""
        T, M = x.shape[0], x.shape[1]
        if self.inner_batch is None or self.inner_batch >= M:
            return None
        b, N = self.inner_batch, self.inner_steps
        passes = -(-(N * b) // M)
        out = np.empty((T, N, b), dtype=np.intp)
        for t in range(T):          # per task: the same batches in any meta-batch or chunk
            rng = np.random.default_rng([
                self.seed, zlib.crc32(np.ascontiguousarray(x[t]).tobytes()),
                zlib.crc32(np.ascontiguousarray(y[t]).tobytes())])
            stream = np.concatenate([rng.permutation(M) for _ in range(passes)])
            out[t] = stream[:N * b].reshape(N, b)
        return out

    def adapt(self, params, x, y, inner_steps=None):
        """Fast parameters after ``eval_steps`` (or ``inner_steps`` if given) SGD steps at
        ``eval_lr`` on ``(x, y)`` (the training shots), with a task axis."""
        if inner_steps is None and self.eval_steps is None and self.eval_lr is None:
            return super().adapt(params, x, y)
        _check_params(params, "Reptile")
        x, y = batch_xy(x, y, "Reptile.adapt", params)
        self.loss.check_targets(y, "Reptile.adapt", "y")
        if inner_steps is not None:
            steps = P.integer(inner_steps, "Reptile.adapt", "inner_steps", low=0,
                              high=MAX_INNER_STEPS)
        else:
            steps = self.inner_steps if self.eval_steps is None else self.eval_steps
        lr = self.inner_lr if self.eval_lr is None else self.eval_lr
        phi = self._sgd(params, x, y, steps, lr)
        return optim.tree_map(lambda a: a if a.flags.writeable else a.copy(), phi)

    def meta_gradient(self, params, task):
        """(Reptile direction in the structure of ``params``, mean L_out after adaptation)."""
        if self.inner_set == "shots":
            phi, _, loss, _, _ = self._adapt_and_validate(params, task)
        else:
            _check_params(params, "Reptile")
            xt, yt, xv, yv = task_data(task, params, "Reptile")
            self.loss.check_targets(yt, "Reptile", "task.y_train")
            self.loss.check_targets(yv, "Reptile", "task.y_val")
            x = np.concatenate([xt, xv], axis=1)
            y = np.concatenate([yt, yv], axis=1)
            phi = self._sgd(params, x, y, self.inner_steps, self.inner_lr, self._batches(x, y))
            loss, _ = self._val_grad(phi, xv, yv)
        scale = 1.0 / (self.inner_lr * self.inner_steps)
        d = optim.tree_map(lambda t, f: scale * (t - f.mean(axis=0)), params, phi)
        return d, float(loss.mean())


@dataclass(frozen=True)
class Untrained(_Baseline):
    """No meta-learning: the SGD inner loop from the initial parameters (reference).

    :meth:`meta_gradient` returns zeros, so meta-training leaves θ unchanged.
    """

    inner_lr: float = 0.01
    inner_steps: int = 1
    loss: object = "squared_error"

    def meta_gradient(self, params, task):
        """(zeros in the structure of ``params``, mean L_out after adaptation)."""
        _, _, loss, _, _ = self._adapt_and_validate(params, task)
        return optim.tree_map(np.zeros_like, params), float(loss.mean())


@dataclass(frozen=True)
class IMAML(_Baseline):
    """Implicit MAML (Rajeswaran et al. 2019).

    Inner problem: ``φ* = argmin_φ F(φ) = L_trn(φ) + λ/2 ‖φ − θ‖²``, solved by
    ``inner_steps`` gradient-descent steps ``φ ← φ − α_τ (∇L_trn(φ) + λ (φ − θ))`` from
    φ = θ, with per-task backtracking: a step that would increase F is rejected and that
    task's step size α_τ (initially ``inner_lr``) halved. (Meta-learning drives the
    curvature of L_trn up; without the safeguard, plain gradient descent with a fixed
    step starts to oscillate once the curvature exceeds 2/α − λ, and the implicit
    meta-gradient, which assumes a converged inner problem, becomes useless.)
    Meta-gradient: ``mean_τ u`` with ``(I + H_trn(φ*)/λ) u = ∇L_out(φ*)``, solved by at
    most ``cg_steps`` conjugate-gradient iterations (stopping per task once the residual
    is below ``cg_tol`` times ‖∇L_out‖; exact Hessian-vector products). The system is
    positive definite when λ exceeds minus the smallest Hessian eigenvalue; CG stops for
    a task where it meets non-positive curvature.
    """

    lam: float = 2.0
    inner_lr: float = 0.01
    inner_steps: int = 50
    cg_steps: int = 5
    cg_tol: float = 1e-10
    loss: object = "squared_error"

    def __post_init__(self):
        super().__post_init__()
        P.real(self.lam, "IMAML", "lam", low=0.0, low_open=True)
        P.integer(self.cg_steps, "IMAML", "cg_steps", low=1, high=MAX_INNER_STEPS)
        P.real(self.cg_tol, "IMAML", "cg_tol", low=0.0)

    def _inner(self, params, x, y, steps, keep):
        """Gradient descent on the proximal objective with per-task backtracking."""
        T = x.shape[0]
        phi = _broadcast(params, T)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grad, _ = _backprop(phi, x, y, self.loss)
            _check_finite(loss, "IMAML", 0, "check that θ is finite")
            obj = loss
            lr = np.full(T, self.inner_lr)
            for _ in range(steps):
                cand = _axpy(-lr, grad, phi)
                loss_c, g_c, _ = _backprop(cand, x, y, self.loss)
                diff = optim.tree_map(np.subtract, cand, params)
                obj_c = loss_c + 0.5 * self.lam * _tdot(diff, diff)
                g_c = _axpy(self.lam, diff, g_c)
                # (an increase within rounding is accepted; False for NaN/inf candidates)
                ok = obj_c <= obj + 1e-12 * np.abs(obj)
                if ok.all():
                    phi, grad, obj = cand, g_c, obj_c
                else:
                    phi, grad = _where(ok, cand, phi), _where(ok, g_c, grad)
                    obj, lr = np.where(ok, obj_c, obj), np.where(ok, lr, 0.5 * lr)
        return phi, None

    def meta_gradient(self, params, task):
        """(implicit meta-gradient in the structure of ``params``, mean L_out at φ*)."""
        phi, _, loss, gv, (xt, yt, xv, yv) = self._adapt_and_validate(params, task)
        _, _, cache = _backprop(phi, xt, yt, self.loss)

        def A(v):                       # (I + H/λ) v, per task
            return _axpy(1.0 / self.lam, _rop(phi, cache, v), v)

        u = optim.tree_map(np.zeros_like, gv)
        r, p = gv, gv
        rr = _tdot(r, r)
        stop = self.cg_tol ** 2 * rr
        active = rr > stop
        for _ in range(self.cg_steps):
            if not active.any():
                break
            Ap = A(p)
            pAp = _tdot(p, Ap)
            active &= pAp > 0
            alpha = np.where(active, rr / np.where(active, pAp, 1.0), 0.0)
            u = _axpy(alpha, p, u)
            r = _axpy(-alpha, Ap, r)
            rr_new = _tdot(r, r)
            beta = np.where(active, rr_new / np.where(active, rr, 1.0), 0.0)
            p = _axpy(beta, p, r)
            rr = np.where(active, rr_new, rr)
            active &= rr > stop
        return _task_mean(u), float(loss.mean())


# ------------------------------------------------------------------ meta-training
def _chunk_meta_gradient(method, params, task):
    """(mean meta-gradient, mean validation loss, tasks) of one piece of a meta-batch
    (module level: runs on executor workers)."""
    grad, loss = method.meta_gradient(params, task)
    return grad, loss, task.n_tasks


def chunked_meta_gradient(method, params, task, chunks=1, executor=None):
    """``method.meta_gradient(params, task)`` with the meta-batch split into ``chunks``
    contiguous pieces (at most one per task), computed in-process (``executor=None``) or
    submitted to ``executor`` (a ``concurrent.futures`` executor or a Dask client), and
    recombined as the task-weighted mean of the pieces' means. The pieces and the order
    of the sum are fixed by ``chunks`` alone, so the result is the same on any executor."""
    O = "chunked_meta_gradient"
    if not callable(getattr(method, "meta_gradient", None)):
        P.fail(O, "method", "must have a meta_gradient(params, task) method (MAML, "
               "Reptile, ...)", type(method).__name__)
    n = _task(task, O).n_tasks
    chunks = min(P.integer(chunks, O, "chunks", low=1), n)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        P.fail(O, "executor", "must be None or have a submit(fn, *args) method (a "
               "concurrent.futures executor or a Dask client)", type(executor).__name__)
    if chunks <= 1 and executor is None:
        return method.meta_gradient(params, task)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    arrays = task.as_batch()
    parts = [Task(*(a[lo:hi] for a in arrays)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    results = map_pieces(_chunk_meta_gradient, [(method, params, t) for t in parts], executor)
    weights = [r[2] / n for r in results]
    grad = optim.tree_map(lambda *g: sum(w * gi for w, gi in zip(weights, g)),
                          *[r[0] for r in results])
    return grad, float(sum(w * r[1] for w, r in zip(weights, results)))


def train_baseline(method, params, family, steps, meta_batch=25, optimizer=None, seed=0,
                   eval_every=100, test_task=None, progress=True, eval_inner_steps=None,
                   eval_tasks=64, budget_s=None, eval_every_s=None, val_task=None,
                   val_tasks=None, select=True, executor=None, chunks=None,
                   checkpoint=None, resume=False, checkpoint_every=None, average=None,
                   weight_decay=0.0, checkpoint_every_s="default"):
    """Meta-train the initial parameters θ of ``params`` with a baseline ``method``.

    Meta-step ``s`` (1, 2, …) draws ``meta_batch`` tasks from
    ``family.sample(task_rng(seed, TRAIN, s), meta_batch)`` -- the same tasks the CML
    :class:`~neuro_meta.metatrain.MetaTrainer` sees for the same seed and meta-batch -- and
    applies ``optimizer`` (default Adam, learning rate 1e-3) to the method's meta-gradient.
    Training stops after ``steps`` meta-steps or when the meta-training wall time
    (evaluations excluded) reaches ``budget_s`` seconds, whichever comes first
    (``budget_s=None``: the steps only). Evaluations at step 0, every ``eval_every`` steps
    -- or, if ``eval_every_s`` is given, each time the training clock has advanced
    ``eval_every_s`` seconds -- and at the end, under the same rules as CML's
    (:class:`~neuro_meta.metatrain.TrainingBudget`). Each records the MSE after the
    method's own inner loop (``eval_inner_steps`` overrides its number of steps) on the
    meta-validation tasks ``val_task`` (default: ``val_tasks`` tasks, default
    ``eval_tasks``, from the VALIDATION stream of ``seed``) and on the meta-test tasks
    ``test_task`` (default: ``eval_tasks`` tasks from the TEST stream of ``seed``).

    With ``select=True`` (default) the returned parameters are those of the evaluation
    with the lowest meta-validation MSE (the meta-test MSE is never used to choose);
    ``select=False`` returns the last ones.

    Returns ``(params, history)`` with history keys ``step``, ``time_s`` (meta-training
    wall time at the evaluation, evaluations excluded), ``meta_val_mse``,
    ``meta_val_sem``, ``meta_test_mse``, ``meta_test_sem`` (lists, one entry per
    evaluation), ``train_val_loss`` (one per meta-step), ``selected`` (the evaluation
    whose parameters are returned: ``{"index", "step", "time_s", "meta_val_mse",
    "meta_test_mse", "meta_test_sem"}``), ``meta_steps`` (meta-steps done),
    ``stop_reason`` (``"steps"`` or ``"budget"``), ``budget_s`` and ``wall_time_s`` (of
    the whole run, evaluations included; a resumed run adds the wall time of the work
    its checkpoint kept). An :class:`Untrained` method takes no meta-steps.

    ``chunks`` (default: 1, or the executor's workers) splits each meta-batch into that
    many pieces whose meta-gradients are computed in-process (``executor=None``) or on
    ``executor``'s workers and averaged (:func:`chunked_meta_gradient`): the numbers
    depend on ``chunks``, never on the executor. Evaluations run in this process.

    ``checkpoint``: path of a checkpoint file (:mod:`neuro_meta.checkpoint`, written
    atomically, the clock paused) holding the parameters, the optimiser state, the
    history, the training clock and the best evaluation so far; written at every
    evaluation, at the end, every ``checkpoint_every`` meta-steps if given, and after the
    first meta-step that ends ``checkpoint_every_s`` seconds of wall time after the
    previous write (default: :data:`neuro_meta.checkpoint.CHECKPOINT_EVERY_S`, 30 s;
    ``None``: not by time; ``0``: after every meta-step;
    :class:`~neuro_meta.metatrain.CheckpointCadence`). With
    ``resume=True`` an existing checkpoint is loaded and training continues from its
    meta-step -- without a budget, the returned parameters and history (``time_s``
    aside) equal those of an uninterrupted run. A checkpoint holds a fingerprint of
    what decides the run (method, initial parameters, family, optimiser, meta-batch,
    seed, chunks, evaluation tasks, ``eval_inner_steps``, average, evaluation cadence);
    resuming under another one is refused
    (:class:`~neuro_meta.checkpoint.CheckpointError` naming what differs).

    ``average``: decay of an exponential moving average of the parameters
    (:class:`~neuro_meta.metatrain.ParameterAverage`): if given, evaluations, selection
    and the returned parameters use the average, while meta-training follows the raw
    parameters (default None: no averaging).

    ``weight_decay``: strength ``c`` of an L2 penalty ``(c/2) Σ θ²`` on the MLP's
    initial weights and biases (``params["w"]``, ``params["b"]``; not WarpGrad's warp
    layers) added to the meta-objective: every meta-step adds ``c θ`` to their
    meta-gradient, before the optimiser (default 0: none) -- the counterpart of
    :class:`~neuro_meta.metatrain.MetaTrainer`'s ``omega_decay``.
    """
    from ._progress import bar as tqdm

    # (lazy: metatrain may import us)
    from . import checkpoint as ckpt
    from .metatrain import (EVALUATION_FIELDS, TEST, TRAIN, VALIDATION, CheckpointCadence,
                            ParameterAverage, TrainingBudget, check_fingerprint,
                            eval_piece_tasks, mean_sem,
                            optimizer_fingerprint, optimizer_probe, schedule_steps,
                            task_rng)

    O = "train_baseline"
    if not isinstance(method, _Baseline) and not (
            callable(getattr(method, "meta_gradient", None))
            and callable(getattr(method, "evaluate", None))
            and callable(getattr(method, "check_params", None))):
        P.fail(O, "method", "must be MAML, ANIL, Reptile, IMAML, Untrained, WarpGrad or an object "
               "with meta_gradient, evaluate and check_params", type(method).__name__)
    getattr(method, "check_params", _check_params)(params, O)
    if not hasattr(family, "sample"):
        P.fail(O, "family", "must have a sample(rng, n_tasks) method", type(family).__name__)
    meta_batch = P.integer(meta_batch, O, "meta_batch", low=1)
    seed = P.integer(seed, O, "seed", low=0)
    weight_decay = P.real(weight_decay, O, "weight_decay", low=0.0)
    if not isinstance(select, bool):
        P.fail(O, "select", "must be True or False", repr(select))
    steps = P.integer(steps, O, "steps", low=0)
    if chunks is None:
        chunks = n_workers(executor)
    chunks = P.integer(chunks, O, "chunks", low=1)
    budget = TrainingBudget(O, 0 if isinstance(method, Untrained) else steps, eval_every,
                            budget_s, eval_every_s)
    eval_tasks = P.integer(eval_tasks, O, "eval_tasks", low=1)
    if test_task is None:
        test_task = family.sample(task_rng(seed, TEST), eval_tasks)
    if val_task is None:
        n_val = P.integer(val_tasks, O, "val_tasks", low=1, allow_none=True) or eval_tasks
        val_task = family.sample(task_rng(seed, VALIDATION), n_val)
    tasks = {"test": _task(test_task, O, "test_task"),
             "validation": _task(val_task, O, "val_task")}
    optimizer = optimizer if optimizer is not None else optim.adam(1e-3)
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        P.fail(O, "optimizer", "must be a gradient transformation with init and update "
               "(e.g. neuro_meta.optim.adam(1e-3))", type(optimizer).__name__)
    avg = ParameterAverage(average, O)
    for name, flag in (("resume", resume), ("progress", progress)):
        if not isinstance(flag, (bool, np.bool_)):
            P.fail(O, name, "must be True or False", repr(flag))
    cadence = CheckpointCadence(O, checkpoint_every, checkpoint_every_s)
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            P.fail(O, "checkpoint", "must be a path (str or os.PathLike) or None",
                   type(checkpoint).__name__)
        checkpoint = Path(checkpoint)
    t0 = time.perf_counter()
    wall_before = 0.0           # wall time of the work a resumed checkpoint kept
    hist = {k: [] for k in EVALUATION_FIELDS + ("train_val_loss",)}
    fingerprint = None if checkpoint is None else {
        "method": repr(method), "params0": ckpt.checksum(params)[:16],
        "family": repr(family), "optimizer": optimizer_fingerprint(optimizer, params),
        "meta_batch": meta_batch, "seed": seed, "chunks": chunks,
        "eval_inner_steps": eval_inner_steps, "average": avg.decay, **budget.cadence(),
        **{f"{k}_task": ckpt.checksum(list(t.as_batch()))[:16] for k, t in tasks.items()}}
    if fingerprint is not None and weight_decay:    # (absent when 0: older checkpoints
        fingerprint["weight_decay"] = weight_decay  # stay resumable)

    def record(step):
        shown = avg.value(params)
        point = budget.evaluation(step, len(hist["step"]), lambda which: mean_sem(
            np.concatenate([method.evaluate(shown, t, eval_inner_steps) for t in
                            tasks[which].pieces(eval_piece_tasks(shown))])), shown)
        for k in EVALUATION_FIELDS:
            hist[k].append(point[k])
        return point["meta_test_mse"]

    def save(step):
        b = budget.best
        clock_s = budget.pause()
        ckpt.save(checkpoint, {
            "run": "train_baseline", "step": step, "params": params, "opt_state": state,
            "clock_s": clock_s, "fingerprint": fingerprint, "history": hist,
            "wall_s": wall_before + time.perf_counter() - t0,
            "average": avg.state(),
            "best": None if b is None else {"meta_val_mse": b[0], "index": b[1],
                                            "params": b[2]}})
        budget.resume()

    state = optimizer.init(params)
    budget.check_schedule(state, O)
    step = 0
    if resume and checkpoint is not None and checkpoint.exists():
        saved = ckpt.load(checkpoint)
        if not isinstance(saved, dict) or saved.get("run") != "train_baseline" or not all(
                k in saved for k in ("step", "params", "opt_state", "clock_s", "history",
                                     "best", "average")):
            raise ckpt.CheckpointError(f"{checkpoint}: not a train_baseline checkpoint "
                                       "(missing run, step, params, opt_state, clock_s, "
                                       "history, best or average)")
        check_fingerprint(checkpoint, fingerprint, saved.get("fingerprint"),
                          lambda: optimizer_probe(optimizer, params))
        step, params, state = saved["step"], saved["params"], saved["opt_state"]
        if step > budget.steps:
            P.fail(O, "steps", f"must be at least the meta-step of the checkpoint "
                   f"{checkpoint} ({step}) to resume it (a run with fewer steps is "
                   "another run: restart without resume)", repr(budget.steps))
        hist = saved["history"]
        budget.elapsed = saved["clock_s"]
        wall_before = float(saved.get("wall_s", 0.0))
        b = saved["best"]
        budget.best = None if b is None else (b["meta_val_mse"], b["index"], b["params"])
        if avg.decay is not None:
            avg.load(saved["average"])
        logger.info("%s: resumed from %s at meta-step %d", method.name, checkpoint, step)
    budget.resume()
    if not hist["step"]:
        record(0)
        if checkpoint is not None:
            save(0)
    cadence.start()
    bar = tqdm(desc=method.name, disable=not progress, initial=step,
               total=budget.steps if budget.budget_s is None else None)
    stop = budget.stop_reason(step)
    while stop is None:
        step += 1
        task = family.sample(task_rng(seed, TRAIN, step), meta_batch)
        grad, val_loss = chunked_meta_gradient(method, params, task, chunks, executor)
        if weight_decay:
            grad = dict(grad)
            for k in ("w", "b"):
                grad[k] = [g + weight_decay * w for g, w in zip(grad[k], params[k])]
        hist["train_val_loss"].append(val_loss)
        updates, state = optimizer.update(grad, state)
        params = optim.apply_updates(params, updates)
        avg.update(params)
        bar.update(1)
        stop = budget.stop_reason(step)
        state = budget.horizon(state, step)[0]
        evaluated = stop or budget.eval_due(step, hist["time_s"][-1])
        if evaluated:
            bar.set_postfix(meta_test_mse=f"{record(step):.4g}")
        if checkpoint is not None and cadence.due(step, evaluated):
            save(step)
            cadence.written()
    bar.close()
    if hist["step"][-1] != step:        # resumed at a step without an evaluation
        record(step)
        if checkpoint is not None:
            save(step)
    hist["selected"] = budget.selected(hist, select)
    hist["meta_steps"] = step
    hist["stop_reason"] = stop
    hist["budget_s"] = budget.budget_s
    hist["schedule_steps"] = schedule_steps(state)
    hist["wall_time_s"] = wall_before + time.perf_counter() - t0
    return budget.selected_params(avg.value(params), select), hist
