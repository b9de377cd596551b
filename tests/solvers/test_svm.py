"""Group-Lasso multiclass SVM in the dual: against cvxpy, certificates, lambda_max, gradients."""

import cvxpy as cp
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.solvers import svm


def episodes(T=2, n=12, m=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((T, n, m))
    labels = np.stack([rng.permutation(np.tile(np.arange(k), n // k)) for _ in range(T)])
    return F, np.eye(k)[labels]


def cvxpy_solution(F, Y, lam1, lam2):
    """Primal solved by an interior-point method (Clarabel): W [k, m]."""
    W = cp.Variable((F.shape[1], Y.shape[1]))
    scores = F @ W
    true = cp.sum(cp.multiply(scores, Y), axis=1, keepdims=True)
    loss = cp.sum(cp.max(1 - Y + scores - true, axis=1))
    penalty = lam1 * cp.sum(cp.norm(W, 2, axis=1)) + lam2 / 2 * cp.sum_squares(W)
    cp.Problem(cp.Minimize(loss + penalty)).solve(solver=cp.CLARABEL)
    return W.value.T


@pytest.mark.parametrize("lam1_fraction", [0.0, 0.3, 0.8])
def test_matches_interior_point_reference(lam1_fraction):
    F, Y = episodes()
    lam1 = lam1_fraction * svm.svm_lambda_max(F, Y).numpy()
    result = svm.svm_dual(F, Y, lam1, 0.5, tol=1e-10, max_iter=100_000)
    assert bool(tf.reduce_all(result.converged))
    n = F.shape[1]
    assert np.all(result.gap.numpy() <= 1e-10 * n)
    primal = svm.svm_primal(result.W, F, Y, lam1, 0.5).numpy()
    dual = svm.svm_dual_objective(result.dual, F, Y, lam1, 0.5).numpy()
    np.testing.assert_allclose(primal, n - dual, atol=1e-8)  # P* = n - D*
    np.testing.assert_allclose(result.dual.numpy().sum(-1), 1.0, atol=1e-12)
    for t in range(F.shape[0]):
        reference = cvxpy_solution(F[t], Y[t], lam1[t], 0.5)
        reference_value = svm.svm_primal(reference[None], F[t:t + 1], Y[t:t + 1], lam1[t], 0.5)
        assert primal[t] <= reference_value.numpy()[0] + 1e-7
        np.testing.assert_allclose(result.W.numpy()[t], reference, atol=1e-4)


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_primal_is_not_improved_by_perturbations(smoothing):
    F, Y = episodes(seed=1)
    lam1 = 0.4 * svm.svm_lambda_max(F, Y).numpy()
    result = svm.svm_dual(F, Y, lam1, 1.0, tol=1e-11, max_iter=100_000, smoothing=smoothing)
    assert np.all(result.gap.numpy() <= 1e-11 * F.shape[1])
    base = svm.svm_primal(result.W, F, Y, lam1, 1.0, smoothing).numpy()
    rng = np.random.default_rng(2)
    for _ in range(10):
        W = result.W.numpy() + 1e-3 * rng.standard_normal(result.W.shape)
        assert np.all(svm.svm_primal(W, F, Y, lam1, 1.0, smoothing).numpy() >= base - 1e-10)


def test_lambda_max_is_the_zero_threshold():
    F, Y = episodes(T=3, seed=3)
    lam_max = svm.svm_lambda_max(F, Y).numpy()
    at_max = svm.svm_dual(F, Y, lam_max, 1.0, tol=1e-10, max_iter=100_000)
    assert np.all(at_max.W.numpy() == 0.0)
    below = svm.svm_dual(F, Y, 0.95 * lam_max, 1.0, tol=1e-10, max_iter=100_000)
    assert np.all(np.abs(below.W.numpy()).max(axis=(1, 2)) > 0)


def cvxpy_lambda_max(F, Y):
    """min over dual points L with zero true-class mass of max_j ||(F^T (Y - L))_j||_2."""
    L, t = cp.Variable(Y.shape), cp.Variable()
    constraints = [L >= 0, cp.sum(L, axis=1) == 1, cp.multiply(L, Y) == 0,
                   cp.norm(F.T @ (Y - L), 2, axis=1) <= t]
    cp.Problem(cp.Minimize(t), constraints).solve(solver=cp.CLARABEL)
    return t.value


@pytest.mark.parametrize("n,m,k,rtol", [(12, 6, 3, 1e-6), (40, 64, 20, 1e-3), (25, 200, 5, 1e-2)])
def test_lambda_max_bounds_bracket_the_exact_value(n, m, k, rtol):
    F, Y = episodes(T=3, n=n, m=m, k=k, seed=4)
    F = np.maximum(F, 0.0)  # post-ReLU features, as a backbone gives them
    bounds = svm.svm_lambda_max(F, Y, rtol=rtol, max_iter=20_000, with_bound=True)
    value, lower = bounds.value.numpy(), bounds.lower.numpy()
    exact = np.array([cvxpy_lambda_max(F[t], Y[t]) for t in range(3)])
    assert np.all(lower <= exact * (1 + 1e-7)) and np.all(exact <= value * (1 + 1e-7))
    assert np.all(value - lower <= rtol * value)
    # the value is attained: W = 0 there (up to the dual solve's accuracy at this edge)
    at_value = svm.svm_dual(F, Y, value, 1.0, tol=1e-10, max_iter=100_000)
    assert np.abs(at_value.W.numpy()).max() <= 1e-6


def test_bad_input_is_named():
    F, Y = episodes()
    for kwargs, message in ((dict(lam1=-1.0, lam2=1.0), "lam1 must be >= 0"),
                            (dict(lam1=0.1, lam2=0.0), "lam2 must be > 0"),
                            (dict(lam1=0.1, lam2=1.0, smoothing=-1), "smoothing")):
        with pytest.raises(ValueError, match=message):
            svm.svm_dual(F, Y, **kwargs)
    with pytest.raises(ValueError, match="one-hot"):
        svm.svm_dual(F, Y[:, :5], 0.1, 1.0)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features_raise_eagerly_and_fail_only_their_episode_when_traced(value):
    F, Y = episodes(T=3)
    F[1, 2, 3] = value
    with pytest.raises(ValueError, match="svm_dual: F has NaN or inf at task 1 "):
        svm.svm_dual(F, Y, 0.1, 1.0)
    result = tf.function(lambda F, Y: svm.svm_dual(F, Y, 0.1, 1.0, tol=1e-8))(F, Y)
    assert list(result.converged.numpy()) == [True, False, True]
    assert np.all(np.isnan(result.W.numpy()[1])) and np.isnan(result.gap.numpy()[1])
    assert np.all(np.isfinite(result.W.numpy()[::2]))
    with pytest.raises(ValueError, match="svm_lambda_max: F has NaN or inf at task 1 "):
        svm.svm_lambda_max(F, Y)
    lambda_max = tf.function(svm.svm_lambda_max)(F, Y).numpy()
    assert np.isnan(lambda_max[1]) and np.all(lambda_max[::2] > 0)


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_implicit_gradient_matches_finite_differences(smoothing):
    F, Y = episodes(seed=4)
    rng = np.random.default_rng(5)
    lam1 = 0.3 * svm.svm_lambda_max(F, Y).numpy()
    query = rng.standard_normal((2, 4, 6))
    cotangent = rng.standard_normal((2, 4, 3))

    def loss(F, lam1, lam2):
        # A gap of 1e-14 leaves the smoothed (strongly convex) dual ~sqrt(1e-14) from its
        # optimum: run a fixed, ample number of iterations (tol=0) to machine precision.
        W, _ = svm.svm_implicit(F, Y, lam1, lam2, smoothing=smoothing,
                                     tol=0.0 if smoothing else 1e-14,
                                     max_iter=3_000 if smoothing else 300_000)
        return tf.reduce_sum(tf.einsum("tqm,tkm->tqk", query, W) * cotangent)

    args = [F, lam1, np.array([1.0, 2.0])]
    tensors = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = loss(*tensors)
    grads = tape.gradient(value, tensors)
    h = 1e-4  # the solves are accurate to ~1e-9: a larger step keeps that out of the difference
    for i, (arg, grad) in enumerate(zip(args, grads)):
        direction = rng.standard_normal(np.shape(arg))
        shifted = lambda s: loss(*[tf.constant(a + s * direction if j == i else a)
                                   for j, a in enumerate(args)])
        fd = (shifted(h) - shifted(-h)).numpy() / (2 * h)
        assert abs(np.sum(grad.numpy() * direction) - fd) <= 1e-5 * abs(fd) + 1e-9


def test_implicit_gradient_matches_unrolling():
    F, Y = episodes(seed=6)
    lam1 = tf.constant(0.2 * svm.svm_lambda_max(F, Y).numpy())
    Ft = tf.constant(F)

    def gradient(solve):
        with tf.GradientTape() as tape:
            tape.watch(Ft)
            loss = tf.reduce_sum(tf.sin(solve(Ft)))
        return tape.gradient(loss, Ft).numpy()

    reference = gradient(lambda F: svm.svm_implicit(F, Y, lam1, 1.0, smoothing=1.0,
                                                         tol=0.0, max_iter=3_000)[0])
    # The smoothed dual is strongly concave: FISTA converges linearly and so do the unrolled
    # gradients (100 iterations reach ~1e-9 here; the gradient of 10 is visibly off).
    errors = [np.abs(gradient(lambda F: svm.svm_dual_unrolled(
        F, Y, lam1, 1.0, iterations=iterations, smoothing=1.0)) - reference).max()
        for iterations in (10, 100)]
    assert errors[1] <= 1e-7 and errors[1] < 1e-2 * errors[0]
