r"""Batched ridge regression in closed form.

For each task (X [T, n, m], Y [T, n, k], lam [T])

    P(W) = 1/(2n) ||Y - X W||_F^2 + lam/2 ||W||_F^2,
    W = (X^T X / n + lam I_m)^{-1} X^T Y / n = X^T (X X^T + n lam I_n)^{-1} Y.

The m x m (primal) form is factorised by Cholesky when m <= n, the n x n
(dual) form otherwise, so few-shot tasks with m >> n cost O(n^3), not O(m^3).
The certificate is the relative KKT residual
||X^T (X W - Y)/n + lam W||_F / ||X^T Y / n||_F (zero at the solution up to rounding).
Eager calls refuse a NaN or inf input or a negative lam with a ValueError; traced calls give
such a task a NaN W and a NaN residual (README, "Error contract"), as does overflow.
"""

from typing import NamedTuple

import tensorflow as tf

from sdis_tf.implicit import custom_root
from sdis_tf.solvers import inputs


class RidgeResult(NamedTuple):
    """W [T, m] or [T, m, k]; residual [T], the relative KKT residual at W."""
    W: tf.Tensor
    residual: tf.Tensor


def ridge_lambda_max(X):
    """The paper's scale for inner-Ridge (appendix D.2.3): ||X_t||_F^2 / n -> [T]
    (NaN for a task with a NaN or inf, traced; eager calls raise)."""
    X = inputs.as_features(X, name="ridge_lambda_max")
    value = tf.reduce_sum(tf.square(X), axis=[1, 2]) / inputs.num_samples(X)
    return inputs.where_tasks(inputs.finite_tasks(X), value)


def regularized_gram_solve(X, lam, B):
    """(X^T X / n + lam I)^{-1} B for B [T, m, k], batched.

    Cholesky of the m x m system when m <= n; otherwise the Woodbury identity
    (X^T X/n + lam I)^{-1} = (I - X^T (X X^T + n lam I)^{-1} X) / lam, which
    needs lam > 0.
    """
    n = inputs.num_samples(X)
    lam = lam[:, None, None]
    if X.shape[2] is not None and X.shape[1] is not None and X.shape[2] > X.shape[1]:
        kernel = tf.linalg.matmul(X, X, transpose_b=True)
        kernel += n * lam * tf.eye(tf.shape(X)[1], dtype=X.dtype)
        inner = tf.linalg.cholesky_solve(tf.linalg.cholesky(kernel), tf.linalg.matmul(X, B))
        return (B - tf.linalg.matmul(X, inner, transpose_a=True)) / lam
    system = tf.linalg.matmul(X, X, transpose_a=True) / n
    system += lam * tf.eye(tf.shape(X)[2], dtype=X.dtype)
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(system), B)


def ridge_optimality(W3, X, Y3, lam):
    """Gradient of P: X^T (X W - Y) / n + lam W, zero exactly at the solution."""
    n = inputs.num_samples(X)
    residual = tf.linalg.matmul(X, W3) - Y3
    return tf.linalg.matmul(X, residual, transpose_a=True) / n + lam[:, None, None] * W3


def _solve(X, Y3, lam):
    valid = inputs.valid_tasks(X, Y3, lam, nonnegative=(lam,))
    lam = tf.where(valid, lam, tf.ones_like(lam))  # a rejected task still factorises
    n = inputs.num_samples(X)
    if X.shape[2] is not None and X.shape[1] is not None and X.shape[2] > X.shape[1]:
        kernel = tf.linalg.matmul(X, X, transpose_b=True)
        kernel += n * lam[:, None, None] * tf.eye(tf.shape(X)[1], dtype=X.dtype)
        W3 = tf.linalg.matmul(X, tf.linalg.cholesky_solve(tf.linalg.cholesky(kernel), Y3),
                              transpose_a=True)
    else:
        W3 = regularized_gram_solve(X, lam, tf.linalg.matmul(X, Y3, transpose_a=True) / n)
    scale = tf.norm(tf.linalg.matmul(X, Y3, transpose_a=True) / n, axis=[1, 2])
    residual = tf.math.divide_no_nan(tf.norm(ridge_optimality(W3, X, Y3, lam), axis=[1, 2]),
                                     scale)
    residual = inputs.where_tasks(valid, residual)
    return inputs.where_tasks(tf.math.is_finite(residual), W3), residual


def ridge(X, Y, lam):
    """Closed-form batched ridge regression.

    Args:
      X: [T, n, m]; Y: [T, n] or [T, n, k]; lam: scalar or [T], >= 0 (> 0 when m > n
        and X X^T is singular).
    Returns:
      RidgeResult(W [T, m] or [T, m, k], residual [T]).
    Raises:
      ValueError: bad shapes; eagerly also a NaN or inf in X, Y or lam, or lam < 0.
    """
    batch = inputs.as_batch(X, Y, lam, name="ridge")
    W3, residual = _solve(batch.X, batch.Y, batch.lam)
    return RidgeResult(inputs.restore_output_shape(W3, batch.single_output), residual)


def ridge_path(X, Y, lams):
    r"""Ridge solutions for a whole grid of lambdas from one SVD per task.

    With X_t = U S V^T (thin SVD, r = min(n, m) singular values s_i),

        W(lam) = V diag(s_i / (s_i^2 + n lam)) U^T Y,

    so L values of lam cost one O(n m r) factorisation plus O(L m r k), instead
    of L Cholesky factorisations (`ridge`). Same objective and certificate as `ridge`.

    Args:
      X: [T, n, m]; Y: [T, n] or [T, n, k];
      lams: [L] (the same grid for every task) or [T, L], >= 0 (> 0 where X_t
        is rank deficient).
    Returns:
      RidgeResult(W [L, T, m] or [L, T, m, k], residual [L, T]).
    Raises:
      ValueError: bad shapes; eagerly also a NaN or inf in X, Y or lams, or lams < 0.
    """
    batch = inputs.as_batch(X, Y, name="ridge_path")
    X, Y3 = batch.X, batch.Y
    lams = tf.convert_to_tensor(lams, dtype=X.dtype)
    if lams.shape.rank == 1:
        lams = tf.broadcast_to(lams[None], [tf.shape(X)[0], tf.shape(lams)[0]])
    if lams.shape.rank != 2:
        raise ValueError(f"ridge_path: lams must have shape [L] or [T, L], got {lams.shape}.")
    inputs.check_finite("ridge_path", lams=lams)
    inputs.check_nonnegative("ridge_path", lams=lams)
    valid = inputs.valid_tasks(X, Y3, lams, nonnegative=(lams,))
    lams = tf.where(valid[:, None], lams, tf.ones_like(lams))
    n = inputs.num_samples(X)
    s, U, V = tf.linalg.svd(X, full_matrices=False)          # [T, r], [T, n, r], [T, m, r]
    projected = tf.linalg.matmul(U, Y3, transpose_a=True)     # [T, r, k]
    lam_path = tf.transpose(lams)                             # [L, T]
    shrink = tf.math.divide_no_nan(s[None], tf.square(s)[None] + n * lam_path[:, :, None])
    W3 = tf.einsum("tmr,ltr,trk->ltmk", V, shrink, projected)  # [L, T, m, k]
    scale = tf.norm(tf.linalg.matmul(X, Y3, transpose_a=True) / n, axis=[1, 2])

    def residual(args):
        W3_l, lam_l = args
        return tf.math.divide_no_nan(
            tf.norm(ridge_optimality(W3_l, X, Y3, lam_l), axis=[1, 2]), scale)

    residuals = tf.map_fn(residual, (W3, lam_path), fn_output_signature=X.dtype)
    residuals = tf.where(valid[None], residuals, tf.constant(float("nan"), X.dtype))
    # No usable W where its certificate is not finite (an input error, or overflow).
    W3 = tf.where(tf.math.is_finite(residuals)[:, :, None, None], W3,
                  tf.constant(float("nan"), X.dtype))
    W = W3[..., 0] if batch.single_output else W3
    return RidgeResult(W, residuals)


def _ridge_linear_solve(cotangent, sol, args):
    X, _, lam = args
    return regularized_gram_solve(X, lam, cotangent)


def ridge_implicit(X, Y, lam):
    """`solvers.ridge` with the implicit gradient of its closed form (J = X^T X / n + lam I).

    Returns (W, RidgeResult).
    """
    batch = inputs.as_batch(X, Y, lam, name="ridge_implicit")

    @custom_root(ridge_optimality, _ridge_linear_solve)
    def solve(X, Y3, lam):
        result = ridge(X, Y3, lam)
        return result.W, result

    W3, result = solve(batch.X, batch.Y, batch.lam)
    W = inputs.restore_output_shape(W3, batch.single_output)
    return W, result._replace(W=W)
