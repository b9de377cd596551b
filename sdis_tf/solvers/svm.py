r"""Group-Lasso multiclass (Crammer-Singer) SVM, solved in the dual, batched over episodes.

For each episode (features F [n, m], one-hot labels Y [n, k]) and W [m, k]
(row W_j holds feature j's weights for the k classes; the public W is its
transpose [k, m]):

    P(W) = sum_i max_l (1 - Y_il + (F W)_il - (F W)_{i y_i})
           + sum_j (lam1 ||W_j||_2 + lam2/2 ||W_j||_2^2).

With V(L) = F^T (Y - L) [m, k] and L [n, k] with rows on the simplex:

    D(L) = <L, Y> + 1/(2 lam2) sum_j ||BST(V_j, lam1)||^2,    P* = n - min_L D(L),
    W(L)_j = BST(V_j, lam1) / lam2,    gap(L) = P(W(L)) + D(L) - n >= 0

(paper eq. 10 with the factor 1/2 of the conjugate written out; docs/math.md). The
optional `smoothing` rho adds rho/(2 lam2) ||L - Y||^2 to D, which smooths
the hinge in the primal (the authors' `dual_reg`): each max_l becomes
max_{u in simplex} <u, z_i> - rho/(2 lam2) ||u - y_i||^2.

D is smooth with a (||F||_2^2 + rho) / lam2 - Lipschitz gradient
grad D(L) = Y - F W(L) + rho/lam2 (L - Y); the solver is FISTA with exact
row-wise simplex projections and function-value restarts (O'Donoghue &
Candes 2015), stopping per episode when gap <= tol * n (P(0) = n).

Eager calls refuse a NaN or inf in F, Y, lam1, lam2 (or the warm start) with a ValueError
naming it; traced calls give such an episode, and one with lam1 < 0 or lam2 <= 0 or whose
gap is not finite, a NaN W and dual and converged = False (README, "Error contract").
"""

import functools
from typing import NamedTuple

import tensorflow as tf

from sdis_tf.implicit import custom_root, dense_solve
from sdis_tf.solvers import inputs
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
    if Y.shape[2] is not None and Y.shape[2] < 2:
        raise ValueError(f"{name}: Y must be one-hot over k >= 2 classes, got shape {Y.shape}.")
    inputs.check_finite(name, F=F, Y=Y)
    values = {}
    for field, value in (("lam1", lam1), ("lam2", lam2)):
        value = tf.cast(tf.convert_to_tensor(value, dtype_hint=F.dtype), F.dtype)
        if value.shape.rank not in (0, 1):
            raise ValueError(f"{name}: {field} must be a scalar or [T], got shape {value.shape}.")
        value = tf.broadcast_to(value, tf.shape(F)[:1])
        inputs.check_finite(name, **{field: value})
        inputs.check_nonnegative(name, positive=field == "lam2", **{field: value})
        values[field] = value[:, None, None]
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


def _small_gram(F):
    """F^T F [T, m, m] or F F^T [T, n, n], whichever is smaller (same top eigenvalue)."""
    n, m = F.shape[1], F.shape[2]
    transpose_a = n is not None and m is not None and m < n
    return tf.linalg.matmul(F, F, transpose_a=transpose_a, transpose_b=not transpose_a)


def _lipschitz(p):
    """(sigma_max(F)^2 + rho) / lam2 per episode [T, 1, 1]; NaN where F^T F is not finite
    (NaN or inf in F, or overflow), which the eigensolver is never given."""
    gram = _small_gram(p.F)
    finite = inputs.finite_tasks(gram)
    top = tf.reduce_max(tf.linalg.eigvalsh(inputs.where_tasks(finite, gram, 0.0)), axis=-1)
    top = inputs.where_tasks(finite, top)
    return ((top + p.rho) / p.lam2[:, 0, 0])[:, None, None]


def _below_wrong_classes(L, Y):
    """max_{c != y_i} L_ic - 2 per row [T, n, 1]: put on the true class, the simplex
    projection zeroes it (it zeroes every entry below the row's max - 1)."""
    return tf.reduce_max(tf.where(Y > 0, tf.cast(-1e30, L.dtype), L), -1, keepdims=True) - 2.0


def _wrong_class_uniform(Y):
    """The dual point spreading each row over the wrong classes (W = 0 there)."""
    k = tf.cast(tf.shape(Y)[-1], Y.dtype)
    return (1.0 - Y) / (k - 1.0)


def _valid_episodes(p, L0):
    """[T] bool: finite inputs, lam1 >= 0 and lam2 > 0 (what a traced solve accepts)."""
    return (inputs.valid_tasks(p.F, p.Y, L0, p.lam1, p.lam2, nonnegative=(p.lam1,))
            & (p.lam2[:, 0, 0] > 0))


def _fista(p, L0, tol, max_iter):
    """FISTA on the dual from L0 -> (L, gap, iterations, converged), episodes frozen once done.

    Only the episodes of `_valid_episodes` with a finite gap run (the others get a NaN L);
    converged needs the gap finite and <= tol * n (never with tol = 0, which runs all
    max_iter iterations).
    """
    n = tf.cast(tf.shape(p.F)[1], p.F.dtype)
    step = 1.0 / _lipschitz(p)
    gap, _ = _gap(L0, p)
    # tol = 0 runs exactly max_iter iterations (a gap rounded to 0 does not stop it).
    unfinished = lambda gap: ~(gap <= tol * n) | (tol == 0)
    runs = lambda gap: unfinished(gap) & tf.math.is_finite(gap)
    valid = _valid_episodes(p, L0)
    active = valid & runs(gap)
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
        return i + 1, L, Z, momentum, dual_value, gap, iterations, active & runs(gap)

    _, L, _, _, _, gap, iterations, active = tf.while_loop(
        lambda i, *state: (i < max_iter) & tf.reduce_any(state[-1]),
        body, (0, L0, L0, momentum, dual_value, gap, iterations, active),
        maximum_iterations=max_iter)
    usable = valid & tf.math.is_finite(gap)
    converged = usable & ~unfinished(gap) & inputs.finite_tasks(L)
    return inputs.where_tasks(usable, L), inputs.where_tasks(valid, gap), iterations, converged


@tf.function(jit_compile=True)
def _solve_compiled(F, Y, lam1, lam2, rho, L0, tol, max_iter):
    p = _Problem(F, Y, lam1, lam2, rho)
    L, gap, iterations, converged = _fista(p, L0, tol, max_iter)
    W = tf.transpose(_weights(L, p), [0, 2, 1])
    return SVMResult(W, L, gap, iterations, converged & inputs.finite_tasks(W))


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
      SVMResult(W [T, k, m], dual [T, n, k], gap [T], iterations [T], converged [T]);
      converged needs a finite gap <= tol * n and a finite W.
    Raises:
      ValueError: bad shapes or options; eagerly also a NaN or inf in F, Y, lam1, lam2 or
        dual0, lam1 < 0 or lam2 <= 0.
    """
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_dual")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"svm_dual: tol must be a number >= 0, got {tol!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"svm_dual: max_iter must be an integer >= 0, got {max_iter!r}.")
    if dual0 is None:
        L0 = _wrong_class_uniform(p.Y)
    else:
        dual0 = tf.cast(dual0, p.F.dtype)
        inputs.check_finite("svm_dual", dual0=dual0)
        L0 = simplex_projection(dual0)
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


class LambdaMax(NamedTuple):
    """`svm_lambda_max(..., with_bound=True)`: value [T] (attained, W = 0 there) and
    lower [T] (a certified lower bound of the exact lambda_max)."""

    value: tf.Tensor
    lower: tf.Tensor


def svm_lambda_max(F, Y, *, rtol=1e-2, max_iter=1000, with_bound=False):
    r"""Smallest lam1 giving W = 0, per episode -> [T] (or `LambdaMax` with its bound).

    W = 0 is optimal iff some dual point L with zero mass on each true class
    (the dual optima at W = 0) has max_j ||(F^T (Y - L))_j||_2 <= lam1, so

        lambda_max = min_{L in A} max_j ||(F^T (Y - L))_j||_2,
        A = {rows of L on the simplex, L_{i y_i} = 0}
                   = min_{L in A} max_{Z in B} <Z, F^T (Y - L)>,
        B = {Z [m, k] : sum_j ||Z_j||_2 <= 1}
                   = max_{Z in B} sum_i ((F Z)_{i y_i} - max_{c != y_i} (F Z)_ic)

    (the last line by the minimax theorem, A and B compact and convex). The
    bilinear saddle point is solved by the primal-dual hybrid gradient method
    (Chambolle & Pock 2011) with exact projections onto A (row-wise simplex)
    and B (the group l1 ball: the simplex projection of the group norms).
    Every L gives an upper bound, every Z a lower bound; the method stops per
    episode when (upper - lower) <= rtol * upper (checked every 10 iterations),
    or after `max_iter` iterations (rounded up to a multiple of 10). The value returned is the best upper bound, attained by a point
    of A, so W = 0 holds at lam1 = value, and value <= lambda_max / (1 - rtol).

    Args:
      F: [T, n, m] features. Y: [T, n, k] one-hot labels.
      rtol: relative gap at which an episode stops (1% by default: lam1 = eps lambda_max
        with eps a relative knob needs no more).
      max_iter: iteration budget.
      with_bound: also return the certified lower bound.
    """
    p = _as_problem(F, Y, 0.0, 1.0, 0.0, "svm_lambda_max")
    bounds = LambdaMax(*_lambda_max_compiled(p.F, p.Y, tf.constant(rtol, p.F.dtype),
                                             tf.constant(max_iter)))
    valid = inputs.valid_tasks(p.F, p.Y)
    bounds = LambdaMax(*(inputs.where_tasks(valid, bound) for bound in bounds))
    return bounds if with_bound else bounds.value


@tf.function(jit_compile=True)
def _lambda_max_compiled(F, Y, rtol, max_iter):
    dtype = F.dtype
    n = tf.cast(tf.shape(F)[1], dtype)

    def upper(L):                                          # max_j ||V_j(L)|| (0 if m = 0)
        norms = safe_norm(tf.linalg.matmul(F, Y - L, transpose_a=True), -1)
        return tf.maximum(tf.reduce_max(norms, -1), tf.zeros([], dtype))

    def lower(Z):                                                     # min_{L in A} <Z, V(L)>
        G = tf.linalg.matmul(F, Z)                                    # [T, n, k]
        wrong = tf.reduce_max(tf.where(Y > 0, tf.cast(-1e30, dtype), G), -1)
        return tf.reduce_sum(tf.reduce_sum(G * Y, -1) - wrong, -1)

    def project_a(L):
        return simplex_projection(tf.where(Y > 0, _below_wrong_classes(L, Y), L))

    def project_b(Z):
        norms = safe_norm(Z, -1)                                      # [T, m]
        inside = tf.reduce_sum(norms, -1, keepdims=True) <= 1.0
        scale = tf.where(inside, tf.ones_like(norms),
                         tf.math.divide_no_nan(simplex_projection(norms), norms))
        return Z * scale[..., None]

    # Steps with sigma tau ||F||^2 < 1; their ratio balances the diameters of A (~sqrt(n))
    # and B (1).
    norm = tf.sqrt(tf.maximum(tf.reduce_max(tf.linalg.eigvalsh(
        _small_gram(F)), -1), tf.constant(1e-30, dtype)))[:, None, None]
    balance = 0.3 / tf.sqrt(n)
    sigma, tau = 0.99 * balance / norm, 0.99 / (balance * norm)
    L = _wrong_class_uniform(Y)
    Z = tf.zeros(tf.stack([tf.shape(F)[0], tf.shape(F)[2], tf.shape(Y)[2]]), dtype)
    best_upper, best_lower = upper(L), tf.zeros_like(upper(L))
    unfinished = lambda up, low: tf.reduce_any(up - low > rtol * up)

    def body(i, L, L_bar, Z, up, low):
        for _ in range(_BOUND_EVERY):   # the bounds cost as much as a step: check every few
            Z = project_b(Z + sigma * tf.linalg.matmul(F, Y - L_bar, transpose_a=True))
            L_new = project_a(L + tau * tf.linalg.matmul(F, Z))
            L, L_bar = L_new, 2.0 * L_new - L
        return (i + _BOUND_EVERY, L, L_bar, Z, tf.minimum(up, upper(L)),
                tf.maximum(low, lower(Z)))

    *_, best_upper, best_lower = tf.while_loop(
        lambda i, L, L_bar, Z, up, low: (i < max_iter) & unfinished(up, low), body,
        (tf.constant(0), L, L, Z, best_upper, best_lower))
    return best_upper, tf.minimum(best_lower, best_upper)


_BOUND_EVERY = 10
"""PDHG steps of `svm_lambda_max` between evaluations of its bounds."""


def svm_dual_unrolled(F, Y, lam1, lam2, *, iterations, smoothing=0.0):
    """W [T, k, m] after exactly `iterations` FISTA steps, differentiable by autodiff.

    The unrolled alternative to `implicit.svm_implicit` (and its check).
    """
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_dual_unrolled")
    L, _, _, _ = _fista(p, _wrong_class_uniform(p.Y), 0.0, iterations)  # tol 0: all iterations
    return tf.transpose(_weights(L, p), [0, 2, 1])


def svm_implicit(F, Y, lam1, lam2, *, smoothing=0.0, **solver_kwargs):
    """`solvers.svm_dual` with gradients w.r.t. F, Y, lam1, lam2 by implicit differentiation.

    The dual optimum L* is the fixed point L = P_simplex(L - s grad D(L)) for
    any step s > 0 (s = 1/Lipschitz under stop-gradient); the system is solved
    densely (`dense_solve`, d = n k unknowns). W = BST(F^T (Y - L*), lam1) /
    lam2 is then differentiated by ordinary autodiff, through L* and directly.
    Returns (W [T, k, m], SVMResult).
    """
    p = _as_problem(F, Y, lam1, lam2, smoothing, "svm_implicit")
    F, Y, lam1, lam2 = p.F, p.Y, p.lam1[:, 0, 0], p.lam2[:, 0, 0]
    step = tf.stop_gradient(dual_step_size(F, lam2, smoothing))

    def optimality(L, F, Y, lam1, lam2):
        return svm_fixed_point_residual(L, F, Y, lam1, lam2, step, smoothing)

    @custom_root(optimality, functools.partial(dense_solve, optimality))
    def solve(F, Y, lam1, lam2):
        result = svm_dual(F, Y, lam1, lam2, smoothing=smoothing, **solver_kwargs)
        return result.dual, result

    dual, result = solve(F, Y, lam1, lam2)
    W = primal_from_dual(dual, F, Y, lam1, lam2)
    return W, result._replace(W=tf.stop_gradient(W), dual=dual)
