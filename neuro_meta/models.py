"""Model and experiment files: YAML definitions in the top-level ``models/`` folder.

``load_model("gradcheck")`` reads ``models/gradcheck.yaml``; a path to any YAML file
works too. Folders searched: the environment variable ``NEURO_META_MODELS`` (a folder),
then the repository's ``models/`` folder (the package is installed from a checkout with
``pip install -e .``). Errors name the file and the key.
"""
import os
from pathlib import Path

from .errors import ValidationError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def model_dirs():
    dirs = []
    if os.environ.get("NEURO_META_MODELS"):
        dirs.append(Path(os.environ["NEURO_META_MODELS"]))
    dirs.append(MODELS_DIR)
    return dirs


def available_models():
    """Names of the model files that can be loaded by name."""
    names = set()
    for d in model_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_model(name):
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in model_dirs():
        cand = d / f"{name}.yaml"
        if cand.is_file():
            return cand
    raise ValidationError(f"load_model.name: no model file {name!r} (got {name!r}); "
                          f"available: {', '.join(available_models()) or 'none'}")


def load_model(name, required=(), _seen=()):
    """Read a model/experiment YAML file into a dict; ``required`` top-level keys.

    A file may start from another one with ``extends: NAME``: the other file's top-level
    sections are taken, and each section this file gives replaces the inherited one as
    a whole (no merging inside sections, so a section reads the same in both files).
    """
    import yaml

    path = find_model(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValidationError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: must be a mapping of keys to values "
                              f"(got {type(data).__name__})")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str) or base in _seen or base == path.stem:
            raise ValidationError(f"{path}: extends: must name another model file, without "
                                  f"cycles (got {base!r})")
        parent = load_model(base, (), _seen + (path.stem,))
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
    missing = [k for k in required if k not in sec]
    if missing:
        raise ValidationError(f"{where}: {key}: missing key(s) {', '.join(missing)}")
    unknown = [k for k in sec if k not in required and k not in optional]
    if unknown:
        raise ValidationError(f"{where}: {key}.{unknown[0]}: unknown key (known: "
                              f"{', '.join(list(required) + list(optional))})")
    return sec


def checked(where, key, fn, *args, **kwargs):
    """Call ``fn``; a ValidationError it raises is re-raised prefixed by file and key."""
    try:
        return fn(*args, **kwargs)
    except ValidationError as err:
        raise ValidationError(f"{where}: {key}: {err}") from None
