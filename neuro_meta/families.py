"""Task families: seeded generators of few-shot tasks.

A family draws a batch of tasks with ``family.sample(rng, n_tasks) -> Task`` (arrays
with a leading task axis). Draws depend only on the generator, so the same seed gives
the same tasks on any executor. ``rng`` must be a ``numpy.random.Generator`` and
``n_tasks`` a positive integer whose batch fits in
:data:`~neuro_meta._params.MAX_ARRAY_BYTES` (checked before drawing).
"""
from dataclasses import dataclass

import numpy as np

from . import _params as P
from .tasks import Task


def check_sample(owner, rng, n_tasks, per_task):
    """Validated ``(rng, n_tasks)`` of ``owner.sample``; ``per_task``: the largest number
    of values one task's arrays hold (the batch is refused beyond the memory limit)."""
    P.generator(rng, owner, "rng")
    n_tasks = P.integer(n_tasks, owner, "n_tasks", low=1)
    P.check_bytes(n_tasks * per_task, owner, "n_tasks", f"of {n_tasks} x {per_task} values",
                  repr(n_tasks))
    return rng, n_tasks


@dataclass(frozen=True)
class LinearTeacher:
    """Linear-teacher regression tasks with shared and task-specific weights.

    Each task's teacher ``W_τ`` (n_out, n_in) equals a fixed ``W_shared`` on a fixed subset
    of entries (the *shared* synapses, a fraction ``shared_fraction`` of all) and is
    redrawn ``N(0, specific_std²)`` per task on the others. Inputs ``x ~ N(0, I)``,
    targets ``y = W_τ x + noise_std · ε``. ``structure_seed`` fixes ``W_shared`` and the
    mask.
    """

    n_in: int = 10
    n_out: int = 5
    shots: int = 5
    val: int = 20
    shared_fraction: float = 0.5
    shared_std: float = 1.0
    specific_std: float = 1.0
    noise_std: float = 0.5
    structure_seed: int = 0

    def __post_init__(self):
        O = "LinearTeacher"
        for k in ("n_in", "n_out", "shots", "val"):
            P.integer(getattr(self, k), O, k, low=1)
        P.real(self.shared_fraction, O, "shared_fraction", low=0.0, high=1.0)
        for k in ("shared_std", "specific_std", "noise_std"):
            P.real(getattr(self, k), O, k, low=0.0)
        P.integer(self.structure_seed, O, "structure_seed", low=0)
        P.check_bytes(self.n_in * self.n_out, O, "n_in", f"of shape ({self.n_out}, "
                      f"{self.n_in}) (the teacher)", repr(self.n_in))
        P.check_bytes((self.shots + self.val) * max(self.n_in, self.n_out), O, "shots",
                      f"of {self.shots + self.val} samples x {max(self.n_in, self.n_out)} "
                      "(one task)", repr(self.shots))

    @property
    def structure(self):
        """(shared mask (n_out, n_in) bool, W_shared (n_out, n_in))."""
        rng = np.random.default_rng([self.structure_seed, 7])
        n = self.n_in * self.n_out
        k = int(round(self.shared_fraction * n))
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:k]] = True
        w = self.shared_std * rng.standard_normal((self.n_out, self.n_in))
        return mask.reshape(self.n_out, self.n_in), w

    def teachers(self, rng, n_tasks):
        mask, w_shared = self.structure
        spec = self.specific_std * rng.standard_normal((n_tasks, self.n_out, self.n_in))
        return np.where(mask, w_shared, spec)

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis)."""
        rng, n_tasks = check_sample("LinearTeacher.sample", rng, n_tasks, max(
            self.n_in * self.n_out, (self.shots + self.val) * max(self.n_in, self.n_out)))
        W = self.teachers(rng, n_tasks)
        n = self.shots + self.val
        x = rng.standard_normal((n_tasks, n, self.n_in))
        y = np.einsum("toi,tki->tko", W, x) + self.noise_std * rng.standard_normal(
            (n_tasks, n, self.n_out))
        return Task(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])


@dataclass(frozen=True)
class Sinusoid:
    """Few-shot sinusoid regression (Finn et al. 2017): ``y = A sin(x − φ)``.

    Per task: amplitude ``A ~ U[amplitude]``, phase ``φ ~ U[phase]``; inputs
    ``x ~ U[x_range]``; ``shots`` training points and ``val`` validation points.
    """

    shots: int = 10
    val: int = 10
    amplitude: tuple = (0.1, 5.0)
    phase: tuple = (0.0, np.pi)
    x_range: tuple = (-5.0, 5.0)

    def __post_init__(self):
        O = "Sinusoid"
        P.integer(self.shots, O, "shots", low=1)
        P.integer(self.val, O, "val", low=1)
        P.check_bytes(self.shots + self.val, O, "shots", f"of {self.shots + self.val} "
                      "samples (one task)", repr(self.shots))
        for k in ("amplitude", "phase", "x_range"):
            v = getattr(self, k)
            if not (isinstance(v, (tuple, list)) and len(v) == 2):
                P.fail(O, k, "must be a pair (low, high)", P.shown(v))
            lo = P.real(v[0], O, f"{k}[0]")
            hi = P.real(v[1], O, f"{k}[1]", low=lo)
            if not np.isfinite(hi - lo):
                P.fail(O, k, "must span a finite range (high - low overflows)", repr(v))

    def params(self, rng, n_tasks):
        """(amplitudes, phases), each (n_tasks,)."""
        amp = rng.uniform(*self.amplitude, size=n_tasks)
        ph = rng.uniform(*self.phase, size=n_tasks)
        return amp, ph

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis)."""
        rng, n_tasks = check_sample("Sinusoid.sample", rng, n_tasks, self.shots + self.val)
        amp, ph = self.params(rng, n_tasks)
        n = self.shots + self.val
        x = rng.uniform(*self.x_range, size=(n_tasks, n, 1))
        y = amp[:, None, None] * np.sin(x - ph[:, None, None])
        return Task(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])
