"""Issue 18: the command line fuzzed -- generated arguments and generated experiment
files (the shipped ones, mutated). Every case must end in one of two ways:

* the run passes every check and reaches the work (the work itself is stubbed out here,
  so the fuzz stays fast): the sentinel :class:`Reached`;
* or one line ``neuro-meta...: error: ...`` on stderr and exit status 2.

Anything else -- a traceback, another status, several lines, a hang -- fails.
"""
import copy
import re

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuro_meta import cli
from neuro_meta.experiments import bandit, gradcheck, omniglot, sinusoid, vsml
from neuro_meta.metatrain import MetaTrainer
from neuro_meta.models import load_model

CASES = {"argv": 0, "files": 0, "reached": 0, "refused": 0}
#: The generators that ran in this process (test_case_count needs all of them here).
RAN = set()


class Reached(BaseException):
    """The run got past every check to the work."""


def _reached(*args, **kwargs):
    raise Reached()


@pytest.fixture
def stubbed(monkeypatch):
    monkeypatch.setattr(sinusoid, "_run_cml", _reached)
    monkeypatch.setattr(sinusoid, "_run_baseline", _reached)
    monkeypatch.setattr(MetaTrainer, "evaluate", _reached)      # consolidation's first work
    monkeypatch.setattr(MetaTrainer, "train", _reached)
    monkeypatch.setattr(gradcheck, "exact_meta_gradient", _reached)
    monkeypatch.setattr(omniglot, "final_scores", _reached)     # omniglot's first work
    monkeypatch.setattr(bandit.bl, "train_baseline", _reached)  # bandit's (maml only)
    monkeypatch.setattr(bandit, "run_deployment", _reached)     # (no meta-learned method)
    monkeypatch.setattr(vsml.V.ESTrainer, "train", _reached)    # vsml's first work
    monkeypatch.setattr(vsml, "tune_readout", _reached)         # (without vsml)
    monkeypatch.setattr(vsml, "data_sets", _memo_data_sets)


_DATA = {}
_data_sets = vsml.data_sets


def _memo_data_sets(cfg):
    """vsml's data sets (a PCA of the meta-training images), built once per distinct
    ``data`` section: the checks run on every case, the work once."""
    key = repr(cfg.get("data"))
    if key not in _DATA:
        _DATA[key] = _data_sets(cfg)
    return _DATA[key]


def outcome(argv, capsys):
    """'reached', or 'refused' (one error line, status 2, nothing else: a warning the
    settings raised while they were read is dropped with them); anything else raises."""
    try:
        code = cli.main(argv)
    except Reached:
        capsys.readouterr()
        CASES["reached"] += 1
        return "reached"
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and re.match(r"neuro-meta[\w -]*: error: ", lines[0]), (argv, err)
    CASES["refused"] += 1
    return "refused"


# ------------------------------------------------------------------ arguments
JUNK = ["-1", "0", "1.5", "x", "", "nan", "inf", "1e308", "-1e-320", "99999999999999999999",
        "[1, 2]", "{a: 1}", "null", "true", "--", "0,0", "1,a"]
SET_KEYS = ["meta.steps", "meta.meta_batch", "meta.learning_rate", "meta.eval_tasks",
            "meta.eval_every", "meta.seed", "meta.clip", "meta.lam_min", "learner.dt",
            "learner.tol", "learner.settle", "learner.integrator", "learner.substeps",
            "learner.max_duration", "family.shots", "family.val", "family.amplitude",
            "network.sizes", "network.lam_init", "network.tau_synapse", "cml.beta",
            "cml.estimator", "compare.budget_s", "compare.targets", "compare.val_tasks",
            "compare.average", "compare.workers", "meta.omega_decay",
            "network.lam_bias_init", "baselines.weight_decay",
            "baselines.steps", "baselines.meta_batch", "baselines.learning_rate",
            "baselines.eval_every", "baselines.maml", "baselines.maml.inner_lr", "meta.nope",
            "baselines.anil", "baselines.anil.inner_steps", "baselines.anil.first_order",
            "nope.x", "meta", "", "quick", "methods", "family.n_in", "meta.optimizer",
            "meta.schedule", "baselines.schedule", "es.schedule", "cml.schedule",
            "meta.tie_readout", "baselines.tie_readout"]
SET_VALUES = JUNK + ["1", "3", "0.01", "1e-3", "solve", "rk4", "[1, 4, 1]", "[0.5, 1.0]",
                     "{inner_lr: 0.01}", "[cml]", "adam", "true", "false",
                     "{kind: cosine, steps: 3, end: 0.1}", "{kind: [1]}", "{kind: cosine}",
                     "{kind: cosine, steps: budget, end: 0.1}",
                     "{kind: cosine, steps: Budget, end: 0.1}",
                     "{kind: piecewise, boundaries: [1, 2], scales: [0.5, .nan]}"]


@st.composite
def argvs(draw, tmp):
    exp = draw(st.sampled_from(["sinusoid", "consolidation", "sinusoid_dual", "vsml",
                                "omniglot", "omniglot_long", "bandit", "nope",
                                str(tmp / "missing.yaml"),
                                str(tmp / "afile")]))
    argv = ["run", exp]
    opts = draw(st.lists(st.sampled_from(
        ["--seed", "--seeds", "--set", "--budget", "--methods", "--model", "--curves",
         "--workers", "--executor", "--out", "--quick", "--resume", "--models",
         "--scheduler-timeout", "--ways", "--shots", "--checkpoint-every"]), max_size=5))
    out = None
    for o in opts:
        if o in ("--quick", "--resume"):
            argv.append(o)
        elif o == "--set":
            argv += [o, draw(st.sampled_from(SET_KEYS)) + "=" + draw(st.sampled_from(SET_VALUES))]
        elif o == "--out":
            out = draw(st.sampled_from([tmp / "o", tmp / "afile", tmp / "afile" / "sub", "",
                                        tmp / "damaged"]))
            argv += [o, str(out)]
        elif o == "--models":
            argv += [o, draw(st.sampled_from([str(tmp), str(tmp / "nowhere"), ""]))]
        elif o == "--executor":
            argv += [o, draw(st.sampled_from(["serial", "x", ""]))]
        elif o == "--model":
            argv += [o, draw(st.sampled_from(["dual", "readout", "complex", "x"]))]
        elif o == "--methods":
            argv += [o, draw(st.sampled_from(["cml", "bogus", "", ",", "cml,cml", "maml,x",
                                              "reptile,untrained", "anil", "anil,cml",
                                              "anil_fo", "anil_fo,anil", "anil_fo,x"]))]
        else:
            argv += [o, draw(st.sampled_from(JUNK + ["2", "none", "0.5"]))]
    if out is None:
        argv += ["--out", str(tmp / "o")]
    return argv + ["--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "afile").write_text("not a folder")
    for seed, name, text in ((0, "partial.json", '{"methods": '),        # --seeds --resume:
                             (1, "cml_checkpoint.npz", "not a zip")):   # refused up front
        (tmp / "damaged" / f"seed_{seed}").mkdir(parents=True)
        (tmp / "damaged" / f"seed_{seed}" / name).write_text(text)
    return tmp


@pytest.mark.filterwarnings("ignore:--resume.*holds no partial results")   # (fresh folders)
@settings(max_examples=450, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_arguments(stubbed, folder, capsys, data):
    argv = data.draw(argvs(folder))
    CASES["argv"] += 1
    RAN.add("arguments")
    outcome(argv, capsys)


# ------------------------------------------------------------------ files
BAD_VALUES = [None, -1, 0, 1.5, "x", float("nan"), float("inf"), 10 ** 30, [], [1, "a"],
              {"a": 1}, True, -1e-320, "1e3", [[[]]]]


def _paths(tree, prefix=()):
    out = []
    for k, v in tree.items():
        if str(k).startswith("_"):
            continue
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


@st.composite
def mutated(draw, base):
    cfg = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(cfg)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node = cfg
        for p in path[:-1]:
            node = node[p]
        how = draw(st.sampled_from(["delete", "junk", "unknown", "junk", "swap"]))
        if how == "delete":
            del node[path[-1]]
        elif how == "junk":
            node[path[-1]] = copy.deepcopy(draw(st.sampled_from(BAD_VALUES)))  # unshared
        elif how == "unknown":
            target = node[path[-1]] if isinstance(node[path[-1]], dict) else node
            target[draw(st.sampled_from(["stepz", "beta2", "x", "meta", "sizes "]))] = 1
        else:                                   # a section's value where a number was
            meta = cfg.get("meta")
            node[path[-1]] = draw(st.sampled_from(
                [copy.deepcopy(meta) if isinstance(meta, dict) else {"steps": 1}, "meta"]))
    return cfg


def _dump(cfg, path, experiment):
    body = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    body.setdefault("experiment", experiment)
    path.write_text(yaml.safe_dump(body, default_flow_style=None, allow_unicode=True)
                    .replace("nan", ".nan").replace("inf", ".inf"))


BASES = {name: load_model(name) for name in ("sinusoid", "sinusoid_dual", "consolidation",
                                             "omniglot", "omniglot_long", "bandit", "vsml")}


@settings(max_examples=350, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(sorted(BASES)), quick=st.booleans())
def test_generated_experiment_files(stubbed, folder, capsys, data, name, quick):
    cfg = data.draw(mutated(BASES[name]))
    path = folder / f"mut_{name}.yaml"
    _dump(cfg, path, BASES[name]["experiment"])
    CASES["files"] += 1
    RAN.add("files")
    argv = ["run", str(path), "--out", str(folder / "o"), "--no-progress"]
    outcome(argv + (["--quick"] if quick else []), capsys)


GRADCHECK = load_model("gradcheck")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_gradcheck_files(stubbed, folder, capsys, monkeypatch, data):
    cfg = data.draw(mutated(GRADCHECK))
    d = folder / "gc"
    d.mkdir(exist_ok=True)
    _dump(cfg, d / "gradcheck.yaml", "gradcheck")
    monkeypatch.setenv("NEURO_META_MODELS", str(d))
    CASES["files"] += 1
    RAN.add("gradcheck")
    outcome(["gradcheck", "--out", str(folder / "g"), "--no-progress"], capsys)


@pytest.fixture(scope="module")
def alphabet_dirs(tmp_path_factory):
    """Folders for ``neuro-meta alphabets``: a finished tiny omniglot run, a copy whose
    results.json is not JSON, one of another experiment's, an empty one."""
    import json
    import shutil

    tmp = tmp_path_factory.mktemp("alphabets_fuzz")
    tiny = ["network.hidden=[8]", "network.lam_init=[2.0, 0.1]", "compare.budget_s=null",
            "meta.steps=2", "meta.eval_every=2", "baselines.steps=2", "baselines.eval_every=2",
            "compare.val_tasks=4", "meta.eval_tasks=4", "final.test_tasks=4",
            "meta.meta_batch=2", "baselines.meta_batch=2", "compare.workers=1",
            "final.other_shots=null", "final.official_runs=false"]
    omniglot.run(tmp / "run", progress=False, methods="cml,maml", overrides=tiny)
    shutil.copytree(tmp / "run", tmp / "badjson")
    (tmp / "badjson" / "results.json").write_text("{")
    (tmp / "other").mkdir()
    (tmp / "other" / "results.json").write_text(json.dumps({"config": {
        "experiment": "sinusoid"}, "methods": {}}))
    (tmp / "empty").mkdir()
    for keep, drop in (("cml", "maml"), ("maml", "cml")):     # for combine: one method each
        shutil.copytree(tmp / "run", tmp / f"{keep}_only")
        res = json.loads((tmp / "run" / "results.json").read_text())
        for k in ([drop, "cml_untrained"] if drop == "cml" else [drop]):
            res["methods"].pop(k)
            res["history"].pop(k, None)
        res["gaps"] = {}
        (tmp / f"{keep}_only" / "results.json").write_text(json.dumps(res))
    for src, dst, seed in (("cml_only", "cml_s1", 1), ("maml_only", "maml_s1", 1),
                           ("maml_only", "oddseed", "x")):     # combine across seeds
        shutil.copytree(tmp / src, tmp / dst)
        res = json.loads((tmp / dst / "results.json").read_text())
        res["config"]["meta"]["seed"] = seed
        (tmp / dst / "results.json").write_text(json.dumps(res))
    # a --seeds folder (seeds 0 and 1, put together by combine) and a run of seed 2: the
    # folder beside it counts as its seed folders (a seed added to a comparison)
    for k in (1, 2):
        omniglot.run(tmp / f"run_s{k}", progress=False, seed=k, methods="cml,maml",
                     overrides=tiny)
    omniglot.combine([tmp / "run", tmp / "run_s1"], tmp / "seeds01")
    return tmp


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_alphabets_arguments(monkeypatch, alphabet_dirs, capsys, data):
    """``neuro-meta alphabets``: every generated command line reaches the scoring (stubbed)
    or is refused in one line with status 2."""
    for name in ("cml_errors", "baseline_errors", "pixel_nn_errors"):
        monkeypatch.setattr(omniglot, name, _reached)
    d = data.draw(st.sampled_from(["run", "badjson", "other", "empty", "nowhere", ""]))
    argv = ["alphabets", str(alphabet_dirs / d) if d else ""]
    for o in data.draw(st.lists(st.sampled_from(["--tasks", "--methods", "--serial",
                                                 "--bogus"]), max_size=3)):
        if o == "--tasks":
            argv += [o, data.draw(st.sampled_from(JUNK + ["2", "400"]))]
        elif o == "--methods":
            argv += [o, data.draw(st.sampled_from(["cml", "maml,cml", "pixel_nn", "imaml",
                                                   "", ",", "cml,cml", "bogus"]))]
        else:
            argv.append(o)
    CASES["argv"] += 1
    RAN.add("alphabets")
    outcome(argv + ["--no-progress"], capsys)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_combine_arguments(monkeypatch, alphabet_dirs, capsys, data):
    """``neuro-meta combine``: every generated command line reaches the writing
    (stubbed) or is refused in one line with status 2, and leaves no folder of its own
    behind."""
    monkeypatch.setattr(omniglot, "_write_combined", _reached)
    names = ["cml_only", "maml_only", "run", "badjson", "other", "empty", "nowhere", "",
             "cml_s1", "maml_s1", "oddseed", "seeds01", "seeds01/seed_1", "run_s2"]
    dirs = data.draw(st.one_of(st.permutations(["cml_only", "maml_only"]),
                               st.permutations(["cml_only", "maml_only", "cml_s1",
                                                "maml_s1"]),
                               st.permutations(["seeds01", "run_s2"]),
                               st.lists(st.sampled_from(names), max_size=4)))
    argv = ["combine"] + [str(alphabet_dirs / d) if d else "" for d in dirs]
    opts = data.draw(st.lists(st.sampled_from(["--out", "--curves", "--no-progress",
                                               "--bogus"]), max_size=3))
    if data.draw(st.booleans()):
        opts = ["--out"] + [o for o in opts if o != "--out"]
    for o in opts:
        if o == "--out":
            argv += [o, data.draw(st.sampled_from(
                [str(alphabet_dirs / "fresh_out"), str(alphabet_dirs / "fresh_out"),
                 str(alphabet_dirs / "cml_only"), str(alphabet_dirs / "seeds01" / "seed_0"),
                 str(alphabet_dirs / "run"), str(alphabet_dirs), ""]))]
        elif o == "--curves":
            argv += [o, data.draw(st.sampled_from(["time", "steps", "x", ""]))]
        else:
            argv.append(o)
    CASES["argv"] += 1
    RAN.add("combine")
    outcome(argv, capsys)
    assert not [p for p in alphabet_dirs.iterdir() if ".combine-" in p.name]


def test_case_count():
    """The fuzz above ran its cases (when run as a whole): >= 800, and both outcomes
    occur (the generators reach the work as well as the refusals)."""
    if RAN != {"arguments", "files", "gradcheck", "alphabets", "combine"}:  # (xdist: elsewhere)
        pytest.skip("run with all the fuzz tests above in this process")
    assert CASES["argv"] + CASES["files"] >= 800
    print(CASES)
    assert CASES["reached"] >= 50 and CASES["refused"] >= 400, CASES
