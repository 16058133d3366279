"""A floor of the consolidation strengths per connection (``optim.lam_floor``,
``apply_updates(..., lam_min=[...])``, ``MetaTrainer(lam_min=[...])``, a model file's
``meta.lam_min: [...]``): the projection against its closed form, the doors, and a
checkpoint that knows its floors."""
import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import checkpoint as ckpt
from neuro_meta import optim
from neuro_meta.errors import ValidationError
from neuro_meta.experiments import omniglot as og
from neuro_meta.metatrain import MetaTrainer
from neuro_meta.experiments.consolidation import build
from neuro_meta.models import load_model


def _theta():
    return {"omega": [np.array([[0.3, -0.2]]), np.array([[1.0]])],
            "lam": [np.array([[0.1, 2.0]]), np.array([[0.4]])],
            "lam_bias": [np.array([0.7]), None]}


def test_each_connection_is_projected_onto_its_own_floor():
    upd = optim.tree_map(lambda a: -0.3 * np.ones_like(a), _theta())
    out = optim.apply_updates(_theta(), upd, lam_min=[0.5, 0.05])
    np.testing.assert_array_equal(out["lam"][0], [[0.5, 1.7]])       # floor 0.5
    np.testing.assert_allclose(out["lam"][1], [[0.1]], rtol=1e-15)   # above 0.05: kept
    np.testing.assert_array_equal(out["lam_bias"][0], [0.5])
    assert out["lam_bias"][1] is None
    np.testing.assert_allclose(out["omega"][0], [[0.0, -0.5]], atol=1e-15)  # never floored
    # the same floor for every connection as a list = the number
    same = optim.apply_updates(_theta(), upd, lam_min=[0.5, 0.5])
    one = optim.apply_updates(_theta(), upd, lam_min=0.5)
    for k in same:
        for a, b in zip(same[k], one[k]):
            assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.parametrize("floors, match", [
    ([0.5], r"apply_updates\.lam_min: must have one floor per connection \(2, the "
            r"entries of 'lam'\)"),
    ([0.5, -0.1], r"apply_updates\.lam_min\[1\]: must be >= 0"),
    ([0.5, float("nan")], r"apply_updates\.lam_min\[1\]"),
    ([], r"apply_updates\.lam_min: must be a number or a list"),
    ("0.5", r"apply_updates\.lam_min"),
])
def test_bad_floors_are_refused(floors, match):
    upd = optim.tree_map(np.zeros_like, _theta())
    with pytest.raises(ValidationError, match=match):
        optim.apply_updates(_theta(), upd, lam_min=floors)


def _trainer(lam_min):
    _, tr = build(load_model("consolidation"))
    return MetaTrainer(tr.net, tr.family, tr.cml, optim.adam(0.5), meta_batch=2, seed=1,
                       eval_tasks=2, lam_min=lam_min)


def test_meta_training_keeps_every_connection_above_its_floor(tmp_path):
    tr = _trainer(0.0)
    n = len(tr.net.theta["lam"])
    floors = [0.3 + 0.2 * i for i in range(n)]
    tr = _trainer(floors)
    assert tr.fingerprint()["lam_min"] == floors
    tr.train(3, progress=False, checkpoint=tmp_path / "c.npz")
    for f, lam in zip(floors, tr.net.theta["lam"]):
        if lam is not None:
            assert lam.min() >= f
    # a checkpoint knows its floors: another floor is refused, the same resumes
    with pytest.raises(ckpt.CheckpointError, match="lam_min"):
        _trainer([f + 0.1 for f in floors]).train(4, progress=False,
                                                  checkpoint=tmp_path / "c.npz",
                                                  resume=True)
    _trainer(floors).train(4, progress=False, checkpoint=tmp_path / "c.npz", resume=True)
    with pytest.raises(ValidationError, match=r"MetaTrainer\.lam_min: must have one floor "
                                              r"per connection"):
        _trainer(floors + [0.1])


def test_omniglot_reads_a_floor_per_connection():
    cfg = og._cfg(overrides=["meta.lam_min=[1.0, 1.0, 0.05]"])
    assert og.build_cml(cfg, og.families(cfg))[1].lam_min == (1.0, 1.0, 0.05)
    bad = og._cfg(overrides=["meta.lam_min=[1.0, 0.05]"])
    with pytest.raises(ValidationError, match=r"omniglot\.yaml: meta\.lam_min: "
                                              r"must have one floor per connection \(3"):
        og.build_cml(bad, og.families(bad))
    assert nm.__name__      # (the package imported whole, as a user would)
