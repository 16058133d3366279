"""numba set-up and the scalar maths of the kernels: rate functions, their slopes, and
the synapse update -- written once, inlined into every loop that advances a weight."""
import math

import numpy as np

try:  # numba is an optional dependency (the "fast" extra)
    import numba
    from numba import njit
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised by blocking the import in a test
    numba = None
    AVAILABLE = False

#: Activation name -> code understood by the kernels.
ACT_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "softplus": 4}

# Reassociation lets sums vectorise; no "nnan"/"ninf": NaN and inf must be detected.
FASTMATH = {"reassoc", "contract"}
# numpy's division semantics (x/0 = inf, no ZeroDivisionError check): loops with a
# division vectorise.
OPTS = dict(cache=True, fastmath=FASTMATH, error_model="numpy")

if AVAILABLE:
    #: Compiled, GIL-free (the pool's threads run kernels at the same time).
    jit = njit(nogil=True, **OPTS)
    #: Scalar functions of the inner loops, inlined in numba's IR.
    jit_inline = njit(nogil=True, inline="always", **OPTS)
else:  # pragma: no cover - without numba the kernels are never called
    def jit(fn):
        return fn

    jit_inline = jit


@jit_inline
def tanh(x):
    """tanh without branches or libm calls, so that loops over units vectorise
    (libm's tanh is a scalar call, ~6x slower; it was most of a small network's
    step). Cephes' approximations: a rational function for |x| < 0.625, else
    1 - 2/(exp(2|x|) + 1) with exp = 2^k exp(r), 2^k as exact products. Within 5e-16
    relative of libm's and numpy's tanh (which differ from each other by as much)."""
    ax = abs(x)
    xs = x if ax < 0.625 else 0.0
    z = xs * xs
    small = xs + xs * (z * (((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1)
                             * z - 1.61468768441708447952e3)
                            / (((z + 1.12811678491632931402e2) * z
                                + 2.23548839060100448583e3) * z
                               + 4.84406305325125486048e3)))
    y = 2.0 * ax if ax < 22.0 else 44.0          # tanh(22) is 1.0 in float64
    kf = np.floor(1.4426950408889634 * y + 0.5)
    r = (y - kf * 6.93145751953125e-1) - kf * 1.42860682030941723212e-6
    rr = r * r
    px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
              + 9.99999999999999999910e-1)
    qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
          + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
    k = np.int64(kf)
    p2 = ((1.0 + (k & 1)) * (1.0 + 3.0 * ((k >> 1) & 1)) * (1.0 + 15.0 * ((k >> 2) & 1))
          * (1.0 + 255.0 * ((k >> 3) & 1)) * (1.0 + 65535.0 * ((k >> 4) & 1))
          * (1.0 + 4294967295.0 * ((k >> 5) & 1)))
    big = 1.0 - 2.0 / ((1.0 + 2.0 * px / (qx - px)) * p2 + 1.0)
    big = big if x >= 0.0 else -big
    out = small if ax < 0.625 else big
    return out if (x == x and x != 0.0) else x    # NaN and signed zeros unchanged


@jit_inline
def rate(code, v):
    """Rate r = f(v) (the numpy engine's activations)."""
    if code == 0:
        return v
    if code == 1:
        return tanh(v)
    if code == 2:
        return 1.0 / (1.0 + math.exp(-v))
    if code == 3:
        return v if not v <= 0.0 else 0.0
    # softplus = logaddexp(0, v), written as numpy does
    if v > 0.0:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v))


@jit_inline
def slope(code, v, r):
    """f'(v), using the stored rate r = f(v) where numpy's derivative does."""
    if code == 0:
        return 1.0
    if code == 1:
        return 1.0 - r * r
    if code == 2:
        return r * (1.0 - r)
    if code == 3:
        return 1.0 if v > 0.0 else 0.0
    return 1.0 / (1.0 + math.exp(-v))


@jit_inline
def pull_step(p, f, g, lam, omega):
    """One step of a fast weight: ``φ + f·(g − λ(φ − ω))`` -- the data force ``g`` plus
    the pull to ω, with ``f = dt/τ_φ`` (Euler) or exponential Euler's per-synapse factor
    ``(1 − e^{−λ dt/τ_φ})/λ``. Every kernel advances its weights through this function."""
    return p + f * (g - lam * (p - omega))
