"""Implicit gradients against central finite differences, unrolling and autodiff."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import implicit, solvers
from sdis_tf.solvers import lasso_grad, lasso_op
from sdis_tf.solvers.lasso_grad import support_hessian_inverse, support_hessian_matvec
from sdis_tf.solvers.ridge import ridge_optimality


def directional_check(loss, args, rng, h=1e-6):
    """Relative error of <grad, D> against a central difference along random D, per argument."""
    tensors = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = loss(*tensors)
    grads = tape.gradient(value, tensors)
    errors = []
    for i, (arg, grad) in enumerate(zip(args, grads)):
        direction = rng.standard_normal(np.shape(arg))
        plus = [tf.constant(a + h * direction if j == i else a) for j, a in enumerate(args)]
        minus = [tf.constant(a - h * direction if j == i else a) for j, a in enumerate(args)]
        fd = (loss(*plus) - loss(*minus)).numpy() / (2 * h)
        analytic = float(np.sum(grad.numpy() * direction))
        errors.append(abs(analytic - fd) / max(abs(fd), 1e-12))
    return errors


@pytest.mark.parametrize("k", [1, 3])
def test_lasso_gradient_matches_finite_differences(k):
    rng = np.random.default_rng(k)
    T, n, m = 3, 25, 8
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lam = 0.15 * solvers.lasso_lambda_max(X, Y).numpy()
    cotangent = tf.constant(rng.standard_normal((T, m) if k == 1 else (T, m, k)))

    def loss(X, Y, lam):
        W, _ = solvers.lasso_implicit(X, Y, lam, tol=1e-15, max_epochs=50_000)
        return tf.reduce_sum(W * cotangent)

    errors = directional_check(loss, [X, Y, lam], rng)
    assert max(errors) <= 1e-5, errors


@pytest.mark.parametrize("linear_solve", ["op", "woodbury", "block-jacobi"])
def test_lasso_gradient_with_more_features_than_samples(linear_solve, monkeypatch):
    """Every linear solve of the backward: the C++ op's, and the TensorFlow CG of the XLA
    backend with both its preconditioners, Woodbury on the gathered supports and
    block-Jacobi once a support exceeds the threshold (here forced to 0)."""
    if linear_solve == "op" and not lasso_op.op_available():
        pytest.skip("the C++ Lasso ops are not built")
    backend = "op" if linear_solve == "op" else "xla"
    monkeypatch.setattr(lasso_grad, "WOODBURY_MAX_SUPPORT", 0 if linear_solve == "block-jacobi"
                        else 128)
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((2, 10, 30)), rng.standard_normal((2, 10, 2))
    lam = 0.2 * solvers.lasso_lambda_max(X, Y).numpy()

    def loss(X, Y, lam):
        W, _ = solvers.lasso_implicit(X, Y, lam, tol=1e-15, max_epochs=100_000, backend=backend)
        return tf.reduce_sum(tf.sin(W))

    assert max(directional_check(loss, [X, Y, lam], rng)) <= 1e-5


def test_empty_support_and_zero_groups_give_finite_zero_gradients():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((2, 10, 4)), rng.standard_normal((2, 10, 3))
    X[1, :, 0] = 0.0  # a zero column: its group is exactly zero
    Xt, Yt = tf.constant(X), tf.constant(Y)
    lam = tf.constant([2.0, 0.05], tf.float64) * solvers.lasso_lambda_max(X, Y)  # task 0: W = 0
    with tf.GradientTape() as tape:
        tape.watch([Xt, Yt, lam])
        W, _ = solvers.lasso_implicit(Xt, Yt, lam, tol=1e-12)
        loss = tf.reduce_sum(W ** 2) + tf.reduce_sum(W)
    grads = tape.gradient(loss, [Xt, Yt, lam])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert np.all(W.numpy()[0] == 0) and np.all(W.numpy()[1, 0] == 0)
    assert np.all(grads[0].numpy()[0] == 0) and np.all(grads[1].numpy()[0] == 0)


def test_unrolled_gradients_converge_to_implicit():
    rng = np.random.default_rng(4)
    X, Y = tf.constant(rng.standard_normal((2, 30, 6))), tf.constant(rng.standard_normal((2, 30)))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y)

    def gradient(solve):
        with tf.GradientTape() as tape:
            tape.watch(X)
            loss = tf.reduce_sum(tf.square(solve(X)))
        return tape.gradient(loss, X).numpy()

    reference = gradient(lambda X: solvers.lasso_implicit(X, Y, lam, tol=1e-15, max_epochs=10_000)[0])
    errors = [np.abs(gradient(lambda X: solvers.lasso_unrolled(X, Y, lam, epochs=e)) - reference).max()
              for e in (2, 10, 80)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8, errors


def test_gradient_under_jit_compile_equals_eager():
    rng = np.random.default_rng(5)
    X, Y = tf.constant(rng.standard_normal((3, 20, 5))), tf.constant(rng.standard_normal((3, 20, 2)))

    def grad_fn(X, Y):
        with tf.GradientTape() as tape:
            tape.watch(X)
            W, _ = solvers.lasso_implicit(X, Y, 0.1 * solvers.lasso_lambda_max(X, Y), tol=1e-12)
            loss = tf.reduce_sum(tf.tanh(W))
        return tape.gradient(loss, X)

    np.testing.assert_allclose(tf.function(grad_fn, jit_compile=True)(X, Y).numpy(),
                               grad_fn(X, Y).numpy(), atol=1e-10)


def _dense_support_hessian(W, X, lam):
    """The operator of `support_hessian_matvec` as dense [T, m k, m k] matrices (reference)."""
    T, m, k = W.shape
    matvec = support_hessian_matvec(W, X, lam)
    basis = np.eye(m * k).reshape(m * k, m, k)
    columns = [matvec(tf.constant(np.broadcast_to(e, (T, m, k)))).numpy().reshape(T, m * k)
               for e in basis]
    return np.stack(columns, axis=-1)


@pytest.mark.parametrize("T, n, m, k, active, lam_factor, min_support", [
    (3, 20, 12, 1, 0.3, 0.1, 2),     # Lasso: H = the support Gram matrix
    (3, 10, 16, 3, 1.0, 0.05, 11),   # group Lasso with more active groups than samples
    (2, 15, 6, 2, 1.0, 0.0, 6),      # lam = 0: no curvature, least squares
], ids=["lasso", "group-support>n", "lam=0"])
def test_woodbury_inverse_of_the_support_hessian_matches_a_dense_solve(
        T, n, m, k, active, lam_factor, min_support):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((T, n, m))
    W_true = rng.standard_normal((T, m, k)) * (rng.random((T, m, 1)) < active)
    Y = X @ W_true + 0.1 * rng.standard_normal((T, n, k))
    Y[0] = 0.0  # a task with an empty support
    lam = lam_factor * solvers.lasso_lambda_max(X, Y).numpy()
    W = solvers.lasso(X, Y, lam, tol=1e-14, max_epochs=100_000).W
    support = np.linalg.norm(W.numpy(), axis=-1) > 0
    assert not support[0].any() and (support[1:].sum(axis=-1) >= min_support).all(), support
    R = rng.standard_normal((T, m, k))
    expected = np.linalg.solve(_dense_support_hessian(W, X, tf.constant(lam)),
                               R.reshape(T, m * k)[..., None]).reshape(T, m, k)
    got = support_hessian_inverse(W, tf.constant(X), tf.constant(lam))(tf.constant(R)).numpy()
    # exact up to the 1e-12 relative jitter that keeps a singular Gram matrix factorisable
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9 * np.abs(expected).max())
    if lasso_op.op_available():  # the same solve in C++ (refined: the jitter's effect removed)
        op = lasso_op.lasso_implicit_vjp(tf.constant(X), tf.constant(Y), W, tf.constant(lam),
                                         tf.constant(R)).U
        np.testing.assert_allclose(op, expected, rtol=1e-9, atol=1e-11 * np.abs(expected).max())
        op32 = lasso_op.lasso_implicit_vjp(*(tf.constant(a, tf.float32)
                                             for a in (X, Y, W.numpy(), lam, R))).U
        assert op32.dtype == tf.float32
        np.testing.assert_allclose(op32, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(2, 20, 6), (2, 8, 15)], ids=["m<=n", "m>n"])
def test_ridge_gradient_matches_finite_differences_and_autodiff(shape):
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal(shape), rng.standard_normal(shape[:2] + (2,))
    lam = np.array([0.3, 0.05])

    def loss(X, Y, lam):
        return tf.reduce_sum(tf.cos(solvers.ridge_implicit(X, Y, lam)[0]))

    assert max(directional_check(loss, [X, Y, lam], rng)) <= 1e-6
    Xt = tf.constant(X)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(Xt)
        closed_form = tf.linalg.solve(tf.linalg.matmul(Xt, Xt, transpose_a=True) / shape[1]
                                      + lam[:, None, None] * tf.eye(shape[2], dtype=tf.float64),
                                      tf.linalg.matmul(Xt, Y, transpose_a=True) / shape[1])
        ours = solvers.ridge_implicit(Xt, Y, lam)[0]
        losses = [tf.reduce_sum(tf.cos(w)) for w in (closed_form, ours)]
    np.testing.assert_allclose(tape.gradient(losses[1], Xt).numpy(),
                               tape.gradient(losses[0], Xt).numpy(), atol=1e-10)


def test_conjugate_gradient_solves_batched_spd_systems():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((3, 6, 6))
    A = A @ np.transpose(A, (0, 2, 1)) + 0.1 * np.eye(6)
    b = rng.standard_normal((3, 6))
    x = implicit.conjugate_gradient(lambda v: tf.einsum("tij,tj->ti", A, v), tf.constant(b),
                                    max_iter=12)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-8)


def test_custom_root_default_solver_uses_autodiff_products():
    """The generic path (no problem-specific linear solve) gives the ridge gradient too."""
    rng = np.random.default_rng(8)
    X, Y, lam = rng.standard_normal((2, 15, 4)), rng.standard_normal((2, 15, 1)), np.array([0.2, 0.4])

    @implicit.custom_root(ridge_optimality)
    def generic(X, Y, lam):
        result = solvers.ridge(X, Y, lam)
        return result.W, result

    def loss_generic(X, Y, lam):
        return tf.reduce_sum(generic(X, Y, lam)[0] ** 3)

    assert max(directional_check(loss_generic, [X, Y, lam], rng)) <= 1e-6


def test_dense_solve_is_stable_in_float32_on_ill_conditioned_singular_jacobians():
    """J^T u = c in the Tikhonov least-squares sense, J [400 x 400] with singular values from
    1 down to 1e-4 and three exact zeros (an SVM dual fixed point with a degenerate face).
    The float32 normal equations miss this answer by far more than the tolerance (and broke
    down with NaN gradients on a real 20-way Omniglot episode)."""
    rng = np.random.default_rng(9)
    T, d = 2, 400
    singular = np.concatenate([np.logspace(0, -4, d - 3), np.zeros(3)])
    U = np.linalg.qr(rng.standard_normal((T, d, d)))[0]
    V = np.linalg.qr(rng.standard_normal((T, d, d)))[0]
    J = (U * singular) @ np.transpose(V, (0, 2, 1))
    c = rng.standard_normal((T, d))

    def optimality(sol, jacobian):
        return tf.einsum("tij,tj->ti", jacobian, sol)

    u = implicit.dense_solve(optimality, tf.constant(c, tf.float32), tf.zeros([T, d], tf.float32),
                             (tf.constant(J, tf.float32),)).numpy()
    regularizer = implicit.DENSE_SOLVE_REGULARIZER[tf.float32]
    expected = np.linalg.solve(J @ np.transpose(J, (0, 2, 1)) + regularizer * np.eye(d),
                               (J @ c[..., None]))[..., 0]
    assert np.isfinite(u).all()
    np.testing.assert_allclose(u, expected, atol=2e-3 * np.abs(expected).max())
