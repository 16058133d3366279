"""Contextual-bandit agents and their deployment on pre-drawn streams (the wheel bandit).

Every agent acts on a stream of contexts ``x`` (T, 2) whose rewards for **all** arms
``R`` (T, n_arms) were drawn in advance, so that every agent of a comparison meets the
same contexts and -- for the arm it pulls -- the same reward. An agent works in blocks:
it chooses the arms of the next ``update_every`` contexts with its current model
(:meth:`Agent.act`), sees their rewards, and updates its model on what it has seen
(:meth:`Agent.update`). :func:`deploy` runs an agent on a stream and returns the arms it
pulled.

Agents:

* :class:`Uniform` -- a uniformly random arm (the regret normaliser);
* :class:`LinGreedy` -- per arm a ridge regression of the reward on ``[x, 1]``, greedy
  with probability ``1 − epsilon`` (uniform otherwise), updated every trial;
* :class:`LinFullPost` -- per arm Bayesian linear regression with a
  Normal-Inverse-Gamma prior and Thompson sampling, updated every trial (Riquelme et al.
  2018: ``a0 = b0 = 6``, prior precision ``λ = 0.25``, two initial pulls per arm);
* :class:`SettledAgent` -- a meta-learned model kind (the dual system, a complex-synapse
  network) whose fast variables are **settled** on the agent's history every
  ``update_every`` trials (its learning process, started -- like meta-training's free
  phase -- from the meta-learned initial values φ₀ and pulled towards them), then greedy;
  it counts the updates whose learning process did not settle (:attr:`not_settled`);
* :class:`InnerLoopAgent` -- a MAML-family initialisation adapted by its inner SGD
  steps on the history every ``update_every`` trials, then greedy.

A history longer than ``window`` trials is cut to its last ``window`` trials (the
networks were meta-trained on ``window``-sized support sets).
"""
import warnings

import numpy as np

from .. import _params as P
from ..learning import NotSettledWarning
from ..losses import MASKED_SQUARED_ERROR


def _features(x):
    return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)


class Agent:
    """Base class: ``update_every`` (trials per block), :meth:`act`, :meth:`update`."""

    name = "agent"
    update_every = 1
    n_arms = 5

    def act(self, x, rng):
        """Arms (int, (len(x),)) for the contexts ``x`` of the next block."""
        raise NotImplementedError

    def update(self, x, arms, rewards):
        """Learn from the block just played (contexts, arms pulled, rewards seen)."""


class Uniform(Agent):
    """A uniformly random arm every trial."""

    name = "uniform"

    def __init__(self, n_arms=5):
        self.n_arms = P.integer(n_arms, "Uniform", "n_arms", low=1)

    def act(self, x, rng):
        return rng.integers(0, self.n_arms, len(x))


class _Linear(Agent):
    """Per-arm sufficient statistics of a linear model of the reward on ``[x, 1]``, and
    round-robin initial pulls."""

    def __init__(self, n_in=2, n_arms=5, prior_precision=1.0, initial_pulls=2):
        O = type(self).__name__
        self.n_arms = P.integer(n_arms, O, "n_arms", low=1)
        d = P.integer(n_in, O, "n_in", low=1) + 1
        self.prior_precision = P.real(prior_precision, O, "prior_precision", low=0.0,
                                      low_open=True)
        self.initial_pulls = P.integer(initial_pulls, O, "initial_pulls", low=0)
        self.A = np.broadcast_to(self.prior_precision * np.eye(d),
                                 (self.n_arms, d, d)).copy()   # Λ0 + Σ f fᵀ
        self.b = np.zeros((self.n_arms, d))                    # Σ f r
        self.yy = np.zeros(self.n_arms)                        # Σ r²
        self.n = np.zeros(self.n_arms, dtype=int)
        self.t = 0

    def update(self, x, arms, rewards):
        f = _features(np.asarray(x, float))
        for fi, a, r in zip(f, arms, rewards):
            self.A[a] += np.outer(fi, fi)
            self.b[a] += fi * r
            self.yy[a] += r * r
            self.n[a] += 1
        self.t += len(arms)

    def _round_robin(self):
        """The arm of the initial pulls, or None once they are done."""
        if self.t < self.initial_pulls * self.n_arms:
            return self.t % self.n_arms
        return None


class LinGreedy(_Linear):
    """Ridge regression per arm (``prior_precision`` the ridge), ε-greedy."""

    name = "lingreedy"

    def __init__(self, n_in=2, n_arms=5, prior_precision=1.0, epsilon=0.05,
                 initial_pulls=2):
        super().__init__(n_in, n_arms, prior_precision, initial_pulls)
        self.epsilon = P.real(epsilon, "LinGreedy", "epsilon", low=0.0, high=1.0)

    def act(self, x, rng):
        out = []
        for xi in np.atleast_2d(x):
            a = self._round_robin()
            explore = rng.random() < self.epsilon
            if a is None:
                if explore:
                    a = int(rng.integers(self.n_arms))
                else:
                    w = np.linalg.solve(self.A, self.b[..., None])[..., 0]
                    a = int(np.argmax(w @ _features(xi)))
            out.append(a)
        return np.array(out)


class LinFullPost(_Linear):
    """Bayesian linear regression per arm with a Normal-Inverse-Gamma prior
    ``σ² ~ IG(a0, b0)``, ``β | σ² ~ N(0, σ²/λ I)`` and Thompson sampling::

        Λ = λ I + Σ f fᵀ,   μ = Λ⁻¹ Σ f r,   a = a0 + n/2,   b = b0 + ½ (Σ r² − μᵀ Λ μ)
        σ² ~ IG(a, b),   β ~ N(μ, σ² Λ⁻¹),   arm = argmax_a fᵀ β_a
    """

    name = "linfullpost"

    def __init__(self, n_in=2, n_arms=5, prior_precision=0.25, a0=6.0, b0=6.0,
                 initial_pulls=2):
        super().__init__(n_in, n_arms, prior_precision, initial_pulls)
        self.a0 = P.real(a0, "LinFullPost", "a0", low=0.0, low_open=True)
        self.b0 = P.real(b0, "LinFullPost", "b0", low=0.0, low_open=True)

    def posterior(self, arm):
        """The Normal-Inverse-Gamma posterior of ``arm``: ``(μ, Λ⁻¹, a, b)``."""
        k = P.integer(arm, "LinFullPost.posterior", "arm", low=0, high=self.n_arms - 1)
        cov = np.linalg.inv(self.A[k])
        cov = 0.5 * (cov + cov.T)
        mu = cov @ self.b[k]
        a_post = self.a0 + 0.5 * self.n[k]
        b_post = self.b0 + 0.5 * max(self.yy[k] - mu @ self.A[k] @ mu, 0.0)
        return mu, cov, a_post, b_post

    def sample(self, rng):
        """One Thompson draw of every arm's coefficients, shape (n_arms, n_in + 1):
        ``σ² ~ IG(a, b)``, ``β ~ N(μ, σ² Λ⁻¹)`` per arm."""
        P.generator(rng, "LinFullPost.sample", "rng")
        out = []
        for k in range(self.n_arms):
            mu, cov, a_post, b_post = self.posterior(k)
            s2 = b_post / rng.gamma(a_post)
            out.append(rng.multivariate_normal(mu, s2 * cov, method="cholesky"))
        return np.array(out)

    def act(self, x, rng):
        out = []
        for xi in np.atleast_2d(x):
            a = self._round_robin()
            if a is None:
                a = int(np.argmax(self.sample(rng) @ _features(xi)))
            out.append(a)
        return np.array(out)


class _History(Agent):
    """Keeps the last ``window`` trials as masked targets (rewards / ``scale``)."""

    def __init__(self, n_arms, update_every, window, scale):
        O = type(self).__name__
        self.n_arms = P.integer(n_arms, O, "n_arms", low=1)
        self.update_every = P.integer(update_every, O, "update_every", low=1)
        self.window = P.integer(window, O, "window", low=1)
        self.scale = P.real(scale, O, "scale", low=0.0, low_open=True)
        self.hx = np.zeros((0, 2))
        self.ha = np.zeros(0, dtype=int)
        self.hr = np.zeros(0)
        self.updates = 0         # re-learnings so far

    def _remember(self, x, arms, rewards):
        self.hx = np.concatenate([self.hx, x])[-self.window:]
        self.ha = np.concatenate([self.ha, arms])[-self.window:]
        self.hr = np.concatenate([self.hr, rewards])[-self.window:]
        y = MASKED_SQUARED_ERROR.targets(self.ha, self.hr / self.scale, self.n_arms)
        return self.hx, y


class SettledAgent(_History):
    """Greedy on a model kind whose fast variables are settled on the history every
    ``update_every`` trials by ``learner``, each time from the meta-learned initial values
    φ₀ (``phi_init=None``), as in meta-training's free phase -- so an update depends on
    the history only, not on the previous updates (for a non-convex model the fixed point
    can depend on where the settling starts). ``name``: the method's name in tables.
    :attr:`updates` counts the updates, :attr:`not_settled` those whose learning process
    did not settle (:class:`~neuro_meta.learning.NotSettledWarning`, caught here)."""

    def __init__(self, net, learner, name, n_arms=5, update_every=50, window=256,
                 scale=1.0):
        super().__init__(n_arms, update_every, window, scale)
        self.net, self.learner, self.name = net, learner, name
        self.phi = None          # None: the meta-learned initial values
        self.not_settled = 0

    def act(self, x, rng):
        return np.argmax(self.net.predict(np.asarray(x, float), self.phi), axis=-1)

    def update(self, x, arms, rewards):
        X, Y = self._remember(x, arms, rewards)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NotSettledWarning)
            res = self.learner.run(self.net, X, Y, phi_init=None)
        self.updates += 1
        self.not_settled += sum(issubclass(w.category, NotSettledWarning) for w in caught)
        self.phi = [np.array(p) for p in res.phi_aug]


class InnerLoopAgent(_History):
    """Greedy on an MLP adapted from a meta-learned initialisation ``params`` by the
    inner loop of ``method`` (a :mod:`neuro_meta.baselines` method with the masked loss)
    on the history every ``update_every`` trials."""

    def __init__(self, method, params, name, n_arms=5, update_every=50, window=256,
                 scale=1.0):
        super().__init__(n_arms, update_every, window, scale)
        self.method, self.params, self.name = method, params, name
        self.phi = params

    def act(self, x, rng):
        from ..baselines import mlp_predict

        out = mlp_predict(self.phi, np.asarray(x, float)[None])[0]
        return np.argmax(out, axis=-1)

    def update(self, x, arms, rewards):
        X, Y = self._remember(x, arms, rewards)
        phi = self.method.adapt(self.params, X[None], Y[None])
        self.updates += 1
        self.phi = {k: [a[0] for a in v] for k, v in phi.items()}


def deploy(agent, x, R, rng):
    """Run ``agent`` on the stream: contexts ``x`` (T, n_in) and all arms' rewards ``R``
    (T, n_arms); ``rng`` its own generator. Returns the arms pulled (T,) int."""
    P.generator(rng, "deploy", "rng")
    x = P.finite_array(x, "deploy", "x", ndim=2)
    R = P.finite_array(R, "deploy", "R", ndim=2)
    if R.shape[0] != x.shape[0]:
        P.fail("deploy", "R", f"must have one row per context ({x.shape[0]})",
               f"shape {R.shape}")
    T, k = x.shape[0], agent.update_every
    arms = np.zeros(T, dtype=int)
    for t0 in range(0, T, k):
        sl = slice(t0, min(T, t0 + k))
        a = np.asarray(agent.act(x[sl], rng))
        n = sl.stop - sl.start
        if a.shape != (n,) or a.dtype.kind not in "iu" or (
                a.size and (a.min() < 0 or a.max() >= R.shape[1])):
            P.fail("deploy", "agent.act", f"must return {n} integer arms in "
                   f"[0, {R.shape[1]})", f"dtype {a.dtype}, shape {a.shape}" + (
                       f", range [{a.min().item()!r}, {a.max().item()!r}]" if a.size and
                       a.dtype.kind in "iuf" else ""))
        a = a.astype(int)
        arms[sl] = a
        agent.update(x[sl], a, R[sl, :][np.arange(len(a)), a])
    return arms
