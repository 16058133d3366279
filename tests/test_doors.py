"""Every public door of the Python API checks what comes in (issue 18).

Regression tests, one per class of failure found by a hostile user: step counts and
sizes, zero tasks, unvalidated arguments of public methods, numerical edges, silent
garbage (complex values, units, NaN, out-of-range hyper-parameters) and hangs. Each
bad input raises a package error (``ValidationError``/``SimulationError``) whose
message names the object, the attribute, the rule and the value -- never a numpy or
Python exception from deep inside, a NaN, a dropped imaginary part or unit, or a phase
that runs for hours. Then a hypothesis fuzz over the same entry points with junk values.
"""
import re
import time

import brian2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuro_meta as nm
from neuro_meta.families import LinearTeacher, Sinusoid
from neuro_meta.learning import MAX_PHASE_STEPS, MAX_SCIPY_EVALUATIONS, MAX_SUBSTEPS
from test_properties import (assert_finite, attempt, check_error, floats, junk, mostly,
                             reals, small_arrays)

_rng = np.random.default_rng(18)
X = _rng.normal(size=(3, 2))
Y = _rng.normal(size=(3, 1))
TASK = nm.Task(X, Y, X + 0.5, Y)


def _net(sizes=(2, 1), lam=1.0, **kw):
    return nm.RateNetwork(list(sizes), activation="linear", tau_neuron=0, seed=0,
                          synapse=nm.ComplexSynapse(omega=0.0, lam=lam), **kw)


NET = _net()
FAST = nm.Learner(dt=0.01, duration=0.1)
DUAL = nm.DualSystem([2, 3, 1], seed=0)


def _run(learner=FAST, net=NET, x=X, y=Y, **kw):
    return learner.run(net, x, y, **kw)


def _exact(net, task, **kw):
    learner = nm.Learner(integrator="expeuler", dt=0.1, duration=1.0)
    return nm.exact_meta_gradient(net, task, learner=learner, **kw)


def _adam_step(**kw):
    opt = nm.optim.adam(0.1, **kw)
    return opt.update(NET.theta, opt.init(NET.theta))


# (id, action, error class, pattern the message must contain)
CASES = [
    # --- step counts and sizes
    ("dt subnormal", lambda: _run(nm.Learner(dt=5e-324, duration=1)), nm.ValidationError,
     r"Learner\.duration: 1 s needs inf steps .*MAX_PHASE_STEPS.*larger dt"),
    ("max_duration huge", lambda: _run(nm.Learner(max_duration=1e308)), nm.ValidationError,
     r"Learner\.max_duration: .*more than the maximum of 1e\+08 steps.*settle='solve'"),
    ("substeps 10**30", lambda: nm.Learner(substeps=10 ** 30), nm.ValidationError,
     r"Learner\.substeps: must be <= 10000"),
    ("max_substeps huge", lambda: nm.Learner(substeps="auto", max_substeps=10 ** 20),
     nm.ValidationError, r"Learner\.max_substeps: must be <= 10000"),
    ("steps x substeps", lambda: _run(nm.Learner(dt=1e-6, duration=100.0, substeps=10)),
     nm.ValidationError, r"Learner\.duration: .*1e\+08 steps .* x 10 sub-steps.*fewer "
                         r"substeps"),
    ("CML beta 1e300", lambda: nm.CML(beta=1e300), nm.ValidationError,
     r"CML\.beta: must be at most 1e\+06 in magnitude"),
    ("CML beta second order", lambda: nm.CML(beta=6e5, estimator="second_order"),
     nm.ValidationError, r"CML\.beta: must be at most 500000 .*'second_order'.*2 beta"),
    ("Learner.run beta 1e300", lambda: _run(x_val=X, y_val=Y, beta=1e300),
     nm.ValidationError, r"Learner\.run\.beta: must be <= 1000000"),
    ("RateNetwork sizes 10**30", lambda: nm.RateNetwork([10 ** 30, 2]), nm.ValidationError,
     r"RateNetwork\.sizes: would need an array of shape \(2, 10+1\).* bytes.*"
     r"MAX_ARRAY_BYTES"),
    ("RateNetwork sizes 10**6", lambda: nm.RateNetwork([10 ** 6, 10 ** 6]),
     nm.ValidationError, r"RateNetwork\.sizes: .*8e\+12 bytes"),
    ("DualSystem sizes huge", lambda: nm.DualSystem([2, 10 ** 12, 1]), nm.ValidationError,
     r"DualSystem\.sizes: .*bytes"),
    ("meta_batch 10**10", lambda: nm.MetaTrainer(
        NET, LinearTeacher(n_in=2, n_out=1), nm.CML(), meta_batch=10 ** 10,
        eval_tasks=1).train(1, progress=False), nm.ValidationError,
     r"LinearTeacher\.sample\.n_tasks: would need .* bytes .*\(got 10000000000\)"),
    ("eval_tasks 10**12", lambda: nm.MetaTrainer(
        NET, LinearTeacher(n_in=2, n_out=1), nm.CML(), eval_tasks=10 ** 12),
     nm.ValidationError, r"LinearTeacher\.sample\.n_tasks: .*\(got 1000000000000\)"),
    ("Sinusoid sample huge", lambda: Sinusoid().sample(np.random.default_rng(0), 10 ** 12),
     nm.ValidationError, r"Sinusoid\.sample\.n_tasks: would need"),
    ("LinearTeacher huge", lambda: LinearTeacher(n_in=10 ** 6, n_out=10 ** 6),
     nm.ValidationError, r"LinearTeacher\.n_in: would need"),
    ("presentation_time huge", lambda: _run(nm.Learner(
        presentation="online", presentation_time=1e300, duration=1.0)),
     nm.ValidationError, r"Learner\.presentation_time: is 2e\+301 automatic steps"),
    ("presentation_time huge, dt given", lambda: _run(nm.Learner(
        presentation="online", presentation_time=1e300, dt=0.01, duration=1.0)),
     nm.ValidationError, r"Learner\.presentation_time: is 1e\+302 steps"),
    # --- zero tasks
    ("Task with 0 tasks", lambda: nm.Task(np.zeros((0, 3, 2)), np.zeros((0, 3, 1)),
                                          np.zeros((0, 3, 2)), np.zeros((0, 3, 1))),
     nm.ValidationError, r"Task\.x_train: needs at least one task .*\(got shape \(0, 3, 2\)\)"),
    ("Learner.run with 0 tasks", lambda: _run(x=np.zeros((0, 3, 2)), y=np.zeros((0, 3, 1))),
     nm.ValidationError, r"Learner\.run\.x: needs at least one task"),
    # --- unvalidated arguments of public methods
    ("phi_init []", lambda: _run(phi_init=[]), nm.ValidationError,
     r"Learner\.run\.phi_init: must be a list of 1 arrays .*\(got 0 arrays\)"),
    ("phi_init 5", lambda: _run(phi_init=5), nm.ValidationError,
     r"Learner\.run\.phi_init: .*\(got int\)"),
    ("phi_init [object()]", lambda: _run(phi_init=[object()]), nm.ValidationError,
     r"Learner\.run\.phi_init\[0\]: must be convertible to an array of real numbers"),
    ("phi_init NaN", lambda: _run(phi_init=[np.full((1, 3), np.nan)]), nm.ValidationError,
     r"Learner\.run\.phi_init\[0\]: must contain only finite values"),
    ("predict text", lambda: NET.predict("abc"), nm.ValidationError,
     r"RateNetwork\.forward\.x: must be convertible .*\(got str\)"),
    ("predict wrong shape", lambda: NET.predict(np.zeros((3, 5))), nm.ValidationError,
     r"RateNetwork\.forward\.x: last axis must match .*\(2 units\) \(got shape \(3, 5\)\)"),
    ("forward objects", lambda: NET.forward([object()]), nm.ValidationError,
     r"RateNetwork\.forward\.x: must be convertible"),
    ("predict complex", lambda: NET.predict(X + 1j), nm.ValidationError,
     r"RateNetwork\.forward\.x: must be real numbers \(complex"),
    ("predict phi wrong shape", lambda: NET.predict(X, phi=[np.zeros(2)]),
     nm.ValidationError, r"RateNetwork\.forward\.phi\[0\]: must have shape \(1, 3\)"),
    ("predict phi not a list", lambda: NET.predict(X, phi=np.zeros((1, 3))),
     nm.ValidationError, r"RateNetwork\.forward\.phi: must be a list of 1 arrays"),
    ("predict phi text", lambda: NET.predict(X, phi=["abc"]), nm.ValidationError,
     r"RateNetwork\.forward\.phi\[0\]: must be an array of real numbers"),
    # non-finite fast variables returned NaN (the engines' trial states are evaluated
    # within kind.trial_states(), unchecked)
    ("predict phi NaN", lambda: NET.predict(X, phi=[np.array([[np.nan, 0.0, 0.0]])]),
     nm.ValidationError, r"RateNetwork\.forward\.phi\[0\]: must contain only finite values "
     r".*first nan at index \(0, 0\)"),
    ("forward phi inf", lambda: NET.forward(X, phi=[np.array([[0.0, np.inf, 0.0]])]),
     nm.ValidationError, r"RateNetwork\.forward\.phi\[0\]: must contain only finite"),
    ("DualSystem predict fast inf", lambda: DUAL.predict(
        X, fast=[np.asarray(a) + (np.inf if i == 0 else 0) for i, a in enumerate(DUAL.phi0)]),
     nm.ValidationError, r"DualSystem\.forward\.fast\[gain\[0\]\]: must contain only finite"),
    ("WarpNetwork predict phi NaN", lambda: nm.warp.WarpNetwork([2, 3, 1], seed=0).predict(
        X, phi=[np.full((3, 3), np.nan), np.zeros((1, 4))]),
     nm.ValidationError, r"WarpNetwork\.predict\.phi\[0\]: must contain only finite"),
    ("predict output overflow", lambda: NET.predict(np.full((1, 2), 1e100),
                                                     phi=[np.array([[1e250, 1e250, 0.0]])]),
     nm.SimulationError, r"RateNetwork\.forward: the output's pre-activations overflowed "
     r"\(1 non-finite value\(s\)\) .*Hint"),
    ("forward hidden layer overflow (it returned inf silently)", lambda: nm.RateNetwork(
        [1, 1, 1], bias=False, seed=0).forward(np.full((1, 1), 1e100),
                                               phi=[np.array([[1e300]]), np.array([[1.0]])]),
     nm.SimulationError, r"RateNetwork\.forward: layer 1's pre-activations overflowed "
     r"\(1 non-finite value\(s\)\) at finite inputs and fast variables\. Hint"),
    ("DualSystem predict wrong shape", lambda: DUAL.predict(np.zeros((3, 4))),
     nm.ValidationError, r"DualSystem\.forward\.x: last axis must match"),
    ("DualSystem predict fast", lambda: DUAL.predict(X, fast=[np.zeros(3)]),
     nm.ValidationError, r"DualSystem\.forward\.fast: must be a list of 3 arrays"),
    ("with_theta {}", lambda: NET.with_theta({}), nm.ValidationError,
     r"RateNetwork\.with_theta\.theta: must be a dict with keys"),
    ("with_theta not a dict", lambda: NET.with_theta([1]), nm.ValidationError,
     r"RateNetwork\.with_theta\.theta: .*\(got list\)"),
    ("with_theta short list", lambda: NET.with_theta(dict(NET.theta, omega=[])),
     nm.ValidationError, r"RateNetwork\.with_theta\.omega: must be a list of 1 entries"),
    ("with_theta None for plastic", lambda: NET.with_theta(dict(NET.theta, lam=[None])),
     nm.ValidationError, r"RateNetwork\.with_theta\.lam\[0\]: must be an array"),
    ("with_theta wrong shape", lambda: NET.with_theta(dict(NET.theta, omega=[np.zeros(3)])),
     nm.ValidationError, r"RateNetwork\.with_theta\.omega\[0\]: must have shape \(1, 2\)"),
    ("with_theta bias of a bias-free network (it was ignored)", lambda: nm.RateNetwork(
        [2, 1], bias=False).with_theta(dict(nm.RateNetwork([2, 1], bias=False).theta,
                                            omega_bias=[np.zeros(1)])),
     nm.ValidationError, r"RateNetwork\.with_theta\.omega_bias\[0\]: must be None \(the "
     r"connection has no biases, as in net\.theta\) \(got array"),
    ("with_theta values of a static connection (they were ignored)", lambda: nm.RateNetwork(
        [2, 3, 1], synapse=[nm.StaticSynapse(), nm.ComplexSynapse()]).with_theta(
        dict(nm.RateNetwork([2, 3, 1], synapse=[nm.StaticSynapse(), nm.ComplexSynapse()]
                            ).theta, lam=[np.ones((3, 2)), np.ones((1, 3))])),
     nm.ValidationError, r"RateNetwork\.with_theta\.lam\[0\]: must be None \(the "
     r"connection is static, as in net\.theta\)"),
    ("DualSystem with_theta int", lambda: DUAL.with_theta(dict(DUAL.theta, W=5)),
     nm.ValidationError, r"DualSystem\.with_theta\.W: must be a list"),
    ("apply_updates mismatched keys", lambda: nm.optim.apply_updates(NET.theta,
                                                                     {"omega": []}),
     nm.ValidationError, r"apply_updates\.updates: must be a dict with the keys"),
    ("apply_updates short list", lambda: nm.optim.apply_updates(
        NET.theta, dict(NET.theta, omega=[])), nm.ValidationError,
     r"apply_updates\.updates\.omega: must be a list of 1 entries"),
    ("apply_updates wrong shape", lambda: nm.optim.apply_updates(
        NET.theta, dict(NET.theta, lam=[np.zeros(4)])), nm.ValidationError,
     r"apply_updates\.updates\.lam\[0\]: must be a real array of shape \(1, 2\)"),
    ("apply_updates complex", lambda: nm.optim.apply_updates(
        NET.theta, dict(NET.theta, lam=[np.zeros((1, 2)) + 1j])), nm.ValidationError,
     r"apply_updates\.updates\.lam\[0\]: must be a real array .*complex"),
    ("adam.update mismatched", lambda: nm.optim.adam(0.1).update(
        {"omega": [np.zeros(2)]}, nm.optim.adam(0.1).init(NET.theta)), nm.ValidationError,
     r"adam\.update\.grads: must be a dict with the keys"),
    ("adam.init junk", lambda: nm.optim.adam(0.1).init([1, 2]), nm.ValidationError,
     r"adam\.init\.theta: must be a dict"),
    ("adam.init bool leaf", lambda: nm.optim.adam(0.1).init(dict(NET.theta, lam=[
        np.ones((1, 2), bool)])), nm.ValidationError,
     r"adam\.init\.theta\.lam\[0\]: must be a real \(integer or float\) array or None "
     r"\(got ndarray of dtype bool\)"),
    ("sgd.update bool scalar", lambda: nm.optim.sgd(0.1).update(
        dict(NET.theta, lam=[True]), None), nm.ValidationError,
     r"sgd\.update\.grads\.lam\[0\]: must be a real .*\(got bool\)"),
    ("exact learner='bogus'", lambda: nm.exact_meta_gradient(NET, TASK, learner="bogus"),
     nm.ValidationError, r"exact_meta_gradient\.learner: must be a Learner \(got str\)"),
    ("exact tol text", lambda: nm.exact_meta_gradient(NET, TASK, tol="x"),
     nm.ValidationError, r"exact_meta_gradient\.tol: must be a real number"),
    ("exact newton_steps huge", lambda: nm.exact_meta_gradient(NET, TASK,
                                                               newton_steps=10 ** 9),
     nm.ValidationError, r"exact_meta_gradient\.newton_steps: must be <= 100"),
    ("LinearTeacher.sample('x', 3)", lambda: LinearTeacher().sample("x", 3),
     nm.ValidationError, r"LinearTeacher\.sample\.rng: must be a numpy\.random\.Generator "
                         r"\(.*\) \(got str\)"),
    ("Sinusoid.sample('x', 3)", lambda: Sinusoid().sample("x", 3), nm.ValidationError,
     r"Sinusoid\.sample\.rng: must be a numpy\.random\.Generator"),
    ("sample n_tasks 2.5", lambda: Sinusoid().sample(np.random.default_rng(0), 2.5),
     nm.ValidationError, r"Sinusoid\.sample\.n_tasks: must be an integer \(got 2\.5\)"),
    ("sample n_tasks 0", lambda: LinearTeacher().sample(np.random.default_rng(0), 0),
     nm.ValidationError, r"LinearTeacher\.sample\.n_tasks: must be >= 1 \(got 0\)"),
    ("Sinusoid range overflows", lambda: Sinusoid(amplitude=(-1e308, 1e308)),
     nm.ValidationError, r"Sinusoid\.amplitude\[0\]: must be >= -1000000"),
    ("Sinusoid data would overflow", lambda: Sinusoid(x_range=(0, 1e300)),
     nm.ValidationError, r"Sinusoid\.x_range\[1\]: must be <= 1000000"),
    ("LinearTeacher noise would overflow", lambda: LinearTeacher(noise_std=1e300),
     nm.ValidationError, r"LinearTeacher\.noise_std: must be <= 1000000"),
    # --- numerical edge
    ("singular Hessian (lam=0, 2 shots, 4 weights)", lambda: _exact(
        _net((3, 1), lam=0.0), nm.Task(X[:2].repeat(2, 1)[:, :3], Y[:2],
                                       X[:2].repeat(2, 1)[:, :3], Y[:2])),
     nm.SimulationError, r"exact_meta_gradient: the Hessian of the inner objective .* "
                         r"task 0 is singular .*Hint: .*lam > 0"),
    ("lam=0, one shot", lambda: _exact(_net((1, 1), lam=0.0), nm.Task(
        X[:1, :1], Y[:1], X[:1, :1] + 1, Y[:1])), nm.SimulationError,
     r"the Hessian of the inner objective .* is singular \(condition number infinite\)"),
    ("singular Hessian, cg", lambda: _exact(_net((1, 1), lam=0.0), nm.Task(
        X[:1, :1], Y[:1], X[:1, :1] + 1, Y[:1]), method="cg"), nm.SimulationError,
     r"exact_meta_gradient: .*singular.*Hint: .*lam > 0"),
    # --- silent garbage: complex values, units, NaN, hyper-parameters, dt > duration
    ("omega complex", lambda: nm.ComplexSynapse(omega=1 + 2j), nm.ValidationError,
     r"ComplexSynapse\.omega: must be real numbers \(complex values are not accepted"),
    ("lam complex array", lambda: nm.ComplexSynapse(lam=np.ones((1, 2)) * (1 + 0j)),
     nm.ValidationError, r"ComplexSynapse\.lam: must be real numbers .*complex128"),
    ("static weight complex list", lambda: nm.StaticSynapse(weight=[1j, 2]),
     nm.ValidationError, r"StaticSynapse\.weight: must be real numbers"),
    ("static bias complex", lambda: nm.StaticSynapse(bias=np.complex128(1)),
     nm.ValidationError, r"StaticSynapse\.bias: must be real numbers"),
    ("x complex", lambda: _run(x=X + 1j), nm.ValidationError,
     r"Learner\.run\.x: must be real numbers \(complex"),
    ("y complex (zero imaginary part)", lambda: _run(y=Y + 0j), nm.ValidationError,
     r"Learner\.run\.y: must be real numbers"),
    ("phi_init complex", lambda: _run(phi_init=[np.full((1, 3), 1 + 1j)]),
     nm.ValidationError, r"Learner\.run\.phi_init\[0\]: must be real numbers"),
    ("Task complex", lambda: nm.Task(X + 1j, Y, X, Y), nm.ValidationError,
     r"Task\.x_train: must be real numbers"),
    ("Task text", lambda: nm.Task(X.astype(str), Y, X, Y), nm.ValidationError,
     r"Task\.x_train: must be convertible to an array of real numbers"),
    ("DualSystem gain complex list", lambda: nm.DualSystem([2, 3, 1], gain=[1j, 1, 1]),
     nm.ValidationError, r"DualSystem\.gain: must be real numbers"),
    ("initialiser returns complex", lambda: nm.RateNetwork([2, 1], synapse=nm.ComplexSynapse(
        omega=lambda shape, rng: np.ones(shape) * 1j)),
     nm.ValidationError, r"RateNetwork\.synapse\[0\]\.omega: must be real numbers"),
    ("omega 10 mV", lambda: nm.ComplexSynapse(omega=10 * brian2.mV), nm.ValidationError,
     r"ComplexSynapse\.omega: is dimensionless: .*Brian2 quantity .*\(got 10\. \* mvolt\)"),
    ("lam in Hz", lambda: nm.ComplexSynapse(lam=[1 * brian2.Hz, 2 * brian2.Hz]),
     nm.ValidationError, r"ComplexSynapse\.lam: is dimensionless"),
    ("weights in ms", lambda: nm.DualSystem([2, 3, 1], weights=np.ones((3, 2)) * brian2.ms),
     nm.ValidationError, r"DualSystem\.weights\[0\]: is dimensionless"),
    ("DualSystem lam in mV", lambda: nm.DualSystem([2, 3, 1], lam=5 * brian2.mV),
     nm.ValidationError, r"DualSystem\.lam: is dimensionless"),
    ("CML beta in mV", lambda: nm.CML(beta=1 * brian2.mV), nm.ValidationError,
     r"CML\.beta: is dimensionless"),
    ("Learner.tol in mV", lambda: nm.Learner(tol=1 * brian2.mV), nm.ValidationError,
     r"Learner\.tol: is dimensionless"),
    ("data in mV", lambda: _run(x=X * brian2.mV), nm.ValidationError,
     r"Learner\.run\.x: is dimensionless: .*\(got a Brian2 quantity of shape \(\d+, \d+\) "
     r"in mV\)$"),
    ("tau_synapse in mV", lambda: _net(tau_synapse=10 * brian2.mV), nm.ValidationError,
     r"RateNetwork\.tau_synapse: must have units of time \(got 10\. \* mvolt\)"),
    ("dt an array of times", lambda: nm.Learner(dt=[1, 2] * brian2.ms), nm.ValidationError,
     r"Learner\.dt: must be one time, not an array"),
    ("DualSystem weights=nan", lambda: nm.DualSystem([2, 3, 1], weights=np.nan),
     nm.ValidationError, r"DualSystem\.weights\[0\]: must contain only finite values"),
    ("DualSystem weights NaN array", lambda: nm.DualSystem(
        [2, 3, 1], weights=np.full((3, 2), np.nan)), nm.ValidationError,
     r"DualSystem\.weights\[0\]: must contain only finite values"),
    ("DualSystem readout inf", lambda: nm.DualSystem([2, 3, 1], readout=np.inf),
     nm.ValidationError, r"DualSystem\.readout: must contain only finite values"),
    ("CML beta 1e-320", lambda: nm.CML(beta=1e-320), nm.ValidationError,
     r"CML\.beta: must be at least 1e-12 in magnitude.*\(got 1e-320\)"),
    ("adam b1=1", lambda: _adam_step(b1=1.0), nm.ValidationError,
     r"adam\.b1: must be < 1\.0 \(got 1\.0\)"),
    ("adam b2=1", lambda: _adam_step(b2=1.0), nm.ValidationError, r"adam\.b2: must be < 1"),
    ("adam eps=0", lambda: _adam_step(eps=0.0), nm.ValidationError, r"adam\.eps: must be > 0"),
    ("adam eps inf", lambda: _adam_step(eps=np.inf), nm.ValidationError,
     r"adam\.eps: must be finite"),
    ("adam lr nan", lambda: nm.optim.adam(np.nan), nm.ValidationError,
     r"adam\.learning_rate: must be finite"),
    ("sgd momentum=1", lambda: nm.optim.sgd(0.1, momentum=1.0), nm.ValidationError,
     r"sgd\.momentum: must be < 1\.0"),
    ("sgd lr=0", lambda: nm.optim.sgd(0.0), nm.ValidationError,
     r"sgd\.learning_rate: must be > 0"),
    ("clip max_norm inf", lambda: nm.optim.clip_by_global_norm(np.inf), nm.ValidationError,
     r"clip_by_global_norm\.max_norm: must be finite"),
    ("update overflows", lambda: nm.optim.apply_updates(NET.theta, nm.optim.sgd(1e308).update(
        nm.optim.tree_map(lambda a: np.full(a.shape, 1e10), NET.theta), {})[0]),
     nm.SimulationError, r"sgd\.update: the update of omega\[0\] overflowed from finite "
     r"gradients.*Hint"),
    ("Activation not callable", lambda: nm.Activation("x", 5, 6, 7, "v"), nm.ValidationError,
     r"Activation\.f: must be callable \(a function of a numpy array of pre-activations v\) "
     r"\(got 5\)"),
    ("Activation nameless", lambda: nm.Activation(5, np.tanh, np.tanh, np.tanh, "v"),
     nm.ValidationError, r"Activation\.name: must be a non-empty string \(got 5\)"),
    ("Activation expr", lambda: nm.Activation("x", np.tanh, np.tanh, np.tanh, None),
     nm.ValidationError, r"Activation\.brian2_expr: must be a string .*\(got None\)"),
    ("dt_for no net", lambda: nm.Learner().dt_for(None), nm.ValidationError,
     r"Learner\.dt_for\.net: .*\(got None"),
    ("dt_for inp junk", lambda: nm.Learner().dt_for(NET, inp=X), nm.ValidationError,
     r"Learner\.dt_for\.inp: must be None or a phase's input \(from Learner\.phase_input\) "
     r"\(got array"),
    ("phase_spec inp junk", lambda: FAST.phase_spec(NET, 5), nm.ValidationError,
     r"Learner\.phase_spec\.inp: must be a phase's input .*\(got 5\)"),
    ("phase_spec beta text", lambda: FAST.phase_spec(NET, FAST.phase_input(NET, X, Y)[0],
                                                     beta="a"), nm.ValidationError,
     r"Learner\.phase_spec\.beta: must be a real number \(got 'a'\)"),
    ("phase_spec beta huge", lambda: FAST.phase_spec(NET, FAST.phase_input(NET, X, Y)[0],
                                                     beta=1e300), nm.ValidationError,
     r"Learner\.phase_spec\.beta: must be <= 1000000\.0 \(got 1e\+300\)"),
    ("DualSystem.params int", lambda: DUAL.params(5), nm.ValidationError,
     r"DualSystem\.params\.fast: must be a list of \d+ arrays .*\(got int\)"),
    ("DualSystem.params wrong shapes", lambda: DUAL.params([1, 2]), nm.ValidationError,
     r"DualSystem\.params\.fast: must be a list of \d+ arrays"),
    ("DualSystem.params nan", lambda: DUAL.params([np.full(np.shape(p), np.nan)
                                                   for p in DUAL.phi0]), nm.ValidationError,
     r"DualSystem\.params\.fast\[gain\[0\]\]: must contain only finite values"),
    ("regret ragged arms", lambda: nm.WheelBandit().regret(np.zeros((2, 2)), 0.5, [[0], [1, 2]]),
     nm.ValidationError, r"WheelBandit\.regret\.arms: must be integers in \[0, 5\) of shape "
     r"\(2,\) \(got \[\[0\], \[1, 2\]\]\)"),
    ("online CE ragged y", lambda: __import__("neuro_meta.vsml").vsml.online_cross_entropy(
        np.zeros((2, 3)), [[0], [1, 2]]), nm.ValidationError,
     r"online_cross_entropy\.y: must be integers in \[0, 3\) of shape \(2,\)"),
    ("online CE overflows", lambda: __import__("neuro_meta.vsml").vsml.online_cross_entropy(
        np.array([[1e308, -1e308, 0.0]]), [1]), nm.SimulationError,
     r"online_cross_entropy: the cross-entropy overflowed for finite logits \(largest "
     r"magnitude 1e\+308\).*Hint"),
    ("predict task axes differ", lambda: nm.RateNetwork([1, 4, 1]).predict(
        np.zeros((2, 3, 1)), phi=[np.zeros((3, 4, 2)), np.zeros((3, 1, 5))]),
     nm.ValidationError, r"RateNetwork\.forward\.x: must have leading \(task\) axes that "
     r"match phi\[0\]'s \(3,\) .*\(got shape \(2, 3, 1\)\)"),
    ("WarpNetwork task axes differ", lambda: nm.WarpNetwork([1, 4, 1]).predict(
        np.zeros((2, 3, 1)), phi=[np.zeros((3, 4, 2)), np.zeros((3, 1, 5))]),
     nm.ValidationError, r"WarpNetwork\.predict\.x: must have leading \(task\) axes"),
    ("WarpGrad.predict task axes differ", lambda: nm.WarpGrad().predict(
        nm.WarpGrad(inner_steps=1).adapt(__import__("neuro_meta.warpgrad").warpgrad
                                         .init_warped_mlp([1, 6, 1]), np.zeros((3, 4, 1)),
                                         np.zeros((3, 4, 1))), np.zeros((2, 5, 1))),
     nm.ValidationError, r"WarpGrad\.predict\.x: must have 3 tasks \(the params' task "
     r"axis\) \(got shape \(2, 5, 1\)\)"),
    ("with_theta mistyped key", lambda: NET.with_theta({**NET.theta, "omgea": [None]}),
     nm.ValidationError, r"RateNetwork\.with_theta\.theta: must have only the keys "
     r"\['omega', 'lam', 'omega_bias', 'lam_bias'\] \(like net\.theta\) \(got also 'omgea'\)"),
    ("beta huge int", lambda: nm.CML(beta=10 ** 400), nm.ValidationError,
     r"CML\.beta: must be finite \(an integer beyond the float range\) \(got an integer "
     r"of about 1e400\)"),
    ("dt huge negative int", lambda: nm.Learner(dt=-10 ** 400), nm.ValidationError,
     r"Learner\.dt: must be finite .*\(got an integer of about -1e400\)"),
    ("omega a timedelta", lambda: nm.ComplexSynapse(omega=np.timedelta64(5, "s")),
     nm.ValidationError, r"ComplexSynapse\.omega: must be plain numbers \(a time or date "
     r"would lose its unit.*\(got timedelta64 of dtype timedelta64\[s\]\)"),
    ("apply_updates overflows", lambda: nm.optim.apply_updates(*[nm.optim.tree_map(
        lambda a: np.full(a.shape, 1.5e308), NET.theta)] * 2),
     nm.SimulationError, r"apply_updates: omega\[0\] is not finite after the update.*Hint"),
    ("sgd nan grads", lambda: nm.optim.sgd(0.1).update(nm.optim.tree_map(
        lambda a: np.full(a.shape, np.nan), NET.theta), {}), nm.SimulationError,
     r"sgd\.update: grads\.omega\[0\] holds NaN or inf \(first nan at index \(0, 0\)\).*Hint"),
    ("sgd momentum inf grads", lambda: (lambda o: o.update(nm.optim.tree_map(
        lambda a: np.full(a.shape, -np.inf), NET.theta), o.init(NET.theta)))(
        nm.optim.sgd(0.1, momentum=0.9)), nm.SimulationError,
     r"sgd\.update: grads\.omega\[0\] holds NaN or inf \(first -inf.*Hint"),
    ("clip nan grads", lambda: nm.optim.clip_by_global_norm(1.0).update(nm.optim.tree_map(
        lambda a: np.full(a.shape, np.nan), NET.theta), {}), nm.SimulationError,
     r"clip_by_global_norm\.update: grads\.omega\[0\] holds NaN or inf.*Hint"),
    ("adam nan grads", lambda: (lambda o: o.update(nm.optim.tree_map(
        lambda a: np.full(a.shape, np.nan), NET.theta), o.init(NET.theta)))(
        nm.optim.adam(0.1)), nm.SimulationError,
     r"adam\.update: grads\.omega\[0\] holds NaN or inf.*Hint"),
    ("dt > duration", lambda: nm.Learner(dt=1.0, duration=0.001), nm.ValidationError,
     r"Learner\.dt: must be <= duration \(0\.001 s\).*\(got 1\.0\)"),
    ("dt > max_duration", lambda: nm.Learner(dt=1.0, tol=1e-6, max_duration=0.5),
     nm.ValidationError, r"Learner\.dt: must be <= max_duration"),
    ("automatic dt > duration", lambda: _run(nm.Learner(duration=1e-4)), nm.ValidationError,
     r"Learner\.duration: is shorter than one time step \(dt = 0\.05 s, the automatic"),
    # --- hangs
    ("scipy on data x 1e50 (automatic dt)", lambda: _run(
        nm.Learner(integrator="scipy", duration=1.0), x=X * 1e50, y=Y * 1e50),
     nm.ValidationError, r"Learner\.duration: 1 s needs \d\.\d+e\+\d+ steps .*rescale the data"),
    ("scipy, stiff, RK45", lambda: _run(nm.Learner(
        integrator="scipy", dt=0.01, duration=100.0, scipy_method="RK45"),
        x=X * 1e3, y=Y * 1e3), nm.SimulationError,
     r"solve_ivp \(RK45\) stopped at t = .* after 1e\+05 right-hand-side evaluations.*Hint"),
    ("tau_neuron 1e-9", lambda: _run(nm.Learner(), net=nm.RateNetwork(
        [2, 1], tau_neuron=1e-9, seed=0)), nm.ValidationError,
     r"Learner\.max_duration: 1000 s \(default 1000 tau\) needs 1e\+13 steps of dt = 1e-10"),
    ("tau_synapse 1e6, dt 0.01", lambda: _run(nm.Learner(dt=0.01, tol=1e-8),
                                             net=nm.RateNetwork([2, 1], tau_synapse=1e6)),
     nm.ValidationError, r"Learner\.max_duration: 1e\+09 s .*needs 1e\+11 steps"),
    ("recorded phase with settle='solve'", lambda: _run(
        nm.Learner(settle="solve", dt=1e-10, tol=1e-8), record="phi"), nm.ValidationError,
     r"Learner\.max_duration: .*needs 1e\+13 steps"),
    ("solver hands over an absurd phase", lambda: _run(
        nm.Learner(settle="solve", dt=1e-10, tol=1e-30)), nm.SimulationError,
     r"the phase solver did not settle 1 task\(s\) .*integrating them would take up to "
     r"1e\+13 steps.*Hint"),
    # --- a second hostile user (2026-12-07)
    ("network: every connection fits, the model does not",
     lambda: nm.RateNetwork([20000] * 10), nm.ValidationError,
     r"RateNetwork\.sizes: would need an array of 3600180000 parameters x 3 .* bytes"),
    ("init_mlp of 14 GB", lambda: nm.baselines.init_mlp([30000, 30000, 30000]),
     nm.ValidationError, r"init_mlp\.sizes: would need an array of 1800060000 weights"),
    ("MAML inner_steps 1e9", lambda: nm.baselines.MAML(inner_steps=10 ** 9),
     nm.ValidationError, r"MAML\.inner_steps: must be <= 1000000 \(got 1000000000\)"),
    ("MAML.adapt inner_steps 1e9", lambda: nm.baselines.MAML().adapt(
        nm.baselines.init_mlp([2, 1]), X, Y, inner_steps=10 ** 9), nm.ValidationError,
     r"MAML\.adapt\.inner_steps: must be <= 1000000"),
    ("iMAML cg_steps 1e9", lambda: nm.baselines.IMAML(cg_steps=10 ** 9), nm.ValidationError,
     r"IMAML\.cg_steps: must be <= 1000000"),
    ("MLP weights in mV", lambda: nm.baselines.MAML().meta_gradient(
        {"w": [nm.baselines.init_mlp([2, 1])["w"][0] * brian2.mV], "b": [np.zeros(1)]},
        TASK), nm.ValidationError, r"MAML\.params\['w'\]\[0\]: is dimensionless.*mV"),
    ("mlp_loss targets 1e200", lambda: nm.baselines.mlp_loss(
        nm.baselines.init_mlp([2, 1]), X, np.full((3, 1), 1e200)), nm.ValidationError,
     r"mlp_loss\.y: must be at most 1e\+100 in magnitude"),
    ("mlp_loss overflows", lambda: nm.baselines.mlp_loss(
        {"w": [np.full((1, 2), 1e200)], "b": [np.zeros(1)]}, X, Y), nm.SimulationError,
     r"mlp_loss: the loss overflowed .*Hint.*rescale"),
    ("mlp_grad overflows", lambda: nm.baselines.mlp_grad(
        {"w": [np.full((1, 2), 1e200)], "b": [np.zeros(1)]}, X, Y), nm.SimulationError,
     r"mlp_grad: the loss overflowed"),
    ("lam=True", lambda: nm.ComplexSynapse(lam=True), nm.ValidationError,
     r"ComplexSynapse\.lam: must be a number, not a boolean \(got True\)"),
    ("omega=np.True_", lambda: nm.ComplexSynapse(omega=np.True_), nm.ValidationError,
     r"ComplexSynapse\.omega: must be a number, not a boolean"),
    ("ci95 of nothing", lambda: _ci95([]), nm.ValidationError,
     r"seeds\.ci95\.values: must hold at least one value"),
    ("ci95 with a NaN", lambda: _ci95([1.0, float("nan")]), nm.ValidationError,
     r"seeds\.ci95\.values: must contain only finite values"),
    ("ci95 complex", lambda: _ci95([1 + 1j, 2.0]), nm.ValidationError,
     r"seeds\.ci95\.values: must be real numbers"),
    ("MetaTrainer optimizer 'adam'", lambda: nm.MetaTrainer(
        NET, LinearTeacher(n_in=2, n_out=1), nm.CML(beta=0.1), optimizer="adam"),
     nm.ValidationError, r"MetaTrainer\.optimizer: must be a gradient transformation"),
    ("MetaTrainer family whose sample is no Task", lambda: nm.MetaTrainer(
        NET, _NoTasks(), nm.CML(beta=0.1)), nm.ValidationError,
     r"MetaTrainer\.family: must return a Task from sample\(rng, n_tasks\) \(got "
     r"_NoTasks\.sample returned int\)"),
    ("MetaTrainer.train resume='no'", lambda: _trainer().train(1, resume="no"),
     nm.ValidationError, r"MetaTrainer\.train\.resume: must be True or False \(got 'no'\)"),
    ("MetaTrainer.train progress='no'", lambda: _trainer().train(1, progress="no"),
     nm.ValidationError, r"MetaTrainer\.train\.progress: must be True or False"),
    ("MetaTrainer.train checkpoint=123", lambda: _trainer().train(1, checkpoint=123),
     nm.ValidationError, r"MetaTrainer\.train\.checkpoint: must be a path .* \(got int\)"),
    ("MetaTrainer.meta_gradient('x')", lambda: _trainer().meta_gradient("x"),
     nm.ValidationError, r"MetaTrainer\.meta_gradient\.task: must be a Task \(got str\)"),
    ("MetaTrainer.evaluate(net='x')", lambda: _trainer().evaluate(net="x"),
     nm.ValidationError, r"MetaTrainer\.evaluate\.net: must be a model kind"),
    ("CML.estimate names itself", lambda: nm.CML(beta=0.1).estimate(NET, "x"),
     nm.ValidationError, r"^CML\.estimate\.task: must be a Task \(got str\)"),
    ("CML.meta_gradient names itself", lambda: nm.CML(beta=0.1).meta_gradient(NET, "x"),
     nm.ValidationError, r"^CML\.meta_gradient\.task: must be a Task"),
    ("Task without features", lambda: nm.Task(np.ones((3, 0)), Y, np.ones((3, 0)), Y),
     nm.ValidationError, r"Task\.x_train: needs at least one feature per sample"),
    ("Task without outputs", lambda: nm.Task(X, np.ones((3, 0)), X, np.ones((3, 0))),
     nm.ValidationError, r"Task\.y_train: needs at least one output per sample"),
    ("x_val garbage with beta 0", lambda: _run(x_val="garbage", y_val=Y),
     nm.ValidationError, r"Learner\.run\.x_val: must be convertible"),
    ("x_val without y_val, beta 0", lambda: _run(x_val=X), nm.ValidationError,
     r"Learner\.run\.y_val: must be given with x_val"),
    ("describe with x but no y", lambda: FAST.describe(NET, X), nm.ValidationError,
     r"Learner\.describe\.y: must be given with x"),
    ("ES pairs 1e12 (minutes of seeds, then memory)", lambda: nm.vsml.es_gradient(
        lambda t, s: (t ** 2).sum(1), np.zeros(4), 0.1, 10 ** 12), nm.ValidationError,
     r"es_gradient\.pairs: must be <= 1000000"),
    ("ES objective with complex losses", lambda: nm.vsml.es_gradient(
        lambda t, s: (t ** 2).sum(1) + 1j * t[:, 0], np.ones(4), 0.1, 2), nm.ValidationError,
     r"es_gradient\.objective: must return real, dimensionless losses"),
    ("ES objective with losses in mV", lambda: nm.vsml.es_gradient(
        lambda t, s: (t ** 2).sum(1) * brian2.mV, np.ones(4), 0.1, 2), nm.ValidationError,
     r"es_gradient\.objective: must return real, dimensionless losses"),
    ("centered_ranks of a NaN", lambda: nm.vsml.centered_ranks([1.0, np.nan, 0.0]),
     nm.ValidationError, r"centered_ranks\.losses: must contain only finite values"),
    ("run_seeds with a repeated seed", lambda: _seeds().run_seeds(
        lambda *a, **k: None, "unused", [1, 1]), nm.ValidationError,
     r"run_seeds\.seeds: must be distinct"),
    ("run_seeds run=None", lambda: _seeds().run_seeds(None, "unused", [0]),
     nm.ValidationError, r"run_seeds\.run: must be an experiment's run function .*"
     r"\(got None\)"),
    ("run_seeds seeds=3", lambda: _seeds().run_seeds(lambda *a, **k: None, "unused", 3),
     nm.ValidationError, r"run_seeds\.seeds: must be a list of seeds"),
    ("sinusoid.run quick='no'", lambda: _exp("sinusoid").run("unused", quick="no"),
     nm.ValidationError, r"run sinusoid\.quick: must be True or False \(got 'no'\)"),
    ("omniglot.run cfg='junk'", lambda: _exp("omniglot").run("unused", cfg="junk"),
     nm.ValidationError, r"run omniglot\.cfg: must be None"),
    ("gradcheck.run out_dir=5", lambda: _exp("gradcheck").run(5), nm.ValidationError,
     r"run gradcheck\.out_dir: must be a folder's path"),
    ("sinusoid.run overrides one string", lambda: _exp("sinusoid").run(
        "unused", quick=True, overrides="meta.seed=1"), nm.ValidationError,
     r"run sinusoid\.overrides: must be a list of 'KEY\.PATH=VALUE' strings \(got "
     r"'meta\.seed=1'\)"),
    ("bandit.run executor typo", lambda: _exp("bandit").run("unused", executor="x"),
     nm.ValidationError, r"run bandit\.executor: must be None, a concurrent\.futures\."
     r"Executor or a dask\.distributed\.Client \(got 'x'\)"),
    ("bandit.run overrides int", lambda: _exp("bandit").run("unused", overrides=5),
     nm.ValidationError, r"run bandit\.overrides: must be a list .*\(got 5\)"),
    ("vsml.run overrides list of int", lambda: _exp("vsml").run("unused", overrides=[1]),
     nm.ValidationError, r"run vsml\.overrides: must be a list .*\(got \[1\]\)"),
    ("consolidation.run out_dir a file", lambda: _exp("consolidation").run(__file__),
     nm.ValidationError, r"run consolidation\.out_dir: must be a folder \(or a path where "
     r"one can be made\) \(got '.*test_doors\.py': an existing file\)"),
    ("omniglot.run out_dir under a file", lambda: _exp("omniglot").run(__file__ + "/sub"),
     nm.ValidationError, r"run omniglot\.out_dir: must be a folder .*under the file "
     r"'.*test_doors\.py'\)"),
    ("Neumann series diverging", lambda: _E().neumann_series(
        lambda v: 2 * v, np.ones((1, 2)), 2000, np.full(1, 5.0)), nm.SimulationError,
     r"neumann_series: the series diverged at term \d+ .*Hint: alpha must be below 2"),
    ("CG with a NaN product", lambda: _E().conjugate_gradient(
        lambda v: v * np.nan, np.ones((2, 3)), 3), nm.SimulationError,
     r"conjugate_gradient: a product A v is not finite.*Hint"),
    ("power iteration, product of another shape", lambda: _E().power_iteration(
        lambda v: v[:, :1], (2, 3), 5), nm.ValidationError,
     r"power_iteration\.apply: must return a real array of the argument's shape \(2, 3\)"),
    ("relative_error of a NaN gradient", lambda: _E().relative_error(
        {"omega": [np.array([np.nan])]}, {"omega": [np.array([1.0])]}), nm.ValidationError,
     r"relative_error\.g: must be finite"),
    ("VSML state_size 1e9", lambda: nm.vsml.VSML(sizes=(4, 2), state_size=10 ** 9),
     nm.ValidationError, r"VSML\.state_size: would need an array of .* meta-parameters"),
    ("VSML of 1e7 x 1e7 synapses", lambda: nm.vsml.VSML(sizes=(10 ** 7, 10 ** 7)),
     nm.ValidationError, r"VSML\.sizes: would need an array of .* LSTM states"),
    ("VSML cells of 1e18 episodes", lambda: nm.vsml.VSML(sizes=(4, 2)).initial_cells(
        np.random.default_rng(0), (10 ** 9, 10 ** 9)), nm.ValidationError,
     r"VSML\.initial_cells\.lead: would need an array"),
    ("ESTrainer.train progress='yes'", lambda: _es().train(1, progress="yes"),
     nm.ValidationError, r"ESTrainer\.train\.progress: must be True or False"),
    ("ESTrainer.train checkpoint=5", lambda: _es().train(1, checkpoint=5),
     nm.ValidationError, r"ESTrainer\.train\.checkpoint: must be a path"),
    ("predict at phi in mV", lambda: NET.predict(X, [NET.phi0[0] * brian2.mV]),
     nm.ValidationError, r"RateNetwork\.forward\.phi\[0\]: is dimensionless"),
    ("dual system's fast variables in mV", lambda: DUAL.predict(
        X, fast=[a * brian2.mV for a in DUAL.phi0]), nm.ValidationError,
     r"DualSystem\.forward\.fast\[gain\[0\]\]: is dimensionless"),
    ("member_seeds of a float seed", lambda: nm.vsml.member_seeds(1.7, 0, 2),
     nm.ValidationError, r"member_seeds\.seed: must be an integer \(got 1\.7\)"),
    ("ES of an empty theta", lambda: nm.vsml.es_gradient(
        lambda t, s: t.sum(1), np.zeros(0), 0.1, 2), nm.ValidationError,
     r"es_gradient\.theta: must hold at least one meta-parameter"),
    ("an engine that does not exist", lambda: _engines().plan("bogus", NET, None, None),
     nm.ValidationError, r"engines\.plan\.requested: must be one of 'auto'"),
    ("MAML's inner loop exploding without overflowing", lambda: nm.baselines.MAML(
        inner_lr=1e12, inner_steps=10).meta_gradient(
        nm.baselines.init_mlp([1, 8, 1]), Sinusoid().sample(np.random.default_rng(0), 2)),
     nm.SimulationError, r"MAML: the inner loop diverged at inner step \d+ .*beyond "
     r"1e\+100.*Hint"),
    ("WarpGrad's inner loop exploding", lambda: nm.warpgrad.WarpGrad(
        inner_lr=1e12, inner_steps=10).meta_gradient(
        nm.warpgrad.init_warped_mlp([1, 8, 1], 0),
        Sinusoid().sample(np.random.default_rng(0), 2)), nm.SimulationError,
     r"the inner loop diverged .*beyond 1e\+100.*Hint"),
    ("train_baseline progress='no'", lambda: nm.baselines.train_baseline(
        nm.baselines.MAML(), nm.baselines.init_mlp([2, 1]), LinearTeacher(n_in=2, n_out=1),
        1, progress="no"), nm.ValidationError,
     r"train_baseline\.progress: must be True or False"),
]


def _es():
    return nm.vsml.ESTrainer(lambda t, s: (t ** 2).sum(1), np.ones(3), pairs=2)


def _engines():
    from neuro_meta import engines
    return engines


def _seeds():
    from neuro_meta.experiments import seeds
    return seeds


def _exp(name):
    import importlib
    return importlib.import_module(f"neuro_meta.experiments.{name}")


def _E():
    from neuro_meta import estimators
    return estimators


def _ci95(values):
    from neuro_meta.experiments.seeds import ci95
    return ci95(values)


class _NoTasks:
    def sample(self, rng, n_tasks):
        return 3


def _trainer():
    return nm.MetaTrainer(NET, LinearTeacher(n_in=2, n_out=1, shots=3, val=3),
                          nm.CML(beta=0.1), eval_tasks=2)


#: CPU seconds after which a refusal counts as a hang (6x the slowest case alone).
HANG_CPU_S = 60.0


@pytest.mark.parametrize("action, error, pattern", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused(action, error, pattern):
    t0 = time.process_time()
    with pytest.raises(error) as info:
        action()
    assert re.search(pattern, str(info.value)), str(info.value)
    check_error(info.value)           # names the attribute and shows the value / a hint
    # a hang guard, not a timing test: the slowest case (stiff RK45, stopped after its
    # 1e5 right-hand-side evaluations, which the message states) takes about 10 s of CPU
    # time; the process's CPU time does not grow with other jobs' load as wall time does
    assert time.process_time() - t0 < HANG_CPU_S, "a refusal must not take long"


def test_documented_limits():
    assert MAX_PHASE_STEPS == 10 ** 8
    assert MAX_SUBSTEPS == 10 ** 4
    assert MAX_SCIPY_EVALUATIONS == 10 ** 5
    assert nm.cml.BETA_MIN == 1e-12


# ------------------------------------------------------------------ valid input unchanged
def test_valid_inputs_still_work():
    """The limits leave ordinary use alone: the same numbers as before."""
    # dt equal to the duration, times as Brian2 quantities, one step
    res = nm.Learner(dt=10 * brian2.ms, duration=0.01).run(NET, X, Y)
    assert res.steps == 1 and res.t_end == pytest.approx(0.01)
    # a dimensionless Brian2 value is a number
    syn = nm.ComplexSynapse(omega=(10 * brian2.mV) / (5 * brian2.mV))
    assert float(syn.omega) == 2.0
    # the extreme admissible beta and optimiser hyper-parameters give finite numbers
    for beta in (1e-12, -1e-12, 1e6):
        g = nm.CML(beta=beta, estimator="standard").meta_gradient(NET, TASK)
        assert_finite(g)
    updates, _ = _adam_step(b1=0.0, b2=0.0)
    assert_finite(updates)
    # a settling phase solved by the phase solver is not bound by the step maximum
    res = nm.Learner(settle="solve", dt=1e-10, tol=1e-8).run(NET, X, Y)
    assert res.settled and res.engine == "solver"
    # the exact reference with lam > 0 and few shots is regular
    g = _exact(_net((3, 1), lam=0.1), nm.Task(X[:1].repeat(2, 1)[:, :3], Y[:1],
                                              X[:1].repeat(2, 1)[:, :3], Y[:1]))
    assert_finite(g)


def test_numbers_unchanged_by_validation():
    """A phase, predict and with_theta give bit-identical results through the new checks
    (the data go through the same float64 conversion as before)."""
    res = FAST.run(NET, X.tolist(), Y.tolist())
    ref = FAST.run(NET, X, Y)
    assert np.array_equal(res.phi_aug[0], ref.phi_aug[0])
    phi = [np.asarray(p) for p in ref.phi_aug]
    w, b = phi[0][..., :2], phi[0][..., 2]
    assert np.array_equal(NET.predict(X, phi), X @ w.T + b)
    net2 = NET.with_theta(NET.theta)
    assert np.array_equal(net2.connections[0].omega, NET.connections[0].omega)


# ------------------------------------------------------------------ the fuzz
# Junk for every door: None, text, NaN, inf, complex numbers and arrays, huge and
# negative integers, Brian2 quantities (of time and of other dimensions), nested and
# ragged lists, objects (and the shared junk of test_properties).
JUNK = st.one_of(
    junk, floats, st.integers(-10 ** 30, 10 ** 30),
    st.sampled_from([None, "", "1.5", "abc", np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324,
                     1e-320, 10 ** 30, 2 ** 63, -(10 ** 30), -1, -1.5, 0, 0.0, 1j, 1 + 2j,
                     np.complex128(1), np.array([1 + 1j]), np.ones((2, 2)) * 1j,
                     [[1.0, [2.0]]], [[1.0, 2.0], [3.0]], [[[]]], (), {}, {"a": 1},
                     np.array([]), np.zeros((0, 2)), np.array(["x"]), np.array([True]),
                     np.array([np.nan]), b"1", object(), type]),
    st.sampled_from([10 * brian2.mV, 5 * brian2.ms, 1 * brian2.second, 3 * brian2.Hz,
                     [1, 2] * brian2.ms, np.ones((2, 2)) * brian2.mV, [1 * brian2.mV],
                     (10 * brian2.mV) / brian2.mV, np.nan * brian2.ms,
                     -1 * brian2.second, 1e100 * brian2.second]))
value = st.one_of(JUNK, reals, st.integers(-3, 5))
#: Generated cases per fuzz test: 200 for the doors that only validate, 100 for those
#: that run phases (CML, the exact reference, scaled data): 2100 cases in all.
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
FUZZ_RUNS = settings(FUZZ, max_examples=100)


def _finite_result(out):
    """Any result holds finite numbers only."""
    if isinstance(out, nm.LearningResult):
        assert_finite([out.phi_aug, out.v, out.record, out.t])
        assert np.isfinite(out.t_end)
    elif isinstance(out, nm.Task):
        assert_finite([out.x_train, out.y_train, out.x_val, out.y_val])
    elif isinstance(out, tuple) and out and hasattr(out[0], "keys"):
        assert_finite(list(out[:1]))
    elif out is not None and not callable(out) and not hasattr(out, "__dict__"):
        assert_finite(out)


def _moderate(phi):
    """No fast variables given, or all finite and below the divergence bound."""
    return phi is None or all(np.all(np.abs(np.asarray(p, dtype=float)) < 1e10)
                              for p in phi)


def _try(fn):
    out, err = attempt(fn)
    _finite_result(out)
    return out, err


@FUZZ
@given(kw=st.fixed_dictionaries({}, optional={
    k: mostly(v, JUNK) for k, v in {
        "dt": st.sampled_from([None, 0.01, 0.05, 1e-3 * brian2.second]),
        "duration": st.sampled_from([None, 0.1, 0.5]),
        "tol": st.sampled_from([None, 1e-6, 1e-3]),
        "max_duration": st.sampled_from([None, 1.0, 5.0]),
        "presentation_time": st.sampled_from([None, 0.05]),
        "substeps": st.sampled_from([1, 2, "auto"]),
        "max_substeps": st.sampled_from([4, 64]),
        "integrator": st.sampled_from(["euler", "expeuler", "rk4", "scipy"]),
        "presentation": st.sampled_from(["batch", "online"]),
        "settle": st.sampled_from(["integrate", "solve"]),
        "scipy_rtol": st.sampled_from([1e-6, 1e-8]),
        "engine": st.sampled_from(["auto", "numpy"]),
    }.items()}))
def test_fuzz_learner(kw):
    """Learner(**junk): refused, or a phase whose step count is checked before it runs
    (and, when short, that runs to finite numbers)."""
    learner, _ = _try(lambda: nm.Learner(**kw))
    if learner is None:
        return
    spec, _ = _try(lambda: learner.phase_spec(NET, learner.phase_input(NET, X, Y)[0]))
    if spec is not None:
        sub = learner.substeps if isinstance(learner.substeps, int) else 8
        assert spec.n_max * sub <= MAX_PHASE_STEPS or learner.settle == "solve"
        if spec.n_max * sub <= 2000 and spec.integrator != "scipy":
            _try(lambda: learner.run(NET, X, Y))


@FUZZ
@given(x=mostly(st.sampled_from([X, X[None], X.tolist()]), st.one_of(JUNK, small_arrays())),
       y=mostly(st.sampled_from([Y, Y[None]]), JUNK), record=mostly(st.just(()), JUNK),
       record_every=mostly(st.just(1), JUNK), beta=mostly(st.floats(-0.1, 0.1), JUNK),
       phi_init=mostly(st.just(None), st.one_of(JUNK, st.lists(JUNK, max_size=2))))
def test_fuzz_learner_run(x, y, record, record_every, beta, phi_init):
    _try(lambda: FAST.run(NET, x, y, record=record, record_every=record_every, beta=beta,
                          x_val=X, y_val=Y, phi_init=phi_init))


@FUZZ
@given(omega=value, lam=value, phi0=st.one_of(st.none(), value), omega_bias=value,
       lam_bias=st.one_of(st.none(), value), weight=value, bias=value)
def test_fuzz_synapses(omega, lam, phi0, omega_bias, lam_bias, weight, bias):
    syn, _ = _try(lambda: nm.ComplexSynapse(omega=omega, lam=lam, phi0=phi0,
                                            omega_bias=omega_bias, lam_bias=lam_bias))
    if syn is not None:
        net, _ = _try(lambda: nm.RateNetwork([2, 1], synapse=syn, seed=0))
        if net is not None:
            assert_finite(net.theta)
    _try(lambda: nm.StaticSynapse(weight=weight, bias=bias))


@FUZZ
@given(sizes=mostly(st.lists(st.integers(1, 3), min_size=2, max_size=3),
                    st.one_of(JUNK, st.lists(JUNK, min_size=2, max_size=3))),
       activation=mostly(st.just("tanh"), JUNK), bias=mostly(st.booleans(), JUNK),
       tau_neuron=mostly(st.sampled_from([0.0, 0.01, 5 * brian2.ms]), JUNK),
       tau_synapse=mostly(st.sampled_from([1.0, 1 * brian2.second]), JUNK),
       seed=mostly(st.integers(0, 3), JUNK))
def test_fuzz_rate_network(sizes, activation, bias, tau_neuron, tau_synapse, seed):
    net, _ = _try(lambda: nm.RateNetwork(sizes, activation=activation, bias=bias,
                                         tau_neuron=tau_neuron, tau_synapse=tau_synapse,
                                         seed=seed))
    if net is not None:
        assert_finite(net.theta)


@FUZZ
@given(x=mostly(st.sampled_from([X, X[None], X.tolist(), X[0]]), st.one_of(
    JUNK, small_arrays())), phi=mostly(st.just(None), st.one_of(
        JUNK, st.lists(st.one_of(JUNK, small_arrays()), max_size=2))),
       theta=st.one_of(JUNK, st.fixed_dictionaries({k: st.one_of(
           JUNK, st.lists(st.one_of(JUNK, small_arrays()), max_size=2))
           for k in ("omega", "lam", "omega_bias", "lam_bias")})),
       dual=st.booleans())
def test_fuzz_model_methods(x, phi, theta, dual):
    """predict / forward / with_theta of both kinds."""
    model = DUAL if dual else NET
    out, _ = attempt(lambda: model.predict(x, phi))
    if out is not None and _moderate(phi):
        assert_finite(out)      # the values of phi are the caller's (see check_phi)
    _try(lambda: model.forward(x))
    if dual and isinstance(theta, dict) and "omega" in theta:
        theta = {"W": theta["omega"], "gain": theta["lam"], "bias": theta["omega_bias"],
                 "readout": theta["lam_bias"]}
    new, _ = _try(lambda: model.with_theta(theta))
    if new is not None:
        assert_finite(new.theta)


@FUZZ
@given(sizes=mostly(st.just([2, 3, 1]), st.one_of(JUNK, st.lists(JUNK, min_size=3,
                                                                  max_size=3))),
       lam=mostly(st.just(1.0), JUNK), tau_fast=mostly(st.just(1.0), JUNK),
       weights=mostly(st.just(None), JUNK), gain=mostly(st.just(1.0), JUNK),
       bias=mostly(st.just(0.0), JUNK), readout=mostly(st.just(None), JUNK),
       seed=mostly(st.just(0), JUNK))
def test_fuzz_dual_system(sizes, lam, tau_fast, weights, gain, bias, readout, seed):
    model, _ = _try(lambda: nm.DualSystem(sizes, lam=lam, tau_fast=tau_fast,
                                          weights=weights, gain=gain, bias=bias,
                                          readout=readout, seed=seed))
    if model is not None:
        assert_finite(model.theta)


@FUZZ
@given(arrays=st.lists(mostly(st.sampled_from([X, Y, X[None], Y[None]]),
                              st.one_of(JUNK, small_arrays())), min_size=4, max_size=4))
def test_fuzz_task(arrays):
    _try(lambda: nm.Task(*arrays))


@FUZZ_RUNS
@given(beta=mostly(st.floats(-0.5, 0.5), JUNK),
       estimator=mostly(st.sampled_from(["standard", "symmetric", "second_order"]), JUNK),
       tol=mostly(st.sampled_from([None, 1e-8]), JUNK),
       nudged_duration=mostly(st.sampled_from([None, 0.5]), JUNK),
       learner=mostly(st.just(None), JUNK), run=st.integers(0, 3))
def test_fuzz_cml(beta, estimator, tol, nudged_duration, learner, run):
    cml, _ = _try(lambda: nm.CML(beta=beta, estimator=estimator, tol=tol,
                                 nudged_duration=nudged_duration, learner=learner))
    if cml is not None and run == 0:
        _try(lambda: cml.meta_gradient(NET, TASK))


@FUZZ
@given(lr=mostly(st.floats(1e-4, 1.0), JUNK), b1=mostly(st.floats(0, 0.99), JUNK),
       b2=mostly(st.floats(0, 0.999), JUNK), eps=mostly(st.floats(1e-12, 1e-4), JUNK),
       momentum=mostly(st.floats(0, 0.99), JUNK), max_norm=mostly(st.floats(0.1, 10), JUNK),
       grads=mostly(st.just(NET.theta), st.one_of(JUNK, st.fixed_dictionaries(
           {k: st.lists(st.one_of(JUNK, small_arrays()), max_size=2)
            for k in ("omega", "lam", "omega_bias", "lam_bias")}))))
def test_fuzz_optimisers(lr, b1, b2, eps, momentum, max_norm, grads):
    for make in (lambda: nm.optim.adam(lr, b1=b1, b2=b2, eps=eps),
                 lambda: nm.optim.sgd(lr, momentum=momentum),
                 lambda: nm.optim.clip_by_global_norm(max_norm),
                 lambda: nm.optim.chain(nm.optim.clip_by_global_norm(max_norm),
                                        nm.optim.adam(lr))):
        opt, _ = _try(make)
        if opt is None:
            continue
        state, _ = _try(lambda: opt.init(NET.theta))
        out, _ = _try(lambda: opt.update(grads, state))
        if out is not None:
            _try(lambda: nm.optim.apply_updates(NET.theta, out[0]))


@FUZZ
@given(rng=mostly(st.just(None), JUNK), n_tasks=mostly(st.integers(1, 3), JUNK),
       kw=st.fixed_dictionaries({}, optional={k: JUNK for k in (
           "n_in", "n_out", "shots", "val", "noise_std", "structure_seed")}),
       skw=st.fixed_dictionaries({}, optional={
           "shots": JUNK, "val": JUNK, "amplitude": st.one_of(JUNK, st.tuples(value, value)),
           "x_range": st.one_of(JUNK, st.tuples(value, value))}))
def test_fuzz_families(rng, n_tasks, kw, skw):
    gen = np.random.default_rng(0) if rng is None else rng
    for make in (lambda: LinearTeacher(**kw), lambda: Sinusoid(**skw)):
        fam, _ = _try(make)
        if fam is not None:
            _try(lambda: fam.sample(gen, n_tasks))
    _try(lambda: Sinusoid().sample(gen, n_tasks))
    _try(lambda: LinearTeacher().sample(gen, n_tasks))


@FUZZ_RUNS
@given(method=mostly(st.sampled_from(["auto", "dense", "cg"]), JUNK),
       learner=mostly(st.just(None), JUNK), tol=mostly(st.just(1e-10), JUNK),
       newton_steps=mostly(st.sampled_from([None, 0, 2]), JUNK),
       cg_rtol=mostly(st.just(1e-12), JUNK), reduce=mostly(st.just("mean"), JUNK),
       task=mostly(st.just(TASK), JUNK), lam=st.sampled_from([1.0, 0.1, 0.0]))
def test_fuzz_exact(method, learner, tol, newton_steps, cg_rtol, reduce, task, lam):
    net = NET if lam == 1.0 else _net(lam=lam)
    _try(lambda: nm.exact_meta_gradient(net, task, method=method, learner=learner, tol=tol,
                                        newton_steps=newton_steps, cg_rtol=cg_rtol,
                                        reduce=reduce))


@FUZZ_RUNS
@given(x=mostly(st.just(X), JUNK),
       integrator=st.sampled_from(["euler", "expeuler", "rk4", "scipy"]),
       dt=st.sampled_from([None, 0.01, 0.5]), scale=st.sampled_from([1.0, 1e6, 1e50]))
def test_fuzz_scales(x, integrator, dt, scale):
    """Scaled data and step sizes: refused up front, a SimulationError with a hint, or
    finite results -- and never a long wait."""
    learner, _ = _try(lambda: nm.Learner(integrator=integrator, dt=dt, duration=0.5))
    if learner is None:
        return
    t0 = time.process_time()
    _try(lambda: learner.run(NET, np.asarray(x) * scale if isinstance(x, np.ndarray)
                             else x, Y * scale))
    assert time.process_time() - t0 < HANG_CPU_S


@pytest.mark.parametrize("knobs", [dict(k=-1), dict(k=2.5), dict(alpha=-1.0),
                                   dict(alpha=float("nan")), dict(power_iters=0)])
def test_estimate_checks_its_knobs_before_any_phase(knobs, monkeypatch):
    """A bad knob of estimators.estimate is refused before the learning process runs
    (it was checked after the free phase)."""
    from neuro_meta import estimators

    def phase(*a, **k):
        raise AssertionError("a phase ran before the knobs were checked")

    monkeypatch.setattr(nm.Learner, "run", phase)
    name = "cg" if "k" in knobs else "neumann"
    with pytest.raises(nm.ValidationError, match=r"^estimate\."):
        estimators.estimate(name, NET, TASK, **knobs)
