"""The doors of checkpoint files (``neuro_meta.checkpoint``: save, load, checksum) and of
the wheel bandit's reward model: bad input raises one ValidationError (or, where the
file on disk is the problem, one CheckpointError) naming what is wrong -- never a raw
TypeError, IsADirectoryError or numpy broadcasting error, nor a temporary file's name."""
import os
import pathlib
import re

import numpy as np
import pytest

from neuro_meta import checkpoint as ckpt
from neuro_meta.errors import ValidationError
from neuro_meta.families import WheelBandit


# ------------------------------------------------------------------ checkpoint paths
@pytest.mark.parametrize("path", [None, 5, 123, 2.5, b"c.npz", ["c.npz"], ""])
def test_load_and_save_refuse_a_path_that_is_not_a_file_path(tmp_path, path):
    with pytest.raises(ValidationError, match=r"^checkpoint\.load\.path: must be a "):
        ckpt.load(path)
    cwd = os.getcwd()
    os.chdir(tmp_path)      # (a path the old code took for a file name lands here)
    try:
        with pytest.raises(ValidationError, match=r"^checkpoint\.save\.path: must be a "):
            ckpt.save(path, {"a": 1})
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_directory_says_it_is_a_directory(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="is a directory, not a checkpoint file"):
        ckpt.load(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint file"):
        ckpt.load(tmp_path / "missing.npz")     # (as before)


def test_save_to_a_directory_names_it_without_the_temporary_file(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    for path in (d, str(d)):
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.save(path, {"a": np.zeros(3)})
        msg = str(err.value)
        assert msg.startswith(f"{d}: is a directory, not a checkpoint file")
        assert ".tmp" not in msg and "->" not in msg
    assert list(d.iterdir()) == [] and sorted(tmp_path.iterdir()) == [d]


def test_save_under_a_file_says_which_part_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    for path in (f / "c.npz", f / "sub" / "c.npz"):
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.save(path, {"a": 1})
        msg = str(err.value)
        assert msg.startswith(f"{path}: cannot write the checkpoint ({f} is a file, not a "
                              "folder)"), msg
        assert ".tmp" not in msg
    assert f.read_text() == "x" and sorted(tmp_path.iterdir()) == [f]


# ------------------------------------------------------------------ checkpoint trees
@pytest.mark.parametrize("tree, where, got", [
    ({"a": object()}, "['a']", "of type object"),
    ({"a": [1, {"b": {1, 2}}]}, "['a'][1]['b']", "{1, 2} of type set"),
    ({"a": (1, 2j)}, "['a'][1]", "2j of type complex"),
    ([np.array([None, 1], dtype=object)], "[0]", "array of dtype object and shape (2,)"),
    ({"p": pathlib.Path("x")}, "['p']", "of type PosixPath" if os.name == "posix" else ""),
])
def test_a_value_a_checkpoint_cannot_hold_is_named_by_its_key_path(tmp_path, tree, where,
                                                                     got):
    path = tmp_path / "c.npz"
    with pytest.raises(ValidationError) as err:
        ckpt.save(path, tree)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint.save.state{where}: must be a dict, list, tuple"), msg
    assert got in msg and msg.endswith(")")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValidationError) as err:
        ckpt.checksum(tree)
    assert str(err.value).startswith(f"checkpoint.checksum.tree{where}: must be a dict")


def test_a_tree_that_contains_itself_is_refused():
    a = [1]
    a.append({"x": a})
    with pytest.raises(ValidationError,
                       match=r"^checkpoint\.checksum\.tree\[1\]\['x'\]: must not contain "
                             r"itself"):
        ckpt.checksum(a)
    shared = [np.zeros(2)]      # the same object twice is no cycle
    assert ckpt.checksum([shared, shared]) == ckpt.checksum([[np.zeros(2)], [np.zeros(2)]])


@pytest.mark.parametrize("key", [object(), frozenset({1}), (1, object()), b"k"])
def test_a_dict_key_a_checkpoint_cannot_tell_apart_is_refused(tmp_path, key):
    with pytest.raises(ValidationError,
                       match=r"^checkpoint\.save\.state\['a'\]: dict keys must be str, int, "
                             r"float, bool, None or tuples of them \(got key "):
        ckpt.save(tmp_path / "c.npz", {"a": {key: 1}})
    with pytest.raises(ValidationError, match=r"^checkpoint\.checksum\.tree: dict keys"):
        ckpt.checksum({key: 1})


def test_non_string_keys_are_distinguished_and_string_keys_keep_their_digest(tmp_path):
    # the digests of all-string-key trees are those of earlier versions (fingerprints of
    # existing result folders are compared at --resume)
    assert ckpt.checksum({"1": 1}) == \
        "c3273305d355f2a64504f99f5597103236f8b7c4aec998848f0f059860729177"
    mixed = {"theta": [np.arange(6.0).reshape(2, 3), (np.int64(3), np.float32(0.5), True)],
             "opt": {"m": np.zeros(3, np.float32), "t": None}, "name": "x",
             "k": [1, 2.5, "s"]}
    assert ckpt.checksum(mixed) == \
        "a25e323253f5a426af8fe6dbf430a149a2f80049958c5cd3b85091ba13645762"
    assert ckpt.save(tmp_path / "m.npz", mixed) == ckpt.checksum(mixed)
    # a key is not its string
    for key in (1, 1.5, None, True, (1, "a")):
        assert ckpt.checksum({key: 1}) != ckpt.checksum({str(key): 1}), key
    # ... and loads back as it was
    tree = {1: "int", "1": "str", None: [0.5], 2.5: {(3, "x"): np.arange(2)},
            (1, (2, None)): (True,), np.int64(7): "numpy int"}
    ckpt.save(tmp_path / "k.npz", tree)
    back = ckpt.load(tmp_path / "k.npz")
    assert list(back) == [1, "1", None, 2.5, (1, (2, None)), 7]
    assert back[1] == "int" and back["1"] == "str" and back[None] == [0.5]
    assert np.array_equal(back[2.5][(3, "x")], np.arange(2))
    assert back[(1, (2, None))] == (True,) and back[7] == "numpy int"


# ------------------------------------------------------------------ wheel bandit
@pytest.mark.parametrize("n, attr, rule", [
    ((2, -1), "n[1]", "must be >= 0"),
    ((2.5,), "n[0]", "must be an integer"),
    ([3, "4"], "n[1]", "must be an integer"),
    ((True, 2), "n[0]", "must be an integer"),
    ((np.int64(2), None), "n[1]", "must be an integer"),
])
def test_wheel_contexts_check_every_dimension_of_a_shape(n, attr, rule):
    where = re.escape(f"WheelBandit.contexts.{attr}: {rule} (got ")
    with pytest.raises(ValidationError, match="^" + where):
        WheelBandit().contexts(np.random.default_rng(0), n)
    # valid shapes draw as before: radius sqrt(U), angle U(0, 2 pi)
    for shape in ((2, 3), [2, 3], (np.int64(2), 3), (0, 4), ()):
        x = WheelBandit().contexts(np.random.default_rng(1), shape)
        rng = np.random.default_rng(1)
        r = np.sqrt(rng.random(tuple(shape)))
        a = 2 * np.pi * rng.random(tuple(shape))
        assert x.shape == tuple(shape) + (2,)
        np.testing.assert_array_equal(x, np.stack([r * np.cos(a), r * np.sin(a)], -1))


@pytest.mark.parametrize("method", ["mean_rewards", "optimal_arm", "rewards", "regret"])
@pytest.mark.parametrize("x_shape, d_shape", [
    ((3, 2), (2,)),         # the fuzz case
    ((3, 2), (3, 1)),       # broadcasts against x.shape[:-1], but not to it
    ((2,), (3,)),           # one context, three radii
    ((4, 3, 2), (4,)),      # wrong axis
])
def test_wheel_delta_must_broadcast_to_the_contexts(method, x_shape, d_shape):
    w = WheelBandit()
    x, delta = np.zeros(x_shape), np.full(d_shape, 0.5)
    args = {"mean_rewards": (x, delta), "optimal_arm": (x, delta),
            "rewards": (np.random.default_rng(0), x, delta),
            "regret": (x, delta, np.zeros(x_shape[:-1], int))}[method]
    with pytest.raises(ValidationError) as err:
        getattr(w, method)(*args)
    assert str(err.value) == (f"WheelBandit.{method}.delta: must broadcast to "
                              f"x.shape[:-1] = {x_shape[:-1]} (one radius, or one per "
                              f"context) (got shape {d_shape})")


def test_wheel_valid_deltas_give_the_same_rewards():
    w = WheelBandit()
    x = np.array([[0.1, 0.1], [0.6, -0.6], [-0.6, 0.6], [-0.6, -0.6]])
    expect = np.array([[1.2, 1.0, 1.0, 1.0, 1.0], [1.2, 1.0, 50.0, 1.0, 1.0],
                       [1.2, 1.0, 1.0, 50.0, 1.0], [1.2, 1.0, 1.0, 1.0, 50.0]])
    for delta in (0.5, [0.5], np.full(4, 0.5), np.full((1,), 0.5)):
        np.testing.assert_array_equal(w.mean_rewards(x, delta), expect)
        np.testing.assert_array_equal(w.optimal_arm(x, delta), [0, 2, 3, 4])
    np.testing.assert_array_equal(w.mean_rewards(x[None], np.full((1, 1), 0.5)), expect[None])
    np.testing.assert_array_equal(w.mean_rewards(x[0], 0.9), expect[0])
    np.testing.assert_array_equal(w.regret(x, [0.5, 0.5, 0.5, 0.95], [0, 0, 0, 0]),
                                  [0.0, 48.8, 48.8, 0.0])
    # (a delta that does not fit was a raw numpy error before)
    with pytest.raises(ValidationError, match=r"^WheelBandit\.mean_rewards\.delta"):
        w.mean_rewards(x, [0.5, 0.5])
