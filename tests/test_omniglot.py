"""The Omniglot experiment (issue 19): the pieces against direct computations, the
whole run on tiny settings, resume, executors and the command line's doors."""
import json

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import baselines as bl
from neuro_meta.cli import main
from neuro_meta.errors import ValidationError
from neuro_meta.datasets import omniglot_runs
from neuro_meta.experiments import omniglot as og

TINY = ["network.hidden=[8]", "network.lam_init=[2.0, 0.1]", "compare.budget_s=null", "meta.steps=3", "meta.eval_every=3",
        "baselines.steps=4", "baselines.eval_every=2", "compare.val_tasks=6",
        "meta.eval_tasks=6", "final.test_tasks=8", "meta.meta_batch=4",
        "baselines.meta_batch=4"]


def test_pixel_nn_against_a_direct_loop(rng):
    fam = nm.FewShotClassification.omniglot("test", ways=4, shots=2, queries=3)
    task = fam.sample(rng, 3)
    got = og.pixel_nn_errors(task)
    for t in range(3):
        wrong = 0
        for q in range(task.x_val.shape[1]):
            d = [np.sum((task.x_val[t, q] - s) ** 2) for s in task.x_train[t]]
            wrong += task.y_train[t, int(np.argmin(d))].argmax() != task.y_val[t, q].argmax()
        assert got[t] == pytest.approx(wrong / task.x_val.shape[1])


def test_lam_bias_init_sets_the_biases_lambda_per_connection():
    """network.lam_bias_init: the biases' λ of each connection as given (null: the mean of
    the weights' λ, the synapse's default); the weights and everything else unchanged."""
    base = og.build_net(og._cfg(), 0)
    net = og.build_net(og._cfg(overrides=["network.lam_bias_init=[0.5, 0.25, null]"]), 0)
    for c, ref, want in zip(net.connections, base.connections, (0.5, 0.25, 0.1)):
        np.testing.assert_array_equal(c.lam[:, -1], np.full(c.n_post, want))
        np.testing.assert_array_equal(c.lam[:, :-1], ref.lam[:, :-1])
        np.testing.assert_array_equal(c.omega, ref.omega)
    np.testing.assert_array_equal(base.connections[0].lam[:, -1], 2.0)    # the default
    one = og.build_net(og._cfg(overrides=["network.lam_bias_init=0.3"]), 0)
    assert all(np.all(c.lam[:, -1] == 0.3) for c in one.connections)


def test_omega_decay_reaches_cml_and_the_dual_system():
    cfg = og._cfg(overrides=["meta.omega_decay=0.002"])
    fams = og.families(cfg)
    assert og.build_cml(cfg, fams)[1].omega_decay == 0.002
    assert og.build_cml(cfg, fams, model="dual")[1].omega_decay == 0.002  # W, bias, readout


def test_official_task_is_the_twenty_runs():
    task = og.official_task()
    runs = omniglot_runs()
    assert task.x_train.shape == (20, 20, 784) and task.y_val.shape == (20, 20, 20)
    for r in (0, 7, 19):
        for i in (0, 11):
            j = int(task.y_val[r, i].argmax())
            assert j == runs.answers[r][i]
            np.testing.assert_array_equal(task.x_val[r, i], runs.test[r, i].ravel())
        np.testing.assert_array_equal(task.y_train[r], np.eye(20))


def test_widened_heads_treat_every_class_alike(rng):
    """Widening gives every class the mean row: before learning, all 20 logits equal; a
    head whose rows are already equal is unchanged by widening to its own width."""
    net = nm.RateNetwork([784, 6, 5], activation=["tanh", "linear"], loss="cross_entropy",
                         tau_neuron=0, seed=1)
    wide = og.widen_theta(net, 20)
    x = rng.random((3, 784))
    out = wide.predict(x)
    assert out.shape == (3, 20) and np.allclose(out, out[:, :1])
    again = og.widen_theta(wide, 20)
    for k in wide.theta:
        for a, b in zip(wide.theta[k], again.theta[k]):
            assert (a is None and b is None) or np.allclose(a, b, rtol=1e-14, atol=1e-16)
    params = bl.init_mlp([784, 6, 5], seed=2)
    p20 = og.widen_params(params, 20)
    y = bl.mlp_predict(p20, x)
    assert y.shape == (3, 20) and np.allclose(y, y[:, :1])


def test_tiny_run_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    res = og.run(out, progress=False, methods="cml,maml,untrained", overrides=TINY)
    m = res["methods"]
    assert set(m) == {"pixel_nn", "cml_untrained", "cml", "maml", "untrained"}
    for name, r in m.items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["ci95"] > 0, name
        assert 0.0 <= r["official_error"] <= 1.0, name
        assert "other_shots_accuracy" in r
    assert m["cml"]["meta_steps"] == 3 and m["maml"]["meta_steps"] == 4
    # selection used the validation curve only: the selected step is its best point
    h = res["history"]["maml"]
    best = h["step"][int(np.argmax(h["meta_val_accuracy"]))]
    assert m["maml"]["selected_step"] == best
    for f in ("results.json", "omniglot.png", "omniglot_tasks.png",
              "omniglot_consolidation.png"):
        assert (out / f).stat().st_size > 0
    first = json.loads((out / "results.json").read_text())
    # pixel_nn is deterministic and independent of the meta-learners
    again = og.run(out, progress=False, methods="cml,maml,untrained", overrides=TINY,
                   resume=True)
    for name in ("cml", "maml", "pixel_nn", "cml_untrained"):
        assert again["methods"][name]["accuracy"] == first["methods"][name]["accuracy"]
    # a step-bound run is deterministic: a fresh run gives the same numbers
    fresh = og.run(tmp_path / "fresh", progress=False, methods="cml,maml", overrides=TINY)
    for name in ("cml", "maml"):
        assert fresh["methods"][name]["accuracy"] == first["methods"][name]["accuracy"]
    table = og.summary_table(res)
    assert "20-way official err" in table and "people 4.5 %" in table


def test_a_step_cap_that_ends_a_budgeted_run_is_noted_in_the_table(tmp_path):
    """Under a wall-time budget a method stopped by its meta-step cap had less
    meta-training than the others: the table says so, naming the method and the key to
    raise; a method the budget stopped, and a run without a budget, get no note."""
    capped = [o for o in TINY if not o.startswith(("compare.budget_s", "baselines.steps"))]
    res = og.run(tmp_path / "capped", progress=False, methods="cml,maml", overrides=capped
                 + ["compare.budget_s=120", "compare.eval_every_s=60", "baselines.steps=2"])
    m = res["methods"]
    assert m["cml"]["stop_reason"] == "steps" and m["maml"]["stop_reason"] == "steps"
    table = og.summary_table(res)
    for name, steps, key in (("cml", 3, "meta.steps"), ("maml", 2, "baselines.steps")):
        assert (f"note: {name} stopped at its step cap ({steps} meta-steps) before the "
                f"120-s budget ran out: it had less meta-training than the others; raise "
                f"{key} for an equal budget") in table
    m["maml"]["stop_reason"] = "budget"
    assert "note: maml" not in og.summary_table(res) and "note: cml" in og.summary_table(res)
    # without a budget (the step-bound run) a cap is the plan, not a shortfall
    res["config"]["compare"]["budget_s"] = None
    for r in m.values():
        r["budget_s"] = None
    assert "note:" not in og.summary_table(res)


def test_resume_after_cml_finished_plots_the_trained_network(tmp_path, monkeypatch):
    """A run that crashed after CML had finished resumes with CML's results from
    partial.json *and* its selected meta-parameters from the checkpoint: the
    consolidation plot shows the trained network, not the initial one. Without the
    checkpoint the plots are not redrawn (a warning says so); the results stand."""
    seen = []
    monkeypatch.setattr(og, "plot_consolidation", lambda out, net, **kw: seen.append(net.theta))
    out = tmp_path / "run"
    first = og.run(out, progress=False, methods="cml", overrides=TINY)
    (out / "results.json").unlink()             # the crash: partial.json, checkpoint left
    again = og.run(out, progress=False, methods="cml,untrained", overrides=TINY,
                   resume=True)
    assert again["methods"]["cml"] == first["methods"]["cml"] and len(seen) == 2
    initial = og.build_net(og._cfg(overrides=TINY), 0).theta
    for key in ("omega", "lam"):
        for a, b, c in zip(seen[0][key], seen[1][key], initial[key]):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c), key
    (out / "cml_checkpoint.npz").unlink()
    with pytest.warns(UserWarning, match="cml_checkpoint.npz: missing"):
        og.run(out, progress=False, methods="cml", overrides=TINY, resume=True)
    assert len(seen) == 2


def test_resume_checks_the_per_task_accuracies_of_partial_json(tmp_path):
    """A hand-edited ``partial.json`` whose per-task accuracies are not the run's test
    tasks' (wrong count, a value outside [0, 1], not a list) stops the resume at once,
    naming the method and the key -- not at the end of the run, inside task_gaps."""
    out = tmp_path / "run"
    og.run(out, progress=False, methods="untrained", overrides=TINY)
    (out / "results.json").unlink()
    path = out / "partial.json"
    good = json.loads(path.read_text())
    per = good["methods"]["untrained"]["summary"]["accuracy_per_task"]
    n = og._cfg(overrides=TINY)["final"]["test_tasks"]
    assert len(per) == n
    for bad, shown in ((per[:-1], f"{n - 1} values"), (per[:-1] + [1.5], "1.5"),
                       ({"0": 0.5}, "dict")):
        edited = json.loads(json.dumps(good))
        edited["methods"]["untrained"]["summary"]["accuracy_per_task"] = bad
        path.write_text(json.dumps(edited))
        with pytest.raises(nm.ValidationError, match=r"methods\.untrained\.summary\."
                           rf"accuracy_per_task must be a list of {n} .*got .*{shown}"):
            og.run(out, progress=False, methods="untrained", overrides=TINY, resume=True)
    path.write_text(json.dumps(good))            # the untouched file resumes
    again = og.run(out, progress=False, methods="untrained", overrides=TINY, resume=True)
    assert again["methods"]["untrained"]["accuracy_per_task"] == per


def test_resume_checks_summary_and_history_of_partial_json(tmp_path):
    """A ``partial.json`` whose summary lacks its accuracy or whose learning curves are
    broken stops the resume before any work, naming file, method and key (it used to
    end in a KeyError inside the plot, after results.json had been written)."""
    out = tmp_path / "run"
    og.run(out, progress=False, methods="untrained", overrides=TINY)
    (out / "results.json").unlink()
    path = out / "partial.json"
    good = json.loads(path.read_text())
    edits = [(lambda m: m.update(summary={}), r"summary\.accuracy is missing"),
             (lambda m: m["summary"].update(ci95="x"), r"summary\.ci95 is missing"),
             (lambda m: m.update(history={}), r"history \(step"),
             (lambda m: m["history"]["step"].append(1), r"history \(step")]
    for edit, match in edits:
        edited = json.loads(json.dumps(good))
        edit(edited["methods"]["untrained"])
        path.write_text(json.dumps(edited))
        with pytest.raises(nm.ValidationError, match=r"partial\.json: methods\.untrained\."
                           + match):
            og.run(out, progress=False, methods="untrained", overrides=TINY, resume=True)
        assert not (out / "results.json").exists()


def test_baseline_killed_mid_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """``run omniglot --resume`` after a crash during MAML's meta-step 3: MAML continues
    from its checkpoint (step 2, its last evaluation) -- steps 3 and 4 only -- and its
    numbers equal an uninterrupted run's; CML, finished, comes from partial.json."""
    from neuro_meta import checkpoint as ckpt
    from neuro_meta.baselines import MAML

    ref = og.run(tmp_path / "ref", progress=False, methods="cml,maml", overrides=TINY)
    out = tmp_path / "run"
    real, calls = MAML.meta_gradient, []

    def counted(self, params, task):
        calls.append(1)
        if len(calls) == 3 and die:
            raise KeyboardInterrupt
        return real(self, params, task)

    monkeypatch.setattr(MAML, "meta_gradient", counted)
    die = True
    with pytest.raises(KeyboardInterrupt):
        og.run(out, progress=False, methods="cml,maml", overrides=TINY)
    assert ckpt.load(out / "maml_checkpoint.npz")["step"] == 2
    die, calls[:] = False, []
    got = og.run(out, progress=False, methods="cml,maml", overrides=TINY, resume=True)
    assert len(calls) == 2
    timing = ("wall_time_s", "selected_time_s", "time_to_target")
    for name in ("cml", "maml"):
        assert {k: v for k, v in got["methods"][name].items() if k not in timing} == \
            {k: v for k, v in ref["methods"][name].items() if k not in timing}, name
    # the per-task accuracies behind the gap paired over tasks: one per test task, their
    # mean the reported accuracy; the resumed run's gaps are the uninterrupted run's
    for name in ("cml", "maml"):
        per = ref["methods"][name]["accuracy_per_task"]
        assert len(per) == 8 and np.mean(per) == pytest.approx(
            ref["methods"][name]["accuracy"], abs=1e-15)
    assert got["gaps"] == ref["gaps"] and set(ref["gaps"]["cml"]) == {
        "maml", "best", "best_validation"}
    assert "paired over the 8 test tasks" in og.summary_table(ref)


def test_task_gaps_paired_over_tasks_against_scipy(rng):
    """CML minus each MAML-family method on the same tasks: the mean of the per-task
    differences and Student's t (49 df) x their standard error (scipy.stats.sem: the
    95 % interval of scipy.stats.t.interval); "best" is the
    baseline with the highest accuracy; the pixel NN, methods without per-task
    accuracies and CML methods without any baseline are left out."""
    from scipy import stats

    acc = {n: rng.uniform(0.3, 0.9, 50) for n in ("cml", "maml", "fomaml", "pixel_nn")}
    acc["fomaml"] = acc["cml"] + rng.normal(0.05, 0.02, 50)     # correlated with CML
    methods = {n: {"accuracy": float(a.mean()), "accuracy_per_task": a.tolist()}
               for n, a in acc.items()}
    methods["imaml"] = {"accuracy": 0.99}                       # no per-task accuracies
    g = og.task_gaps(methods)
    assert set(g) == {"cml"} and set(g["cml"]) == {"maml", "fomaml", "best"}
    for b in ("maml", "fomaml"):
        d = acc["cml"] - acc[b]
        assert g["cml"][b]["mean"] == pytest.approx(d.mean(), abs=1e-15)
        lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
        assert g["cml"][b]["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
        assert g["cml"][b]["n_tasks"] == 50
    # paired: much tighter than the two accuracies' own intervals combined
    unpaired = 1.96 * np.hypot(stats.sem(acc["cml"]), stats.sem(acc["fomaml"]))
    assert g["cml"]["fomaml"]["ci95"] < unpaired / 3
    best = max(("maml", "fomaml"), key=lambda b: acc[b].mean())
    assert g["cml"]["best"] == dict(g["cml"][best], baseline=best)
    assert og.task_gaps({"cml": methods["cml"], "pixel_nn": methods["pixel_nn"]}) == {}
    # "best_validation": chosen by validation accuracy, whatever the test tasks say --
    # here the baseline that is worse on the test tasks
    worse = min(("maml", "fomaml"), key=lambda b: acc[b].mean())
    for b in ("maml", "fomaml"):
        methods[b]["meta_val_accuracy"] = 0.8 if b == worse else 0.7
    g = og.task_gaps({n: methods[n] for n in ("cml", "maml", "fomaml")})
    assert g["cml"]["best_validation"] == dict(g["cml"][worse], baseline=worse)
    assert g["cml"]["best"] == dict(g["cml"][best], baseline=best)
    assert f"best on validation ({worse})" in og.summary_table(
        {"methods": {n: dict(methods[n], ci95=0.01) for n in ("cml", "maml", "fomaml")},
         "gaps": g, "config": {}})


def test_every_method_identical_on_its_worker_processes(tmp_path):
    """compare.workers = 2 (the shipped value): every method's meta-batches in two pieces,
    on this process and a worker (the default), in this process ("serial") or on a plain
    process pool -- the same numbers."""
    from concurrent.futures import ProcessPoolExecutor

    methods = "cml,maml,reptile"
    over = TINY + ["compare.workers=2"]
    keys = ("accuracy", "official_error", "other_shots_accuracy", "meta_val_accuracy")
    default = og.run(tmp_path / "d", progress=False, methods=methods, overrides=over)
    serial = og.run(tmp_path / "s", progress=False, methods=methods, overrides=over,
                    executor="serial")
    with ProcessPoolExecutor(2) as ex:
        pooled = og.run(tmp_path / "p", progress=False, methods=methods, overrides=over,
                        executor=ex)
    for name in methods.split(","):
        for k in keys:
            assert default["methods"][name][k] == serial["methods"][name][k], (name, k)
            assert pooled["methods"][name][k] == serial["methods"][name][k], (name, k)
    # and the pieces are what a meta-step computes: one piece (workers = 1) agrees to
    # rounding for the baselines, exactly for CML (its tasks are concatenated)
    one = og.run(tmp_path / "1", progress=False, methods="cml", overrides=TINY + [
        "compare.workers=1"])
    for k in keys:
        assert one["methods"]["cml"][k] == serial["methods"]["cml"][k], k


@pytest.mark.parametrize("argv, match", [
    (["run", "omniglot", "--model", "dual"], "--model: only with the shipped sinusoid"),
    (["run", "sinusoid", "--ways", "3"], "--ways: only for the omniglot"),
    (["run", "consolidation", "--curves", "steps"],
     "--curves: only for the sinusoid and omniglot and bandit experiments (got 'steps' "
     "with consolidation)"),
    (["run", "vsml", "--curves", "time"], "--curves: only for the sinusoid and omniglot"),
    (["run", "omniglot", "--seed", "-1"], "neuro-meta run.--seed: must be >= 0 (got -1)"),
    (["run", "omniglot", "--ways", "1"], "ways: must be >= 2"),
    (["run", "omniglot", "--methods", "cml,bogus"], "methods: must be a comma-separated"),
    (["run", "omniglot", "--seeds", "2", "--seed", "1"], "--seeds: not with --seed"),
    (["run", "omniglot", "--seeds", "2", "--seed", "1", "--resume"], "--seeds: not with --seed"),
    (["run", "omniglot", "--seeds", "0,0"], "seeds must be distinct"),
    (["run", "omniglot", "--set", "family.ways=500"], "ways: must be <="),
    (["run", "omniglot", "--set", "final.test_tasks=1"], "final.test_tasks: must be >= 2"),
    (["run", "omniglot", "--set", "compare.targets=[1.5]"], "compare.targets"),
    (["run", "omniglot", "--set", "compare.average=1.0"],
     ": compare.average: must be < 1.0 (got 1.0)"),
    (["run", "omniglot", "--set", "network.hidden=8"], "network.hidden: must be a list"),
    (["run", "omniglot", "--set", "network.lam_bias_init=[0.5,0.5]"],
     "network.lam_bias_init: needs one value per connection (3)"),
    (["run", "omniglot", "--set", "network.lam_bias_init=[0.5,-1,null]"],
     "network.lam_bias_init[1]: ComplexSynapse.lam_bias: must be >= 0"),
    (["run", "omniglot", "--set", "network.lam_bias_init_x=1"], "did you mean 'lam_bias_init'"),
    (["run", "omniglot", "--set", "meta.omega_decay=-0.1"],
     "MetaTrainer.omega_decay: must be >= 0"),
    (["run", "omniglot", "--methods", "maml", "--set", "baselines.weight_decay=-1"],
     "baselines.weight_decay: must be >= 0"),
])
def test_bad_command_lines_are_one_line(tmp_path, capsys, argv, match):
    assert main(argv + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


@pytest.mark.parametrize("setting, key, extra", [
    ("compare.budget_s=-1", "compare.budget_s", "must be > 0.0 (got -1.0)"),
    ("compare.average=1.0", "compare.average", "must be < 1.0 (got 1.0)"),
    ("family.queries=100", "FewShotClassification.shots", "label 0)")])
def test_config_errors_name_the_key_once(tmp_path, capsys, setting, key, extra):
    """A refused setting names its key once (not "key: key: ...") and shows values
    as a user types them (no numpy reprs such as ``np.int64(0)``)."""
    assert main(["run", "omniglot", "--quick", "--set", setting, "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count(key) == 1 and extra in err and "np." not in err, err


@pytest.mark.parametrize("setting, message", [
    ("baselines.learning_rate=.nan", "baselines.learning_rate: must be finite"),
    ("baselines.meta_batch=0", "baselines.meta_batch: must be >= 1 (got 0)"),
    ("baselines.steps=0", "baselines.steps: must be >= 1 (got 0)"),
    ("baselines.eval_every=1.5", "baselines.eval_every: must be an integer")])
def test_baseline_training_settings_are_refused_before_cml_trains(tmp_path, capsys,
                                                                  setting, message):
    """The MAML family's meta-training settings are checked with every other setting,
    named by file and key -- not after CML has spent its budget (no checkpoint)."""
    out = tmp_path / "o"
    assert main(["run", "omniglot", "--quick", "--methods", "cml,fomaml", "--set", setting,
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "omniglot.yaml: " + message in err, err
    assert not (out / "cml_checkpoint.npz").exists() and not (out / "partial.json").exists()


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    """--resume in a folder with no partial results and no checkpoint (a mistyped
    --out) starts afresh with a warning naming the folder; with partial results there
    is no warning."""
    out = tmp_path / "typo"
    with pytest.warns(UserWarning, match=r"--resume: .*typo holds no partial results"):
        og.run(out, progress=False, methods="untrained", overrides=TINY, resume=True)
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="--resume")
        og.run(out, progress=False, methods="untrained", overrides=TINY, resume=True)


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "omniglot", "--quick", "--methods", "untrained", "--out", "",
                 "--no-progress"]) == 2
    assert "--out: must name a folder" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kw, match", [
    (dict(out_dir=None), "run omniglot.out_dir: must be a folder's path"),
    (dict(out_dir=""), "run omniglot.out_dir"),
    (dict(resume="no"), "run omniglot.resume: must be True or False"),
    (dict(progress=1), "run omniglot.progress: must be True or False"),
    (dict(quick="yes"), "run omniglot.quick: must be True or False"),
    (dict(overrides="meta.seed=3"), "run omniglot.overrides: must be a list")])
def test_run_checks_its_arguments(tmp_path, kw, match):
    args = dict(out_dir=str(tmp_path / "o"), quick=True, methods="untrained",
                progress=False)
    with pytest.raises(nm.ValidationError, match=match):
        og.run(**{**args, **kw})
    assert not (tmp_path / "o").exists()


def test_widen_params_and_build_net_check_their_arguments():
    p = {"w": [np.ones((2, 3))], "b": [np.zeros(2)]}
    assert og.widen_params(p, 4)["w"][0].shape == (4, 3)
    for kw, match in ((dict(params=p, ways=0), "widen_params.ways: must be >= 1"),
                      (dict(params=p, ways=2.5), "widen_params.ways: must be an integer"),
                      (dict(params={"w": p["w"]}, ways=3), "widen_params.params: must be")):
        with pytest.raises(nm.ValidationError, match=match):
            og.widen_params(**kw)
    with pytest.raises(nm.ValidationError, match="build_net.model: must be one of"):
        og.build_net(og._cfg(overrides=TINY), 0, model="foo")


def test_t95_is_students_quantile_and_refuses_what_has_no_interval():
    from scipy import stats
    assert og.t95(20) == pytest.approx(stats.t.ppf(0.975, 19), rel=1e-12)
    assert og.t95(np.int64(600)) == pytest.approx(1.9639, abs=1e-4)
    for bad in (0, 1, -5, 2.5, "a", True):
        with pytest.raises(nm.ValidationError, match="omniglot.t95.n"):
            og.t95(bad)


@pytest.mark.filterwarnings("ignore:--resume.*holds no partial results")
def test_seeds_aggregate_against_separate_runs(tmp_path, capsys, monkeypatch):
    """``--seeds 2``: each seed's numbers are those of a separate run with that seed
    (step-bound, so deterministic), and the aggregate is the mean with Student's t
    interval over the seeds (scipy's t.interval as the reference) and the CML - baseline
    gaps paired by seed; ``--resume`` after a crash gives the same aggregate."""
    from scipy import stats

    argv = ["run", "omniglot", "--seeds", "2", "--methods", "cml,maml,fomaml",
            "--out", str(tmp_path / "s"), "--no-progress"]
    for o in TINY + ["compare.workers=1"]:
        argv += ["--set", o]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "2 seeds (0, 1)" in table and "best of them" in table
    agg = json.loads((tmp_path / "s" / "results.json").read_text())
    assert agg["seeds"] == [0, 1] and (tmp_path / "s" / "seeds.png").stat().st_size > 0
    direct = [og.run(tmp_path / f"d{k}", seed=k, progress=False, methods="cml,maml,fomaml",
                     overrides=TINY + ["compare.workers=1"]) for k in (0, 1)]
    for name in ("cml", "maml", "fomaml", "pixel_nn"):
        m = agg["methods"][name]
        for key in ("accuracy", "other_shots_accuracy", "official_error"):
            vals = [d["methods"][name][key] for d in direct]
            assert m[key + "_per_seed"] == vals, (name, key)
            assert m[key] == pytest.approx(np.mean(vals), abs=1e-15)
            if vals[0] != vals[1]:
                lo, hi = stats.t.interval(0.95, 1, loc=np.mean(vals),
                                          scale=stats.sem(vals))
                assert m[key + "_ci95"] == pytest.approx((hi - lo) / 2, rel=1e-12)
    acc = {n: np.array([d["methods"][n]["accuracy"] for d in direct])
           for n in ("cml", "maml", "fomaml")}
    g = agg["gaps"]["cml"]
    assert g["maml"]["per_seed"] == pytest.approx(acc["cml"] - acc["maml"], abs=1e-15)
    assert g["best"]["per_seed"] == pytest.approx(
        acc["cml"] - np.maximum(acc["maml"], acc["fomaml"]), abs=1e-15)
    val = {n: np.array([d["methods"][n]["meta_val_accuracy"] for d in direct])
           for n in ("maml", "fomaml")}
    pick = np.where(val["fomaml"] > val["maml"], acc["fomaml"], acc["maml"])
    assert g["best_validation"]["per_seed"] == pytest.approx(acc["cml"] - pick, abs=1e-15)
    assert g["best_validation"]["best_per_seed"] == [
        "fomaml" if f > m else "maml" for m, f in zip(val["maml"], val["fomaml"])]
    assert "best on validation" in table
    assert set(g) == {"maml", "fomaml", "best", "best_validation"}  # not pixel_nn
    # --resume after a crash in seed 1, once its CML had finished: seed 0 (not begun)
    # runs, seed 1 reads CML back and trains the rest -- the same aggregate
    og.run(tmp_path / "r" / "seed_1", seed=1, progress=False, methods="cml",
           overrides=TINY + ["compare.workers=1"])
    trained = []
    real = og.MetaTrainer.train
    monkeypatch.setattr(og.MetaTrainer, "train",
                        lambda self, *a, **k: trained.append(1) or real(self, *a, **k))
    argv_r = [a if a != str(tmp_path / "s") else str(tmp_path / "r") for a in argv]
    assert main(argv_r + ["--resume"]) == 0
    assert len(trained) == 1                        # seed 0's CML only
    resumed = json.loads((tmp_path / "r" / "results.json").read_text())
    for name in ("cml", "maml", "fomaml", "pixel_nn"):
        for key in ("accuracy", "other_shots_accuracy", "official_error"):
            assert resumed["methods"][name][key + "_per_seed"] == \
                agg["methods"][name][key + "_per_seed"], (name, key)


def test_one_seed_has_no_interval_and_writes_strict_json(tmp_path):
    """A single seed's spread is unknown: its CI is None (not NaN) in the aggregate, the
    table shows the mean alone, and the JSON is standard (no NaN token)."""
    def res(acc):
        return {"accuracy": acc, "ci95": 0.01, "meta_steps": 5, "wall_time_s": 1.0}
    one = {"methods": {"cml": res(0.6), "maml": res(0.7), "imaml": res(0.5)},
           "history": {}, "config": {"family": {"ways": 5, "shots": 1}, "final": {}}}
    agg = og.aggregate_seeds([3], [one])
    assert agg["methods"]["cml"]["accuracy_ci95"] is None
    assert agg["gaps"]["cml"]["best"]["per_seed"] == pytest.approx([-0.1])
    assert agg["gaps"]["cml"]["best"]["best_per_seed"] == ["maml"]
    json.dumps(agg, allow_nan=False)
    assert "60.0 %" in og.seeds_table(agg) and "-10.0   (per seed: -10.0)" in og.seeds_table(agg)
    og.plot_seeds(tmp_path / "s.png", agg)
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "note:" not in og.seeds_table(agg)
    # a step cap that ended one seed's MAML before its budget is noted, with the seed
    capped = dict(one, methods=dict(one["methods"], maml=dict(
        res(0.7), stop_reason="steps", budget_s=200.0)))
    assert ("seed 3: note: maml stopped at its step cap (5 meta-steps) before the 200-s "
            "budget ran out") in og.seeds_table(og.aggregate_seeds([3], [capped]))


@pytest.mark.parametrize("kw, match", [
    ({"seeds": []}, "seeds: must name at least one seed"),
    ({"seed_jobs": "no"}, "seed_jobs: must be True or False"),
    ({"aggregate_fn": 3}, "aggregate_fn: must be a function"),
])
def test_run_seeds_refuses_bad_arguments_before_any_run(tmp_path, kw, match):
    from neuro_meta.experiments import seeds

    def run(*a, **k):
        raise AssertionError("ran")
    args = dict({"seeds": [0]}, **kw)
    with pytest.raises(nm.ValidationError, match=match):
        seeds.run_seeds(run, tmp_path, args.pop("seeds"), **args)


def test_seed_aggregate_refuses_a_missing_seed():
    with pytest.raises(nm.ValidationError, match="one result per seed"):
        og.aggregate_seeds([0, 1], [{"methods": {}}])


def test_warpgrad_and_cml_warp_run_on_omniglot(tmp_path):
    """The opt-in methods of issue 20 on the same tasks: WarpGrad (and its identity-warp
    control, which starts from the same MLP) and CML with warp layers."""
    res = og.run(tmp_path, progress=False, methods="warpgrad,warpgrad_nowarp,cml_warp",
                 overrides=TINY)
    m = res["methods"]
    assert {"warpgrad", "warpgrad_nowarp", "cml_warp", "pixel_nn"} <= set(m)
    assert m["warpgrad"]["meta_steps"] == 4 and m["cml_warp"]["meta_steps"] == 3
    for name in ("warpgrad", "cml_warp"):
        assert 0.0 <= m[name]["accuracy"] <= 1.0 and 0.0 <= m[name]["official_error"] <= 1.0


def test_cml_dual_runs_on_omniglot_and_widens_its_readout(tmp_path, rng):
    """The opt-in dual system: meta-trained by CML on the same tasks; its 20-way network
    gives every class the mean read-out row (all 20 logits equal for any input), and a
    head already of equal rows is unchanged by widening."""
    res = og.run(tmp_path, progress=False, methods="cml_dual", overrides=TINY)
    m = res["methods"]["cml_dual"]
    assert m["meta_steps"] == 3 and 0.0 <= m["accuracy"] <= 1.0
    assert 0.0 <= m["official_error"] <= 1.0
    cfg = og._cfg(overrides=TINY)
    net = og.build_net(cfg, 1, model="dual")
    assert net.sizes == (784, 8, 5) and net.loss.name == "cross_entropy"
    wide = og.widen_theta(net, 20, og.build_net(cfg, 0, ways=20, model="dual"))
    out = wide.predict(rng.random((3, 784)))
    assert out.shape == (3, 20) and np.allclose(out, out[:, :1], rtol=1e-12)
    assert not np.allclose(net.predict(rng.random((3, 784))), 0.0)
    np.testing.assert_allclose(wide.theta["W"][0], net.theta["W"][0], rtol=0, atol=0)


def test_an_executor_under_a_wall_time_budget_is_refused_when_unfair(tmp_path):
    """The sinusoid run's executor spreads CML's tasks only: with a wall-time budget and
    a baseline in the comparison it would give CML more compute for the same time, so it
    is refused before any work (a fixed step count, or CML alone, is fine). (Omniglot
    spreads every method's meta-batches: see the test above.)"""
    from concurrent.futures import ThreadPoolExecutor

    from neuro_meta.experiments import sinusoid

    with ThreadPoolExecutor(1) as ex:
        with pytest.raises(nm.ValidationError, match=r"run sinusoid\.executor: .*"
                           r"maml.*not be equal compute"):
            sinusoid.run(tmp_path, progress=False, methods="cml,maml", executor=ex,
                         overrides=["compare.budget_s=5"])
        assert not (tmp_path / "results.json").exists()
        sinusoid.check_fair_executor("x", ex, None, ["cml", "maml"], ("cml",))
        sinusoid.check_fair_executor("x", ex, 5.0, ["cml"], ("cml",))


def test_a_damaged_checkpoint_is_refused_before_any_work(tmp_path, monkeypatch):
    """--resume with a damaged checkpoint (CML's, or a later method's): refused before
    anything is scored or trained (CML's used to be refused after cml_untrained was
    scored, MAML's after CML's whole budget)."""
    from neuro_meta import checkpoint as ckpt

    def no_work(*a, **k):
        raise AssertionError("work done before the checkpoint was checked")

    monkeypatch.setattr(og, "pixel_nn_errors", no_work)
    monkeypatch.setattr(og, "cml_errors", no_work)
    for name in ("cml", "maml"):
        out = tmp_path / name
        out.mkdir()
        (out / f"{name}_checkpoint.npz").write_bytes(b"not a checkpoint")
        with pytest.raises(ckpt.CheckpointError, match=rf"{name}_checkpoint\.npz: not a "
                           "readable neuro_meta checkpoint"):
            og.run(out, progress=False, methods="cml,maml", overrides=TINY, resume=True)


def _hand_results():
    """A well-formed one-run results dict written by hand (two methods, no gaps)."""
    h = {"step": [0, 5], "time_s": [0.0, 1.0], "meta_val_accuracy": [0.2, 0.5],
         "meta_test_accuracy": [0.2, 0.4]}
    m = {"accuracy": 0.5, "ci95": 0.05, "official_error": 0.6, "official_ci95": 0.1,
         "accuracy_per_task": [0.4, 0.6], "meta_steps": 5, "wall_time_s": 1.0,
         "selected_step": 5, "meta_val_accuracy": 0.5,
         "time_to_target": {"0.5": None, "0.3": {"time_s": 1.0, "step": 5}}}
    return {"config": {"family": {"ways": 5, "shots": 1}, "final": {"official_runs": True},
                       "compare": {"budget_s": 10.0, "targets": [0.3, 0.5]}},
            "methods": {"cml": dict(m), "maml": dict(m, accuracy=0.55)},
            "history": {"cml": dict(h), "maml": dict(h)}}


def test_time_to_target_heads_are_percentages_like_the_accuracies():
    """The table prints accuracies as percentages, and so the time-to-target targets (the
    model file and results.json keep fractions)."""
    res = _hand_results()
    lines = og.summary_table(res).splitlines()
    cml = next(line for line in lines if line.startswith("cml "))
    assert "50.0 ± 5.0 %" in cml                          # the accuracies: percentages
    i = next(k for k, line in enumerate(lines) if line.startswith("Time to target"))
    assert lines[i + 1].split() == ["method", "≥", "30", "%", "≥", "50", "%"], lines[i + 1]
    assert lines[i + 2].split() == ["cml", "1.0", "s", "not", "reached"]
    assert res["config"]["compare"]["targets"] == [0.3, 0.5]     # the fractions untouched
    assert set(res["methods"]["cml"]["time_to_target"]) == {"0.5", "0.3"}
    assert og.target_label(0.065) == "≥ 6.5 %" and og.target_label(1) == "≥ 100 %"


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.pop("methods"), r"results\.methods: must be the methods' summaries \(a "
     r"mapping\) \(got NoneType\)"),
    (lambda r: r["methods"].update(cml=[1]), r"results\.methods\.cml: must be a method's"),
    (lambda r: r["methods"]["cml"].pop("accuracy"),
     r"results\.methods\.cml: must have 'accuracy'"),
    (lambda r: r["methods"]["maml"].pop("official_error"),
     r"results\.methods\.maml: must have 'official_error'"),
    (lambda r: r["methods"]["cml"].update(ci95="x"),
     r"results\.methods\.cml\.ci95: must be a real number \(got 'x'\)"),
    (lambda r: r["methods"]["cml"].update(accuracy=float("nan")),
     r"results\.methods\.cml\.accuracy: must be finite"),
    (lambda r: r["methods"]["cml"].update(accuracy=55.0),
     r"results\.methods\.cml\.accuracy: must be <= 1\.0 \(got 55\.0\)"),
    (lambda r: r["methods"]["cml"].update(meta_steps=2.5),
     r"results\.methods\.cml\.meta_steps"),
    (lambda r: r["methods"]["cml"]["time_to_target"].update({"0.3": {"step": 1}}),
     r"results\.methods\.cml\.time_to_target\.0\.3\.time_s: must be a real number"),
    (lambda r: r.update(gaps={"cml": {"maml": {"mean": 0.1, "ci95": 0.1}}}),
     r"results\.gaps\.cml\.maml\.n_tasks"),
])
def test_summary_table_and_plot_refuse_malformed_results(tmp_path, edit, match):
    """summary_table and plot on a hand-edited (or older) results dict: one
    ValidationError naming the key and value, never a KeyError or TypeError from inside;
    the intact dict is drawn and tabulated."""
    good = _hand_results()
    assert "cml" in og.summary_table(good)
    og.plot(tmp_path, good)
    assert (tmp_path / "omniglot.png").stat().st_size > 0
    bad = _hand_results()
    edit(bad)
    with pytest.raises(ValidationError, match=r"omniglot\.summary_table\." + match):
        og.summary_table(bad)
    with pytest.raises(ValidationError, match=r"omniglot\.plot\." + match):
        og.plot(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.pop("history"), r"results\.history: must be the methods' learning curves"),
    (lambda r: r["history"]["cml"].update(step=[0]), r"results\.history\.cml: must hold "
     r"step, time_s and both accuracy curves, one value per evaluation"),
    (lambda r: r["history"].update(reptile=r["history"]["cml"]),
     r"results\.history\.reptile: must be the curve of a method in methods"),
    (lambda r: r["config"]["family"].pop("ways"), r"results\.config\.family\.ways"),
])
def test_plot_refuses_malformed_curves(tmp_path, edit, match):
    bad = _hand_results()
    edit(bad)
    with pytest.raises(ValidationError, match=r"omniglot\.plot\." + match):
        og.plot(tmp_path, bad)
    with pytest.raises(ValidationError, match="omniglot.plot.curves: must be one of"):
        og.plot(tmp_path, _hand_results(), curves="wall")


def test_summary_table_of_results_without_their_configuration():
    """A results dict without "config" (hand-made, or an older file): "?" where the
    settings would be named, not "None-way None-shot"."""
    res = _hand_results()
    res.pop("config", None)
    head = og.summary_table(res).splitlines()[0]
    assert head.startswith("Omniglot ?-way ?-shot.") and "None" not in head, head


def test_task_gaps_and_aggregate_seeds_refuse_malformed_summaries():
    methods = _hand_results()["methods"]
    methods["maml"]["accuracy_per_task"] = [0.4, "0.6"]
    with pytest.raises(ValidationError, match=r"omniglot\.task_gaps\.methods\.maml\."
                       r"accuracy_per_task\[1\]: must be a real number"):
        og.task_gaps(methods)
    one = _hand_results()["methods"]
    for m in one.values():          # one test task: its difference has no interval
        m["accuracy_per_task"] = m["accuracy_per_task"][:1]
    with pytest.raises(ValidationError, match=r"^omniglot\.task_gaps\.methods\.cml\."
                       r"accuracy_per_task: must hold at least 2 test tasks .*\(got 1 task\)$"):
        og.task_gaps(one)
    runs = [_hand_results(), _hand_results()]
    del runs[1]["methods"]["cml"]["ci95"]
    with pytest.raises(ValidationError, match=r"omniglot\.aggregate_seeds\.per_seed\[1\]"
                       r"\.methods\.cml: must have 'ci95'"):
        og.aggregate_seeds([0, 1], runs)
    agg = og.aggregate_seeds([0, 1], [_hand_results(), _hand_results()])
    assert agg["methods"]["cml"]["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize("cfg, ways, match", [
    ({}, None, r"cfg\.network: must be the network's settings"),
    ({"network": {"hidden": "64"}}, None, r"cfg\.network\.hidden: must be a list"),
    ({"network": {"hidden": [64, 0]}}, None, r"cfg\.network\.hidden\[1\]: must be >= 1"),
    ({"network": {"hidden": [64]}}, None, r"cfg\.family: must be the tasks' settings"),
    ({"network": {"hidden": [64]}, "family": {"ways": 1}}, None, r"cfg\.family\.ways"),
    ({"network": {"hidden": [64]}}, 2.5, r"ways: must be an integer"),
])
def test_mlp_sizes_checks_its_configuration(cfg, ways, match):
    with pytest.raises(ValidationError, match=r"omniglot\.mlp_sizes\." + match):
        og.mlp_sizes(cfg, ways)
    assert og.mlp_sizes({"network": {"hidden": [7, 3]}, "family": {"ways": 4}}) == \
        [784, 7, 3, 4]
    assert og.mlp_sizes({"network": {"hidden": [7]}}, ways=20) == [784, 7, 20]


def test_ci_half_widths_above_one_are_accepted():
    """A 95 % CI half-width is Student's t x a standard error: with two test tasks
    t95 = 12.7, so it can exceed 1 (a valid run's summary), while accuracies cannot."""
    assert og.t95(2) > 12
    og.check_summaries({"cml": {"accuracy": 0.7, "ci95": 1.27}}, "x")
    with pytest.raises(ValidationError, match=r"x\.methods\.cml\.ci95: must be >= 0"):
        og.check_summaries({"cml": {"accuracy": 0.7, "ci95": -0.1}}, "x")
    with pytest.raises(ValidationError, match=r"x\.methods\.cml\.accuracy: must be <= 1"):
        og.check_summaries({"cml": {"accuracy": 1.7, "ci95": 0.1}}, "x")


def test_a_run_on_two_test_tasks_draws_and_tabulates(tmp_path):
    """final.test_tasks=2 (t95 = 12.7: half-widths may exceed 1): the run ends with its
    table and plot."""
    res = og.run(tmp_path, progress=False, methods="untrained",
                 overrides=TINY + ["final.test_tasks=2"])
    assert "untrained" in og.summary_table(res)
    assert (tmp_path / "omniglot.png").stat().st_size > 0


def test_baseline_method_builds_what_the_file_says_and_checks_it():
    """``baseline_method`` (used by the bench too): the file's settings and the
    cross-entropy inner loss; a bad setting is one error naming the file and key."""
    cfg = og._cfg()
    maml, section = og.baseline_method(cfg, "maml")
    want = cfg["baselines"]["maml"]
    assert isinstance(maml, bl.MAML) and isinstance(maml.loss, nm.losses.SoftmaxCrossEntropy)
    assert (maml.inner_lr, maml.inner_steps) == (want["inner_lr"], want["inner_steps"])
    assert section["meta_batch"] == cfg["baselines"]["meta_batch"]
    with pytest.raises(ValidationError,
                       match=r"omniglot\.yaml: baselines\.maml: MAML\.inner_lr: must be > 0"):
        og.baseline_method(og._cfg(overrides=["baselines.maml.inner_lr=-1"]), "maml")
