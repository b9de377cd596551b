"""Proximal operators and gradient-safe norms shared by the solvers.

All functions are batched (any leading axes) and differentiable everywhere with
finite gradients: norms of zero vectors and thresholds of zero vectors give 0,
never 0/0 (a plain v / ||v|| would give NaN values and gradients at v = 0).
"""

import tensorflow as tf


def safe_norm(v, axis=-1, keepdims=False):
    """Euclidean norm ||v||_2 over `axis`, with gradient 0 (not NaN) at v = 0.

    Uses the double-`where` pattern: the square root never sees 0, so its
    derivative is finite on both branches. The other branch passes the squared
    norm through: 0 at v = 0 (gradient 2v = 0), NaN when v holds a NaN (never 0).
    """
    squared = tf.reduce_sum(tf.square(v), axis=axis, keepdims=keepdims)
    positive = squared > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))),
                    squared)


def block_soft_threshold(v, threshold, axis=-1):
    """Block soft-thresholding, the prox of t * ||.||_2 (the group-Lasso prox).

        BST(v, t) = max(0, 1 - t / ||v||_2) * v
                  = argmin_u 1/2 ||u - v||^2 + t ||u||_2,

    the norm taken over `axis`. For a block of size 1 this is the scalar soft
    threshold sign(v) max(|v| - t, 0). `threshold` (t >= 0) broadcasts against
    `v` with `axis` kept (e.g. shape [T, 1] for v [T, k]). BST(0, t) = 0 with a
    finite gradient.
    """
    norm = safe_norm(v, axis=axis, keepdims=True)
    positive = norm > 0
    safe = tf.where(positive, norm, tf.ones_like(norm))
    scale = tf.where(positive, tf.nn.relu(1.0 - threshold / safe), tf.zeros_like(norm))
    return scale * v


def simplex_projection(v):
    """Euclidean projection of each row (last axis) onto the probability simplex.

        P(v) = argmin_{u >= 0, sum(u) = 1} ||u - v||_2 = max(v - tau, 0),

    with tau from the sorted values (Held et al. 1974; Duchi et al. 2008):
    rho = max{j : u_(j) - (sum_{i<=j} u_(i) - 1) / j > 0}, tau = (sum_{i<=rho} u_(i) - 1) / rho.
    Exact in O(k log k) per row; differentiable almost everywhere (the
    Jacobian is diag(s) - s s^T / |s| on the support s).
    """
    k = tf.shape(v)[-1]
    sorted_v = tf.sort(v, axis=-1, direction="DESCENDING")
    cumulative = tf.cumsum(sorted_v, axis=-1) - 1.0
    ranks = tf.cast(tf.range(1, k + 1), v.dtype)
    condition = sorted_v - cumulative / ranks > 0
    rho = tf.reduce_sum(tf.cast(condition, tf.int32), axis=-1, keepdims=True)  # >= 1 always
    tau = tf.gather(cumulative, rho - 1, batch_dims=len(v.shape) - 1) / tf.cast(rho, v.dtype)
    return tf.nn.relu(v - tau)
