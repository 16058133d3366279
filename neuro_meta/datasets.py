"""Data sets shipped with the package: Omniglot (nothing is ever downloaded).

``omniglot()`` loads the background set that ships in ``neuro_meta/data/omniglot.bin``
(once per process): 4,840 images of 242 characters from 8 alphabets, 20 drawers each,
28x28 with strokes = 1, as ``uint8`` 0/1. The characters are split **by alphabet** into
fixed meta-training, meta-validation and meta-test classes (:data:`OMNIGLOT_SPLITS`; no
random numbers). ``omniglot_runs()`` gives the 20 official 20-way one-shot runs (drawn
from Omniglot's evaluation alphabets, disjoint from all of the above) and
:func:`one_shot_runs_error` scores a classifier on them with the official protocol.

The file's SHA-256 is checked at load (:data:`OMNIGLOT_SHA256`); a damaged file is
refused. Data: Lake, Salakhutdinov & Tenenbaum, Science 350 (2015), MIT licence
(``neuro_meta/data/OMNIGLOT_LICENSE.txt``, ``OMNIGLOT_CITATION.txt``). See
``docs/datasets.md``.

File format (written by ``python -m neuro_meta.data.build_omniglot``): the 8 bytes
:data:`OMNIGLOT_MAGIC`, then an xz (lzma) stream of: a 4-byte little-endian header
length, a JSON header (names, array table), and the arrays' raw bytes.
"""
import functools
import hashlib
import json
import lzma
import struct
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _params as P

#: SHA-256 of the shipped ``neuro_meta/data/omniglot.bin`` (checked at every load).
OMNIGLOT_SHA256 = "2a16329ef90fb7694f1e5221a927bb1896d4de31be89f0a9690ca2bef78d185e"

#: The first bytes of the data file.
OMNIGLOT_MAGIC = b"NMOMNI\x01\n"

#: Name of the data file inside the package ``neuro_meta.data``.
OMNIGLOT_FILE = "omniglot.bin"

#: Side of the square images (pixels).
OMNIGLOT_SIDE = 28

#: The fixed class splits, by alphabet (no random numbers): meta-train 161 characters,
#: meta-validation 17, meta-test 64 (242 in all, disjoint).
OMNIGLOT_SPLITS = types.MappingProxyType({
    "train": ("Balinese", "Greek", "Japanese_(katakana)", "Korean", "Latin"),
    "validation": ("Tagalog",),
    "test": ("Early_Aramaic", "Sanskrit"),
})


def _readonly(a):
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def encode_omniglot(header, arrays):
    """The bytes of a data file: ``header`` (a JSON-able dict, without ``arrays``) and
    ``arrays`` (an ordered dict name -> numpy array). Deterministic: the same input gives
    the same bytes (sorted JSON keys, fixed xz settings, no time stamps)."""
    table, blobs, offset = [], [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        table.append({"name": name, "dtype": a.dtype.str.lstrip("<>|="),
                      "shape": list(a.shape), "offset": offset, "nbytes": len(b)})
        blobs.append(b)
        offset += len(b)
    head = json.dumps(dict(header, arrays=table), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")
    payload = struct.pack("<I", len(head)) + head + b"".join(blobs)
    return OMNIGLOT_MAGIC + lzma.compress(payload, format=lzma.FORMAT_XZ,
                                          check=lzma.CHECK_CRC64, preset=9)


def decode_omniglot(blob, owner="decode_omniglot", attr="blob"):
    """``(header, {name: read-only array})`` of the bytes of a data file (not checked
    against :data:`OMNIGLOT_SHA256`: :func:`load_omniglot` does that)."""
    if not bytes(blob[:len(OMNIGLOT_MAGIC)]) == OMNIGLOT_MAGIC:
        P.fail(owner, attr, "is not a neuro_meta Omniglot data file (wrong first bytes)",
               repr(bytes(blob[:len(OMNIGLOT_MAGIC)])))
    try:
        payload = lzma.decompress(bytes(blob[len(OMNIGLOT_MAGIC):]),
                                  format=lzma.FORMAT_XZ)
        (n,) = struct.unpack("<I", payload[:4])
        header = json.loads(payload[4:4 + n].decode("ascii"))
        data = payload[4 + n:]
        arrays = {}
        for spec in header.pop("arrays"):
            a = np.frombuffer(data, dtype=np.dtype("<" + spec["dtype"]), offset=spec["offset"],
                              count=int(np.prod(spec["shape"], dtype=np.int64)))
            arrays[spec["name"]] = _readonly(a.reshape(spec["shape"]))
    except Exception as err:   # corrupted stream, header or table
        P.fail(owner, attr, f"is a damaged Omniglot data file ({type(err).__name__}: {err})",
               f"{len(blob)} bytes")
    return header, arrays


def _unpack(packed, lead_shape):
    side = OMNIGLOT_SIDE
    img = np.unpackbits(packed, axis=-1, count=side * side)
    return _readonly(img.reshape(*lead_shape, side, side))


class OmniglotRuns(NamedTuple):
    """The 20 official 20-way one-shot runs (read-only arrays, ``uint8`` 0/1, strokes 1).

    ``train[r, j]`` is run ``r``'s training image of class ``j`` (one per class),
    ``test[r, i]`` its test item ``i`` and ``answers[r, i]`` the class ``j`` of test item
    ``i`` (from the run's ``class_labels.txt``; each row is a permutation of 0..19).
    """

    train: np.ndarray    #: (20 runs, 20 classes, 28, 28) uint8
    test: np.ndarray     #: (20 runs, 20 items, 28, 28) uint8
    answers: np.ndarray  #: (20 runs, 20 items) int64


@dataclass(frozen=True, eq=False)
class OmniglotData:
    """The Omniglot background set (from :func:`omniglot`); all arrays read-only.

    * ``images`` (4840, 28, 28) ``uint8``, 0 = background, 1 = stroke;
    * ``labels`` (4840,) ``int64`` character id 0..241 (characters sorted by alphabet,
      then character name: ``character_names[labels[i]]``);
    * ``alphabet`` (4840,) ``int64`` alphabet id 0..7 (``alphabet_names[...]``, sorted);
    * ``drawer`` (4840,) ``int64`` drawer 1..20, from the file name (``0709_01.png`` ->
      1);
    * ``character_alphabet`` (242,) ``int64`` alphabet id of each character;
    * ``alphabet_names`` (8 str), ``character_names`` (242 str, ``"Alphabet/characterNN"``);
    * ``runs``: the official one-shot runs (:class:`OmniglotRuns`);
    * ``header``: the data file's description (sources and their SHA-256, preprocessing).

    Equality is identity (the object is loaded once per process).
    """

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    alphabet: np.ndarray = field(repr=False)
    drawer: np.ndarray = field(repr=False)
    character_alphabet: np.ndarray = field(repr=False)
    alphabet_names: tuple = field(repr=False)
    character_names: tuple = field(repr=False)
    runs: OmniglotRuns = field(repr=False)
    header: types.MappingProxyType = field(repr=False)

    def __repr__(self):
        return (f"OmniglotData(images={len(self.images)}, characters="
                f"{len(self.character_names)}, alphabets={len(self.alphabet_names)}, "
                f"runs={len(self.runs.answers)})")

    def split_mask(self, name):
        """Boolean mask (4840,) of the images of split ``name`` (``"train"``,
        ``"validation"`` or ``"test"``; :data:`OMNIGLOT_SPLITS`)."""
        P.choice(name, "OmniglotData.split_mask", "name", tuple(OMNIGLOT_SPLITS))
        ids = [self.alphabet_names.index(a) for a in OMNIGLOT_SPLITS[name]]
        return np.isin(self.alphabet, ids)

    def split(self, name):
        """``(images, labels)`` of split ``name`` (``"train"``, ``"validation"``,
        ``"test"``): read-only copies, images (n, 28, 28) ``uint8``, labels the global
        character ids (0..241; disjoint between splits)."""
        P.choice(name, "OmniglotData.split", "name", tuple(OMNIGLOT_SPLITS))
        mask = self.split_mask(name)
        return _readonly(self.images[mask]), _readonly(self.labels[mask])


def load_omniglot(path=None):
    """Load an Omniglot data file (default: the one shipped in ``neuro_meta.data``) and
    check its SHA-256 against :data:`OMNIGLOT_SHA256` first: a damaged or different file
    is refused (``ValidationError``). Not cached: use :func:`omniglot`."""
    owner = "load_omniglot"
    if path is None:
        blob = (resources.files("neuro_meta.data") / OMNIGLOT_FILE).read_bytes()
        where = f"neuro_meta/data/{OMNIGLOT_FILE}"
    else:
        if not isinstance(path, (str, Path)):
            P.fail(owner, "path", "must be a path (str or pathlib.Path) or None",
                   P.shown(path))
        try:
            blob = Path(path).read_bytes()
        except OSError as err:
            P.fail(owner, "path", f"must be a readable file ({err.strerror})", repr(str(path)))
        where = str(path)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != OMNIGLOT_SHA256:
        P.fail(owner, "path", f"must be an intact Omniglot data file with SHA-256 "
               f"{OMNIGLOT_SHA256} (the file is damaged or not the one this version "
               f"ships; reinstall neuro_meta or rebuild it with "
               f"'python -m neuro_meta.data.build_omniglot')",
               f"{where} with SHA-256 {digest}")
    header, arr = decode_omniglot(blob, owner, "path")
    n = arr["images"].shape[0]
    alphabet_names = tuple(header["alphabets"])
    character_names = tuple(header["characters"])
    char_alpha = np.array([alphabet_names.index(c.split("/")[0]) for c in character_names],
                          dtype=np.int64)
    runs = OmniglotRuns(_unpack(arr["runs_train"], arr["runs_train"].shape[:2]),
                        _unpack(arr["runs_test"], arr["runs_test"].shape[:2]),
                        _readonly(arr["runs_answers"].astype(np.int64)))
    return OmniglotData(
        images=_unpack(arr["images"], (n,)),
        labels=_readonly(arr["labels"].astype(np.int64)),
        alphabet=_readonly(arr["alphabet"].astype(np.int64)),
        drawer=_readonly(arr["drawer"].astype(np.int64)),
        character_alphabet=_readonly(char_alpha),
        alphabet_names=alphabet_names, character_names=character_names, runs=runs,
        header=types.MappingProxyType(header))


@functools.lru_cache(maxsize=None)
def omniglot():
    """The shipped Omniglot background set (:class:`OmniglotData`), loaded once per
    process."""
    return load_omniglot()


def omniglot_runs():
    """The 20 official 20-way one-shot runs (:class:`OmniglotRuns`: ``train``
    (20, 20, 28, 28), ``test`` (20, 20, 28, 28) uint8 0/1, ``answers`` (20, 20) int64)."""
    return omniglot().runs


def one_shot_runs_error(classify):
    """Error rate of ``classify`` on the 20 official one-shot runs (official protocol:
    20-way, 1 training image per class, 20 test items per run).

    ``classify(train_images, test_images)`` receives two fresh float64 arrays (20, 784)
    (row ``j`` of ``train_images``: class ``j``; pixels 0/1, strokes 1) and returns the
    predicted class index (0..19) of each test item, (20,). Returns ``(mean_error,
    per_run_errors)``: the mean over the 20 runs (a float in [0, 1]) and a read-only
    (20,) array of each run's error rate.
    """
    owner = "one_shot_runs_error"
    if not callable(classify):
        P.fail(owner, "classify", "must be callable as classify(train_images, "
               "test_images) -> predicted class per test item", P.shown(classify))
    runs = omniglot_runs()
    n_runs, n_cls = runs.answers.shape
    errors = np.empty(n_runs)
    for r in range(n_runs):
        train = runs.train[r].reshape(n_cls, -1).astype(np.float64)
        test = runs.test[r].reshape(n_cls, -1).astype(np.float64)
        pred = np.asarray(classify(train, test))
        if pred.shape != (n_cls,) or pred.dtype.kind not in "iuf":
            P.fail(owner, "classify", f"must return {n_cls} class indices (an integer "
                   f"array of shape ({n_cls},))", f"shape {pred.shape} dtype {pred.dtype} "
                   f"for run {r + 1}")
        if pred.dtype.kind == "f" and not np.all(np.isfinite(pred) & (pred == np.round(pred))):
            P.fail(owner, "classify", "must return whole-number class indices",
                   f"{P.shown(pred)} for run {r + 1}")
        if pred.min() < 0 or pred.max() > n_cls - 1:
            P.fail(owner, "classify", f"must return class indices in 0..{n_cls - 1}",
                   f"range {pred.min()}..{pred.max()} for run {r + 1}")
        errors[r] = np.mean(pred.astype(np.int64) != runs.answers[r])
    return float(errors.mean()), _readonly(errors)
