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
        for k in ("shared_std", "specific_std", "noise_std"):     # data far from overflow
            P.real(getattr(self, k), O, k, low=0.0, high=1e6)
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

    def _per_task(self):
        """The largest number of values one task's arrays hold (memory check)."""
        return max(self.n_in * self.n_out,
                   (self.shots + self.val) * max(self.n_in, self.n_out))

    def teachers(self, rng, n_tasks):
        """The teachers ``W_τ`` of ``n_tasks`` tasks, shape (n_tasks, n_out, n_in)
        (``rng`` and ``n_tasks`` as for :meth:`sample`)."""
        rng, n_tasks = check_sample("LinearTeacher.teachers", rng, n_tasks,
                                    self.n_in * self.n_out)
        return self._teachers(rng, n_tasks)

    def _teachers(self, rng, n_tasks):
        mask, w_shared = self.structure
        spec = self.specific_std * rng.standard_normal((n_tasks, self.n_out, self.n_in))
        return np.where(mask, w_shared, spec)

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis)."""
        rng, n_tasks = check_sample("LinearTeacher.sample", rng, n_tasks, self._per_task())
        W = self._teachers(rng, n_tasks)
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
            lo = P.real(v[0], O, f"{k}[0]", low=-1e6, high=1e6)    # data far from overflow
            P.real(v[1], O, f"{k}[1]", low=lo, high=1e6)

    def params(self, rng, n_tasks):
        """(amplitudes, phases), each (n_tasks,) (``rng`` and ``n_tasks`` as for
        :meth:`sample`)."""
        rng, n_tasks = check_sample("Sinusoid.params", rng, n_tasks, 2)
        return self._draw_params(rng, n_tasks)

    def _draw_params(self, rng, n_tasks):
        amp = rng.uniform(*self.amplitude, size=n_tasks)
        ph = rng.uniform(*self.phase, size=n_tasks)
        return amp, ph

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis)."""
        rng, n_tasks = check_sample("Sinusoid.sample", rng, n_tasks, self.shots + self.val)
        amp, ph = self._draw_params(rng, n_tasks)
        n = self.shots + self.val
        x = rng.uniform(*self.x_range, size=(n_tasks, n, 1))
        y = amp[:, None, None] * np.sin(x - ph[:, None, None])
        return Task(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])


from dataclasses import field  # noqa: E402  (FewShotClassification)


def _real_images(images, owner):
    """A copy of ``images`` (n, ...) as a real numeric array (bool -> uint8)."""
    P.dimensionless(images, owner, "images")
    try:
        arr = np.array(images)
    except Exception:
        P.fail(owner, "images", "must be convertible to an array of real numbers",
               type(images).__name__)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        P.fail(owner, "images", "must be real numbers (an integer, boolean or float array)",
               f"dtype {arr.dtype}")
    if arr.ndim < 2 or arr.shape[0] < 1 or arr.size == 0:
        P.fail(owner, "images", "must be an array (n_images, ...) of at least one image "
               "with at least one pixel", f"shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            P.fail(owner, "images", "must contain only finite values (no NaN or inf)",
                   f"{int(bad.sum())} non-finite value(s)")
        peak = float(np.abs(arr).max())     # a Python float: no float16 overflow below
        if peak > P.DATA_LIMIT:
            P.fail(owner, "images", f"must be at most {P.DATA_LIMIT:g} in magnitude",
                   f"max {peak!r}")
    return arr


@dataclass(frozen=True)
class FewShotClassification:
    """N-way K-shot classification tasks drawn from a labelled image set.

    Per task: ``ways`` distinct classes in a random order (column ``j`` of the one-hot
    targets is the task's ``j``-th class), and for each class ``shots`` training and
    ``queries`` validation images, all distinct. With ``rotations=True`` a class is a
    (label, rotation) pair: the images of a label turned by ``np.rot90(image, k)``,
    k = 0..3 (90° steps counter-clockwise) are 4 different classes (images must be
    square).

    * ``images``: (n, ...) real array -- any images, flattened to vectors per task
      ((n, s, s) or (n, s*s) with rotations); kept in its dtype (a read-only copy);
    * ``labels``: (n,) integers, any values (the distinct values are the classes).

    ``sample(rng, n_tasks)`` gives a :class:`~neuro_meta.tasks.Task` with ``x_train``
    (n_tasks, ways*shots, pixels) and ``x_val`` (n_tasks, ways*queries, pixels) float64,
    ``y_train``/``y_val`` one-hot float64 (..., ways). Examples are interleaved: example
    ``i`` belongs to the task's class ``i % ways`` (one example of every class, then the
    next). All random numbers come from ``rng``. Equality and hash: the settings and a
    SHA-256 of the data (``fingerprint``). ``FewShotClassification.omniglot(...)``
    builds one on a split of the shipped Omniglot data.
    """

    images: np.ndarray = field(repr=False, compare=False)
    labels: np.ndarray = field(repr=False, compare=False)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    rotations: bool = False
    fingerprint: str = field(init=False, repr=False)

    def __post_init__(self):
        import hashlib

        O = "FewShotClassification"
        if not isinstance(self.rotations, (bool, np.bool_)):
            P.fail(O, "rotations", "must be True or False", P.shown(self.rotations))
        rotations = bool(self.rotations)
        ways = P.integer(self.ways, O, "ways", low=2)
        shots = P.integer(self.shots, O, "shots", low=1)
        queries = P.integer(self.queries, O, "queries", low=1)
        imgs = _real_images(self.images, O)
        n = imgs.shape[0]
        P.dimensionless(self.labels, O, "labels")
        try:
            labels = np.array(self.labels)
        except Exception:
            P.fail(O, "labels", "must be an array of integers", type(self.labels).__name__)
        if labels.dtype.kind not in "iu" or labels.shape != (n,):
            P.fail(O, "labels", f"must be {n} integers, one per image (shape ({n},))",
                   f"shape {labels.shape} dtype {labels.dtype}")
        if labels.dtype.kind == "u" and n and labels.max() > np.iinfo(np.int64).max:
            P.fail(O, "labels", "must fit in int64 (the classes are returned as int64)",
                   int(labels.max()))
        labels = labels.astype(np.int64)
        pixels = imgs[0].size
        side = None
        if rotations:
            if imgs.ndim == 3 and imgs.shape[1] == imgs.shape[2]:
                side = imgs.shape[1]
            elif imgs.ndim == 2 and round(np.sqrt(pixels)) ** 2 == pixels:
                side = int(round(np.sqrt(pixels)))
            else:
                P.fail(O, "images", "must be square images (n, s, s) or (n, s*s) when "
                       "rotations=True", f"shape {imgs.shape}")
        n_rot = 4 if rotations else 1
        P.check_bytes(n_rot * imgs.size, O, "images", f"of {n_rot} x {n} images x "
                      f"{pixels} pixels", f"shape {imgs.shape}", itemsize=imgs.itemsize)
        flat = imgs.reshape(n, pixels)
        if rotations:
            sq = flat.reshape(n, side, side)
            bank = np.stack([np.rot90(sq, k, axes=(1, 2)).reshape(n, pixels)
                             for k in range(4)])
        else:
            bank = flat[None]
        bank = np.ascontiguousarray(bank)
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        n_classes = len(classes) * n_rot
        if ways > n_classes:
            P.fail(O, "ways", f"must be <= the number of classes ({n_classes}"
                   + (f" = {len(classes)} labels x 4 rotations" if rotations else "") + ")",
                   repr(ways))
        if shots + queries > counts.min():
            P.fail(O, "shots", f"shots + queries must be <= the images of the smallest "
                   f"class ({int(counts.min())}, label {classes[counts.argmin()].item()!r})",
                   f"shots={shots}, queries={queries}")
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        members = np.full((len(classes), counts.max()), -1, dtype=np.int64)
        col = np.arange(n) - np.repeat(starts, counts)
        members[inverse[order], col] = order
        labels = labels.astype(np.int64)
        h = hashlib.sha256()
        h.update(repr((imgs.shape, imgs.dtype.str)).encode())
        h.update(np.ascontiguousarray(flat).tobytes())
        h.update(labels.tobytes())
        for a in (bank, labels, classes, counts, members):
            a.setflags(write=False)
        images_view = bank[0].reshape(imgs.shape)
        images_view.setflags(write=False)
        for k, v in (("images", images_view), ("labels", labels), ("ways", ways),
                     ("shots", shots), ("queries", queries), ("rotations", rotations),
                     ("fingerprint", h.hexdigest()), ("_bank", bank),
                     ("_classes", classes), ("_counts", counts), ("_members", members)):
            object.__setattr__(self, k, v)

    def __repr__(self):
        return (f"FewShotClassification(images={self.images.shape[0]}, "
                f"image_shape={self.images.shape[1:]}, labels={len(self._classes)}, "
                f"n_classes={self.n_classes}, ways={self.ways}, shots={self.shots}, "
                f"queries={self.queries}, rotations={self.rotations})")

    @property
    def classes(self):
        """The distinct labels (sorted), before rotations."""
        return self._classes

    @property
    def n_classes(self):
        """Number of classes tasks draw from: distinct labels (x 4 with rotations)."""
        return len(self._classes) * self._bank.shape[0]

    @property
    def n_pixels(self):
        """Length of an image vector (the tasks' ``n_in``)."""
        return self._bank.shape[2]

    @classmethod
    def omniglot(cls, split="train", ways=5, shots=1, queries=15, rotations=True):
        """Tasks from a split (``"train"``, ``"validation"``, ``"test"``: disjoint
        alphabets, :data:`neuro_meta.datasets.OMNIGLOT_SPLITS`) of the shipped Omniglot
        background set: 28x28 images (784 pixels, 0/1, strokes 1), 20 per character."""
        from .datasets import OMNIGLOT_SPLITS, omniglot

        P.choice(split, "FewShotClassification.omniglot", "split", tuple(OMNIGLOT_SPLITS))
        images, labels = omniglot().split(split)
        return cls(images, labels, ways=ways, shots=shots, queries=queries,
                   rotations=rotations)

    def sample_with_classes(self, rng, n_tasks):
        """``(task, classes, indices)``: the batch :meth:`sample` gives for the same
        ``rng`` state, with ``classes`` (n_tasks, ways, 2) int64 -- each task's classes
        in one-hot column order as (label, rotation k of ``np.rot90(image, k)``) -- and
        ``indices`` (n_tasks, ways, shots + queries) int64, the images drawn (rows of
        ``images``; the first ``shots`` per class are the training images)."""
        W, S, Q = self.ways, self.shots, self.queries
        m = self._members.shape[1]
        # per task: the images and targets returned, and the random keys drawn to pick
        # the classes (one per class) and the images (one per class member), counted
        # twice (argpartition's index array is as large as the keys)
        rng, n_tasks = check_sample("FewShotClassification.sample", rng, n_tasks,
                                    W * (S + Q) * (self.n_pixels + W)
                                    + 2 * (self.n_classes + W * m))
        n_rot = self._bank.shape[0]
        # classes: `ways` distinct ones in a uniformly random order
        keys = rng.random((n_tasks, self.n_classes))
        if W < self.n_classes:
            pick = np.argpartition(keys, W - 1, axis=1)[:, :W]
        else:
            pick = np.broadcast_to(np.arange(W), (n_tasks, W))
        pick = np.take_along_axis(pick, np.take_along_axis(keys, pick, 1).argsort(1), 1)
        cls_idx, rot = np.divmod(pick, n_rot)
        # images: shots + queries distinct members per class, in a random order
        K = S + Q
        ikeys = rng.random((n_tasks, W, m))
        ikeys[np.arange(m) >= self._counts[cls_idx][..., None]] = 2.0
        sel = np.argpartition(ikeys, K - 1, axis=2)[..., :K] if K < m else \
            np.broadcast_to(np.arange(m), (n_tasks, W, m))
        sel = np.take_along_axis(sel, np.take_along_axis(ikeys, sel, 2).argsort(2), 2)
        idx = self._members[cls_idx[..., None], sel]                # (T, W, K)
        # gathered straight into (task, example, class) order: example i of a set is
        # the task's class i % ways
        order = idx.transpose(0, 2, 1)                               # (T, K, W)
        r = rot[:, None, :]
        x_tr = self._bank[r, order[:, :S]].astype(np.float64).reshape(n_tasks, S * W, -1)
        x_va = self._bank[r, order[:, S:]].astype(np.float64).reshape(n_tasks, Q * W, -1)
        eye = np.eye(W)
        y_tr = np.ascontiguousarray(np.broadcast_to(np.tile(eye, (S, 1)), (n_tasks, S * W, W)))
        y_va = np.ascontiguousarray(np.broadcast_to(np.tile(eye, (Q, 1)), (n_tasks, Q * W, W)))
        # The arrays are fresh, float64, finite (checked once at construction) and of
        # consistent shapes: they go into the Task as they are, read-only, without its
        # per-call copy and scan (most of the time of a call otherwise).
        task = Task.__new__(Task)
        for name, a in (("x_train", x_tr), ("y_train", y_tr), ("x_val", x_va),
                        ("y_val", y_va)):
            a.setflags(write=False)
            setattr(task, name, a)
        classes = np.stack([self._classes[cls_idx], rot], axis=-1)
        return task, classes, idx

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis)."""
        return self.sample_with_classes(rng, n_tasks)[0]


@dataclass(frozen=True)
class WheelBandit:
    """The wheel bandit (Riquelme, Tucker & Snoek, *Deep Bayesian Bandits Showdown*,
    ICLR 2018) as a family of contextual-bandit tasks; a task is a radius ``δ``.

    Contexts ``x`` are uniform in the unit disc; there are 5 arms. Rewards are Gaussian
    with standard deviation ``sigma``; their means ``μ_a(x)``:

    * inside the wheel (``‖x‖ < δ``): ``mu`` = (1.2, 1.0, 1.0, 1.0, 1.0) -- arm 0, the
      *safe* arm, is best;
    * outside (``‖x‖ ≥ δ``): the arm of the context's quadrant pays ``mu_large`` = 50,
      arm 0 still 1.2 and the rest 1.0. Quadrants, in the order of Riquelme et al.'s
      ``sample_wheel_bandit_data`` (whose large arms are 0-3 and safe arm 4; here the
      safe arm is 0, as in the CML authors' code, so their arm k is our arm k + 1):
      ``x₁ > 0, x₂ > 0`` → arm 1; ``x₁ > 0, x₂ ≤ 0`` → arm 2; ``x₁ ≤ 0, x₂ > 0`` → arm 3;
      ``x₁ ≤ 0, x₂ ≤ 0`` → arm 4.

    The uniform policy's expected regret per trial has a closed form
    (:meth:`uniform_regret`): ``P(outside) = 1 − δ²`` and, inside,
    ``1.2 − mean(mu) = 0.16``, outside ``50 − (1.2 + 50 + 3·1.0)/5 = 39.16``.

    ``sample(rng, n_tasks)`` gives the meta-training tasks of the CML paper: per task
    ``δ ~ U(delta_range)``, ``shots`` support contexts and ``queries`` query contexts,
    each with a uniformly random pulled arm; the targets say only the pulled arm's reward
    (divided by ``scale``; the other arms :attr:`MaskedSquaredError.UNOBSERVED
    <neuro_meta.losses.MaskedSquaredError.UNOBSERVED>`): the masked squared error of
    :data:`~neuro_meta.losses.MASKED_SQUARED_ERROR` trains the pulled arm's output only.
    ``scale`` changes units only (the networks see rewards / scale); regrets and
    rewards of the other methods are in reward units.
    """

    shots: int = 512
    queries: int = 50
    delta_range: tuple = (0.0, 1.0)
    mu: tuple = (1.2, 1.0, 1.0, 1.0, 1.0)
    mu_large: float = 50.0
    sigma: float = 0.01
    scale: float = 1.0

    n_arms = 5
    n_in = 2

    def __post_init__(self):
        O = "WheelBandit"
        P.integer(self.shots, O, "shots", low=1)
        P.integer(self.queries, O, "queries", low=1)
        P.check_bytes((self.shots + self.queries) * 7, O, "shots",
                      f"of {self.shots + self.queries} samples (one task)", repr(self.shots))
        v = self.delta_range
        if not (isinstance(v, (tuple, list)) and len(v) == 2):
            P.fail(O, "delta_range", "must be a pair (low, high)", P.shown(v))
        lo = P.real(v[0], O, "delta_range[0]", low=0.0, high=1.0)
        P.real(v[1], O, "delta_range[1]", low=lo, high=1.0)
        if not (isinstance(self.mu, (tuple, list)) and len(self.mu) == 5):
            P.fail(O, "mu", "must be 5 mean rewards (safe arm first)", P.shown(self.mu))
        for i, m in enumerate(self.mu):
            P.real(m, O, f"mu[{i}]", low=-1e6, high=1e6)
        P.real(self.mu_large, O, "mu_large", low=-1e6, high=1e6)
        P.real(self.sigma, O, "sigma", low=0.0, high=1e6)
        P.real(self.scale, O, "scale", low=0.0, low_open=True, high=1e6)

    # ------------------------------------------------------------------ reward model
    def _delta(self, delta, owner):
        d = P.finite_array(delta, owner, "delta")
        if d.size and (d.min() < 0 or d.max() > 1):
            P.fail(owner, "delta", "must be in [0, 1]",
                   f"range [{float(d.min())!r}, {float(d.max())!r}]")
        return d

    def _x(self, x, owner):
        x = P.finite_array(x, owner, "x", max_abs=P.DATA_LIMIT)
        if x.ndim < 1 or x.shape[-1] != 2:
            P.fail(owner, "x", "must have a last axis of 2 (the context)", f"shape {x.shape}")
        return x

    def _x_delta(self, x, delta, owner):
        """``x`` and ``delta`` checked (``_x``, ``_delta``), and that ``delta``
        broadcasts to ``x.shape[:-1]`` (one radius, or one per context)."""
        x = self._x(x, owner)
        d = self._delta(delta, owner)
        try:
            fits = np.broadcast_shapes(d.shape, x.shape[:-1]) == x.shape[:-1]
        except ValueError:
            fits = False
        if not fits:
            P.fail(owner, "delta", f"must broadcast to x.shape[:-1] = {x.shape[:-1]} (one "
                   "radius, or one per context)", f"shape {d.shape}")
        return x, d

    def _means(self, x, delta):
        """:meth:`mean_rewards` of checked ``x`` and ``delta`` (``_x_delta``)."""
        outside = np.linalg.norm(x, axis=-1) >= delta
        mu = np.broadcast_to(np.asarray(self.mu, float), x.shape[:-1] + (5,)).copy()
        big = (np.arange(5) == self.large_arm(x)[..., None]) & outside[..., None]
        mu[big] = self.mu_large
        return mu

    def contexts(self, rng, n):
        """``n`` contexts uniform in the unit disc (radius ``√U``, angle ``U(0, 2π)``),
        shape (n, 2) -- or ``n`` a shape tuple ``s`` (of integers >= 0), then
        ``s + (2,)``."""
        O = "WheelBandit.contexts"
        P.generator(rng, O, "rng")
        shape = tuple(P.integer(s, O, f"n[{i}]", low=0) for i, s in enumerate(n)) \
            if isinstance(n, (tuple, list)) else (P.integer(n, O, "n", low=0),)
        size = 2
        for s in shape:         # (Python integers: np.prod would overflow silently)
            size *= s
        P.check_bytes(size, O, "n", f"of shape {shape + (2,)}", repr(n))
        r = np.sqrt(rng.random(shape))
        a = 2 * np.pi * rng.random(shape)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)

    def large_arm(self, x):
        """The arm that pays ``mu_large`` outside the wheel, by quadrant (int, shape
        ``x.shape[:-1]``)."""
        x = self._x(x, "WheelBandit.large_arm")
        right, up = x[..., 0] > 0, x[..., 1] > 0
        return np.where(right, np.where(up, 1, 2), np.where(up, 3, 4))

    def mean_rewards(self, x, delta):
        """Mean reward of every arm, shape ``x.shape[:-1] + (5,)``; ``delta`` broadcasts
        against ``x.shape[:-1]`` (to it: one radius, or one per context)."""
        return self._means(*self._x_delta(x, delta, "WheelBandit.mean_rewards"))

    def rewards(self, rng, x, delta):
        """Rewards of every arm (means + ``sigma`` · N(0, 1)), shape ``x.shape[:-1] +
        (5,)``: the full reward table, of which an agent sees the pulled arm's entry."""
        P.generator(rng, "WheelBandit.rewards", "rng")
        mu = self._means(*self._x_delta(x, delta, "WheelBandit.rewards"))
        return mu + self.sigma * rng.standard_normal(mu.shape)

    def optimal_arm(self, x, delta):
        """The arm with the largest mean reward, ``argmax_a μ_a(x)`` (with the default
        means: arm 0 inside the wheel, the quadrant's arm outside), shape
        ``x.shape[:-1]``; a tie goes to the lowest arm."""
        return np.argmax(self._means(*self._x_delta(x, delta, "WheelBandit.optimal_arm")),
                         axis=-1)

    def regret(self, x, delta, arms):
        """Expected regret of pulling ``arms`` at contexts ``x``:
        ``max_a μ_a(x) − μ_arm(x)`` (shape ``x.shape[:-1]``)."""
        mu = self._means(*self._x_delta(x, delta, "WheelBandit.regret"))
        arms = P.as_array(arms, "WheelBandit.regret", "arms",
                          f"must be integers in [0, 5) of shape {mu.shape[:-1]}")
        if arms.dtype.kind not in "iu" or arms.shape != mu.shape[:-1] or (
                arms.size and (arms.min() < 0 or arms.max() > 4)):
            P.fail("WheelBandit.regret", "arms", f"must be integers in [0, 5) of shape "
                   f"{mu.shape[:-1]}", f"dtype {arms.dtype}, shape {arms.shape}")
        return mu.max(axis=-1) - np.take_along_axis(mu, arms[..., None], -1)[..., 0]

    def uniform_regret(self, delta):
        """Expected regret per trial of the uniform policy (closed form):
        ``δ² (max μ − mean μ) + (1 − δ²) · ¼ Σ_k (max μ⁽ᵏ⁾ − mean μ⁽ᵏ⁾)``, where
        ``μ⁽ᵏ⁾`` is ``mu`` with ``mu_large`` in the place of quadrant arm ``k`` = 1..4
        (the four quadrants are equally likely)."""
        d = self._delta(delta, "WheelBandit.uniform_regret")
        mu = np.asarray(self.mu, float)
        inside = mu.max() - mu.mean()
        outside = 0.0
        for k in range(1, 5):
            out_mu = mu.copy()
            out_mu[k] = self.mu_large
            outside += 0.25 * (out_mu.max() - out_mu.mean())
        out = d ** 2 * inside + (1 - d ** 2) * outside
        return float(out) if np.ndim(out) == 0 else out

    # ------------------------------------------------------------------ tasks
    def sample_with_deltas(self, rng, n_tasks):
        """``(task, deltas (n_tasks,), arms (n_tasks, shots + queries))``: the batch
        :meth:`sample` gives for the same ``rng`` state, with each task's radius and the
        arms pulled (support first)."""
        n = self.shots + self.queries
        rng, n_tasks = check_sample("WheelBandit.sample", rng, n_tasks, n * 7)
        delta = rng.uniform(*self.delta_range, size=n_tasks)
        x = self.contexts(rng, (n_tasks, n))
        r = self.rewards(rng, x, delta[:, None])
        arms = rng.integers(0, 5, size=(n_tasks, n))
        from .losses import MASKED_SQUARED_ERROR

        pulled = np.take_along_axis(r, arms[..., None], -1)[..., 0] / self.scale
        y = MASKED_SQUARED_ERROR.targets(arms, pulled, 5)
        S = self.shots
        return Task(x[:, :S], y[:, :S], x[:, S:], y[:, S:]), delta, arms

    def sample(self, rng, n_tasks):
        """A batch of ``n_tasks`` tasks (a :class:`Task` with a task axis): contexts
        (n_tasks, shots | queries, 2), masked targets (..., 5)."""
        return self.sample_with_deltas(rng, n_tasks)[0]
