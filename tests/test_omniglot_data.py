"""The shipped Omniglot data, its build, the official one-shot runs and the
few-shot classification family (issue 19)."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import datasets as D
from neuro_meta.errors import ValidationError
from neuro_meta.families import FewShotClassification
from neuro_meta.tasks import Task

REPO = Path(__file__).resolve().parent.parent
RAW = REPO.parent / "shared" / "data" / "omniglot"
DATA_FILE = REPO / "neuro_meta" / "data" / "omniglot.bin"

ALPHABET_CHARS = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24,
                  "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26, "Sanskrit": 42,
                  "Tagalog": 17}


@pytest.fixture(scope="module")
def data():
    return nm.omniglot()


# --- the file ---------------------------------------------------------------------------

def test_file_is_compact_and_matches_its_recorded_sha256():
    blob = DATA_FILE.read_bytes()
    assert len(blob) < 2_000_000
    assert hashlib.sha256(blob).hexdigest() == D.OMNIGLOT_SHA256
    assert (REPO / "neuro_meta" / "data" / "OMNIGLOT_LICENSE.txt").read_text().startswith(
        "The MIT License")
    cite = (REPO / "neuro_meta" / "data" / "OMNIGLOT_CITATION.txt").read_text()
    assert "Science" in cite and "brendenlake/omniglot" in cite


def test_package_resources_find_the_file():
    from importlib import resources

    f = resources.files("neuro_meta.data") / D.OMNIGLOT_FILE
    assert f.is_file() and f.read_bytes() == DATA_FILE.read_bytes()


@pytest.mark.parametrize("where", [0, 7, 100, -1])
def test_a_damaged_copy_is_refused(tmp_path, where):
    blob = bytearray(DATA_FILE.read_bytes())
    blob[where] ^= 0x01
    bad = tmp_path / "omniglot.bin"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ValidationError, match=r"load_omniglot\.path: .*SHA-256.*got .*"
                       + hashlib.sha256(bytes(blob)).hexdigest()):
        D.load_omniglot(bad)


def test_an_intact_copy_loads_and_bad_paths_are_refused(tmp_path):
    good = tmp_path / "copy.bin"
    good.write_bytes(DATA_FILE.read_bytes())
    d = D.load_omniglot(good)
    assert np.array_equal(d.images, nm.omniglot().images)
    with pytest.raises(ValidationError, match=r"load_omniglot\.path: must be a readable"):
        D.load_omniglot(tmp_path / "missing.bin")
    with pytest.raises(ValidationError, match=r"load_omniglot\.path: must be a path"):
        D.load_omniglot(42)


def test_decoder_refuses_garbage():
    with pytest.raises(ValidationError, match=r"decode_omniglot\.blob: is not"):
        D.decode_omniglot(b"hello world")
    with pytest.raises(ValidationError, match=r"decode_omniglot\.blob: is a damaged"):
        D.decode_omniglot(D.OMNIGLOT_MAGIC + b"\x00" * 50)


# --- the background set -----------------------------------------------------------------

def test_loaded_once_per_process():
    assert nm.omniglot() is nm.omniglot()
    assert nm.omniglot_runs() is nm.omniglot().runs


def test_counts_and_names(data):
    assert data.images.shape == (4840, 28, 28) and data.images.dtype == np.uint8
    assert set(np.unique(data.images)) == {0, 1}
    assert len(data.character_names) == 242 and len(set(data.character_names)) == 242
    assert data.alphabet_names == tuple(sorted(ALPHABET_CHARS))
    assert np.array_equal(np.unique(data.labels), np.arange(242))
    assert np.all(np.bincount(data.labels) == 20)
    for a, name in enumerate(data.alphabet_names):
        chars = np.unique(data.labels[data.alphabet == a])
        assert len(chars) == ALPHABET_CHARS[name]
        assert all(data.character_names[c].startswith(name + "/") for c in chars)
        assert np.all(data.character_alphabet[chars] == a)
    for c in range(242):   # 20 drawers per character, 1..20
        assert sorted(data.drawer[data.labels == c]) == list(range(1, 21))
    assert np.array_equal(data.alphabet, data.character_alphabet[data.labels])


def test_arrays_are_read_only(data):
    arrays = [data.images, data.labels, data.alphabet, data.drawer, data.character_alphabet,
              *data.runs, *data.split("train")]
    for a in arrays:
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a.reshape(-1)[0] = 1
    with pytest.raises(AttributeError):
        data.images = None


def test_ink_fraction_and_images_differ(data):
    ink = data.images.mean()
    assert 0.05 < ink < 0.4
    per_image = data.images.reshape(4840, -1).mean(axis=1)
    assert per_image.min() > 0.005 and per_image.max() < 0.5   # no blank or inverted image
    # strokes (1) in the middle, background (0) on the border, on average
    assert data.images[:, 10:18, 10:18].mean() > data.images[:, :, 0].mean()
    assert len({bytes(np.packbits(im)) for im in data.images}) > 4800


def test_splits_are_fixed_by_alphabet_disjoint_and_complete(data):
    sizes = {}
    labels = {}
    for name in ("train", "validation", "test"):
        state = np.random.get_state()
        np.random.seed(1)
        im1, lab1 = data.split(name)
        np.random.seed(12345)
        im2, lab2 = data.split(name)
        np.random.set_state(state)
        assert np.array_equal(im1, im2) and np.array_equal(lab1, lab2)
        alph = {data.alphabet_names[a] for a in data.character_alphabet[np.unique(lab1)]}
        assert alph == set(D.OMNIGLOT_SPLITS[name])
        assert im1.shape == (len(lab1), 28, 28)
        sizes[name] = len(np.unique(lab1))
        labels[name] = set(lab1.tolist())
    assert sizes == {"train": 161, "validation": 17, "test": 64}
    assert sum(sizes.values()) == 242
    assert not (labels["train"] & labels["validation"]) and not (
        labels["train"] & labels["test"]) and not (labels["validation"] & labels["test"])
    with pytest.raises(ValidationError, match=r"OmniglotData\.split\.name: must be one of"):
        data.split("meta-train")
    with pytest.raises(ValidationError, match=r"OmniglotData\.split_mask\.name: must be one "):
        data.split_mask("meta-train")
    # the family's door names itself and its argument (it named OmniglotData.split.name)
    with pytest.raises(ValidationError, match=r"^FewShotClassification\.omniglot\.split: "
                       r"must be one of .*\(got 'bogus'\)"):
        FewShotClassification.omniglot("bogus")


# --- the official one-shot runs ---------------------------------------------------------

def test_one_shot_runs():
    runs = nm.omniglot_runs()
    assert runs.train.shape == (20, 20, 28, 28) and runs.test.shape == (20, 20, 28, 28)
    assert runs.answers.shape == (20, 20)
    for r in range(20):
        assert sorted(runs.answers[r]) == list(range(20))
    ink = runs.train.mean()
    assert 0.05 < ink < 0.4 and 0.05 < runs.test.mean() < 0.4
    # evaluation alphabets: no run image equals a background image
    bg = {bytes(np.packbits(im)) for im in nm.omniglot().images}
    assert not any(bytes(np.packbits(im)) in bg for im in runs.train.reshape(-1, 28, 28))


def test_one_shot_runs_error():
    runs = nm.omniglot_runs()
    calls = []

    def oracle(train, test):
        calls.append((train.shape, test.shape, train.dtype))
        r = len(calls) - 1
        assert np.array_equal(train, runs.train[r].reshape(20, 784))
        return runs.answers[r]

    err, per_run = nm.one_shot_runs_error(oracle)
    assert err == 0.0 and per_run.shape == (20,) and not per_run.flags.writeable
    assert calls == [((20, 784), (20, 784), np.float64)] * 20
    err, per_run = nm.one_shot_runs_error(lambda tr, te: np.zeros(20, dtype=int))
    assert err == pytest.approx(0.95)

    def nearest(train, test):
        return ((test[:, None] - train[None]) ** 2).sum(-1).argmin(axis=1)

    err, _ = nm.one_shot_runs_error(nearest)
    assert 0.5 < err < 0.95        # pixel nearest neighbour: far above chance (95 %)


@pytest.mark.parametrize("classify, pattern", [
    (None, "must be callable"),
    (lambda a, b: np.zeros(19, dtype=int), "must return 20 class indices"),
    (lambda a, b: np.full(20, 20), r"must return class indices in 0\.\.19"),
    (lambda a, b: np.full(20, -1), r"must return class indices in 0\.\.19"),
    (lambda a, b: np.full(20, 0.5), "must return whole-number class indices"),
    (lambda a, b: np.array(["a"] * 20), "must return 20 class indices"),
])
def test_one_shot_runs_error_refuses_bad_classifiers(classify, pattern):
    with pytest.raises(ValidationError, match=r"one_shot_runs_error\.classify: " + pattern):
        nm.one_shot_runs_error(classify)


# --- the build --------------------------------------------------------------------------

@pytest.mark.skipif(not RAW.is_dir(), reason=f"raw Omniglot files not found at {RAW}")
def test_build_is_reproducible(tmp_path):
    from neuro_meta.data.build_omniglot import build

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    sha_a, sha_b = build(RAW, a), build(RAW, b)
    assert a.read_bytes() == b.read_bytes() and sha_a == sha_b
    # same content as the shipped file (compared decoded: independent of the xz library)
    head, arrays = D.decode_omniglot(a.read_bytes())
    head0, arrays0 = D.decode_omniglot(DATA_FILE.read_bytes())
    assert head == head0 and arrays.keys() == arrays0.keys()
    assert all(np.array_equal(arrays[k], arrays0[k]) for k in arrays)


@pytest.mark.skipif(not RAW.is_dir(), reason=f"raw Omniglot files not found at {RAW}")
def test_build_refuses_a_damaged_source(tmp_path):
    from neuro_meta.data.build_omniglot import BuildError, SOURCES, build, main

    for name in SOURCES:
        (tmp_path / name).write_bytes((RAW / name).read_bytes())
    z = tmp_path / "one_shot_runs.zip"
    blob = bytearray(z.read_bytes())
    blob[1000] ^= 0xFF
    z.write_bytes(bytes(blob))
    with pytest.raises(BuildError, match="one_shot_runs.zip: SHA-256 mismatch"):
        build(tmp_path, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.bin")]) == 2


# --- the task family --------------------------------------------------------------------

@pytest.fixture(scope="module")
def family():
    return FewShotClassification.omniglot("train", ways=5, shots=2, queries=3)


def test_family_sample_shapes_and_one_hot(family):
    task = family.sample(np.random.default_rng(0), 7)
    assert isinstance(task, Task)
    assert task.x_train.shape == (7, 10, 784) and task.x_val.shape == (7, 15, 784)
    assert task.y_train.shape == (7, 10, 5) and task.y_val.shape == (7, 15, 5)
    for a in (task.x_train, task.y_train, task.x_val, task.y_val):
        assert a.dtype == np.float64 and not a.flags.writeable and a.flags.c_contiguous
    assert set(np.unique(task.x_train)) <= {0.0, 1.0}
    assert np.all(task.y_train.sum(-1) == 1) and np.all(task.y_val.sum(-1) == 1)
    # interleaved: example i is class i % ways
    assert np.array_equal(task.y_train.argmax(-1), np.tile(np.arange(10) % 5, (7, 1)))
    # the fast path builds the same object Task() would
    ref = Task(task.x_train, task.y_train, task.x_val, task.y_val)
    assert vars(ref).keys() == vars(task).keys()
    assert all(np.array_equal(getattr(ref, k), getattr(task, k)) for k in vars(ref))


def test_family_same_seed_same_tasks(family):
    t1 = family.sample(np.random.default_rng(3), 4)
    np.random.seed(0)
    t2 = family.sample(np.random.default_rng(3), 4)
    np.random.seed(99)
    t3 = family.sample(np.random.default_rng(4), 4)
    assert all(np.array_equal(a, b) for a, b in zip(t1.as_batch(), t2.as_batch()))
    assert not np.array_equal(t1.x_train, t3.x_train)
    t4, classes, idx = family.sample_with_classes(np.random.default_rng(3), 4)
    assert np.array_equal(t4.x_val, t1.x_val)


def _rotated(images, idx, rot):
    return np.rot90(images[idx].reshape(28, 28), rot).reshape(-1)


def test_family_classes_distinct_and_images_consistent(family):
    rng = np.random.default_rng(11)
    task, classes, idx = family.sample_with_classes(rng, 50)
    W, S, Q = 5, 2, 3
    assert classes.shape == (50, W, 2) and idx.shape == (50, W, S + Q)
    labels = family.labels
    for t in range(50):
        assert len({tuple(c) for c in classes[t]}) == W          # distinct classes
        for j in range(W):
            lab, rot = classes[t, j]
            assert 0 <= rot < 4
            assert len(set(idx[t, j])) == S + Q                   # distinct images
            assert np.all(labels[idx[t, j]] == lab)               # all of that character
            for s in range(S):
                x = task.x_train[t, s * W + j]
                assert task.y_train[t, s * W + j, j] == 1
                assert np.array_equal(x, _rotated(family.images, idx[t, j, s], rot))
            for q in range(Q):
                x = task.x_val[t, q * W + j]
                assert task.y_val[t, q * W + j, j] == 1
                assert np.array_equal(x, _rotated(family.images, idx[t, j, S + q], rot))
    # every rotation and many labels occur; class order within a task is random
    assert set(classes[..., 1].ravel()) == {0, 1, 2, 3}
    assert len(np.unique(classes[..., 0])) > 100
    assert not np.all(np.diff(classes[..., 0] * 4 + classes[..., 1], axis=1) > 0)


def test_family_rotation_is_a_new_class():
    """A toy set: image of class c rotated by k appears exactly as class (c, k)."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 2, size=(12, 4, 4)).astype(np.uint8)
    labels = np.repeat([10, 20, 30], 4)
    fam = FewShotClassification(imgs, labels, ways=12, shots=1, queries=3, rotations=True)
    assert fam.n_classes == 12
    task, classes, idx = fam.sample_with_classes(np.random.default_rng(5), 3)
    for t in range(3):
        assert sorted(map(tuple, classes[t].tolist())) == [(c, k) for c in (10, 20, 30)
                                                           for k in range(4)]
        for j in range(12):
            lab, k = classes[t, j]
            members = np.flatnonzero(labels == lab)
            rotated = {bytes(np.rot90(imgs[i], k).astype(np.float64).reshape(-1))
                       for i in members}
            for x in (task.x_train[t, j], *task.x_val[t, j::12]):
                assert bytes(x) in rotated
    # without rotations the same data gives 3 classes of unrotated images
    plain = FewShotClassification(imgs.reshape(12, 16), labels, ways=3, shots=2, queries=2)
    t = plain.sample(np.random.default_rng(1), 2)
    assert t.y_train.shape == (2, 6, 3)
    assert {bytes(r) for r in t.x_train.reshape(-1, 16)} <= {
        bytes(i.astype(np.float64).reshape(-1)) for i in imgs}


def test_family_draws_are_uniform_enough():
    imgs = np.arange(40, dtype=float).reshape(40, 1)
    labels = np.repeat(np.arange(4), 10)
    fam = FewShotClassification(imgs, labels, ways=2, shots=1, queries=1)
    task, classes, idx = fam.sample_with_classes(np.random.default_rng(2), 4000)
    counts = np.bincount(classes[..., 0].ravel(), minlength=4)
    assert np.all(np.abs(counts / counts.sum() - 0.25) < 0.02)
    first = np.bincount(classes[:, 0, 0], minlength=4)          # position 0 of a task
    assert np.all(np.abs(first / 4000 - 0.25) < 0.03)
    shot_pos = np.bincount(idx[..., 0].ravel() % 10, minlength=10)   # which image is the shot
    assert np.all(np.abs(shot_pos / shot_pos.sum() - 0.1) < 0.02)


def test_family_equality_hash_repr_and_read_only(family):
    same = FewShotClassification.omniglot("train", ways=5, shots=2, queries=3)
    assert same == family and hash(same) == hash(family)
    assert FewShotClassification.omniglot("train", ways=5, shots=2, queries=4) != family
    assert FewShotClassification.omniglot("validation", ways=5, shots=2, queries=3) != family
    text = repr(family)
    assert len(text) < 300 and "ways=5" in text and "rotations=True" in text
    assert family.n_classes == 161 * 4 and family.n_pixels == 784
    assert not family.images.flags.writeable and not family.labels.flags.writeable
    with pytest.raises(AttributeError):
        family.ways = 3
    # the user's array is copied: changing it afterwards changes nothing
    imgs = np.zeros((6, 2, 2))
    imgs[:, 0, 0] = np.arange(6)
    fam = FewShotClassification(imgs, [0, 0, 0, 1, 1, 1], ways=2, shots=1, queries=1)
    before = fam.fingerprint
    imgs[:] = 7
    assert fam.fingerprint == before and fam.images[5, 0, 0] == 5


@pytest.mark.parametrize("kw, pattern", [
    ({"ways": 1}, r"FewShotClassification\.ways: must be >= 2 \(got 1\)"),
    ({"ways": 645}, r"FewShotClassification\.ways: must be <= the number of classes "
                    r"\(644 = 161 labels x 4 rotations\) \(got 645\)"),
    ({"ways": 2.5}, r"FewShotClassification\.ways: must be an integer"),
    ({"shots": 0}, r"FewShotClassification\.shots: must be >= 1"),
    ({"queries": 0}, r"FewShotClassification\.queries: must be >= 1"),
    ({"shots": 10, "queries": 11}, r"FewShotClassification\.shots: shots \+ queries must "
                                   r"be <= the images of the smallest class \(20"),
    ({"rotations": "yes"}, r"FewShotClassification\.rotations: must be True or False"),
    ({"split": "meta"}, r"FewShotClassification\.omniglot\.split: must be one of"),
])
def test_family_validation(kw, pattern):
    with pytest.raises(ValidationError, match=pattern):
        FewShotClassification.omniglot(**kw)


@pytest.mark.parametrize("images, labels, kw, pattern", [
    (np.zeros((6, 3)), [0, 0, 0, 1, 1, 1], {"rotations": True}, r"\.images: must be square"),
    (np.zeros((6, 2, 3)), [0, 0, 0, 1, 1, 1], {"rotations": True}, r"\.images: must be square"),
    (np.zeros(6), [0, 0, 0, 1, 1, 1], {}, r"\.images: must be an array \(n_images, \.\.\.\)"),
    (np.full((6, 4), np.nan), [0, 0, 0, 1, 1, 1], {}, r"\.images: must contain only finite"),
    (np.zeros((6, 4), complex), [0, 0, 0, 1, 1, 1], {}, r"\.images: must be real numbers"),
    (np.zeros((6, 4)), [0, 0, 0, 1, 1], {}, r"\.labels: must be 6 integers"),
    (np.zeros((6, 4)), np.zeros(6), {}, r"\.labels: must be 6 integers"),
    (np.zeros((6, 4)), [0, 0, 0, 0, 0, 0], {}, r"\.ways: must be <= the number of classes \(1\)"),
    (np.zeros((6, 4)), [0, 0, 0, 1, 1, 1], {"shots": 2, "queries": 2},
     r"\.shots: shots \+ queries must be <= the images of the smallest class \(3"),
])
def test_family_validation_of_user_data(images, labels, kw, pattern):
    kw = {"ways": 2, "shots": 1, "queries": 1, **kw}
    with pytest.raises(ValidationError, match=r"FewShotClassification" + pattern):
        FewShotClassification(images, labels, **kw)


@pytest.mark.parametrize("rng, n_tasks, pattern", [
    (None, 2, r"FewShotClassification\.sample\.rng: must be a numpy\.random\.Generator"),
    (0, 2, r"FewShotClassification\.sample\.rng: must be a numpy\.random\.Generator"),
    (np.random.default_rng(0), 0, r"FewShotClassification\.sample\.n_tasks: must be >= 1"),
    (np.random.default_rng(0), 10 ** 9, r"FewShotClassification\.sample\.n_tasks: would need"),
])
def test_family_sample_validation(family, rng, n_tasks, pattern):
    with pytest.raises(ValidationError, match=pattern):
        family.sample(rng, n_tasks)


def test_family_all_classes_and_images_when_ways_and_shots_are_full():
    imgs = np.arange(6, dtype=float).reshape(6, 1)
    fam = FewShotClassification(imgs, [0, 0, 0, 1, 1, 1], ways=2, shots=2, queries=1)
    task, classes, idx = fam.sample_with_classes(np.random.default_rng(0), 20)
    assert all(sorted(c) == [0, 1] for c in classes[..., 0].tolist())
    assert all(sorted(i) == list(range(6)) for i in idx.reshape(20, -1).tolist())


def test_unsigned_labels_give_int64_classes_or_a_clear_error():
    """uint64 labels: the classes come back as int64 (stacking uint64 with int64 made
    them float64); labels beyond int64 are refused rather than wrapped."""
    fam = FewShotClassification(np.zeros((40, 4)), np.repeat(np.arange(4, dtype=np.uint64), 10),
                                ways=2, queries=2)
    _, classes, _ = fam.sample_with_classes(np.random.default_rng(0), 3)
    assert classes.dtype == np.int64 and set(classes.ravel()) <= {0, 1, 2, 3}
    big = np.repeat(np.array([2 ** 63, 1], dtype=np.uint64), 10)
    with pytest.raises(ValidationError, match="labels: must fit in int64"):
        FewShotClassification(np.zeros((20, 4)), big, ways=2, queries=2)


def test_sample_memory_check_counts_the_random_keys(monkeypatch):
    """The batch's memory check counts the keys drawn to pick classes (one per class)
    and images (one per class member), not only the arrays returned: with many classes
    of tiny images the keys dominate (they were not counted before)."""
    from neuro_meta import _params

    fam = FewShotClassification(np.zeros((20_000, 1)), np.repeat(np.arange(10_000), 2),
                                ways=2, shots=1, queries=1, rotations=False)
    monkeypatch.setattr(_params, "MAX_ARRAY_BYTES", 2 * 10 ** 6)
    fam.sample(np.random.default_rng(0), 10)            # 10 x 2 x 10 004 keys: 1.6 MB
    with pytest.raises(ValidationError, match=r"sample\.n_tasks: would need an array of "
                       r"100 x 20020 values"):
        fam.sample(np.random.default_rng(0), 100)       # 16 MB of keys, 1.2 kB returned


def test_float16_images_are_checked_without_overflow_warnings():
    """The data-limit check compared a float16 maximum with the limit (1e6 overflows
    float16: a RuntimeWarning); it is a Python float now."""
    import warnings

    imgs = np.random.default_rng(0).random((40, 4, 4)).astype(np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fam = FewShotClassification(imgs, np.repeat(np.arange(4), 10), ways=2, queries=1)
        fam.sample(np.random.default_rng(0), 2)
