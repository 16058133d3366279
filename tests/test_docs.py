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



#: Pages whose python examples run as written, one after the other in one interpreter
#: (the other pages' examples are fragments that use names the prose defines, a remote
#: Dask scheduler, or hours of meta-training); slow: more than ~10 s.
RUNNABLE = ["README.md", "docs/index.md", "docs/architecture.md", "docs/dual.md",
            "docs/brian2.md", "docs/gradquality.md", "docs/warpgrad.md",
            pytest.param("docs/baselines.md", marks=pytest.mark.slow),
            pytest.param("docs/consolidation.md", marks=pytest.mark.slow)]


@pytest.mark.parametrize("page", RUNNABLE)
def test_a_pages_examples_run_as_written(page, tmp_path):
    """The page's python examples, copied as they stand into one script, run in a fresh
    interpreter (in an empty folder: nothing of the repository's is at hand) without an
    error and without a phase left unsettled."""
    import re

    text = (ROOT / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, page
    prelude = ("import warnings, neuro_meta as _nm\n"
               "warnings.simplefilter('error', _nm.NotSettledWarning)\n")
    script = tmp_path / "example.py"
    script.write_text(prelude + "\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"{page}:\n{proc.stderr[-3000:]}"
    # an output block right after an example shows what the example prints: every line
    # of it is a printed line ("..." stands for any text)
    printed = proc.stdout.splitlines()
    for shown in re.findall(r"```python\n.*?```\s*\n```text\n(.*?)```", text, re.S):
        for line in shown.strip("\n").splitlines():
            pattern = ".*".join(re.escape(part) for part in line.split("..."))
            assert any(re.fullmatch(pattern, out) for out in printed), \
                f"{page}: the shown output line {line!r} is not printed by the example"
