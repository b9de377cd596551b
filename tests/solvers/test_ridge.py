"""Closed-form batched ridge against numpy, both factorisations."""

import numpy as np
import pytest

from sdis_tf import solvers


@pytest.mark.parametrize("shape", [(3, 30, 8, 1), (3, 10, 25, 2)], ids=["primal", "dual"])
def test_matches_normal_equations(shape):
    T, n, m, k = shape
    rng = np.random.default_rng(0)
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lam = np.array([0.01, 0.1, 1.0])
    result = solvers.ridge(X, Y, lam)
    for t in range(T):
        expected = np.linalg.solve(X[t].T @ X[t] / n + lam[t] * np.eye(m), X[t].T @ Y[t] / n)
        np.testing.assert_allclose(result.W.numpy()[t], expected, rtol=1e-9, atol=1e-12)
    assert np.all(result.residual.numpy() < 1e-10)


def test_zero_lambda_is_least_squares_and_scale():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((2, 20, 5)), rng.standard_normal((2, 20))
    W = solvers.ridge(X, Y, 0.0).W.numpy()
    np.testing.assert_allclose(W[0], np.linalg.lstsq(X[0], Y[0], rcond=None)[0], rtol=1e-9)
    np.testing.assert_allclose(solvers.ridge_lambda_max(X).numpy(), (X ** 2).sum(axis=(1, 2)) / 20)


def test_bad_lambda_is_named():
    with pytest.raises(ValueError, match="lam must be >= 0"):
        solvers.ridge(np.ones((1, 3, 2)), np.ones((1, 3)), -0.5)


@pytest.mark.parametrize("shape", [(3, 30, 8, 1), (2, 10, 25, 3)], ids=["m<n", "m>n"])
def test_path_matches_one_solve_per_lambda(shape):
    T, n, m, k = shape
    rng = np.random.default_rng(2)
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lams = np.geomspace(1.0, 1e-4, 5)[None] * np.array([1.0, 2.0, 3.0][:T])[:, None]  # [T, L]
    path = solvers.ridge_path(X, Y, lams)
    assert path.W.shape == (5, *((T, m) if k == 1 else (T, m, k)))
    for step in range(5):
        single = solvers.ridge(X, Y, lams[:, step])
        np.testing.assert_allclose(path.W.numpy()[step], single.W.numpy(), rtol=1e-8, atol=1e-11)
    assert np.all(path.residual.numpy() < 1e-10)
    shared = solvers.ridge_path(X, Y, lams[0])  # one grid for every task
    np.testing.assert_allclose(shared.W.numpy()[:, 0], path.W.numpy()[:, 0], atol=1e-12)


def test_path_rejects_a_bad_grid():
    with pytest.raises(ValueError, match="lams must have shape"):
        solvers.ridge_path(np.ones((1, 3, 2)), np.ones((1, 3)), np.ones((1, 2, 2)))
