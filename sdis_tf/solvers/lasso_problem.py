r"""The batched (group) Lasso problem shared by its solvers: objective, certificate, lambda_max.

For each task t of a batch (X [T, n, m], Y [T, n, k], lam [T]) the problem is (paper eq. 6
with a Gaussian likelihood; docs/math.md)

    P(W) = 1/(2n) ||Y - X W||_F^2 + lam * sum_j ||W_j||_2,      W [m, k],

the plain Lasso when k = 1 and the group Lasso on rows W_j otherwise (the paper's W in
R^{k x m}, transposed). Both solvers (`sdis_tf.solvers.lasso`, XLA, and the C++ op of
`sdis_tf.solvers.lasso_op`) return a `LassoResult` whose `gap` is the certificate below and
stop on the same rule.

Certificate, with R = Y - X W:

- lam > 0, the duality gap. The dual point theta = R / (n max(lam, ||X^T R/n||_{2,inf})) is
  feasible and

      D(theta) = 1/(2n) (||Y||^2 - ||Y - (lam / max(lam, ||X^T R/n||_{2,inf})) R||^2),
      gap = P(W) - D(theta) >= P(W) - min P >= 0, zero exactly at the optimum;

  a task has converged when gap <= tol * P(0) = tol * ||Y||^2 / (2n) (scale free).
- lam = 0, least squares, the stationarity residual ||X^T (Y - X W)||_F / n (the norm of the
  gradient of P, zero exactly at the least-squares solutions); converged when it is
  <= tol * ||X^T Y||_F / n, its value at W = 0. The duality gap certifies nothing here: the
  dual is feasible only on the null space of X^T, the point above is theta = 0 with D = 0,
  and the gap equals P(W), far from 0 at the solution. The exact suboptimality of least
  squares needs its solution; the residual bounds it only through the conditioning of X
  (P(W) - min P <= residual^2 / (2 sigma_min(X^T X / n))).

A task is reported converged only when its certificate and threshold are finite, the
certificate is within the threshold and W is finite (README, "Error contract").
"""

from typing import NamedTuple

import tensorflow as tf

from sdis_tf.solvers import inputs
from sdis_tf.solvers.prox import safe_norm


class LassoResult(NamedTuple):
    """Solution of a batch of Lasso problems.

    Attributes:
      W: [T, m] (targets [T, n]) or [T, m, k] (targets [T, n, k]); NaN for a task whose
        inputs are not finite or whose arithmetic overflowed (traced calls).
      gap: [T] the certificate at W: the duality gap P(W) - D(theta) where lam > 0, the
        stationarity residual ||X^T (Y - X W)||_F / n where lam = 0 (module docstring).
      epochs: [T] int32, epochs of coordinate descent run for each task.
      converged: [T] bool, gap finite and <= tol * ||Y||^2 / (2n) (lam > 0) or
        <= tol * ||X^T Y||_F / n (lam = 0), and W finite.
    """
    W: tf.Tensor
    gap: tf.Tensor
    epochs: tf.Tensor
    converged: tf.Tensor


def lasso_lambda_max(X, Y):
    """Smallest lam for which W = 0 solves the (group) Lasso: max_j ||X_j^T Y||_2 / n.

    Args:
      X: [T, n, m]. Y: [T, n] or [T, n, k].
    Returns:
      [T] tensor of X's dtype (0 when m = 0; NaN for a task with a NaN or inf, traced).
    Raises:
      ValueError: bad shapes, or (eagerly) a NaN or inf in X or Y.
    """
    batch = inputs.as_batch(X, Y, name="lasso_lambda_max")
    n = inputs.num_samples(batch.X)
    correlations = tf.linalg.matmul(batch.X, batch.Y, transpose_a=True) / n
    value = tf.maximum(tf.reduce_max(safe_norm(correlations, axis=-1), axis=-1),
                       tf.zeros([], batch.X.dtype))
    return inputs.where_tasks(inputs.valid_tasks(batch.X, batch.Y), value)


def _penalty(W3):
    """sum_j ||W_j||_2 for W3 [T, m, k] -> [T]."""
    return tf.reduce_sum(safe_norm(W3, axis=-1), axis=-1)


def _objective_terms(W3, X, Y3, lam):
    """P(W), the duality gap and the stationarity residual, each [T], for W3 [T, m, k]."""
    n = inputs.num_samples(X)
    residual = Y3 - tf.linalg.matmul(X, W3)
    datafit = 0.5 / n * tf.reduce_sum(tf.square(residual), axis=[1, 2])
    primal = datafit + lam * _penalty(W3)
    correlations = tf.linalg.matmul(X, residual, transpose_a=True) / n          # [T, m, k]
    dual_norm = tf.reduce_max(safe_norm(correlations, axis=-1), axis=-1)        # -inf if m = 0
    ratio = tf.math.divide_no_nan(lam, tf.maximum(lam, dual_norm))[:, None, None]
    dual = 0.5 / n * (tf.reduce_sum(tf.square(Y3), axis=[1, 2])
                      - tf.reduce_sum(tf.square(Y3 - ratio * residual), axis=[1, 2]))
    return primal, primal - dual, safe_norm(correlations, axis=[1, 2])


def objective_and_certificate(W3, X, Y3, lam):
    """P(W) and the certificate at W3 [T, m, k] (duality gap, or stationarity where lam = 0)."""
    primal, gap, stationarity = _objective_terms(W3, X, Y3, lam)
    return primal, tf.where(lam > 0, gap, stationarity)


def certificate_threshold(X, Y3, lam, tol):
    """[T] the certificate a converged task stays within: tol ||Y||^2 / (2n) where lam > 0,
    tol ||X^T Y||_F / n where lam = 0 (each the certificate's value at W = 0)."""
    n = inputs.num_samples(X)
    datafit_at_zero = 0.5 / n * tf.reduce_sum(tf.square(Y3), axis=[1, 2])
    gradient_at_zero = safe_norm(tf.linalg.matmul(X, Y3, transpose_a=True) / n, axis=[1, 2])
    return tol * tf.where(lam > 0, datafit_at_zero, gradient_at_zero)


def is_certified(certificate, threshold, W3):
    """[T] converged: finite certificate and threshold, certificate <= threshold, W finite."""
    return (tf.math.is_finite(certificate) & tf.math.is_finite(threshold)
            & (certificate <= threshold) & inputs.finite_tasks(W3))


def _checked(W, X, Y, lam, name):
    batch = inputs.as_batch(X, Y, lam, name=name)
    W = tf.convert_to_tensor(W, dtype=batch.X.dtype)
    return (W[..., None] if batch.single_output else W), batch


def lasso_objective(W, X, Y, lam):
    """P(W) = 1/(2n)||Y - X W||_F^2 + lam sum_j ||W_j||_2 per task -> [T]."""
    W3, batch = _checked(W, X, Y, lam, "lasso_objective")
    return _objective_terms(W3, batch.X, batch.Y, batch.lam)[0]


def lasso_gap(W, X, Y, lam):
    """Duality gap P(W) - D(theta) at W per task -> [T] (module docstring; it equals P(W)
    where lam = 0, where `LassoResult.gap` holds the stationarity residual instead)."""
    W3, batch = _checked(W, X, Y, lam, "lasso_gap")
    return _objective_terms(W3, batch.X, batch.Y, batch.lam)[1]
