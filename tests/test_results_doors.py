"""The tables and plots of every experiment read a results dict (what ``run()`` returned,
or ``json.load`` of its ``results.json``): a hand-edited, damaged or older one is one
ValidationError naming the function and the argument, never a raw KeyError, TypeError
or IndexError from inside."""
import numpy as np
import pytest

from neuro_meta.errors import ValidationError
from neuro_meta.experiments import (bandit, consolidation, gradcheck, gradquality, omniglot,
                                    seeds, sinusoid, vsml)

# (owner, call(tmp_path, value)): every public reader of a results dict
READERS = [
    ("sinusoid.summary_table", lambda p, r: sinusoid.summary_table(r)),
    ("bandit.summary_table", lambda p, r: bandit.summary_table(r)),
    ("bandit.plot", lambda p, r: bandit.plot(p, r)),
    ("bandit.plot_meta", lambda p, r: bandit.plot_meta(p, r)),
    ("consolidation.summary_table", lambda p, r: consolidation.summary_table(r)),
    ("gradcheck.summary_table", lambda p, r: gradcheck.summary_table(r)),
    ("gradquality.summary_table", lambda p, r: gradquality.summary_table(r)),
    ("gradquality.plot", lambda p, r: gradquality.plot(p / "g.png", r)),
    ("seeds.summary_table", lambda p, r: seeds.summary_table(r)),
    ("seeds.plot", lambda p, r: seeds.plot(p / "s.png", r)),
    ("vsml.summary_table", lambda p, r: vsml.summary_table(r)),
    ("vsml.plot", lambda p, r: vsml.plot(r)),
    ("omniglot.summary_table", lambda p, r: omniglot.summary_table(r)),
    ("omniglot.plot", lambda p, r: omniglot.plot(p, r)),
    ("omniglot.seeds_table", lambda p, r: omniglot.seeds_table(r)),
    ("omniglot.plot_seeds", lambda p, r: omniglot.plot_seeds(p / "s.png", r)),
    ("omniglot.alphabets_table", lambda p, r: omniglot.alphabets_table(r)),
    ("omniglot.plot_alphabets", lambda p, r: omniglot.plot_alphabets(p / "a.png", r)),
    ("omniglot.adaptation_table", lambda p, r: omniglot.adaptation_table(r)),
    ("omniglot.plot_adaptation", lambda p, r: omniglot.plot_adaptation(p / "a.png", r)),
]

MALFORMED = [
    {},
    {"methods": 3},
    {"methods": {"cml": {}}},
    {"methods": {"cml": {"accuracy": "x", "ci95": None}}},
    {"methods": {"cml": []}, "config": 3},
    {"config": {"family": "x"}, "seeds": "ab", "per_seed": [], "history": 1},
    {"results": [{}], "problems": {"a": 1}, "deploy": {}, "beta": []},
    {"runs": {}, "ways": 5, "shots": 1, "n_val": 2, "n_test": 2, "seeds": []},
    {"runs": {"0": {"cml": {"settings": [{"layers": "all"}], "trained": 0}}}, "ways": 5,
     "shots": 1, "n_val": 2, "n_test": 2},
]


# readers with other arguments besides the results: only the mapping check is theirs
# to test here (a malformed dict could fail on the dummy arguments first)
MORE = [
    ("sinusoid.plot", lambda p, r: sinusoid.plot(p, r, None, None, {}, None)),
    ("consolidation.plot", lambda p, r: consolidation.plot(p, None, None, None, None, r)),
]


@pytest.mark.parametrize("owner, call", READERS + MORE, ids=[o for o, _ in READERS + MORE])
def test_not_a_mapping_is_one_validation_error(tmp_path, owner, call):
    with pytest.raises(ValidationError, match=rf"^{owner}\.\w+: must be .* \(a mapping, "
                       r"as the experiment returns it .*\(got list\)$"):
        call(tmp_path, [1, 2])


@pytest.mark.parametrize("owner, call", READERS, ids=[o for o, _ in READERS])
@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_results_are_one_validation_error(tmp_path, owner, call, value):
    """Each malformed dict is refused with one ValidationError naming the reader and
    its argument (omniglot's run results: down to the key)."""
    with pytest.raises(ValidationError,
                       match=rf"^{owner}\.(results|agg|res)[\w.\[\]]*: must ") as e:
        call(tmp_path, value)
    assert "\n" not in str(e.value)


def test_the_reading_codes_error_is_kept_as_the_cause():
    with pytest.raises(ValidationError, match=r"^sinusoid\.summary_table\.results: must be "
                       r"a sinusoid run's results \(it lacks the key 'meta_test_mse'") as e:
        sinusoid.summary_table({"methods": {"cml": {}}})
    assert isinstance(e.value.__cause__, KeyError)


@pytest.mark.filterwarnings("ignore:No artists with labels")     # an empty plot
def test_errors_not_from_reading_the_results_pass_through(tmp_path):
    """A file name matplotlib refuses, or a path that is not one, is not blamed on the
    results: the original error comes out unchanged."""
    agg = {"seeds": [0, 1], "methods": {}, "history": {}}
    with pytest.raises(ValueError, match="Format 'pnx' is not supported") as e:
        seeds.plot(tmp_path / "s.pnx", agg)
    assert not isinstance(e.value, ValidationError)
    with pytest.raises(TypeError) as e:
        seeds.plot(123, agg)
    assert not isinstance(e.value, ValidationError)


def test_step_cap_notes_name_the_method_and_its_key():
    """A method its step cap stopped under a budget gets one line naming it and the key
    to raise (meta.steps for CML methods, baselines.steps for the others); a budget-
    stopped method, one without meta-training or without a budget, or a row whose
    budget is not a finite number gets none."""
    from neuro_meta.io import step_cap_notes

    rows = {"cml": {"stop_reason": "steps", "meta_steps": 7, "budget_s": 30.0},
            "cml_dual": {"stop_reason": "steps", "meta_steps": 5},          # the table's
            "maml": {"stop_reason": "steps", "meta_steps": 9, "budget_s": 30},
            "reptile": {"stop_reason": "budget", "meta_steps": 9, "budget_s": 30},
            "untrained": {"stop_reason": "steps", "meta_steps": 0, "budget_s": 30},
            "fomaml": {"stop_reason": "steps", "meta_steps": 9, "budget_s": None},
            "imaml": {"stop_reason": "steps", "meta_steps": 9, "budget_s": 10 ** 400},
            "anil": {"stop_reason": "steps", "meta_steps": 9, "budget_s": True},
            "odd": [1, 2]}
    lines = step_cap_notes(rows, budget_s=60.0)
    assert lines == [
        "note: cml stopped at its step cap (7 meta-steps) before the 30-s budget ran out: "
        "it had less meta-training than the others; raise meta.steps for an equal budget",
        "note: cml_dual stopped at its step cap (5 meta-steps) before the 60-s budget ran "
        "out: it had less meta-training than the others; raise meta.steps for an equal "
        "budget",
        "note: maml stopped at its step cap (9 meta-steps) before the 30-s budget ran out: "
        "it had less meta-training than the others; raise baselines.steps for an equal "
        "budget"]
    assert step_cap_notes({"maml": rows["maml"]}, None) == lines[2:]
    assert step_cap_notes({"cml_dual": rows["cml_dual"]}, None) == []


def test_schedule_notes_flag_a_decay_that_did_not_end_with_the_budget():
    """A method whose schedule over the budget was fitted to n meta-steps and that made
    more than 10 % more or fewer gets one line (which way it missed); within 10 %, no
    horizon, a cap-stopped run or a malformed row gets none."""
    from neuro_meta.io import budget_notes, schedule_notes

    rows = {"cml": {"stop_reason": "budget", "meta_steps": 8000, "schedule_steps": 12000},
            "cml_dual": {"stop_reason": "budget", "meta_steps": 15000,
                         "schedule_steps": 12000},
            "maml": {"stop_reason": "budget", "meta_steps": 10900, "schedule_steps": 10000},
            "fomaml": {"stop_reason": "budget", "meta_steps": 9000, "schedule_steps": None},
            "reptile": {"stop_reason": "steps", "meta_steps": 10, "schedule_steps": 900,
                        "budget_s": 30.0},
            "imaml": {"stop_reason": "budget", "meta_steps": 10, "schedule_steps": True},
            "odd": [1, 2]}
    lines = schedule_notes(rows)
    assert len(lines) == 2
    assert lines[0].startswith("note: cml's learning-rate cosine was fitted to 12000 "
                               "meta-steps (its rate, last measured) but "
                               "it made 8000: its step was still above the cosine's end")
    assert "cml_dual's" in lines[1] and "its last 3000 meta-steps at the cosine's end" \
        in lines[1]
    assert budget_notes(rows, 60.0)[0].startswith("note: reptile stopped at its step cap")
    assert budget_notes(rows, 60.0)[1:] == lines


def test_write_results_refuses_what_json_cannot_hold(tmp_path):
    """Two keys that write the same text (one value was lost), complex numbers, Brian2
    quantities, sets, a non-dict and a folder or None as the path are one ValidationError
    each (they were silent or raw TypeError/IsADirectoryError); paths are written as text
    and NaN/±inf (Python's json would write NaN/Infinity, which is not JSON) as null."""
    import json

    import brian2

    import neuro_meta as nm
    from neuro_meta.io import write_json, write_results

    f = tmp_path / "r.json"
    for results, pattern in (({1: "a", "1": "b"}, r"two keys .* \(got keys 1 and '1'\)"),
                             ({"x": 1 + 2j}, r"results\['x'\]: .*complex"),
                             ({"q": [3 * brian2.mV]}, r"results\['q'\]\[0\]: .*Brian2"),
                             ({"s": {1, 2}}, r"results\['s'\]: .*of type set"),
                             (5, r"write_results\.results: must be a dict")):
        with pytest.raises(nm.ValidationError, match=pattern):
            write_results(f, results)
    assert not f.exists()
    for path in (None, tmp_path):
        with pytest.raises(nm.ValidationError, match=r"write_json\.path"):
            write_json(path, {})
    write_results(f, {"p": tmp_path, "n": float("nan"), "i": [np.inf, 1.5],
                      "m": np.float32(-np.inf), "a": np.array([np.nan, 2.0])})

    def strict(name):           # a strict JSON reader: NaN, Infinity are not JSON
        raise AssertionError(f"not JSON: {name}")

    back = json.loads(f.read_text(), parse_constant=strict)
    assert back["p"] == str(tmp_path) and back["n"] is None
    assert back["i"] == [None, 1.5] and back["m"] is None and back["a"] == [None, 2.0]
