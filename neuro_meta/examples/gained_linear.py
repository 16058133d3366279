"""A toy model kind: linear neurons ``ŷ = g ⊙ (φ x)`` with fast weights φ pulled to ω and
slow output gains g (see ``docs/architecture.md``, "How to add a model kind")."""
import numpy as np
import neuro_meta as nm
from neuro_meta.kind import pull_partials


class GainedLinear(nm.ModelKind):
    """ŷ = g ⊙ (φ x): fast weights φ pulled to ω, slow output gains g."""

    def __init__(self, n_in, n_out, lam=1.0, tau_fast=1.0, seed=0, theta=None):
        rng = np.random.default_rng(seed)
        self.sizes, self.tau_fast = (n_in, n_out), tau_fast
        self._theta = theta or {
            "gain": [np.ones(n_out)], "omega": [rng.normal(size=(n_out, n_in)) / n_in],
            "lam": [np.full((n_out, n_in), float(lam))]}

    theta = property(lambda self: {k: [a.copy() for a in v]
                                   for k, v in self._theta.items()})
    fast_names = property(lambda self: ["weights"])
    phi0 = anchor = property(lambda self: self._theta["omega"])
    lam = property(lambda self: self._theta["lam"])
    plastic = property(lambda self: [True])

    def with_theta(self, theta):
        return GainedLinear(*self.sizes, tau_fast=self.tau_fast,
                            theta={k: [np.asarray(a, float) for a in v]
                                   for k, v in theta.items()})

    def _raw(self, x, phi):                      # φ x, shape (..., samples, n_out)
        return np.matmul(x, np.swapaxes(phi[0], -1, -2))

    def predict(self, x, phi=None):
        return self._theta["gain"][0] * self._raw(x, self.phi0 if phi is None else phi)

    def forces(self, phi, v, x, y, c, rule="backprop"):
        err = (y - self.predict(x, phi)) * c[..., None] * self._theta["gain"][0]
        return [np.matmul(np.swapaxes(err, -1, -2), x)]        # −∂φ Σ c ℓ

    def theta_partials(self, phi, X, Y, c):
        raw = self._raw(X, phi)
        err = (self._theta["gain"][0] * raw - Y) * c[..., None]
        d_omega, d_lam = pull_partials(phi[0], self._theta["omega"][0], self.lam[0])
        return {"gain": [(err * raw).sum(axis=-2)], "omega": [d_omega], "lam": [d_lam]}
