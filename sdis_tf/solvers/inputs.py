"""Input checks and shape conventions shared by the batched solvers.

Conventions: X [T, n, m] (T tasks, n samples, m features), targets Y [T, n]
(one output) or [T, n, k] (k outputs sharing a row-sparsity pattern), lam a
scalar or [T]. Internally targets are always [T, n, k].

Error contract (README, "Error contract"): a non-finite input raises a ValueError
naming the argument and its first bad task when the call runs eagerly
(`check_finite`); while tracing (`tf.function`, XLA) the solvers instead mark the
tasks that `valid_tasks` rejects: NaN solution, NaN certificate, converged = False.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

_FLOAT_DTYPES = (tf.float32, tf.float64)


class Batch(NamedTuple):
    """Checked solver inputs: X [T,n,m], Y [T,n,k], lam [T] (or None), single_output."""
    X: tf.Tensor
    Y: tf.Tensor
    lam: tf.Tensor
    single_output: bool


def as_features(X, *, name: str) -> tf.Tensor:
    """X as a float tensor [T, n, m] with n >= 1 (eagerly also finite); else a ValueError."""
    X = tf.convert_to_tensor(X)
    if X.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: X must be float32 or float64, got dtype {X.dtype.name}.")
    if X.shape.rank != 3:
        raise ValueError(f"{name}: X must have shape [T, n, m], got shape {X.shape}.")
    if X.shape[1] == 0:
        raise ValueError(f"{name}: X must have at least one sample (n >= 1), got shape {X.shape}.")
    check_finite(name, X=X)
    return X


def as_batch(X, Y, lam=None, *, name: str) -> Batch:
    """Converts and checks (X, Y, lam); raises ValueError naming the bad argument."""
    X = as_features(X, name=name)
    Y = tf.convert_to_tensor(Y, dtype_hint=X.dtype)
    if Y.dtype != X.dtype:
        raise ValueError(f"{name}: Y must have the dtype of X ({X.dtype.name}), "
                         f"got {Y.dtype.name}.")
    if Y.shape.rank not in (2, 3):
        raise ValueError(f"{name}: Y must have shape [T, n] or [T, n, k], got shape {Y.shape}.")
    if not X.shape[:2].is_compatible_with(Y.shape[:2]):
        raise ValueError(f"{name}: X [T, n, m] and Y [T, n(, k)] disagree on T or n: "
                         f"X.shape={X.shape}, Y.shape={Y.shape}.")
    single_output = Y.shape.rank == 2
    Y3 = Y[..., None] if single_output else Y
    check_finite(name, Y=Y3)
    if lam is not None:
        lam = tf.convert_to_tensor(lam, dtype_hint=X.dtype)
        if lam.dtype != X.dtype:
            lam = tf.cast(lam, X.dtype)
        if lam.shape.rank not in (0, 1) or (lam.shape.rank == 1 and not
                                            lam.shape.is_compatible_with(X.shape[:1])):
            raise ValueError(f"{name}: lam must be a scalar or have shape [T] = "
                             f"[{X.shape[0]}], got shape {lam.shape}.")
        lam = tf.broadcast_to(lam, tf.shape(X)[:1])
        check_finite(name, lam=lam)
        check_nonnegative(name, lam=lam)
    return Batch(X, Y3, lam, single_output)


def finite_tasks(tensor) -> tf.Tensor:
    """[T] bool: True for the tasks (leading axis) whose entries of `tensor` are all finite."""
    return tf.reduce_all(tf.math.is_finite(tensor), axis=list(range(1, tensor.shape.rank)))


def check_finite(name: str, **tensors) -> None:
    """Eagerly, raises a ValueError naming the first argument with a NaN or inf and its first
    such task; while tracing it does nothing (the solvers mark those tasks, `valid_tasks`).
    None values are skipped."""
    if not tf.executing_eagerly():
        return
    for field, tensor in tensors.items():
        if tensor is None:
            continue
        bad = np.flatnonzero(~finite_tasks(tensor).numpy())
        if bad.size:
            raise ValueError(f"{name}: {field} has NaN or inf at task {bad[0]} ({bad.size} of "
                             f"{tensor.shape[0]} tasks); inputs must be finite.")


def check_nonnegative(name: str, *, positive: bool = False, **tensors) -> None:
    """Eagerly, raises a ValueError naming the first argument (and task) with a value < 0
    (<= 0 if `positive`); while tracing it does nothing, as `check_finite`."""
    if not tf.executing_eagerly():
        return
    for field, tensor in tensors.items():
        values = tensor.numpy().reshape(tensor.shape[0], -1 if tensor.shape[0] else 0)
        bad = np.flatnonzero(np.any(values <= 0 if positive else values < 0, axis=1))
        if bad.size:
            raise ValueError(f"{name}: {field} must be {'> 0' if positive else '>= 0'}, got "
                             f"{np.min(values[bad[0]]):g} at task {bad[0]}.")


def valid_tasks(*tensors, nonnegative=()) -> tf.Tensor:
    """[T] bool: the tasks whose `tensors` are all finite and whose `nonnegative` ones are >= 0.

    What a traced solver accepts; the other tasks get a NaN solution and converged = False.
    """
    valid = finite_tasks(tensors[0])
    for tensor in tensors[1:]:
        valid &= finite_tasks(tensor)
    for tensor in nonnegative:
        valid &= tf.reduce_all(tensor >= 0, axis=list(range(1, tensor.shape.rank)))
    return valid


def where_tasks(keep, tensor, fill=float("nan")):
    """`tensor` [T, ...] with the tasks where `keep` [T] is False set to `fill`."""
    keep = tf.reshape(keep, tf.concat([tf.shape(keep), tf.ones([tensor.shape.rank - 1],
                                                                tf.int32)], 0))
    return tf.where(keep, tensor, tf.cast(fill, tensor.dtype))


def num_samples(X) -> tf.Tensor:
    """n as a scalar of X's dtype."""
    return tf.cast(tf.shape(X)[1], X.dtype)


def restore_output_shape(W, single_output: bool):
    """[T, m, k] -> [T, m] when the targets were [T, n]."""
    return W[..., 0] if single_output else W
