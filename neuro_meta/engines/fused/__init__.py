"""The fused engine: compiled kernels of the numpy engine's phase loop (numba), for
layered rate networks.

The equations, the step order and the settling rule are the numpy engine's (see
:mod:`neuro_meta.engines.numpy_engine`); this package runs the *same* loop as one
compiled function per phase, with no Python work per time step:

* the tasks of a batch run in parallel (slices of the tasks in a pool of threads, each
  calling the compiled, GIL-free kernel; see "threads" below), each with its whole phase
  loop: a task stops at the first settling test it passes (its state is then frozen, as
  in the numpy engine) and the phase's step count is the maximum over tasks;
* batch presentation with instantaneous neurons (the common case of meta-learning) runs
  as matrix products per connection (:mod:`.dense`): currents, the error sent down
  and the weight gradient of all sample copies at once, BLAS for connections of at
  least ``config.DOT_MIN_WEIGHTS`` weights; all the gradients of a step come from the
  start-of-step state, so the settling test after a step is made with the next step's
  gradients at no extra cost;
* otherwise, within a task, one step is: neurons (Euler or exponential Euler, from the
  rates at the start of the step; instantaneous neurons take their steady state), the
  output error, then one pass over the synapses of every connection, output connection
  first, that sends the error down (``backprop``, through the start-of-step weights),
  updates the fast weights (``tau_phi dphi/dt = sum_s c_s delta_s [r_s; 1]^T - lam (phi
  - omega)``) and accumulates the next step's synaptic currents from the new weights
  while the row of weights is in the cache;
* one-connection networks with many weights (tasks x synapses >=
  ``config.ROWS_MIN_SYNAPSES``) run on the *rows* kernel (:mod:`.rows`) instead: a unit's potential, error
  and weight row depend only on its own row and the inputs, so blocks of rows (cache
  sized) are advanced for all tasks in lock-step and for all the steps up to the next
  settling check, threads taking ranges of blocks. omega and lam, shared by the tasks, are
  then read once per block and run instead of once per task and step (the large case is
  memory-bound otherwise); per-task residuals are reduced over the blocks at each check,
  and settled tasks are frozen as in the numpy engine;
* divergence is tested at every step in the same pass (``not |x| < 1e10``, NaN
  included); the kernel reports per task the first bad step, and :func:`run_phase`
  replays the phase up to the earliest one and raises the numpy engine's
  :class:`~neuro_meta.errors.SimulationError` (same step, same message).

Threads: the kernels are compiled serial and GIL-free, and :func:`.pool.run_parallel` hands
slices of the work to a pool of Python threads (:func:`threads`, default
``config.THREADS`` or ``NUMBA_NUM_THREADS``); numba's own ``parallel=True`` runs on GNU OpenMP on Linux, after
which the process can no longer fork (a fork-based process pool then dies). Phases below
``config.PARALLEL_MIN_WORK`` run in the calling thread. Each task works on its own copies
of the arrays it reads (numba counts references atomically at calls that pass an array;
copies keep threads off each other's counters; the effect was within our timing noise).

Summation order differs from numpy's (the kernels are compiled with reassociation so
that sums vectorise; BLAS sums in its own order) and ``tanh`` is a branch-free
vectorisable implementation (within 5e-16 of libm's), so results agree with the numpy
engine to rounding (~1e-15 relative), not bit for bit.

Supported (:func:`why_not` says why not): integrators ``euler`` and ``expeuler``; rules ``delta`` and
``backprop``; batch and online presentation; any number of layers of the built-in
activations; biases or not; static and complex synapses; ``tau_neuron`` = 0 or > 0;
fixed durations and settling tolerances; no recording. Anything else (RK4, SciPy,
recorded variables, user-defined activations) runs on the numpy engine's Python loop.
Without numba installed, :data:`AVAILABLE` is False and everything runs on numpy.

The package, by concern: :mod:`.config` (settings), :mod:`.scalar` (numba set-up, rate
functions, the synapse update :func:`.scalar.pull_step` -- the only place a kernel
writes ``φ + f·(g − λ(φ − ω))``), :mod:`.layout` (flat arrays and the typed records
:class:`.layout.Network` and :class:`.layout.Stepping` the kernels take), :mod:`.local`
(the general loop), :mod:`.dense` (the batch kernel), :mod:`.rows` (the rows kernel),
:mod:`.pool` (threads), :mod:`.driver` (what runs where).
"""
from . import config
from .driver import NAME, dense_kernel, disabled, run_phase, supports, why_not
from .pool import threads
from .scalar import ACT_CODES, AVAILABLE, tanh

__all__ = ["ACT_CODES", "AVAILABLE", "NAME", "config", "dense_kernel", "disabled",
           "run_phase", "supports", "tanh", "threads", "why_not"]
