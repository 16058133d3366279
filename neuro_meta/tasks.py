"""Tasks: a training set (the shots) and a validation set."""

from . import _params as P


class Task:
    """A few-shot task: training shots ``(x_train, y_train)`` and validation points
    ``(x_val, y_val)``.

    Arrays are ``(shots, n)``, or with a leading task axis ``(tasks, shots, n)`` for a
    batch of tasks (all four arrays alike), at least one task and one sample. Arrays must
    be real and finite; they are copied and made read-only.
    """

    def __init__(self, x_train, y_train, x_val, y_val):
        arrs = {}
        for name, a in (("x_train", x_train), ("y_train", y_train), ("x_val", x_val),
                        ("y_val", y_val)):
            a = P.finite_array(a, "Task", name, ndim=(2, 3), max_abs=P.DATA_LIMIT)
            a.setflags(write=False)
            if a.shape[-1] == 0:
                P.fail("Task", name, "needs at least one " + ("feature" if name[0] == "x"
                                                              else "output") + " per sample",
                       f"shape {a.shape}")
            arrs[name] = a
        nd = arrs["x_train"].ndim
        for name, a in arrs.items():
            if a.ndim != nd:
                P.fail("Task", name, f"must have {nd} dimensions like x_train", f"shape {a.shape}")
        for xs, ys in (("x_train", "y_train"), ("x_val", "y_val")):
            if arrs[xs].shape[:-1] != arrs[ys].shape[:-1]:
                P.fail("Task", ys, f"must have as many samples as {xs} "
                       f"{arrs[xs].shape[:-1]}", f"shape {arrs[ys].shape}")
            if arrs[xs].shape[-2] == 0:
                P.fail("Task", xs, "needs at least one sample", f"shape {arrs[xs].shape}")
        if arrs["x_train"].shape[-1] != arrs["x_val"].shape[-1]:
            P.fail("Task", "x_val", f"must have {arrs['x_train'].shape[-1]} features like "
                   "x_train", f"shape {arrs['x_val'].shape}")
        if arrs["y_train"].shape[-1] != arrs["y_val"].shape[-1]:
            P.fail("Task", "y_val", f"must have {arrs['y_train'].shape[-1]} outputs like "
                   "y_train", f"shape {arrs['y_val'].shape}")
        if nd == 3 and arrs["x_train"].shape[0] == 0:
            P.fail("Task", "x_train", "needs at least one task on the leading (task) axis",
                   f"shape {arrs['x_train'].shape}")
        if nd == 3 and arrs["x_train"].shape[0] != arrs["x_val"].shape[0]:
            P.fail("Task", "x_val", f"must have {arrs['x_train'].shape[0]} tasks like x_train",
                   f"shape {arrs['x_val'].shape}")
        self.x_train, self.y_train = arrs["x_train"], arrs["y_train"]
        self.x_val, self.y_val = arrs["x_val"], arrs["y_val"]

    @property
    def batched(self):
        """Whether the task carries a leading task axis."""
        return self.x_train.ndim == 3

    @property
    def n_tasks(self):
        return self.x_train.shape[0] if self.batched else 1

    def as_batch(self):
        """The four arrays with a task axis (added if absent)."""
        if self.batched:
            return self.x_train, self.y_train, self.x_val, self.y_val
        return tuple(a[None] for a in (self.x_train, self.y_train, self.x_val, self.y_val))

    def pieces(self, size):
        """The task batch as consecutive pieces of at most ``size`` tasks (each a batched
        :class:`Task`, in order); a batch of at most ``size`` tasks is one piece, itself;
        a task without a task axis is one piece (with a task axis)."""
        size = P.integer(size, "Task.pieces", "size", low=1)
        if self.batched and self.n_tasks <= size:
            return [self]
        arrays = self.as_batch()
        n = arrays[0].shape[0]
        return [Task(*(a[i:i + size] for a in arrays)) for i in range(0, n, size)]

    def __repr__(self):
        return (f"Task(tasks={self.n_tasks if self.batched else None}, "
                f"shots={self.x_train.shape[-2]}, val={self.x_val.shape[-2]}, "
                f"n_in={self.x_train.shape[-1]}, n_out={self.y_train.shape[-1]})")
