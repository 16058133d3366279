"""Settings of the compiled kernels (read when a phase starts; set them before it).

Change them for measurements and comparisons (``neuro_meta.engines.fused.config.THREADS
= 1``); the defaults are the measured best on the development machines (see
``docs/performance.md``).
"""

#: Batch phases of instantaneous neurons (float64) run on the matrix-product kernel
#: (:func:`~neuro_meta.engines.fused.dense.task_dense`); False: on the general loop (for
#: comparisons).
DENSE = True
#: Connections with at least this many weights go to BLAS in the batch kernel (smaller
#: ones: loops; a BLAS call costs about a microsecond). Read when the kernels compile.
DOT_MIN_WEIGHTS = 256
#: Phases with fewer (tasks x steps x (synapses + neurons) x samples) run in the calling
#: thread (handing work to the pool costs tens of microseconds).
PARALLEL_MIN_WORK = 2_000_000
#: Threads of the kernels' pool; None: ``NUMBA_NUM_THREADS`` (the number of cores, or
#: the environment variable).
THREADS = None
#: Slices of the tasks per thread in the tasks kernel: tasks stop at their own settling
#: check, so smaller slices taken by the next free thread balance the load.
CHUNKS = 2
#: One-connection phases with at least this many fast weights (tasks x synapses) run on
#: the rows kernel (lock-step over tasks, threads over rows); smaller ones on the tasks
#: kernel (threads over tasks).
ROWS_MIN_SYNAPSES = 1_000_000
#: Bytes of fast weights, omega and lam that a block of rows keeps in the cache.
ROWS_BLOCK_BYTES = 512 * 1024
#: False within :func:`neuro_meta.engines.fused.disabled`: phases run on the numpy loop.
ENABLED = True
