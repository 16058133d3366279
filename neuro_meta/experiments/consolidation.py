"""``neuro-meta run consolidation``: meta-learning which synapses to consolidate.

Linear-teacher tasks (:class:`~neuro_meta.families.LinearTeacher`): a known subset of
synapses has the same teacher weight in every task (shared), the rest is redrawn per
task. CML meta-trains ω and λ of a single-layer complex-synapse network. If it works,
λ grows on the shared synapses (consolidated: their ω has learned the shared teacher)
and shrinks on task-specific ones. Reported in ``results.json``:

* ``lambda_auc`` -- ROC-AUC of λ separating shared from task-specific synapses;
* ``omega_shared_rmse`` -- RMS of ω − teacher over the shared synapses;
* meta-test MSE of the meta-trained network and of ``untrained`` (the same inner learning
  from the initial ω, λ).
"""
import textwrap
import time
from pathlib import Path

import numpy as np

from .. import optim
from ..cml import CML
from ..families import LinearTeacher
from ..io import reads_results, save_figure, write_results
from ..learning import Learner
from ..metatrain import MetaTrainer
from .. import _params as P
from ..errors import ValidationError, user_stacklevel
from ..models import check_run_args, checked, configure, load_model, merge, section  # noqa: F401 (merge)
from ..network import RateNetwork
from ..synapses import ComplexSynapse


def roc_auc(scores, positive):
    """ROC-AUC (Mann-Whitney U / n_pos n_neg, ties counted half); None (undefined) when
    every synapse is on one side (``shared_fraction`` 0 or 1)."""
    scores = np.asarray(scores, dtype=float).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _defined(value, defined):
    """``float(value())``, or None where it is undefined (a statistic of no synapses:
    ``shared_fraction`` 0 or 1)."""
    return float(value()) if defined else None


def _shown(v, fmt):
    """A table entry: ``v`` formatted, or "n/a" where it is undefined (None)."""
    return "n/a" if v is None else format(v, fmt)


FAMILY_KEYS = ("n_in", "n_out", "shots", "val", "shared_fraction", "shared_std",
               "specific_std", "noise_std", "structure_seed")
NETWORK_KEYS = ("activation", "bias", "tau_neuron", "tau_synapse", "omega_init", "lam_init")
LEARNER_KEYS = ("rule", "presentation", "integrator", "dt", "tol", "max_duration", "settle")
META_KEYS = ("steps", "meta_batch", "optimizer", "learning_rate", "eval_every",
             "eval_tasks", "seed")


def build(cfg, executor=None):
    """Task family and MetaTrainer from a configuration; errors name file and key."""
    where = cfg.get("_file", "<config>")
    fam_cfg = section(cfg, "family", required=FAMILY_KEYS)
    n = section(cfg, "network", required=NETWORK_KEYS)
    l_cfg = section(cfg, "learner", required=("rule",), optional=LEARNER_KEYS)
    c_cfg = section(cfg, "cml", required=("beta",), optional=("estimator", "tol",
                                                               "nudged_duration"))
    m = section(cfg, "meta", required=META_KEYS)
    fam = checked(where, "family", LinearTeacher, **fam_cfg)
    syn = checked(where, "network.omega_init/lam_init", ComplexSynapse,
                  omega=n["omega_init"], lam=n["lam_init"])
    net = checked(where, "network", RateNetwork, [fam.n_in, fam.n_out],
                  activation=n["activation"], bias=n["bias"], tau_neuron=n["tau_neuron"],
                  tau_synapse=n["tau_synapse"], synapse=syn)
    learner = checked(where, "learner", Learner, **l_cfg)
    cml = checked(where, "cml", CML, learner=learner, **c_cfg)
    optimizers = {"adam": optim.adam, "sgd": optim.sgd}
    if not isinstance(m["optimizer"], str) or m["optimizer"] not in optimizers:
        raise ValidationError(f"{where}: meta.optimizer: must be one of adam, sgd "
                              f"(got {m['optimizer']!r})")
    opt = checked(where, "meta.learning_rate", optimizers[m["optimizer"]], m["learning_rate"])
    trainer = checked(where, "meta", MetaTrainer, net, fam, cml, opt,
                      meta_batch=m["meta_batch"], seed=m["seed"], eval_tasks=m["eval_tasks"],
                      executor=executor)
    for k in ("steps", "eval_every"):
        checked(where, f"meta.{k}", P.integer, m[k], "meta", k, low=1)
    return fam, trainer


#: The sections a file of the consolidation experiment may have.
SECTIONS = ("family", "network", "learner", "cml", "meta", "quick")


def run(out_dir, quick=False, seed=None, cfg=None, progress=True, resume=False,
        executor=None, overrides=()):
    """Meta-train, write ``results.json`` and plots to ``out_dir``; returns the results.

    A checkpoint ``out_dir/checkpoint.npz`` is written at every evaluation, at the end
    and every :data:`neuro_meta.checkpoint.CHECKPOINT_EVERY_S` seconds; with
    ``resume=True`` a run continues from it (same final numbers as an uninterrupted
    run). ``executor``: see :class:`~neuro_meta.metatrain.MetaTrainer`.
    """
    check_run_args("run consolidation", out_dir, cfg, overrides, quick=quick,
                   progress=progress, resume=resume)
    cfg = configure(cfg or load_model("consolidation"), SECTIONS, quick, overrides, seed)
    fam, trainer = build(cfg, executor=executor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and not (out / "checkpoint.npz").exists():    # (a mistyped --out)
        import warnings

        warnings.warn(f"--resume: {out} holds no checkpoint; starting afresh", UserWarning,
                      stacklevel=user_stacklevel())
    t0 = time.perf_counter()
    untrained_net = trainer.net
    m0, s0 = trainer.evaluate(untrained_net)
    t_untrained = time.perf_counter() - t0
    hist = trainer.train(cfg["meta"]["steps"], eval_every=cfg["meta"]["eval_every"],
                         progress=progress, checkpoint=out / "checkpoint.npz",
                         resume=resume, select=False)   # the last meta-parameters
    net = trainer.net
    mask, w_shared = fam.structure
    theta = net.theta
    lam, omega = theta["lam"][0], theta["omega"][0]
    m1, s1 = hist.meta_test_mse[-1], hist.meta_test_sem[-1]
    results = {
        "methods": {
            "cml": {"meta_test_mse": m1, "sem": s1, "wall_time_s": hist.wall_time_s,
                    "meta_steps": hist.meta_steps},
            "untrained": {"meta_test_mse": m0, "sem": s0, "wall_time_s": t_untrained,
                          "meta_steps": 0},
        },
        "lambda_auc": roc_auc(lam, mask),
        "phases_not_settled": hist.not_settled,
        "omega_shared_rmse": _defined(lambda: np.sqrt(np.mean(
            (omega[mask] - w_shared[mask]) ** 2)), mask.any()),
        "lambda_mean": {"shared": _defined(lambda: lam[mask].mean(), mask.any()),
                        "specific": _defined(lambda: lam[~mask].mean(), (~mask).any())},
        "history": {"step": hist.step, "meta_test_mse": hist.meta_test_mse,
                    "meta_test_sem": hist.meta_test_sem, "time_s": hist.time_s},
        "meta_parameters": {"omega": omega, "lam": lam, "shared_mask": mask,
                            "w_shared": w_shared},
        "config": cfg,
    }
    write_results(out / "results.json", results)
    plot(out, hist, net, trainer, fam, results)
    return results


@reads_results("consolidation.plot", "a consolidation run's results", arg=5)
def plot(out, hist, net, trainer, fam, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    mask, _ = fam.structure
    groups = {"shared": mask.ravel(), "specific": ~mask.ravel()}
    with plt.rc_context(plotting.STYLE):
        fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
        plotting.meta_learning_curves(
            hist.step, {"cml": hist.meta_test_mse,
                        "untrained": [results["methods"]["untrained"]["meta_test_mse"]]
                        * len(hist.step)}, ax=axes[0, 0], logy=False)
        lam_traj = np.array([th["lam"][0].ravel() for th in hist.theta])
        plotting.parameter_trajectories(hist.step, lam_traj, groups, ax=axes[0, 1],
                                        ylabel="λ")
        plotting.lambda_by_group(net.theta["lam"][0], groups, ax=axes[1, 0])
        _phi_panel(axes[1, 1], net, trainer, mask)
        fig.tight_layout()
        save_figure(fig, out / "consolidation.png")
        plt.close(fig)


def _phi_panel(ax, net, trainer, mask):
    """φ(t) of two shared and two specific synapses on one test task, free then nudged."""
    from .. import plotting

    task = trainer.test_task
    xt, yt, xv, yv = (a[:1] for a in task.as_batch())
    free_l, nudged_l = trainer.cml.learners(net)
    dur = min(60.0, 200 * free_l.dt_for(net)) if free_l.dt else 20.0
    fl = Learner(rule=free_l.rule, integrator=free_l.integrator, dt=free_l.dt, duration=dur)
    free = fl.run(net, xt, yt, record=["phi"])
    beta = trainer.cml.beta
    nudged = fl.run(net, xt, yt, x_val=xv, y_val=yv, beta=beta * 10,
                    phi_init=[np.asarray(p) for p in free.phi_aug], record=["phi"])
    sh = np.argwhere(mask)[:2]
    sp = np.argwhere(~mask)[:2]
    sel = [tuple(i) for i in np.concatenate([sh, sp])]
    labels = ([f"shared ({i}, {j})" for i, j in sh.tolist()]
              + [f"specific ({i}, {j})" for i, j in sp.tolist()])
    pf = np.stack([free.record["phi"][0][:, 0][(slice(None),) + s] for s in sel], axis=1)
    pn = np.stack([nudged.record["phi"][0][:, 0][(slice(None),) + s] for s in sel], axis=1)
    plotting.phi_trajectories(free.t, pf, nudged.t, pn, labels=labels, ax=ax)
    ax.set_title(f"φ(t) on a test task; nudged with β = {beta * 10:g} (×10 to show)")


@reads_results("consolidation.summary_table", "a consolidation run's results")
def summary_table(results):
    """The results as text: a title (what is measured, in which units), meta-test MSE ±
    s.e.m. and wall time per method, then where λ and ω ended up."""
    cfg = results.get("config") or {}
    fam, meta = cfg.get("family") or {}, cfg.get("meta") or {}
    shape = (f" ({fam['n_in']} inputs, {fam['n_out']} outputs, {fam['shots']} shots)"
             if all(k in fam for k in ("n_in", "n_out", "shots")) else "")
    lines = textwrap.wrap(
        f"Consolidation, linear-teacher tasks{shape}: meta-test MSE (squared output "
        f"units) ± s.e.m. over {meta.get('eval_tasks', '?')} held-out test tasks (cml: "
        "the last meta-parameters, no selection; untrained: the initial ω, λ); wall time "
        "in s", 100) + [
             f"{'method':<12} {'meta-test MSE':>15} {'± s.e.m.':>10} {'wall time (s)':>14}"]
    for name, r in results["methods"].items():
        lines.append(f"{name:<12} {r['meta_test_mse']:>15.4f} {r['sem']:>10.4f} "
                     f"{r['wall_time_s']:>14.1f}")
    lm = results["lambda_mean"]
    lines.append(f"lambda_auc = {_shown(results['lambda_auc'], '.3f')}   omega_shared_rmse = "
                 f"{_shown(results['omega_shared_rmse'], '.4f')}   mean λ shared/specific = "
                 f"{_shown(lm['shared'], '.3f')}/{_shown(lm['specific'], '.3f')}")
    if results.get("phases_not_settled"):
        lines.append(f"note: {results['phases_not_settled']} phase(s) reached max_duration "
                     "before settling")
    return "\n".join(lines)
