"""Batched (group) Lasso against scikit-learn, edge cases, certificates, XLA and tf.distribute."""

import functools

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import Lasso, MultiTaskLasso

from sdis_tf import solvers
from sdis_tf.solvers import lasso_op
from sdis_tf.solvers.lasso import ANDERSON_K
from sdis_tf.train import distribute

TIGHT = dict(tol=1e-14, max_epochs=50_000)


def sklearn_solutions(X, Y, lam):
    """Per-task scikit-learn solutions [T, m(, k)] with alpha = lam, no intercept."""
    out = []
    for X_t, Y_t, lam_t in zip(X, Y, np.broadcast_to(lam, X.shape[:1])):
        est = (Lasso if Y_t.ndim == 1 else MultiTaskLasso)(
            alpha=lam_t, fit_intercept=False, tol=1e-14, max_iter=1_000_000)
        out.append(est.fit(X_t, Y_t).coef_.T)
    return np.stack(out)


def relative_objective_error(X, Y, lam, W):
    ours = solvers.lasso_objective(W, X, Y, lam).numpy()
    reference = solvers.lasso_objective(sklearn_solutions(X, Y, lam), X, Y, lam).numpy()
    return np.max(np.abs(ours - reference) / np.abs(reference))


# This file tests the compiled TensorFlow solver; the C++ op has its own tests
# (test_lasso_op.py) and `backend="auto"` is tested at the end.
xla_lasso = functools.partial(solvers.lasso, backend="xla")


@pytest.mark.parametrize("shape", [(4, 30, 10, 1), (3, 20, 40, 1), (3, 30, 8, 3), (2, 12, 30, 4)],
                         ids=["lasso", "lasso-n<m", "group", "group-n<m"])
def test_matches_sklearn(shape):
    T, n, m, k = shape
    rng = np.random.default_rng(sum(shape))
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lam = rng.uniform(0.05, 0.5, T) * solvers.lasso_lambda_max(X, Y).numpy()
    result = xla_lasso(X, Y, lam, **TIGHT)
    assert result.W.shape == (T, m) if k == 1 else (T, m, k)
    assert bool(tf.reduce_all(result.converged))
    assert relative_objective_error(X, Y, lam, result.W.numpy()) < 1e-8
    if n > m:  # strictly convex: the solution is unique
        np.testing.assert_allclose(result.W.numpy(), sklearn_solutions(X, Y, lam), atol=1e-7)


def test_gap_is_a_certificate():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((5, 25, 12)), rng.standard_normal((5, 25))
    lam = 0.2 * solvers.lasso_lambda_max(X, Y)
    result = xla_lasso(X, Y, lam, tol=1e-8)
    p0 = 0.5 / 25 * np.sum(Y ** 2, axis=1)
    assert np.all(result.gap.numpy() >= -1e-12)
    assert np.all(result.gap.numpy() <= 1e-8 * p0)
    # Weak duality at arbitrary points, and the gap bounds the suboptimality.
    W_random = rng.standard_normal((5, 12))
    assert np.all(solvers.lasso_gap(W_random, X, Y, lam).numpy() > 0)
    optimum = solvers.lasso_objective(xla_lasso(X, Y, lam, **TIGHT).W, X, Y, lam)
    suboptimality = solvers.lasso_objective(result.W, X, Y, lam) - optimum
    assert np.all(suboptimality.numpy() <= result.gap.numpy() + 1e-14)


@pytest.mark.parametrize("k", [1, 3])
def test_lambda_max_is_the_zero_threshold(k):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3, 20, 15))
    Y = rng.standard_normal((3, 20) if k == 1 else (3, 20, k))
    lam_max = solvers.lasso_lambda_max(X, Y)
    at_max = xla_lasso(X, Y, lam_max, **TIGHT)
    assert np.all(at_max.W.numpy() == 0.0)
    assert np.all(at_max.epochs.numpy() == 0)
    below = xla_lasso(X, Y, 0.99 * lam_max, **TIGHT)
    assert np.all(np.abs(below.W.numpy()).reshape(3, -1).max(axis=1) > 0)


def test_zero_and_duplicated_columns():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 20, 8))
    X[:, :, 2] = 0.0
    X[:, :, 5] = X[:, :, 4]
    Y = rng.standard_normal((2, 20))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    W0 = np.ones((2, 8))  # a warm start that is wrong on the zero column
    result = xla_lasso(X, Y, lam, W0=W0, **TIGHT)
    assert np.all(result.W.numpy()[:, 2] == 0.0)
    assert relative_objective_error(X, Y, lam, result.W.numpy()) < 1e-8


def test_constant_and_zero_targets():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 15, 6))
    Y = np.stack([np.zeros(15), np.full(15, 2.0), rng.standard_normal(15)])
    lam = np.array([0.1, 0.05, 0.1])
    result = xla_lasso(X, Y, lam, **TIGHT)
    assert np.all(result.W.numpy()[0] == 0.0) and result.epochs.numpy()[0] == 0
    np.testing.assert_allclose(result.W.numpy()[1:], sklearn_solutions(X[1:], Y[1:], lam[1:]),
                               atol=1e-8)


def test_tasks_are_independent_of_the_batch():
    """A batch mixing trivial, easy and hard tasks gives each task its solo result.

    T = 20 exercises the compaction rounds (20 tasks, then the 10 slowest).
    """
    rng = np.random.default_rng(5)
    T = 20
    X = rng.standard_normal((T, 20, 30))
    X[-1] = X[-1] @ np.linalg.qr(rng.standard_normal((30, 30)))[0] * np.linspace(0.1, 3, 30)
    Y = rng.standard_normal((T, 20))
    lam = np.geomspace(10.0, 0.01, T) * solvers.lasso_lambda_max(X, Y).numpy()
    batched = xla_lasso(X, Y, lam, tol=1e-10, max_epochs=100_000)
    epochs = batched.epochs.numpy()
    assert epochs[0] == 0 and epochs[T // 2] < epochs[-1] and bool(tf.reduce_all(batched.converged))
    for t in rng.permutation(T)[:6].tolist() + [0, T - 1]:
        alone = xla_lasso(X[t:t + 1], Y[t:t + 1], lam[t:t + 1], tol=1e-10, max_epochs=100_000)
        # The same iterates up to the rounding of XLA's batched reductions; an
        # Anderson step accepted in one run and not the other (a tie at rounding
        # level) can shift the trajectory within the tolerance of the solve.
        np.testing.assert_allclose(alone.W.numpy()[0], batched.W.numpy()[t], rtol=0, atol=1e-8)
        assert abs(int(alone.epochs.numpy()[0]) - int(epochs[t])) <= max(ANDERSON_K,
                                                                         0.1 * epochs[t])


def test_warm_start_and_methods_agree():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((4, 25, 10)), rng.standard_normal((4, 25, 2))
    lam_max = solvers.lasso_lambda_max(X, Y)
    cold = xla_lasso(X, Y, 0.1 * lam_max, tol=1e-10)
    gram = xla_lasso(X, Y, 0.1 * lam_max, tol=1e-10, method="gram")
    residual = xla_lasso(X, Y, 0.1 * lam_max, tol=1e-10, method="residual")
    np.testing.assert_allclose(gram.W.numpy(), residual.W.numpy(), atol=1e-9)
    assert np.all(gram.epochs.numpy() == residual.epochs.numpy())
    warm = xla_lasso(X, Y, 0.1 * lam_max, tol=1e-10, W0=cold.W)
    assert np.all(warm.epochs.numpy() <= 1)
    path = xla_lasso(X, Y, 0.12 * lam_max, tol=1e-10)
    from_path = xla_lasso(X, Y, 0.1 * lam_max, tol=1e-10, W0=path.W)
    assert from_path.epochs.numpy().sum() < cold.epochs.numpy().sum()


def test_float32_matches_float64():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((4, 30, 6)), rng.standard_normal((4, 30))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    r64 = xla_lasso(X, Y, lam, tol=1e-10)
    r32 = xla_lasso(X.astype(np.float32), Y.astype(np.float32), lam.astype(np.float32),
                        tol=1e-5)
    assert r32.W.dtype == tf.float32 and bool(tf.reduce_all(r32.converged))
    np.testing.assert_allclose(r32.W.numpy(), r64.W.numpy(), atol=2e-3)


def test_runs_under_jit_compile():
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((3, 20, 7)), rng.standard_normal((3, 20))

    @tf.function(jit_compile=True)
    def solve(X, Y):
        return xla_lasso(X, Y, 0.2 * solvers.lasso_lambda_max(X, Y), tol=1e-10)

    compiled = solve(tf.constant(X), tf.constant(Y))
    eager = xla_lasso(X, Y, 0.2 * solvers.lasso_lambda_max(X, Y), tol=1e-10)
    np.testing.assert_allclose(compiled.W.numpy(), eager.W.numpy(), atol=1e-12)


def test_runs_inside_mirrored_strategy():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) == 2, "tests/conftest.py should provide 2 logical CPUs"
    strategy = distribute.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((4, 20, 6)), rng.standard_normal((4, 20))
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(X, Y):
        return xla_lasso(X, Y, 0.1, tol=1e-10).W

    per_replica = strategy.run(step, args=batch)
    gathered = strategy.gather(per_replica, axis=0).numpy()
    np.testing.assert_allclose(gathered, xla_lasso(X, Y, 0.1, tol=1e-10).W.numpy(), atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: solvers.lasso(np.ones((2, 3)), np.ones((2, 3)), 0.1), "X must have shape"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 5)), 0.1), "disagree on T or n"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), [0.1, 0.2, 0.3]), "lam must be"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), -1.0), "lam must be >= 0"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), 0.1, tol=0), "tol must be"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), 0.1, max_epochs=-1), "max_epochs"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), 0.1, method="cd"), "method must"),
    (lambda: solvers.lasso(np.ones((2, 3, 4)), np.ones((2, 3)), 0.1, W0=np.ones((2, 5))), "W0"),
    (lambda: solvers.lasso(np.ones((2, 3, 4), np.int32), np.ones((2, 3)), 0.1), "float32 or float64"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_auto_backend_uses_the_op_outside_xla_only(monkeypatch):
    """Whether or not the op is built here: a spy stands in for it."""
    calls = []
    monkeypatch.setattr(lasso_op, "op_available", lambda: True)
    monkeypatch.setattr(lasso_op, "lasso_op",
                        lambda *args, **kwargs: calls.append(1) or xla_lasso(*args, **kwargs))
    X, Y = np.random.default_rng(10).standard_normal((2, 20, 6)), np.ones((2, 20))
    eager = solvers.lasso(X, Y, 0.1, tol=1e-10)
    assert len(calls) == 1
    compiled = tf.function(lambda X, Y: solvers.lasso(X, Y, 0.1, tol=1e-10).W,
                           jit_compile=True)(tf.constant(X), tf.constant(Y))
    assert len(calls) == 1
    np.testing.assert_allclose(compiled.numpy(), eager.W.numpy(), atol=1e-9)
    solvers.lasso(X, Y, 0.1, tol=1e-10, method="gram")  # an XLA-only option: XLA path
    assert len(calls) == 1
    with pytest.raises(ValueError, match="backend must be one of"):
        solvers.lasso(X, Y, 0.1, backend="cpp")


@pytest.mark.parametrize("argument", ["X", "Y", "lam"])
def test_non_finite_input_raises_eagerly_and_fails_only_its_task_when_traced(argument):
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((3, 20, 6)), rng.standard_normal((3, 20))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    {"X": X[1], "Y": Y[1], "lam": lam[1:2]}[argument][0] = np.nan
    with pytest.raises(ValueError, match=f"lasso: {argument} has NaN or inf at task 1 "):
        xla_lasso(X, Y, lam)
    traced = tf.function(lambda X, Y, lam: xla_lasso(X, Y, lam, tol=1e-10), jit_compile=True)
    result = traced(X, Y, lam)
    assert list(result.converged.numpy()) == [True, False, True]
    assert np.all(np.isnan(result.W.numpy()[1])) and np.isnan(result.gap.numpy()[1])
    clean = xla_lasso(X[::2], Y[::2], lam[::2], tol=1e-10)
    np.testing.assert_allclose(result.W.numpy()[::2], clean.W.numpy(), atol=1e-12)


@pytest.mark.parametrize("backend", ["xla", "op"])
def test_float32_data_whose_squares_overflow_is_never_certified(backend):
    """X and Y of magnitude 1e20 are finite in float32, their products are not."""
    if backend == "op" and not lasso_op.op_available():
        pytest.skip("the C++ Lasso op is not built")
    rng = np.random.default_rng(12)
    X = (1e20 * rng.standard_normal((3, 20, 6))).astype(np.float32)
    Y = (1e20 * rng.standard_normal((3, 20))).astype(np.float32)
    for lam in (np.float32(0.1), np.float32(1e30)):
        result = solvers.lasso(X, Y, lam, backend=backend)
        assert not np.any(result.converged.numpy())
        assert np.all(np.isnan(result.W.numpy())) and not np.any(np.isfinite(result.gap.numpy()))


@pytest.mark.parametrize("k", [1, 3])
def test_lam_zero_is_least_squares_certified_by_its_stationarity_residual(k):
    """lam = 0: the duality gap equals P(W) there and certifies nothing; the certificate is
    ||X^T (Y - X W)||_F / n, and it converges to the least-squares solution."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((3, 30, 6))
    Y3 = rng.standard_normal((3, 30, k))
    result = xla_lasso(X, Y3[..., 0] if k == 1 else Y3, 0.0, tol=1e-12, max_epochs=10_000)
    W3 = result.W.numpy().reshape(3, 6, k)
    reference = np.stack([np.linalg.lstsq(X[t], Y3[t], rcond=None)[0] for t in range(3)])
    np.testing.assert_allclose(W3, reference, atol=1e-9)
    residual = np.linalg.norm(np.swapaxes(X, 1, 2) @ (Y3 - X @ W3), axis=(1, 2)) / 30
    np.testing.assert_allclose(result.gap.numpy(), residual, rtol=1e-6, atol=1e-15)
    threshold = 1e-12 * np.linalg.norm(np.swapaxes(X, 1, 2) @ Y3, axis=(1, 2)) / 30
    assert np.all(result.gap.numpy() <= threshold) and np.all(result.converged.numpy())


@pytest.mark.parametrize("backend", ["xla", "op"])
@pytest.mark.parametrize("shape", [(0, 10, 4, 1), (3, 10, 0, 1), (3, 10, 0, 2)],
                         ids=["T=0", "m=0", "m=0-group"])
def test_empty_batches_and_problems_without_features_are_solved(backend, shape):
    if backend == "op" and not lasso_op.op_available():
        pytest.skip("the C++ Lasso op is not built")
    T, n, m, k = shape
    Y = np.ones((T, n) if k == 1 else (T, n, k))
    result = solvers.lasso(np.ones((T, n, m)), Y, 0.1, backend=backend)
    assert result.W.shape == ((T, m) if k == 1 else (T, m, k))
    assert result.gap.shape == result.converged.shape == result.epochs.shape == (T,)
    assert np.all(result.converged.numpy()) and np.all(np.abs(result.gap.numpy()) <= 1e-12)
    with pytest.raises(ValueError, match="at least one sample"):
        solvers.lasso(np.ones((2, 0, 4)), np.ones((2, 0)), 0.1, backend=backend)


def test_lambda_max_of_non_finite_data_is_refused_or_nan():
    rng = np.random.default_rng(14)
    X, Y = rng.standard_normal((3, 10, 4)), rng.standard_normal((3, 10))
    X[2, 0, 1] = np.inf
    with pytest.raises(ValueError, match="lasso_lambda_max: X has NaN or inf at task 2 "):
        solvers.lasso_lambda_max(X, Y)
    X[2, 0, 1] = np.nan
    traced = tf.function(solvers.lasso_lambda_max)(X, Y).numpy()
    assert np.all(np.isfinite(traced[:2])) and np.isnan(traced[2])
