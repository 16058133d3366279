"""The plotting helpers check what comes in (``neuro_meta.plotting``).

Regression tests for a fuzz run over the public helpers: each bad input is one
``ValidationError`` ``plotting.<function>.<argument>: rule (got value)`` -- never a plot
that is silently wrong (integer indices read as a mask, a dropped imaginary part, a
NaN, a value <= 0 on a log axis, arrays reshaped across their axes) nor an IndexError,
AttributeError or matplotlib's ValueError from inside.
"""
import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import neuro_meta as nm  # noqa: E402
from neuro_meta import plotting  # noqa: E402
from neuro_meta.errors import ValidationError  # noqa: E402

BETAS = [1e-3, 1e-2]
T = np.linspace(0.0, 1.0, 5)
PHI = np.arange(10.0).reshape(5, 2)
MASK = np.array([True, False, True, False])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _model():
    return nm.DualSystem([1, 3, 1], fast=("gain", "readout"), seed=0)


def _phi(model, n_tasks=3):
    return [np.ones((n_tasks,) + np.shape(p0)) for p0 in model.phi0]


def _refused(call, where, rule):
    """``call()`` raises one ValidationError ``plotting.where: ...rule... (got ...)``."""
    with pytest.raises(ValidationError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(f"plotting.{where}: "), msg
    assert re.search(rule, msg), msg
    assert msg.endswith(")") and "(got " in msg, msg
    return msg


# -- the cases the fuzz run found ----------------------------------------------------

def test_integer_indices_are_not_taken_for_a_mask():
    # [0, 1, 1, 0] would select columns 0, 1, 1, 0: the wrong synapses
    msg = _refused(lambda: plotting.parameter_trajectories([0, 1], np.ones((2, 4)),
                                                           {"a": [0, 1, 1, 0]}),
                   "parameter_trajectories.groups['a']", r"must be a boolean mask over the "
                   r"4 synapses .*integer indices are not accepted")
    assert "[0, 1, 1, 0]" in msg
    _refused(lambda: plotting.lambda_by_group([0.1, 0.2, 0.3], {"a": [0, 2]}),
             "lambda_by_group.groups['a']", "boolean mask over the 3 synapses")


def test_a_mask_of_the_wrong_length_is_refused():
    _refused(lambda: plotting.parameter_trajectories([0, 1], np.ones((2, 4)),
                                                     {"a": [True, False]}),
             "parameter_trajectories.groups['a']", r"boolean mask.*\(got shape \(2,\)\)")
    _refused(lambda: plotting.lambda_by_group(np.ones((2, 3)),
                                              {"a": np.ones((3, 2), bool)}),
             "lambda_by_group.groups['a']", r"shape \(2, 3\) or \(6,\)")


def test_complex_errors_are_refused_not_cast():
    _refused(lambda: plotting.gradient_error_vs_beta(BETAS, {"standard": [0.1 + 1j, 0.2]}),
             "gradient_error_vs_beta.errors['standard']", "complex values are not accepted")


def test_lambda_by_group_refuses_nan_negative_lambda_and_bad_bins():
    groups = {"shared": [True, False]}
    _refused(lambda: plotting.lambda_by_group([np.nan, 1.0], groups),
             "lambda_by_group.lam", "finite")
    _refused(lambda: plotting.lambda_by_group([-0.5, 1.0], groups),    # outside the bins
             "lambda_by_group.lam", ">= 0")
    _refused(lambda: plotting.lambda_by_group([0.5, 1.0], groups, bins=0),
             "lambda_by_group.bins", ">= 1")
    _refused(lambda: plotting.lambda_by_group([0.5, 1.0], groups, bins=2.5),
             "lambda_by_group.bins", "integer")


@pytest.mark.parametrize("call, where, rule", [
    (lambda: plotting.gradient_error_vs_tolerance([], {}),
     "gradient_error_vs_tolerance.tols", "must not be empty"),
    (lambda: plotting.gradient_error_vs_tolerance([1e-6], {}),
     "gradient_error_vs_tolerance.errors_by_beta", "at least one entry"),
    (lambda: plotting.phi_trajectories([], [], [], []), "phi_trajectories.t_free",
     "must not be empty"),
    (lambda: plotting.lambda_by_group([], {}), "lambda_by_group.lam", "must not be empty"),
    (lambda: plotting.meta_learning_curves([0, 1, 2], {"cml": [1, 2]}),
     "meta_learning_curves.curves['cml']", r"one value per entry of steps \(3\)"),
    (lambda: plotting.meta_learning_curves([0, 1, 2], None), "meta_learning_curves.curves",
     "must be a dict"),
    (lambda: plotting.gradient_error_vs_beta(BETAS, [[0.1, 0.2]]),
     "gradient_error_vs_beta.errors", "must be a dict"),
    (lambda: plotting.gradient_error_vs_beta([], {"standard": []}),
     "gradient_error_vs_beta.betas", "must not be empty"),
    (lambda: plotting.fast_patterns("x", [], {}), "fast_patterns.model", "model kind"),
], ids=["tolerance-empty", "tolerance-no-beta", "phi-empty", "lambda-empty",
        "curves-length", "curves-None", "beta-list", "beta-empty", "fast-not-a-model"])
def test_malformed_input_is_one_validation_error(call, where, rule):
    _refused(call, where, rule)


# -- log axes --------------------------------------------------------------------------

@pytest.mark.parametrize("call, where", [
    (lambda: plotting.gradient_error_vs_beta([0.0, 1e-2], {"standard": [0.1, 0.2]}),
     "gradient_error_vs_beta.betas"),
    (lambda: plotting.gradient_error_vs_beta(BETAS, {"symmetric": [0.1, -0.2]}),
     "gradient_error_vs_beta.errors['symmetric']"),
    (lambda: plotting.gradient_error_vs_tolerance([0.0, 1e-6], {0.1: [1.0, 2.0]}),
     "gradient_error_vs_tolerance.tols"),
    (lambda: plotting.gradient_error_vs_tolerance([1e-8, 1e-6], {0.1: [0.0, 2.0]}),
     "gradient_error_vs_tolerance.errors_by_beta[0.1]"),
    (lambda: plotting.meta_learning_curves([0, 1], {"cml": [1.0, 0.0]}),
     "meta_learning_curves.curves['cml']"),
], ids=["betas", "errors", "tols", "errors-by-beta", "curves-logy"])
def test_values_on_a_log_axis_must_be_positive(call, where):
    _refused(call, where, r"must be > 0 \(it is drawn on a log axis\)")


def test_the_keys_of_errors_by_beta_are_positive_numbers():
    for key in (0.0, -0.1, "0.1", True, np.nan):
        _refused(lambda: plotting.gradient_error_vs_tolerance([1e-8, 1e-6],
                                                              {key: [1.0, 2.0]}),
                 "gradient_error_vs_tolerance.errors_by_beta", r"values of β as keys")


# -- arrays read across their axes, mismatched phases ----------------------------------

def test_phi_trajectories_refuses_arrays_it_would_reshape_across_axes():
    # (n_synapses, time) has the size of (time, n_synapses): reshaping scrambles it
    _refused(lambda: plotting.phi_trajectories(T, PHI.T, T, PHI),
             "phi_trajectories.phi_free", r"one row per time of t_free \(5\)")
    _refused(lambda: plotting.phi_trajectories(T, PHI, T, np.ones((5, 3))),
             "phi_trajectories.phi_nudged", r"synapses of phi_free \(2\)")
    _refused(lambda: plotting.phi_trajectories(T[::-1], PHI, T, PHI),
             "phi_trajectories.t_free", "non-decreasing")
    _refused(lambda: plotting.phi_trajectories(T, PHI, T, PHI, labels="ab"),
             "phi_trajectories.labels", "one label per synapse")
    _refused(lambda: plotting.phi_trajectories(T, PHI, T, PHI, labels=["a"]),
             "phi_trajectories.labels", "one label per synapse")


def test_phi_trajectories_takes_times_not_voltages():
    import brian2

    _refused(lambda: plotting.phi_trajectories(T * brian2.mV, PHI, T, PHI),
             "phi_trajectories.t_free", "time")


def test_parameter_trajectories_refuses_values_without_a_row_per_step():
    _refused(lambda: plotting.parameter_trajectories([0, 1], np.ones((4, 2)), {"a": MASK}),
             "parameter_trajectories.values", r"one row per step \(2\)")


def test_an_empty_group_is_said_not_drawn_as_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no "Mean of empty slice"
        ax = plotting.parameter_trajectories(
            [0, 1], np.ones((2, 4)), {"shared": MASK, "specific": np.zeros(4, bool)})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["shared synapses", "specific synapses (none)"]
    assert all(np.isfinite(np.asarray(line.get_ydata(), float)).all() for line in ax.lines)


def test_fast_patterns_checks_phi_task_params_and_sort_by():
    model = _model()
    phi = _phi(model)
    params = {"phase": [0.1, 0.2, 0.3], "amplitude": [1.0, 2.0, 3.0]}
    _refused(lambda: plotting.fast_patterns(model, phi[:1], params), "fast_patterns.phi",
             "list of the model's 2 fast variables")
    # one task's fast variables without a task axis: rows would be read as tasks
    _refused(lambda: plotting.fast_patterns(model, [p[0] for p in phi], params),
             "fast_patterns.phi[0]", r"must have shape \(tasks,\) \+ \(3,\)")
    _refused(lambda: plotting.fast_patterns(model, phi, {"phase": [0.1, 0.2]}),
             "fast_patterns.task_params['phase']", r"one value per entry of the task axis")
    _refused(lambda: plotting.fast_patterns(model, phi, {}), "fast_patterns.task_params",
             "at least one entry")
    _refused(lambda: plotting.fast_patterns(model, phi, params, sort_by="phaze"),
             "fast_patterns.sort_by", "one of task_params")
    _refused(lambda: plotting.fast_patterns(model, phi, {"p": [1, 2, 3], "a": [1, -2, 3]}),
             "fast_patterns.task_params['a']", "marker size")
    _refused(lambda: plotting.fast_patterns(model, [p + 1j for p in phi], params),
             "fast_patterns.phi[0]", "complex")


# -- flags, labels and axes ------------------------------------------------------------

@pytest.mark.parametrize("call, where, rule", [
    (lambda: plotting.meta_learning_curves([0, 1], {"cml": [1.0, 2.0]}, logy="no"),
     "meta_learning_curves.logy", "True or False"),
    (lambda: plotting.gradient_error_vs_beta(BETAS, {"standard": [0.1, 0.2]},
                                             references="yes"),
     "gradient_error_vs_beta.references", "True or False"),
    (lambda: plotting.meta_learning_curves([0, 1], {"cml": [1.0, 2.0]}, ylabel=3),
     "meta_learning_curves.ylabel", "string"),
    (lambda: plotting.meta_learning_curves([0, 1], {"cml": [1.0, 2.0]}, ax="left"),
     "meta_learning_curves.ax", "matplotlib Axes"),
    (lambda: plotting.meta_learning_curves([0, 1], {"cml": [True, False]}, logy=False),
     "meta_learning_curves.curves['cml']", "not booleans"),
], ids=["logy", "references", "ylabel", "ax", "bool-curve"])
def test_flags_labels_and_axes_are_checked(call, where, rule):
    _refused(call, where, rule)


def test_legend_labels_are_strings_or_numbers():
    """A key labels a legend entry: a tuple was matplotlib's ValueError from inside."""
    _refused(lambda: plotting.meta_learning_curves([0, 1], {("a", 1): [1.0, 2.0]}),
             "meta_learning_curves.curves", r"strings \(or numbers\) as keys.*key \('a', 1\)")
    ax = plotting.meta_learning_curves([0, 1], {3: [1.0, 2.0]}, logy=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["3"]


def test_tolerance_plot_labels_any_real_beta():
    """β keys of any real type (a Fraction) label their line; the format failed on it."""
    from fractions import Fraction

    ax = plotting.gradient_error_vs_tolerance([0.1, 0.2], {Fraction(1, 10): [0.2, 0.3]})
    assert any("β = 0.1" == t.get_text() for t in ax.get_legend().get_texts())


def test_fast_patterns_refuses_diverged_fast_variables():
    """Fast variables beyond 1e100 are a diverged simulation: refused by name (their
    principal components overflowed into LinAlgError "SVD did not converge")."""
    model = _model()
    phi = _phi(model)
    _refused(lambda: plotting.fast_patterns(model, [np.full_like(p, 1e308) if i == 1
                                                    else p for i, p in enumerate(phi)],
                                            {"phase": [0.1, 0.2, 0.3]}),
             "fast_patterns.phi[1]", r"must be at most 1e\+100 in magnitude")
