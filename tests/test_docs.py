"""The documentation builds with warnings as errors, offline.

Runs ``sphinx-build -W --keep-going -b html docs <tmp>`` with the interpreter running the
tests. Skipped when Sphinx or MyST-NB is not installed (``pip install -e '.[docs]'``).
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install -e '.[docs]')")
    pytest.importorskip("myst_nb", reason="MyST-NB is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    for page in ("index", "installation", "concepts", "cml", "consolidation", "cli", "api",
                 "tutorials", "tutorials/quickstart", "tutorials/cml_theory",
                 "tutorials/consolidation"):
        assert (out / f"{page}.html").is_file(), page
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("neuro_meta.RateNetwork", "neuro_meta.ComplexSynapse", "neuro_meta.Learner",
                 "neuro_meta.CML", "neuro_meta.exact_meta_gradient", "neuro_meta.optim.adam",
                 "neuro_meta.metatrain.MetaTrainer", "neuro_meta.plotting.phi_trajectories",
                 "neuro_meta.families.LinearTeacher"):
        assert f'id="{name}"' in api, f"{name} missing from the API reference"
    for fig in ("gradcheck.png", "consolidation.png"):
        assert (out / "_images" / fig).is_file(), fig


def test_dual_page_example_runs_as_written(monkeypatch):
    """docs/dual.md's first example, copied as it stands into a script, runs without an
    error or a warning (a reader's first contact with the dual system)."""
    import re
    import warnings

    text = (ROOT / "docs" / "dual.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, "docs/dual.md", "exec"), {"__name__": "dual_example"})
