"""``neuro-meta run sinusoid``: few-shot sinusoid regression, CML against baselines.

CML meta-trains ω and λ of a 1-40-40-1 complex-synapse rate network (inner learning:
the backprop learning process, settled phases); MAML, first-order MAML, Reptile and
iMAML meta-train the initial weights of a 1-40-40-1 MLP with inner SGD; ``untrained`` is
the MLP's inner SGD from its initial weights and ``cml_untrained`` the complex-synapse
network's inner learning from its initial ω, λ. Opt-in methods (``--methods``, not in the
default list): ``anil`` (MAML with a head-only inner loop, :class:`~neuro_meta.baselines.ANIL`)
and ``anil_fo`` (its first-order variant),
``warpgrad``, ``warpgrad_fo`` and ``warpgrad_nowarp`` (WarpGrad, its
first-order variant and the same algorithm with the warp layers frozen at the identity,
on the MLP with a linear warp layer after each hidden layer; :mod:`neuro_meta.warpgrad`)
and ``cml_warp`` (CML meta-learning ω, λ and the warp layers of the complex-synapse
network with warp layers, :class:`~neuro_meta.warp.WarpNetwork`; the ``cml_warp``
section). All methods see the same meta-training
tasks (``task_rng(seed, TRAIN, step)``), are selected on the same meta-validation tasks
(``task_rng(seed, VALIDATION)``) and are tested on the same held-out meta-test tasks
(``task_rng(seed, TEST)``).

Compute-fair comparison (the ``compare`` section): every trained method gets the same
wall-time budget of meta-training (``budget_s``, evaluations excluded; ``meta.steps`` and
``baselines.steps`` are caps), is evaluated every ``eval_every_s`` seconds of it, and keeps
the parameters of the evaluation with the lowest meta-validation MSE; its reported number
is the meta-test MSE at that point. ``targets``: the meta-test MSEs of the time-to-target
table. ``budget_s: null``: each method runs its steps, evaluated every ``eval_every``
steps (deterministic).

``results.json``: ``{"methods": {name: {"meta_test_mse", "sem", "meta_val_mse",
"selected_step", "selected_time_s", "meta_steps", "stop_reason", "budget_s",
"wall_time_s", "time_to_target", "schedule_steps"}}, "config": {...}, "history": {name: {"step",
"time_s", "meta_val_mse", "meta_test_mse"}}}``.
"""
import time
from pathlib import Path

import numpy as np

from .. import _params as P
from .. import baselines as bl
from .. import optim
from ..cml import CML
from ..errors import ValidationError, user_stacklevel
from ..families import Sinusoid
from ..io import budget_notes, reads_results, save_figure, write_json, write_results
from ..learning import Learner
from ..metatrain import MetaTrainer
from ..models import (check_run_args, checked, configure, did_you_mean, load_model, merge,
                      overlay, section)
from ..dual import DualSystem
from ..network import RateNetwork
from .. import warpgrad as wg
from ..warp import WarpNetwork
from ..synapses import ComplexSynapse
from ..initializers import Glorot

#: The methods a run meta-trains when none are named.
DEFAULT_METHODS = ("cml", "maml", "fomaml", "reptile", "imaml", "untrained")
#: Every method ``--methods`` accepts (ANIL, the WarpGrad family and ``cml_warp`` are
#: opt-in).
METHODS = DEFAULT_METHODS + ("anil", "anil_fo", "warpgrad", "warpgrad_fo", "warpgrad_nowarp",
                             "cml_warp")
#: The baselines that meta-train a warped MLP (:mod:`neuro_meta.warpgrad`).
WARPGRAD = ("warpgrad", "warpgrad_fo", "warpgrad_nowarp")
MODELS = ("complex", "dual", "readout")   # --model: complex synapses, dual system, readout-only


#: The sections an experiment file of the sinusoid experiment may have.
SECTIONS = ("family", "network", "learner", "cml", "meta", "baselines", "compare", "quick",
            "methods", "variants", "cml_warp")

#: The ``compare`` section of a file that has none: no budget, no targets (step-bound runs).
NO_BUDGET = {"budget_s": None, "eval_every_s": None, "targets": [], "val_tasks": None}


def _cfg(cfg, quick, seed, model="complex", overrides=()):
    """The effective configuration: the file (default: the shipped one of ``model``),
    the readout variant, ``quick``'s overrides, the user's ``--set`` overrides, the seed."""
    P.choice(model, "run sinusoid", "model", MODELS)
    if cfg is None:
        cfg = load_model("sinusoid" if model == "complex" else "sinusoid_dual")
    if "compare" not in cfg:
        cfg = {**cfg, "compare": dict(NO_BUDGET)}
    variants = cfg.get("variants")
    if variants is not None and not isinstance(variants, dict):
        raise ValidationError(f"{cfg.get('_file', '<config>')}: variants: must be a mapping "
                              f"of variant names to overlays (got {variants!r:.60})")
    if model == "readout":
        if not variants or "readout" not in variants:
            raise ValidationError(f"{cfg['_file']}: variants: missing key 'readout'")
        cfg = merge(cfg, overlay({**cfg, "variants.readout": variants["readout"]},
                                 "variants.readout"))
    return configure(cfg, SECTIONS, quick, overrides, seed)


def _complex_net(cfg, seed):
    where = cfg.get("_file", "<config>")
    n = section(cfg, "network", required=("sizes", "activation", "tau_neuron",
                                          "tau_synapse", "lam_init"))
    syn = checked(where, "network.lam_init", ComplexSynapse, omega=Glorot(), lam=n["lam_init"])
    return checked(where, "network", RateNetwork, n["sizes"], activation=n["activation"],
                   bias=True, tau_neuron=n["tau_neuron"], tau_synapse=n["tau_synapse"],
                   synapse=syn, seed=seed)


def _dual_net(cfg, seed):
    where = cfg.get("_file", "<config>")
    n = section(cfg, "network", required=("kind", "sizes", "activation", "fast", "lam",
                                          "tau_fast"), optional=("learn_lam",))
    return checked(where, "network", DualSystem, n["sizes"], activation=n["activation"],
                   fast=n["fast"], lam=n["lam"], learn_lam=n.get("learn_lam", False),
                   tau_fast=n["tau_fast"], seed=seed)


def is_dual(cfg):
    return isinstance(cfg.get("network"), dict) and cfg["network"].get("kind") == "dual"


def compare_cfg(cfg):
    """The ``compare`` section, checked: ``budget_s`` (s of meta-training per method, or
    None), ``eval_every_s`` (s between evaluations, or None), ``targets`` (meta-test
    MSEs, squared output units), ``val_tasks`` (number of meta-validation tasks, or
    None for ``meta.eval_tasks``) and ``average`` (optional: decay in [0, 1) of the
    moving average of every method's meta-parameters that is evaluated, selected and
    kept, or None, the default: the raw ones)."""
    where = cfg.get("_file", "<config>")
    c = section(cfg, "compare", required=("budget_s", "eval_every_s", "targets", "val_tasks"),
                optional=("average",))
    out = {k: checked(where, f"compare.{k}", P.real, c[k], "compare", k, low=0.0,
                      low_open=True, allow_none=True) for k in ("budget_s", "eval_every_s")}
    targets = c["targets"]
    if not isinstance(targets, list):
        raise ValidationError(f"{where}: compare.targets: must be a list of meta-test MSEs "
                              f"> 0 (got {targets!r})")
    out["targets"] = [checked(where, "compare.targets", P.real, t, "compare",
                              f"targets[{i}]", low=0.0, low_open=True)
                      for i, t in enumerate(targets)]
    out["val_tasks"] = checked(where, "compare.val_tasks", P.integer, c["val_tasks"],
                               "compare", "val_tasks", low=1, allow_none=True)
    out["average"] = checked(where, "compare.average", P.real, c.get("average"), "compare",
                             "average", low=0.0, high=1.0, high_open=True, allow_none=True)
    return out


def _warp_net(cfg, seed):
    """The complex-synapse network of ``network`` with a warp layer after each hidden
    layer (``cml_warp``)."""
    where = cfg.get("_file", "<config>")
    if is_dual(cfg):
        raise ValidationError(f"{where}: cml_warp: needs the complex-synapse network (the "
                              "network section of sinusoid.yaml), not the dual system")
    n = section(cfg, "network", required=("sizes", "activation", "tau_neuron",
                                          "tau_synapse", "lam_init"))
    if "cml_warp" in cfg:
        section(cfg, "cml_warp", optional=("learning_rate",))
    syn = checked(where, "network.lam_init", ComplexSynapse, omega=Glorot(), lam=n["lam_init"])
    return checked(where, "network", WarpNetwork, n["sizes"], activation=n["activation"],
                   bias=True, tau_synapse=n["tau_synapse"], synapse=syn, seed=seed)


def check_fair_executor(owner, executor, budget_s, methods, spread):
    """Refuse an executor under a wall-time budget when it would speed up some of the
    compared methods only (the ``spread`` ones, whose tasks it runs) and not the others:
    equal wall time would then not be equal compute."""
    if executor is None or budget_s is None:
        return
    fast = [m for m in methods if m in spread]
    slow = [m for m in methods if m not in spread]
    if fast and slow:
        raise ValidationError(
            f"{owner}.executor: an executor runs the tasks of {', '.join(fast)} on its "
            f"workers while {', '.join(slow)} run(s) in this process, so an equal "
            f"wall-time budget ({budget_s:g} s) would not be equal compute; compare "
            "without an executor, with --budget none (fixed step counts), or one method "
            f"at a time (got {type(executor).__name__})")


def build_cml(cfg, executor=None, warp=False):
    """(task family, :class:`~neuro_meta.MetaTrainer`) of CML on the configured network,
    or with ``warp=True`` on its version with warp layers (``cml_warp``: the same tasks,
    learner, CML and meta-training settings; ``cml_warp.learning_rate``, if given,
    replaces ``meta.learning_rate``)."""
    where = cfg.get("_file", "<config>")
    f = section(cfg, "family", required=("shots", "val"),
                optional=("amplitude", "phase", "x_range"))
    l_cfg = section(cfg, "learner", required=("rule",),
                    optional=("integrator", "dt", "tol", "max_duration", "presentation",
                              "substeps", "max_substeps", "settle"))
    c_cfg = section(cfg, "cml", required=("beta",),
                    optional=("estimator", "tol", "nudged_duration"))
    m = section(cfg, "meta", required=("steps", "meta_batch", "learning_rate", "clip",
                                       "eval_every", "eval_tasks", "seed"),
                optional=("lam_min", "omega_decay", "schedule"))
    omega_decay = checked(where, "meta.omega_decay", P.real, m.get("omega_decay", 0.0),
                          "meta", "omega_decay", low=0.0)
    fam = checked(where, "family", Sinusoid, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in f.items()})
    net = (_warp_net if warp else _dual_net if is_dual(cfg) else _complex_net)(cfg, m["seed"])
    probe = fam.sample(np.random.default_rng(0), 1)
    n_in, n_out = probe.x_train.shape[-1], probe.y_train.shape[-1]
    if (net.n_in, net.n_out) != (n_in, n_out):
        raise ValidationError(f"{where}: network.sizes: the tasks have {n_in} input(s) and "
                              f"{n_out} output(s); the network must start with {n_in} and "
                              f"end with {n_out} units (got {list(net.sizes)})")
    learner = checked(where, "learner", Learner, **l_cfg)
    cml = checked(where, "cml", CML, learner=learner, **c_cfg)
    lr_key, lr = "meta.learning_rate", m["learning_rate"]
    if warp and (cfg.get("cml_warp") or {}).get("learning_rate") is not None:
        lr_key, lr = "cml_warp.learning_rate", cfg["cml_warp"]["learning_rate"]
    opt = optim.chain(checked(where, "meta.clip", optim.clip_by_global_norm, m["clip"]),
                      checked(where, lr_key, optim.adam,
                              learning_rate(where, "meta", m, lr, lr_key,
                                            budget_setting(cfg))))
    comp = compare_cfg(cfg)
    trainer = checked(where, "meta", MetaTrainer, net, fam, cml, opt,
                      meta_batch=m["meta_batch"], seed=m["seed"], eval_tasks=m["eval_tasks"],
                      executor=executor, lam_min=m.get("lam_min", 0.0),
                      val_tasks=comp["val_tasks"], average=comp["average"],
                      omega_decay=omega_decay)
    for k in ("steps", "eval_every"):
        checked(where, f"meta.{k}", P.integer, m[k], "meta", k, low=1)
    return fam, trainer


#: The kinds of a ``schedule`` setting and their keys besides ``kind``.
SCHEDULES = {"constant": (), "cosine": ("steps", "end"),
             "piecewise": ("boundaries", "scales")}


def budget_setting(cfg):
    """``("compare.budget_s", seconds or None)`` of ``cfg``, for :func:`learning_rate`
    (the value as given: the ``compare`` section's reader checks it)."""
    comp = cfg.get("compare")
    return "compare.budget_s", comp.get("budget_s") if isinstance(comp, dict) else None


def learning_rate(where, name, sec, value=None, value_key=None, budget=True):
    """The learning rate of section ``name``'s meta-optimiser (``sec``: the section):
    ``value`` (default ``sec["learning_rate"]``), decayed by the meta-step as the
    section's optional ``schedule`` says -- absent, null or ``{kind: constant}``: the
    same at every step; ``{kind: cosine, steps: N, end: f}``: cosine decay to ``f`` times
    the rate at step N, then constant (:func:`neuro_meta.optim.cosine_decay`);
    ``steps: budget``: over as many meta-steps as the run's wall-time budget holds,
    measured by the trainer in the budget's first 5 % and re-fitted every 5 % after
    (``budget``: ``(key, seconds)`` of
    the run's budget, refused if None; None: refused, for a trainer that does not measure
    it; True: left to the trainer);
    ``{kind: piecewise, boundaries: [n1, ...], scales: [f1, ...]}``: multiplied by ``f1``
    from step n1 on, ... (:func:`neuro_meta.optim.piecewise_constant`). Errors name the
    file and key (``value_key``: the key of ``value``, default ``<name>.learning_rate``).
    The schedule is part of the optimiser's settings and so of a
    checkpoint's fingerprint."""
    value = sec["learning_rate"] if value is None else value
    spec = sec.get("schedule")
    if spec is None:
        return value
    key = f"{name}.schedule"
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValidationError(f"{where}: {key}: must be a mapping with a 'kind' ("
                              f"{', '.join(SCHEDULES)}) (got {spec!r:.60})")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in SCHEDULES:
        raise ValidationError(f"{where}: {key}.kind: must be one of {', '.join(SCHEDULES)}"
                              f"{did_you_mean(kind, SCHEDULES)} (got {kind!r:.40})")
    keys = SCHEDULES[kind]
    for k in spec:
        if k != "kind" and k not in keys:
            raise ValidationError(f"{where}: {key}.{k}: unknown key for kind {kind}"
                                  f"{did_you_mean(k, keys)} (known: kind"
                                  f"{''.join(', ' + x for x in keys)})")
    missing = [k for k in keys if k not in spec]
    if missing:
        raise ValidationError(f"{where}: {key}: kind {kind} needs {', '.join(missing)}")
    owner = f"{where}: {key}"
    lr_owner, lr_attr = (value_key or f"{name}.learning_rate").rsplit(".", 1)
    value = P.real(value, f"{where}: {lr_owner}", lr_attr, low=0.0, low_open=True)
    if kind == "constant":
        return value
    if kind == "cosine":
        steps = spec["steps"]
        if isinstance(steps, str) and steps == "budget":
            if budget is None:
                P.fail(owner, "steps", f"must be a number of meta-steps here ({name} does "
                       "not measure a wall-time budget to decay over)", repr(steps))
            if isinstance(budget, tuple) and budget[1] is None:
                P.fail(owner, "steps", f"can be budget only in a run with a wall-time "
                       f"budget ({budget[0]} is null): give a number of meta-steps",
                       repr(steps))
        elif isinstance(steps, str):
            P.fail(owner, "steps", "must be an integer >= 1 or budget", repr(steps))
        else:
            steps = P.integer(steps, owner, "steps", low=1)
        return optim.cosine_decay(value, steps, P.real(spec["end"], owner, "end", low=0.0,
                                                      high=1.0, low_open=True))
    bounds, scales = spec["boundaries"], spec["scales"]
    if not isinstance(bounds, list) or not bounds:
        P.fail(owner, "boundaries", "must be a non-empty list of meta-steps", P.shown(bounds))
    if not isinstance(scales, list) or len(scales) != len(bounds):
        P.fail(owner, "scales", f"must be a list of {len(bounds)} factor(s), one per "
               "boundary", P.shown(scales))
    bounds = [P.integer(x, owner, f"boundaries[{i}]", low=1) for i, x in enumerate(bounds)]
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        P.fail(owner, "boundaries", "must increase", bounds)
    scales = [P.real(x, owner, f"scales[{i}]", low=0.0, low_open=True)
              for i, x in enumerate(scales)]
    return checked(where, key, optim.piecewise_constant, value, bounds, scales)


def check_baseline_training(where, b, budget=True):
    """The ``baselines`` section's meta-training settings, checked before any method
    trains (named by file and key): ``steps``, ``meta_batch``, ``eval_every`` integers
    >= 1, ``learning_rate`` > 0, ``weight_decay`` >= 0 (optional), its ``schedule``
    (``budget``: the run's, as for :func:`learning_rate`)."""
    checked(where, "baselines.weight_decay", P.real, b.get("weight_decay", 0.0), "baselines",
            "weight_decay", low=0.0)
    for k in ("steps", "meta_batch", "eval_every"):
        checked(where, f"baselines.{k}", P.integer, b[k], "baselines", k, low=1)
    checked(where, "baselines.learning_rate", P.real, b["learning_rate"], "baselines",
            "learning_rate", low=0.0, low_open=True)
    learning_rate(where, "baselines", b, budget=budget)


def build_baseline(cfg, name):
    where = cfg.get("_file", "<config>")
    b = section(cfg, "baselines", required=("steps", "meta_batch", "learning_rate",
                                            "eval_every"),
                optional=("maml", "fomaml", "anil", "anil_fo", "reptile", "imaml", "untrained",
                          "weight_decay", "schedule") + WARPGRAD)
    check_baseline_training(where, b, budget_setting(cfg))
    kw = b.get(name) or {}
    if not isinstance(kw, dict):
        raise ValidationError(f"{where}: baselines.{name}: must be a mapping of the "
                              f"method's settings (got {kw!r:.60})")
    kw = dict(kw)
    cls = {"maml": bl.MAML, "fomaml": bl.MAML, "anil": bl.ANIL, "anil_fo": bl.ANIL,
           "reptile": bl.Reptile,
           "imaml": bl.IMAML, "untrained": bl.Untrained, "warpgrad": wg.WarpGrad,
           "warpgrad_fo": wg.WarpGrad, "warpgrad_nowarp": wg.WarpGrad}[name]
    import inspect

    known = [k for k in inspect.signature(cls).parameters
             if k not in ("first_order", "learn_warp")]
    for k in kw:
        if k not in known:
            raise ValidationError(f"{where}: baselines.{name}.{k}: unknown key"
                                  f"{did_you_mean(k, known)} (known: {', '.join(known)})")
    if name in ("fomaml", "anil_fo", "warpgrad_fo"):
        kw["first_order"] = True
    if name == "warpgrad_nowarp":
        kw["learn_warp"] = False
    return checked(where, f"baselines.{name}", cls, **kw), b


def parse_methods(methods, default=METHODS):
    return P.name_list(methods, METHODS, default, "run sinusoid.methods")


def run(out_dir, quick=False, seed=None, methods=None, cfg=None, progress=True,
        resume=False, executor=None, model="complex", overrides=(), curves="time"):
    """Meta-train the chosen methods; write ``results.json`` and plots to ``out_dir``.

    ``model``: the CML model -- ``"complex"`` (complex synapses, ``models/sinusoid.yaml``),
    ``"dual"`` (the dual system, ``models/sinusoid_dual.yaml``) or ``"readout"`` (its
    readout-only variant). The dual models also write ``fast_patterns.png``.
    ``overrides``: ``"KEY.PATH=VALUE"`` strings applied to the configuration (after
    ``quick``). ``curves``: x-axis of the learning curves, ``"time"`` (wall time of
    meta-training, the default: methods whose meta-steps cost differently compare by
    what they cost) or ``"steps"``.

    Every method meta-trains under the ``compare`` section's rules (the same wall-time
    budget, selection on the meta-validation tasks; see the module docstring).
    """
    P.choice(curves, "run sinusoid", "curves", ("time", "steps"))
    check_run_args("run sinusoid", out_dir, cfg, overrides, quick=quick, progress=progress,
                   resume=resume)
    cfg = _cfg(cfg, quick, seed, model, overrides)
    methods = parse_methods(methods, cfg.get("methods") or DEFAULT_METHODS)
    compare = compare_cfg(cfg)
    check_fair_executor("run sinusoid", executor, compare["budget_s"], methods,
                        ("cml", "cml_warp"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fam, trainer = build_cml(cfg, executor)
    warp_trainer = build_cml(cfg, executor, warp=True)[1] if "cml_warp" in methods else None
    for name in methods:            # every method's settings checked before any work
        if name not in ("cml", "cml_warp"):
            build_baseline(cfg, name)
    seed = cfg["meta"]["seed"]
    test_task = trainer.test_task
    partial_path = out / "partial.json"
    fingerprint = config_fingerprint(cfg)
    done = load_partial(partial_path, fingerprint) if resume else {}
    if resume:
        check_checkpoints(out, [m for m in methods if m not in done])
    if not resume:      # a fresh run: an older run's partial results must not be
        partial_path.unlink(missing_ok=True)    # resumed with this run's checkpoints
    results = {"methods": {}, "history": {}, "config": cfg}
    fits = {}
    x_plot = np.linspace(-5, 5, 200)[None, :, None]
    one = tuple(a[:1] for a in test_task.as_batch())
    trained = True          # whether `trainer` holds CML's meta-trained network
    for name in methods:
        if name in done:
            if name == "cml" and "cml_untrained" in done:
                results["methods"]["cml_untrained"] = done["cml_untrained"]["summary"]
                fits["cml_untrained"] = _cml_fit(trainer, one, x_plot)
            results["methods"][name] = done[name]["summary"]
            results["history"][name] = done[name]["history"]
            if name in ("cml", "cml_warp"):     # the plots need the selected networks
                tr = trainer if name == "cml" else warp_trainer
                ok = restore_trained(tr, out / f"{name}_checkpoint.npz",
                                     f"{name}'s fit in sinusoid.png"
                                     + (" and fast_patterns.png" if name == "cml"
                                        and is_dual(cfg) else ""), done[name]["summary"])
                if ok:
                    fits[name] = _cml_fit(tr, one, x_plot)
                elif name == "cml":
                    trained = False
            elif done[name].get("fit") is not None:         # a baseline's adapted fit
                fit = done[name]["fit"]
                if len(fit) != x_plot.shape[1]:
                    raise ValidationError(f"{partial_path}: {name}'s fit has {len(fit)} "
                                          f"points, not {x_plot.shape[1]}; move it aside or "
                                          "restart without --resume")
                fits[name] = np.array([np.nan if v is None else v for v in fit], dtype=float)
            elif name not in ("cml", "cml_warp"):   # written before fits were stored
                import warnings
                warnings.warn(f"{partial_path}: {name} finished without a stored fit "
                              "(partial.json from an older version), so its curve is left "
                              "out of sinusoid.png; its results stand",
                              stacklevel=user_stacklevel())
            continue
        if name == "cml":
            summary, h = _run_cml(trainer, cfg, compare, out, progress, resume, one, x_plot,
                                  results, fits)
            done["cml_untrained"] = {"summary": results["methods"]["cml_untrained"],
                                     "history": None}
        elif name == "cml_warp":
            summary, h = _run_cml(warp_trainer, cfg, compare, out, progress, resume, one,
                                  x_plot, results, fits, name="cml_warp")
        else:
            summary, h = _run_baseline(name, cfg, compare, fam, seed, trainer, progress, one,
                                       x_plot, fits, out, resume)
        results["methods"][name] = summary
        results["history"][name] = h
        done[name] = {"summary": summary, "history": h}
        if name not in ("cml", "cml_warp"):     # keep a baseline's fit for a resume (its
            #                                     checkpoint has parameters, not the fit)
            done[name]["fit"] = [float(v) if np.isfinite(v) else None for v in fits[name]]
        write_json(partial_path, {"fingerprint": fingerprint, "methods": done})
    write_results(out / "results.json", results)
    plot(out, results, one, x_plot, fits, test_task, curves)
    if is_dual(cfg) and "cml" in methods and trained:
        plot_fast_patterns(out, trainer, fam, seed)
    return results


def restore_trained(trainer, checkpoint, what, summary):
    """For a run resumed after a CML method had finished: load the meta-parameters it
    selected from its checkpoint into ``trainer`` (the plots need the trained network)
    and return True. If the checkpoint is gone, unreadable, or not the run whose
    ``summary`` partial.json holds (another meta-step count or selected step: e.g. a
    later run into the same folder that crashed), warn that ``what`` (its plots) is not
    redrawn, leave ``trainer`` as it was and return False -- the results stand."""
    import warnings

    from ..checkpoint import CheckpointError

    why = None
    if not Path(checkpoint).exists():
        why = "missing"
    else:
        before = trainer.net
        try:
            hist = trainer.restore(checkpoint)
        except CheckpointError as err:
            why = f"not the finished run's ({err})"
        else:
            if (hist.meta_steps, hist.selected["step"]) != (
                    summary.get("meta_steps"), summary.get("selected_step")):
                why = (f"from another run than partial.json's results (meta-step "
                       f"{hist.meta_steps}, selected step {hist.selected['step']}; the "
                       f"results say {summary.get('meta_steps')}, "
                       f"{summary.get('selected_step')})")
        if why is not None:
            trainer.net = before
    if why is None:
        return True
    warnings.warn(f"{checkpoint}: {why}, so the trained network is unknown to this resumed "
                  f"run; {what} not redrawn from it", stacklevel=user_stacklevel())
    return False


def config_fingerprint(cfg):
    """SHA-256 of the effective configuration (its ``_``-keys, which say where it came
    from, left out): a resumed run must have the same one."""
    import hashlib
    import json

    clean = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=repr).encode()).hexdigest()


def check_checkpoints(out, names):
    """Before a resumed run does any work: every checkpoint ``out/<name>_checkpoint.npz``
    of ``names`` (the methods still to run) that exists must be readable
    (:class:`~neuro_meta.checkpoint.CheckpointError` otherwise). Whether it belongs to
    this run's configuration is checked when its method starts; a damaged file is
    refused here, rather than after the methods before it have spent their budgets."""
    from .. import checkpoint as ckpt

    for name in names:
        path = Path(out) / f"{name}_checkpoint.npz"
        if path.exists():
            ckpt.load(path)


def load_partial(path, fingerprint):
    """The methods already finished by an interrupted run (``partial.json``), checked:
    its structure, and that the same effective configuration wrote it. A folder with
    neither that file nor a checkpoint has nothing to resume: a ``UserWarning`` says
    so (a mistyped ``--out`` would otherwise start afresh unnoticed)."""
    if not path.exists():
        if not any(path.parent.glob("*_checkpoint.npz")):
            import warnings

            warnings.warn(f"--resume: {path.parent} holds no partial results nor "
                          "checkpoints; starting afresh", UserWarning, stacklevel=user_stacklevel())
        return {}
    import json

    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValidationError(f"{path}: not valid JSON ({err}); move it aside or restart "
                              "without --resume") from None
    methods = saved.get("methods") if isinstance(saved, dict) else None
    def number(v):
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    ok = isinstance(methods, dict) and isinstance(saved.get("fingerprint"), str) and all(
        isinstance(m, dict) and isinstance(m.get("summary"), dict)
        and (m.get("history") is None or isinstance(m.get("history"), dict))
        and (m.get("fit") is None or (isinstance(m["fit"], list)
                                      and all(number(v) for v in m["fit"])))
        for m in methods.values())
    if not ok:
        raise ValidationError(f"{path}: not the partial results of a neuro-meta run (expected "
                              "{'fingerprint': ..., 'methods': {name: {'summary': {...}, "
                              "'history': {...}, optional 'fit': [numbers]}}}); move it aside or "
                              "restart without --resume")
    if saved["fingerprint"] != fingerprint:
        raise ValidationError(f"{path}: written by another configuration (seed, --quick, "
                              "--set, --budget or the file differ); resume with the "
                              "configuration that wrote it, or move it aside / restart without "
                              "--resume")
    return methods


def _budget_kw(compare):
    """The budget arguments of the trainers: the budget, and evaluations every
    ``eval_every_s`` seconds with a budget (without one, every ``eval_every`` steps)."""
    budget = compare["budget_s"]
    return {"budget_s": budget, "eval_every_s": None if budget is None
            else compare["eval_every_s"]}


def time_to_target(history, targets):
    """Per target meta-test MSE: the meta-training time (s) and meta-step of the first
    evaluation of ``history`` (``time_s``, ``step``, ``meta_test_mse`` lists) whose
    meta-test MSE is at or below it, or None if none is. Returns
    ``{f"{target:g}": {"time_s", "step"} or None}``."""
    out = {}
    for target in targets:
        hit = next((i for i, m in enumerate(history["meta_test_mse"]) if m <= target), None)
        out[f"{target:g}"] = None if hit is None else {"time_s": history["time_s"][hit],
                                                      "step": history["step"][hit]}
    return out


def _summary(h, wall_time_s, targets):
    """A method's row of ``results.json`` from its history (a mapping of lists with
    ``selected``, ``meta_steps``, ``stop_reason``, ``budget_s``)."""
    sel = h["selected"]
    return {"meta_test_mse": sel["meta_test_mse"], "sem": sel["meta_test_sem"],
            "meta_val_mse": sel["meta_val_mse"], "selected_step": sel["step"],
            "selected_time_s": sel["time_s"], "meta_steps": h["meta_steps"],
            "stop_reason": h["stop_reason"], "budget_s": h["budget_s"],
            "wall_time_s": wall_time_s, "time_to_target": time_to_target(h, targets),
            "schedule_steps": h.get("schedule_steps")}


def _curves(h):
    return {k: list(h[k]) for k in ("step", "time_s", "meta_val_mse", "meta_test_mse")}


def _run_cml(trainer, cfg, compare, out, progress, resume, one, x_plot, results, fits,
             name="cml"):
    """Meta-train CML (``name="cml"``: after evaluating the untrained model,
    ``cml_untrained``; ``"cml_warp"``: the network with warp layers, whose untrained
    model -- warps at the identity -- is ``cml_untrained``'s); returns (summary, history)
    and adds the fits of one test task to ``fits``."""
    untrained = None
    if name == "cml":
        t0 = time.perf_counter()
        m0, s0 = trainer.evaluate()
        untrained = {"meta_test_mse": m0, "sem": s0,
                     "wall_time_s": time.perf_counter() - t0, "meta_steps": 0}
        results["methods"]["cml_untrained"] = untrained
        fits["cml_untrained"] = _cml_fit(trainer, one, x_plot)
    hist = trainer.train(cfg["meta"]["steps"], eval_every=cfg["meta"]["eval_every"],
                         progress=progress, checkpoint=out / f"{name}_checkpoint.npz",
                         resume=resume, keep_theta=False, **_budget_kw(compare))
    if untrained is not None:
        level = {"step": [0], "time_s": [0.0], "meta_test_mse": [m0]}   # no meta-learning
        untrained.update(meta_val_mse=hist.meta_val_mse[0], selected_step=0,
                         selected_time_s=0.0, stop_reason=None, budget_s=None,
                         time_to_target=time_to_target(level, compare["targets"]))
    summary = _summary(vars(hist), hist.wall_time_s, compare["targets"])
    summary["phases_not_settled"] = hist.not_settled
    fits[name] = _cml_fit(trainer, one, x_plot)
    return summary, _curves(vars(hist))


def _run_baseline(name, cfg, compare, fam, seed, trainer, progress, one, x_plot, fits,
                  out, resume):
    """Meta-train one baseline on the same tasks (validation and test tasks: the CML
    trainer's), checkpointed at every evaluation in ``out/<name>_checkpoint.npz`` (an
    interrupted run resumes there); returns (summary, history) and adds its fit of one
    test task to ``fits``."""
    method, b = build_baseline(cfg, name)
    warped = name in WARPGRAD
    params0 = (wg.init_warped_mlp if warped else bl.init_mlp)(cfg["network"]["sizes"], seed)
    params, hist = bl.train_baseline(
        method, params0, fam, b["steps"], meta_batch=b["meta_batch"],
        optimizer=optim.adam(learning_rate(cfg.get("_file", "<config>"), "baselines", b,
                                           budget=budget_setting(cfg))),
        seed=seed,
        eval_every=b["eval_every"], test_task=trainer.test_task, val_task=trainer.val_task,
        progress=progress, checkpoint=out / f"{name}_checkpoint.npz", resume=resume,
        weight_decay=b.get("weight_decay", 0.0), average=compare["average"],
        **_budget_kw(compare))
    summary = _summary(hist, hist["wall_time_s"], compare["targets"])
    adapted = method.adapt(params, one[0], one[1])
    fits[name] = (method.predict if warped else bl.mlp_predict)(adapted, x_plot)[0, :, 0]
    return summary, _curves(hist)


def _cml_fit(trainer, one, x_plot):
    import warnings

    from ..learning import NotSettledWarning

    free, _ = trainer.cml.learners(trainer.net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotSettledWarning)
        res = free.run(trainer.net, one[0], one[1])
    return trainer.net.predict(x_plot, [np.asarray(p) for p in res.phi_aug])[0, :, 0]


COLORS = {"cml": "C1", "cml_untrained": "C1", "maml": "C0", "fomaml": "C2",
          "reptile": "C4", "imaml": "C3", "untrained": "C7", "warpgrad": "C5", "anil": "olive",
          "anil_fo": "yellowgreen", "warpgrad_fo": "C6", "warpgrad_nowarp": "C8", "cml_warp": "C9"}


@reads_results("sinusoid.plot", "a sinusoid run's results", arg=1)
def plot(out, results, one, x_plot, fits, test_task, curves="time"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    with plt.rc_context(plotting.STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))
        _plot_curves(axes[0], results, curves)
        ax = axes[1]
        order = np.argsort(test_task.x_val[0, :, 0])
        ax.plot(test_task.x_val[0, order, 0], test_task.y_val[0, order, 0], "ko", ms=4,
                label="validation points")
        ax.plot(one[0][0, :, 0], one[1][0, :, 0], "k^", ms=8, label="training shots")
        for name, f in fits.items():
            style = "--" if "untrained" in name else "-"
            ax.plot(x_plot[0, :, 0], f, style, lw=1.5, color=COLORS.get(name),
                    label=_label(name, results))
        ax.set_xlabel("input x (dimensionless)")
        ax.set_ylabel("output y (dimensionless)")
        ax.set_title("Fits after inner learning on one held-out task")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=5)
        fig.tight_layout()
        save_figure(fig, out / "sinusoid.png")
        plt.close(fig)


def _plot_curves(ax, results, curves):
    """Left panel: meta-test MSE against meta-training wall time (or meta-steps), the
    meta-validation MSE faintly, the selected points, the budget."""
    from matplotlib.ticker import ScalarFormatter

    x_key = "time_s" if curves == "time" else "step"
    budget = results.get("config", {}).get("compare", {}).get("budget_s")
    any_selected = False
    for name, h in results["history"].items():
        color = COLORS.get(name)
        if len(h["step"]) == 1:      # no meta-learning: a level
            ax.axhline(h["meta_test_mse"][0], ls="--", color=color,
                       label=f"{name} (no meta-learning)")
            continue
        ax.plot(h[x_key], h["meta_test_mse"], "o-", ms=3, color=color,
                label=_label(name, results))
        if "meta_val_mse" in h:
            ax.plot(h[x_key], h["meta_val_mse"], "-", lw=1, alpha=0.3, color=color)
        r = results["methods"].get(name, {})
        if "selected_step" in r:
            i = h["step"].index(r["selected_step"])
            ax.plot(h[x_key][i], h["meta_test_mse"][i], "*", ms=13, mfc="none", mew=1.5,
                    color=color)
            any_selected = True
    if "cml_untrained" in results["methods"]:
        ax.axhline(results["methods"]["cml_untrained"]["meta_test_mse"], ls=":",
                   color=COLORS["cml"], label="cml_untrained (no meta-learning)")
    if any_selected:
        ax.plot([], [], "*", ms=13, mfc="none", mew=1.5, color="k",
                label="selected (lowest meta-validation MSE)")
    if budget is not None and curves == "time":
        ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget ({budget:g} s)")
    ax.set_xscale("symlog", linthresh=1.0 if curves == "time" else 10)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("wall time of meta-training (s)" if curves == "time" else "meta-step")
    ax.set_ylabel("meta-test MSE (squared output units)")
    ax.set_title("Meta-learning curves (same test tasks; faint: meta-validation)")
    ax.legend(fontsize=8)


def plot_fast_patterns(out, trainer, fam, seed, n_tasks=24):
    """What the fast system learned on held-out tasks: ``fast_patterns.png``."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..learning import NotSettledWarning
    from ..metatrain import TEST, task_rng
    from ..plotting import fast_patterns

    n = min(n_tasks, trainer.test_task.n_tasks)
    amp, ph = fam.params(task_rng(seed, TEST), trainer.test_task.n_tasks)
    xt, yt, _, _ = trainer.test_task.as_batch()
    free, _ = trainer.cml.learners(trainer.net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotSettledWarning)
        res = free.run(trainer.net, xt[:n], yt[:n])
    fig = fast_patterns(trainer.net, res.phi, {"phase (rad)": ph[:n], "amplitude": amp[:n]})
    save_figure(fig, out / "fast_patterns.png")
    plt.close(fig)


def _label(name, results):
    """Legend label: which model CML trained, for the dual system."""
    if name != "cml" or not is_dual(results.get("config", {})):
        return name
    return f"cml (dual system, fast {'/'.join(results['config']['network']['fast'])})"


@reads_results("sinusoid.summary_table", "a sinusoid run's results")
def summary_table(results):
    """The headline table -- every method's selected meta-test MSE under the same
    meta-training budget -- and the time-to-target table, as text."""
    cfg = results.get("config", {})
    comp = cfg.get("compare") or NO_BUDGET
    budget = comp.get("budget_s")
    n_test = cfg.get("meta", {}).get("eval_tasks")
    n_val = comp.get("val_tasks") or n_test
    head = (f"Equal wall-time budget of {budget:g} s of meta-training per method "
            "(evaluations excluded; the wall-time column includes them)"
            if budget is not None else
            "No wall-time budget: each method runs its meta-steps (meta.steps, "
            "baselines.steps)")
    lines = [f"{head}; selected on {n_val} meta-validation tasks; meta-test MSE on {n_test} "
             "held-out test tasks",
             f"{'method':<14} {'meta-test MSE':>14} {'± s.e.m.':>10} {'selected at':>20} "
             f"{'meta-steps':>11} {'stopped by':>11} {'wall time (s)':>14}"]
    for name, r in results["methods"].items():
        if r.get("meta_steps"):
            at = f"step {r['selected_step']}, {r['selected_time_s']:.1f} s" \
                if "selected_step" in r else "last step"
            stop = r.get("stop_reason") or "—"
        else:
            at, stop = "(no meta-learning)", "—"
        lines.append(f"{name:<14} {r['meta_test_mse']:>14.4f} {r['sem']:>10.4f} {at:>20} "
                     f"{r['meta_steps']:>11d} {stop:>11} {r['wall_time_s']:>14.1f}")
    lines += budget_notes(results["methods"], budget)
    targets = comp.get("targets") or []
    if targets and any("time_to_target" in r for r in results["methods"].values()):
        lines += ["", "Time to target meta-test MSE: meta-training wall time (s) of the first "
                  "evaluation at or below the target"]
        lines.append(f"{'method':<14}" + "".join(f"{'≤ ' + format(t, 'g'):>14}"
                                                 for t in targets))
        for name, r in results["methods"].items():
            ttt = r.get("time_to_target") or {}
            cells = [ttt.get(f"{t:g}") for t in targets]
            lines.append(f"{name:<14}" + "".join(
                f"{'not reached' if c is None else format(c['time_s'], '.1f') + ' s':>14}"
                for c in cells))
    return "\n".join(lines)
