"""The tutorial notebooks run top to bottom.

Every ``notebooks/*.ipynb`` is executed with nbclient in a fresh kernel that runs on the
interpreter running the tests (so it sees the same installed ``neuro_meta``), from the
``notebooks/`` folder, with a 300 s limit per cell. Any error in any cell fails the test
with the cell's traceback. The notebooks on disk are not modified.
"""
import json
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "neuro-meta-tests"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec for this interpreter, found first through ``JUPYTER_PATH``."""
    pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks "
                        "(pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks "
                        "(pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "neuro_meta tests", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    yield KERNEL
    mp.undo()


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "cml_theory.ipynb", "consolidation.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_name):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=300,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()        # raises CellExecutionError (with the traceback) on any error
    print(f"\n[{path.name}] executed in {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
