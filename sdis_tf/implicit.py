r"""Implicit differentiation of argmin layers (one mechanism for every solver).

A solver returns `sol` with F(sol, *args) = 0 for an optimality map F. By the
implicit function theorem, for a loss L with cotangent C = dL/dsol,

    J^T u = C,   J = dF/dsol,        dL/dargs = -(dF/dargs)^T u,

(Bertrand et al. 2020; jaxopt's `root_vjp`). The gradient is defined by F
alone, not by how `sol` was found: the XLA coordinate descent and the C++ op
share it. The pull-back through dF/dargs is ordinary autodiff of F; the linear
system is solved by `linear_solve` (default: batched conjugate gradient with
the autodiff product v -> J^T v, which needs J symmetric positive
(semi)definite, as it is for the support-restricted Lasso and for ridge). For
the Lasso outside XLA, a C++ kernel computes both steps for the same F
(`lasso_op.lasso_implicit_vjp`, tested against them).

Differentiable solvers built on it: `lasso_implicit`, `ridge_implicit`, `svm_implicit`.
"""

import functools

import tensorflow as tf

from sdis_tf.solvers import _batch, lasso_op
from sdis_tf.solvers.lasso import (lasso, lasso_optimality, support_hessian_block_inverse,
                                   support_hessian_inverse, support_hessian_matvec)
from sdis_tf.solvers.lasso_op import in_xla_context
from sdis_tf.solvers.ridge import regularized_gram_solve, ridge, ridge_optimality
from sdis_tf.solvers.svm import (dual_step_size, primal_from_dual, svm_dual,
                                 svm_fixed_point_residual)


def _batched_dot(a, b):
    """<a_t, b_t> for every task t of the leading axis -> [T]."""
    return tf.reduce_sum(a * b, axis=tf.range(1, tf.rank(a)))


def conjugate_gradient(matvec, rhs, *, max_iter, rtol=None, precondition=None):
    """Solves A x = rhs for symmetric PSD A, batched over the leading (task) axis.

    Preconditioned when `precondition` (r -> M^{-1} r, M symmetric positive
    definite) is given. Each task stops when ||r_t|| <= rtol ||rhs_t||; its
    iterate is then frozen. Converges in at most (number of distinct
    eigenvalues of M^{-1} A) iterations in exact arithmetic. Returns x shaped
    like rhs.
    """
    if rtol is None:
        rtol = 1e-12 if rhs.dtype == tf.float64 else 1e-6
    if precondition is None:
        precondition = lambda r: r
    threshold = (rtol ** 2) * _batched_dot(rhs, rhs)
    expand = lambda s: tf.reshape(s, tf.concat([tf.shape(s), tf.ones(tf.rank(rhs) - 1, tf.int32)], 0))

    def body(i, x, r, p, rz, rs):
        ap = matvec(p)
        active = rs > threshold
        alpha = tf.where(active, tf.math.divide_no_nan(rz, _batched_dot(p, ap)), tf.zeros_like(rz))
        x += expand(alpha) * p
        r -= expand(alpha) * ap
        z = precondition(r)
        rz_new = _batched_dot(r, z)
        beta = tf.math.divide_no_nan(rz_new, rz)
        return (i + 1, x, r, z + expand(beta) * p, tf.where(active, rz_new, rz),
                tf.where(active, _batched_dot(r, r), rs))

    z = precondition(rhs)
    _, x, *_ = tf.while_loop(
        lambda i, x, r, p, rz, rs: (i < max_iter) & tf.reduce_any(rs > threshold),
        body, (0, tf.zeros_like(rhs), rhs, z, _batched_dot(rhs, z), _batched_dot(rhs, rhs)),
        maximum_iterations=max_iter)
    return x


def _autodiff_transpose_matvec(optimality_fn, sol, args):
    """v -> J^T v = (dF/dsol)^T v by reverse-mode autodiff."""
    def matvec(v):
        with tf.GradientTape() as tape:
            tape.watch(sol)
            residual = optimality_fn(sol, *args)
        return tape.gradient(residual, sol, output_gradients=v)
    return matvec


def _system_size(sol):
    """Number of unknowns per task (static when known): CG's exact-arithmetic iteration bound."""
    size = sol.shape[1:].num_elements()
    return size if size is not None else tf.reduce_prod(tf.shape(sol)[1:])


def cg_solve(optimality_fn, cotangent, sol, args, max_iter=None):
    """Default linear solve: CG on J^T u = cotangent with the autodiff product."""
    return conjugate_gradient(_autodiff_transpose_matvec(optimality_fn, sol, args), cotangent,
                              max_iter=_system_size(sol) if max_iter is None else max_iter)


# Tikhonov term r of `dense_solve`: directions of J with singular value s are scaled by
# s / (s^2 + r) instead of 1 / s. In float32 the rounding of J leaves ~1e-7 in its null
# directions (a degenerate dual face), amplified at most 10x with r = 1e-8, while singular
# values >= 1e-3 keep their exact inverse to 1%: on a 20-way Omniglot episode the float32
# gradient is within 4% of the float64 one (46% with r = 1e-6, 0.04% with r = 1e-10).
DENSE_SOLVE_REGULARIZER = {tf.float64: 1e-12, tf.float32: 1e-8}


def dense_solve(optimality_fn, cotangent, sol, args):
    """Linear solve for non-symmetric or possibly singular J: materialise J, least squares.

    J = dF/dsol is built with `batch_jacobian` ([T, d, d], d = unknowns per task)
    and J^T u = cotangent is solved in the Tikhonov least-squares sense,

        u = argmin ||J^T u - c||^2 + r ||u||^2,   r = `DENSE_SOLVE_REGULARIZER[dtype]`,

    (J may be singular when the solution is not unique) by a QR factorisation of the
    stacked [J^T; sqrt(r) I] [2d, d]: its error grows with cond(J^T) <= 1 / sqrt(r), not
    with the normal equations' cond(J J^T + r I) ~ 1 / r, whose float32 Cholesky broke
    down at d = 400 (20-way episodes). For small d (e.g. the SVM dual, d = n k).
    """
    with tf.GradientTape() as tape:
        tape.watch(sol)
        residual = optimality_fn(sol, *args)
    batch = tf.shape(sol)[0]
    size = _system_size(sol)
    jacobian = tf.reshape(tape.batch_jacobian(residual, sol), [batch, size, size])
    regularizer = DENSE_SOLVE_REGULARIZER.get(sol.dtype, DENSE_SOLVE_REGULARIZER[tf.float32])
    damping = tf.eye(size, batch_shape=[batch], dtype=sol.dtype) * (regularizer ** 0.5)
    stacked = tf.concat([tf.linalg.matrix_transpose(jacobian), damping], axis=1)  # [T, 2d, d]
    q, r = tf.linalg.qr(stacked)
    rhs = tf.linalg.matmul(q[:, :size], tf.reshape(cotangent, [batch, size, 1]), transpose_a=True)
    u = tf.linalg.triangular_solve(r, rhs, lower=False)
    return tf.reshape(u, tf.shape(sol))


def root_vjp(optimality_fn, sol, args, cotangent, linear_solve=None):
    """Gradients of <cotangent, sol(args)> w.r.t. each of args (jaxopt's root_vjp)."""
    if linear_solve is None:
        linear_solve = functools.partial(cg_solve, optimality_fn)
    u = linear_solve(cotangent, sol, args)
    with tf.GradientTape() as tape:
        tape.watch(args)
        residual = optimality_fn(sol, *args)
    return tape.gradient(residual, list(args), output_gradients=-u,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)


def custom_root(optimality_fn, linear_solve=None, fused_vjp=None):
    """Decorator: gives `solver(*args) -> (sol, aux)` the implicit gradient of F(sol, *args) = 0.

    `solver` returns the solution (differentiated) and any auxiliary output
    (returned under stop-gradient). Every positional argument must be a float
    tensor; pass non-differentiable settings by closure. `fused_vjp(sol, args,
    cotangent)`, if given, may compute `root_vjp`'s result in one kernel (the
    same gradients, from the same F): it returns them, or None where it does not
    apply (then `root_vjp` runs).
    """
    def decorator(solver):
        @functools.wraps(solver)
        def wrapped(*args):
            aux_box = []

            @tf.custom_gradient
            def solve(*args):
                # The forward pass is never differentiated: hide it from any tape.
                sol, aux = solver(*[tf.stop_gradient(arg) for arg in args])
                aux_box.append(aux)

                def grad(cotangent):
                    grads = fused_vjp(sol, args, cotangent) if fused_vjp else None
                    if grads is None:
                        grads = root_vjp(optimality_fn, sol, args, cotangent, linear_solve)
                    return grads
                return sol, grad

            sol = solve(*args)
            return sol, tf.nest.map_structure(tf.stop_gradient, aux_box[0])
        return wrapped
    return decorator


# Woodbury's set-up costs O(s^3) per task, s the largest support size in the batch: a few ms
# for 64 tasks at s = 64 in TensorFlow's (Eigen's) batched Cholesky and LU, but 10-20x more in
# XLA's CPU versions of the same (bench/lasso_backward.py); there, and for larger supports,
# block-Jacobi preconditions.
_WOODBURY_MAX_SUPPORT = 192
# With an exact inverse (up to rounding) as preconditioner, CG reaches the attainable accuracy
# in 2-3 iterations; in float32 a task with a tiny group norm (curvature lam / ||W_j|| ~ 1e4)
# stalls at a residual ~1e-4 that more iterations do not lower, so they are capped.
_WOODBURY_MAX_ITERATIONS = 10


def _lasso_fused_vjp(sol, args, cotangent):
    """Outside XLA with the C++ library loaded: `lasso_op.lasso_implicit_vjp`, the linear solve
    (Woodbury per task in double, refined with the exact product) and the pull-back through
    `lasso_optimality` in one kernel, without the dozens of small TensorFlow ops of CG and
    autodiff. Else None (`_lasso_linear_solve` and autodiff)."""
    if in_xla_context() or not lasso_op.op_available():
        return None
    X, Y3, lam = args
    return list(lasso_op.lasso_implicit_vjp(X, Y3, sol, lam, cotangent)[1:])


def _lasso_linear_solve(cotangent, sol, args):
    """H^{-1} C for the support-restricted Hessian H, inside XLA or without the C++ library:
    CG with an explicit product (no autodiff in the loop), preconditioned by Woodbury's exact
    inverse of H (CG then stops after a few iterations, however ill-conditioned H, e.g. a
    group-Lasso support larger than n) when no support of the batch exceeds
    `_WOODBURY_MAX_SUPPORT` features, outside XLA; else by the inverse of its k x k diagonal
    blocks (a group with a small norm has a large curvature lam / ||W_j|| across its
    direction, which block-Jacobi scaling removes from the condition number)."""
    X, _, lam = args
    matvec = support_hessian_matvec(sol, X, lam)

    def block_jacobi_cg():
        return conjugate_gradient(matvec, cotangent, max_iter=_system_size(sol),
                                  precondition=support_hessian_block_inverse(sol, X, lam))

    def woodbury_cg():
        return conjugate_gradient(matvec, cotangent, max_iter=_WOODBURY_MAX_ITERATIONS,
                                  precondition=support_hessian_inverse(sol, X, lam))

    if in_xla_context():
        return block_jacobi_cg()
    support = tf.reduce_sum(tf.cast(tf.reduce_any(sol != 0, axis=-1), tf.int32), axis=-1)
    return tf.cond(tf.reduce_max(support) <= _WOODBURY_MAX_SUPPORT, woodbury_cg, block_jacobi_cg)


def lasso_implicit(X, Y, lam, **solver_kwargs):
    """`solvers.lasso` with gradients w.r.t. X, Y and lam by implicit differentiation.

    The optimality map is the support-restricted stationarity condition
    (`solvers.lasso.lasso_optimality`), so the system solved in the backward pass is
    the Hessian of the smooth part on the support plus the curvature of the
    group norm (MATH.md); off the support nothing moves to first order.
    Returns (W, LassoResult of the forward solve).
    """
    batch = _batch.as_batch(X, Y, lam, name="lasso_implicit")

    @custom_root(lasso_optimality, _lasso_linear_solve, _lasso_fused_vjp)
    def solve(X, Y3, lam):
        result = lasso(X, Y3, lam, **solver_kwargs)
        return result.W, result

    W3, result = solve(batch.X, batch.Y, batch.lam)
    W = _batch.restore_output_shape(W3, batch.single_output)
    return W, result._replace(W=W)


def _ridge_linear_solve(cotangent, sol, args):
    X, _, lam = args
    return regularized_gram_solve(X, lam, cotangent)


def ridge_implicit(X, Y, lam):
    """`solvers.ridge` with the implicit gradient of its closed form (J = X^T X / n + lam I).

    Returns (W, RidgeResult).
    """
    batch = _batch.as_batch(X, Y, lam, name="ridge_implicit")

    @custom_root(ridge_optimality, _ridge_linear_solve)
    def solve(X, Y3, lam):
        result = ridge(X, Y3, lam)
        return result.W, result

    W3, result = solve(batch.X, batch.Y, batch.lam)
    W = _batch.restore_output_shape(W3, batch.single_output)
    return W, result._replace(W=W)


def svm_implicit(F, Y, lam1, lam2, *, smoothing=0.0, **solver_kwargs):
    """`solvers.svm_dual` with gradients w.r.t. F, Y, lam1, lam2 by implicit differentiation.

    The dual optimum L* is the fixed point L = P_simplex(L - s grad D(L)) for
    any step s > 0 (s = 1/Lipschitz under stop-gradient); the system is solved
    densely (`dense_solve`, d = n k unknowns). W = BST(F^T (Y - L*), lam1) /
    lam2 is then differentiated by ordinary autodiff, through L* and directly.
    Returns (W [T, k, m], SVMResult).
    """
    F = tf.convert_to_tensor(F)
    Y = tf.cast(Y, F.dtype)
    lam1 = tf.broadcast_to(tf.cast(lam1, F.dtype), tf.shape(F)[:1])
    lam2 = tf.broadcast_to(tf.cast(lam2, F.dtype), tf.shape(F)[:1])
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
