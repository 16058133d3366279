"""Model and experiment files: YAML definitions of networks, learning processes and
experiments.

The shipped files (the repository's top-level ``models/`` folder) are package data:
they are in every install, wheels included (the package sees the folder through the link
``neuro_meta/model_files``). Folders searched, in order:

1. folders given by the caller (``neuro-meta --models DIR``);
2. the folders of the environment variable ``NEURO_META_MODELS`` (``os.pathsep``-separated);
3. the shipped files.

A file found earlier shadows a shipped file of the same name. ``load_model(name)`` also
takes a path to any YAML file; a file may start from another one with ``extends: NAME``.
Errors name the file and the key.
"""
import copy
import os
from pathlib import Path

import numpy as np

from . import _params as P
from .errors import ValidationError

#: The shipped model files.
SHIPPED = Path(__file__).resolve().parent / "model_files"


def model_dirs(extra=()):
    """``(source, folder)`` pairs in search order (see the module docstring); a folder
    given by the user that does not exist is an error."""
    dirs = []
    for d in extra or ():
        if not str(d).strip():          # Path("") is the working folder: not what was meant
            raise ValidationError(f"--models: must name a folder of model files (got "
                                  f"{str(d)!r}: an empty path)")
        dirs.append(("--models", Path(d)))
    for d in os.environ.get("NEURO_META_MODELS", "").split(os.pathsep):
        if d.strip():
            dirs.append(("NEURO_META_MODELS", Path(d)))
    for source, d in dirs:
        if not d.is_dir():
            why = "a file, not a folder" if d.exists() else "no such folder"
            raise ValidationError(f"{source}: must name a folder of model files (got "
                                  f"{str(d)!r}: {why})")
    dirs.append(("shipped", SHIPPED))
    return dirs


def available_models(extra=()):
    """``(name, source, path)`` of every model file that can be loaded by name, sorted by
    name; a name found in several folders is listed once, from the first."""
    found = {}
    for source, d in model_dirs(extra):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                if p.is_file():          # a dangling link or a folder is not a model
                    found.setdefault(p.stem, (p.stem, source, p))
    return [found[k] for k in sorted(found)]


def find_model(name, extra=()):
    """The path of model file ``name`` (a name, or a path to a ``.yaml``/``.yml`` file)."""
    if not isinstance(name, (str, os.PathLike)):
        raise ValidationError(f"load_model.name: must be a model name or a path (got "
                              f"{type(name).__name__})")
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or os.sep in str(name):
        if p.is_file():
            return p
        raise ValidationError(f"load_model.name: no such model file (got {str(name)!r})")
    for _, d in model_dirs(extra):
        cand = d / f"{name}.yaml"
        if cand.is_file():
            return cand
    raise ValidationError(f"load_model.name: no model file of that name (got {name!r}); "
                          f"available: {', '.join(n for n, _, _ in available_models(extra)) or 'none'}")


def load_model(name, required=(), dirs=(), _seen=()):
    """Read a model/experiment YAML file into a dict; ``required`` top-level keys;
    ``dirs``: folders searched first (``neuro-meta --models``).

    A file may start from another one with ``extends: NAME``: the other file's top-level
    sections are taken, and each section this file gives replaces the inherited one as
    a whole (no merging inside sections, so a section reads the same in both files).
    """
    import yaml

    path = find_model(name, dirs)
    try:
        data = _yaml_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValidationError(f"{path}: cannot be read ({err})") from None
    except yaml.YAMLError as err:
        raise ValidationError(f"{path}: not valid YAML ({' '.join(str(err).split())})") \
            from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: must be a mapping of keys to values "
                              f"(got {type(data).__name__})")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str) or base in _seen or Path(base).stem == path.stem:
            raise ValidationError(f"{path}: extends: must name another model file, without "
                                  f"cycles (got {base!r})")
        if Path(base).suffix in (".yaml", ".yml") and not Path(base).is_absolute():
            base = str(path.parent / base)          # a path: relative to this file
        parent = load_model(base, (), tuple(dirs) + (path.parent,), _seen + (path.stem,))
        parent.pop("_file", None)
        data = {**parent, **data}
    for key in required:
        if key not in data:
            raise ValidationError(f"{path}: missing key {key!r}")
    data.setdefault("_file", str(path))
    return data


def section(cfg, key, required=(), optional=()):
    """``cfg[key]`` checked to be a mapping with exactly the ``required`` keys (and maybe
    some ``optional`` ones); errors name the file and the key path."""
    where = cfg.get("_file", "<config>")
    if key not in cfg:
        raise ValidationError(f"{where}: missing key {key!r}")
    sec = cfg[key]
    if not isinstance(sec, dict):
        raise ValidationError(f"{where}: {key}: must be a mapping (got {sec!r})")
    known = list(required) + list(optional)
    unknown = [k for k in sec if k not in known]
    if unknown:     # first: a misspelt key is also a missing one
        word = unknown[0]
        elsewhere = [k for k, v in cfg.items() if k not in (key, "quick")
                     and not k.startswith("_") and isinstance(v, dict) and word in v]
        if word in cfg and isinstance(cfg[word], dict):     # a section, indented here
            hint = f" (a top-level section, not a key of {key})"
        elif elsewhere:                                     # a key of another section
            hint = f" (a key of the {', '.join(elsewhere)} section" + \
                f"{'s' if len(elsewhere) > 1 else ''})"
        else:
            hint = did_you_mean(word, known)
        raise ValidationError(f"{where}: {key}.{unknown[0]}: unknown key"
                              f"{hint} (known: {', '.join(known)})")
    missing = [k for k in required if k not in sec]
    if missing:
        raise ValidationError(f"{where}: {key}: missing key(s) {', '.join(missing)}")
    quick = cfg.get("quick")        # the file's --quick overlay of this section: checked on
    over = quick.get(key) if isinstance(quick, dict) else None      # every run, not only
    if isinstance(over, dict):                                      # under --quick
        bad = [k for k in over if k not in known]
        if bad:
            raise ValidationError(f"{where}: quick.{key}.{bad[0]}: unknown key"
                                  f"{did_you_mean(bad[0], known)} (known: {', '.join(known)})")
    return sec


def did_you_mean(word, choices):
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def overlay(cfg, key):
    """The overlay ``cfg[key]`` (``quick:``, a variant): a mapping of section names to
    mappings of the values they replace, each section existing in ``cfg`` as a mapping
    (checked, so that merging cannot fail half-way); ``{}`` if absent."""
    where = cfg.get("_file", "<config>")
    over = cfg.get(key)
    if over is None:
        return {}
    if not isinstance(over, dict):
        raise ValidationError(f"{where}: {key}: must be a mapping of sections to the values "
                              f"they override (got {over!r:.60})")
    for sec, values in over.items():
        if not isinstance(values, dict):
            raise ValidationError(f"{where}: {key}.{sec}: must be a mapping of keys to "
                                  f"values (got {values!r:.60})")
        if sec not in cfg:
            continue                   # a new section: the experiment's check decides
        if not isinstance(cfg[sec], dict):
            raise ValidationError(f"{where}: {sec}: must be a mapping (got "
                                  f"{type(cfg[sec]).__name__})")
    return over


def checked(where, key, fn, *args, **kwargs):
    """Call ``fn``; a ValidationError it raises is re-raised prefixed by file and key."""
    try:
        return fn(*args, **kwargs)
    except ValidationError as err:
        msg = str(err)     # (the key once, when the error already begins with it)
        raise ValidationError(f"{where}: {msg}" if msg.startswith(f"{key}:")
                              else f"{where}: {key}: {msg}") from None


def _yaml_load(text):
    """YAML as PyYAML's safe loader reads it, except that a number in exponent notation
    without a dot (``1e-3``, YAML 1.2's float) is a float, not the string "1e-3" of YAML
    1.1 -- in a model file, a ``--set`` value and inside lists alike."""
    import re

    import yaml

    global _LOADER
    if _LOADER is None:
        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
            list("-+0123456789."))
        _LOADER = Loader
    return yaml.load(text, Loader=_LOADER)


_LOADER = None


def apply_overrides(cfg, overrides, owner="neuro-meta run.--set"):
    """``cfg`` with single values replaced: each override ``"a.b.c=value"`` (the value
    read as YAML: numbers, booleans, lists). The path's sections must exist in the
    configuration and be mappings; the last key may be new (the experiment's validation
    then accepts or refuses it)."""
    import yaml

    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if not isinstance(item, str) or "=" not in item:
            raise ValidationError(f"{owner}: must be KEY.PATH=VALUE (got {item!r})")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ValidationError(f"{owner}: must be KEY.PATH=VALUE with a non-empty key "
                                  f"path (got {item!r})")
        try:
            value = _yaml_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ValidationError(f"{owner}: {key}: the value is not valid YAML "
                                  f"({str(err).splitlines()[0]}) (got {text!r})") from None
        node = cfg
        for i, part in enumerate(parts[:-1]):
            if part not in node:
                raise ValidationError(f"{owner}: {'.'.join(parts[:i + 1])}: no such section "
                                      f"in {cfg.get('_file', 'the configuration')} (got "
                                      f"{item!r})")
            if not isinstance(node[part], dict):
                raise ValidationError(f"{owner}: {'.'.join(parts[:i + 1])}: is a value, not "
                                      f"a section (got {item!r})")
            node = node[part]
        if len(parts) == 1 and parts[0] not in cfg:
            raise ValidationError(f"{owner}: {parts[0]}: no such section in "
                                  f"{cfg.get('_file', 'the configuration')} (got {item!r})")
        node[parts[-1]] = value
    return cfg


def check_top_level(cfg, allowed):
    """Every top-level key of ``cfg`` must be one of ``allowed`` (and the bookkeeping
    keys ``_file``, ``experiment``, ``extends``)."""
    where = cfg.get("_file", "<config>")
    for k in cfg:
        if k not in allowed and k not in ("_file", "experiment", "extends", "_overrides"):
            raise ValidationError(f"{where}: {k}: unknown section{did_you_mean(k, allowed)} "
                                  f"(known: {', '.join(sorted(allowed))})")


def merge(base, over):
    """``base`` with the values of ``over`` (nested mappings merged key by key; a mapping
    over a value replaces it)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        inner = out.get(k)
        out[k] = merge(inner if isinstance(inner, dict) else {}, v) if isinstance(v, dict) \
            else v
    return out


def check_run_args(owner, out_dir, cfg=None, overrides=(), **flags):
    """The common arguments of an experiment's ``run``, checked before any work: the
    output folder a path that is, or can become, a folder (not a file, nor under one),
    ``cfg`` None or a mapping (a loaded model file), ``overrides`` a list of
    ``"KEY.PATH=VALUE"`` strings (a single string would be read character by
    character), and each of ``flags`` (``quick``, ``progress``, ``resume``, ...) True
    or False -- not a truthy value: ``quick="no"`` would run the quick settings."""
    import os

    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        P.fail(owner, "out_dir", "must be a folder's path (str or os.PathLike)",
               P.shown(out_dir))
    check_out_dir(owner, out_dir)
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)) \
            or not all(isinstance(o, str) for o in overrides):
        P.fail(owner, "overrides", "must be a list of 'KEY.PATH=VALUE' strings",
               P.shown(overrides))
    if cfg is not None and not isinstance(cfg, dict):
        P.fail(owner, "cfg", "must be None (the shipped file) or a configuration mapping "
               "(neuro_meta.models.load_model)", P.shown(cfg))
    for attr, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            P.fail(owner, attr, "must be True or False", P.shown(value))


def check_out_dir(owner, out_dir, attr="out_dir"):
    """``out_dir`` must be a folder or a path a folder can be made at: not an existing
    file, nor under one (the OS's NotADirectoryError/FileExistsError named here, before
    any work); a path the OS refuses for other reasons (permissions) is the OS's
    error."""
    p = Path(os.fspath(out_dir))
    if "\0" in str(p):
        P.fail(owner, attr, "must be a path without a NUL character", P.shown(str(p)))
    if p.exists() and not p.is_dir():
        P.fail(owner, attr, "must be a folder (or a path where one can be made)",
               f"{str(p)!r}: an existing file")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                P.fail(owner, attr, "must be a folder (or a path where one can be made)",
                       f"{str(p)!r}: under the file {str(parent)!r}")
            break
    return p


def configure(cfg, sections, quick=False, overrides=(), seed=None, seed_section="meta"):
    """An experiment's effective configuration, in the order every experiment uses: the
    file's values, ``quick:``'s overlay (``quick``), the ``--set`` overrides (recorded in
    ``_overrides``), the seed (``seed_section.seed``); then every top-level key must be
    one of ``sections``."""
    if quick:
        cfg = merge(cfg, overlay(cfg, "quick"))
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
        cfg["_overrides"] = list(overrides)
    if seed is not None:
        cfg = merge(cfg, {seed_section: {"seed": seed}})
    check_top_level(cfg, sections)
    return cfg
