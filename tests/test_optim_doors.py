"""The doors of ``neuro_meta.optim`` check what comes in (a fuzz run's findings).

Each bad input raises one ``ValidationError`` ``Owner.attr: rule (got value)`` -- never a
dropped imaginary part, a unit carried into the parameters, a raw ``TypeError``,
``KeyError``, ``AttributeError`` or Brian2 ``DimensionMismatchError`` from deep inside,
a list cut short, or a NaN/inf returned as a norm.
"""
import math
import re

import brian2
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim as O


def _theta():
    rng = np.random.default_rng(0)
    return {"omega": [rng.normal(size=(2, 3)), None],
            "lam": [rng.random((2, 3)), rng.random(3)]}


TH = _theta()
G = O.tree_map(lambda a: 0.5 * a, TH)
MV = np.ones((2, 3)) * brian2.mV


def _raises(fn, pattern):
    with pytest.raises(nm.ValidationError, match=pattern) as info:
        fn()
    assert re.fullmatch(r"\S+: .+ \(got .+\)", str(info.value), re.S), str(info.value)
    return info.value


# ------------------------------------------------------------------ complex values
@pytest.mark.parametrize("fn, pattern", [
    (lambda: O.global_norm({"a": [np.array([3 + 4j])]}),
     r"global_norm\.tree\.a\[0\]: must be a real \(integer or float\) array or None "
     r"\(got ndarray of dtype complex128\)"),
    (lambda: O.apply_updates({"omega": [np.ones(2) + 1j]}, {"omega": [np.ones(2)]}),
     r"apply_updates\.theta\.omega\[0\]: must be a real .*complex128"),
    (lambda: O.tree_vector({"a": [np.ones(2) * 1j]}),
     r"tree_vector\.tree\.a\[0\]: must be a real .*complex128"),
], ids=["global_norm", "apply_updates theta", "tree_vector"])
def test_complex_values_are_refused_never_cast(fn, pattern):
    _raises(fn, pattern)


# ------------------------------------------------------------------ Brian2 units
_UNITS = r"is dimensionless: give a plain number, not a Brian2 quantity with units"


@pytest.mark.parametrize("fn, pattern", [
    (lambda: O.sgd(0.1).update({"omega": [MV]}, {}), r"sgd\.update\.grads\.omega\[0\]: "),
    (lambda: O.sgd(0.1).update(dict(G, omega=[MV, None]), O.sgd(0.1).init(TH)),
     r"sgd\.update\.grads\.omega\[0\]: "),
    (lambda: O.adam(0.1).update(dict(G, omega=[MV, None]), O.adam(0.1).init(TH)),
     r"adam\.update\.grads\.omega\[0\]: "),
    (lambda: O.clip_by_global_norm(1.0).update(dict(G, omega=[MV, None]), {}),
     r"clip_by_global_norm\.update\.grads\.omega\[0\]: "),
    (lambda: O.apply_updates(dict(TH, omega=[MV, None]), G),
     r"apply_updates\.theta\.omega\[0\]: "),
    (lambda: O.apply_updates(TH, dict(G, omega=[MV, None])),
     r"apply_updates\.updates\.omega\[0\]: "),
    (lambda: O.global_norm({"a": [MV]}), r"global_norm\.tree\.a\[0\]: "),
], ids=["sgd bare", "sgd", "adam", "clip", "apply theta", "apply updates", "global_norm"])
def test_quantities_with_units_are_refused(fn, pattern):
    err = _raises(fn, pattern + _UNITS)
    assert "(got a Brian2 quantity of shape (2, 3) in mV)" in str(err)


def test_boolean_gradients_are_refused_by_every_optimiser():
    """A bool array is not a number (sgd refused it already; adam and apply_updates
    took it as 0/1)."""
    bools = dict(G, lam=[np.ones((2, 3), bool), np.ones(3)])
    _raises(lambda: O.adam(0.1).update(bools, O.adam(0.1).init(TH)),
            r"adam\.update\.grads\.lam\[0\]: must be a real array of shape \(2, 3\) .*"
            r"\(got ndarray of dtype bool\)")
    _raises(lambda: O.apply_updates(TH, bools),
            r"apply_updates\.updates\.lam\[0\]: .*\(got ndarray of dtype bool\)")


# ------------------------------------------------------------------ states
_NOT_OWN = r"must be this transformation's own state, from its init\(theta\) or update"
_COS = O.cosine_decay(0.1, 10)


@pytest.mark.parametrize("fn, pattern", [
    (lambda: O.adam(0.1).update(G, None), r"adam\.update\.state: .*\(got NoneType\)"),
    (lambda: O.adam(0.1).update(G, "x"), r"adam\.update\.state: .*\(got str\)"),
    (lambda: O.adam(0.1).update(G, O.sgd(0.1, 0.9).init(TH)),
     r"adam\.update\.state: .*\['count', 'm', 'v'\] \(got a dict with the keys "
     r"\['velocity'\]\)"),
    (lambda: O.adam(0.1).update(G, dict(O.adam(0.1).init(TH), count=1.5)),
     r"adam\.update\.state\.count: must be an integer \(got 1\.5\)"),
    (lambda: O.adam(0.1).update(G, dict(O.adam(0.1).init(TH), m=None)),
     r"adam\.update\.state\.m: must be a dict of lists"),
    (lambda: O.sgd(0.1).update(G, None), r"sgd\.update\.state: .*an empty dict "
                                         r"\(got NoneType\)"),
    (lambda: O.sgd(0.1).update(G, O.sgd(0.1, 0.9).init(TH)),
     r"sgd\.update\.state: .*\(got a dict with the keys \['velocity'\]\)"),
    (lambda: O.sgd(_COS).update(G, {}),
     r"sgd\.update\.state: .*\['count'\] \(got a dict with the keys \[\]\)"),
    (lambda: O.sgd(0.1, 0.9).update(G, {"velocity": None}),
     r"sgd\.update\.state\.velocity: must be a dict of lists"),
    (lambda: O.adam(O.cosine_decay(0.1, "budget")).update(G, O.adam(0.1).init(TH)),
     r"adam\.update\.state: .*\['count', 'horizon', 'm', 'v'\]"),
    (lambda: O.clip_by_global_norm(1.0).update(G, None),
     r"clip_by_global_norm\.update\.state: .*an empty dict \(got NoneType\)"),
    (lambda: O.tie_rows(("lam",)).update(G, None),
     r"tie_rows\.update\.state: .*\(got NoneType\)"),
    (lambda: O.chain(O.clip_by_global_norm(1.0), O.adam(0.1)).update(G, None),
     r"chain\.update\.state: .*a tuple of 2 states, one per transformation "
     r"\(got NoneType\)"),
    (lambda: O.chain(O.clip_by_global_norm(1.0), O.adam(0.1)).update(G, ({},)),
     r"chain\.update\.state: .*\(got 1 entries\)"),
], ids=["adam None", "adam str", "adam given sgd's", "adam count", "adam m", "sgd None",
        "sgd given momentum's", "scheduled sgd {}", "sgd velocity", "budget adam",
        "clip None", "tie_rows None", "chain None", "chain short"])
def test_update_refuses_a_state_not_its_own(fn, pattern):
    err = _raises(fn, pattern)
    if "state:" in str(err):
        assert re.search(_NOT_OWN, str(err))


def test_own_states_still_pass_including_a_refitted_horizon():
    """What ``init``, ``update`` and the horizon functions make is accepted (a state
    after a checkpoint keeps its tuples); a corrupted anchor is refused."""
    opt = O.chain(O.clip_by_global_norm(1.0), O.adam(O.cosine_decay(0.1, "budget")),
                  O.sgd(_COS, 0.9))
    state = opt.init(TH)
    _, state = opt.update(G, state)
    state = O.refit_horizon(O.set_horizon(state, 10), 1, 20)
    upd, state = opt.update(G, state)
    assert np.isfinite(O.tree_vector(upd)).all() and O.horizons(state) == [20]
    bad = (state[0], {**state[1], "anchor": ("a", 0.5)}, state[2])
    _raises(lambda: opt.update(G, bad), r"adam\.update\.state\.anchor\[0\]: must be an "
                                        r"integer \(got 'a'\)")


# ------------------------------------------------------------------ trees
@pytest.mark.parametrize("fn, pattern", [
    (lambda: O.global_norm(None), r"global_norm\.tree: must be a dict of lists of arrays "
                                  r"\(like net\.theta\) \(got NoneType\)"),
    (lambda: O.tree_vector(None), r"tree_vector\.tree: must be a dict .*\(got NoneType\)"),
    (lambda: O.global_norm({"a": ["abc"]}),
     r"global_norm\.tree\.a\[0\]: must be a real \(integer or float\) array or None "
     r"\(got str\)"),
    (lambda: O.global_norm({"a": 5}), r"global_norm\.tree\.a: must be a list of arrays"),
    (lambda: O.tree_map(np.add, TH, {"omega": [1]}),
     r"tree_map\.trees\[1\]: must be a dict with the keys \['lam', 'omega'\] of the "
     r"first tree \(got \['omega'\]\)"),
    (lambda: O.tree_map(np.add, TH, dict(TH, lam=TH["lam"][:1])),
     r"tree_map\.trees\[1\]\.lam: must be a list of 2 entries .*\(got 1 entries\)"),
    (lambda: O.tree_map(np.add, TH, dict(TH, omega=[np.ones((2, 3)), np.ones(3)])),
     r"tree_map\.trees\[1\]\.omega\[1\]: must be None where the first tree's entry is "
     r"None"),
    (lambda: O.tree_map(np.add, TH, None), r"tree_map\.trees\[1\]: .*\(got NoneType\)"),
    (lambda: O.tree_map("f", TH), r"tree_map\.fn: must be a function .*\(got str\)"),
], ids=["global_norm None", "tree_vector None", "text leaf", "not a list",
        "missing key", "short list", "None mismatch", "None tree", "fn not callable"])
def test_tree_helpers_refuse_junk_and_trees_of_another_structure(fn, pattern):
    _raises(fn, pattern)


@pytest.mark.parametrize("tree, pattern", [
    ({"a": [np.array([1.0, np.nan])]}, r"global_norm\.tree: must hold finite numbers"),
    ({"a": [np.array([1.0, -np.inf])]}, r"global_norm\.tree: must hold finite numbers"),
], ids=["nan", "inf"])
def test_global_norm_refuses_non_finite_entries(tree, pattern):
    # (a norm of finite entries beyond the largest float is inf, its rounded value, and
    # clip_by_global_norm still scales such a tree: test_cml.py)
    _raises(lambda: O.global_norm(tree), pattern)


def test_chain_refuses_what_is_not_a_gradient_transformation():
    _raises(lambda: O.chain("adam"), r"chain\.transforms\[0\]: must be a "
                                     r"GradientTransformation .*\(got 'adam'\)")
    _raises(lambda: O.chain(O.adam(0.1), None), r"chain\.transforms\[1\]: .*\(got None\)")


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("fn, pattern", [
    (lambda: O.cosine_decay(0.1, 10)("a"), r"cosine_decay\.k: must be an integer "
                                           r"\(got 'a'\)"),
    (lambda: O.cosine_decay(0.1, 10)(math.nan), r"cosine_decay\.k: must be an integer "
                                                r"\(got nan\)"),
    (lambda: O.cosine_decay(0.1, 10)(math.inf), r"cosine_decay\.k: .*\(got inf\)"),
    (lambda: O.cosine_decay(0.1, 10)(-1), r"cosine_decay\.k: must be >= 0 \(got -1\)"),
    (lambda: O.cosine_decay(0.1, 10)(True), r"cosine_decay\.k: .*\(got True\)"),
    (lambda: O.cosine_decay(0.1, "budget")(2.5), r"cosine_decay\.k: .*\(got 2\.5\)"),
    (lambda: O.cosine_decay(0.1, "budget").value(2, "x"),
     r"cosine_decay\.horizon: must be an integer \(got 'x'\)"),
    (lambda: O.piecewise_constant(0.1, [5], [0.5])(math.nan),
     r"piecewise_constant\.k: must be an integer \(got nan\)"),
    (lambda: O.piecewise_constant(0.1, [5], [0.5])(-math.inf),
     r"piecewise_constant\.k: .*\(got -inf\)"),
    (lambda: O.constant(0.1)("a"), r"constant\.k: must be an integer \(got 'a'\)"),
    (lambda: O.budget_progress(3, 0), r"budget_progress\.n: must be >= 1 \(got 0\)"),
    (lambda: O.budget_progress(3, 10, anchor=5),
     r"budget_progress\.anchor: must be None or a pair"),
], ids=["cos text", "cos nan", "cos inf", "cos negative", "cos bool", "budget float",
        "budget horizon", "piecewise nan", "piecewise -inf", "constant text",
        "progress n", "progress anchor"])
def test_schedules_refuse_what_is_not_an_update_number(fn, pattern):
    _raises(fn, pattern)


def test_adam_refuses_gradients_whose_square_overflows():
    """Gradients of 1e200 square to inf in Adam's second moment, after which every update
    would be zero without a word: a SimulationError with a hint instead."""
    theta = {"omega": [np.zeros(3)]}
    opt = O.adam(1e-3)
    state = opt.init(theta)
    with pytest.raises(nm.SimulationError, match=r"adam\.update: the second moment .*Hint"):
        opt.update({"omega": [np.full(3, 1e200)]}, state)
    upd, _ = opt.update({"omega": [np.full(3, 1e150)]}, state)        # still finite
    assert np.all(np.isfinite(upd["omega"][0])) and np.all(upd["omega"][0] < 0)
