"""``neuro-meta describe NAME``: what a model file builds -- the model kind, its fast
variables and meta-parameters, the learning process -- and which engine runs its phases
(and why the others do not), on a batch of the experiment's own tasks."""
import numpy as np

from ..metatrain import TRAIN, task_rng
from ..models import load_model


def build(name, dirs=()):
    """(configuration, model kind, learner, a batch of tasks) of the model file ``name``
    (``dirs``: folders searched before the shipped files)."""
    cfg = load_model(name, dirs=dirs)
    if "problem" in cfg:                       # gradcheck
        from .gradcheck import build_problem

        net, task = build_problem(cfg)
        from ..cml import default_learner

        return cfg, net, default_learner(net, 1e-10), task
    if cfg.get("experiment") == "vsml":
        from ..errors import ValidationError

        raise ValidationError(
            f"neuro-meta describe.name: {cfg['_file']} is the VSML experiment, whose "
            "synapses are LSTMs meta-trained by evolution strategies -- no model kind with "
            "a learning process to describe (see docs/vsml.md) (got 'vsml')")
    if cfg.get("experiment") == "omniglot":   # the complex-synapse classifier
        from . import omniglot

        cfg = omniglot.effective_config(cfg)
        learner, trainer = omniglot.build_cml(cfg, omniglot.families(cfg))
        return cfg, trainer.net, learner, trainer.family.sample(task_rng(0, TRAIN, 1),
                                                                 trainer.meta_batch)
    if cfg.get("experiment") == "bandit":     # the wheel bandit's dual system
        from .bandit import build_trainer, family

        fam = family(cfg)
        trainer = build_trainer(cfg, "cml_dual", fam)
    elif isinstance(cfg.get("family"), dict) and "n_in" in cfg["family"]:   # consolidation
        from .consolidation import build as build_consolidation

        fam, trainer = build_consolidation(cfg)
    else:                                      # sinusoid (complex or dual)
        from .sinusoid import build_cml

        fam, trainer = build_cml(cfg)
    learner, _ = trainer.cml.learners(trainer.net)
    return cfg, trainer.net, learner, fam.sample(task_rng(0, TRAIN, 1), trainer.meta_batch)


def describe(name, dirs=()):
    """The description as text."""
    cfg, net, learner, task = build(name, dirs)
    theta = net.theta
    lines = [f"model file: {cfg['_file']}",
             f"model kind: {net.kind_name} -- {net!r}",
             "fast variables (per task): " + ", ".join(
                 f"{n} {np.shape(p)}{'' if pl else ' (static)'}"
                 for n, p, pl in zip(net.fast_names, net.phi0, net.plastic)),
             "meta-parameters: " + ", ".join(
                 f"{k} {[np.shape(a) for a in v if a is not None]}" for k, v in theta.items()
                 if any(a is not None for a in v)),
             f"probeable: {', '.join(net.probeable)}; rules: {', '.join(net.rules)}", ""]
    xt, yt, _, _ = task.as_batch()
    lines.append(learner.describe(net, xt, yt))
    return "\n".join(lines)
