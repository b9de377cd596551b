r"""The (group) Lasso's gradient: optimality map, support Hessian, implicit differentiation.

At a solution W of the problem of `sdis_tf.solvers.lasso_problem` (whichever backend found
it), the support-restricted stationarity map F(W) = 0 (`lasso_optimality`) defines the
implicit gradient (`sdis_tf.implicit.custom_root`): for a loss L with cotangent C = dL/dW,

    H^T U = C,   H = dF/dW (symmetric),      dL/d(X, Y, lam) = -(dF/d(X, Y, lam))^T U.

On the support S = {j : W_j != 0}, H = X_S^T X_S / n + lam (I - u_j u_j^T) / ||W_j||
(u_j = W_j / ||W_j||) per group, the identity off S (docs/math.md). The backward runs on the
backend of the forward solve (`sdis_tf.solvers.lasso.resolve_backend`):

- "op": the C++ kernel `lasso_op.lasso_implicit_vjp` computes U (Woodbury per task in
  double, refined) and the pull-back in one kernel (`lasso_fused_vjp`);
- "xla": `lasso_linear_solve` (CG with the explicit product `support_hessian_matvec`,
  preconditioned by `support_hessian_inverse` or `support_hessian_block_inverse`) and the
  pull-back by autodiff of F.

`lasso_implicit` is the differentiable solver; `lasso_unrolled` (`sdis_tf.solvers.lasso`)
differentiates through the iterations instead.
"""

import tensorflow as tf

from sdis_tf.implicit import conjugate_gradient, custom_root
from sdis_tf.solvers import inputs, lasso_op
from sdis_tf.solvers.lasso import lasso, resolve_backend
from sdis_tf.solvers.prox import safe_norm


def lasso_optimality(W3, X, Y3, lam):
    r"""Support-restricted stationarity map F(W) of the (group) Lasso, zero at the solution.

    With the support mask M_j = 1[||W_j|| > 0] and W_S = M * W,

        F(W)_j = X_j^T (X W_S - Y) / n + lam W_j / ||W_j||   for j in S,
        F(W)_j = W_j                                           for j not in S.

    Off the support a small change of the data keeps W_j = 0 (strict KKT), so
    the identity rows decouple; on it, dF/dW is the Hessian of the smooth part
    plus lam (I - u u^T) / ||W_j|| (u = W_j/||W_j||), symmetric positive
    (semi)definite. Shapes: W3 [T, m, k], X [T, n, m], Y3 [T, n, k], lam [T].
    """
    n = inputs.num_samples(X)
    mask = tf.cast(safe_norm(W3, axis=-1, keepdims=True) > 0, W3.dtype)
    W_support = mask * W3
    smooth_grad = tf.linalg.matmul(X, tf.linalg.matmul(X, W_support) - Y3, transpose_a=True) / n
    unit = tf.math.divide_no_nan(W_support, safe_norm(W_support, axis=-1, keepdims=True))
    return mask * (smooth_grad + lam[:, None, None] * unit) + (1 - mask) * W3


def support_hessian_matvec(W3, X, lam):
    """V -> (dF/dW) V for `lasso_optimality` at W3, without autodiff (for CG).

    Uses the Gram matrix when m <= n (O(m^2 k) per product), else two products
    with X (O(n m k)).
    """
    n = inputs.num_samples(X)
    norms = safe_norm(W3, axis=-1, keepdims=True)
    mask = tf.cast(norms > 0, W3.dtype)
    inv_norm = tf.math.divide_no_nan(mask, norms)
    unit = W3 * inv_norm
    curvature_scale = lam[:, None, None] * inv_norm
    m_le_n = X.shape[2] is not None and X.shape[1] is not None and X.shape[2] <= X.shape[1]
    gram = tf.linalg.matmul(X, X, transpose_a=True) / n if m_le_n else None

    def matvec(V):
        V_support = mask * V
        if gram is not None:
            smooth = tf.linalg.matmul(gram, V_support)
        else:
            smooth = tf.linalg.matmul(X, tf.linalg.matmul(X, V_support), transpose_a=True) / n
        radial = tf.reduce_sum(unit * V_support, axis=-1, keepdims=True) * unit
        return mask * (smooth + curvature_scale * (V_support - radial)) + (1 - mask) * V
    return matvec


def support_hessian_block_inverse(W3, X, lam):
    """R -> B^{-1} R, B the k x k diagonal blocks of `support_hessian_matvec`'s operator.

    On a support group j, B_j = g_j I + c_j (I - u_j u_j^T) with g_j = ||X_j||^2 / n,
    c_j = lam / ||W_j||, u_j = W_j / ||W_j||, so
    B_j^{-1} = (I - u_j u_j^T) / (g_j + c_j) + u_j u_j^T / g_j; off the support B_j = I.
    (k = 1: B_j = g_j.) The block-Jacobi preconditioner of the backward CG.
    """
    n = inputs.num_samples(X)
    norms = safe_norm(W3, axis=-1, keepdims=True)                      # [T, m, 1]
    mask = tf.cast(norms > 0, W3.dtype)
    unit = W3 * tf.math.divide_no_nan(mask, norms)
    g = (tf.reduce_sum(tf.square(X), axis=1) / n)[..., None]            # [T, m, 1]
    c = tf.math.divide_no_nan(lam[:, None, None] * mask, norms)

    def precondition(R):
        radial = tf.reduce_sum(unit * R, axis=-1, keepdims=True) * unit
        inverse = (tf.math.divide_no_nan(R - radial, g + c)
                   + tf.math.divide_no_nan(radial, g))
        return mask * inverse + (1 - mask) * R
    return precondition


def _support_first_permutation(mask):
    """Per task, a permutation [T, m] of the features putting its support first, and s.

    s >= the largest support size in the batch: the first s places hold every task's
    support, then (for a smaller support) off-support features, whose `mask` is 0.
    """
    in_support = mask[..., 0]                                                # [T, m]
    largest = tf.cast(tf.reduce_max(tf.reduce_sum(in_support, axis=-1)), tf.int32)
    # Rounded up to a multiple of 8 (at most m): Eigen's batched factorisations run faster
    # on such sizes (s = 62 took 1.25x the time of s = 64 at T = 512).
    size = tf.minimum(tf.maximum(8 * ((largest + 7) // 8), 8), tf.shape(in_support)[1])
    return tf.argsort(in_support, axis=-1, direction="DESCENDING", stable=True), size


# Relative jitter on the diagonal of `support_hessian_inverse`'s A (times its mean diagonal).
# It must exceed the rounding of a Cholesky of a singular PSD matrix (~ s eps relative) and
# stay small, since it is the error of a single application: at (T, m, k) = (512, 64, 5),
# float64, one application leaves a relative residual 5e-11 with 1e-12 (7e-7 with
# sqrt(eps) = 1.5e-8), and the backward's CG (rtol 1e-12) stops after two iterations;
# float32 keeps sqrt(eps) = 3.5e-4, well above s eps.
_JITTER = {tf.float64: 1e-12, tf.float32: 3.5e-4}


def support_hessian_inverse(W3, X, lam):
    r"""R -> H^{-1} R for the operator H of `support_hessian_matvec`, by Woodbury.

    Off the support H is the identity, so only the support rows need work: they
    are gathered into s rows per task (the largest support in the batch, rounded up to 8),
    which makes the cost O(n m s + s^3) instead of O(n m^2 + m^3). There, with
    G = X_S^T X_S / n, c_j = lam / ||W_j|| and u_j = W_j / ||W_j||, H acts on V [s, k] as

        H V = A V - U C U^T V,   A = G + diag(c)   (s x s, shared by the k columns;
                                                     identity rows where a task's support
                                                     is shorter than s),

    where U C U^T V has rows c_j (u_j . V_j) u_j: the group-norm curvature
    c_j (I - u_j u_j^T) is c_j I minus a rank-one term per group. Then

        H^{-1} R = Z + A^{-1} U S^{-1} U^T Z,   Z = A^{-1} R,
        S = C^{-1} - U^T A^{-1} U,   S_ij = delta_ij / c_j - (u_i . u_j) (A^{-1})_ij,

    two s x s factorisations per task instead of a (s k) x (s k) one (A by Cholesky and
    explicitly inverted for S, S by LU, applied by two triangular solves; inverting S too
    would cost an s x s solve with s right-hand sides). (k = 1: the curvature vanishes and
    H = A with c = 0.) A gets a relative jitter `_JITTER[dtype]` so a singular G (k = 1
    with a support larger than n, duplicated columns) stays factorisable; S is positive
    definite whenever H is. For c_j >> ||X_j||^2 / n the correction cancels most of A's
    diagonal, so in float32 this is a preconditioner (exact up to rounding), not a
    solver: the backward's CG uses it and converges in a few iterations.
    """
    dtype = W3.dtype
    n = inputs.num_samples(X)
    k = W3.shape[-1]
    mask = tf.cast(safe_norm(W3, axis=-1, keepdims=True) > 0, dtype)         # [T, m, 1]
    permutation, size = _support_first_permutation(mask)                   # [T, m], s
    order = permutation[:, :size]                                           # [T, s]
    restore = tf.argsort(permutation, axis=-1)                              # its inverse
    W_s = tf.gather(W3, order, axis=1, batch_dims=1)                        # [T, s, k]
    X_s = tf.gather(X, order, axis=2, batch_dims=1)                         # [T, n, s]
    norms = safe_norm(W_s, axis=-1, keepdims=True)
    mask_s = tf.cast(norms > 0, dtype)
    curved = mask_s * tf.cast(lam[:, None, None] > 0, dtype) if k != 1 else tf.zeros_like(mask_s)
    curvature = tf.math.divide_no_nan(lam[:, None, None] * curved, norms)      # c_j
    unit = W_s * tf.math.divide_no_nan(curved, norms)                         # u_j, 0 if c_j = 0
    gram = tf.linalg.matmul(X_s, X_s, transpose_a=True) / n
    support_gram = gram * mask_s * tf.linalg.matrix_transpose(mask_s)
    diagonal = curvature[..., 0] + 1 - mask_s[..., 0]
    jitter = tf.constant(_JITTER.get(dtype, _JITTER[tf.float32]), dtype) * tf.reduce_mean(
        tf.linalg.diag_part(support_gram) + diagonal, axis=-1)
    A = tf.linalg.set_diag(support_gram, tf.linalg.diag_part(support_gram) + diagonal
                           + jitter[:, None])
    cholesky = tf.linalg.cholesky(A)
    if k == 1:
        solve_support = lambda R_s: tf.linalg.cholesky_solve(cholesky, R_s)
    else:
        identity = tf.eye(tf.shape(W_s)[1], batch_shape=tf.shape(W_s)[:1], dtype=dtype)
        A_inverse = tf.linalg.cholesky_solve(cholesky, identity)
        inverse_curvature = tf.where(curved > 0, tf.math.divide_no_nan(1.0, curvature), 1.0)
        capacitance = (tf.linalg.diag(inverse_curvature[..., 0])
                       - tf.linalg.matmul(unit, unit, transpose_b=True) * A_inverse)
        capacitance_lu, capacitance_pivots = tf.linalg.lu(capacitance)

        def solve_support(R_s):
            Z = tf.linalg.matmul(A_inverse, R_s)
            along_unit = tf.reduce_sum(unit * Z, axis=-1, keepdims=True)     # U^T Z  [T, s, 1]
            weights = tf.linalg.lu_solve(capacitance_lu, capacitance_pivots, along_unit)
            return Z + tf.linalg.matmul(A_inverse, weights * unit)

    def inverse(R):
        R_s = tf.gather(R, order, axis=1, batch_dims=1)
        padded = tf.pad(mask_s * solve_support(R_s), [[0, 0], [0, tf.shape(R)[1] - size], [0, 0]])
        return tf.gather(padded, restore, axis=1, batch_dims=1) + (1 - mask) * R
    return inverse


# Woodbury's set-up costs O(s^3) per task, s the largest support size in the batch: a few ms
# for 64 tasks at s = 64 in TensorFlow's (Eigen's) batched Cholesky and LU, but 10-20x more in
# XLA's CPU versions of the same (bench/lasso_backward.py); there, and for larger supports,
# block-Jacobi preconditions.
WOODBURY_MAX_SUPPORT = 192
# With an exact inverse (up to rounding) as preconditioner, CG reaches the attainable accuracy
# in 2-3 iterations; in float32 a task with a tiny group norm (curvature lam / ||W_j|| ~ 1e4)
# stalls at a residual ~1e-4 that more iterations do not lower, so they are capped.
_WOODBURY_MAX_ITERATIONS = 10


def lasso_fused_vjp(sol, args, cotangent):
    """The backward of the "op" backend: `lasso_op.lasso_implicit_vjp`, the linear solve
    (Woodbury per task in double, refined with the exact product) and the pull-back through
    `lasso_optimality` in one kernel, without the dozens of small TensorFlow ops of CG and
    autodiff. Returns the gradients w.r.t. args = (X, Y3, lam)."""
    X, Y3, lam = args
    return list(lasso_op.lasso_implicit_vjp(X, Y3, sol, lam, cotangent)[1:])


def lasso_linear_solve(cotangent, sol, args):
    """H^{-1} C for the support-restricted Hessian H, the backward of the "xla" backend:
    CG with an explicit product (no autodiff in the loop), preconditioned by Woodbury's exact
    inverse of H (CG then stops after a few iterations, however ill-conditioned H, e.g. a
    group-Lasso support larger than n) when no support of the batch exceeds
    `WOODBURY_MAX_SUPPORT` features, outside XLA; else by the inverse of its k x k diagonal
    blocks (a group with a small norm has a large curvature lam / ||W_j|| across its
    direction, which block-Jacobi scaling removes from the condition number)."""
    X, _, lam = args
    matvec = support_hessian_matvec(sol, X, lam)

    def block_jacobi_cg():
        return conjugate_gradient(matvec, cotangent,
                                  precondition=support_hessian_block_inverse(sol, X, lam))

    def woodbury_cg():
        return conjugate_gradient(matvec, cotangent, max_iter=_WOODBURY_MAX_ITERATIONS,
                                  precondition=support_hessian_inverse(sol, X, lam))

    if lasso_op.in_xla_context():
        return block_jacobi_cg()
    support = tf.reduce_sum(tf.cast(tf.reduce_any(sol != 0, axis=-1), tf.int32), axis=-1)
    return tf.cond(tf.reduce_max(support) <= WOODBURY_MAX_SUPPORT, woodbury_cg, block_jacobi_cg)


def lasso_implicit(X, Y, lam, *, method="auto", backend="auto", **solver_kwargs):
    """`solvers.lasso` with gradients w.r.t. X, Y and lam by implicit differentiation.

    The optimality map is the support-restricted stationarity condition
    (`lasso_optimality`), so the system solved in the backward pass is the Hessian of the
    smooth part on the support plus the curvature of the group norm (docs/math.md); off the
    support nothing moves to first order. `method`, `backend` and the other keyword
    arguments (tol, max_epochs, W0) are those of `solvers.lasso`; the backward runs on the
    forward's backend (module docstring).
    Returns (W, LassoResult of the forward solve).
    """
    batch = inputs.as_batch(X, Y, lam, name="lasso_implicit")
    backend = resolve_backend(backend, method)

    @custom_root(lasso_optimality, lasso_linear_solve,
                 lasso_fused_vjp if backend == "op" else None)
    def solve(X, Y3, lam):
        result = lasso(X, Y3, lam, method=method, backend=backend, **solver_kwargs)
        return result.W, result

    W3, result = solve(batch.X, batch.Y, batch.lam)
    W = inputs.restore_output_shape(W3, batch.single_output)
    return W, result._replace(W=W)
