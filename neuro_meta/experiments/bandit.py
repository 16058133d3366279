"""``neuro-meta run bandit``: the wheel bandit, meta-learned by CML with the dual system.

The CML paper's reward-based experiment (after Riquelme, Tucker & Snoek 2018). Two stages:

1. **Meta-training** on wheel-bandit tasks (:class:`~neuro_meta.families.WheelBandit`: a
   task is a radius ``δ ~ U(0, 1)``; ``family.shots`` support contexts and
   ``family.queries`` query contexts, each with a uniformly random arm; the learning
   process descends the masked squared error of the pulled arms,
   :class:`~neuro_meta.losses.MaskedSquaredError`). Methods, all on the same tasks
   (``task_rng(seed, TRAIN, step)``) under the same wall-time budget
   (``compare.budget_s``; under a budget all three meta-train in the calling process,
   whatever the executor, so each gets the same compute), each keeping the
   meta-parameters of its evaluation with the lowest masked MSE on the meta-validation
   tasks (``task_rng(seed, VALIDATION)``):

   * ``cml_dual`` -- the dual system (:class:`~neuro_meta.DualSystem`): slow weights,
     fast per-neuron gains and biases and the readout, CML;
   * ``cml_complex`` -- a complex-synapse rate network (every weight fast, pulled to its
     consolidated value ω with strength λ), CML;
   * ``maml`` -- MAML's learned initialisation of the same-size MLP.

2. **Deployment** (:mod:`neuro_meta.experiments.bandit_agents`): for each
   ``δ ∈ deploy.deltas`` and each deployment seed, one stream of ``deploy.trials``
   contexts with the rewards of all arms drawn in advance
   (``numpy.random.default_rng([seed, 4, δ index, stream seed])``); every agent plays it:
   the meta-learned networks as greedy agents that re-learn from their last
   ``deploy.window`` trials every ``deploy.update_every`` trials (dual system and complex
   synapses: their fast variables settled by the learning process; MAML: its inner
   loop), and ``uniform``, ``lingreedy`` and ``linfullpost``. The (δ, seed) jobs go
   through the executor; each finished job is checkpointed (``deploy_checkpoint.npz``)
   and a resumed run skips it (running only methods it lacks).

Metric: the cumulative expected regret ``Σ_t [max_a μ_a(x_t) − μ_{a_t}(x_t)]`` divided
by the uniform policy's expected cumulative regret ``T · WheelBandit.uniform_regret(δ)``
(1 = as bad as random), mean ± 95 % CI (Student t, ``t.ppf(0.975, n − 1)`` s.e.m.)
over the ``n`` streams.

``results.json``: ``{"deploy": {method: {δ: {"normalised_regret", "ci95",
"per_seed", "updates", "not_settled"}}}, "curves": {method: {δ: mean cumulative regret
at "trials"}}, "trials": [...], "meta": {method: {"meta_val_mse", "meta_test_mse",
"meta_test_sem", "selected_step", "meta_steps", "stop_reason", "budget_s",
"wall_time_s", "schedule_steps", "history"}}, "uniform_regret": {δ: per-trial}, "executor": {"kind",
"workers", "deployment", "meta_training"}, "config": {...}}`` (``updates``: the network
agents' re-learnings over the streams, ``not_settled``: those whose learning process did
not settle, None for agents that do not settle).
"""
import time
import warnings
from pathlib import Path

import numpy as np

from .. import _params as P
from .. import baselines as bl
from .. import checkpoint as ckpt
from .. import optim
from ..cml import CML
from ..dual import DualSystem
from ..errors import ValidationError, user_stacklevel
from ..families import WheelBandit
from ..initializers import Glorot
from ..io import budget_notes, reads_results, save_figure, write_results
from ..learning import Learner
from ..metatrain import MetaTrainer
from ..models import check_run_args, checked, configure, load_model, section
from ..network import RateNetwork
from ..synapses import ComplexSynapse
from ..workers import check_executor
from . import bandit_agents as ag
from .sinusoid import (budget_setting, check_baseline_training, check_checkpoints,
                       config_fingerprint, learning_rate)

#: Meta-learned methods (meta-trained, then deployed).
META_METHODS = ("cml_dual", "cml_complex", "maml")
#: Agents without meta-learning.
PLAIN_METHODS = ("uniform", "lingreedy", "linfullpost")
METHODS = META_METHODS + PLAIN_METHODS
SECTIONS = ("family", "network", "learner", "cml", "compare", "meta", "baselines",
            "deploy", "quick", "methods")
#: The stream of deployment contexts and rewards (``default_rng([seed, DEPLOY, i, s])``).
DEPLOY = 4


# ---------------------------------------------------------------------- configuration
def _cfg(cfg=None, quick=False, seed=None, overrides=()):
    return configure(load_model("bandit") if cfg is None else cfg, SECTIONS, quick,
                     overrides, seed)


def _settings(where, key, value, reserved):
    """A mapping of extra keyword settings (``None``: none), refusing the keys the
    experiment sets itself."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: {key}: must be a mapping of settings "
                              f"(got {P.shown(value)})")
    bad = sorted(set(map(str, value)) & set(reserved))
    if bad:
        raise ValidationError(f"{where}: {key}: must not set {', '.join(bad)} (the bandit "
                              f"experiment sets {', '.join(reserved)} itself) "
                              f"(got {P.shown(value)})")
    return dict(value)


def family(cfg):
    where = cfg.get("_file", "<config>")
    f = section(cfg, "family", required=("shots", "queries", "delta_range", "scale"))
    return checked(where, "family", WheelBandit, shots=f["shots"], queries=f["queries"],
                   delta_range=tuple(f["delta_range"]) if isinstance(
                       f["delta_range"], list) else f["delta_range"], scale=f["scale"])


def deploy_cfg(cfg):
    """The ``deploy`` section, checked."""
    where = cfg.get("_file", "<config>")
    d = section(cfg, "deploy", required=("deltas", "trials", "seeds", "update_every",
                                         "window", "lingreedy", "linfullpost"))
    if not isinstance(d["deltas"], list) or not d["deltas"]:
        raise ValidationError(f"{where}: deploy.deltas: must be a non-empty list of radii "
                              f"in [0, 1] (got {d['deltas']!r})")
    out = {"deltas": [checked(where, "deploy.deltas", P.real, v, "deploy", f"deltas[{i}]",
                              low=0.0, high=1.0) for i, v in enumerate(d["deltas"])]}
    keys = [f"{v:g}" for v in out["deltas"]]
    if len(set(keys)) != len(keys):
        raise ValidationError(f"{where}: deploy.deltas: must be distinct radii (to 6 "
                              f"significant digits; they name the table's columns) "
                              f"(got {d['deltas']!r})")
    for k in ("trials", "seeds", "update_every", "window"):
        out[k] = checked(where, f"deploy.{k}", P.integer, d[k], "deploy", k, low=1)
    checked(where, "deploy.trials", P.check_bytes, out["trials"] * 7, "deploy", "trials",
            f"of {out['trials']} x 7 values (one stream)", repr(out["trials"]))
    checked(where, "deploy.seeds", P.check_bytes,
            out["trials"] * out["seeds"] * len(out["deltas"]) * len(METHODS), "deploy",
            "seeds", "of the regrets of every stream and method", repr(out["seeds"]))
    for k in ("lingreedy", "linfullpost"):
        out[k] = _settings(where, f"deploy.{k}", d[k], ("n_in", "n_arms"))
    checked(where, "deploy.lingreedy", ag.LinGreedy, **out["lingreedy"])
    checked(where, "deploy.linfullpost", ag.LinFullPost, **out["linfullpost"])
    return out


def compare_cfg(cfg):
    """The ``compare`` section, checked: ``budget_s`` (s of meta-training per method, or
    None), ``eval_every_s``, ``val_tasks`` and ``average`` (optional: decay in [0, 1) of
    the moving average of every method's meta-parameters that is evaluated, selected and
    kept; None, the default: the raw ones)."""
    where = cfg.get("_file", "<config>")
    c = section(cfg, "compare", required=("budget_s", "eval_every_s", "val_tasks"),
                optional=("average",))
    out = {k: checked(where, f"compare.{k}", P.real, c[k], "compare", k, low=0.0,
                      low_open=True, allow_none=True) for k in ("budget_s", "eval_every_s")}
    out["val_tasks"] = checked(where, "compare.val_tasks", P.integer, c["val_tasks"],
                               "compare", "val_tasks", low=1)
    out["average"] = checked(where, "compare.average", P.real, c.get("average"), "compare",
                             "average", low=0.0, high=1.0, high_open=True, allow_none=True)
    return out


def parse_methods(methods, default=METHODS):
    return P.name_list(methods, METHODS, default, "run bandit.methods")


def build_net(cfg, kind, seed):
    """The ``cml_dual`` (:class:`DualSystem`) or ``cml_complex`` (complex-synapse
    :class:`RateNetwork`) network of the ``network`` section, with the masked loss."""
    where = cfg.get("_file", "<config>")
    n = section(cfg, "network", required=("hidden", "activation", "dual", "complex"))
    hidden = n["hidden"]
    if not isinstance(hidden, list) or not hidden:
        raise ValidationError(f"{where}: network.hidden: must be a list of hidden-layer "
                              f"sizes (got {hidden!r})")
    sizes = [2] + hidden + [WheelBandit.n_arms]
    d = _settings(where, "network.dual", n["dual"], ("seed", "loss", "activation"))
    c = _settings(where, "network.complex", n["complex"],
                  ("seed", "loss", "activation", "synapse", "tau_neuron"))
    if kind == "cml_dual":
        return checked(where, "network.dual", DualSystem, sizes,
                       activation=n["activation"], seed=seed,
                       loss="masked_squared_error", **d)
    lam = c.pop("lam_init", 1.0)
    if isinstance(lam, list):
        if len(lam) != len(hidden) + 1:
            raise ValidationError(f"{where}: network.complex.lam_init: needs one value per "
                                  f"connection ({len(hidden) + 1}) or one for all "
                                  f"(got {lam!r})")
        syn = [checked(where, "network.complex.lam_init", ComplexSynapse, omega=Glorot(),
                       lam=v) for v in lam]
    else:
        syn = checked(where, "network.complex.lam_init", ComplexSynapse, omega=Glorot(),
                      lam=lam)
    return checked(where, "network.complex", RateNetwork, sizes,
                   activation=[n["activation"]] * len(hidden) + ["linear"], synapse=syn,
                   tau_neuron=0.0, seed=seed, loss="masked_squared_error", **c)


def build_learner(cfg):
    where = cfg.get("_file", "<config>")
    l_cfg = section(cfg, "learner", required=("rule",),
                    optional=("integrator", "dt", "tol", "max_duration", "settle"))
    return checked(where, "learner", Learner, **l_cfg)


def build_trainer(cfg, kind, fam, executor=None):
    """The :class:`MetaTrainer` of ``cml_dual`` or ``cml_complex``. ``meta.omega_decay``
    (optional, default 0) penalises the weights meta-learning stores: the complex
    synapses' ω, the dual system's slow weights, biases and readout."""
    where = cfg.get("_file", "<config>")
    c_cfg = section(cfg, "cml", required=("beta",), optional=("estimator",))
    m = section(cfg, "meta", required=("steps", "meta_batch", "learning_rate", "clip",
                                       "eval_every", "eval_tasks", "seed"),
                optional=("lam_min", "omega_decay", "schedule"))
    omega_decay = checked(where, "meta.omega_decay", P.real, m.get("omega_decay", 0.0),
                          "meta", "omega_decay", low=0.0)
    seed = checked(where, "meta.seed", P.integer, m["seed"], "meta", "seed", low=0)
    learner = build_learner(cfg)
    cml = checked(where, "cml", CML, learner=learner, **c_cfg)
    opt = optim.chain(checked(where, "meta.clip", optim.clip_by_global_norm, m["clip"]),
                      checked(where, "meta.learning_rate", optim.adam,
                              learning_rate(where, "meta", m,
                                            budget=budget_setting(cfg))))
    return checked(where, "meta", MetaTrainer, build_net(cfg, kind, seed), fam, cml, opt,
                   meta_batch=m["meta_batch"], seed=seed, eval_tasks=m["eval_tasks"],
                   executor=executor, lam_min=m.get("lam_min", 0.0),
                   val_tasks=compare_cfg(cfg)["val_tasks"],
                   average=compare_cfg(cfg)["average"],
                   omega_decay=omega_decay)


def build_maml(cfg):
    where = cfg.get("_file", "<config>")
    b = section(cfg, "baselines", required=("steps", "meta_batch", "learning_rate",
                                            "eval_every", "maml"),
                optional=("weight_decay", "schedule"))
    check_baseline_training(where, b, budget_setting(cfg))
    kw = _settings(where, "baselines.maml", b["maml"], ("loss",))
    return checked(where, "baselines.maml", bl.MAML, loss="masked_squared_error", **kw), b


# ---------------------------------------------------------------------- deployment
def stream(fam, delta, delta_index, stream_seed, seed, trials):
    """The pre-drawn stream of one bandit: contexts (T, 2) and all arms' rewards (T, 5)."""
    rng = np.random.default_rng([int(seed), DEPLOY, int(delta_index), int(stream_seed)])
    x = fam.contexts(rng, trials)
    return x, fam.rewards(rng, x, delta)


def make_agents(spec, methods=None):
    """Fresh agents of a job from its ``spec`` (what :func:`deploy_job` receives), for
    ``methods`` (default: ``spec["methods"]``)."""
    d, out = spec["deploy"], {}
    kw = dict(update_every=d["update_every"], window=d["window"], scale=spec["scale"])
    for name in spec["methods"] if methods is None else methods:
        if name in ("cml_dual", "cml_complex"):
            out[name] = ag.SettledAgent(spec["nets"][name], spec["learner"], name, **kw)
        elif name == "maml":
            out[name] = ag.InnerLoopAgent(spec["maml"], spec["params"]["maml"], name, **kw)
        elif name == "uniform":
            out[name] = ag.Uniform()
        elif name == "lingreedy":
            out[name] = ag.LinGreedy(**d["lingreedy"])
        else:
            out[name] = ag.LinFullPost(**d["linfullpost"])
    return out


def deploy_job(spec, delta_index, stream_seed, methods=None):
    """Every agent of ``methods`` (default ``spec["methods"]``) on the stream of
    (``delta_index``, ``stream_seed``) (runs on a worker). Returns ``{method: {"regret":
    per-trial expected regret (T,), "updates": re-learnings of a network agent,
    "not_settled": those whose learning process did not settle (None: the agent does not
    settle)}}``. Each agent has its own generator, so a method's result does not depend
    on which other methods run."""
    fam, d = spec["family"], spec["deploy"]
    delta = d["deltas"][delta_index]
    x, R = stream(fam, delta, delta_index, stream_seed, spec["seed"], d["trials"])
    out = {}
    for name, agent in make_agents(spec, methods).items():
        rng = np.random.default_rng([int(spec["seed"]), DEPLOY, int(delta_index),
                                     int(stream_seed), METHODS.index(name) + 1])
        arms = ag.deploy(agent, x, R, rng)
        out[name] = {"regret": fam.regret(x, delta, arms),
                     "updates": int(getattr(agent, "updates", 0)),
                     "not_settled": (int(agent.not_settled) if hasattr(agent, "not_settled")
                                     else None)}
    return out


def run_deployment(spec, out, progress=True, resume=False, executor=None, fingerprint="",
                   tags=None):
    """All (δ, stream) jobs through ``executor`` (None: in-process); each finished job is
    checkpointed in ``out/deploy_checkpoint.npz``. With ``resume`` the saved results are
    kept and only the missing (job, method) pairs run -- a method added to ``methods``
    runs on the finished jobs too. ``fingerprint``: the configuration (another one
    refuses the checkpoint); ``tags``: ``{method: str}``, what a method's results depend
    on beyond the configuration (its meta-parameters' checksum): a saved method whose tag
    differs is run again. Returns ``{(i, s): {method: job result}}`` (see
    :func:`deploy_job`)."""
    from .._progress import bar as tqdm

    methods = list(spec["methods"])
    tags = {m: str((tags or {}).get(m, "")) for m in methods}
    path = Path(out) / "deploy_checkpoint.npz"
    done, saved_tags = {}, {}
    if resume and path.exists():
        saved = ckpt.load(path)
        if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint or \
                not isinstance(saved.get("tags"), dict):
            raise ckpt.CheckpointError(f"{path}: written by another configuration or "
                                       "meta-training; move it aside or restart without --resume")
        saved_tags = dict(saved["tags"])
        stale = {m for m in methods if m in saved_tags and saved_tags[m] != tags[m]}
        done = {tuple(int(v) for v in k.split("_")): {m: r for m, r in res.items()
                                                      if m not in stale}
                for k, res in saved["jobs"].items()}
    saved_tags.update(tags)
    d = spec["deploy"]
    todo = []
    for i in range(len(d["deltas"])):
        for s in range(d["seeds"]):
            missing = [m for m in methods if m not in done.get((i, s), {})]
            if missing:
                todo.append(((i, s), missing))

    def save():
        ckpt.save(path, {"fingerprint": fingerprint, "tags": saved_tags,
                         "jobs": {f"{i}_{s}": r for (i, s), r in done.items()}})

    n_jobs = len(d["deltas"]) * d["seeds"]
    bar = tqdm(desc="deployment (delta x stream)", total=n_jobs,
               initial=n_jobs - len(todo), disable=not progress)
    if executor is None:
        for key, missing in todo:
            done.setdefault(key, {}).update(deploy_job(spec, *key, missing))
            save()
            bar.update(1)
    else:
        pending = {executor.submit(deploy_job, spec, *key, missing): key
                   for key, missing in todo}
        while pending:
            for f, key in list(pending.items()):
                if f.done():
                    done.setdefault(key, {}).update(f.result())
                    del pending[f]
                    save()
                    bar.update(1)
            time.sleep(0.05)
    bar.close()
    return done


def t95(n):
    """The two-sided 95 % Student-t factor for the mean of ``n`` values,
    ``t.ppf(0.975, n − 1)`` (None for n < 2)."""
    from scipy.stats import t

    n = P.integer(n, "t95", "n", low=1)
    return float(t.ppf(0.975, n - 1)) if n > 1 else None


def summarise(done, spec):
    """Normalised regret per method and δ (mean ± 95 % Student-t CI over the streams,
    per-stream values, network re-learnings and unsettled ones) and the mean
    cumulative-regret curves."""
    fam, d = spec["family"], spec["deploy"]
    T, n = d["trials"], d["seeds"]
    grid = sorted(set(np.linspace(0, T - 1, min(T, 200)).astype(int).tolist()))
    res, curves, unif = {}, {}, {}
    tf = t95(n)
    for i, delta in enumerate(d["deltas"]):
        u = fam.uniform_regret(delta)
        unif[f"{delta:g}"] = u
        for name in spec["methods"]:
            jobs = [done[(i, s)][name] for s in range(n)]
            reg = np.stack([j["regret"] for j in jobs])
            norm = reg.sum(axis=1) / (T * u)
            ns = [j["not_settled"] for j in jobs]
            res.setdefault(name, {})[f"{delta:g}"] = {
                "normalised_regret": float(norm.mean()),
                "ci95": None if tf is None else float(
                    tf * norm.std(ddof=1) / np.sqrt(norm.size)),
                "per_seed": norm.tolist(),
                "updates": int(sum(j["updates"] for j in jobs)),
                "not_settled": None if any(v is None for v in ns) else int(sum(ns))}
            curves.setdefault(name, {})[f"{delta:g}"] = \
                np.cumsum(reg, axis=1).mean(axis=0)[grid].tolist()
    return res, curves, [g + 1 for g in grid], unif


def executor_info(executor):
    """``{"kind", "workers"}`` of an executor (None: serial, 1 worker)."""
    if executor is None:
        return {"kind": "serial", "workers": 1}
    if hasattr(executor, "scheduler_info"):                 # dask.distributed.Client
        return {"kind": "dask",
                "workers": max(1, len(executor.scheduler_info().get("workers", {})))}
    name = type(executor).__name__
    kind = {"ProcessPoolExecutor": "processes", "ThreadPoolExecutor": "threads"}.get(
        name, name)
    return {"kind": kind, "workers": max(1, int(getattr(executor, "_max_workers", 1)))}


# ---------------------------------------------------------------------- the run
def _meta_summary(h, wall):
    sel = h["selected"]
    return {"meta_val_mse": sel["meta_val_mse"], "meta_test_mse": sel["meta_test_mse"],
            "meta_test_sem": sel["meta_test_sem"], "selected_step": sel["step"],
            "meta_steps": int(h.get("meta_steps") or 0), "stop_reason": h.get("stop_reason"),
            "budget_s": h.get("budget_s"), "wall_time_s": wall,
            "schedule_steps": h.get("schedule_steps"),
            "history": {k: list(h[k]) for k in ("step", "time_s", "meta_val_mse",
                                                "meta_test_mse")}}


def _budget_kw(compare):
    b = compare["budget_s"]
    return {"budget_s": b, "eval_every_s": None if b is None else compare["eval_every_s"]}


def run(out_dir, quick=False, seed=None, methods=None, cfg=None, progress=True,
        resume=False, executor=None, overrides=(), curves="time"):
    """Meta-train the meta-learned methods, deploy every method on the same bandits,
    write ``results.json``, ``bandit.png`` (cumulative regret against trials per δ) and
    ``bandit_meta.png`` (meta-learning curves) to ``out_dir``; returns the results.
    ``executor``: where the deployment's (δ, stream) jobs run (None, a
    ``concurrent.futures`` executor or a ``dask.distributed.Client``); CML's meta-batches
    use it only for step-bound meta-training (``compare.budget_s`` None) -- under a
    wall-time budget every method meta-trains in this process, so that the budget buys
    each method the same compute. Same regrets on any executor for the same
    meta-parameters (always with a step-bound run). ``resume``: continue an interrupted
    run (meta-trained methods are kept in ``meta_params.npz``; CML meta-training resumes
    from its checkpoint; finished deployment jobs are kept, methods they lack are run).
    ``curves``: x-axis of the meta-learning curves."""
    P.choice(curves, "run bandit", "curves", ("time", "steps"))
    check_run_args("run bandit", out_dir, cfg, overrides, quick=quick, progress=progress,
                   resume=resume)
    check_executor(executor, "run bandit")      # (used after meta-training: checked now)
    cfg = _cfg(cfg, quick, seed, overrides)
    methods = parse_methods(methods, cfg.get("methods") or METHODS)
    fam = family(cfg)
    compare, dep = compare_cfg(cfg), deploy_cfg(cfg)
    if dep["window"] != fam.shots and any(m in META_METHODS for m in methods):
        warnings.warn(f"{cfg.get('_file', '<config>')}: deploy.window ({dep['window']}) "
                      f"differs from family.shots ({fam.shots}): the networks re-learn on "
                      "histories of another size than the support sets they were "
                      "meta-trained on", UserWarning, stacklevel=user_stacklevel())
    learner = build_learner(cfg)
    # Compute-fair: under a wall-time budget all methods meta-train in this process (MAML
    # has no executor); the executor then serves the deployment only.
    meta_executor = executor if compare["budget_s"] is None else None
    trainers = {k: build_trainer(cfg, k, fam, meta_executor)
                for k in ("cml_dual", "cml_complex") if k in methods}
    maml, b = build_maml(cfg)
    seed = cfg["meta"]["seed"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(cfg)
    meta_path = out / "meta_params.npz"
    saved = {}
    if resume and not meta_path.exists() and not any(out.glob("*checkpoint.npz")):
        warnings.warn(f"--resume: {out} holds no meta-parameters nor checkpoints; starting "
                      "afresh", UserWarning, stacklevel=user_stacklevel())      # (a mistyped --out)
    if resume and meta_path.exists():
        state = ckpt.load(meta_path)
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
            raise ckpt.CheckpointError(f"{meta_path}: written by another configuration; "
                                       "move it aside or restart without --resume")
        saved = state["methods"]
    if resume:
        check_checkpoints(out, [m for m in methods if m in META_METHODS and m not in saved])
    meta = {}
    nets, params = {}, {}
    for name in [m for m in methods if m in META_METHODS]:
        if name in saved:
            meta[name] = saved[name]["summary"]
            if name == "maml":
                params[name] = saved[name]["theta"]
            else:
                nets[name] = trainers[name].net.with_theta(saved[name]["theta"])
            continue
        if name == "maml":
            val = trainers["cml_dual"].val_task if "cml_dual" in trainers else None
            p0 = bl.init_mlp([2] + list(cfg["network"]["hidden"]) + [5], seed)
            p, h = bl.train_baseline(
                maml, p0, fam, b["steps"], meta_batch=b["meta_batch"],
                optimizer=optim.adam(learning_rate(
                    cfg.get("_file", "<config>"), "baselines", b,
                    budget=budget_setting(cfg))), seed=seed,
                eval_every=b["eval_every"], eval_tasks=cfg["meta"]["eval_tasks"],
                val_tasks=compare["val_tasks"], val_task=val, progress=progress,
                checkpoint=out / "maml_checkpoint.npz", resume=resume,
                weight_decay=b.get("weight_decay", 0.0), average=compare["average"],
                **_budget_kw(compare))
            params[name] = theta = p
        else:
            tr = trainers[name]
            hist = tr.train(cfg["meta"]["steps"], eval_every=cfg["meta"]["eval_every"],
                            progress=progress, checkpoint=out / f"{name}_checkpoint.npz",
                            resume=resume, keep_theta=False, **_budget_kw(compare))
            h = vars(hist)
            nets[name] = tr.net
            theta = tr.net.theta
        meta[name] = _meta_summary(h, h["wall_time_s"])   # a resumed run's included
        saved[name] = {"summary": meta[name], "theta": theta}
        ckpt.save(meta_path, {"fingerprint": fingerprint, "methods": saved})
    spec = {"family": fam, "deploy": dep, "methods": methods, "nets": nets,
            "params": params, "maml": maml, "learner": learner, "scale": fam.scale,
            "seed": seed}
    tags = {m: ckpt.checksum(saved[m]["theta"])[:16] if m in META_METHODS else "plain"
            for m in methods}
    done = run_deployment(spec, out, progress, resume, executor, fingerprint, tags)
    table, cum, trials, unif = summarise(done, spec)
    info = executor_info(executor)
    results = {"deploy": table, "curves": cum, "trials": trials, "meta": meta,
               "uniform_regret": unif,
               "executor": {**info, "deployment": info["kind"],
                            "meta_training": executor_info(meta_executor)["kind"]},
               "config": cfg}
    write_results(out / "results.json", results)
    plot(out, results)
    if meta:
        plot_meta(out, results, curves)
    return results


# ---------------------------------------------------------------------- output
COLORS = {"cml_dual": "C1", "cml_complex": "C3", "maml": "C0", "uniform": "C7",
          "lingreedy": "C2", "linfullpost": "C4"}


@reads_results("bandit.summary_table", "a bandit run's results")
def summary_table(results):
    """Normalised cumulative regret (± 95 % CI) per method and δ, and the meta-training
    summary, as text."""
    cfg = results.get("config", {})
    d = cfg.get("deploy", {})
    deltas = list(next(iter(results["deploy"].values())).keys())
    lines = [f"Wheel bandit: cumulative regret / uniform policy's expected regret, "
             f"{d.get('trials')} trials, mean ± 95 % CI (Student t) over {d.get('seeds')} "
             f"streams per delta (same contexts and rewards for every method)"]
    lines.append(f"{'method':<13}" + "".join(f"{'δ = ' + k:>17}" for k in deltas)
                 + f"{'unsettled':>12}")

    def ci(v):
        return "n/a  " if v is None else f"{v:<5.3f}"

    for name, per in results["deploy"].items():
        ns = [per[k].get("not_settled") for k in deltas]
        unsettled = "—" if any(v is None for v in ns) else \
            f"{sum(ns)}/{sum(per[k].get('updates', 0) for k in deltas)}"
        lines.append(f"{name:<13}" + "".join(
            f"{per[k]['normalised_regret']:>9.3f} ± {ci(per[k]['ci95'])}" for k in deltas)
            + f"{unsettled:>12}")
    lines.append("(unsettled: deployment updates whose learning process did not settle, "
                 "of all, over every delta and stream)")
    ex = results.get("executor")
    if ex:
        lines.append(f"(executor: {ex['kind']}, {ex['workers']} worker(s); meta-training "
                     f"{ex['meta_training']}, deployment {ex['deployment']})")
    if results.get("meta"):
        b = cfg.get("compare", {}).get("budget_s")
        lines += ["", "Meta-training (" + (f"{b:g} s per method" if b is not None else
                                          "step-bound") + "; masked MSE of the pulled "
                  "arms on query contexts, reward/scale units, at the selected step)"]
        lines.append(f"{'method':<13}{'meta-steps':>11}{'selected':>10}{'meta-val':>11}"
                     f"{'meta-test':>11}{'wall (s)':>10}")
        for name, m in results["meta"].items():
            lines.append(f"{name:<13}{m['meta_steps']:>11d}{m['selected_step']:>10d}"
                         f"{m['meta_val_mse']:>11.4g}{m['meta_test_mse']:>11.4g}"
                         f"{m['wall_time_s']:>10.1f}")
        lines += budget_notes(results["meta"], b)
    return "\n".join(lines)


@reads_results("bandit.plot", "a bandit run's results", arg=1)
def plot(out, results):
    """``bandit.png``: mean cumulative regret against trials, one panel per δ, with the
    uniform policy's expected regret (dotted)."""
    import matplotlib.pyplot as plt     # rc_context only: figures are made without pyplot
    from matplotlib.figure import Figure

    from .. import plotting

    deltas = list(results["uniform_regret"])
    t = np.asarray(results["trials"])
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(3.4 * len(deltas), 3.6))
        axes = np.atleast_1d(fig.subplots(1, len(deltas)))
        for ax, k in zip(axes, deltas):
            for name, per in results["curves"].items():
                ax.plot(t, per[k], color=COLORS.get(name), label=name)
            ax.plot(t, t * results["uniform_regret"][k], "k:", lw=1,
                    label="uniform (expected)")
            ax.set_title(f"δ = {k}")
            ax.set_xlabel("trial")
            ax.set_yscale("symlog", linthresh=1.0)
        axes[0].set_ylabel("cumulative regret")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, Path(out) / "bandit.png")


@reads_results("bandit.plot_meta", "a bandit run's results", arg=1)
def plot_meta(out, results, curves="time"):
    """``bandit_meta.png``: meta-test masked MSE against meta-training wall time (or
    steps) for the meta-learned methods (faint: meta-validation)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from .. import plotting

    key = "time_s" if curves == "time" else "step"
    with plt.rc_context(plotting.STYLE):
        fig = Figure(figsize=(5.5, 3.8))
        ax = fig.subplots()
        for name, m in results["meta"].items():
            h = m["history"]
            ax.plot(h[key], h["meta_test_mse"], "o-", ms=3, color=COLORS.get(name),
                    label=name)
            ax.plot(h[key], h["meta_val_mse"], "-", alpha=0.3, color=COLORS.get(name))
        ax.set_xlabel("meta-training wall time (s)" if curves == "time" else "meta-step")
        ax.set_ylabel("masked MSE on query contexts")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, Path(out) / "bandit_meta.png")
