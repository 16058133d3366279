"""``neuro-meta run omniglot``: N-way K-shot classification of real handwritten
characters (Omniglot, shipped with the package), CML against the MAML family.

CML meta-trains ω and λ of a complex-synapse rate network (784 → hidden → hidden → N,
tanh, linear logits) whose learning process descends the soft-max cross-entropy of the
K shots of a task; MAML, first-order MAML, Reptile and iMAML meta-train the initial
weights of the same-size MLP with inner SGD on the same cross-entropy. All of them see
the same tasks:

* meta-training tasks from the **train** alphabets (``task_rng(seed, TRAIN, step)``);
* model selection on tasks from the **validation** alphabet (``task_rng(seed,
  VALIDATION)``) -- never on test tasks;
* learning curves on tasks from the **test** alphabets (``task_rng(seed, TEST)``) and the
  reported numbers on ``final.test_tasks`` other test tasks (``task_rng(seed, TEST, 1)``)
  at the selected meta-parameters: N-way K-shot accuracy with a 95 % confidence interval
  (Student's t: 1.964 s.e.m. over 600 tasks), the same models on N-way
  ``final.other_shots``-shot tasks, and the error on the 20 official 20-way one-shot
  runs of Lake et al. (2015) (evaluation
  alphabets no background file contains; a meta-learned N-way output layer is widened to
  20 ways by giving every class the mean of its rows: tasks permute classes, so a
  meta-learned head has no class of its own).

Non-meta references on the same tasks: ``untrained`` (inner SGD from the MLP's initial
weights), ``cml_untrained`` (the complex-synapse network's learning process from its
initial ω, λ) and ``pixel_nn`` (nearest neighbour on pixels, Euclidean).

Compute-fair: every trained method gets the same wall-time budget of meta-training
(``compare.budget_s``, evaluations excluded) and keeps the meta-parameters of its
evaluation with the best meta-validation accuracy (:mod:`neuro_meta.experiments.sinusoid`
explains the rules; they are the same). Every method also gets the same processes: each
meta-batch is split into ``compare.workers`` pieces computed at once, one in this process
and the others on worker processes (one BLAS thread each,
:class:`~neuro_meta.workers.PieceExecutor`), the CML trainers' and the baselines' alike; the numbers depend on ``compare.workers``, not on the executor.

``results.json``: ``{"methods": {name: {"accuracy", "ci95", "accuracy_per_task",
"other_shots_accuracy", "other_shots_ci95", "official_error", "official_ci95",
"meta_val_accuracy", "selected_step", "selected_time_s", "meta_steps", "stop_reason",
"budget_s", "wall_time_s", "time_to_target", "schedule_steps"} (+ "phases_not_settled"
for CML methods)},
"gaps": {cml: {baseline | "best" | "best_validation": {"mean", "ci95", "n_tasks"} (+
"baseline" for the last two)}} (CML minus the MAML family, paired over the test tasks:
:func:`task_gaps`), "config": {...}, "history": {name: {"step", "time_s",
"meta_val_accuracy", "meta_test_accuracy"}}}``.

Across seeds (``neuro-meta run omniglot --seeds 3``): the seeds run one after the other,
each as above, and :func:`aggregate_seeds` reports the mean ± 95 % CI over seeds of every
number and CML's 1-shot accuracy minus the MAML family's, paired by seed.

Where the methods win and lose (``neuro-meta alphabets RUN_DIR``): :func:`per_alphabet`
scores a finished run's selected meta-parameters (:func:`selected_models`, read back from
its checkpoints) on tasks of one alphabet at a time, every method on the same tasks.
"""
import dataclasses
import os
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .. import _params as P
from .. import baselines as bl
from .. import optim
from .. import warpgrad as wg
from ..cml import CML
from ..datasets import omniglot_runs
from ..dual import DualSystem
from ..errors import ValidationError, user_stacklevel
from ..families import FewShotClassification
from ..initializers import Glorot
from ..io import budget_notes, reads_results, save_figure, write_json, write_results
from ..learning import Learner, NotSettledWarning
from ..metatrain import (TEST, VALIDATION, MetaTrainer, eval_piece_tasks, mean_sem,
                         task_rng)
from ..metatrain import evaluate as evaluate_after_learning
from ..models import check_run_args, checked, configure, load_model, merge, section
from ..network import RateNetwork
from ..synapses import ComplexSynapse
from ..tasks import Task
from ..warp import WarpNetwork
from ..workers import PieceExecutor, blas_threads, check_workers, map_pieces, n_workers
from .sinusoid import (budget_setting, build_baseline, check_checkpoints,
                       config_fingerprint, learning_rate, load_partial, restore_trained,
                       time_to_target)

#: The default methods.
METHODS = ("cml", "maml", "fomaml", "reptile", "imaml", "untrained")
#: Every method ``--methods`` accepts: ``anil`` (MAML with a head-only inner loop,
#: :class:`~neuro_meta.baselines.ANIL`, the like-for-like comparator of CML's rigid hidden
#: layers) and ``anil_fo`` (its first-order variant), the WarpGrad family (a warped MLP,
#: :mod:`neuro_meta.warpgrad`) and ``cml_warp`` (CML on the complex-synapse network with a
#: warp layer after each hidden layer, :class:`~neuro_meta.warp.WarpNetwork`) are opt-in.
ALL_METHODS = METHODS + ("anil", "anil_fo", "warpgrad", "warpgrad_fo", "warpgrad_nowarp",
                         "cml_warp", "cml_dual")
#: The methods meta-trained by CML, and the network each one trains (``cml_dual``: the
#: dual system of the ``dual`` section, :class:`~neuro_meta.dual.DualSystem`).
CML_METHODS = {"cml": "complex", "cml_warp": "warp", "cml_dual": "dual"}
#: The CML models of :func:`build_net` / :func:`build_cml`.
MODELS = ("complex", "warp", "dual")
WARPGRAD = ("warpgrad", "warpgrad_fo", "warpgrad_nowarp")
SECTIONS = ("family", "network", "dual", "learner", "cml", "meta", "baselines", "compare",
            "final", "quick", "methods")


# ---------------------------------------------------------------------- configuration
def _cfg(cfg=None, quick=False, seed=None, overrides=(), ways=None, shots=None):
    """The effective configuration: the file (default: the shipped ``omniglot.yaml``),
    ``quick``'s overrides, ``--ways``/``--shots``, the ``--set`` overrides, the seed."""
    extra = []
    if ways is not None:
        extra.append(f"family.ways={P.integer(ways, 'run omniglot', 'ways', low=2)}")
    if shots is not None:
        extra.append(f"family.shots={P.integer(shots, 'run omniglot', 'shots', low=1)}")
    return configure(load_model("omniglot") if cfg is None else cfg, SECTIONS, quick,
                     extra + list(overrides), seed)


#: The effective configuration (public name, e.g. for ``neuro-meta describe``).
effective_config = _cfg


def compare_cfg(cfg):
    """The ``compare`` section, checked: ``budget_s``, ``eval_every_s`` (s, or None),
    ``targets`` (meta-test accuracies in (0, 1] of the time-to-target table),
    ``val_tasks`` (number of meta-validation tasks), ``workers`` and ``average`` (decay
    in [0, 1) of the moving average of every method's meta-parameters that is
    evaluated and kept, or None)."""
    where = cfg.get("_file", "<config>")
    c = section(cfg, "compare", required=("budget_s", "eval_every_s", "targets", "val_tasks"),
                optional=("workers", "average"))
    out = {k: checked(where, f"compare.{k}", P.real, c[k], "compare", k, low=0.0,
                      low_open=True, allow_none=True) for k in ("budget_s", "eval_every_s")}
    if not isinstance(c["targets"], list):
        raise ValidationError(f"{where}: compare.targets: must be a list of meta-test "
                              f"accuracies in (0, 1] (got {c['targets']!r})")
    out["targets"] = [checked(where, "compare.targets", P.real, t, "compare", f"targets[{i}]",
                              low=0.0, low_open=True, high=1.0)
                      for i, t in enumerate(c["targets"])]
    out["val_tasks"] = checked(where, "compare.val_tasks", P.integer, c["val_tasks"],
                               "compare", "val_tasks", low=1)
    out["workers"] = checked(where, "compare.workers", P.integer, c.get("workers", 1),
                             "compare", "workers", low=1)
    out["average"] = checked(where, "compare.average", P.real, c.get("average"), "compare",
                             "average", low=0.0, high=1.0, high_open=True, allow_none=True)
    return out


def final_cfg(cfg):
    """The ``final`` section: ``test_tasks`` (tasks of the reported accuracy),
    ``other_shots`` (shots of the second table column, or None) and ``official_runs``
    (whether to score the 20 official 20-way one-shot runs)."""
    where = cfg.get("_file", "<config>")
    f = section(cfg, "final", required=("test_tasks", "other_shots", "official_runs"))
    out = {"test_tasks": checked(where, "final.test_tasks", P.integer, f["test_tasks"],
                                 "final", "test_tasks", low=2),
           "other_shots": checked(where, "final.other_shots", P.integer, f["other_shots"],
                                  "final", "other_shots", low=1, allow_none=True)}
    if not isinstance(f["official_runs"], bool):
        raise ValidationError(f"{where}: final.official_runs: must be true or false "
                              f"(got {f['official_runs']!r})")
    out["official_runs"] = f["official_runs"]
    return out


def families(cfg, shots=None):
    """``{"train", "validation", "test"}`` -> :class:`FewShotClassification` on the
    Omniglot split of that name (``shots`` overrides the file's)."""
    where = cfg.get("_file", "<config>")
    f = section(cfg, "family", required=("ways", "shots", "queries", "rotations"))
    kw = dict(f, shots=f["shots"] if shots is None else shots)
    return {split: checked(where, "family", FewShotClassification.omniglot, split=split, **kw)
            for split in ("train", "validation", "test")}


def build_net(cfg, seed, ways=None, warp=False, model="complex"):
    """The complex-synapse rate network of the ``network`` section (``ways`` outputs;
    ``warp=True`` or ``model="warp"``: with a warp layer after each hidden layer, for
    ``cml_warp``; ``model="dual"``: the dual system of the ``dual`` section, same sizes,
    for ``cml_dual``)."""
    where = cfg.get("_file", "<config>")
    P.choice(model, "omniglot.build_net", "model", MODELS)
    warp = warp or model == "warp"
    if model == "dual":
        return build_dual(cfg, seed, ways)
    n = section(cfg, "network", required=("hidden", "activation", "tau_synapse", "lam_init"),
                optional=("lam_bias_init",))
    ways = cfg["family"]["ways"] if ways is None else ways
    hidden = n["hidden"]
    if not isinstance(hidden, list):
        raise ValidationError(f"{where}: network.hidden: must be a list of hidden-layer sizes "
                              f"(got {hidden!r})")
    n_conn = len(hidden) + 1
    lam = _per_connection(where, "lam_init", n["lam_init"], n_conn)
    lam_b = _per_connection(where, "lam_bias_init", n.get("lam_bias_init"), n_conn)

    def label(key, i):
        return f"network.{key}" + (f"[{i}]" if isinstance(n.get(key), list) else "")

    syn = [checked(where, label("lam_init", i) + ("" if b is None else
                                                  "/" + label("lam_bias_init", i)),
                   ComplexSynapse, omega=Glorot(), lam=v, lam_bias=b)
           for i, (v, b) in enumerate(zip(lam, lam_b))]
    acts = [n["activation"]] * len(hidden) + ["linear"]
    if warp:
        return checked(where, "network", WarpNetwork, [784] + hidden + [ways],
                       activation=acts, synapse=syn, bias=True, tau_synapse=n["tau_synapse"],
                       seed=seed, loss="cross_entropy")
    return checked(where, "network", RateNetwork, [784] + hidden + [ways], activation=acts,
                   synapse=syn, tau_neuron=0.0, tau_synapse=n["tau_synapse"], seed=seed,
                   loss="cross_entropy")


def _per_connection(where, key, value, n_conn):
    """``network.<key>``: one value for every connection or a list of one per connection
    (``null``: the synapse's default), as a list of ``n_conn`` values."""
    if isinstance(value, list):
        if len(value) != n_conn:
            raise ValidationError(f"{where}: network.{key}: needs one value per connection "
                                  f"({n_conn}) or one for all (got {value!r})")
        return list(value)
    return [value] * n_conn


def build_dual(cfg, seed, ways=None):
    """The dual system (:class:`~neuro_meta.dual.DualSystem`) of the ``dual`` section:
    slow weights of the ``network`` section's sizes, per task fast gains, biases and
    read-out pulled to their meta-learned initial values with strength ``lam``."""
    where = cfg.get("_file", "<config>")
    d = section(cfg, "dual", required=("fast", "lam", "tau_fast"),
                optional=("meta_batch", "learning_rate"))
    return checked(where, "dual", DualSystem, mlp_sizes(cfg, ways),
                   activation=cfg["network"]["activation"], fast=d["fast"], lam=d["lam"],
                   tau_fast=d["tau_fast"], seed=seed, loss="cross_entropy")


def mlp_sizes(cfg, ways=None):
    """Layer sizes of the baselines' MLP for the configuration ``cfg``: 784 inputs, the
    hidden layers of ``network.hidden``, ``ways`` outputs (default ``family.ways``)."""
    O = "omniglot.mlp_sizes"
    _mapping(cfg, O, "cfg", "a configuration")
    hidden = _mapping(cfg.get("network"), O, "cfg.network", "the network's settings").get(
        "hidden")
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple)):
        P.fail(O, "cfg.network.hidden", "must be a list of layer sizes", P.shown(hidden))
    sizes = [P.integer(h, O, f"cfg.network.hidden[{i}]", low=1) for i, h in enumerate(hidden)]
    if ways is None:
        ways = _mapping(cfg.get("family"), O, "cfg.family", "the tasks' settings").get("ways")
        return [784] + sizes + [P.integer(ways, O, "cfg.family.ways", low=2)]
    return [784] + sizes + [P.integer(ways, O, "ways", low=2)]


def build_cml(cfg, fams, executor=None, warp=False, model="complex"):
    """(learner of the free phase, :class:`MetaTrainer`) of the file's CML settings, with
    the meta-validation and meta-test tasks from their own alphabets (``warp=True`` or
    ``model="warp"``: on the network with warp layers; ``model="dual"``: on the dual
    system, with the ``dual`` section's ``meta_batch`` and ``learning_rate`` if given)."""
    P.choice(model, "omniglot.build_cml", "model", MODELS)
    where = cfg.get("_file", "<config>")
    l_cfg = section(cfg, "learner", required=("rule",),
                    optional=("integrator", "dt", "tol", "max_duration", "settle"))
    c_cfg = section(cfg, "cml", required=("beta",), optional=("estimator",))
    m = section(cfg, "meta", required=("steps", "meta_batch", "learning_rate", "clip",
                                       "eval_every", "eval_tasks", "seed"),
                optional=("lam_min", "omega_decay", "schedule", "tie_readout"))
    tie = tie_readout(where, "meta", m)
    if tie and (warp or model != "complex"):
        other = "cml_warp" if warp or model == "warp" else "cml_dual"
        raise ValidationError(f"{where}: meta.tie_readout: applies to method cml only, not "
                              f"{other} (its read-out is not a complex synapse's last connection); "
                              "run it with tie_readout: false")
    for k in ("steps", "eval_every"):
        checked(where, f"meta.{k}", P.integer, m[k], "meta", k, low=1)
    seed = checked(where, "meta.seed", P.integer, m["seed"], "meta", "seed", low=0)
    model = "warp" if warp else model
    net = build_net(cfg, seed, model=model)
    if model == "dual":
        d = cfg["dual"]
        m = dict(m, **{k: d[k] for k in ("meta_batch", "learning_rate") if k in d})
    learner = checked(where, "learner", Learner, **l_cfg)
    cml = checked(where, "cml", CML, learner=learner, **c_cfg)
    opt = optim.chain(checked(where, "meta.clip", optim.clip_by_global_norm, m["clip"]),
                      checked(where, "meta.learning_rate", optim.adam,
                              learning_rate(where, "meta", m,
                                            budget=budget_setting(cfg))))
    if tie:     # the read-out starts and stays symmetric under permuting the classes
        net = net.with_theta(optim.tied_rows(net.theta, CML_READOUT))
        opt = optim.chain(optim.tie_rows(CML_READOUT), opt)
    lam_min = checked(where, "meta.lam_min", optim.lam_floor, m.get("lam_min", 0.0),
                      net.theta, "meta", "lam_min")
    comp = compare_cfg(cfg)
    eval_tasks = checked(where, "meta.eval_tasks", P.integer, m["eval_tasks"], "meta",
                         "eval_tasks", low=1)
    val_task = fams["validation"].sample(task_rng(seed, VALIDATION), comp["val_tasks"])
    test_task = fams["test"].sample(task_rng(seed, TEST), eval_tasks)
    trainer = checked(where, "meta", MetaTrainer, net, fams["train"], cml, opt,
                      meta_batch=m["meta_batch"], seed=seed, eval_tasks=eval_tasks,
                      executor=executor, chunks=comp["workers"], lam_min=lam_min,
                      val_tasks=comp["val_tasks"], val_task=val_task, test_task=test_task,
                      average=comp["average"],
                      omega_decay=m.get("omega_decay", 0.0))
    return learner, trainer


#: The entries of a complex-synapse network's and of an MLP's parameters that
#: ``tie_readout`` ties across the read-out's rows (the classes).
CML_READOUT = ("omega", "lam", "omega_bias", "lam_bias")
MLP_READOUT = ("w", "b")


def tie_readout(where, key, sec):
    """``<key>.tie_readout`` of a section (absent: False), checked to be true or false."""
    value = sec.get("tie_readout", False)
    if not isinstance(value, bool):
        raise ValidationError(f"{where}: {key}.tie_readout: must be true or false "
                              f"(got {value!r:.60})")
    return value


def baseline_method(cfg, name):
    """``(method, baselines section)``: the baseline ``name`` (``"maml"``, ``"fomaml"``,
    ``"anil"``, ``"anil_fo"``, ``"reptile"``, ``"imaml"``, ``"untrained"``, the WarpGrad
    ones) of the configuration ``cfg`` (e.g. :func:`effective_config` of
    ``load_model("omniglot")``) as a run builds it: the ``baselines`` section checked (a bad setting is one
    ``ValidationError`` naming it), the soft-max cross-entropy as its inner loss.
    (``baselines.tie_readout`` is this experiment's, read by :func:`_baseline_training`,
    and is not passed on.)"""
    b = cfg.get("baselines")
    if isinstance(b, dict) and "tie_readout" in b:
        tie_readout(cfg.get("_file", "<config>"), "baselines", b)
        cfg = dict(cfg, baselines={k: v for k, v in b.items() if k != "tie_readout"})
        b = cfg["baselines"]
    if isinstance(b, dict) and isinstance(b.get(name, {}), dict):
        cfg = merge(cfg, {"baselines": {name: {"loss": "cross_entropy"}}})
    return build_baseline(cfg, name)


def parse_methods(methods, default=METHODS):
    return P.name_list(methods, ALL_METHODS, default, "run omniglot.methods")


# ---------------------------------------------------------------------- evaluation
#: Tasks per batch when scoring many tasks by CML's learning process (bounds memory: one
#: φ per task); :func:`~neuro_meta.metatrain.evaluate` solves each batch in smaller
#: pieces where that gives the same numbers (:data:`~neuro_meta.metatrain.EVAL_PIECE_NUMBERS`).
EVAL_CHUNK = 100


def _cml_part_errors(net, learner, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotSettledWarning)
        return np.concatenate([evaluate_after_learning(net, learner, t)
                               for t in task.pieces(EVAL_CHUNK)])


def _baseline_part_errors(method, params, task):
    """In pieces of :func:`~neuro_meta.metatrain.eval_piece_tasks` tasks (an inner loop
    of SGD steps is per task: the same numbers)."""
    return np.concatenate([method.evaluate(params, t)
                           for t in task.pieces(eval_piece_tasks(params))])


def _in_parts(fn, args, task, executor):
    """``fn(*args, task)`` on ``n_workers(executor)`` contiguous parts of ``task``'s
    batch, computed at once on ``executor`` (a task's error does not depend on the tasks
    it is evaluated with, so the numbers are the same on any executor)."""
    arrays = task.as_batch()
    n = arrays[0].shape[0]
    k = min(n_workers(executor), n)
    bounds = np.linspace(0, n, k + 1).astype(int)
    parts = [args + (Task(*(a[lo:hi] for a in arrays)),)
             for lo, hi in zip(bounds[:-1], bounds[1:])]
    return np.concatenate(map_pieces(fn, parts, executor))


def cml_errors(net, learner, task, executor=None):
    """Per-task error rate of the complex-synapse network after its learning process
    (the tasks spread over ``executor``'s workers)."""
    return _in_parts(_cml_part_errors, (net, learner), task, executor)


def baseline_errors(method, params, task, executor=None):
    """Per-task error rate of a baseline after its inner loop (the tasks spread over
    ``executor``'s workers)."""
    return _in_parts(_baseline_part_errors, (method, params), task, executor)


def pixel_nn_errors(task):
    """Per-task error rate of nearest neighbour on pixels (Euclidean) among the shots."""
    xt, yt, xv, yv = task.as_batch()
    d = ((xv ** 2).sum(-1)[..., :, None] - 2 * xv @ np.swapaxes(xt, -1, -2)
         + (xt ** 2).sum(-1)[..., None, :])
    nearest = np.argmin(d, axis=-1)
    pred = np.take_along_axis(yt.argmax(-1), nearest, axis=-1)
    return (pred != yv.argmax(-1)).mean(axis=-1)


def official_task():
    """The 20 official 20-way one-shot runs as a batch of 20 tasks: per run the 20
    training images (one per class, class j = column j), the 20 test images and their
    classes."""
    runs = omniglot_runs()
    n = runs.train.shape[0]
    xt = runs.train.reshape(n, 20, -1).astype(float)
    xv = runs.test.reshape(n, 20, -1).astype(float)
    yt = np.broadcast_to(np.eye(20), (n, 20, 20))
    yv = np.eye(20)[np.asarray(runs.answers)]
    return Task(xt, yt, xv, yv)


def widen_theta(net, ways, wide=None):
    """``net`` with its output layer widened to ``ways`` classes, every class given the
    mean of the meta-learned rows (ω and λ of the output connection, or a dual system's
    read-out and its initial value): the network for
    tasks with another number of classes. ``wide``: a network of the same kind with
    ``ways`` outputs to take the widened θ (default: a :class:`RateNetwork` built like
    ``net``, which must then be one)."""
    if wide is None:
        wide = RateNetwork(list(net.sizes[:-1]) + [ways],
                           activation=[a.name for a in net.activations],
                           synapse=net.synapses, tau_neuron=net.tau_neuron,
                           tau_synapse=net.tau_synapse, loss=net.loss, seed=0)
    theta = net.theta
    # the output connection's rows: ω, λ (complex synapses) or the dual system's read-out
    for key in ("omega", "lam", "omega_bias", "lam_bias", "readout", "lam_readout"):
        last = theta[key][-1] if key in theta else None
        if last is not None:
            theta[key][-1] = np.repeat(last.mean(axis=0, keepdims=True), ways, axis=0)
    return wide.with_theta(theta)


def widen_params(params, ways):
    """MLP parameters with the output layer widened to ``ways`` classes (mean row); other
    entries (a warped MLP's warp layers) are kept."""
    O = "omniglot.widen_params"
    ways = P.integer(ways, O, "ways", low=1)
    if not isinstance(params, dict) or not all(
            isinstance(params.get(k), (list, tuple)) and params[k] for k in ("w", "b")):
        P.fail(O, "params", "must be an MLP's parameters {'w': [matrices], 'b': [vectors], "
               "...}", type(params).__name__ if not isinstance(params, dict)
               else sorted(map(str, params)))
    w, b = list(params["w"]), list(params["b"])
    w[-1] = np.repeat(w[-1].mean(axis=0, keepdims=True), ways, axis=0)
    b[-1] = np.full(ways, b[-1].mean())
    return {**params, "w": w, "b": b}


def t95(n):
    """The 97.5 % quantile of Student's t with ``n - 1`` degrees of freedom: a 95 % CI
    half-width over ``n`` values is ``t95(n)`` times their standard error (1.964 for 600
    tasks, 2.093 for the 20 official runs; 1.96 in the limit). ``n``: an integer >= 2
    (one value has no interval)."""
    from scipy import stats

    n = P.integer(n, "omniglot.t95", "n", low=2)
    return float(stats.t.ppf(0.975, n - 1))


def _acc(errors):
    """(accuracy, half-width of its 95 % CI by Student's t) from per-task error rates."""
    m, s = mean_sem(errors)
    return 1.0 - m, t95(np.size(errors)) * s


def final_scores(errors_fn, final, fams_other, tasks, official=None):
    """The reported numbers of one method: accuracy on the final test tasks (with the
    per-task accuracies, in task order, for gaps paired over tasks), on the other-shots
    tasks, and the official runs' error (each with a 95 % CI half-width)."""
    out = {}
    errors = np.asarray(errors_fn("main", tasks["main"]), dtype=float)
    out["accuracy"], out["ci95"] = _acc(errors)
    out["accuracy_per_task"] = (1.0 - errors).tolist()
    if "other" in tasks:
        out["other_shots_accuracy"], out["other_shots_ci95"] = _acc(
            errors_fn("other", tasks["other"]))
    if official is not None:
        e = np.asarray(official)
        m, s = mean_sem(e)
        out["official_error"], out["official_ci95"] = m, t95(e.size) * s
    return out


# ---------------------------------------------------------------------- the run
def run(out_dir, quick=False, seed=None, methods=None, cfg=None, progress=True,
        resume=False, executor=None, overrides=(), curves="time", ways=None, shots=None):
    """Meta-train the chosen methods on Omniglot; write ``results.json`` and plots to
    ``out_dir`` (``omniglot.png``: learning curves and final accuracies;
    ``omniglot_tasks.png``: held-out tasks with CML's predictions;
    ``omniglot_consolidation.png``: ω and λ of the first layer). ``ways``/``shots``
    override the file's N and K. ``executor``: None (default) runs every method's
    meta-batches on ``compare.workers`` processes (this one and a
    :class:`~neuro_meta.workers.PieceExecutor`'s pool), ``"serial"`` computes the same
    pieces in this process (the same numbers, slower), or a given executor / Dask client
    gets them (the same numbers)."""
    O = "run omniglot"
    P.choice(curves, O, "curves", ("time", "steps"))
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        P.fail(O, "out_dir", "must be a folder's path (str or os.PathLike)",
               repr(out_dir) if isinstance(out_dir, str) else type(out_dir).__name__)
    check_run_args(O, out_dir, cfg, overrides, quick=quick, progress=progress,
                   resume=resume)
    cfg = _cfg(cfg, quick, seed, overrides, ways, shots)
    methods = parse_methods(methods, cfg.get("methods") or METHODS)
    compare, final = compare_cfg(cfg), final_cfg(cfg)
    # every method's meta-batches go through the same executor, split into the same
    # compare.workers pieces: equal wall time on the same processes
    with ExitStack() as stack:
        executor = _processes(stack, executor, compare["workers"])
        return _run(Path(out_dir), cfg, methods, compare, final, progress, resume, executor,
                    curves)


def _processes(stack, executor, workers):
    """The executor of a run's or a scoring's pieces, entered into ``stack`` with one
    BLAS thread per process: ``"serial"`` -> None (every piece here); None -> a
    :class:`~neuro_meta.workers.PieceExecutor` of ``workers`` processes (this one and
    ``workers - 1`` others; None if 1); any other executor as given."""
    stack.enter_context(blas_threads(1))
    if executor == "serial":            # the same pieces, one after another, here
        return None
    if executor is None and workers > 1:    # (a number of pieces, and here of local
        check_workers(workers, "compare", "workers", low=2)     # processes: capped)
        return stack.enter_context(PieceExecutor(workers))
    return executor


def _run(out, cfg, methods, compare, final, progress, resume, executor, curves):
    fams = families(cfg)
    learner, trainer = build_cml(cfg, fams, executor)
    trainers = {name: trainer if name == "cml" else build_cml(
        cfg, fams, executor, model=CML_METHODS[name])[1]
        for name in methods if name in CML_METHODS}
    for name in methods:            # every method's settings checked before any work
        if name not in CML_METHODS:
            baseline_method(cfg, name)
    seed = cfg["meta"]["seed"]
    out.mkdir(parents=True, exist_ok=True)
    tasks = {"main": fams["test"].sample(task_rng(seed, TEST, 1), final["test_tasks"])}
    if final["other_shots"] is not None:
        other = families(cfg, shots=final["other_shots"])["test"]
        tasks["other"] = other.sample(task_rng(seed, TEST, 2), final["test_tasks"])
    official = official_task() if final["official_runs"] else None
    partial_path = out / "partial.json"
    fingerprint = config_fingerprint(cfg)
    done = load_partial(partial_path, fingerprint) if resume else {}
    _check_per_task(done, final["test_tasks"], partial_path)
    if resume:
        check_checkpoints(out, [m for m in methods if m not in done])
    if not resume:      # a fresh run: an older run's partial results must not be
        partial_path.unlink(missing_ok=True)    # resumed with this run's checkpoints
    results = {"methods": {}, "history": {}, "config": cfg}
    t_pix = time.perf_counter()
    pix = final_scores(lambda _, t: pixel_nn_errors(t), final, None, tasks,
                       pixel_nn_errors(official) if official is not None else None)
    pix.update(meta_steps=0, wall_time_s=time.perf_counter() - t_pix)
    results["methods"]["pixel_nn"] = pix
    trained = True          # whether `trainer` holds CML's meta-trained network
    for name in methods:
        if name in done:
            for k in ([name, "cml_untrained"] if name == "cml" else [name]):
                if k in done:
                    results["methods"][k] = done[k]["summary"]
                    if done[k]["history"] is not None:
                        results["history"][k] = done[k]["history"]
            if name == "cml":   # the plots below need the selected meta-parameters
                trained = restore_trained(trainer, out / "cml_checkpoint.npz",
                                          "omniglot_tasks.png and omniglot_consolidation.png",
                                          done["cml"]["summary"])
            continue
        if name in CML_METHODS:
            tr = trainers[name]
            if name == "cml":
                untrained = _score_cml(trainer.net, learner, final, tasks, official,
                                       build_net(cfg, 0, ways=20), executor)
                untrained.update(meta_steps=0, wall_time_s=0.0)
                results["methods"]["cml_untrained"] = untrained
                done["cml_untrained"] = {"summary": untrained, "history": None}
            hist = tr.train(cfg["meta"]["steps"], eval_every=cfg["meta"]["eval_every"],
                            progress=progress, checkpoint=out / f"{name}_checkpoint.npz",
                            resume=resume, keep_theta=False, **_budget_kw(compare))
            h = vars(hist)
            summary = _score_cml(tr.net, learner, final, tasks, official,
                                 build_net(cfg, 0, ways=20, model=CML_METHODS[name]),
                                 executor)
            summary["phases_not_settled"] = hist.not_settled
        else:
            method, args, kw = _baseline_training(cfg, name, fams, trainer)
            params, h = bl.train_baseline(*args, **kw, progress=progress, executor=executor,
                                          checkpoint=out / f"{name}_checkpoint.npz",
                                          resume=resume)
            summary = final_scores(
                lambda _, t: baseline_errors(method, params, t, executor), final, None,
                tasks, baseline_errors(method, widen_params(params, 20), official, executor)
                if official is not None else None)
            if name == "untrained":
                h = {k: h[k][:1] if isinstance(h[k], list) else h[k] for k in h}
        summary.update(_training_summary(h, compare["targets"]))
        results["methods"][name] = summary
        results["history"][name] = _curves(h)
        done[name] = {"summary": summary, "history": results["history"][name]}
        write_json(partial_path, {"fingerprint": fingerprint, "methods": done})
    results["gaps"] = task_gaps(results["methods"])
    write_results(out / "results.json", results)
    plot(out, results, curves)
    if "cml" in methods and trained:
        plot_tasks(out, trainer, learner, tasks["main"])
        plot_consolidation(out, trainer.net)
    return results


def _score_cml(net, learner, final, tasks, official, wide, executor=None):
    return final_scores(lambda _, t: cml_errors(net, learner, t, executor), final, None,
                        tasks, cml_errors(widen_theta(net, 20, wide), learner, official,
                                          executor) if official is not None else None)


def _baseline_training(cfg, name, fams, trainer):
    """``(method, args, kwargs)`` of :func:`~neuro_meta.baselines.train_baseline` for
    baseline ``name`` in a run of ``cfg`` (``fams``: its families; ``trainer``: its CML
    trainer, whose test and validation tasks every method shares) -- everything but
    the progress bar, the executor, the checkpoint and ``resume``; the one place a run
    and a reading of its checkpoints (:func:`selected_models`) take them from."""
    compare = compare_cfg(cfg)
    method, b = baseline_method(cfg, name)
    params0 = (wg.init_warped_mlp if name in WARPGRAD else bl.init_mlp)(
        mlp_sizes(cfg), cfg["meta"]["seed"])
    where = cfg.get("_file", "<config>")
    lr = learning_rate(where, "baselines", b, budget=budget_setting(cfg))
    opt = optim.adam(lr)
    if tie_readout(where, "baselines", cfg["baselines"]):
        # the read-out starts and stays symmetric under permuting the classes (an
        # initial read-out that gives every class the same logit)
        params0 = optim.tied_rows(params0, MLP_READOUT)
        opt = optim.chain(optim.tie_rows(MLP_READOUT), opt)
    args = (method, params0, fams["train"], b["steps"])
    kw = dict(meta_batch=b["meta_batch"], optimizer=opt,
              seed=cfg["meta"]["seed"], eval_every=b["eval_every"],
              test_task=trainer.test_task, val_task=trainer.val_task,
              chunks=compare["workers"], average=compare["average"],
              weight_decay=b.get("weight_decay", 0.0), **_budget_kw(compare))
    return method, args, kw


def _budget_kw(compare):
    if compare["budget_s"] is None:
        return {}
    return {"budget_s": compare["budget_s"], "eval_every_s": compare["eval_every_s"]}


def _training_summary(h, targets):
    """What meta-training did: selected point, steps, stop reason, times (accuracies are
    1 − the recorded error rates)."""
    sel = h.get("selected") or {}
    acc_hist = {"step": h["step"], "time_s": h["time_s"],
                "meta_test_mse": list(h["meta_test_mse"])}
    ttt = time_to_target(acc_hist, [1.0 - t for t in targets])
    return {"meta_val_accuracy": 1.0 - sel.get("meta_val_mse", h["meta_val_mse"][-1]),
            "selected_step": sel.get("step", h["step"][-1]),
            "selected_time_s": sel.get("time_s", h["time_s"][-1]),
            "meta_steps": int(h.get("meta_steps") or 0),
            "stop_reason": h.get("stop_reason"), "budget_s": h.get("budget_s"),
            "wall_time_s": float(h.get("wall_time_s") or 0.0),
            "time_to_target": {f"{1.0 - float(k):g}": v for k, v in ttt.items()},
            "schedule_steps": h.get("schedule_steps")}


def _curves(h):
    return {"step": list(h["step"]), "time_s": list(h["time_s"]),
            "meta_val_accuracy": [1.0 - v for v in h["meta_val_mse"]],
            "meta_test_accuracy": [1.0 - v for v in h["meta_test_mse"]]}


def _check_per_task(done, n_tasks, path):
    """A resumed method's per-task accuracies (``summary.accuracy_per_task`` of
    ``partial.json``, absent in an older neuro_meta's): ``n_tasks`` numbers in [0, 1], or
    the resume stops here rather than at the end of the run, in :func:`task_gaps`."""
    def numbers(v):
        return isinstance(v, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)

    for name, m in done.items():
        s, h = m["summary"], m["history"]
        bad = next((k for k in ("accuracy", "ci95", "meta_steps", "wall_time_s")
                    if isinstance(s.get(k), bool) or not isinstance(s.get(k), (int, float))),
                   None)
        if bad is None and h is not None:
            lists = [h.get(k) for k in ("step", "time_s", "meta_val_accuracy",
                                        "meta_test_accuracy")]
            if not all(numbers(v) for v in lists) or len({len(v) for v in lists}) != 1:
                bad = "history (step, time_s, meta_val_accuracy, meta_test_accuracy: " \
                      "lists of numbers of one length)"
        if bad is not None:
            where = bad if bad.startswith("history") else f"summary.{bad}"
            raise ValidationError(f"{path}: methods.{name}.{where} is missing or not a "
                                  "number; move it aside or restart without --resume")
        per = s.get("accuracy_per_task")
        if per is None:
            continue
        ok = (isinstance(per, list) and len(per) == n_tasks and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in per))
        if not ok:
            raise ValidationError(
                f"{path}: methods.{name}.summary.accuracy_per_task must be a list of "
                f"{n_tasks} accuracies in [0, 1] (final.test_tasks), got "
                f"{_describe(per)}; move it aside or restart without --resume")


def _describe(per):
    if not isinstance(per, list):
        return type(per).__name__
    bad = next((v for v in per if isinstance(v, bool) or not isinstance(v, (int, float))
                or not 0.0 <= v <= 1.0), None)
    return f"{len(per)} values" + ("" if bad is None else f", among them {bad!r}")


def task_gaps(methods):
    """Per CML method of one run, its N-way K-shot accuracy minus each MAML-family
    baseline's and minus the best of them (the one with the highest accuracy), *paired
    over the test tasks* (every method is scored on the same tasks, in the same order):
    ``{cml: {baseline or "best": {"mean", "ci95", "n_tasks"} (+ "baseline" for
    "best")}}``, in accuracy (×100: percentage points), CI = Student's t (:func:`t95`)
    × the standard error of the per-task differences. ("best" is chosen by accuracy on
    these same tasks -- the
    strictest bar; its CI does not account for that choice. ``"best_validation"``, when
    every baseline has its ``meta_val_accuracy``: the baseline with the highest accuracy
    on the meta-validation tasks at its selected point, a choice that never looks at test
    tasks.) Methods without per-task accuracies (a ``partial.json`` of an older
    neuro_meta) are left out."""
    def paired(a, b):
        d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        m, s = mean_sem(d)
        return {"mean": m, "ci95": t95(d.size) * s, "n_tasks": int(d.size)}

    check_summaries(methods, "omniglot.task_gaps", need=("accuracy",))
    per = {n: r["accuracy_per_task"] for n, r in methods.items()
           if r.get("accuracy_per_task") is not None}
    family = [b for b in MAML_FAMILY if b in per]
    gaps = {}
    for c in (n for n in CML_METHODS if n in per):
        if not family or any(len(per[b]) != len(per[c]) for b in family):
            continue
        if len(per[c]) < 2:
            P.fail("omniglot.task_gaps", f"methods.{c}.accuracy_per_task", "must hold "
                   "at least 2 test tasks (one task's difference has no interval)",
                   f"{len(per[c])} task")
        g = {b: paired(per[c], per[b]) for b in family}
        best = max(family, key=lambda b: methods[b]["accuracy"])
        g["best"] = dict(paired(per[c], per[best]), baseline=best)
        if all(methods[b].get("meta_val_accuracy") is not None for b in family):
            best = max(family, key=lambda b: methods[b]["meta_val_accuracy"])
            g["best_validation"] = dict(paired(per[c], per[best]), baseline=best)
        gaps[c] = g
    return gaps


def _mapping(value, owner, attr, what):
    from collections.abc import Mapping

    if not isinstance(value, Mapping):
        P.fail(owner, attr, f"must be {what} (a mapping)", type(value).__name__)
    return value


def _numbers(value, owner, attr, low=None, high=None):
    from collections.abc import Sequence

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        P.fail(owner, attr, "must be a list of numbers", P.shown(value))
    return [P.real(v, owner, f"{attr}[{i}]", low=low, high=high)
            for i, v in enumerate(value)]


def check_summaries(methods, owner, attr="methods", need=("accuracy", "ci95")):
    """Refuse (:class:`~neuro_meta.errors.ValidationError` naming ``owner.attr``, the
    method, the key and the value) a ``{method: summary}`` mapping whose summaries lack
    a number of ``need`` (accuracies and error rates in [0, 1]; the ``*ci95`` half-widths
    >= 0) or hold a malformed optional one: per-task
    accuracies, ``meta_val_accuracy``, ``meta_steps``, times, ``time_to_target``."""
    _mapping(methods, owner, attr, "the methods' summaries")
    if not methods:
        P.fail(owner, attr, "must hold at least one method's summary", "{}")
    for name, r in methods.items():
        w = f"{attr}.{name}"
        _mapping(r, owner, w, "a method's summary")
        for key in need:
            ci = key.endswith("ci95")       # a half-width: Student's t x a standard error,
            if key not in r:                # above 1 for a few tasks (t95(2) = 12.7)
                P.fail(owner, w, f"must have {key!r} (a number "
                       + (">= 0, a 95 % CI half-width)" if ci else "in [0, 1])"),
                       f"keys {sorted(map(str, r))}")
            P.real(r[key], owner, f"{w}.{key}", low=0.0, high=None if ci else 1.0)
        if r.get("accuracy_per_task") is not None:
            _numbers(r["accuracy_per_task"], owner, f"{w}.accuracy_per_task", 0.0, 1.0)
        if r.get("meta_val_accuracy") is not None:
            P.real(r["meta_val_accuracy"], owner, f"{w}.meta_val_accuracy", low=0.0, high=1.0)
        if "meta_steps" in r:
            P.integer(r["meta_steps"], owner, f"{w}.meta_steps", low=0)
        for key in ("wall_time_s", "selected_time_s"):
            if r.get(key) is not None:
                P.real(r[key], owner, f"{w}.{key}", low=0.0)
        if "time_to_target" in r:
            ttt = _mapping(r["time_to_target"], owner, f"{w}.time_to_target",
                           "the times to the targets")
            for t, c in ttt.items():
                if c is not None:
                    _mapping(c, owner, f"{w}.time_to_target.{t}", "a time to target")
                    P.real(c.get("time_s"), owner, f"{w}.time_to_target.{t}.time_s", low=0.0)
    return methods


def check_results(results, owner, attr="results", need_history=False):
    """Refuse (:class:`~neuro_meta.errors.ValidationError` naming ``owner.attr``, the key
    and the value) a dict that is not one run's results as :func:`run` returns them and
    ``results.json`` holds: ``methods`` (:func:`check_summaries`; the other shot count's
    and the official runs' numbers are needed when the configuration has them), optional
    ``gaps`` and, with ``need_history``, ``history`` (per method its ``step``,
    ``time_s`` and accuracy curves, one value per evaluation) and the family's ways and
    shots. Returns ``results``."""
    _mapping(results, owner, attr, "one omniglot run's results (as results.json holds them)")
    cfg = _mapping(results.get("config", {}), owner, f"{attr}.config",
                   "the run's configuration")
    fin = _mapping(cfg.get("final", {}), owner, f"{attr}.config.final",
                   "the final evaluation's settings")
    need = ["accuracy", "ci95"]
    if fin.get("other_shots"):
        need += ["other_shots_accuracy", "other_shots_ci95"]
    if fin.get("official_runs"):
        need += ["official_error", "official_ci95"]
    methods = check_summaries(results.get("methods"), owner, f"{attr}.methods", need)
    gaps = _mapping(results.get("gaps") or {}, owner, f"{attr}.gaps", "the paired gaps")
    for c, g in gaps.items():
        _mapping(g, owner, f"{attr}.gaps.{c}", "a CML method's gaps")
        for b, d in g.items():
            w = f"{attr}.gaps.{c}.{b}"
            _mapping(d, owner, w, "a gap")
            for key in ("mean", "ci95"):
                P.real(d.get(key), owner, f"{w}.{key}")
            P.integer(d.get("n_tasks"), owner, f"{w}.n_tasks", low=1)
    if need_history:
        fam = _mapping(cfg.get("family"), owner, f"{attr}.config.family",
                       "the tasks' settings")
        for k in ("ways", "shots"):
            P.integer(fam.get(k), owner, f"{attr}.config.family.{k}", low=1)
        hist = _mapping(results.get("history"), owner, f"{attr}.history",
                        "the methods' learning curves")
        for name, h in hist.items():
            w = f"{attr}.history.{name}"
            if name not in methods:
                P.fail(owner, w, "must be the curve of a method in methods",
                       f"methods {sorted(map(str, methods))}")
            _mapping(h, owner, w, "a learning curve")
            lens = {k: len(_numbers(h.get(k), owner, f"{w}.{k}"))
                    for k in ("step", "time_s", "meta_val_accuracy", "meta_test_accuracy")}
            if len(set(lens.values())) != 1 or not lens["step"]:
                P.fail(owner, w, "must hold step, time_s and both accuracy curves, one value "
                       "per evaluation, at least one", lens)
    return results


# ---------------------------------------------------------------------- output
COLORS = {"cml": "C1", "cml_untrained": "C1", "maml": "C0", "fomaml": "C2",
          "reptile": "C4", "imaml": "C3", "untrained": "C7", "pixel_nn": "k",
          "warpgrad": "C5", "warpgrad_fo": "C6", "warpgrad_nowarp": "C8", "cml_warp": "C9",
          "cml_dual": "tab:brown", "anil": "olive", "anil_fo": "yellowgreen"}


@reads_results("omniglot.summary_table", "one omniglot run's results")
def summary_table(results):
    """The results table (accuracy ± 95 % CI, official runs' error, wall time, steps) and
    the time-to-target table, as text."""
    check_results(results, "omniglot.summary_table")
    cfg = results.get("config") or {}
    fam, comp, fin = cfg.get("family", {}), cfg.get("compare", {}), cfg.get("final", {})
    W, K = fam.get("ways", "?"), fam.get("shots", "?")      # "?": a results file without
    other = fin.get("other_shots")                          # its configuration
    budget = comp.get("budget_s")
    head = (f"Equal wall-time budget of {budget:g} s of meta-training per method "
            "(evaluations excluded; the wall-time column includes them)"
            if budget is not None else
            "No wall-time budget: each method runs its meta-steps")
    lines = [f"Omniglot {W}-way {K}-shot. {head}; selected on {comp.get('val_tasks', '?')} "
             f"meta-validation tasks (validation alphabet); accuracy on "
             f"{fin.get('test_tasks', '?')} test-alphabet tasks, ± 95 % CI"]
    lines += _combined_note(results)
    cols = [f"{W}-way {K}-shot"] + ([f"{W}-way {other}-shot"] if other else []) + \
        (["20-way official err"] if fin.get("official_runs") else [])
    lines.append(f"{'method':<16}" + "".join(f"{c:>22}" for c in cols)
                 + f"{'meta-steps':>11}{'wall time (s)':>15}")
    for name, r in results["methods"].items():
        cells = [f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f} %"]
        if other:
            cells.append(f"{100 * r['other_shots_accuracy']:.1f} ± "
                         f"{100 * r['other_shots_ci95']:.1f} %")
        if fin.get("official_runs"):
            cells.append(f"{100 * r['official_error']:.1f} ± {100 * r['official_ci95']:.1f} %")
        lines.append(f"{name:<16}" + "".join(f"{c:>22}" for c in cells)
                     + f"{r.get('meta_steps', 0):>11d}{r.get('wall_time_s', 0.0):>15.1f}")
    lines += budget_notes(results["methods"], budget)
    if fin.get("official_runs"):
        lines.append("Published 20-way one-shot errors on the same runs (Lake et al. 2015, "
                     "105x105 images): people 4.5 %, Bayesian program learning 3.3 %, "
                     "Siamese convnet 8.0 %, modified-Hausdorff pixel baseline 38.8 %")
    targets = comp.get("targets") or []
    if targets and any("time_to_target" in r for r in results["methods"].values()):
        lines += ["", "Time to target meta-test accuracy (learning-curve test tasks): "
                  "meta-training wall time (s) of the first evaluation at or above it"]
        lines.append(f"{'method':<16}" + "".join(f"{target_label(t):>14}" for t in targets))
        for name, r in results["methods"].items():
            if "time_to_target" not in r:
                continue
            cells = [r["time_to_target"].get(f"{t:g}") for t in targets]
            lines.append(f"{name:<16}" + "".join(
                f"{'not reached' if c is None else format(c['time_s'], '.1f') + ' s':>14}"
                for c in cells))
    for cml_name, g in (results.get("gaps") or {}).items():
        n = next(iter(g.values()))["n_tasks"]
        lines += ["", f"{cml_name} minus the MAML family, {W}-way {K}-shot accuracy, "
                  f"paired over the {n} test tasks (percentage points, ± 95 % CI):"]
        for b, d in g.items():
            label = {"best": f"best ({d.get('baseline')})",
                     "best_validation": f"best on validation ({d.get('baseline')})"}.get(b, b)
            lines.append(f"  {label:<30}{100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}")
    return "\n".join(lines)


def target_label(t):
    """A time-to-target column's head: the target accuracy (a fraction in the model file
    and in ``results.json``) as a percentage, as the accuracies of the tables are."""
    return f"≥ {100 * float(t):.4g} %"


def _combined_note(results):
    """The line a table of :func:`combine`'s output starts with: where its methods ran."""
    runs = results.get("combined_from")
    if not runs:
        return []
    return ["Put together by neuro-meta combine from runs made side by side: "
            + ", ".join(map(str, runs))]


@reads_results("omniglot.plot", "one omniglot run's results", arg=1)
def plot(out, results, curves="time"):
    """``omniglot.png``: meta-test accuracy against meta-training wall time (faint:
    meta-validation; stars: the selected points) and the final accuracies with their
    95 % CIs."""
    import matplotlib.pyplot as plt     # rc_context only: figures are made without pyplot,
    from matplotlib.figure import Figure  # so a notebook's backend is left alone

    from .. import plotting

    check_results(results, "omniglot.plot", need_history=True)
    P.choice(curves, "omniglot.plot", "curves", ("time", "steps"))
    x_key = "time_s" if curves == "time" else "step"
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(13, 5.2))
        ax, bx = fig.subplots(1, 2)
        for name, h in results["history"].items():
            color = COLORS.get(name)
            r = results["methods"][name]
            if len(h["step"]) == 1:
                ax.axhline(100 * h["meta_test_accuracy"][0], ls="--", color=color,
                           label=f"{name} (no meta-learning)")
                continue
            ax.plot(h[x_key], 100 * np.asarray(h["meta_test_accuracy"]), "o-", ms=3,
                    color=color, label=name)
            ax.plot(h[x_key], 100 * np.asarray(h["meta_val_accuracy"]), "-", lw=1,
                    alpha=0.3, color=color)
            if r.get("selected_step") in h["step"]:
                i = h["step"].index(r["selected_step"])
                ax.plot(h[x_key][i], 100 * h["meta_test_accuracy"][i], "*", ms=13,
                        mfc="none", mew=1.5, color=color)
        budget = results["config"].get("compare", {}).get("budget_s")
        if budget is not None and curves == "time":
            ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget ({budget:g} s)")
        ax.set_xlabel("wall time of meta-training (s)" if curves == "time" else "meta-step")
        ax.set_ylabel("meta-test accuracy (%)")
        ax.set_title("Meta-learning curves (faint: meta-validation; ☆ selected)")
        ax.legend(fontsize=8)
        names = list(results["methods"])
        acc = [100 * results["methods"][n]["accuracy"] for n in names]
        ci = [100 * results["methods"][n]["ci95"] for n in names]
        bx.barh(names, acc, xerr=ci, color=[COLORS.get(n, "C9") for n in names], alpha=0.8,
                capsize=3)
        fam = results["config"]["family"]
        bx.axvline(100.0 / fam["ways"], color="k", ls=":", lw=1, label="chance")
        bx.set_xlabel(f"{fam['ways']}-way {fam['shots']}-shot test accuracy (%) ± 95 % CI")
        bx.set_title("Selected meta-parameters on held-out alphabets")
        bx.invert_yaxis()
        bx.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, Path(out) / "omniglot.png")


def plot_tasks(out, trainer, learner, task, n_tasks=3, n_queries=8):
    """``omniglot_tasks.png``: held-out tasks -- the shots (one column per class) and
    queries with the class CML's network predicts after learning (red: wrong)."""
    import matplotlib.pyplot as plt     # rc_context only: figures are made without pyplot,
    from matplotlib.figure import Figure  # so a notebook's backend is left alone

    from .. import plotting

    xt, yt, xv, yv = (a[:n_tasks] for a in task.as_batch())
    net = trainer.net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotSettledWarning)
        res = learner.run(net, xt, yt)
    pred = net.predict(xv, [np.asarray(p) for p in res.phi_aug]).argmax(-1)
    W, K = yt.shape[-1], xt.shape[1] // yt.shape[-1]
    cols = max(W, n_queries)
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(1.1 * cols, 2.4 * n_tasks))
        axes = fig.subplots(2 * n_tasks, cols)
        for t in range(n_tasks):
            for j in range(cols):
                a = axes[2 * t, j]
                a.axis("off")
                if j < W:
                    i = int(np.flatnonzero(yt[t].argmax(-1) == j)[0])
                    a.imshow(xt[t, i].reshape(28, 28), cmap="Greys")
                    a.set_title(f"class {j}" + (f" ({K} shots)" if K > 1 and j == 0 else ""),
                                fontsize=7)
                b = axes[2 * t + 1, j]
                b.axis("off")
                if j < n_queries:
                    b.imshow(xv[t, j].reshape(28, 28), cmap="Greys")
                    ok = pred[t, j] == yv[t, j].argmax()
                    b.set_title(f"→ {pred[t, j]}" + ("" if ok else f" (is {yv[t, j].argmax()})"),
                                fontsize=7, color="k" if ok else "r")
        fig.suptitle("Held-out tasks: shots (top rows) and queries with CML's predictions "
                     "after the learning process", fontsize=9)
        fig.tight_layout()
        save_figure(fig, Path(out) / "omniglot_tasks.png")


def plot_consolidation(out, net, n_units=8):
    """``omniglot_consolidation.png``: what consolidation kept in the first layer -- the
    mean λ over hidden units per input pixel (how rigid each pixel's synapses are), the
    ω of a few hidden units (their consolidated receptive fields), and the distribution
    of λ per layer."""
    import matplotlib.pyplot as plt     # rc_context only: figures are made without pyplot,
    from matplotlib.figure import Figure  # so a notebook's backend is left alone

    from .. import plotting

    theta = net.theta
    om, lam = theta["omega"][0], theta["lam"][0]
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(13, 4.6))
        grid = fig.add_gridspec(2, n_units // 2 + 3)
        a = fig.add_subplot(grid[:, :2])
        im = a.imshow(lam.mean(axis=0).reshape(28, 28), cmap="viridis")
        a.set_title("first layer: mean λ per input pixel")
        a.axis("off")
        fig.colorbar(im, ax=a, fraction=0.046)
        order = np.argsort(-np.abs(om).sum(axis=1))[:n_units]
        for k, u in enumerate(order):
            b = fig.add_subplot(grid[k % 2, 2 + k // 2])
            lim = np.abs(om[u]).max()
            b.imshow(om[u].reshape(28, 28), cmap="RdBu_r", vmin=-lim, vmax=lim)
            b.set_title(f"ω, unit {u}", fontsize=7)
            b.axis("off")
        c = fig.add_subplot(grid[:, -1])
        for l, lv in enumerate(theta["lam"]):
            if lv is not None:
                c.hist(np.log10(np.maximum(lv.ravel(), 1e-12)), bins=40, histtype="step",
                       density=True, label=f"connection {l}")
        c.set_xlabel("log10 λ")
        c.set_title("consolidation strength per layer")
        c.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, Path(out) / "omniglot_consolidation.png")


# ---------------------------------------------------------------------- across seeds
#: The MAML family: the baselines a CML method's 1-shot accuracy is held against.
MAML_FAMILY = ("maml", "fomaml", "anil", "anil_fo", "reptile", "imaml")
#: The reported numbers aggregated across seeds (each ``results.json`` field, its CI).
SEED_METRICS = (("accuracy", "ci95"), ("other_shots_accuracy", "other_shots_ci95"),
                ("official_error", "official_ci95"))


def aggregate_seeds(seeds, per_seed):
    """Across whole runs with different seeds (``neuro-meta run omniglot --seeds``): per
    method and reported number, the mean over seeds with its 95 % CI (Student's t over
    the seeds, the independent samples), the per-seed values and the mean per-run CI over
    tasks; meta-steps and selected times per seed. ``gaps``: per CML method, its 1-shot
    accuracy minus each MAML-family baseline's and minus the best of them, *paired by
    seed* (the same tasks within a seed), mean ± 95 % CI over seeds (``"best"``: the
    best on each seed's test tasks; ``"best_validation"``: the best on each seed's
    meta-validation tasks, at the selected points); ``history``: per
    method the per-seed learning curves."""
    from .seeds import ci95 as _ci95

    def ci95(values):           # one seed: no interval (None, not NaN, in the JSON)
        mean, half = _ci95(values)
        return mean, (float(half) if np.isfinite(half) else None)

    if len(per_seed) != len(seeds) or not per_seed:
        raise ValidationError(f"omniglot.aggregate_seeds: needs one result per seed "
                              f"(got {len(per_seed)} results for seeds {list(seeds)})")
    for i, r in enumerate(per_seed):
        check_results(r, "omniglot.aggregate_seeds", f"per_seed[{i}]")
    names = [n for n in per_seed[0]["methods"] if all(n in r["methods"] for r in per_seed)]
    methods = {}
    for name in names:
        runs = [r["methods"][name] for r in per_seed]
        m = {"n_seeds": len(runs)}
        for key, ci_key in SEED_METRICS:
            if all(key in r for r in runs):
                vals = [float(r[key]) for r in runs]
                mean, half = ci95(vals)
                m[key] = mean
                m[key + "_ci95"] = half
                m[key + "_per_seed"] = vals
                m[key + "_task_ci95"] = float(np.mean([r[ci_key] for r in runs]))
        m["meta_steps_per_seed"] = [int(r.get("meta_steps", 0)) for r in runs]
        m["meta_steps"] = int(round(float(np.mean(m["meta_steps_per_seed"]))))
        m["wall_time_s"] = float(np.mean([r.get("wall_time_s", 0.0) for r in runs]))
        if all("selected_time_s" in r for r in runs):
            m["selected_time_s_per_seed"] = [r["selected_time_s"] for r in runs]
            m["meta_val_accuracy_per_seed"] = [r["meta_val_accuracy"] for r in runs]
        methods[name] = m
    gaps = {}
    family = [b for b in MAML_FAMILY if b in methods]
    for cml_name in (n for n in CML_METHODS if n in methods):
        own = np.array(methods[cml_name]["accuracy_per_seed"])
        g = {}
        for b in family:
            d = own - np.array(methods[b]["accuracy_per_seed"])
            mean, half = ci95(d)
            g[b] = {"mean": mean, "ci95": half, "per_seed": d.tolist()}
        if family:
            best = np.max([methods[b]["accuracy_per_seed"] for b in family], axis=0)
            d = own - best
            mean, half = ci95(d)
            g["best"] = {"mean": mean, "ci95": half, "per_seed": d.tolist(),
                         "best_per_seed": [family[i] for i in np.argmax(
                             [methods[b]["accuracy_per_seed"] for b in family], axis=0)]}
            if all("meta_val_accuracy_per_seed" in methods[b] for b in family):
                pick = np.argmax([methods[b]["meta_val_accuracy_per_seed"]
                                  for b in family], axis=0)
                d = own - np.array([methods[family[i]]["accuracy_per_seed"][k]
                                    for k, i in enumerate(pick)])
                mean, half = ci95(d)
                g["best_validation"] = {"mean": mean, "ci95": half, "per_seed": d.tolist(),
                                        "best_per_seed": [family[i] for i in pick]}
        gaps[cml_name] = g
    history = {n: [r["history"][n] for r in per_seed]
               for n in names if all(n in r.get("history", {}) for r in per_seed)}
    return {"experiment": "omniglot", "seeds": list(seeds), "methods": methods,
            "gaps": gaps, "history": history,
            "per_seed": {str(s): r for s, r in zip(seeds, per_seed)},
            "config": per_seed[0].get("config")}


@reads_results("omniglot.seeds_table", "the aggregate of an omniglot --seeds run",
               arg=0, name="agg")
def seeds_table(agg):
    """The across-seed table of :func:`aggregate_seeds` as text."""
    cfg = agg.get("config") or {}
    fam, comp, fin = cfg.get("family", {}), cfg.get("compare", {}), cfg.get("final", {})
    W, K, other = fam.get("ways"), fam.get("shots"), fin.get("other_shots")
    n = len(agg["seeds"])

    def cell(m, key):
        if key not in m:
            return "—"
        half = m[key + "_ci95"]
        return (f"{100 * m[key]:.1f} %" if half is None
                else f"{100 * m[key]:.1f} ± {100 * half:.1f} %")

    budget = comp.get("budget_s")
    lines = [f"Omniglot {W}-way {K}-shot, {n} seeds ({', '.join(map(str, agg['seeds']))})"
             + (f", {budget:g} s of meta-training per method and seed" if budget else "")
             + f": mean over seeds ± 95 % CI (Student's t over the seeds); per run "
             f"{fin.get('test_tasks')} test tasks"]
    lines += _combined_note(agg)
    cols = [f"{W}-way {K}-shot"] + ([f"{W}-way {other}-shot"] if other else []) + \
        (["20-way official err"] if fin.get("official_runs") else [])
    keys = ["accuracy"] + (["other_shots_accuracy"] if other else []) + \
        (["official_error"] if fin.get("official_runs") else [])
    lines.append(f"{'method':<16}" + "".join(f"{c:>22}" for c in cols)
                 + f"{'per-run CI':>12}{'meta-steps':>12}")
    for name, m in agg["methods"].items():
        lines.append(f"{name:<16}" + "".join(f"{cell(m, k):>22}" for k in keys)
                     + f"{'± ' + format(100 * m.get('accuracy_task_ci95', np.nan), '.1f'):>12}"
                     + f"{m['meta_steps']:>12d}")
    lines.append(f"(per-run CI: the mean over seeds of one run's 95 % CI over its test "
                 f"tasks, {K}-shot column; meta-steps: mean over seeds)")
    for s, r in (agg.get("per_seed") or {}).items():     # a cap that ended one seed early
        if isinstance(r, dict) and isinstance(r.get("methods"), dict):
            lines += [f"seed {s}: {line}" for line in budget_notes(r["methods"], budget)]
    for cml_name, g in agg.get("gaps", {}).items():
        if not g:
            continue
        lines += ["", f"{cml_name} minus the MAML family, {W}-way {K}-shot accuracy, "
                  f"paired by seed (percentage points, mean ± 95 % CI over seeds):"]
        for b, d in g.items():
            half = "" if d["ci95"] is None else f" ± {100 * d['ci95']:.1f}"
            label = {"best": "best of them",
                     "best_validation": "best on validation"}.get(b, b)
            per = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"])
            lines.append(f"  {label:<20}{100 * d['mean']:+.1f}{half}   (per seed: {per})")
    return "\n".join(lines)


@reads_results("omniglot.plot_seeds", "the aggregate of an omniglot --seeds run", arg=1, name="agg")
def plot_seeds(path, agg):
    """``seeds.png``: meta-validation accuracy against meta-training wall time (mean and
    95 % CI band over seeds) and the final 1-shot accuracies (mean ± CI over seeds, one
    dot per seed)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from .. import plotting
    from .seeds import ci95

    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(13, 5.2))
        ax, bx = fig.subplots(1, 2)
        for name, runs in agg["history"].items():
            n = min(len(r["step"]) for r in runs)
            color = COLORS.get(name)
            if n < 2:
                continue
            y = 100 * np.array([r["meta_val_accuracy"][:n] for r in runs])
            t = np.array([r["time_s"][:n] for r in runs]).mean(axis=0)
            st = [ci95(col) for col in y.T]
            mean = np.array([a for a, _ in st])
            half = np.nan_to_num(np.array([h for _, h in st]))
            ax.plot(t, mean, "o-", ms=3, color=color, label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(t, mean - half, mean + half, color=color, alpha=0.2)
        ax.set_xlabel("wall time of meta-training (s), mean over seeds")
        ax.set_ylabel("meta-validation accuracy (%)")
        ax.set_title("Meta-validation curves across seeds (mean, 95 % CI)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        names = list(agg["methods"])
        for i, name in enumerate(names):
            m = agg["methods"][name]
            color = COLORS.get(name, "C9")
            half = m["accuracy_ci95"] or 0.0
            bx.errorbar(100 * m["accuracy"], i, xerr=100 * half, fmt="s", color=color,
                        capsize=4)
            bx.plot(100 * np.array(m["accuracy_per_seed"]), [i] * m["n_seeds"], "o",
                    mfc="none", color=color, alpha=0.7)
        bx.set_yticks(range(len(names)), names)
        fam = (agg.get("config") or {}).get("family", {})
        if fam.get("ways"):
            bx.axvline(100.0 / fam["ways"], color="k", ls=":", lw=1, label="chance")
            bx.legend(fontsize=8)
        bx.set_xlabel(f"{fam.get('ways')}-way {fam.get('shots')}-shot test accuracy (%): "
                      "mean ± 95 % CI over seeds, ○ per seed")
        bx.set_title("Selected meta-parameters, across seeds")
        bx.invert_yaxis()
        fig.tight_layout()
        save_figure(fig, Path(path))


# ---------------------------------------------------------------------- per alphabet
#: The non-meta references: no gap of CML is taken against them in :func:`per_alphabet`.
REFERENCES = ("pixel_nn", "cml_untrained", "untrained")
#: Stream of the per-alphabet tasks (:func:`per_alphabet`), apart from the run's
#: meta-training, validation and test streams; ``step`` = the alphabet's index.
ALPHABETS = 4


def _selected_baseline(cfg, name, path, summary, fams, trainer):
    """The meta-parameters a finished run selected for baseline ``name``, from its
    checkpoint ``path``, after checking that the checkpoint is that run's: its whole
    fingerprint that of the training ``cfg`` builds (method, initial weights, task
    family, optimiser, meta-batch, seed, pieces, averaging, penalty, evaluation cadence
    and tasks: :func:`~neuro_meta.baselines.train_baseline`'s own check of a resume),
    and the meta-step count and selected step of its ``results.json`` ``summary``.
    (The finished training is resumed with no meta-step left: nothing is trained,
    evaluated or written.)"""
    from .. import checkpoint as ckpt

    saved = ckpt.load(path)
    if not isinstance(saved, dict) or saved.get("run") != "train_baseline" or not all(
            k in saved for k in ("step", "history", "best", "fingerprint")) \
            or saved["best"] is None or not isinstance(saved["step"], int) or \
            not isinstance(saved["history"], dict) or not saved["history"].get("step"):
        raise ckpt.CheckpointError(f"{path}: not a finished train_baseline checkpoint "
                                   "(missing run, step, history, fingerprint or best)")
    steps = saved["history"]["step"]
    if steps[-1] != saved["step"]:
        raise ckpt.CheckpointError(f"{path}: not a finished train_baseline checkpoint "
                                   f"(meta-step {saved['step']} was not evaluated)")
    method, args, kw = _baseline_training(cfg, name, fams, trainer)
    if saved["step"] > args[3]:
        raise ckpt.CheckpointError(f"{path}: not the checkpoint of the run in "
                                   f"results.json (meta-step {saved['step']} beyond its "
                                   f"{args[3]} steps)")
    params, hist = bl.train_baseline(*args[:3], saved["step"], **kw, progress=False,
                                     checkpoint=path, resume=True)
    if (hist["meta_steps"], hist["selected"]["step"]) != (summary.get("meta_steps"),
                                                          summary.get("selected_step")):
        raise ckpt.CheckpointError(
            f"{path}: not the checkpoint of the run in results.json (meta-step "
            f"{hist['meta_steps']} / selected step {hist['selected']['step']} against "
            f"{summary.get('meta_steps')} / {summary.get('selected_step')})")
    return method, params


def _selected_cml(cfg, name, path, summary):
    """(network, learner) a finished run selected for CML method ``name``: the trainer
    built from ``cfg`` restores its checkpoint (configuration checked as for a resume),
    whose meta-step count and selected step must be those of ``summary``."""
    from ..checkpoint import CheckpointError

    learner, trainer = build_cml(cfg, families(cfg), model=CML_METHODS.get(name, "complex"))
    if name == "cml_untrained":
        return trainer.net, learner
    hist = trainer.restore(path)
    if (hist.meta_steps, hist.selected["step"]) != (summary.get("meta_steps"),
                                                    summary.get("selected_step")):
        raise CheckpointError(
            f"{path}: not the checkpoint of the run in results.json (meta-step "
            f"{hist.meta_steps} / selected step {hist.selected['step']} against "
            f"{summary.get('meta_steps')} / {summary.get('selected_step')})")
    return trainer.net, learner


def _read_results(out, owner, attr="out_dir"):
    import json

    path = out / "results.json"
    if not path.is_file():
        seeds = sorted(p.name for p in out.glob("seed_*") if (p / "results.json").is_file())
        hint = (f"; its {', '.join(seeds)} are runs of their own" if seeds else "")
        raise ValidationError(f"{owner}: {attr}: must be the folder of a finished "
                              f"`neuro-meta run omniglot` (with results.json){hint} "
                              f"(got {str(out)!r})")
    try:
        res = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValidationError(f"{owner}: {path}: not readable JSON ({err})") from None
    if not isinstance(res, dict) or not isinstance(res.get("config"), dict) or \
            res["config"].get("experiment") != "omniglot" or \
            not isinstance(res.get("methods"), dict):
        raise ValidationError(f"{owner}: {path}: not the results of an omniglot run "
                              "(needs config.experiment = omniglot and methods)")
    bad = next((k for k, v in res["methods"].items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise ValidationError(f"{owner}: {path}: methods.{bad}: must be a method's summary "
                              f"(a mapping) (got {type(res['methods'][bad]).__name__})")
    # errors in the run's configuration name this file, not the YAML the run was made from
    res["config"] = dict(res["config"], _file=f"{path} (its config)")
    return res


def _check_progress_executor(progress, executor, owner):
    """Refuse a ``progress`` that is not a bool and an ``executor`` that is neither
    None, ``"serial"`` nor an object with a ``submit`` method (compared safely: a numpy
    array is named, not compared)."""
    if not isinstance(progress, bool):
        P.fail(owner, "progress", "must be True or False", repr(progress))
    if executor is not None and not (isinstance(executor, str) and executor == "serial") \
            and (isinstance(executor, str) or not callable(getattr(executor, "submit", None))):
        P.fail(owner, "executor", "must be None, 'serial', or an executor (e.g. a process "
               "pool or a Dask client)", repr(executor) if isinstance(executor, str)
               else type(executor).__name__)


def _check_seed_runs(owner, runs):
    """The seeds of one ``--seeds`` run, ``[(seed or None, folder, config, method
    names)]``: each folder's configuration has its folder's seed, and every seed has the
    first's methods and, apart from ``meta.seed``, its configuration (a one-seed run,
    seed None, is not checked)."""
    first = None
    for k, d, cfg, names in runs:
        if k is None:
            continue
        where = d / "results.json"
        if cfg["meta"]["seed"] != k:
            raise ValidationError(f"{owner}: {where}: config.meta.seed: must be {k}, the "
                                  f"seed of its folder (got {cfg['meta']['seed']!r})")
        same = (list(names), _without_seed(cfg))
        if first is None:
            first = (k, same)
        elif same[0] != first[1][0]:
            raise ValidationError(
                f"{owner}: {where}: methods: must be those of seed_{first[0]}, the seeds "
                f"of one --seeds run (got {', '.join(same[0])} against "
                f"{', '.join(first[1][0])})")
        elif same[1] != first[1][1]:
            raise ValidationError(
                f"{owner}: {where}: config: must be that of seed_{first[0]} apart from "
                "meta.seed, the seeds of one --seeds run")


def per_alphabet(out_dir, n_tasks=400, methods=None, progress=True, executor=None):
    """Where a finished run's methods win and lose: the meta-parameters each method
    selected (read from ``out_dir``'s checkpoints, checked against its
    ``results.json``), scored on ``n_tasks`` N-way K-shot tasks drawn from **one
    alphabet at a time** -- each of the 8 background alphabets, the meta-training ones
    included (their tasks reuse classes seen in meta-training: a measure of fit, not of
    generalisation) -- with the run's N, K, queries and rotations. Every method sees the
    same tasks (``task_rng(seed, ALPHABETS, alphabet index)``), so CML minus each
    meta-learning baseline (the MAML family, and WarpGrad's if the run has it; not
    ``pixel_nn`` or the untrained networks) is paired over them. A diagnostic of a
    finished run: nothing is
    selected by it.

    ``out_dir`` is the folder of ``neuro-meta run omniglot`` (one seed) or of
    ``--seeds`` (every ``seed_<k>`` is scored in turn; the numbers across seeds are the
    mean ± 95 % CI over seeds, Student's t, and the gaps are paired by seed).
    ``methods``: a subset of the run's methods (default: all of them, ``pixel_nn`` and
    ``cml_untrained`` included). ``executor``: as for :func:`run` (None: the tasks
    spread over ``compare.workers`` processes; ``"serial"``: this process only; the
    same numbers either way).

    Writes ``per_alphabet.json`` and ``per_alphabet.png`` into ``out_dir`` and returns
    ``{"alphabets": [{"name", "split", "characters"}], "n_tasks", "ways", "shots",
    "seeds", "methods": {name: {alphabet: {"accuracy", "ci95"}}}, "gaps": {cml:
    {baseline: {alphabet: {"mean", "ci95"}}}}}`` (accuracies as fractions; 95 % CI,
    Student's t: over tasks for one seed, over seeds for several).
    """
    O = "omniglot.per_alphabet"
    if not isinstance(out_dir, (str, os.PathLike)):
        P.fail(O, "out_dir", "must be a path (str or os.PathLike)", type(out_dir).__name__)
    out = Path(out_dir)
    n_tasks = P.integer(n_tasks, O, "n_tasks", low=2)
    _check_progress_executor(progress, executor, O)
    res = _read_results(out, O)
    seeds = res.get("seeds")
    dirs = _seed_dirs(out, res, O)
    # every seed's folder, results.json and checkpoints checked before any scoring
    runs = {d: _selected_models(d, methods, O, _folder(k)) for k, d in dirs}
    _check_seed_runs(O, [(k, d, runs[d][0], list(runs[d][1])) for k, d in dirs])
    scored = {d: _score_alphabets(cfg, models, n_tasks, progress, executor)
              for d, (cfg, models) in runs.items()}
    if seeds is None:
        agg = scored[out]
    else:           # written only when every seed is scored and aggregated: never a
        agg = (_aggregate_alphabets(list(scored.values()), seeds) if len(seeds) > 1
               else scored[out / f"seed_{seeds[0]}"])   # one seed: CI over its tasks
        for d, r in scored.items():                     # mixture of runs
            write_json(d / "per_alphabet.json", r)
            plot_alphabets(d / "per_alphabet.png", r)
    write_json(out / "per_alphabet.json", agg)
    plot_alphabets(out / "per_alphabet.png", agg)
    return agg


def combine(run_dirs, out_dir, curves="time"):
    """One results table from runs made side by side, each with a subset of the methods
    (``neuro-meta run omniglot_long --methods cml`` and ``... --methods maml``, one
    process each): the methods' summaries and learning curves put together, and CML
    minus the MAML family **paired over the test tasks** (:func:`task_gaps`), which no
    single run of the pair can give.

    ``run_dirs``: two or more folders of finished one-seed runs whose configurations are
    the same but for ``methods`` (same tasks, budgets, evaluations; refused otherwise,
    naming the first setting that differs; another ``meta.seed`` is another seed of the
    comparison, below), each adding a method; a method in more than one run must have
    the same per-task accuracies in each (``pixel_nn``, which every run scores, checks
    that the runs' test tasks are the same). Writes, into
    ``out_dir`` (a folder of its own, none of the runs'): ``results.json`` (with
    ``combined_from``: the runs' folders), ``omniglot.png``, and a copy of each method's
    checkpoint, so that ``neuro-meta alphabets`` / ``adaptation`` score the methods of
    the combined folder side by side. Returns the results. Nothing is trained again
    and no meta-learner scored again; pixel nearest neighbour (about a second) is scored
    again on the test tasks the configuration of (each seed's) first run draws, and must
    give the per-task accuracies its ``results.json`` holds (checking the runs against
    the data, not only against each other).

    Folders of ``--seeds`` runs (``run omniglot --seeds 0,1,2 --methods cml`` and
    ``... --methods maml``) are combined seed by seed (the same seeds in every run) into
    ``out_dir/seed_<k>``, then aggregated as a ``--seeds`` run is
    (:func:`aggregate_seeds`: mean ± 95 % CI over seeds, the gaps paired by seed) into
    ``out_dir/results.json`` and ``seeds.png``; returns the aggregate. So are one-seed
    runs of several seeds (``meta.seed``; e.g. ``long_cml_0 long_maml_0 long_cml_1
    long_maml_1``, in any order, or earlier combinations ``long_0 long_1``): grouped by
    seed, each seed's runs combined as above, and every seed must have the same methods
    and, apart from ``meta.seed`` and ``methods``, the same configuration. A ``--seeds``
    folder beside runs of other seeds (one-seed runs, or ``--seeds`` folders of other
    seeds) counts as its ``seed_<k>`` folders, each a one-seed run (named
    ``run_dirs[i]/seed_<k>`` in messages): ``combine([long_seeds, long_4], out)`` adds
    seed 4 to a combination of seeds 0-3."""
    O = "omniglot.combine"
    P.choice(curves, O, "curves", ("time", "steps"))
    if isinstance(run_dirs, (str, bytes, os.PathLike)) or not hasattr(run_dirs, "__iter__"):
        P.fail(O, "run_dirs", "must be a list of two or more run folders",
               type(run_dirs).__name__)
    run_dirs = list(run_dirs)
    for i, d in enumerate(run_dirs):
        if not isinstance(d, (str, os.PathLike)):
            P.fail(O, f"run_dirs[{i}]", "must be a path (str or os.PathLike)",
                   type(d).__name__)
    if len(run_dirs) < 2:
        P.fail(O, "run_dirs", "must hold two or more run folders", str(len(run_dirs)))
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        P.fail(O, "out_dir", "must be a folder's path (str or os.PathLike)",
               repr(out_dir) if isinstance(out_dir, str) else type(out_dir).__name__)
    dirs = [Path(d) for d in run_dirs]
    out = Path(out_dir)
    labels = [f"run_dirs[{i}]" for i in range(len(dirs))]
    real = _distinct(O, dirs, labels)
    if out.resolve() in real:
        P.fail(O, "out_dir", "must be a folder of its own, not one of the runs'",
               repr(str(out_dir)))
    if any(out.resolve() in d.parents for d in real):
        P.fail(O, "out_dir", "must not hold the runs (it would be replaced)",
               repr(str(out_dir)))
    given = list(dirs)
    tops, seeds, kinds = _read_runs(O, dirs, labels)
    if "--seeds run" in kinds and any(
            kinds[i] != kinds[0] or set(seeds[i]) != set(seeds[0]) for i in range(len(dirs))):
        # a --seeds folder beside runs of other seeds (one-seed runs, or --seeds runs of
        # other seeds): its seed_<k> folders are one-seed runs of their own, combined
        # across the seeds below (a seed added to a --seeds comparison)
        dirs, labels = _seed_folders(dirs, labels, seeds)
        real = _distinct(O, dirs, labels)
        tops, seeds, kinds = _read_runs(O, dirs, labels)
    # out_dir is none of the folders read (a --seeds folder's seed_<k> folders too) and
    # inside none of them: replacing it must not touch a run
    o = out.resolve()
    for folder in {f.resolve() for s in seeds for f in s.values()} | set(real):
        if o == folder or folder in o.parents:
            P.fail(O, "out_dir", f"must be a folder of its own, outside the runs' folders "
                   f"(one is {folder})", repr(str(out_dir)))
    for i in range(1, len(dirs)):
        if kinds[i] != kinds[0] or set(seeds[i]) != set(seeds[0]):
            raise ValidationError(
                f"{O}: {labels[i]}: must be a {kinds[0]} with the seeds of {dirs[0]} "
                f"({tops[0].get('seeds') or 'one seed'}) (got {str(dirs[i])!r}: a "
                f"{kinds[i]}, seeds {tops[i].get('seeds') or 'one'})")
    # every run (every seed's) read and checked, its checkpoints too, before anything
    # is written; then everything is written into a new folder beside out_dir, which
    # replaces it whole
    per = []
    run_seeds = [_run_seed(r, O, labels[i]) for i, r in enumerate(tops)]
    if None in seeds[0] and len(set(run_seeds)) > 1:
        # one-seed runs of several seeds: combined seed by seed, then across the seeds
        # (the seeds checked against each other first, before any checkpoint is read)
        _check_across_seeds(O, tops, run_seeds, labels)
        for k in sorted(set(run_seeds)):
            runs = [(labels[i], dirs[i], *_one_seed_results(dirs[i], O, labels[i]))
                    for i in range(len(dirs)) if run_seeds[i] == k]
            per.append((k, _combined(O, runs, f" (seed {k})")))
        per = _in_first_seed_order(per)
    else:
        for k in seeds[0]:
            where = "" if k is None else f" (seed {k})"
            runs = [(labels[i], s[k], *_one_seed_results(s[k], O, f"{labels[i]}{where}"))
                    for i, s in enumerate(seeds)]
            per.append((k, _combined(O, runs, where)))
    tmp = _fresh_output(O, out)
    try:
        if per[0][0] is None:
            result = _write_combined(per[0][1], tmp, curves)
        else:
            done = [_write_combined(c, tmp / f"seed_{k}", curves) for k, c in per]
            result = aggregate_seeds([k for k, _ in per], done)
            result["combined_from"] = [str(d) for d in given]
            write_results(tmp / "results.json", result)
            plot_seeds(tmp / "seeds.png", result)
        _replace_output(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _distinct(O, dirs, labels):
    """The run folders ``dirs`` resolved, each another folder than those before it
    (refused otherwise, naming it by its label)."""
    real = [d.resolve() for d in dirs]
    for i, d in enumerate(real):
        if d in real[:i]:
            P.fail(O, labels[i], "must be another run than the ones before it",
                   repr(str(dirs[i])))
    return real


def _read_runs(O, dirs, labels):
    """``(results, {seed: folder} per run, kinds)`` of the runs ``dirs`` (``labels``:
    how messages name them)."""
    tops = [_read_results(d, O, labels[i]) for i, d in enumerate(dirs)]
    seeds = [dict(_seed_dirs(d, r, O)) for d, r in zip(dirs, tops)]
    kinds = ["--seeds run" if r.get("seeds") is not None else "one-seed run" for r in tops]
    return tops, seeds, kinds


def _seed_folders(dirs, labels, seeds):
    """``(folders, labels)``: every ``--seeds`` run of ``dirs`` replaced by its
    ``seed_<k>`` folders (one-seed runs; labelled ``run_dirs[i]/seed_<k>``), the
    one-seed runs kept."""
    out, names = [], []
    for d, name, s in zip(dirs, labels, seeds):
        if None in s:
            out.append(d)
            names.append(name)
            continue
        for k, folder in s.items():
            out.append(folder)
            names.append(f"{name}/seed_{k}")
    return out, names


def _run_seed(res, O, attr):
    """A one-seed run's ``meta.seed`` (a whole number >= 0, refused otherwise, naming
    ``O`` and ``attr``); None for a ``--seeds`` run's folder."""
    if res.get("seeds") is not None:
        return None
    k = (res["config"].get("meta") or {}).get("seed")
    if type(k) is not int or k < 0:
        raise ValidationError(f"{O}: {attr}: config.meta.seed: must be a whole number >= 0 "
                              f"(got {k!r})")
    return k


def _check_across_seeds(O, tops, run_seeds, labels):
    """One-seed runs of several seeds (``tops``: their results, ``run_seeds``: their
    seeds): every seed must have the same methods and, apart from ``meta.seed`` and
    ``methods``, the same configuration as the first seed -- the seeds of one
    comparison, as those of a ``--seeds`` run (each seed's runs are checked against
    each other by :func:`_combined`)."""
    groups = {}
    for i, k in enumerate(run_seeds):
        groups.setdefault(k, []).append(i)
    (k0, first), *others = sorted(groups.items())
    ref = _without_seed(_without_methods(tops[first[0]]["config"]))

    def group(idx):             # run_dirs[0, 1], or the folders' own labels
        if all(labels[j] == f"run_dirs[{j}]" for j in idx):
            return f"run_dirs{idx}"
        return "[" + ", ".join(labels[j] for j in idx) + "]"

    def names(idx):
        return list(dict.fromkeys(n for i in idx for n in tops[i]["methods"]))

    want = names(first)
    for k, idx in others:
        diff = _first_difference(ref, _without_seed(_without_methods(
            tops[idx[0]]["config"])))
        if diff is not None:
            key, a, b = diff
            raise ValidationError(
                f"{O}: {labels[idx[0]]} (seed {k}): must be a run of the configuration of "
                f"{labels[first[0]]} (seed {k0}) apart from meta.seed and methods (runs "
                f"of several seeds are the seeds of one comparison): {key} is {b!r} for "
                f"seed {k}, {a!r} for seed {k0}")
        got = names(idx)
        if set(got) != set(want):
            raise ValidationError(
                f"{O}: {labels[idx[0]]} (seed {k}): methods: must be those of seed {k0} "
                f"({group(first)}), every seed the same -- runs of another meta.seed are "
                f"combined as another seed (got {', '.join(got)} in {group(idx)} against "
                f"{', '.join(want)})")


def _in_first_seed_order(per):
    """``per`` (``[(seed, (results, checkpoints))]``, every seed with the same methods)
    with every seed's methods, learning curves and gaps in the first seed's order (the
    seeds of a ``--seeds`` folder list their methods alike)."""
    order = list(per[0][1][0]["methods"])
    out = []
    for k, (res, ckpts) in per:
        methods = {n: res["methods"][n] for n in order}
        res = dict(res, methods=methods, gaps=task_gaps(methods),
                   history={n: res["history"][n] for n in order if n in res["history"]},
                   config=dict(res["config"], methods=[
                       n for n in order if n in res["config"]["methods"]]))
        out.append((k, (res, ckpts)))
    return out


def _fresh_output(O, out):
    """A new, empty folder beside ``out`` for :func:`combine` to write into (``out``
    must be missing, empty or an earlier combination: refused otherwise)."""
    import tempfile

    if out.exists():
        if not out.is_dir():
            raise ValidationError(f"{O}: out_dir: must be a folder, not a file "
                                  f"(got {str(out)!r})")
        if any(out.iterdir()) and not _is_combination(out):
            raise ValidationError(
                f"{O}: out_dir: must be a new or empty folder, or one an earlier combine "
                f"wrote (it would be replaced) (got {str(out)!r}, which holds other files)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.combine-", dir=out.parent))


def _is_combination(folder):
    import json

    try:
        return "combined_from" in json.loads((folder / "results.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _replace_output(tmp, out):
    """Move the finished folder ``tmp`` to ``out`` (an empty or earlier ``out`` is
    removed first; a crash in between leaves the old folder renamed aside, never a mix)."""
    import shutil

    old = None
    if out.exists():
        old = out.parent / f"{tmp.name}.old"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _combined(O, runs, where=""):
    """``(results, checkpoints)`` of the one-seed runs ``[(label, folder, results,
    config)]`` put together (:func:`combine`), checked -- the checkpoints against their
    results as :func:`selected_models` does -- nothing written."""
    import warnings

    _, base_dir, base_res, base_cfg = runs[0]
    ref = _without_methods(base_cfg)
    for i, d, res, cfg in runs[1:]:
        diff = _first_difference(ref, _without_methods(cfg))
        if diff is not None:
            key, a, b = diff
            raise ValidationError(
                f"{O}: {i}{where}: must be a run of the same configuration as "
                f"{base_dir} but for its methods (a paired comparison needs the same seed, "
                f"tasks and budgets): {key} is {b!r} in {d}, {a!r} in {base_dir}")
    methods, history, source, ckpts = {}, {}, {}, []
    for i, d, res, cfg in runs:
        attr = f"{i}{where}"
        check_summaries(res["methods"], O, f"{attr}.methods")
        pix = (res["methods"].get("pixel_nn") or {}).get("accuracy_per_task")
        if pix is None:
            raise ValidationError(
                f"{O}: {attr}: methods.pixel_nn.accuracy_per_task: must be in {d}/"
                f"results.json, to check that the runs' test tasks are the same (a run of "
                f"an older neuro_meta: run it again) (got none)")
        if i == runs[0][0]:
            _check_test_tasks(O, attr, d, cfg, pix)
        before = len(methods)
        for name, summary in res["methods"].items():
            if name not in methods:
                methods[name], source[name] = summary, d
                if res.get("history", {}).get(name) is not None:
                    history[name] = res["history"][name]
                continue
            a, b = methods[name].get("accuracy_per_task"), summary.get("accuracy_per_task")
            if a == b and a is not None:
                continue
            if name == "pixel_nn":
                n = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
                raise ValidationError(
                    f"{O}: {attr}: must have the test tasks of {source[name]}: pixel_nn "
                    f"(no meta-learning) scores test task {n} {b[n] if n < len(b) else None}"
                    f" in {d}, {a[n] if n < len(a) else None} there (other data, or "
                    f"another neuro_meta version drew them)")
            raise ValidationError(
                f"{O}: {attr}: methods.{name}: must be in one run only, or identical: it is "
                f"also in {source[name]}, with other per-task accuracies (two trainings of "
                f"one method: combine runs of different methods)")
        if len(methods) == before:
            raise ValidationError(
                f"{O}: {attr}: must add a method to those of the runs before it "
                f"({', '.join(methods)}) (got {str(d)!r}, methods "
                f"{', '.join(res['methods'])})")
    for name, d in source.items():
        path = d / f"{name}_checkpoint.npz"
        if path.is_file():
            i, _, res, cfg = next(r for r in runs if r[1] == d)
            _load_selected(cfg, d, res, [name])     # (CheckpointError if not that run's)
            ckpts.append(path)
        elif name not in ("pixel_nn", "cml_untrained"):
            warnings.warn(f"{O}: {path}: missing; neuro-meta alphabets / adaptation cannot "
                          f"score {name} from the combined folder", stacklevel=user_stacklevel())
    cfg = {k: v for k, v in base_cfg.items() if not str(k).startswith("_")}
    cfg["methods"] = [n for n in methods if n not in ("pixel_nn", "cml_untrained")]
    results = {"methods": methods, "history": history, "config": cfg,
               "combined_from": [str(d) for _, d, _, _ in runs]}
    results["gaps"] = task_gaps(methods)
    check_results(results, O, "results")
    return results, ckpts


def _check_test_tasks(O, attr, folder, cfg, pix):
    """Score pixel nearest neighbour (no meta-learning, about a second) again on the test
    tasks ``cfg`` draws from the shipped data, and refuse a run whose ``results.json``
    says otherwise (``pix``: its pixel_nn per-task accuracies): its test tasks are not
    the ones its configuration gives this neuro_meta (other data, another version, or a
    results file edited by hand)."""
    final = final_cfg(cfg)
    tasks = families(cfg)["test"].sample(task_rng(cfg["meta"]["seed"], TEST, 1),
                                         final["test_tasks"])
    now = (1.0 - np.asarray(pixel_nn_errors(tasks), dtype=float)).tolist()
    if now != list(pix):
        n = next((t for t, (x, y) in enumerate(zip(now, pix)) if x != y),
                 min(len(now), len(pix)))
        raise ValidationError(
            f"{O}: {attr}: must hold the test tasks its configuration draws: pixel_nn (no "
            f"meta-learning), scored again on them, gets test task {n} "
            f"{now[n] if n < len(now) else None}, {folder}/results.json says "
            f"{pix[n] if n < len(pix) else None} ({len(now)} tasks now, {len(pix)} there; "
            f"other data, another neuro_meta version, or an edited results file)")


def _write_combined(combined, out, curves):
    """Write a :func:`_combined` run into the new folder ``out``: its checkpoints,
    ``results.json`` and ``omniglot.png``; returns the results."""
    import shutil

    results, ckpts = combined
    out.mkdir(parents=True, exist_ok=True)
    for path in ckpts:
        shutil.copyfile(path, out / path.name)
    write_results(out / "results.json", results)
    plot(out, results, curves)
    return results


def _without_methods(cfg):
    """``cfg`` without ``methods`` and the ``_``-keys: what runs of one comparison
    share."""
    return {k: v for k, v in cfg.items() if k != "methods" and not str(k).startswith("_")}


def _first_difference(a, b, where=""):
    """``(key path, value in a, value in b)`` of the first setting that differs between
    two configurations (mappings compared key by key), or None."""
    from collections.abc import Mapping

    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return (f"{where}{k}", a.get(k, "(absent)"), b.get(k, "(absent)"))
            d = _first_difference(a[k], b[k], f"{where}{k}.")
            if d is not None:
                return d
        return None
    return None if a == b else (where.rstrip("."), a, b)


def _without_seed(cfg):
    """``cfg`` without ``meta.seed`` and the ``_``-keys (where it was read from): what
    the seeds of one --seeds run share."""
    return {k: ({a: b for a, b in v.items() if a != "seed"} if k == "meta" else v)
            for k, v in cfg.items() if not str(k).startswith("_")}


def _one_seed_results(out, owner, attr="out_dir"):
    """``(results, config)`` of the one-seed run in folder ``out`` (a ``--seeds`` run's
    folder is refused, naming ``owner`` and ``attr``)."""
    res = _read_results(out, owner, attr)
    if res.get("seeds") is not None:
        raise ValidationError(f"{owner}: {attr}: must be one seed's folder, not that of a "
                              f"--seeds run (its seed_<k>) (got {str(out)!r})")
    return res, _cfg(res["config"])


def _method_subset(methods, have, owner, what):
    """The methods asked for -- ``None`` (all of ``have``), a comma-separated string or a
    list of names in ``have`` -- as a list without repeats; otherwise a
    :class:`~neuro_meta.errors.ValidationError` naming ``owner`` and ``what`` may be
    asked for."""
    if methods is None:         # (all of them, also none: the caller says what that means)
        return list(have)
    return P.name_list(methods, have, have, f"{owner}: methods", what)


def _load_selected(cfg, out, res, methods):
    """``{name: ("pixel_nn",) | ("cml", net, learner) | ("mlp", method, params)}``: the
    selected meta-parameters of ``methods`` of the run in ``out``, every checkpoint
    checked against ``results.json`` before any is used."""
    models, fams, trainer = {}, None, None
    for name in methods:
        path, summary = out / f"{name}_checkpoint.npz", res["methods"][name]
        if name == "pixel_nn":
            models[name] = ("pixel_nn",)
        elif name in CML_METHODS or name == "cml_untrained":
            models[name] = ("cml",) + _selected_cml(cfg, name, path, summary)
        else:
            if trainer is None:
                fams = families(cfg)
                trainer = build_cml(cfg, fams)[1]
            models[name] = ("mlp",) + _selected_baseline(cfg, name, path, summary, fams,
                                                         trainer)
    return models


def selected_models(out_dir, methods=None, seed=None):
    """``(config, {name: errors(task, executor=None)})``: the meta-parameters each method
    of a finished run (``out_dir``; of a ``--seeds`` run, the seed ``seed`` -- its
    ``seed_<seed>`` folder; ``seed`` may be given for a one-seed run too, and must then
    be its seed) selected, as functions giving the per-task
    error rate of a :class:`~neuro_meta.tasks.Task` batch after the method's learning on
    its shots. Read from the run's checkpoints, each checked against its
    ``results.json`` (the whole fingerprint of the training the configuration builds --
    for a baseline its method, initial weights, task family, optimiser, meta-batch,
    averaging, penalty, cadence and evaluation tasks; for CML as for a resume -- and the
    same meta-step count and selected step; otherwise
    :class:`~neuro_meta.checkpoint.CheckpointError`). ``methods``: a subset of the
    run's (a list or a comma-separated string; default: all of them)."""
    O = "omniglot.selected_models"
    if not isinstance(out_dir, (str, os.PathLike)):
        P.fail(O, "out_dir", "must be a path (str or os.PathLike)", type(out_dir).__name__)
    if seed is not None and (isinstance(seed, bool) or not isinstance(
            seed, (int, np.integer)) or seed < 0):
        P.fail(O, "seed", "must be None or a whole number >= 0", repr(seed))
    out = Path(out_dir)
    top = _read_results(out, O)
    folders = dict(_seed_dirs(out, top, O))
    if None in folders:                         # one seed's run
        own = (top["config"].get("meta") or {}).get("seed")
        if seed is not None and seed != own:
            P.fail(O, "seed", f"must be the run's seed ({own!r}, {out}) or None", repr(seed))
        return _selected_models(out, methods, O)
    if seed is None or int(seed) not in folders:
        P.fail(O, "seed", f"must be one of the seeds of the --seeds run {out} "
               f"({', '.join(map(str, folders))})", repr(seed))
    folder = folders[int(seed)]
    cfg, models = _selected_models(folder, methods, O, f" in seed_{int(seed)}")
    _check_seed_runs(O, [(int(seed), folder, cfg, [])])    # (its config has its seed)
    return cfg, models


def _selected_models(out, methods, owner, folder=""):
    """:func:`selected_models` for ``owner`` (``folder``: which seed's folder, for its
    messages)."""
    res, cfg = _one_seed_results(out, owner)
    have = list(res["methods"])
    methods = _method_subset(methods, have, owner,
                             f"the run's methods{folder} ({', '.join(have)})")
    models = {}
    for name, (kind, *model) in _load_selected(cfg, out, res, methods).items():
        if kind == "pixel_nn":
            models[name] = lambda t, executor=None: pixel_nn_errors(t)
        elif kind == "cml":
            models[name] = (lambda net, learner: lambda t, executor=None: cml_errors(
                net, learner, t, executor))(*model)
        else:
            models[name] = (lambda method, params: lambda t, executor=None: baseline_errors(
                method, params, t, executor))(*model)
    return cfg, models


def _score_alphabets(cfg, models, n_tasks, progress, executor):
    from .._progress import bar as tqdm

    from ..datasets import OMNIGLOT_SPLITS, omniglot

    methods = list(models)
    fam = section(cfg, "family", required=("ways", "shots", "queries", "rotations"))
    seed = cfg["meta"]["seed"]
    d = omniglot()
    split_of = {a: s for s, names in OMNIGLOT_SPLITS.items() for a in names}
    alphabets = [{"name": a, "split": split_of.get(a, "-"),
                  "characters": int(len(np.unique(d.labels[d.alphabet == i])))}
                 for i, a in enumerate(d.alphabet_names)]
    tasks = []
    for i, a in enumerate(d.alphabet_names):
        m = d.alphabet == i
        f = checked(cfg.get("_file", "<config>"), f"family (alphabet {a})",
                    FewShotClassification, d.images[m], d.labels[m], **fam)
        tasks.append(f.sample(task_rng(seed, ALPHABETS, i), n_tasks))
    acc = {name: [] for name in methods}
    with ExitStack() as stack:
        executor = _processes(stack, executor, compare_cfg(cfg)["workers"])
        bar = tqdm(total=len(methods) * len(tasks), desc="per alphabet",
                   disable=not progress)
        for name in methods:
            for t in tasks:
                acc[name].append(1.0 - np.asarray(models[name](t, executor), dtype=float))
                bar.update(1)
        bar.close()
    names = [a["name"] for a in alphabets]
    out_methods = {n: {a: dict(zip(("accuracy", "ci95"), _acc(1.0 - acc[n][i])))
                       for i, a in enumerate(names)} for n in methods}
    gaps = {}
    for c in (n for n in methods if n in CML_METHODS):
        gaps[c] = {}
        for b in (n for n in methods if n not in CML_METHODS and n not in REFERENCES):
            g = {}
            for i, a in enumerate(names):
                diff = acc[c][i] - acc[b][i]
                mean, sem = mean_sem(diff)
                g[a] = {"mean": mean, "ci95": t95(diff.size) * sem}
            gaps[c][b] = g
    return {"alphabets": alphabets, "n_tasks": n_tasks, "ways": fam["ways"],
            "shots": fam["shots"], "seeds": [seed], "methods": out_methods, "gaps": gaps}


def _aggregate_alphabets(runs, seeds):
    """Per-seed :func:`per_alphabet` results -> mean ± 95 % CI over seeds (Student's t);
    the gaps paired by seed; one seed: no interval (None)."""
    from .seeds import ci95 as _ci95

    def ci95(values):
        mean, half = _ci95(values)
        return {"mean": mean, "ci95": float(half) if np.isfinite(half) else None,
                "per_seed": [float(v) for v in values]}

    first = runs[0]
    names = [a["name"] for a in first["alphabets"]]
    methods = {}
    for n in first["methods"]:
        methods[n] = {}
        for a in names:
            r = ci95([run["methods"][n][a]["accuracy"] for run in runs])
            methods[n][a] = {"accuracy": r["mean"], "ci95": r["ci95"],
                             "per_seed": r["per_seed"]}
    gaps = {c: {b: {a: ci95([r["gaps"][c][b][a]["mean"] for r in runs]) for a in names}
                for b in first["gaps"][c]} for c in first["gaps"]}
    return {"alphabets": first["alphabets"], "n_tasks": first["n_tasks"],
            "ways": first["ways"], "shots": first["shots"], "seeds": list(seeds),
            "methods": methods, "gaps": gaps}


@reads_results("omniglot.alphabets_table", "the results of omniglot.per_alphabet",
               arg=0, name="res")
def alphabets_table(res):
    """The text table of :func:`per_alphabet`: accuracy per alphabet and method, then CML
    minus each baseline (percentage points, ± 95 % CI)."""
    alphabets = _by_split(res["alphabets"])
    names = [a["name"] for a in alphabets]
    methods = list(res["methods"])
    seeds = res["seeds"]
    over = (f"mean ± 95 % CI over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1
            else f"seed {seeds[0]}, ± 95 % CI over tasks")
    lines = [f"{res['ways']}-way {res['shots']}-shot accuracy (%) on {res['n_tasks']} "
             f"tasks of one alphabet at a time ({over}); train alphabets: classes seen "
             "in meta-training", ""]
    w = max(len(n) for n in names) + 14

    def cell(r, key):
        half = r.get("ci95")
        return f"{100 * r[key]:.1f}" + ("" if half is None else f" ± {100 * half:.1f}")

    lines.append(f"{'alphabet (split, characters)':<{w}}" +
                 "".join(f"{m:>15}" for m in methods))
    for a, name in zip(alphabets, names):
        label = f"{name} ({a['split']}, {a['characters']})"
        lines.append(f"{label:<{w}}" + "".join(
            f"{cell(res['methods'][m][name], 'accuracy'):>15}" for m in methods))
    for c, per in res["gaps"].items():
        if not per:
            continue
        lines += ["", f"{c} minus (percentage points, ± 95 % CI):"]
        lines.append(f"{'alphabet':<{w}}" + "".join(f"{b:>15}" for b in per))
        for name in names:
            lines.append(f"{name:<{w}}" + "".join(f"{_signed(per[b][name]):>15}"
                                                   for b in per))
    return "\n".join(lines)


def _by_split(alphabets):
    """The alphabets in the order meta-train, meta-validation, test (then any other)."""
    rank = {"train": 0, "validation": 1, "test": 2}
    return sorted(alphabets, key=lambda a: rank.get(a["split"], 3))


def _signed(r):
    half = r.get("ci95")
    return f"{100 * r['mean']:+.1f}" + ("" if half is None else f" ± {100 * half:.1f}")


@reads_results("omniglot.plot_alphabets", "the results of omniglot.per_alphabet", arg=1, name="res")
def plot_alphabets(path, res):
    """``per_alphabet.png``: accuracy per alphabet and method (± 95 % CI) and CML minus
    each baseline per alphabet (± 95 % CI); alphabets grouped by split."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from .. import plotting

    alphabets = _by_split(res["alphabets"])
    names = [a["name"] for a in alphabets]
    labels = [f"{a['name'].replace('_', ' ')}\n({a['split']})" for a in alphabets]
    methods = list(res["methods"])
    cmls = [c for c, per in res["gaps"].items() if per]
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(13, 5.2 * (1 + len(cmls))))
        axes = fig.subplots(1 + len(cmls), 1, squeeze=False)[:, 0]
        x = np.arange(len(names))
        width = 0.8 / len(methods)
        ax = axes[0]
        for j, m in enumerate(methods):
            r = res["methods"][m]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width,
                   [100 * r[a]["accuracy"] for a in names], width,
                   yerr=[100 * (r[a]["ci95"] or 0.0) for a in names], capsize=2,
                   color=COLORS.get(m, f"C{j}"), label=m,
                   alpha=0.45 if m == "cml_untrained" else 1.0,
                   hatch="//" if m == "cml_untrained" else None)
        ax.axhline(100.0 / res["ways"], color="k", ls=":", lw=1, label="chance")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(f"{res['ways']}-way {res['shots']}-shot accuracy (%)")
        ax.set_title(f"One alphabet at a time ({res['n_tasks']} tasks each, seeds "
                     f"{', '.join(map(str, res['seeds']))}; ± 95 % CI)")
        ax.legend(fontsize=8, ncol=min(len(methods) + 1, 5))
        for ax, c in zip(axes[1:], cmls):
            per = res["gaps"][c]
            wd = 0.8 / len(per)
            for j, b in enumerate(per):
                ax.bar(x + (j - (len(per) - 1) / 2) * wd,
                       [100 * per[b][a]["mean"] for a in names], wd,
                       yerr=[100 * (per[b][a]["ci95"] or 0.0) for a in names], capsize=2,
                       color=COLORS.get(b, f"C{j}"), label=f"{c} − {b}")
            ax.axhline(0.0, color="k", lw=1)
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel(f"{c} minus baseline (points)")
            ax.set_title(f"{c} minus each method, paired over the same tasks")
            ax.legend(fontsize=8, ncol=min(len(per), 5))
        fig.tight_layout()
        save_figure(fig, Path(path))


# ------------------------------------------------------------------ adaptation screen
#: Step of the VALIDATION stream whose tasks :func:`adaptation_screen` selects on: other
#: tasks of the validation alphabet than those of the run's model selection (step 0).
SCREEN = 1
#: Methods :func:`adaptation_screen` can screen: CML's complex synapses (λ scaled) and
#: the MLP methods whose test-time learning is SGD steps (step and count scaled).
SCREENED = ("cml", "maml", "fomaml", "anil", "anil_fo", "untrained")


def _grid(value, owner, attr, integer=False):
    """A non-empty list of distinct positive reals (integers >= 1 if ``integer``), from a
    list, a tuple or a comma-separated string."""
    given = value
    if isinstance(value, str):
        try:
            value = [float(v) if not integer else int(v) for v in value.split(",")
                     if v.strip()]
        except ValueError:
            P.fail(owner, attr, "must be a comma-separated list of "
                   + ("whole numbers >= 1" if integer else "positive numbers"), repr(given))
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        P.fail(owner, attr, "must be a non-empty list of " + ("whole numbers >= 1" if integer
                                                              else "positive numbers"),
               repr(given))
    out = [P.integer(v, owner, f"{attr}[{i}]", low=1) if integer else
           P.real(v, owner, f"{attr}[{i}]", low=0.0, low_open=True, high=1e6)
           for i, v in enumerate(value)]
    return list(dict.fromkeys(out))


def _folder(seed):
    """`` in seed_<k>`` for a ``--seeds`` run's seed, ``""`` for a one-seed run: where a
    message about a run's methods points."""
    return "" if seed is None else f" in seed_{seed}"


def _seed_dirs(out, res, owner):
    """``[(seed or None, folder)]``: ``out`` itself for one seed's run, every
    ``seed_<k>`` of a ``--seeds`` run (its seed list checked)."""
    seeds = res.get("seeds")
    if seeds is None:
        return [(None, out)]
    if not isinstance(seeds, list) or not seeds or not all(
            type(k) is int and k >= 0 for k in seeds) or len(set(seeds)) != len(seeds):
        raise ValidationError(f"{owner}: {out / 'results.json'}: seeds: must be a non-empty "
                              f"list of distinct whole numbers >= 0 (got {seeds!r})")
    return [(k, out / f"seed_{k}") for k in seeds]


def _screen_models(out, methods, owner, folder=""):
    """``(config, results, {name: ("cml", net, learner) | ("mlp", method, params)})``:
    the selected meta-parameters of a finished one-seed run's screenable methods, each
    checkpoint checked against its ``results.json`` as :func:`selected_models` does."""
    res, cfg = _one_seed_results(out, owner)
    can = [m for m in res["methods"] if m in SCREENED]
    methods = _method_subset(methods, can, owner, f"the run's screenable methods{folder} "
                             f"({', '.join(can) or 'none'}; screenable: {', '.join(SCREENED)})")
    if not methods:
        raise ValidationError(f"{owner}: {out / 'results.json'}: has no method the screen "
                              f"can scale ({', '.join(SCREENED)}) (got "
                              f"{', '.join(res['methods'])})")
    models = _load_selected(cfg, out, res, methods)
    return cfg, res, models


def _scaled_lam(net, hidden, readout):
    """``net`` with the λ of its hidden connections (weights and biases) times
    ``hidden`` and of its read-out times ``readout``."""
    th = dict(net.theta)
    for key in ("lam", "lam_bias"):
        if th.get(key) is not None:
            n = len(th[key])
            th[key] = [None if a is None else a * (readout if i == n - 1 else hidden)
                       for i, a in enumerate(th[key])]
    return net.with_theta(th)


def _screen_one(cfg, res, models, n_val, grid, progress, executor):
    from .._progress import bar as tqdm

    from ..errors import SimulationError

    fams = families(cfg)
    seed = cfg["meta"]["seed"]
    n_test = final_cfg(cfg)["test_tasks"]
    tasks = {"val": fams["validation"].sample(task_rng(seed, VALIDATION, SCREEN), n_val),
             "test": fams["test"].sample(task_rng(seed, TEST, 1), n_test)}
    plans = {}
    for name, (kind, a, b) in models.items():
        if kind == "cml":
            plans[name] = [dict(layers="all", hidden=h, readout=r)
                           for h in [1.0] + grid["hidden"] for r in [1.0] + grid["readout"]]
        else:
            steps = [a.inner_steps] + (grid["steps"] or [2 * a.inner_steps])
            layers = ("all",) if isinstance(a, bl.ANIL) else ("all", "readout")
            plans[name] = [dict(layers=lay, scale=s, inner_steps=n)
                           for lay in layers for s in [1.0] + grid["scales"] for n in steps]
        seen, plan = set(), []
        for p in plans[name]:                   # the trained setting first, no repeats
            key = tuple(sorted(p.items()))
            if key not in seen:
                seen.add(key)
                plan.append(p)
        plans[name] = plan
    out = {}
    with ExitStack() as stack:
        ex = _processes(stack, executor, compare_cfg(cfg)["workers"])
        bar = tqdm(total=sum(map(len, plans.values())), desc=f"adaptation screen, seed "
                   f"{seed}", disable=not progress)
        for name, (kind, a, b) in models.items():
            rows = []
            for p in plans[name]:
                row = dict(p)
                if kind == "cml":
                    net = _scaled_lam(a, p["hidden"], p["readout"])
                    fn = (lambda net: lambda t: cml_errors(net, b, t, ex))(net)
                else:
                    cls = bl.ANIL if p["layers"] == "readout" else None
                    lr = p["scale"] * a.inner_lr
                    m = (cls(inner_lr=lr, inner_steps=p["inner_steps"], loss=a.loss) if cls
                         else dataclasses.replace(a, inner_lr=lr,
                                                  inner_steps=p["inner_steps"]))
                    row["inner_lr"] = lr
                    fn = (lambda m: lambda t: baseline_errors(m, b, t, ex))(m)
                for which, t in tasks.items():      # each on its own: a divergence on
                    try:                                # a test task never decides a choice
                        acc, half = _acc(np.asarray(fn(t), dtype=float))
                        row[f"{which}_accuracy"], row[f"{which}_ci95"] = acc, half
                    except SimulationError:
                        row[f"{which}_accuracy"] = row[f"{which}_ci95"] = None
                row["diverged"] = row["val_accuracy"] is None
                row["test_diverged"] = row["test_accuracy"] is None
                rows.append(row)
                bar.update(1)
            def best(layers):   # the highest validation accuracy; ties: the earlier
                idx = [i for i, r in enumerate(rows) if r["layers"] == layers
                       and not r["diverged"]]
                return max(idx, key=lambda i: (rows[i]["val_accuracy"], -i)) if idx else None

            out[name] = {"settings": rows, "trained": 0, "chosen": best("all"),
                         "reported_accuracy": res["methods"][name].get("accuracy")}
            ro = [i for i, r in enumerate(rows) if r["layers"] == "readout"]
            if ro:          # its first setting: the trained step and step count
                out[name].update(readout_trained=ro[0], readout_chosen=best("readout"))
        bar.close()
    return {"seed": seed, "n_val": n_val, "n_test": n_test, "methods": out}


def adaptation_screen(out_dir, n_val=500, methods=None, hidden=(0.5, 2.0),
                      readout=(0.5, 2.0), scales=(0.5, 0.7, 1.4), steps=None, progress=True,
                      executor=None):
    """How strongly should a finished run's meta-learned learning processes adapt to a
    new task? The meta-parameters each method selected (read from ``out_dir``'s
    checkpoints, checked against its ``results.json``) are scored, with no retraining,
    under scaled test-time learning:

    * ``cml``: every λ of the hidden connections (weights and biases) times *h* in
      ``hidden`` and the read-out's times *r* in ``readout`` (each with 1 added), the
      learning process settled to the new fixed point -- *h* < 1: more plastic hidden
      layers;
    * ``maml``, ``fomaml``, ``anil``, ``anil_fo``, ``untrained``: the inner learning rate
      times each of ``scales`` (and 1) with the trained number of SGD steps and each of
      ``steps`` (default: twice the trained number); and the same grid with **only the
      read-out adapting** (the hidden layers' gradients dropped:
      :class:`~neuro_meta.baselines.ANIL`'s inner loop on the method's meta-parameters;
      not for ``anil``/``anil_fo``, whose inner loop is that already), which measures how much of a method's accuracy is its hidden
      layers' adaptation within a task.

    Every setting is scored on ``n_val`` tasks of the validation alphabet from a stream
    of their own (``task_rng(seed, VALIDATION, SCREEN)``, not the run's model-selection
    tasks) and, for the record, on the run's reported test tasks (``task_rng(seed, TEST,
    1)``, ``final.test_tasks`` of them: the trained setting reproduces the run's
    reported accuracy). The setting **chosen** is the one with the highest validation
    accuracy (ties: the trained one); a test accuracy never chooses. An inner loop that
    diverges on a validation task is recorded as diverged and not chosen; one that
    diverges only on a test task is recorded (``test_diverged``, test accuracy None)
    and may still be chosen.

    ``out_dir``: the folder of ``neuro-meta run omniglot`` (one seed), or of ``--seeds``
    (every ``seed_<k>`` in turn). ``methods``: a subset of the run's screenable methods
    (default: all of them). ``executor``: as for :func:`per_alphabet`. Writes
    ``adaptation.json`` and ``adaptation.png`` into ``out_dir`` (and, for ``--seeds``,
    each seed's into its folder); returns ``{"seeds", "n_val", "n_test", "ways",
    "shots", "runs": {seed: {method: {"settings": [{"layers", "hidden", "readout" |
    "scale", "inner_lr", "inner_steps", "val_accuracy", "val_ci95", "test_accuracy",
    "test_ci95", "diverged" (on a validation task), "test_diverged"}], "trained", "chosen", ("readout_trained",
    "readout_chosen",) "reported_accuracy"}}}}`` (indices into ``settings``; accuracies
    as fractions, ± 95 % CI over tasks, Student's t), and for two or more seeds
    ``"across_seeds": {method: {"chosen_minus_trained", "readout_minus_trained": {"mean",
    "ci95", "n"} | None}}``: test accuracy of the chosen setting, and of the read-out
    adapting alone at the trained step, minus the trained setting's, paired by seed
    (mean ± 95 % CI over seeds, Student's t). A ``--seeds`` folder's seeds must be one
    run: each folder's configuration has its seed, and all have the same screenable
    methods (or those asked for) and, apart from ``meta.seed``, the same configuration
    (checked before any scoring).
    """
    O = "omniglot.adaptation_screen"
    if not isinstance(out_dir, (str, os.PathLike)):
        P.fail(O, "out_dir", "must be a path (str or os.PathLike)", type(out_dir).__name__)
    out = Path(out_dir)
    n_val = P.integer(n_val, O, "n_val", low=2, high=100000)
    grid = {"hidden": _grid(hidden, O, "hidden"), "readout": _grid(readout, O, "readout"),
            "scales": _grid(scales, O, "scales"),
            "steps": None if steps is None else _grid(steps, O, "steps", integer=True)}
    if grid["steps"] is not None and max(grid["steps"]) > 1000:
        P.fail(O, "steps", "must be <= 1000 inner steps each", repr(max(grid["steps"])))
    _check_progress_executor(progress, executor, O)
    dirs = _seed_dirs(out, _read_results(out, O), O)
    loaded = [(k, d) + _screen_models(d, methods, O, _folder(k))        # all checked first
              for k, d in dirs]
    _check_seed_runs(O, [(k, d, cfg, list(models)) for k, d, cfg, _, models in loaded])
    fam = section(loaded[0][2], "family", required=("ways", "shots", "queries", "rotations"))
    runs, per_seed = {}, []
    for k, d, cfg, res, models in loaded:
        one = _screen_one(cfg, res, models, n_val, grid, progress, executor)
        runs[str(one["seed"])] = one["methods"]
        if k is not None:
            per_seed.append((d, {"seeds": [one["seed"]], "n_val": n_val,
                                 "n_test": one["n_test"], "ways": fam["ways"],
                                 "shots": fam["shots"],
                                 "runs": {str(one["seed"]): one["methods"]}}))
    for d, r1 in per_seed:      # written when every seed is scored: never a mixture
        write_json(d / "adaptation.json", r1)
        plot_adaptation(d / "adaptation.png", r1)
    result = {"seeds": [int(s) for s in runs], "n_val": n_val,
              "n_test": final_cfg(loaded[0][2])["test_tasks"], "ways": fam["ways"],
              "shots": fam["shots"], "runs": runs}
    if len(runs) > 1:
        result["across_seeds"] = _screen_across_seeds(runs)
    write_json(out / "adaptation.json", result)
    plot_adaptation(out / "adaptation.png", result)
    return result


def _screen_across_seeds(runs):
    """``{method: {"chosen_minus_trained", "readout_minus_trained"}}``: per method, the
    test accuracy of the setting chosen on validation minus the trained setting's, and
    of the read-out adapting alone (trained step) minus the trained setting's, paired
    by seed -- ``{"mean", "ci95", "n"}`` over the seeds where both are scored (95 % CI,
    Student's t), or None for fewer than two such seeds."""
    def mean_ci(v):
        if len(v) < 2:
            return None
        v = np.asarray(v, dtype=float)
        return {"mean": float(v.mean()),
                "ci95": float(t95(v.size) * v.std(ddof=1) / np.sqrt(v.size)),
                "n": int(v.size)}

    out = {}
    for name in dict.fromkeys(n for per in runs.values() for n in per):
        diffs = {"chosen": [], "readout_trained": []}
        for per in runs.values():
            r = per.get(name)
            if r is None or r["settings"][r["trained"]]["test_accuracy"] is None:
                continue
            t = r["settings"][r["trained"]]["test_accuracy"]
            for key, d in diffs.items():
                i = r.get(key)
                if i is not None and r["settings"][i]["test_accuracy"] is not None:
                    d.append(r["settings"][i]["test_accuracy"] - t)
        out[name] = {"chosen_minus_trained": mean_ci(diffs["chosen"]),
                     "readout_minus_trained": mean_ci(diffs["readout_trained"])}
    return out


def _setting_label(r):
    if "hidden" in r:
        return f"h={r['hidden']:g}, r={r['readout']:g}"
    return (f"lr {r['inner_lr']:.3g} × {r['inner_steps']}"
            + (" (read-out)" if r["layers"] == "readout" else ""))


def _pct(r, key):
    v = r.get(key)
    return "diverged" if v is None else f"{100 * v:.1f}"


@reads_results("omniglot.adaptation_table", "the results of omniglot.adaptation_screen",
               arg=0, name="res")
def adaptation_table(res):
    """The text table of :func:`adaptation_screen`: per method and seed the trained and
    the chosen (on validation) test-time learning, with their validation and test
    accuracy, the test accuracy over the whole grid, and for the MLP methods the same
    with the read-out adapting alone; for two or more seeds, the chosen setting's and
    the read-out alone's test accuracy minus the trained setting's, paired by seed
    (mean ± 95 % CI over seeds)."""
    if not res["runs"]:
        raise ValueError("runs: no screened method")
    lines = [f"{res['ways']}-way {res['shots']}-shot accuracy (%) under scaled test-time "
             f"learning: chosen on {res['n_val']} validation tasks (a stream of their own), "
             f"test on the run's {res['n_test']} reported test tasks (never used to choose)",
             "cml: hidden λ x h, read-out λ x r; MLP methods: inner learning rate x "
             "inner steps", ""]
    head = (f"{'method':<10}{'seed':>5}  {'trained: val / test':>21}  {'chosen':>22}  "
            f"{'chosen: val / test':>20}  {'test over grid':>15}")
    lines.append(head)
    ro = []
    for seed, per in res["runs"].items():
        for name, r in per.items():
            rows = r["settings"]
            t, c = rows[r["trained"]], rows[r["chosen"]] if r.get("chosen") is not None \
                else None
            tests = [x["test_accuracy"] for x in rows if x["layers"] == "all"
                     and x["test_accuracy"] is not None]
            span = f"{100 * min(tests):.1f}-{100 * max(tests):.1f}" if tests else "-"
            lines.append(
                f"{name:<10}{seed:>5}  {_pct(t, 'val_accuracy') + ' / ' + _pct(t, 'test_accuracy'):>21}"
                f"  {('trained' if r.get('chosen') == r['trained'] else _setting_label(c)) if c else '-':>22}"
                f"  {(_pct(c, 'val_accuracy') + ' / ' + _pct(c, 'test_accuracy')) if c else '-':>20}"
                f"  {span:>15}")
            if r.get("readout_trained") is not None:
                rt = rows[r["readout_trained"]] if r.get("readout_trained") is not None \
                    else None
                rc = rows[r["readout_chosen"]] if r.get("readout_chosen") is not None \
                    else None
                loss = (f"{100 * (rt['test_accuracy'] - t['test_accuracy']):+.1f}"
                        if rt and rt["test_accuracy"] is not None
                        and t["test_accuracy"] is not None else "-")
                ro.append(f"{name:<10}{seed:>5}  "
                          f"{(_pct(rt, 'val_accuracy') + ' / ' + _pct(rt, 'test_accuracy')) if rt else '-':>21}"
                          f"  {loss:>17}  {_setting_label(rc) if rc else '-':>22}"
                          f"  {(_pct(rc, 'val_accuracy') + ' / ' + _pct(rc, 'test_accuracy')) if rc else '-':>20}")
    if ro:
        lines += ["", "the read-out adapting alone (hidden layers frozen within a task):",
                  f"{'method':<10}{'seed':>5}  {'trained: val / test':>21}  "
                  f"{'test minus trained':>17}  {'chosen':>22}  {'chosen: val / test':>20}"]
        lines += ro
    across = res.get("across_seeds")
    if across:
        def diff(d):
            return "-" if d is None else (f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} "
                                          f"({d['n']} seeds)")
        lines += ["", "test accuracy minus the trained setting's, points, paired by seed "
                  "(mean ± 95 % CI over seeds, Student's t):",
                  f"{'method':<10}  {'chosen on validation':>28}  {'read-out alone':>28}"]
        lines += [f"{name:<10}  {diff(d['chosen_minus_trained']):>28}  "
                  f"{diff(d['readout_minus_trained']):>28}" for name, d in across.items()]
    return "\n".join(lines)


@reads_results("omniglot.plot_adaptation", "the results of omniglot.adaptation_screen",
               arg=1, name="res")
def plot_adaptation(path, res):
    """``adaptation.png``: validation (solid) and test (dashed) accuracy of every setting
    of the screen, one panel per method, one colour per seed; the trained setting
    boxed, the chosen one starred."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from .. import plotting

    names = list(dict.fromkeys(n for per in res["runs"].values() for n in per))
    if not names:
        raise ValueError("runs: no screened method")
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(12, 3.6 * len(names)))
        axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
        for ax, name in zip(axes, names):
            labels = None
            for j, (seed, per) in enumerate(res["runs"].items()):
                if name not in per:
                    continue
                r = per[name]
                rows = r["settings"]
                labels = labels or [_setting_label(x) for x in rows]
                x = np.arange(len(rows))
                groups = [np.array([i for i, s in enumerate(rows) if s["layers"] == lay])
                          for lay in ("all", "readout")]
                for key, ls in (("val_accuracy", "-"), ("test_accuracy", "--")):
                    y = np.array([np.nan if s[key] is None else 100 * s[key] for s in rows])
                    for g, grp in enumerate(g for g in groups if g.size):
                        ax.plot(x[grp], y[grp], ls, marker=".", color=f"C{j}",
                                label=None if g else f"seed {seed}, {key.split('_')[0]}")
                if groups[1].size and j == 0:
                    ax.axvline(groups[1][0] - 0.5, color="k", lw=0.8, ls=":")
                    ax.text(groups[1][0] - 0.4, 0.02, "read-out only", fontsize=8,
                            transform=ax.get_xaxis_transform())
                for idx, mk in ((r.get("trained"), "s"), (r.get("chosen"), "*"),
                                (r.get("readout_chosen"), "*")):
                    if idx is not None and rows[idx]["val_accuracy"] is not None:
                        ax.plot([idx], [100 * rows[idx]["val_accuracy"]], mk, ms=11,
                                mfc="none" if mk == "s" else f"C{j}", mec=f"C{j}")
            ax.set_xticks(np.arange(len(labels)), labels, rotation=60, ha="right",
                          fontsize=7)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{name}: test-time learning scaled (square: trained; star: "
                         "chosen on validation)")
            ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
        save_figure(fig, Path(path))
