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
from pathlib import Path

import numpy as np

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


def _flatten(obj, arrays):
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {"__array__": len(arrays) - 1}
    if isinstance(obj, dict):
        return {"__dict__": [[str(k), _flatten(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, arrays) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint an object of type {type(obj).__name__}")


def _unflatten(desc, arrays):
    if isinstance(desc, dict):
        if "__array__" in desc:
            return arrays[desc["__array__"]]
        if "__dict__" in desc:
            return {k: _unflatten(v, arrays) for k, v in desc["__dict__"]}
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
    """Write ``state`` to ``path`` atomically; returns the checksum."""
    arrays = []
    tree_json = json.dumps(_flatten(state, arrays))
    digest = _digest(tree_json, arrays)
    meta = json.dumps({"format": "neuro_meta-checkpoint", "version": FORMAT_VERSION,
                       "sha256": digest, "tree": tree_json})
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array(meta), **{f"a{i}": a for i, a in enumerate(arrays)})
    atomic_write_bytes(path, buf.getvalue())
    return digest


def load(path):
    """Read a checkpoint written by :func:`save`, verifying format and checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(data).__name__}, not an .npz archive")
        with data:
            if "__meta__" not in data.files:
                raise KeyError("__meta__")
            meta = json.loads(str(data["__meta__"]))
            arrays = [data[f"a{i}"] for i in range(len(data.files) - 1)]
            for i, a in enumerate(arrays):      # numpy hands back a damaged member's
                if not isinstance(a, np.ndarray):   # raw bytes instead of an array
                    raise ValueError(f"member a{i} is not an array")
    except Exception as err:    # noqa: BLE001 -- a damaged file fails in numpy's zip,
        #                         header (ast, tokenize), zlib or JSON readers alike
        raise CheckpointError(f"{path}: not a readable neuro_meta checkpoint (truncated or "
                              f"corrupted: {err}); delete it or restart without --resume") \
            from None
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
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: not a neuro_meta checkpoint (its tree does not "
                              f"describe its arrays: {err})") from None


def checksum(tree):
    """SHA-256 of a state tree (e.g. meta-parameters): equal trees, equal checksums."""
    arrays = []
    return _digest(json.dumps(_flatten(tree, arrays)), arrays)
