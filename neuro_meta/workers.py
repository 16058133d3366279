"""Worker processes for meta-batches: a process pool whose workers use one BLAS thread each.

A meta-step's tasks are independent, so a meta-batch can be split into pieces computed in
parallel (:class:`~neuro_meta.metatrain.MetaTrainer` and
:func:`~neuro_meta.baselines.train_baseline`, argument ``chunks``). On a machine with a few
cores, processes beat BLAS threads for this work: the matrices of a few-shot task are
small, and two BLAS threads on one process were measured 0 % faster for a MAML meta-step
and 20 % *slower* for a CML one (docs/omniglot.md). The pool's workers are therefore
limited to one BLAS thread each (``threadpoolctl``), and :func:`blas_threads` does the
same for the calling process.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from . import _params as P

#: Environment variables read by the BLAS/OpenMP libraries numpy may be built with.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def _start_worker():
    """Initializer of a pool worker: one BLAS thread, set before and after numpy loads."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    import numpy  # noqa: F401 -- loads the BLAS library threadpoolctl then limits
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def max_local_workers():
    """The most worker processes this package starts on this machine at once: 4 per CPU
    (``os.cpu_count()``), at least 8. Each runs one BLAS thread, so more than a few per
    core only contend for the cores -- and a mistyped ``--workers 100000`` would fork
    that many processes."""
    return max(8, 4 * (os.cpu_count() or 1))


def check_workers(value, owner, attr="workers", low=1):
    """``value`` as a number of local worker processes: an integer from ``low`` to
    :func:`max_local_workers` (ValidationError otherwise)."""
    value = P.integer(value, owner, attr, low=low)
    cap = max_local_workers()
    if value > cap:
        P.fail(owner, attr, f"must be <= {cap} (4 worker processes per CPU of this "
               f"machine's {os.cpu_count() or 1}, at least 8: more only contend for the "
               "cores)", repr(value))
    return value


def process_pool(workers):
    """A ``concurrent.futures.ProcessPoolExecutor`` of ``workers`` processes, each with one
    BLAS thread, started the platform's default way (forked on Linux; spawned on macOS
    and Windows, where a script must start its work under ``if __name__ ==
    "__main__":``). Shut it down when done (it is a context manager)."""
    workers = check_workers(workers, "process_pool")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(),
                               initializer=_start_worker)


class PieceExecutor(ProcessPoolExecutor):
    """``workers`` workers for the pieces of a meta-batch: this process and ``workers − 1``
    pool processes (one BLAS thread each). :func:`map_pieces` computes the first piece
    here while the pool computes the others, so that only those cross a process
    boundary (a MAML meta-step of 16 Omniglot tasks is 2 MB of images)."""

    inline_first = True

    def __init__(self, workers):
        self.workers = check_workers(workers, "PieceExecutor", low=2)
        super().__init__(self.workers - 1, mp_context=multiprocessing.get_context(),
                         initializer=_start_worker)


def n_workers(executor):
    """How many pieces ``executor`` computes at once (1 without one)."""
    if executor is None:
        return 1
    if isinstance(executor, PieceExecutor):
        return executor.workers
    if hasattr(executor, "scheduler_info"):        # dask.distributed.Client
        return max(1, len(executor.scheduler_info().get("workers", {})))
    return max(1, int(getattr(executor, "_max_workers", 1)))


def check_executor(executor, owner, attr="executor"):
    """``executor`` None or an executor with ``submit`` (a ``concurrent.futures`` pool, a
    Dask ``Client``): checked before any work, so that a typo does not fail after it."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        P.fail(owner, attr, "must be None, a concurrent.futures.Executor or a "
               "dask.distributed.Client", P.shown(executor))
    return executor


def map_pieces(fn, pieces, executor=None):
    """``[fn(*args) for args in pieces]``, computed on ``executor`` (in-process without
    one; with a :class:`PieceExecutor` the first piece in this process, the others on its
    pool), in the order of ``pieces`` (a list or tuple of argument tuples); ``executor``
    None or an executor with ``submit`` (a process pool, a Dask ``Client``)."""
    O = "map_pieces"
    if not callable(fn):
        P.fail(O, "fn", "must be callable", P.shown(fn))
    if not isinstance(pieces, (list, tuple)) or not all(
            isinstance(args, (list, tuple)) for args in pieces):
        P.fail(O, "pieces", "must be a list of argument tuples, one per piece",
               P.shown(pieces))
    check_executor(executor, O)
    if executor is None:
        return [fn(*args) for args in pieces]
    inline = bool(getattr(executor, "inline_first", False)) and len(pieces) > 0
    futures = [executor.submit(fn, *args) for args in pieces[1 if inline else 0:]]
    first = [fn(*pieces[0])] if inline else []
    return first + [f.result() for f in futures]


@contextmanager
def blas_threads(n=1):
    """Limit the BLAS libraries this process has loaded to ``n`` threads inside the
    ``with`` block (restored after it)."""
    n = P.integer(n, "blas_threads", "n", low=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n):
        yield


@contextmanager
def local_cluster(workers):
    """A Dask ``LocalCluster`` of ``workers`` single-threaded worker processes on the
    loopback interface (no dashboard; the scheduler's HTTP server on a free loopback
    port), yielded as a ``Client``; closed at exit.

    Dask's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` (and one BLAS thread) for their
    workers by writing them into *this* process's environment, where they stay. That
    glibc setting turns off its adaptive mmap threshold, so every array above 128 kB is
    mapped and unmapped afresh: on a worker a CML evaluation of Omniglot tasks took 1.8x
    the CPU time (30 tasks: 4.9 against 2.8 s), and every process started later from this
    one -- a process pool, a notebook kernel -- inherited it. Here the workers keep one
    BLAS thread but not the trim threshold, and this process's environment is restored
    once they have started and again at exit (a restarted worker's nanny writes its
    settings here again)."""
    workers = check_workers(workers, "local_cluster")
    import dask
    from dask.distributed import Client, LocalCluster

    saved = dict(os.environ)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                              None}):
            # no dashboard; the scheduler's HTTP server (health and metrics routes,
            # started even without one) on a free loopback port: at the default port
            # 8787 two clusters at once warned "Port 8787 is already in use"
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                   host="127.0.0.1", dashboard_address=None,
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    finally:
        _restore_environ(saved)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
        _restore_environ(saved)     # a worker the nanny restarted meanwhile wrote its
        #                             settings (not the trim threshold) here again


def _restore_environ(saved):
    os.environ.clear()
    os.environ.update(saved)
