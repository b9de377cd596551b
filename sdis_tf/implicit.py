r"""Implicit differentiation of argmin layers (one mechanism for every solver).

A solver returns `sol` with F(sol, *args) = 0 for an optimality map F. By the
implicit function theorem, for a loss L with cotangent C = dL/dsol,

    J^T u = C,   J = dF/dsol,        dL/dargs = -(dF/dargs)^T u,

(Bertrand et al. 2020; jaxopt's `root_vjp`). The gradient is defined by F
alone, not by how `sol` was found. The pull-back through dF/dargs is ordinary
autodiff of F; the linear system is solved by `linear_solve` (default: batched
conjugate gradient with the autodiff product v -> J^T v, which needs J symmetric
positive (semi)definite; `dense_solve` otherwise), or both steps by a problem's
own `fused_vjp`.

This module knows no particular problem: each solver family defines its
optimality map and differentiable entry point next to its solver
(`solvers.lasso_grad.lasso_implicit`, `solvers.ridge.ridge_implicit`,
`solvers.svm.svm_implicit`).
"""

import functools

import tensorflow as tf


def _batched_dot(a, b):
    """<a_t, b_t> for every task t of the leading axis -> [T]."""
    return tf.reduce_sum(a * b, axis=tf.range(1, tf.rank(a)))


def conjugate_gradient(matvec, rhs, *, max_iter=None, rtol=None, precondition=None):
    """Solves A x = rhs for symmetric PSD A, batched over the leading (task) axis.

    Preconditioned when `precondition` (r -> M^{-1} r, M symmetric positive
    definite) is given. Each task stops when ||r_t|| <= rtol ||rhs_t||; its
    iterate is then frozen. Converges in at most (number of distinct
    eigenvalues of M^{-1} A) iterations in exact arithmetic, at most the number
    of unknowns per task (the default `max_iter`). Returns x shaped like rhs.
    """
    if max_iter is None:
        max_iter = _system_size(rhs)
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
                              max_iter=max_iter)


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
