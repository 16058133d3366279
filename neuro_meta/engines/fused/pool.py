"""The kernels' pool of Python threads.

The kernels are compiled serial and GIL-free, and :func:`run_parallel` hands slices of
the work to a pool of Python threads (:func:`threads`), not numba's ``parallel=True``:
numba's default threading layer on Linux is GNU OpenMP, and a process that has used it
cannot fork (numba aborts the child: "fork() called from a process already using GNU
OpenMP"), which broke ProcessPoolExecutor meta-training after any parallel phase in the
parent. Python threads are fork-safe (the pool is recreated in a child) and can be used
from several threads at once.
"""
import concurrent.futures
import os
import threading

import numpy as np

from . import config
from .scalar import numba
from ...errors import ValidationError

_pool_lock = threading.Lock()
_pool = None          # (pid, size, executor)


def threads():
    """Number of threads the kernels use: ``config.THREADS`` if set, else
    ``NUMBA_NUM_THREADS``."""
    n = config.THREADS
    if n is None:
        return max(1, int(numba.config.NUMBA_NUM_THREADS)) if numba is not None else 1
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"neuro_meta.engines.fused.config.THREADS: must be None or an "
                              f"integer >= 1 (got {n!r})")
    return int(n)


def run_parallel(jobs):
    """Call ``jobs`` (callables) in the pool's threads, in order, each taken by the next
    free thread; wait for all of them (none is still writing when this returns), then
    raise the first error."""
    global _pool
    with _pool_lock:
        n = threads()
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != n:
            _pool = (os.getpid(), n, concurrent.futures.ThreadPoolExecutor(
                max_workers=n, thread_name_prefix="neuro_meta-kernel"))
        ex = _pool[2]
    futures = [ex.submit(job) for job in jobs]
    concurrent.futures.wait(futures)
    for f in futures:
        f.result()


def chunks(n, k):
    """``k`` contiguous (start, stop) ranges covering ``0 .. n-1``, sizes within one."""
    k = max(1, min(k, n))
    edges = [n * i // k for i in range(k + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]
