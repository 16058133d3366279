"""Checkpoints: atomic, versioned, checksummed snapshots of a meta-training run.

A checkpoint is one ``.npz`` file holding the arrays of a state tree (nested dicts,
lists, tuples, numbers, strings, ``None`` and numpy arrays) plus a JSON description of
the tree, a format version and a SHA-256 checksum over both. It is written to a temporary
file and renamed into place, so a crash never leaves a half-written checkpoint; a
truncated or corrupted file raises :class:`CheckpointError` naming the file.
"""
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np

from . import _params as P
from .errors import NeuroMetaError
from .io import atomic_write_bytes

#: default wall time (s) between two checkpoint writes of a meta-training run
#: (:class:`neuro_meta.metatrain.CheckpointCadence`, read when a run starts): a crash loses
#: at most about this much meta-training. ``neuro-meta run --checkpoint-every SECONDS``
#: sets it for one command; 0 writes after every meta-step.
CHECKPOINT_EVERY_S = 30.0


def with_cadence(every_s, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with :data:`CHECKPOINT_EVERY_S` set to ``every_s`` in this
    process for the call (restored after): how ``neuro-meta run --checkpoint-every``
    reaches runs that execute elsewhere -- a ``--seeds`` run's seed jobs on a process
    pool or Dask workers -- as ``functools.partial(with_cadence, every_s, run)``."""
    global CHECKPOINT_EVERY_S
    before = CHECKPOINT_EVERY_S
    CHECKPOINT_EVERY_S = every_s
    try:
        return fn(*args, **kwargs)
    finally:
        CHECKPOINT_EVERY_S = before

FORMAT_VERSION = 1


class CheckpointError(NeuroMetaError, OSError):
    """A checkpoint file is missing, truncated, corrupted or of another format."""


#: what a state tree may hold (the message of a refused value)
_HOLDS = ("a dict, list, tuple, None, bool, int, float, str or numpy array (of numbers, "
          "booleans or strings)")


def _where(at):
    """The place ``at`` in a tree as text, e.g. ``state['theta'][0]`` (``at``: the
    root's name, or ``(parent, key or index)``, built only for a message)."""
    parts = []
    while isinstance(at, tuple):
        at, k = at
        parts.append(f"[{P.shown(k.key)}]" if isinstance(k, _Key) else f"[{k}]")
    return at + "".join(reversed(parts))


class _Key:
    """A dict key in a place ``(parent, _Key(key))`` (an int index of a list or tuple
    is stored bare)."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


def _key(k, owner, at, whole=None):
    """The JSON form of a key of the dict at ``at``: a string as itself (so the
    description, and the checksum, of a tree whose keys are all strings is that of earlier
    versions); a number, bool or None as a JSON value of its own type and a tuple as
    ``{"__tuple__": [...]}``, so that ``{1: x}`` and ``{"1": x}`` differ (and load back as
    they were)."""
    if isinstance(k, str):
        return str(k)
    if isinstance(k, (np.floating, np.integer, np.bool_)):
        return k.item()
    if k is None or isinstance(k, (bool, int, float)):
        return k
    whole = k if whole is None else whole
    if isinstance(k, tuple):
        return {"__tuple__": [_key(v, owner, at, whole) for v in k]}
    P.fail(owner, _where(at), "dict keys must be str, int, float, bool, None or tuples "
           "of them", f"key {P.shown(whole)} of type {type(whole).__name__}")


def _flatten(obj, arrays, owner="checkpoint.save", at="state", _open=None):
    """The JSON-able description of the tree ``obj`` (its arrays appended to
    ``arrays``); a value it cannot hold raises one ValidationError naming its place in
    the tree (``at``: see :func:`_where`) and its type."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:     # would be pickled, and not load (allow_pickle=False)
            P.fail(owner, _where(at), f"must be {_HOLDS}, not an array of Python objects",
                   f"array of dtype {obj.dtype} and shape {obj.shape}")
        arrays.append(obj)
        return {"__array__": len(arrays) - 1}
    if isinstance(obj, (dict, tuple, list)):
        _open = set() if _open is None else _open
        if id(obj) in _open:
            P.fail(owner, _where(at), "must not contain itself (a state tree has no cycles)",
                   f"a {type(obj).__name__} that contains itself")
        _open.add(id(obj))
        try:
            if isinstance(obj, dict):
                out = []
                for k, v in obj.items():
                    out.append([_key(k, owner, at),
                                _flatten(v, arrays, owner, (at, _Key(k)), _open)])
                return {"__dict__": out}
            items = [_flatten(v, arrays, owner, (at, i), _open)
                     for i, v in enumerate(obj)]
            return {"__tuple__": items} if isinstance(obj, tuple) else items
        finally:
            _open.discard(id(obj))
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    P.fail(owner, _where(at), f"must be {_HOLDS}",
           f"{P.shown(obj)} of type {type(obj).__name__}")


def _describe(tree, arrays, owner, attr):
    """``json.dumps(_flatten(tree))``; a tree nested beyond Python's recursion limit
    raises one ValidationError."""
    try:
        return json.dumps(_flatten(tree, arrays, owner, attr))
    except RecursionError:
        P.fail(owner, attr, "must not be nested beyond Python's recursion limit",
               f"a {type(tree).__name__} nested too deeply")


def _path(path, owner):
    """``path`` (str or os.PathLike) as a Path; anything else raises one
    ValidationError."""
    p = path
    if isinstance(path, os.PathLike):
        try:
            p = os.fspath(path)
        except Exception:   # noqa: BLE001 -- a broken __fspath__
            p = None
    if not isinstance(p, str):
        P.fail(owner, "path", "must be a file path (str or os.PathLike)", P.shown(path))
    if not p or "\0" in p:
        P.fail(owner, "path", "must be a non-empty file path without NUL characters",
               P.shown(path))
    return Path(p)


def _write_error(path, err):
    """Why writing ``path`` failed (``err``), without the temporary file's name."""
    for folder in path.parents:         # the first part of the path that exists
        if os.path.lexists(folder):
            if not os.path.isdir(folder):
                return f"{folder} is a file, not a folder"
            break
    return err.strerror or type(err).__name__


def _unflatten(desc, arrays):
    if isinstance(desc, dict):
        if "__array__" in desc:
            return arrays[desc["__array__"]]
        if "__dict__" in desc:
            return {(k if isinstance(k, str) else _unflatten(k, arrays)):
                    _unflatten(v, arrays) for k, v in desc["__dict__"]}
        if "__tuple__" in desc:
            return tuple(_unflatten(v, arrays) for v in desc["__tuple__"])
    if isinstance(desc, list):
        return [_unflatten(v, arrays) for v in desc]
    return desc


def _digest(tree_json, arrays):
    h = hashlib.sha256(tree_json.encode("utf-8"))
    for a in arrays:
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(path, state):
    """Write ``state`` to ``path`` atomically; returns the checksum.

    ``path``: a file path (str or os.PathLike; its folder is created); ``state``: a tree
    of dicts, lists, tuples, None, bools, ints, floats, strings and numpy arrays (dict
    keys: strings, numbers, bools, None or tuples of them). A value it cannot hold raises
    a ValidationError naming its place in the tree; a path that is a directory, or that
    cannot be written, a :class:`CheckpointError`."""
    path = _path(path, "checkpoint.save")
    arrays = []
    tree_json = _describe(state, arrays, "checkpoint.save", "state")
    digest = _digest(tree_json, arrays)
    meta = json.dumps({"format": "neuro_meta-checkpoint", "version": FORMAT_VERSION,
                       "sha256": digest, "tree": tree_json})
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array(meta), **{f"a{i}": a for i, a in enumerate(arrays)})
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file; give the "
                              f"file's path (e.g. {path / 'checkpoint.npz'})")
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:      # (its message would name the temporary file)
        raise CheckpointError(f"{path}: cannot write the checkpoint "
                              f"({_write_error(path, err)})") from None
    return digest


def load(path):
    """Read a checkpoint written by :func:`save`, verifying format and checksum.

    ``path``: a file path (str or os.PathLike; otherwise a ValidationError); a missing,
    unreadable, damaged or foreign file raises a :class:`CheckpointError` naming it."""
    path = _path(path, "checkpoint.load")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read "
                              f"({err.strerror or type(err).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file; give the "
                              "checkpoint file's path")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file, so not a checkpoint file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(data).__name__}, not an .npz archive")
        with data:
            foreign = "__meta__" not in data.files      # an .npz archive, but not ours
            meta = None if foreign else json.loads(str(data["__meta__"]))
            arrays = [] if foreign else [data[f"a{i}"] for i in range(len(data.files) - 1)]
            for i, a in enumerate(arrays):      # numpy hands back a damaged member's
                if not isinstance(a, np.ndarray):   # raw bytes instead of an array
                    raise ValueError(f"member a{i} is not an array")
    except PermissionError as err:      # not damaged: not ours to read
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from None
    except Exception as err:    # noqa: BLE001 -- a damaged file fails in numpy's zip,
        #                         header (ast, tokenize), zlib or JSON readers alike
        raise CheckpointError(f"{path}: not a readable neuro_meta checkpoint (truncated or "
                              f"corrupted: {err}); delete it or restart without --resume") \
            from None
    if foreign:
        raise CheckpointError(f"{path}: not a neuro_meta checkpoint (an .npz archive without "
                              "the checkpoint's __meta__ entry: another program's file?); "
                              "give the checkpoint's path, or restart without --resume")
    if not isinstance(meta, dict) or not isinstance(meta.get("tree"), str):
        raise CheckpointError(f"{path}: not a neuro_meta checkpoint (its __meta__ is not "
                              "the checkpoint description)")
    if meta.get("format") != "neuro_meta-checkpoint":
        raise CheckpointError(f"{path}: not a neuro_meta checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} "
                              f"(this neuro_meta reads version {FORMAT_VERSION})")
    if _digest(meta["tree"], arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupted; "
                              "delete it or restart without --resume")
    try:
        return _unflatten(json.loads(meta["tree"]), arrays)
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a neuro_meta checkpoint (its tree does not "
                              f"describe its arrays: {err})") from None


def checksum(tree):
    """SHA-256 of a state tree (e.g. meta-parameters): equal trees, equal checksums."""
    arrays = []
    return _digest(_describe(tree, arrays, "checkpoint.checksum", "tree"), arrays)
