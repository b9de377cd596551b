r"""Group-Lasso multiclass (Crammer-Singer) SVM, solved in the dual, batched over episodes.

For each episode (features F [n, m], one-hot labels Y [n, k]) and W [m, k]
(row W_j holds feature j's weights for the k classes; the public W is its
transpose [k, m]):

    P(W) = sum_i max_l (1 - Y_il + (F W)_il - (F W)_{i y_i})
           + sum_j (lam1 ||W_j||_2 + lam2/2 ||W_j||_2^2).

With V(L) = F^T (Y - L) [m, k] and L [n, k] with rows on the simplex:

    D(L) = <L, Y> + 1/(2 lam2) sum_j ||BST(V_j, lam1)||^2,    P* = n - min_L D(L),
    W(L)_j = BST(V_j, lam1) / lam2,    gap(L) = P(W(L)) + D(L) - n >= 0

(paper eq. 10 with the factor 1/2 its text drops; ARCHITECTURE.md). The
optional `smoothing` rho adds rho/(2 lam2) ||L - Y||^2 to D, which smooths
the hinge in the primal (the authors' `dual_reg`): each max_l becomes
max_{u in simplex} <u, z_i> - rho/(2 lam2) ||u - y_i||^2.

D is smooth with a (||F||_2^2 + rho) / lam2 - Lipschitz gradient
grad D(L) = Y - F W(L) + rho/lam2 (L - Y); the solver is FISTA with exact
row-wise simplex projections and function-value restarts (O'Donoghue &
Candes 2015), stopping per episode when gap <= tol * n (P(0) = n).
"""

from typing import NamedTuple

import tensorflow as tf

from sdis_tf.solvers.prox import block_soft_threshold, safe_norm, simplex_projection


class SVMResult(NamedTuple):
    """W [T, k, m]; dual L [T, n, k] (rows on the simplex); gap [T]; iterations [T]; converged [T]."""
    W: tf.Tensor
    dual: tf.Tensor
    gap: tf.Tensor
    iterations: tf.Tensor
    converged: tf.Tensor


class _Problem(NamedTuple):
    F: tf.Tensor       # [T, n, m]
    Y: tf.Tensor       # [T, n, k]
    lam1: tf.Tensor    # [T, 1, 1]
    lam2: tf.Tensor    # [T, 1, 1]
    rho: tf.Tensor     # scalar smoothing


def _as_problem(F, Y, lam1, lam2, smoothing, name):
    F = tf.convert_to_tensor(F)
    if F.dtype not in (tf.float32, tf.float64) or F.shape.rank != 3:
        raise ValueError(f"{name}: F must be a float32/float64 tensor [T, n, m], got "
                         f"{F.dtype.name} {F.shape}.")
    Y = tf.cast(tf.convert_to_tensor(Y), F.dtype)
    if Y.shape.rank != 3 or not Y.shape[:2].is_compatible_with(F.shape[:2]):
        raise ValueError(f"{name}: Y must be one-hot [T, n, k] matching F [T, n, m], got "
                         f"{Y.shape} and {F.shape}.")
    values = {}
    for field, value in (("lam1", lam1), ("lam2", lam2)):
        value = tf.cast(tf.convert_to_tensor(value, dtype_hint=F.dtype), F.dtype)
        if value.shape.rank not in (0, 1):
            raise ValueError(f"{name}: {field} must be a scalar or [T], got shape {value.shape}.")
        if tf.executing_eagerly():
            bad = value < 0 if field == "lam1" else value <= 0
            if bool(tf.reduce_any(bad)):
                raise ValueError(f"{name}: {field} must be {'>= 0' if field == 'lam1' else '> 0'}, "
                                 f"got {value.numpy()}.")
        values[field] = tf.broadcast_to(value, tf.shape(F)[:1])[:, None, None]
    if not isinstance(smoothing, (int, float)) or smoothing < 0:
        raise ValueError(f"{name}: smoothing must be a number >= 0, got {smoothing!r}.")
    return _Problem(F, Y, values["lam1"], values["lam2"], tf.constant(smoothing, F.dtype))


def _weights(L, p):
    """W(L) [T, m, k] = BST(F^T (Y - L), lam1) / lam2 (rows = features)."""
    V = tf.linalg.matmul(p.F, p.Y - L, transpose_a=True)
    return block_soft_threshold(V, p.lam1) / p.lam2


def _dual_objective(L, W, p):
    """D(L) [T], given W = W(L)."""
    # 1/(2 lam2) ||BST(V, lam1)||^2 = lam2/2 ||W||^2.
    return (tf.reduce_sum(L * p.Y, axis=[1, 2]) + 0.5 * p.lam2[:, 0, 0] * tf.reduce_sum(tf.square(W), axis=[1, 2])
            + 0.5 * p.rho / p.lam2[:, 0, 0] * tf.reduce_sum(tf.square(L - p.Y), axis=[1, 2]))


def _primal_objective(W, p):
    """P(W) [T] for W [T, m, k] (smoothed hinge when rho > 0)."""
    scores = tf.linalg.matmul(p.F, W)
    margins = 1.0 - p.Y + scores - tf.reduce_sum(scores * p.Y, axis=-1, keepdims=True)
    c = p.rho / p.lam2  # [T, 1, 1]; the smoothed max becomes max_l as c -> 0
    safe_c = tf.where(c > 0, c, tf.ones_like(c))
    u = simplex_projection(p.Y + margins / safe_c)
    smoothed = tf.reduce_sum(u * margins, -1) - 0.5 * c[..., 0] * tf.reduce_sum(tf.square(u - p.Y), -1)
    loss = tf.where(c[..., 0] > 0, smoothed, tf.reduce_max(margins, axis=-1))
    norms = safe_norm(W, axis=-1)
    penalty = tf.reduce_sum(p.lam1[:, :, 0] * norms + 0.5 * p.lam2[:, :, 0] * tf.square(norms), axis=-1)
    return tf.reduce_sum(loss, axis=-1) + penalty


def _gap(L, p):
    W = _weights(L, p)
    n = tf.cast(tf.shape(p.F)[1], p.F.dtype)
    return _primal_objective(W, p) + _dual_objective(L, W, p) - n, W


def _dual_gradient(L, p):
    return p.Y - tf.linalg.matmul(p.F, _weights(L, p)) + p.rho / p.lam2 * (L - p.Y)


def _lipschitz(p):
    """(sigma_max(F)^2 + rho) / lam2 per episode [T, 1, 1], from the smaller Gram matrix."""
    n, m = p.F.shape[1], p.F.shape[2]
    transpose_a = n is not None and m is not None and m < n
    gram = tf.linalg.matmul(p.F, p.F, transpose_a=transpose_a, transpose_b=not transpose_a)
    top = tf.reduce_max(tf.linalg.eigvalsh(gram), axis=-1)
    return ((top + p.rho) / p.lam2[:, 0, 0])[:, None, None]


def _wrong_class_uniform(Y):
    """The dual point spreading each row over the wrong classes (W = 0 there)."""
    k = tf.cast(tf.shape(Y)[-1], Y.dtype)
    return (1.0 - Y) / (k - 1.0)


def _fista(p, L0, tol, max_iter):
    n = tf.cast(tf.shape(p.F)[1], p.F.dtype)
    step = 1.0 / _lipschitz(p)
    gap, _ = _gap(L0, p)
    # tol = 0 runs exactly max_iter iterations (a gap rounded to 0 does not stop it).
    unfinished = lambda gap: (gap > tol * n) | (tol == 0)
    active = unfinished(gap)
    dual_value = _dual_objective(L0, _weights(L0, p), p)
    momentum = tf.ones_like(gap)
    iterations = tf.zeros_like(active, tf.int32)

    def body(i, L, Z, momentum, dual_value, gap, iterations, active):
        L_new = simplex_projection(Z - step * _dual_gradient(Z, p))
        new_gap, W_new = _gap(L_new, p)
        new_value = _dual_objective(L_new, W_new, p)
        restart = new_value > dual_value
        next_momentum = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * tf.square(momentum)))
        beta = tf.where(restart, tf.zeros_like(momentum), (momentum - 1.0) / next_momentum)
        Z_new = L_new + beta[:, None, None] * (L_new - L)
        keep = lambda new, old: tf.where(tf.reshape(active, [-1] + [1] * (len(old.shape) - 1)), new, old)
        L, Z = keep(L_new, L), keep(Z_new, Z)
        momentum = keep(tf.where(restart, tf.ones_like(momentum), next_momentum), momentum)
        dual_value, gap = keep(new_value, dual_value), keep(new_gap, gap)
        iterations = keep(tf.fill(tf.shape(iterations), i + 1), iterations)
        return i + 1, L, Z, momentum, dual_value, gap, iterations, active & unfinished(gap)

    _, L, _, _, _, gap, iterations, active = tf.while_loop(
        lambda i, *state: (i < max_iter) & tf.reduce_any(state[-1]),
        body, (0, L0, L0, momentum, dual_value, gap, iterations, active),
        maximum_iterations=max_iter)
    return L, gap, iterations, ~active


@tf.function(jit_compile=True)
def _solve_compiled(F, Y, lam1, lam2, rho, L0, tol, max_iter):
    p = _Problem(F, Y, lam1, lam2, rho)
    L, gap, iterations, converged = _fista(p, L0, tol, max_iter)
    return SVMResult(tf.transpose(_weights(L, p), [0, 2, 1]), L, gap, iterations, converged)


def svm_dual(F, Y, lam1, lam2, *, tol=1e-6, max_iter=2000, smoothing=0.0, dual0=None):
    """Solves a batch of group-Lasso multiclass SVMs in the dual (see the module docstring).

    Args:
      F: [T, n, m] support features; Y: [T, n, k] one-hot labels.
      lam1: group-Lasso strength, scalar or [T], >= 0 (lam1 >= svm_lambda_max gives W = 0).
      lam2: ridge strength, scalar or [T], > 0.
      tol: stop an episode when gap <= tol * n; 0 runs all max_iter iterations
        (a gap certifies the dual point only to ~sqrt(gap) when smoothing > 0, and
        rounds to 0 near 1e-16 n: use tol = 0 for machine-precision solutions).
      max_iter: FISTA iterations budget.
      smoothing: rho >= 0, smoothed-hinge variant (the authors' dual_reg).
      dual0: optional warm start [T, n, k] (rows projected onto the simplex);
        default: uniform over the wrong classes.
    Returns:
      SVMResult(W [T, k, m], dual [T, n, k], gap [T], iterations [T], converged [T]).
    """
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_dual")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"svm_dual: tol must be a number >= 0, got {tol!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"svm_dual: max_iter must be an integer >= 0, got {max_iter!r}.")
    L0 = _wrong_class_uniform(p.Y) if dual0 is None else simplex_projection(tf.cast(dual0, p.F.dtype))
    return _solve_compiled(p.F, p.Y, p.lam1, p.lam2, p.rho, L0, tol, max_iter)


def svm_primal(W, F, Y, lam1, lam2, smoothing=0.0):
    """P(W) [T] for W [T, k, m]."""
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_primal")
    return _primal_objective(tf.transpose(tf.cast(W, p.F.dtype), [0, 2, 1]), p)


def svm_dual_objective(L, F, Y, lam1, lam2, smoothing=0.0):
    """D(L) [T] for L [T, n, k] with rows on the simplex."""
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_dual_objective")
    L = tf.cast(L, p.F.dtype)
    return _dual_objective(L, _weights(L, p), p)


def svm_fixed_point_residual(L, F, Y, lam1, lam2, step, smoothing=0.0):
    """L - P_simplex(L - step * grad D(L)): zero exactly at the dual optimum (any step > 0).

    The optimality map used for implicit differentiation of the SVM head.
    lam1, lam2: [T]; step: [T, 1, 1] or scalar.
    """
    p = _Problem(F, Y, lam1[:, None, None], lam2[:, None, None], tf.constant(smoothing, F.dtype))
    return L - simplex_projection(L - step * _dual_gradient(L, p))


def dual_step_size(F, lam2, smoothing=0.0):
    """1 / Lipschitz constant of grad D: lam2 / (||F||_2^2 + rho), [T, 1, 1]."""
    p = _Problem(F, None, None, tf.reshape(lam2, [-1, 1, 1]), tf.constant(smoothing, F.dtype))
    return 1.0 / _lipschitz(p)


def primal_from_dual(L, F, Y, lam1, lam2):
    """W(L) = BST(F^T (Y - L), lam1) / lam2 as [T, k, m]; lam1, lam2: [T]."""
    p = _Problem(F, Y, lam1[:, None, None], lam2[:, None, None], tf.zeros([], F.dtype))
    return tf.transpose(_weights(L, p), [0, 2, 1])


def svm_lambda_max(F, Y, *, iterations=2000):
    r"""Smallest lam1 giving W = 0, per episode -> [T].

    W = 0 is optimal iff some dual point L with zero mass on each true class
    (the dual optima at W = 0) has max_j ||(F^T (Y - L))_j||_2 <= lam1, so

        lambda_max = min_{L in A} max_j ||(F^T (Y - L))_j||_2,
        A = {rows of L on the simplex, L_{i y_i} = 0}.

    This convex problem is solved by projected subgradient descent with
    diminishing steps from the uniform wrong-class point, keeping the best
    value. Every value returned is attained by a point of A, so W = 0 holds at
    lam1 = the returned value (it is an upper bound of the exact minimum,
    within about 1% after the default iterations; the subgradient method converges
    slowly, O(1/sqrt(iterations))).
    """
    F = tf.convert_to_tensor(F)
    Y = tf.cast(tf.convert_to_tensor(Y), F.dtype)
    return _lambda_max_compiled(F, Y, iterations)


@tf.function(jit_compile=True)
def _lambda_max_compiled(F, Y, iterations):
    def value_and_subgradient(L):
        V = tf.linalg.matmul(F, Y - L, transpose_a=True)             # [T, m, k]
        norms = safe_norm(V, axis=-1)                                 # [T, m]
        top = tf.argmax(norms, axis=-1)
        v_top = tf.gather(V, top, batch_dims=1)                       # [T, k]
        f_top = tf.gather(tf.transpose(F, [0, 2, 1]), top, batch_dims=1)  # [T, n]
        unit = tf.math.divide_no_nan(v_top, tf.reduce_max(norms, -1, keepdims=True))
        return tf.reduce_max(norms, axis=-1), -f_top[:, :, None] * unit[:, None, :]

    def project(L):
        # Force the true class to 0: any entry below max - 1 is zeroed by the projection.
        low = tf.reduce_max(L, axis=-1, keepdims=True) - 2.0
        return simplex_projection(tf.where(Y > 0, low, L))

    L = _wrong_class_uniform(Y)
    best, _ = value_and_subgradient(L)

    def body(i, L, best):
        value, g = value_and_subgradient(L)
        step = 0.5 / tf.sqrt(tf.cast(i + 1, F.dtype))   # entries of L live in [0, 1]
        direction = g / (tf.norm(g, axis=[1, 2], keepdims=True) + 1e-30)
        return i + 1, project(L - step * direction), tf.minimum(best, value)

    _, L, best = tf.while_loop(lambda i, *_: i < iterations, body, (0, L, best),
                               maximum_iterations=iterations)
    return tf.minimum(best, value_and_subgradient(L)[0])


def svm_dual_unrolled(F, Y, lam1, lam2, *, iterations, smoothing=0.0):
    """W [T, k, m] after exactly `iterations` FISTA steps, differentiable by autodiff.

    The unrolled alternative to `implicit.svm_implicit` (and its check).
    """
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_dual_unrolled")
    L, _, _, _ = _fista(p, _wrong_class_uniform(p.Y), 0.0, iterations)  # tol 0: all iterations
    return tf.transpose(_weights(L, p), [0, 2, 1])
