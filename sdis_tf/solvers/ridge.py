r"""Batched ridge regression in closed form.

For each task (X [T, n, m], Y [T, n, k], lam [T])

    P(W) = 1/(2n) ||Y - X W||_F^2 + lam/2 ||W||_F^2,
    W = (X^T X / n + lam I_m)^{-1} X^T Y / n = X^T (X X^T + n lam I_n)^{-1} Y.

The m x m (primal) form is factorised by Cholesky when m <= n, the n x n
(dual) form otherwise, so few-shot tasks with m >> n cost O(n^3), not O(m^3).
The certificate is the relative KKT residual
||X^T (X W - Y)/n + lam W||_F / ||X^T Y / n||_F (zero at the solution up to rounding).
"""

from typing import NamedTuple

import tensorflow as tf

from sdis_tf.solvers import _batch


class RidgeResult(NamedTuple):
    """W [T, m] or [T, m, k]; residual [T], the relative KKT residual at W."""
    W: tf.Tensor
    residual: tf.Tensor


def ridge_lambda_max(X):
    """The paper's scale for inner-Ridge (appendix D.2.3): ||X_t||_F^2 / n -> [T]."""
    X = tf.convert_to_tensor(X)
    return tf.reduce_sum(tf.square(X), axis=[1, 2]) / _batch.num_samples(X)


def regularized_gram_solve(X, lam, B):
    """(X^T X / n + lam I)^{-1} B for B [T, m, k], batched.

    Cholesky of the m x m system when m <= n; otherwise the Woodbury identity
    (X^T X/n + lam I)^{-1} = (I - X^T (X X^T + n lam I)^{-1} X) / lam, which
    needs lam > 0.
    """
    n = _batch.num_samples(X)
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
    n = _batch.num_samples(X)
    residual = tf.linalg.matmul(X, W3) - Y3
    return tf.linalg.matmul(X, residual, transpose_a=True) / n + lam[:, None, None] * W3


def _solve(X, Y3, lam):
    n = _batch.num_samples(X)
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
    return W3, residual


def ridge(X, Y, lam):
    """Closed-form batched ridge regression.

    Args:
      X: [T, n, m]; Y: [T, n] or [T, n, k]; lam: scalar or [T], >= 0 (> 0 when m > n
        and X X^T is singular).
    Returns:
      RidgeResult(W [T, m] or [T, m, k], residual [T]).
    """
    batch = _batch.as_batch(X, Y, lam, name="ridge")
    W3, residual = _solve(batch.X, batch.Y, batch.lam)
    return RidgeResult(_batch.restore_output_shape(W3, batch.single_output), residual)


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
    """
    batch = _batch.as_batch(X, Y, name="ridge_path")
    X, Y3 = batch.X, batch.Y
    lams = tf.convert_to_tensor(lams, dtype=X.dtype)
    if lams.shape.rank == 1:
        lams = tf.broadcast_to(lams[None], [tf.shape(X)[0], tf.shape(lams)[0]])
    if lams.shape.rank != 2:
        raise ValueError(f"ridge_path: lams must have shape [L] or [T, L], got {lams.shape}.")
    tf.debugging.assert_greater_equal(lams, tf.zeros([], X.dtype),
                                      message="ridge_path: lams must be >= 0")
    n = _batch.num_samples(X)
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
    W = W3[..., 0] if batch.single_output else W3
    return RidgeResult(W, residuals)
