"""The C++ Lasso op against scikit-learn (float64 references) and the XLA path.

The library is built on first use (custom_ops/build.py, ~15-90 s once per machine, into the
per-user cache); if it cannot be built the tests that need it skip (the wrapper's own checks
still run).
"""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import Lasso, MultiTaskLasso

from sdis_tf.implicit import custom_root, root_vjp
from sdis_tf.solvers import lasso, lasso_gap, lasso_lambda_max, lasso_objective
from sdis_tf.solvers import lasso_op as lasso_op_module
from sdis_tf.solvers.lasso import resolve_backend
from sdis_tf.solvers.lasso_grad import lasso_implicit, lasso_linear_solve, lasso_optimality
from sdis_tf.solvers.lasso_op import in_xla_context, lasso_op

TIGHT = 1e-14


# Tests of the Python wrapper that run without the compiled library.
_WITHOUT_LIBRARY = {"test_in_xla_context", "test_lasso_op_under_jit_compile_raises_a_clear_error",
                    "test_bad_options_raise_value_error",
                    "test_missing_library_warns_once_and_lasso_op_raises",
                    "test_without_a_compiler_one_warning_and_the_xla_path",
                    "test_concurrent_first_uses_compile_once",
                    "test_failed_compile_leaves_no_file_and_the_cache_keeps_the_recent_libraries"}


@pytest.fixture(autouse=True)
def op_library(request):
    if request.node.originalname in _WITHOUT_LIBRARY:
        return None
    library = lasso_op_module.library()
    if library is None:
        pytest.skip("the C++ op library could not be built or loaded (no C++ compiler or a "
                    "compile error: see the warning of sdis_tf.solvers.lasso_op)")
    return library


def _problem(seed, T, n, m, k=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, n, m))
    shape = (T, n) if k is None else (T, n, k)
    Y = rng.standard_normal(shape)
    return X, Y


def _sklearn(X, Y, lam):
    """Per-task scikit-learn solution, fit_intercept=False, alpha=lam (same objective)."""
    out = []
    for t in range(X.shape[0]):
        if Y.ndim == 2:
            model = Lasso(alpha=lam[t], fit_intercept=False, tol=1e-15, max_iter=1_000_000)
            out.append(model.fit(X[t], Y[t]).coef_)
        else:
            model = MultiTaskLasso(alpha=lam[t], fit_intercept=False, tol=1e-15,
                                   max_iter=1_000_000)
            out.append(model.fit(X[t], Y[t]).coef_.T)
    return np.stack(out)


def _lam(X, Y, eps):
    return eps * lasso_lambda_max(X, Y).numpy()


# (37, 70, 5), (37, 70, 13): n and m off the vector widths; k = 5 rows in one of the kernels'
# row blocks, 13 = 6 + 6 + 1 in three
@pytest.mark.parametrize("n,m,k", [(20, 40, None), (40, 15, None), (20, 40, 3), (40, 15, 2),
                                   (37, 70, 5), (37, 70, 13)])
def test_matches_sklearn(n, m, k):
    X, Y = _problem(n + m, 3, n, m, k)
    lam = _lam(X, Y, np.array([0.05, 0.2, 0.6]))
    result = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    np.testing.assert_allclose(result.W, _sklearn(X, Y, lam), rtol=0, atol=1e-8)
    assert result.W.shape == (3, m) + (() if k is None else (k,))
    assert result.W.dtype == tf.float64 and result.epochs.dtype == tf.int32
    assert np.all(result.converged)
    threshold = TIGHT * np.sum(Y**2, axis=tuple(range(1, Y.ndim))) / (2 * n)
    assert np.all(result.gap <= threshold) and np.all(result.gap >= -1e-15)
    np.testing.assert_allclose(result.gap, lasso_gap(result.W, X, Y, lam), rtol=0, atol=1e-12)


def _merge_duplicates(W, first):
    """W with rows `first` and `first + 1` (duplicated columns of X) replaced by their sum:
    the part of W that is unique when two columns are equal (k = 1: if the signs agree)."""
    return np.concatenate([W[:, :first], W[:, first:first + 1] + W[:, first + 1:first + 2],
                           W[:, first + 2:]], axis=1)


@pytest.mark.parametrize("k", [None, 3])
def test_matches_xla_path_and_sklearn_on_edge_cases(k):
    """Zero column, duplicated columns, lam >= lam_max, n < m, constant and zero targets."""
    X, Y = _problem(7, 6, 12, 30, k)
    X[:, :, 4] = 0.0
    X[:, :, 9] = X[:, :, 8]
    Y[3] = 1.0
    Y[4] = 0.0
    lam = _lam(X, Y, np.array([0.1, 1.0, 2.0, 0.3, 0.5, 0.02]))
    lam[4] = 0.1                                        # zero targets: lam_max = 0
    ours = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    xla = lasso(X, Y, lam, tol=1e-13, max_epochs=100_000, backend="xla")  # gap floor ~1e-12
    assert np.all(ours.converged) and np.all(xla.converged)
    p_ours = lasso_objective(ours.W, X, Y, lam).numpy()
    p_xla = lasso_objective(xla.W, X, Y, lam).numpy()
    np.testing.assert_allclose(p_ours, p_xla, rtol=1e-12, atol=1e-14)
    assert np.all(ours.W[:, 4] == 0.0)
    assert np.all(ours.W[1:3] == 0.0) and np.all(ours.W[4] == 0.0)
    W = _merge_duplicates(ours.W.numpy(), 8)
    np.testing.assert_allclose(W, _merge_duplicates(xla.W.numpy(), 8), rtol=0, atol=1e-8)
    with warnings.catch_warnings():                     # sklearn warns on the zero targets
        warnings.simplefilter("ignore", UserWarning)
        reference = _sklearn(X, Y, lam)
    np.testing.assert_allclose(W, _merge_duplicates(reference, 8), rtol=0, atol=1e-8)


def test_lam_at_least_lam_max_gives_exact_zero():
    X, Y = _problem(1, 4, 15, 25, 2)
    lam_max = lasso_lambda_max(X, Y).numpy()
    for scale in (1.0, 1.5):
        result = lasso_op(X, Y, scale * lam_max, tol=1e-6)
        assert np.all(result.W.numpy() == 0.0)
        assert np.all(result.gap.numpy() <= 1e-25) and np.all(result.converged)
        assert np.all(result.epochs.numpy() == 0)


def test_zero_columns_and_duplicated_columns_against_sklearn():
    X, Y = _problem(2, 3, 25, 20)
    X[:, :, [0, 7]] = 0.0
    X[:, :, 11] = X[:, :, 10]
    lam = _lam(X, Y, np.array([0.05, 0.1, 0.4]))
    result = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    assert np.all(result.W.numpy()[:, [0, 7]] == 0.0)
    reference = _sklearn(X, Y, lam)
    np.testing.assert_allclose(lasso_objective(result.W, X, Y, lam),
                               lasso_objective(reference, X, Y, lam), rtol=1e-12)
    keep = [j for j in range(20) if j not in (10, 11)]
    np.testing.assert_allclose(result.W.numpy()[:, keep], reference[:, keep], atol=1e-8)
    np.testing.assert_allclose(result.W.numpy()[:, 10] + result.W.numpy()[:, 11],
                               reference[:, 10] + reference[:, 11], atol=1e-8)


def test_constant_and_zero_targets():
    X, _ = _problem(3, 2, 20, 30)
    Y = np.stack([np.full(20, 2.0), np.zeros(20)])
    lam = np.array([0.1 * lasso_lambda_max(X, Y).numpy()[0], 0.1])
    result = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    assert np.all(result.converged)
    np.testing.assert_allclose(result.W[0], _sklearn(X[:1], Y[:1], lam[:1])[0], atol=1e-8)
    assert np.all(result.W.numpy()[1] == 0.0) and result.gap.numpy()[1] == 0.0


def test_batch_mixing_easy_and_hard_tasks_is_independent_per_task():
    rng = np.random.default_rng(4)
    T, n, m = 5, 30, 60
    base = rng.standard_normal((T, n, m))
    X = base + rng.standard_normal((T, n, 1))         # correlated columns: hard
    X[0] = base[0]                                     # easy
    Y = rng.standard_normal((T, n, 2))
    lam = _lam(X, Y, np.array([0.5, 0.05, 1.2, 0.1, 0.02]))
    batched = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=200_000)
    assert np.all(batched.converged)
    for t in range(T):
        alone = lasso_op(X[t:t + 1], Y[t:t + 1], lam[t:t + 1], tol=TIGHT, max_epochs=200_000)
        np.testing.assert_array_equal(alone.W[0], batched.W[t])
        assert alone.epochs[0] == batched.epochs[t]
    np.testing.assert_allclose(batched.W, _sklearn(X, Y, lam), rtol=0, atol=1e-8)
    xla = lasso(X, Y, lam, tol=1e-13, max_epochs=100_000, backend="xla")
    np.testing.assert_allclose(batched.W, xla.W, rtol=0, atol=1e-8)
    assert batched.epochs[2] == 0 and batched.epochs[4] > batched.epochs[0]


def test_warm_start():
    X, Y = _problem(5, 3, 20, 50, 2)
    lam = _lam(X, Y, np.array([0.1, 0.3, 0.05]))
    cold = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    again = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000, W0=cold.W)
    assert np.all(again.epochs.numpy() == 0)
    np.testing.assert_array_equal(again.W, cold.W)
    W0 = np.random.default_rng(0).standard_normal(cold.W.shape)
    warm = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000, W0=W0)
    np.testing.assert_allclose(warm.W, cold.W, atol=1e-8)
    unchanged = lasso_op(X, Y, lam, tol=1e-6, max_epochs=0, W0=W0)
    np.testing.assert_array_equal(unchanged.W, W0)
    np.testing.assert_allclose(unchanged.gap, lasso_gap(W0, X, Y, lam), rtol=1e-10)
    assert not np.any(unchanged.converged)


@pytest.mark.parametrize("p0,screen,anderson", [(1, False, 0), (1000, False, 0), (1000, True, 5),
                                                (10, True, 0), (10, False, 3)])
def test_working_sets_screening_and_anderson_do_not_change_the_solution(op_library, p0, screen,
                                                                        anderson):
    X, Y = _problem(6, 3, 25, 80, 3)
    lam = _lam(X, Y, np.array([0.05, 0.2, 0.5]))
    W0 = np.zeros((3, 80, 3))
    W, gap, _, converged = op_library.sdis_lasso_cd(
        X, Y, lam, W0, np.float64(TIGHT), p0=p0, screen=screen, anderson=anderson,
        max_epochs=100_000)
    assert np.all(converged)
    np.testing.assert_allclose(W, _sklearn(X, Y, lam), atol=1e-8)


def test_support_solve_gives_the_lasso_solution_in_fewer_epochs(op_library):
    """The sign-fixed least-squares step on the support (k = 1): same solution as scikit-learn,
    on nearly dense supports (n = 30, m = 40) and with duplicated columns (singular Gram)."""
    X, Y = _problem(12, 4, 30, 40)
    X[3, :, 1] = X[3, :, 0]
    lam = _lam(X, Y, np.array([0.02, 0.1, 0.3, 0.05]))
    W0 = np.zeros((4, 40))
    results = {
        on: op_library.sdis_lasso_cd(X, Y, lam, W0, np.float64(TIGHT), support_solve=on,
                                     max_epochs=100_000)
        for on in (False, True)}
    reference = _sklearn(X, Y, lam)
    for W, _, _, converged in results.values():
        assert np.all(converged)
        np.testing.assert_allclose(lasso_objective(W, X, Y, lam),
                                   lasso_objective(reference, X, Y, lam), rtol=1e-10)
        np.testing.assert_allclose(W[:3], reference[:3], atol=1e-8)
    assert np.sum(results[True][2]) < 0.7 * np.sum(results[False][2])


@pytest.mark.parametrize("k", [None, 3])
def test_lam_zero_is_least_squares_certified_by_its_stationarity_residual(k):
    """lam = 0: the duality gap would equal P(W) (the rescaled dual point is 0) and never
    certify; the certificate is ||X^T (Y - X W)||_F / n, within tol ||X^T Y||_F / n."""
    X, Y = _problem(8, 2, 30, 6, k)
    result = lasso_op(X, Y, 0.0, tol=1e-10, max_epochs=500)
    Y3 = Y if k else Y[..., None]
    reference = np.stack([np.linalg.lstsq(X[t], Y3[t], rcond=None)[0] for t in range(2)])
    np.testing.assert_allclose(result.W.numpy().reshape(reference.shape), reference, atol=1e-12)
    W3 = result.W.numpy().reshape(reference.shape)
    residual = np.linalg.norm(np.swapaxes(X, 1, 2) @ (Y3 - X @ W3), axis=(1, 2)) / 30
    np.testing.assert_allclose(result.gap, residual, rtol=1e-6, atol=1e-15)
    threshold = 1e-10 * np.linalg.norm(np.swapaxes(X, 1, 2) @ Y3, axis=(1, 2)) / 30
    assert np.all(result.gap.numpy() <= threshold) and np.all(result.converged)
    assert np.all(result.epochs.numpy() < 500)


@pytest.mark.parametrize("k", [None, 4, 7])
def test_float32(k):
    X, Y = _problem(9, 4, 25, 200, k)
    lam = _lam(X, Y, np.array([0.05, 0.1, 0.3, 0.7]))
    result = lasso_op(X.astype(np.float32), Y.astype(np.float32), lam.astype(np.float32),
                      tol=1e-6)
    assert result.W.dtype == tf.float32 and result.gap.dtype == tf.float32
    assert np.all(result.converged)
    reference = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000)
    p32 = lasso_objective(tf.cast(result.W, tf.float64), X, Y, lam).numpy()
    p64 = lasso_objective(reference.W, X, Y, lam).numpy()
    p0 = np.sum(Y**2, axis=tuple(range(1, Y.ndim))) / (2 * 25)
    assert np.all(p32 - p64 <= 2e-6 * p0)


def test_non_finite_inputs_give_nan_without_crashing():
    X, Y = _problem(10, 2, 10, 12)
    X[1, 3, 5] = np.nan
    result = lasso_op(X, Y, 0.1, tol=1e-6)
    assert np.all(np.isfinite(result.W[0])) and result.converged[0]
    assert np.all(np.isnan(result.W[1])) and np.isnan(result.gap[1]) and not result.converged[1]


_X, _Y = _problem(11, 2, 10, 12)
_BAD_INPUTS = {
    "X rank 2": (lambda: (_X[0], _Y, 0.1, None), "X must have shape"),
    "Y rank 4": (lambda: (_X, _Y[..., None, None], 0.1, None), "Y must have shape"),
    "n differs": (lambda: (_X, _Y[:, :5], 0.1, None), "must agree in T and n"),
    "T differs": (lambda: (_X, _Y[:1], 0.1, None), "must agree in T and n"),
    "lam shape": (lambda: (_X, _Y, np.array([0.1, 0.2, 0.3]), None), "lam must be a scalar"),
    "lam < 0": (lambda: (_X, _Y, -0.1, None), "lam must be >= 0"),
    "W0 shape": (lambda: (_X, _Y, 0.1, np.zeros((2, 12, 1))), "W0 must have shape"),
    "X int": (lambda: (_X.astype(np.int32), _Y, 0.1, None), "X must be float32 or float64"),
    "Y dtype": (lambda: (tf.constant(_X), tf.constant(_Y, tf.float32), 0.1, None),
                "Y must have the dtype of X"),
    "W0 dtype": (lambda: (_X, _Y, 0.1, tf.zeros((2, 12), tf.float32)),
                 "W0 must have the dtype of X"),
}


@pytest.mark.parametrize("case", sorted(_BAD_INPUTS))
def test_bad_inputs_raise_invalid_argument(case):
    make, message = _BAD_INPUTS[case]
    X, Y, lam, W0 = make()
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        lasso_op(X, Y, lam, W0=W0)


def _vjp(X, W, lam, C, Y=None):
    """lasso_implicit_vjp with Y = 0 by default (U does not depend on Y)."""
    Y = np.zeros(np.shape(X)[:2] + np.shape(W)[2:]) if Y is None else Y
    return lasso_op_module.lasso_implicit_vjp(X, Y, W, lam, C)


@pytest.mark.parametrize("shapes, message", [
    (((2, 20, 12), (2, 20, 3), (2, 11, 3), (2,), (2, 11, 3)), "W must have shape"),
    (((2, 20, 12), (2, 20, 3), (2, 12, 3), (2,), (2, 12, 2)), "C must have the shape of W"),
    (((2, 20, 12), (2, 20, 3), (2, 12, 3), (3,), (2, 12, 3)), "lam must be a scalar"),
    (((2, 20, 12), (2, 19, 3), (2, 12, 3), (2,), (2, 12, 3)), "Y must have shape"),
    (((2, 20, 12), (2, 20), (2, 12, 1), (2,), (2, 12, 1)), "Y must have shape"),
])
def test_implicit_vjp_rejects_bad_shapes(shapes, message):
    X, Y, W, lam, C = (tf.ones(shape, tf.float64) for shape in shapes)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        lasso_op_module.lasso_implicit_vjp(X, Y, W, lam, C)


def test_implicit_vjp_solve_is_the_identity_off_the_support_and_for_an_empty_one():
    rng = np.random.default_rng(5)
    X, C = rng.standard_normal((3, 10, 6)), rng.standard_normal((3, 6, 2))
    W = np.zeros((3, 6, 2))
    W[1, 2] = [0.5, -1.0]  # task 1: one active group; tasks 0 and 2: none
    result = _vjp(X, W, np.full(3, 0.1), C)
    U = result.U.numpy()
    off = np.ones((3, 6), bool)
    off[1, 2] = False
    np.testing.assert_array_equal(U[off], C[off])
    x, w = X[1, :, 2], W[1, 2]  # one group: H = ||x||^2/n I + lam/||w|| (I - u u^T)
    unit = w / np.linalg.norm(w)
    H = x @ x / 10 * np.eye(2) + 0.1 / np.linalg.norm(w) * (np.eye(2) - np.outer(unit, unit))
    np.testing.assert_allclose(U[1, 2], np.linalg.solve(H, C[1, 2]), rtol=1e-12)
    # nothing moves where the support is empty; off the support dL/dX is 0
    for grad in (result.grad_X.numpy()[[0, 2]], result.grad_Y.numpy()[[0, 2]],
                 result.grad_lam.numpy()[[0, 2]], np.delete(result.grad_X.numpy()[1], 2, -1)):
        np.testing.assert_array_equal(grad, 0.0)
    empty = _vjp(X[:0], W[:0], np.zeros(0), C[:0])
    assert [tuple(g.shape) for g in empty] == [(0, 6, 2), (0, 10, 6), (0, 10, 2), (0,)]


@pytest.mark.parametrize("T, n, m, k, lam_factor, dtype, rtol", [
    (4, 20, 6, 1, 0.1, np.float64, 1e-10),     # plain Lasso
    (3, 15, 40, 3, 0.05, np.float64, 1e-9),    # group Lasso, supports larger than n
    (3, 30, 8, 2, 0.0, np.float64, 1e-9),      # lam = 0: least squares
    (4, 20, 10, 3, 0.1, np.float32, 2e-3),
], ids=["lasso", "group-support>n", "lam=0", "float32"])
def test_implicit_vjp_equals_the_linear_solve_and_autodiff_pull_back(T, n, m, k, lam_factor,
                                                                     dtype, rtol):
    """The fused kernel computes `root_vjp` for lasso_optimality: the TensorFlow linear solve
    (Woodbury-preconditioned CG) and the autodiff pull-back, at the same solution."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((T, n, m))
    Y = X @ (rng.standard_normal((T, m, k)) * (rng.random((T, m, 1)) < 0.5))
    Y += 0.1 * rng.standard_normal(Y.shape)
    Y[0] = 0.0  # an empty support
    lam = lam_factor * lasso_lambda_max(X, Y).numpy()
    W = lasso_op(X, Y, lam, tol=TIGHT, max_epochs=100_000).W.numpy()
    C = rng.standard_normal(W.shape)
    args = [tf.constant(a.astype(dtype)) for a in (X, Y, lam)]
    W, C = tf.constant(W.astype(dtype)), tf.constant(C.astype(dtype))
    expected = root_vjp(lasso_optimality, W, args, C, lasso_linear_solve)
    got = lasso_op_module.lasso_implicit_vjp(args[0], args[1], W, args[2], C)
    for name, g, e in zip(("grad_X", "grad_Y", "grad_lam"), got[1:], expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(), err_msg=name)


def test_bad_shapes_inside_tf_function_raise_invalid_argument():
    solve = tf.function(lambda X, Y: lasso_op(X, Y, 0.1).W)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must agree in T and n"):
        solve(tf.constant(_X), tf.constant(_Y[:, :5]))


@pytest.mark.parametrize("kwargs", [{"tol": 0.0}, {"tol": "1e-6"}, {"max_epochs": -1},
                                    {"max_epochs": 1.5}])
def test_bad_options_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="lasso_op"):
        lasso_op(_X, _Y, 0.1, **kwargs)


def test_tf_function_matches_eager_and_op_has_no_gradient():
    X, Y = _problem(12, 3, 15, 20, 2)
    lam = _lam(X, Y, np.array([0.1, 0.2, 0.3]))
    eager = lasso_op(X, Y, lam, tol=1e-10)
    traced = tf.function(lambda X, Y, lam: lasso_op(X, Y, lam, tol=1e-10))(
        tf.constant(X), tf.constant(Y), tf.constant(lam))
    np.testing.assert_array_equal(traced.W, eager.W)
    assert traced.W.shape == (3, 20, 2) and traced.gap.shape == (3,)
    Xv = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(Xv)
        W = lasso_op(Xv, Y, lam).W
    assert tape.gradient(tf.reduce_sum(W), Xv) is None   # tf.no_gradient: constants for autodiff


def test_build_cache_key_follows_the_sources_and_the_cpu(tmp_path, monkeypatch):
    build = lasso_op_module._build_module()
    path = build.library_path()
    assert path.exists() and build.build() == path          # up to date: no recompilation
    key = path.stem.split("-")[-1]
    with monkeypatch.context() as patch:   # -march=native: another CPU needs its own build
        patch.setattr(build, "_cpu_signature", lambda: "flags : sse2\n")
        assert build.cache_key() != key
    assert build.cache_key() == key
    files = build._sources() + build._headers()
    assert any(f.suffix == ".h" for f in files)
    for changed in files:  # a change to any source or header gives another key
        for f in files:
            (tmp_path / f.name).write_text(f.read_text() + "\n// changed\n" * (f == changed))
        with monkeypatch.context() as patch:
            patch.setattr(build, "SOURCE_DIR", tmp_path)
            assert build.cache_key() != key, changed.name


def test_build_turns_avx512_fp16_off_only_where_the_cpu_has_it(monkeypatch):
    """TensorFlow's Eigen headers fail to compile with AVX512-FP16 on (newer Xeons)."""
    build = lasso_op_module._build_module()
    for flags, expected in (("fpu avx512f avx512_fp16 amx_bf16", True), ("fpu avx2 fma", False)):
        monkeypatch.setattr(build, "_cpu_signature", lambda f=flags: f"flags\t\t: {f}\n")
        command = build._command("out.so", ["-I/tf"], ["-L/tf"])
        assert ("-mno-avx512fp16" in command) is expected, command
        assert command.index("-march=native") < command.index("-I/tf")


def test_missing_library_warns_once_and_lasso_op_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(lasso_op_module, "_BUILD_SCRIPT", tmp_path / "build.py")
    monkeypatch.setitem(lasso_op_module._state, "module", None)
    monkeypatch.setitem(lasso_op_module._state, "tried", False)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ Lasso op is unavailable") as record:
        assert not lasso_op_module.op_available()
        assert not lasso_op_module.op_available()
    assert len(record) == 1
    with pytest.raises(RuntimeError, match="unavailable"):
        lasso_op(_X, _Y, 0.1)


def _reset_loader(monkeypatch):
    monkeypatch.setitem(lasso_op_module._state, "module", None)
    monkeypatch.setitem(lasso_op_module._state, "tried", False)


def test_without_a_compiler_one_warning_and_the_xla_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SDIS_TF_CACHE", str(tmp_path / "cache"))  # nothing built there
    _reset_loader(monkeypatch)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as record:
        assert resolve_backend() == "xla"
        result = lasso(_X, _Y, 0.1)
    assert len(record) == 1 and np.all(result.converged)


# Builds the library in a process of its own, with TensorFlow's flags stubbed (the tests
# below are about the cache, the lock and the rename, not TensorFlow).
_BUILD_IN_A_PROCESS = """
import importlib.util, logging, sys
spec = importlib.util.spec_from_file_location("build", sys.argv[1])
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
build._tf_flags = lambda: ("0.0", [], [])
logging.basicConfig(level=logging.INFO, format="%(message)s")
print(build.build())
"""


def _fake_compiler(tmp_path, script):
    """An executable that stands for g++: `script` runs with `out` = the file after -o."""
    compiler = tmp_path / "fake-g++"
    compiler.write_text(f"#!{sys.executable}\nimport pathlib, sys, time\n"
                        f"out = pathlib.Path(sys.argv[sys.argv.index('-o') + 1])\n{script}")
    compiler.chmod(0o755)
    return compiler


def _wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_concurrent_first_uses_compile_once(tmp_path, monkeypatch):
    """A second process started while the first compiles waits for it and loads its library."""
    # Each compile appends a line to `compiles`, then waits for `release` (60 s at most).
    compiler = _fake_compiler(tmp_path, (
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "with open(d / 'compiles', 'a') as f: f.write('compile\\n')\n"
        "deadline = time.monotonic() + 60\n"
        "while not (d / 'release').exists() and time.monotonic() < deadline: time.sleep(0.02)\n"
        "out.write_bytes(b'library')\n"))
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("SDIS_TF_CACHE", str(tmp_path / "cache"))
    command = [sys.executable, "-c", _BUILD_IN_A_PROCESS, str(lasso_op_module._BUILD_SCRIPT)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    compiles = tmp_path / "compiles"

    def start(log):
        with open(log, "w") as stderr:
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)

    processes = [start(logs[0])]
    try:
        _wait_for(compiles.exists, "the first process to start compiling")
        processes.append(start(logs[1]))
        _wait_for(lambda: "waiting for another process" in logs[1].read_text(),
                  "the second process to wait for the lock")
    finally:
        (tmp_path / "release").touch()
        paths = [process.communicate(timeout=90)[0].strip() for process in processes]
    first, second = processes
    assert [first.returncode, second.returncode] == [0, 0], [log.read_text() for log in logs]
    assert compiles.read_text() == "compile\n"
    assert paths[0] == paths[1] and Path(paths[0]).read_bytes() == b"library"
    assert "compiling the C++ ops" in logs[0].read_text()
    assert "compiling" not in logs[1].read_text()
    ops = tmp_path / "cache" / "ops"
    assert sorted(p.name for p in ops.iterdir()) == sorted([".lock", Path(paths[0]).name])


def test_failed_compile_leaves_no_file_and_the_cache_keeps_the_recent_libraries(
        tmp_path, monkeypatch):
    build = lasso_op_module._build_module()
    monkeypatch.setattr(build, "_tf_flags", lambda: ("0.0", [], []))
    monkeypatch.setenv("SDIS_TF_CACHE", str(tmp_path / "cache"))
    ops = tmp_path / "cache" / "ops"
    failing = _fake_compiler(tmp_path, "print('error: bad source', file=sys.stderr)\nsys.exit(1)")
    monkeypatch.setenv("CXX", str(failing))
    with pytest.raises(build.BuildError, match="error: bad source"):
        build.build()
    assert [p.name for p in ops.iterdir()] == [".lock"]     # the temporary file is gone
    # A compile interrupted by a kill left its temporary file; older libraries pile up.
    (ops / ".sdis_ops-interrupted.tmp").write_bytes(b"partial")
    for age in range(build.KEEP + 2):
        old = ops / f"sdis_ops-old{age}.so"
        old.write_bytes(b"old")
        os.utime(old, (1e9 - age, 1e9 - age))
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, "out.write_bytes(b'new')")))
    target = build.build()
    kept = {p.name for p in ops.glob("*.so")}
    assert kept == {target.name} | {f"sdis_ops-old{age}.so" for age in range(build.KEEP - 1)}
    assert not list(ops.glob("*.tmp"))


def test_implicit_gradient_with_the_op_as_forward_solver_matches_finite_differences():
    """`lasso_implicit`'s construction with the op as the forward solver: gradients w.r.t.
    X, Y and lam match central finite differences, `lasso_implicit` on the XLA backend and
    on the op's (forward and fused backward in C++)."""

    @custom_root(lasso_optimality, lasso_linear_solve)
    def solve(X, Y3, lam):
        result = lasso_op(X, Y3, lam, tol=TIGHT, max_epochs=100_000)
        return result.W, result

    X, Y = _problem(13, 2, 20, 12, 2)
    lam = _lam(X, Y, np.array([0.1, 0.3]))
    rng = np.random.default_rng(0)
    C, dX, dY = (rng.standard_normal(s) for s in ((2, 12, 2), X.shape, Y.shape))
    dlam = np.array([0.3, -0.2]) * lam

    def loss(X, Y, lam):
        return tf.reduce_sum(solve(X, Y, lam)[0] * C)

    args = [tf.constant(a) for a in (X, Y, lam)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(args)
        value = loss(*args)
        xla_W = lasso_implicit(*args, tol=1e-13, max_epochs=100_000, backend="xla")[0]
        xla_value = tf.reduce_sum(xla_W * C)
        op_W = lasso_implicit(*args, tol=TIGHT, max_epochs=100_000, backend="op")[0]
        op_value = tf.reduce_sum(op_W * C)
    grads = tape.gradient(value, args)
    xla_grads = tape.gradient(xla_value, args)
    op_grads = tape.gradient(op_value, args)
    h = 1e-6
    for i, direction in enumerate((dX, dY, dlam)):
        plus = [a + (h * direction if j == i else 0) for j, a in enumerate((X, Y, lam))]
        minus = [a - (h * direction if j == i else 0) for j, a in enumerate((X, Y, lam))]
        fd = (loss(*plus) - loss(*minus)).numpy() / (2 * h)
        np.testing.assert_allclose(np.sum(grads[i].numpy() * direction), fd, rtol=1e-6)
        np.testing.assert_allclose(grads[i], xla_grads[i], rtol=0, atol=1e-8)
        np.testing.assert_allclose(grads[i], op_grads[i], rtol=0, atol=1e-8)


def test_in_xla_context():
    seen = {}

    def probe(name):
        seen[name] = in_xla_context()
        return tf.constant(0.0)

    def in_loop(name):
        return tf.while_loop(lambda i: i < 1, lambda i: (probe(name), i + 1)[1], [0])

    inner = tf.function(lambda: probe("plain tf.function inside XLA"))
    probe("eager")
    tf.function(lambda: probe("tf.function"))()
    tf.function(lambda: in_loop("while_loop in tf.function"))()
    tf.function(lambda: probe("jit_compile"), jit_compile=True)()
    tf.function(lambda: in_loop("while_loop under jit_compile"), jit_compile=True)()
    tf.function(lambda: inner(), jit_compile=True)()
    assert seen == {"eager": False, "tf.function": False, "while_loop in tf.function": False,
                    "jit_compile": True, "while_loop under jit_compile": True,
                    "plain tf.function inside XLA": True}


def test_lasso_op_under_jit_compile_raises_a_clear_error():
    solve = tf.function(lambda X, Y: lasso_op(X, Y, 0.1).W, jit_compile=True)
    with pytest.raises(ValueError, match="no XLA kernel.*sdis_tf.solvers.lasso"):
        solve(tf.constant(_X), tf.constant(_Y))
