"""The package's architecture, read from its source (ast): layers, imports, model kinds.

* no import points up the layer order (module-level or inside a function);
* the import graph has no cycle;
* no private name (``_x``) crosses a module: neither imported nor read as an attribute
  (of a module or an object) unless the reading module defines that name itself;
* no ``isinstance``/``issubclass`` on a model kind outside that kind's own module (the
  stack sees kinds only through the :class:`~neuro_meta.kind.ModelKind` protocol).

Each check is also run on a small synthetic package that breaks it, so that a check
that can no longer fail is noticed.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "neuro_meta"

#: Layers, lowest first: a module may import its own layer's and lower layers' modules.
LAYERS = [
    # foundations
    {"errors", "_params", "_progress", "io", "results", "activations", "initializers", "optim", "workers",
     "checkpoint", "losses", "datasets", "data", "data.*"},
    # the model-kind protocol and the data it is fed
    {"kind", "tasks", "synapses"},
    # engines: step any kind (the fused and Brian2 engines: layered rate networks)
    {"engines", "engines.*"},
    # model kinds
    {"network", "dual", "warp"},
    # the learning process's front end
    {"learning"},
    # meta-gradients
    {"cml", "exact", "estimators"},
    # meta-learning
    {"families", "baselines", "metatrain", "warpgrad", "vsml"},
    # experiments and outputs
    {"models", "plotting", "experiments", "experiments.*", "examples", "examples.*",
     "bench", "cli", ""},
]


def layer_of(module):
    for i, layer in enumerate(LAYERS):
        for pat in layer:
            if module == pat or (pat.endswith(".*") and module.startswith(pat[:-1])):
                return i
    raise AssertionError(f"module neuro_meta.{module} is in no layer of {__file__}")


def modules(root):
    """{dotted name relative to the package ('' for __init__): path}"""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module, is_package, node, known):
    """Package-relative module names an Import/ImportFrom node refers to, with the names
    it imports: [(module, name or None)]."""
    out = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name == "neuro_meta" or a.name.startswith("neuro_meta."):
                out.append((a.name[len("neuro_meta."):] if "." in a.name else "", None))
        return out
    if node.level == 0:
        if not node.module or not (node.module == "neuro_meta"
                                   or node.module.startswith("neuro_meta.")):
            return out
        base = node.module[len("neuro_meta."):] if "." in node.module else ""
    else:
        pkg = module.split(".") if module else []
        if not is_package:
            pkg = pkg[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
        base = ".".join(pkg + ([node.module] if node.module else []))
    for a in node.names:
        sub = f"{base}.{a.name}" if base else a.name
        if sub in known:          # "from . import optim": the module itself
            out.append((sub, None))
        else:
            out.append((base, a.name))
    return out


def _private_definitions(tree):
    """Private names a module defines itself: functions, classes, class attributes and
    ``self._x`` assignments (reading them on other objects stays inside the module)."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    own.add(t.id)
                elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                        and t.value.id == "self":
                    own.add(t.attr)
    return {n for n in own if n.startswith("_")}


def scan(root):
    """Imports, private-name uses and isinstance uses of every module under ``root``."""
    mods = modules(root)
    imports, private, kind_checks, kinds = {}, [], [], {}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in mods.items()}
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", None)) == "ModelKind"
                    for b in node.bases):
                kinds[node.name] = m
    for m, tree in trees.items():
        is_pkg = mods[m].name == "__init__.py"
        imports[m] = set()
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, name in _resolve(m, is_pkg, node, mods):
                    if target not in mods:
                        continue
                    if target != m:
                        imports[m].add((target, node.lineno))
                    if name is not None and name.startswith("_") and not (
                            name.startswith("__") and name.endswith("__")):
                        private.append(f"neuro_meta.{m}:{node.lineno} imports {name} from "
                                       f"neuro_meta.{target}")
                    for a in node.names:
                        if name is None or a.name == name:
                            aliases[a.asname or a.name.split(".")[0]] = target
        own = _private_definitions(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not (
                    node.attr.startswith("__") and node.attr.endswith("__")):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) \
                        or node.attr in own:
                    continue
                private.append(f"neuro_meta.{m}:{node.lineno} reads .{node.attr} of "
                               f"{ast.unparse(owner)}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "isinstance", "issubclass") and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1])
                          if isinstance(n, ast.Attribute)}
                for k in names & set(kinds):
                    if kinds[k] != m:
                        kind_checks.append(f"neuro_meta.{m}:{node.lineno} tests "
                                           f"isinstance(..., {k})")
    return imports, private, kind_checks


def upward(imports):
    return [f"neuro_meta.{m}:{line} imports neuro_meta.{t} (layer {layer_of(t)} above "
            f"layer {layer_of(m)})"
            for m, targets in imports.items() for t, line in sorted(targets)
            if layer_of(t) > layer_of(m)]


def cycles(imports):
    graph = {m: {t for t, _ in ts} for m, ts in imports.items()}
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                found.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


# ---------------------------------------------------------------------- the package
def test_no_import_points_up_the_layers():
    imports, _, _ = scan(PACKAGE)
    assert upward(imports) == []


def test_the_import_graph_has_no_cycle():
    imports, _, _ = scan(PACKAGE)
    assert cycles(imports) == []


def test_no_private_name_crosses_a_module():
    _, private, _ = scan(PACKAGE)
    assert private == []


def test_no_isinstance_on_a_model_kind_outside_its_module():
    _, _, checks = scan(PACKAGE)
    assert checks == []


# ---------------------------------------------------------------------- the checks can fail
@pytest.fixture
def broken(tmp_path):
    """A package that breaks every rule once."""
    root = tmp_path / "neuro_meta"
    (root / "engines").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "errors.py": "from .learning import Learner\n",                 # upward
        "kind.py": "class ModelKind:\n    pass\n",
        "network.py": "from .kind import ModelKind\nclass RateNetwork(ModelKind):\n"
                      "    pass\n",
        "learning.py": "from . import cml\nfrom .network import _drive\n"   # private
                       "def f(net, npe):\n    from .network import RateNetwork\n"
                       "    return isinstance(net, RateNetwork) or npe._task_max\n",
        "cml.py": "from .exact import g\n",
        "exact.py": "from .cml import h\n",                              # cycle
        "engines/__init__.py": "",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_checks_find_what_breaks_them(broken):
    imports, private, checks = scan(broken)
    assert any("neuro_meta.errors:1 imports neuro_meta.learning" in u for u in upward(imports))
    assert any("cml -> exact -> cml" in c for c in cycles(imports))
    assert any("imports _drive" in p for p in private)
    assert any("reads ._task_max of npe" in p for p in private)
    assert checks == ["neuro_meta.learning:5 tests isinstance(..., RateNetwork)"]


def test_every_warning_names_the_users_line():
    """No ``warnings.warn`` of the package has a fixed ``stacklevel``: a fixed level
    names the user's line from one entry point only (and a line of the package from the
    others); ``errors.user_stacklevel()`` finds it from every one."""
    fixed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn":
                for kw in node.keywords:
                    if kw.arg == "stacklevel" and isinstance(kw.value, ast.Constant):
                        fixed.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert fixed == []
