"""Shared fixtures: seeded data and closed-form references written independently of the
package (numpy/scipy only), so that tests compare the package against mathematics, never
against numbers it produced before."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (tests do not depend on each other's draws)."""
    return np.random.default_rng(20240611)


@pytest.fixture
def linear_task(rng):
    """A small linear-regression task: K=10 shots, 5 inputs, 2 outputs, and an ω."""
    x = rng.normal(size=(10, 5))
    y = rng.normal(size=(10, 2))
    omega = rng.normal(size=(2, 5))
    return x, y, omega


def _ridge_fixed_point(x, y, omega, lam):
    """Minimiser of ``1/(2K) Σ_k ‖φ x_k − y_k‖² + Σ_ij λ_ij/2 (φ_ij − ω_ij)²``.

    ``x`` (K, n_in) may already be augmented with a column of ones (biases); ``lam`` is a
    scalar or an array of φ's shape (n_out, n_in). Row i of φ solves the normal equations
    ``(XᵀX/K + diag(λ_i)) φ_i = Xᵀy_i/K + λ_i ⊙ ω_i``.
    """
    x, y, omega = (np.asarray(a, dtype=float) for a in (x, y, omega))
    K = x.shape[0]
    lam = np.broadcast_to(np.asarray(lam, dtype=float), omega.shape)
    gram = x.T @ x / K
    phi = np.empty_like(omega)
    for i in range(omega.shape[0]):
        phi[i] = np.linalg.solve(gram + np.diag(lam[i]), x.T @ y[:, i] / K + lam[i] * omega[i])
    return phi


@pytest.fixture
def ridge_fixed_point():
    """The closed-form fixed point of the linear learning process (see the function)."""
    return _ridge_fixed_point


def _augment(x):
    """Append the constant rate-1 input that carries the biases: ``[x, 1]``."""
    x = np.asarray(x, dtype=float)
    return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)


@pytest.fixture
def augment():
    return _augment


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves ``os.environ`` as it found it: a Dask ``LocalCluster`` writes its
    workers' settings (``MALLOC_TRIM_THRESHOLD_``, BLAS threads) into this process's
    environment, and every later subprocess -- notebook kernels, process pools, the
    wheel's CLI -- inherited them (the Omniglot notebook ran 2.3x slower after the CLI
    tests)."""
    import os

    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


class FakeClock:
    """A time source the test advances by hand (``clock.t += seconds``)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def fake_clock():
    """A fresh :class:`FakeClock` at 0 s; a test patches it in where it needs it."""
    return FakeClock()
