"""Sphinx configuration of the neuro_meta documentation.

Build (warnings are errors, fully offline)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST). The tutorials are the notebooks of ``notebooks/``, rendered
with MyST-NB from their stored outputs -- never executed during the build (the test
suite executes them: ``tests/test_notebooks.py``). Sphinx reads sources only from inside
``docs/``, so the notebooks are copied to ``docs/tutorials/`` (a generated folder, ignored
by git) when the build starts.
"""
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import neuro_meta  # noqa: E402

project = "neuro_meta"
author = "the neuro_meta developers"
copyright = "the neuro_meta developers, MIT licence"
version = release = neuro_meta.__version__

extensions = [
    "myst_nb",                 # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = []

# -- MyST -----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Notebooks: render stored outputs, never execute ----------------------------------
nb_execution_mode = "off"
nb_merge_streams = True

# docs/tutorials.md lists these notebooks in this order; any other notebook in
# notebooks/ (e.g. brian2_interop.ipynb) is appended to that toctree, alphabetically.
CORE_TUTORIALS = ("quickstart", "cml_theory", "consolidation")


def _copy_notebooks():
    """Mirror ``notebooks/*.ipynb`` into ``docs/tutorials/`` (copy only what changed)."""
    src, dst = ROOT / "notebooks", DOCS / "tutorials"
    dst.mkdir(exist_ok=True)
    wanted = {p.name for p in src.glob("*.ipynb")}
    for stale in dst.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for nb in src.glob("*.ipynb"):
        target = dst / nb.name
        if not target.exists() or target.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target)


_copy_notebooks()


def _append_other_tutorials(app, docname, source):
    """``source-read`` hook: add the non-core notebooks to the tutorials toctree."""
    if docname != "tutorials":
        return
    extra = [f"tutorials/{p.stem}\n" for p in sorted((DOCS / "tutorials").glob("*.ipynb"))
             if p.stem not in CORE_TUTORIALS]
    last = f"tutorials/{CORE_TUTORIALS[-1]}\n"
    if last not in source[0]:
        raise RuntimeError(f"docs/tutorials.md: toctree entry {last.strip()!r} not found")
    source[0] = source[0].replace(last, last + "".join(extra), 1)


def setup(app):
    app.connect("source-read", _append_other_tutorials)

# -- API reference ----------------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
autodoc_class_signature = "mixed"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = False

# -- HTML ------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"neuro_meta {release}"
html_static_path = ["_static"]
html_theme_options = {
    "description": "Complex synapses as ODEs, meta-learned with the contrastive rule",
    "fixed_sidebar": True,
    "page_width": "1240px",
    "sidebar_width": "230px",
    "body_max_width": "none",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}

# Offline: no intersphinx, nothing fetched at build time.
