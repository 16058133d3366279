"""Progress bars: tqdm's on a terminal and in Jupyter, every LOG_INTERVAL s in a log file."""

import io
import subprocess
import sys

from neuro_meta import _progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_in_a_log_file_updates_every_log_interval(monkeypatch):
    """(ipykernel imported -- by the notebook tests, say -- is no Jupyter kernel.)"""
    try:
        import ipykernel  # noqa: F401    (the test extra installs it)
    except ImportError:
        pass

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    assert _progress.LOG_INTERVAL >= 10
    with _progress.bar(total=3, file=io.StringIO()) as b:
        assert b.mininterval == _progress.LOG_INTERVAL
    with _progress.bar(total=3, file=io.StringIO(), mininterval=0.5) as b:
        assert b.mininterval == 0.5                 # the caller's own
    monkeypatch.setenv("TQDM_MININTERVAL", "7")     # the user's (read by the package:
    with _progress.bar(total=3, file=io.StringIO()) as b:   # tqdm < 4.66 does not)
        assert b.mininterval == 7.0


def test_a_bar_on_a_terminal_is_tqdms(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    with _progress.bar(total=3, file=_Terminal()) as b:
        assert b.mininterval == 0.1


def test_a_log_file_gets_a_few_lines_not_thousands(tmp_path):
    """A bar of 2 s of work written to a file (a real redirected standard error): tqdm's
    own bar writes ~20 updates, this one the first and the last."""
    code = ("import time; from neuro_meta import _progress\n"
            "b = _progress.bar(range(40))\n"
            "for i in b: time.sleep(0.05); b.set_postfix(step=i)   # (as ES, every step)\n")
    log = tmp_path / "log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, check=True,
                       env={k: v for k, v in __import__("os").environ.items()
                            if k != "TQDM_MININTERVAL"})
    updates = log.read_text().count("/40 [")
    assert 2 <= updates <= 3, log.read_text()


def test_a_jupyter_kernel_without_widgets_gets_the_text_bar_without_a_warning(monkeypatch):
    import warnings

    ipython = type(sys)("IPython")
    ipython.get_ipython = lambda: type("Shell", (), {"config": {"IPKernelApp": {}}})()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)       # not importable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _progress.bar(total=3, file=io.StringIO()) as b:
            assert type(b).__module__ == "tqdm.std"
            assert b.mininterval == 0.1     # Jupyter's stream is no terminal: still tqdm's
