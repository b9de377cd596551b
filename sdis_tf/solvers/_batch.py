"""Input checks and shape conventions shared by the batched solvers.

Conventions: X [T, n, m] (T tasks, n samples, m features), targets Y [T, n]
(one output) or [T, n, k] (k outputs sharing a row-sparsity pattern), lam a
scalar or [T]. Internally targets are always [T, n, k].
"""

from typing import NamedTuple

import tensorflow as tf

_FLOAT_DTYPES = (tf.float32, tf.float64)


class Batch(NamedTuple):
    """Checked solver inputs: X [T,n,m], Y [T,n,k], lam [T] (or None), single_output."""
    X: tf.Tensor
    Y: tf.Tensor
    lam: tf.Tensor
    single_output: bool


def as_batch(X, Y, lam=None, *, name: str) -> Batch:
    """Converts and checks (X, Y, lam); raises ValueError naming the bad argument."""
    X = tf.convert_to_tensor(X)
    if X.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: X must be float32 or float64, got dtype {X.dtype.name}.")
    Y = tf.convert_to_tensor(Y, dtype_hint=X.dtype)
    if Y.dtype != X.dtype:
        raise ValueError(f"{name}: Y must have the dtype of X ({X.dtype.name}), "
                         f"got {Y.dtype.name}.")
    if X.shape.rank != 3:
        raise ValueError(f"{name}: X must have shape [T, n, m], got shape {X.shape}.")
    if Y.shape.rank not in (2, 3):
        raise ValueError(f"{name}: Y must have shape [T, n] or [T, n, k], got shape {Y.shape}.")
    if not X.shape[:2].is_compatible_with(Y.shape[:2]):
        raise ValueError(f"{name}: X [T, n, m] and Y [T, n(, k)] disagree on T or n: "
                         f"X.shape={X.shape}, Y.shape={Y.shape}.")
    single_output = Y.shape.rank == 2
    Y3 = Y[..., None] if single_output else Y
    if lam is not None:
        lam = tf.convert_to_tensor(lam, dtype_hint=X.dtype)
        if lam.dtype != X.dtype:
            lam = tf.cast(lam, X.dtype)
        if lam.shape.rank not in (0, 1) or (lam.shape.rank == 1 and not
                                            lam.shape.is_compatible_with(X.shape[:1])):
            raise ValueError(f"{name}: lam must be a scalar or have shape [T] = "
                             f"[{X.shape[0]}], got shape {lam.shape}.")
        if tf.executing_eagerly() and bool(tf.reduce_any(lam < 0)):
            raise ValueError(f"{name}: lam must be >= 0, got {lam.numpy()}.")
        lam = tf.broadcast_to(lam, tf.shape(X)[:1])
    return Batch(X, Y3, lam, single_output)


def num_samples(X) -> tf.Tensor:
    """n as a scalar of X's dtype."""
    return tf.cast(tf.shape(X)[1], X.dtype)


def restore_output_shape(W, single_output: bool):
    """[T, m, k] -> [T, m] when the targets were [T, n]."""
    return W[..., 0] if single_output else W
