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


def load_model(name, required=()):
    """Read a model/experiment YAML file into a dict; ``required`` top-level keys."""
    import yaml

    path = find_model(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValidationError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: must be a mapping of keys to values "
                              f"(got {type(data).__name__})")
    for key in required:
        if key not in data:
            raise ValidationError(f"{path}: missing key {key!r}")
    data.setdefault("_file", str(path))
    return data
