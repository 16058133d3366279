"""``neuro-meta gradcheck``: the CML theory as a figure.

On a fixed single-layer linear complex-synapse problem (``models/gradcheck.yaml``), the
relative error of the CML meta-gradient against the exact one (implicit
differentiation) is measured

* against β with (nearly) exact phases: the standard estimator's error falls like β, the
  symmetric one's like β²;
* against the phases' settling tolerance δ at several β: an error floor growing like δ/β,
  hence an optimal β for a given compute budget.
"""
import textwrap
import time
import warnings

import numpy as np

from .. import optim
from ..cml import CML, UnsettledEstimateWarning
from ..exact import exact_meta_gradient
from ..io import reads_results, save_figure, write_results
from ..learning import Learner
from ..errors import ValidationError
from ..models import check_run_args, load_model
from ..tasks import Task


def relative_error(g, g_ref):
    a, b = optim.tree_vector(g), optim.tree_vector(g_ref)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


PROBLEM_KEYS = ("seed", "n_in", "n_out", "shots", "val", "noise", "activation", "lam_range",
                "tau_neuron", "tau_synapse")
SWEEP_KEYS = ("betas", "tight_tol", "fit_range", "tol_betas", "tols")


def check_cfg(cfg):
    """The gradcheck file checked before any work: its sections and keys (unknown ones
    with a "did you mean"), and the sweeps' values (positive numbers, a fit range of
    two, at least two betas inside it)."""
    from .. import _params as P
    from ..models import check_top_level, checked, section

    where = cfg.get("_file", "<config>")
    check_top_level(cfg, ("problem", "sweeps"))
    p = section(cfg, "problem", required=PROBLEM_KEYS)
    sw = section(cfg, "sweeps", required=SWEEP_KEYS)
    limits = {"seed": None, "n_in": 10_000, "n_out": 10_000, "shots": 100_000,
              "val": 100_000}          # a dense exact reference: small problems only
    for key, high in limits.items():
        v = checked(where, f"problem.{key}", P.integer, p[key], "problem", key,
                    low=0 if key == "seed" else 1)
        if high is not None and v > high:
            raise ValidationError(f"{where}: problem.{key}: must be <= {high} (the exact "
                                  f"reference is dense) (got {v})")
    checked(where, "problem.noise", P.real, p["noise"], "problem", "noise", low=0.0)
    lr = p["lam_range"]             # lambda ~ U(lo, hi) per synapse
    if not isinstance(lr, list) or len(lr) != 2:
        raise ValidationError(f"{where}: problem.lam_range: must be a list [low, high] of "
                              f"two positive numbers (got {lr!r:.60})")
    lo, hi = (checked(where, "problem.lam_range", P.real, x, "problem", f"lam_range[{i}]",
                      low=0.0, low_open=True) for i, x in enumerate(lr))
    if lo > hi:
        raise ValidationError(f"{where}: problem.lam_range: low must be <= high "
                              f"(got {lr})")

    def positives(key, n=None):
        v = sw[key]
        if not isinstance(v, list) or not v or (n is not None and len(v) != n):
            raise ValidationError(f"{where}: sweeps.{key}: must be a list of "
                                  f"{n or 'one or more'} positive numbers (got {v!r:.60})")
        return [checked(where, f"sweeps.{key}", P.real, x, "sweeps", f"{key}[{i}]",
                        low=0.0, low_open=True) for i, x in enumerate(v)]
    betas, fit = positives("betas"), positives("fit_range", 2)
    positives("tol_betas")
    positives("tols")
    checked(where, "sweeps.tight_tol", P.real, sw["tight_tol"], "sweeps", "tight_tol",
            low=0.0, low_open=True)
    if sum(fit[0] <= b <= fit[1] for b in betas) < 2:
        raise ValidationError(f"{where}: sweeps.fit_range: must hold at least two of the "
                              f"betas to fit a slope (got {fit})")
    return cfg


def build_problem(cfg):
    """Network and task of the gradcheck problem from its configuration."""
    from ..network import RateNetwork
    from ..synapses import ComplexSynapse

    p = cfg["problem"]
    rng = np.random.default_rng(p["seed"])
    n_in, n_out = p["n_in"], p["n_out"]
    teacher = rng.normal(size=(n_out, n_in))
    x = rng.normal(size=(p["shots"], n_in))
    xv = rng.normal(size=(p["val"], n_in))
    y = x @ teacher.T + p["noise"] * rng.normal(size=(p["shots"], n_out))
    yv = xv @ teacher.T + p["noise"] * rng.normal(size=(p["val"], n_out))
    net = RateNetwork([n_in, n_out], activation=p["activation"], bias=False,
                      tau_neuron=p["tau_neuron"], tau_synapse=p["tau_synapse"],
                      synapse=ComplexSynapse(omega=rng.normal(size=(n_out, n_in)),
                                             lam=rng.uniform(*p["lam_range"],
                                                             size=(n_out, n_in))))
    return net, Task(x, y, xv, yv)


def fitted_slope(betas, errors):
    """Slope of log error against log β, fitted over the points whose error is positive
    and finite (an error of exactly 0 -- an estimate equal to the reference to the last
    digit -- has no logarithm); None if fewer than two such points remain."""
    ok = np.isfinite(errors) & (errors > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(betas[ok]), np.log(errors[ok]), 1)[0])


def run(out_dir, cfg=None, progress=True):
    """Run the sweeps, write ``results.json`` and ``gradcheck.png`` to ``out_dir``."""
    check_run_args("run gradcheck", out_dir, cfg, progress=progress)
    cfg = check_cfg(cfg or load_model("gradcheck"))
    net, task = build_problem(cfg)
    t0 = time.perf_counter()
    g_ref = exact_meta_gradient(net, task, tol=1e-13)
    sw = cfg["sweeps"]
    betas = np.array(sw["betas"], dtype=float)
    tols = np.array(sw["tols"], dtype=float)
    err_beta, err_tol = _sweeps(net, task, g_ref, sw, progress)
    fit = sw["fit_range"]
    sel = (betas >= fit[0]) & (betas <= fit[1])
    slopes = {est: fitted_slope(betas[sel], np.array(errs, dtype=float)[sel])
              for est, errs in err_beta.items()}
    results = {
        "beta": betas,
        "error_vs_beta": err_beta,
        "fitted_slope": slopes,
        "fit_range": fit,
        "tolerance_sweep": {"tol": tols, "error_by_beta": {str(k): v for k, v in err_tol.items()}},
        "reference": "exact_meta_gradient (implicit differentiation, dense Hessian)",
        "error_definition": "||g_cml - g_exact||_2 / ||g_exact||_2 over all meta-parameters",
        "wall_time_s": time.perf_counter() - t0,
        "config": cfg,
    }
    out_dir = _out(out_dir)
    write_results(out_dir / "results.json", results)
    _plot(out_dir, betas, err_beta, tols, err_tol)
    return results


def _sweeps(net, task, g_ref, sw, progress):
    """Relative errors of CML against ``g_ref``: vs β for tight phases (standard and
    symmetric), and vs the phases' tolerance for a few β."""
    from .._progress import bar as tqdm

    betas, tols = sw["betas"], sw["tols"]
    bar = tqdm(total=2 * len(betas) + len(sw["tol_betas"]) * len(tols), desc="gradcheck",
               disable=not progress)

    def error(beta, estimator, tol):
        learner = Learner(rule="delta", integrator="rk4", tol=tol)
        with warnings.catch_warnings():     # the tolerance sweep reaches beta ~ tol on
            warnings.simplefilter("ignore", UnsettledEstimateWarning)      # purpose
            cml = CML(beta=beta, estimator=estimator, learner=learner)
        g = cml.meta_gradient(net, task)
        bar.update()
        return relative_error(g, g_ref)

    err_beta = {est: [error(b, est, float(sw["tight_tol"])) for b in betas]
                for est in ("standard", "symmetric")}
    err_tol = {float(b): [error(b, "symmetric", float(t)) for t in tols]
               for b in sw["tol_betas"]}
    bar.close()
    return err_beta, err_tol


def plottable(x, errors):
    """``(x, errors)`` restricted to the points where every series' error is positive
    and finite (log axes: an error of exactly 0 -- an estimate equal to the reference to
    the last digit -- has no place on them); ``errors``: dict name -> values per x."""
    x = np.asarray(x, dtype=float)
    arrays = {k: np.asarray(v, dtype=float) for k, v in errors.items()}
    keep = np.ones(x.size, dtype=bool)
    for a in arrays.values():
        keep &= np.isfinite(a) & (a > 0)
    return x[keep], {k: a[keep] for k, a in arrays.items()}


def _plot(out_dir, betas, err_beta, tols, err_tol):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    with plt.rc_context(plotting.STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for ax, draw, x, errs in ((axes[0], plotting.gradient_error_vs_beta, betas,
                                   err_beta),
                                  (axes[1], plotting.gradient_error_vs_tolerance, tols,
                                   err_tol)):
            x, errs = plottable(x, errs)
            if x.size:
                draw(x, errs, ax=ax)
            else:
                ax.text(0.5, 0.5, "no positive finite errors to draw on log axes",
                        ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        save_figure(fig, out_dir / "gradcheck.png")
        plt.close(fig)


def _out(d):
    from pathlib import Path

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    return d


@reads_results("gradcheck.summary_table", "a gradcheck run's results")
def summary_table(results):
    """Text table of the β sweep, under a title saying what it holds and in which units."""
    tol = ((results.get("config") or {}).get("sweeps") or {}).get("tight_tol")
    lines = textwrap.wrap(
        "CML meta-gradient error against the nudging strength β (both dimensionless): "
        "the relative error ‖g_cml\u2009−\u2009g_exact‖/‖g_exact‖ over all "
        "meta-parameters of the standard and the symmetric estimator, phases settled"
        + (f" to tolerance δ = {tol:g}" if isinstance(tol, (int, float)) else "")
        + "; exact reference by implicit differentiation", 100) + [
             f"{'beta':>10} {'standard':>12} {'symmetric':>12}"]
    def num(value, spec):       # None: a value results.json holds as null
        return "n/a" if value is None or not np.isfinite(value) else format(value, spec)

    for i, b in enumerate(results["beta"]):
        lines.append(f"{b:>10.1e} {num(results['error_vs_beta']['standard'][i], '.3e'):>12} "
                     f"{num(results['error_vs_beta']['symmetric'][i], '.3e'):>12}")
    s = results["fitted_slope"]
    lines.append(f"fitted slopes: standard {num(s['standard'], '.2f')} (theory 1), "
                 f"symmetric {num(s['symmetric'], '.2f')} (theory 2)")
    return "\n".join(lines)
