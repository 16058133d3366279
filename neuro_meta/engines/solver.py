"""Settling by solving: the fixed point of a phase found by pseudo-transient continuation.

A phase that runs "until settled" ends at the fixed point its learning process flows to::

    r(φ) = τ_φ dφ/dt = g(φ) − λ (φ − anchor) = 0,      g = −∂φ Σ_s c_s ℓ_s

(neurons at their steady state), a minimum of the inner objective
``F = Σ_s c_s ℓ_s + Σ λ/2 (φ − anchor)²``. Explicit steps reach it in a number of steps
that grows with the stiffness of the process (the largest eigenvalue of
``J = −∂r/∂φ = ∇²L + diag λ`` over the slowest one). The solver instead takes
**implicit-Euler steps whose length grows as the phase settles** -- pseudo-transient
continuation (Kelley & Keyes, SIAM J. Numer. Anal. 35, 1998)::

    (τ_φ/h_k · I + J(φ_k)) s_k = r(φ_k),      φ_{k+1} = φ_k + s_k

* the first step has the length of the learner's ``dt``, so the iterates follow the
  learning process's own path out of the initial state (an implicit Euler step is a
  proximal step on F: it goes down the same valley the flow goes down);
* ``h`` then grows by *switched evolution relaxation*, ``h_{k+1} = h_k ‖r_k‖/‖r_{k+1}‖``
  (at most ×:data:`GROWTH` per step), so that near the fixed point the steps are Newton
  steps and converge quadratically;
* each linear system is solved, per task, by conjugate gradients with the model kind's
  Hessian-vector products (:meth:`~neuro_meta.kind.ModelKind.data_hvp`: no matrix is
  ever formed), to a relative tolerance that tightens as the residual falls (inexact
  Newton), never tighter than the phase's tolerance needs. CG is preconditioned by the
  diagonal of the shift, ``τ_φ/h + λ`` (Jacobi; :data:`PRECONDITION`): λ spans decades
  across synapses (rigid and plastic layers) while the data curvature of a few-shot task
  has low rank, so in the scaled variables the system is the identity plus a low-rank
  term, and CG needs about as many products as that rank. The stopping test stays on the
  unpreconditioned residual (a 784-64-64-5 Omniglot network: 41 % fewer products,
  26 % less time per CML meta-step);
* a step is accepted if it does not raise F beyond rounding (an exact implicit step
  never does) and the step direction has positive curvature; otherwise it is retaken
  with a quarter of the length;
* the phase ends, per task, with the integrators' test: ``max |r| < tol``.

Every decision is taken per task from the task's own data and state, so a task's result
does not depend on the batch it is solved in. A task that has not settled after
:data:`MAX_ITER` steps (or whose step shrinks below ``1e-6 dt``) is handed to the
integrator, from where the solver left it (``LearningResult.engine`` then reads
``"solver+..."``).

What it costs: per step one right-hand side, one evaluation of F and the CG iterations'
Hessian-vector products (each about two right-hand sides for a rate network). The count
of steps depends on how far the fixed point is and how curved F is on the way, not on the
stiffness: where integration needs thousands of steps (stiff, ``substeps`` at their cap),
the solver needs tens. Where the process is not stiff and the phase short, explicit steps
on the compiled kernels are cheaper (see the user guide's "Settling: integrate or
solve").
"""
import numpy as np

from ..kind import Packer, trial_states
from .phase import Recorder, check_finite, task_max

#: Name of the solver in results (``LearningResult.engine``).
NAME = "solver"
#: Most pseudo-time steps per phase before a task is handed to the integrator.
MAX_ITER = 200
#: Most conjugate-gradient iterations per linear solve.
MAX_CG = 300
#: The first step is ``dt`` or, if longer, the step that moves a fast variable by about
#: this much (residual times step).
FIRST_MOVE = 0.2
#: Largest relative tolerance of a linear solve (inexact Newton forcing term).
ETA_MAX = 0.5
#: Largest and least growth of the pseudo-time step per accepted step.
GROWTH = 10.0
MIN_GROWTH = 2.0
#: Largest pseudo-time step, in units of tau_phi (keeps the shift of singular systems).
H_MAX = 1e8
#: Precondition CG by the diagonal of the shift (lam + tau/h): Jacobi.
PRECONDITION = True
#: A step may raise F by this much relative to |F| (rounding) and still be accepted.
F_RTOL = 1e-12


def why_not(kind, spec, inp, record=(), substeps=None):
    """Why this phase is integrated rather than solved (None: it can be solved)."""
    return reason(spec.tol, spec.integrator, inp.presentation, record)


def reason(tol, integrator, presentation, record=()):
    """Why a phase with these settings has no fixed point to solve for (None: it has)."""
    if tol is None:
        return "a fixed-duration phase ends at a time, not at a fixed point"
    if presentation != "batch":
        return ("with online presentation the process cycles through the samples (a "
                "limit cycle, not a fixed point)")
    if record:
        return "a recorded trajectory is integrated in time"
    if integrator == "scipy":
        return "integrator='scipy' integrates a fixed interval"
    return None


def _cg(apply, b, rtol, max_iter, diag=None):
    """Conjugate gradients per task for ``A x = b`` (b (B, P)), ``apply(idx, p)`` giving
    ``A p`` for the tasks ``idx`` (indices into ``b``'s rows). Stops a task at
    ``‖r‖ ≤ rtol ‖b‖`` (``rtol`` (B,)) or at a direction of non-positive curvature
    (keeping the iterate so far, a descent direction of F). The running tasks are kept
    in compact arrays, gathered again only when some stop.

    Returns (x, no_step (B,) -- non-positive curvature at the first iteration --,
    products per task)."""
    B = b.shape[0]
    out = np.zeros_like(b)
    no_step = np.zeros(B, dtype=bool)
    products = np.zeros(B, dtype=np.int64)
    rr = (b * b).sum(axis=-1)
    target = rtol ** 2 * rr
    idx = np.flatnonzero(rr > target)
    inv = None if diag is None else 1.0 / diag[idx]
    x, r, rr, target = np.zeros_like(b[idx]), b[idx], rr[idx], target[idx]
    zr_ = r if inv is None else r * inv
    p = zr_.copy()
    rz = (r * zr_).sum(axis=-1)
    for it in range(max_iter):
        if not idx.size:
            break
        Ap = apply(idx, p)
        products[idx] += 1
        pAp = (p * Ap).sum(axis=-1)
        ok = pAp > 0
        alpha = np.where(ok, rz / np.where(ok, pAp, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * Ap
        rr = (r * r).sum(axis=-1)
        zr_ = r if inv is None else r * inv
        rz_new = (r * zr_).sum(axis=-1)
        p = zr_ + (rz_new / rz)[:, None] * p
        rz = rz_new
        if it == 0:
            no_step[idx[~ok]] = True
        keep = ok & (rr > target)
        if not keep.all():
            done = ~keep
            out[idx[done]] = x[done]
            idx, x, r, p, rr, rz, target = (idx[keep], x[keep], r[keep], p[keep], rr[keep],
                                            rz[keep], target[keep])
            if inv is not None:
                inv = inv[keep]
    out[idx] = x
    return out, no_step, products


def solve_phase(ph, phi):
    """Settle the phase ``ph`` (a :class:`~neuro_meta.engines.numpy_engine.Phase`) from
    ``phi`` by pseudo-transient continuation. Returns ``(phi, v, recorder, settled,
    t_end, steps, handed_over)`` with ``handed_over`` (B,) the tasks left to the
    integrator (their ``phi`` is where the solver stopped); the recorder's ``solver``
    holds per task the accepted steps and Hessian-vector products."""
    kind, dyn, inp, spec = ph.kind, ph.dyn, ph.inp, ph.spec
    X, Y, c = inp.X, inp.Y, inp.c
    B = phi[0].shape[0]
    pk = Packer(kind, B)
    lam = pk.broadcast([None if not pl else lm for lm, pl in zip(dyn.lam, dyn.plastic)])
    anchor = pk.broadcast([None if not pl else a for a, pl in zip(dyn.omega, dyn.plastic)])
    tau = dyn.tau_phi
    static = [None if pl else p for p, pl in zip(phi, dyn.plastic)]

    def full(z, idx=None):
        new = pk.unpack(z)
        return [n if n is not None else (s if idx is None else s[idx])
                for n, s in zip(new, static)]

    def residual(ph_, Xs, Ys, cs):
        g = dyn.plasticity(ph_, dyn.steady_v(ph_, Xs), Xs, Ys, cs)
        return pk.pack([gl if pl else None for gl, pl in zip(g, dyn.plastic)])

    def objective(ph_, z, Xs, Ys, cs, lam_s, anchor_s):
        with trial_states():        # a rejected trial step may be non-finite
            data = (cs * kind.loss.per_sample(kind.predict(Xs, ph_), Ys)).sum(axis=-1)
        return data + 0.5 * (lam_s * (z - anchor_s) ** 2).sum(axis=-1)

    z = pk.pack(phi)
    r = residual(phi, X, Y, c)
    F = objective(phi, z, X, Y, c, lam, anchor)
    # first step: dt, or longer where the residual is small -- as long as the step
    # (about h r) moves no fast variable by more than FIRST_MOVE (a nudged phase, which
    # starts next to its fixed point, starts with Newton-like steps)
    r0 = np.abs(r).max(axis=-1) if r.size else np.zeros(B)
    h = np.maximum(spec.dt / tau, FIRST_MOVE / np.maximum(r0, 1e-300))
    h = np.minimum(h, H_MAX)                      # pseudo-time step in units of tau
    t = np.zeros(B)                               # pseudo-time reached (units of tau)
    settled = task_max([r]) < spec.tol
    handed = np.zeros(B, dtype=bool)
    steps = np.zeros(B, dtype=np.int64)
    hvps = np.zeros(B, dtype=np.int64)
    h_min = 1e-6 * spec.dt / tau
    with np.errstate(over="ignore", invalid="ignore"):
        for it in range(MAX_ITER):
            act = np.flatnonzero(~settled & ~handed)
            if not act.size:
                break
            Xa, Ya, ca = X[act], Y[act], c[act]
            za, ra, lam_a = z[act], r[act], lam[act]
            pha = full(za, act)
            sigma = 1.0 / h[act]
            rnorm = np.sqrt((ra * ra).sum(axis=-1))
            rmax = np.abs(ra).max(axis=-1)
            eta = np.clip(np.minimum(ETA_MAX, np.sqrt(rmax)), 0.1 * spec.tol / rmax, 0.5)

            cache = {}

            def apply(idx, p, pha=pha, Xa=Xa, Ya=Ya, ca=ca, lam_a=lam_a, sigma=sigma,
                      cache=cache):
                if cache.get("n") != idx.size:      # the running set only shrinks
                    cache.update(n=idx.size, shift=lam_a[idx] + sigma[idx, None],
                                 hvp=kind.data_hvp_at([a[idx] for a in pha], Xa[idx],
                                                      Ya[idx], ca[idx]))
                return pk.pack(cache["hvp"](pk.unpack(p))) + cache["shift"] * p

            s, no_step, prods = _cg(apply, ra, eta, MAX_CG,
                                    lam_a + sigma[:, None] if PRECONDITION else None)
            hvps[act] += prods
            z_new = za + s
            ph_new = full(z_new, act)
            r_new = residual(ph_new, Xa, Ya, ca)
            F_new = objective(ph_new, z_new, Xa, Ya, ca, lam_a, anchor[act])
            finite = np.isfinite(F_new) & np.isfinite(r_new).all(axis=-1)
            accept = ~no_step & finite & (F_new <= F[act] + F_RTOL * np.abs(F[act]))
            acc = act[accept]
            z[acc], r[acc], F[acc] = z_new[accept], r_new[accept], F_new[accept]
            t[acc] += h[acc]
            steps[acc] += 1
            ratio = rnorm[accept] / np.maximum(np.sqrt((r_new[accept] ** 2).sum(axis=-1)),
                                               1e-300)
            h[acc] = np.minimum(h[acc] * np.clip(ratio, MIN_GROWTH, GROWTH), H_MAX)
            rej = act[~accept]
            h[rej] /= 4.0
            handed[rej[h[rej] < h_min]] = True
            settled[acc] = np.abs(r[acc]).max(axis=-1) < spec.tol
    handed |= ~settled
    phi = full(z)
    v = dyn.steady_v(phi, X)
    check_finite(phi, v, int(steps.max()) if B else 0, spec, kind, solver=True)
    rec = Recorder((), 1, spec.dt)
    rec.ran(NAME)
    rec.solver = {"steps": steps, "hvps": hvps}
    t_end = float(t.max() * tau) if B else 0.0
    rec.t.append(t_end)
    return phi, v, rec, settled, t_end, int(steps.max()) if B else 0, handed

