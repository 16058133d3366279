"""The phase's arrays in the kernels' layout, and the typed records the kernels take.

Per task one flat vector of all fast weights (connection after connection, rows of
(n_post, n_pre[+1])) and per sample copy one vector of all neurons (layer after layer,
the input layer first). The kernels take the network as a :class:`Network` record and the
phase's settings as a :class:`Stepping` record (numba compiles named tuples as typed
records) instead of some thirty positional arguments.
"""
from typing import NamedTuple

import numpy as np

from .scalar import ACT_CODES


class Network(NamedTuple):
    """The layered network, shared by the tasks of a phase (flat, read-only)."""

    omega: np.ndarray     #: (P,) consolidated weights (0 for static connections)
    lam: np.ndarray       #: (P,) consolidation strengths
    conn: np.ndarray      #: (L, 4) per connection: offset in phi, plastic, has bias, 0
    sizes: np.ndarray     #: (L + 1,) layer sizes, input first
    noff: np.ndarray      #: (L + 2,) offsets of the layers in a neuron vector
    acts: np.ndarray      #: (L,) activation codes (``ACT_CODES``)


class Stepping(NamedTuple):
    """A phase's settings, as the kernels see them."""

    online: bool          #: online presentation (one sample at a time)
    k_pres: int           #: steps per presented sample
    n_max: int            #: steps at most
    check: int            #: steps between settling tests
    tol: float            #: settling tolerance (<= 0: a fixed duration)
    tau_phi: float        #: fast weights' time constant (s)
    dt: float             #: time step (s)
    tau_v: float          #: neurons' time constant (s; 0: instantaneous)
    a_v: float            #: neurons' step factor (exp(-dt/tau_v), or dt/tau_v)
    exponential: bool     #: exponential Euler (else Euler)
    backprop: bool        #: send the error down (else the delta rule)
    dense: bool           #: batch kernel (matrix products)
    bound: float          #: divergence bound


class RowsNet(NamedTuple):
    """A one-connection network for the rows kernel."""

    omega: np.ndarray
    lam: np.ndarray
    fac: np.ndarray       #: exponential Euler's factor per synapse
    n_in: int
    hb: int               #: 1 with biases
    act: int              #: activation code
    h: float              #: dt / tau_phi


class Layout:
    """The phase's arrays in the kernels' flat layout: per task one vector of all fast
    weights (connection after connection, rows of (n_post, n_pre[+1])) and per sample
    copy one vector of all neurons (layer after layer, the input layer first)."""

    def __init__(self, net, integrator, inp, dt, dtype, substeps=None):
        conns = net.connections
        L = len(conns)
        self.sizes = np.array(net.sizes, dtype=np.int64)
        self.noff = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        sizes_p = [int(np.prod(c.shape)) for c in conns]
        poff = np.concatenate([[0], np.cumsum(sizes_p)]).astype(np.int64)
        self.poff = poff
        self.conn = np.array([[poff[l], int(c.plastic), int(c.has_bias), 0]
                              for l, c in enumerate(conns)], dtype=np.int64).reshape(L, 4)
        self.acts = np.array([ACT_CODES[a.name] for a in net.activations], dtype=np.int64)
        P = int(poff[-1])

        def flat(attr):   # the shared arrays, one vector (a view for one connection)
            parts = [np.ravel(getattr(c, attr)) if c.plastic else np.zeros(n)
                     for c, n in zip(conns, sizes_p)]
            return np.ascontiguousarray(parts[0] if L == 1 else np.concatenate(parts),
                                        dtype=dtype)

        self.omega, self.lam = flat("omega"), flat("lam")
        self.msub, self.hs, self.fac = step_factors(self.lam, dt, net.tau_synapse,
                                                    substeps, integrator, dtype)
        for a in (self.omega, self.lam, self.fac, self.hs, self.msub):  # one array type
            a.setflags(write=False)              # for the kernels (the net's are read-only)
        self.P = P
        self.network = Network(self.omega, self.lam, self.conn, self.sizes, self.noff,
                               self.acts)

    def pack_phi(self, phi, dtype):
        """A new (B, P) array: the kernels advance it in place."""
        B = phi[0].shape[0]
        out = np.empty((B, self.P), dtype=dtype)
        for l, p in enumerate(phi):
            out[:, self.poff[l]:self.poff[l + 1]] = p.reshape(B, -1)
        return out

    def unpack_phi(self, flat, net):
        """Per connection (B, n_post, n_pre[+1]) float64 (views of ``flat`` if float64)."""
        return [flat[:, self.poff[l]:self.poff[l + 1]].reshape((-1,) + c.shape).astype(
            np.float64, copy=False) for l, c in enumerate(net.connections)]

    def pack_v(self, v, dtype):
        B, Se = v[0].shape[:2]
        out = np.zeros((B, Se, int(self.noff[-1])), dtype=dtype)
        for l, vl in enumerate(v):
            out[:, :, self.noff[l + 1]:self.noff[l + 2]] = vl
        return out

    def unpack_v(self, flat):
        return [np.array(flat[:, :, self.noff[l + 1]:self.noff[l + 2]], dtype=np.float64)
                for l in range(len(self.sizes) - 1)]


def step_factors(lam, dt, tau, substeps, integrator, dtype):
    """Per task (one row if all tasks take the same step): sub-steps ``msub``, their step
    ``hs`` in units of ``tau`` and exponential Euler's factor ``fac`` per variable (the
    numpy engine's; ``lam`` for Euler, which does not read it)."""
    m = np.ones(1, np.int64) if substeps is None or not np.size(substeps) \
        else np.asarray(substeps, np.int64)
    if np.all(m == m[0]):
        m = m[:1]
    hs = (dt if m.shape[0] == 1 and m[0] == 1 else dt / m) / tau
    msub = np.ascontiguousarray(m)
    hs_rows = np.ascontiguousarray(np.broadcast_to(hs, m.shape), dtype=dtype)
    fac = np.broadcast_to(lam, (m.shape[0], lam.shape[0]))    # unused by Euler
    if integrator == "expeuler":
        lam = lam.astype(np.float64)
        rows = {}
        for k in np.unique(m):
            h = float(np.broadcast_to(hs, m.shape)[np.argmax(m == k)])
            with np.errstate(divide="ignore", invalid="ignore"):
                rows[k] = np.where(lam > 0, -np.expm1(-lam * h)
                                   / np.where(lam > 0, lam, 1.0), h)
        fac = np.stack([rows[k] for k in m])
    return msub, hs_rows, np.ascontiguousarray(fac, dtype=dtype)
