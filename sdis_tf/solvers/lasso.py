r"""Batched (group) Lasso by proximal block coordinate descent, with duality gaps.

For each task t of a batch (X [T, n, m], Y [T, n, k], lam [T]) the solver
minimises (paper eq. 6 with a Gaussian likelihood; MATH.md)

    P(W) = 1/(2n) ||Y - X W||_F^2 + lam * sum_j ||W_j||_2,      W [m, k],

the plain Lasso when k = 1 and the group Lasso on rows W_j otherwise (the
paper's W in R^{k x m}, transposed). Coordinate step (exact minimisation over
row j, L_j = ||X_j||^2 / n):

    W_j <- BST(W_j - grad_j / L_j, lam / L_j),   grad_j = X_j^T (X W - Y) / n,

skipping (zeroing) columns with L_j = 0. The step is 1/L_j, not the reference
code's n-times-smaller 1/||X_j||^2 (REFERENCE_NOTES section 1).

Certificate: with R = Y - X W, the dual point theta = R / (n max(lam, ||X^T R/n||_{2,inf}))
is feasible and

    D(theta) = 1/(2n) (||Y||^2 - ||Y - (lam / max(lam, ||X^T R/n||_{2,inf})) R||^2),
    gap = P(W) - D(theta) >= 0, zero exactly at the optimum.

A task stops when gap <= tol * P(0) = tol * ||Y||^2 / (2n) (scale free); it is
then frozen, so its result does not depend on the other tasks of the batch, and
the batch is compacted as tasks finish so that finished tasks stop costing.

Two update schemes give the same iterates: Gram (G = X^T X / n precomputed,
O(m k) per coordinate) when m <= n, residual (O(n k) per coordinate) otherwise.
The solve runs as an XLA-compiled `tf.while_loop`; call it eagerly, inside
`tf.function`, under `jit_compile=True` or in `strategy.run`.
"""

from typing import NamedTuple

import tensorflow as tf

from sdis_tf.solvers import _batch
from sdis_tf.solvers.prox import block_soft_threshold, safe_norm

_METHODS = ("auto", "gram", "residual")
_BACKENDS = ("auto", "xla", "op")
ANDERSON_K = 5  # epochs between Anderson extrapolations
RESIDUAL_BLOCK = 32  # coordinates per in-place block of the residual method


class LassoResult(NamedTuple):
    """Solution of a batch of Lasso problems.

    Attributes:
      W: [T, m] (targets [T, n]) or [T, m, k] (targets [T, n, k]).
      gap: [T] duality gap P(W) - D(theta) at W.
      epochs: [T] int32, epochs of coordinate descent run for each task.
      converged: [T] bool, gap <= tol * ||Y||^2 / (2n).
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
      [T] tensor of X's dtype.
    """
    batch = _batch.as_batch(X, Y, name="lasso_lambda_max")
    correlations = tf.linalg.matmul(batch.X, batch.Y, transpose_a=True) / _batch.num_samples(batch.X)
    return tf.reduce_max(safe_norm(correlations, axis=-1), axis=-1)


def _penalty(W3):
    """sum_j ||W_j||_2 for W3 [T, m, k] -> [T]."""
    return tf.reduce_sum(safe_norm(W3, axis=-1), axis=-1)


def _objective_and_gap(W3, X, Y3, lam):
    """P(W) and the duality gap, both [T], for W3 [T, m, k]."""
    n = _batch.num_samples(X)
    residual = Y3 - tf.linalg.matmul(X, W3)
    datafit = 0.5 / n * tf.reduce_sum(tf.square(residual), axis=[1, 2])
    primal = datafit + lam * _penalty(W3)
    dual_norm = tf.reduce_max(
        safe_norm(tf.linalg.matmul(X, residual, transpose_a=True) / n, axis=-1), axis=-1)
    scale = tf.maximum(lam, dual_norm)
    ratio = tf.math.divide_no_nan(lam, scale)[:, None, None]
    dual = 0.5 / n * (tf.reduce_sum(tf.square(Y3), axis=[1, 2])
                      - tf.reduce_sum(tf.square(Y3 - ratio * residual), axis=[1, 2]))
    return primal, primal - dual


def lasso_objective(W, X, Y, lam):
    """P(W) = 1/(2n)||Y - X W||_F^2 + lam sum_j ||W_j||_2 per task -> [T]."""
    batch = _batch.as_batch(X, Y, lam, name="lasso_objective")
    W3 = W[..., None] if batch.single_output else W
    return _objective_and_gap(W3, batch.X, batch.Y, batch.lam)[0]


def lasso_gap(W, X, Y, lam):
    """Duality gap at W per task -> [T] (see the module docstring)."""
    batch = _batch.as_batch(X, Y, lam, name="lasso_gap")
    W3 = W[..., None] if batch.single_output else W
    return _objective_and_gap(W3, batch.X, batch.Y, batch.lam)[1]


def _coordinate_step(w_old, grad, lipschitz, lam, active):
    """Exact minimisation over one row for all tasks: [T, k] -> [T, k]."""
    has_mass = lipschitz > 0
    safe_l = tf.where(has_mass, lipschitz, tf.ones_like(lipschitz))
    w_new = block_soft_threshold(w_old - grad / safe_l[:, None], (lam / safe_l)[:, None])
    w_new = tf.where(has_mass[:, None], w_new, tf.zeros_like(w_new))
    return tf.where(active[:, None], w_new, w_old)


def _make_epoch(X, Y3, lam, method):
    """Returns (init_aux(W_t), epoch(W_t, aux, active) -> (W_t, aux)).

    W_t is the solution with the coordinate axis first, [m, T, k], so that one
    coordinate is a contiguous slice updated in place.
    """
    n = _batch.num_samples(X)
    m = tf.shape(X)[2]
    if method == "gram":
        gram = tf.linalg.matmul(X, X, transpose_a=True) / n          # [T, m, m]
        gram_rows = tf.transpose(gram, [1, 0, 2])                     # [m, T, m]
        corr_rows = tf.transpose(tf.linalg.matmul(X, Y3, transpose_a=True) / n, [1, 0, 2])
        diag = tf.transpose(tf.linalg.diag_part(gram))                # [m, T]

        def epoch(W_t, aux, active):
            def body(j, W_t):
                grad = tf.einsum("tm,mtk->tk", gram_rows[j], W_t) - corr_rows[j]
                w_new = _coordinate_step(W_t[j], grad, diag[j], lam, active)
                return j + 1, tf.tensor_scatter_nd_update(W_t, [[j]], w_new[None])
            _, W_t = tf.while_loop(lambda j, _: j < m, body, (0, W_t), maximum_iterations=m)
            return W_t, aux

        return (lambda W_t: tf.zeros([], X.dtype)), epoch

    # Coordinates are visited in blocks of `block` (padded with zero columns,
    # which stay at 0): the inner loop carries only the current block of W, so
    # XLA updates it in place instead of copying all of W at every coordinate
    # (an O(m T k) copy per step, 10x the useful work at m = 2000).
    m_static = X.shape[2]
    block = min(m_static, RESIDUAL_BLOCK) if m_static is not None else 1
    num_blocks = -(-m // block)
    pad = num_blocks * block - m

    def blocked(tensor):
        """[m, ...] -> [num_blocks, block, ...], zero padded."""
        padded = tf.pad(tensor, [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1))
        return tf.reshape(padded, tf.concat([[num_blocks, block], tf.shape(tensor)[1:]], 0))

    columns = blocked(tf.transpose(X, [2, 0, 1]))                     # [B, block, T, n]
    diag = tf.reduce_sum(tf.square(columns), axis=-1) / n             # [B, block, T]

    def init_residual(W_t):
        return Y3 - tf.einsum("tnm,mtk->tnk", X, W_t)

    def epoch(W_t, residual, active):
        def coordinate(j, W_block, residual, block_columns, block_diag):
            column = block_columns[j]                                 # [T, n]
            grad = -tf.einsum("tn,tnk->tk", column, residual) / n
            w_old = W_block[j]
            w_new = _coordinate_step(w_old, grad, block_diag[j], lam, active)
            residual -= column[:, :, None] * (w_new - w_old)[:, None, :]
            return tf.tensor_scatter_nd_update(W_block, [[j]], w_new[None]), residual

        def block_body(b, W_blocks, residual):
            _, W_block, residual = tf.while_loop(
                lambda j, *_: j < block,
                lambda j, W_block, residual: (j + 1, *coordinate(
                    j, W_block, residual, columns[b], diag[b])),
                (0, W_blocks[b], residual), maximum_iterations=block)
            return b + 1, tf.tensor_scatter_nd_update(W_blocks, [[b]], W_block[None]), residual

        _, W_blocks, residual = tf.while_loop(
            lambda b, *_: b < num_blocks, block_body, (0, blocked(W_t), residual),
            maximum_iterations=num_blocks)
        flat = tf.reshape(W_blocks, tf.concat([[num_blocks * block], tf.shape(W_t)[1:]], 0))
        return tf.ensure_shape(flat[:m], W_t.shape), residual

    return init_residual, epoch


def _resolve_method(method, X):
    if method not in _METHODS:
        raise ValueError(f"lasso: method must be one of {_METHODS}, got {method!r}.")
    if method != "auto":
        return method
    n, m = X.shape[1], X.shape[2]
    if n is None or m is None:
        return "residual"
    return "gram" if m <= n else "residual"


def _round_sizes(num_tasks, smallest=8):
    """Static batch sizes of the compaction rounds: T, T/2, ... down to `smallest`."""
    if num_tasks is None:
        return [None]
    sizes = [num_tasks]
    while sizes[-1] // 2 >= smallest:
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def _anderson_extrapolate(history, W_t, aux, init_aux, X, Y3, lam, active):
    """Anderson extrapolation of the last K + 1 iterates (as in skglm / celer).

    With U_i = W^(i+1) - W^(i) (i < K) flattened per task, the weights c solve
    min ||sum_i c_i U_i|| s.t. sum_i c_i = 1, i.e. c = z / sum(z) with
    (U U^T) z = 1 (normalised by its trace, plus a dtype-eps ridge). The
    extrapolated point sum_i c_i W^(i+1) replaces W for the active tasks whose
    objective it lowers; every other task is left exactly as it was.

    Shapes: history [K+1, m, T, k], W_t [m, T, k].
    """
    num = history.shape[0] - 1
    iterates = history[1:]
    steps = tf.reshape(tf.transpose(iterates - history[:-1], [2, 0, 1, 3]),
                       [tf.shape(W_t)[1], num, -1])                       # [T, K, m k]
    products = tf.linalg.matmul(steps, steps, transpose_b=True)           # [T, K, K]
    trace = tf.linalg.trace(products)
    products /= tf.where(trace > 0, trace, tf.ones_like(trace))[:, None, None]
    eps = 10 * tf.constant(tf.experimental.numpy.finfo(W_t.dtype.as_numpy_dtype).eps, W_t.dtype)
    products += eps * tf.eye(num, dtype=W_t.dtype)
    z = tf.linalg.solve(products, tf.ones_like(products[..., :1]))[..., 0]  # [T, K]
    weights = tf.math.divide_no_nan(z, tf.reduce_sum(z, axis=-1, keepdims=True))
    W_acc = tf.einsum("tK,Kmtk->mtk", weights, iterates)
    current = _objective_and_gap(tf.transpose(W_t, [1, 0, 2]), X, Y3, lam)[0]
    candidate = _objective_and_gap(tf.transpose(W_acc, [1, 0, 2]), X, Y3, lam)[0]
    finite = tf.reduce_all(tf.math.is_finite(W_acc), axis=[0, 2])
    accept = active & finite & (candidate < current)
    W_t = tf.where(accept[None, :, None], W_acc, W_t)
    return W_t, init_aux(W_t)


def _run_epochs(X, Y3, lam, threshold, method, state, step, max_epochs, max_active):
    """Epochs on one (sub)batch until at most `max_active` tasks are unconverged.

    state = (W [S, m, k], gap [S], epochs [S], active [S], history [S, K+1, m, k]);
    converged tasks are frozen (their rows are left untouched by the coordinate
    updates). Every ANDERSON_K epochs (counted from the start of the solve, so a
    task's iterates do not depend on the compaction of the batch) the last
    iterates are extrapolated (`_anderson_extrapolate`).
    """
    init_aux, epoch = _make_epoch(X, Y3, lam, method)
    W, gap, epochs, active, history = state

    def body(step, W_t, aux, history, gap, epochs, active):
        W_t, aux = epoch(W_t, aux, active)
        history = tf.concat([history[1:], W_t[None]], axis=0)
        due = (step + 1) % ANDERSON_K == 0
        W_t, aux = tf.cond(
            due, lambda: _anderson_extrapolate(history, W_t, aux, init_aux, X, Y3, lam, active),
            lambda: (W_t, aux))
        history = tf.concat([history[:-1], W_t[None]], axis=0)
        new_gap = _objective_and_gap(tf.transpose(W_t, [1, 0, 2]), X, Y3, lam)[1]
        gap = tf.where(active, new_gap, gap)
        epochs = tf.where(active, step + 1, epochs)
        return step + 1, W_t, aux, history, gap, epochs, active & (gap > threshold)

    def cond(step, W_t, aux, history, gap, epochs, active):
        return (step < max_epochs) & (tf.reduce_sum(tf.cast(active, tf.int32)) > max_active)

    W_t = tf.transpose(W, [1, 0, 2])
    history = tf.transpose(history, [1, 2, 0, 3])
    step, W_t, _, history, gap, epochs, active = tf.while_loop(
        cond, body, (step, W_t, init_aux(W_t), history, gap, epochs, active),
        maximum_iterations=max_epochs)
    state = (tf.transpose(W_t, [1, 0, 2]), gap, epochs, active,
             tf.transpose(history, [2, 0, 1, 3]))
    return state, step


def _solve(X, Y3, lam, W0, tol, max_epochs, method):
    """Coordinate descent until every task's gap <= tol * P_t(0).

    Finished tasks stop costing: the batch is compacted in rounds. Round r
    works on a static sub-batch of S_r = T / 2^r tasks (the unconverged ones
    first) until at most S_{r+1} of them are still running, then hands those
    to the next, half-size round; the last round (S >= 8) runs to the end. So
    the work is within 2x of what each task needs alone, with static shapes
    throughout (XLA).
    """
    n = _batch.num_samples(X)
    threshold = tol * 0.5 / n * tf.reduce_sum(tf.square(Y3), axis=[1, 2])
    gap = _objective_and_gap(W0, X, Y3, lam)[1]
    active = gap > threshold
    history = tf.tile(W0[:, None], [1, ANDERSON_K + 1, 1, 1])
    state = (W0, gap, tf.zeros_like(active, tf.int32), active, history)
    step = tf.constant(0)
    sizes = _round_sizes(X.shape[0])
    for size, next_size in zip(sizes, sizes[1:] + [0]):
        if size == sizes[0]:
            state, step = _run_epochs(X, Y3, lam, threshold, method, state, step, max_epochs,
                                      next_size)
            continue
        # The unconverged tasks (at most `size` of them) first, then converged fillers.
        index = tf.math.top_k(tf.cast(state[3], tf.int32), k=size).indices
        take = lambda tensor: tf.gather(tensor, index)
        sub_state, step = _run_epochs(take(X), take(Y3), take(lam), take(threshold), method,
                                      tuple(map(take, state)), step, max_epochs, next_size)
        state = tuple(tf.tensor_scatter_nd_update(full, index[:, None], part)
                      for full, part in zip(state, sub_state))
    W, gap, epochs, active, _ = state
    return LassoResult(W, gap, epochs, ~active)


_solve_compiled = tf.function(_solve, jit_compile=True)


def _initial_point(W0, batch, name):
    static = tf.TensorShape([batch.X.shape[0], batch.X.shape[2], batch.Y.shape[2]])  # [T, m, k]
    if W0 is None:
        shape = static if static.is_fully_defined() else tf.stack(
            [tf.shape(batch.X)[0], tf.shape(batch.X)[2], tf.shape(batch.Y)[2]])
        return tf.zeros(shape, batch.X.dtype)
    W0 = tf.convert_to_tensor(W0, dtype=batch.X.dtype)
    W0 = W0[..., None] if batch.single_output else W0
    expected = static
    if not W0.shape.is_compatible_with(expected):
        raise ValueError(f"{name}: W0 must have the shape of the solution "
                         f"{expected if not batch.single_output else expected[:2]}, "
                         f"got {W0.shape if not batch.single_output else W0.shape[:2]}.")
    return W0


def _check_positive(value, what, name, integer=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (
            value <= 0 if not integer else value < 0):
        allowed = "an integer >= 0" if integer else "a number > 0"
        raise ValueError(f"{name}: {what} must be {allowed}, got {value!r}.")


def lasso(X, Y, lam, *, tol=1e-6, max_epochs=1000, W0=None, method="auto", backend="auto"):
    """Solves a batch of (group) Lasso problems by proximal coordinate descent.

    Minimises, for each task t, 1/(2n) ||Y_t - X_t W||_F^2 + lam_t sum_j ||W_j||_2.

    Args:
      X: [T, n, m] features, float32 or float64.
      Y: [T, n] targets (Lasso) or [T, n, k] (group Lasso over rows of W [m, k]).
      lam: scalar or [T], >= 0 (lam >= lasso_lambda_max(X, Y) gives W = 0).
      tol: stop a task when its duality gap <= tol * ||Y_t||^2 / (2n).
      max_epochs: maximum number of passes over the m coordinates (over the
        working set with the C++ op).
      W0: optional warm start, shaped like the solution.
      method: XLA path only: "gram" (precomputed X^T X, best for m <= n),
        "residual" (best for m > n) or "auto" (chooses by the static shapes).
      backend: "xla" (the compiled TensorFlow solver of this module), "op" (the
        C++ working-set solver of `custom_ops/`, CPU, not under XLA) or "auto":
        the op when it is built and the call is eager or in a plain
        `tf.function` (and `method` is "auto"), else XLA (inside
        `jit_compile=True` functions and on TPU).
    Returns:
      LassoResult(W, gap, epochs, converged).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"lasso: backend must be one of {_BACKENDS}, got {backend!r}.")
    _check_positive(tol, "tol", "lasso")
    _check_positive(max_epochs, "max_epochs", "lasso", integer=True)
    batch = _batch.as_batch(X, Y, lam, name="lasso")
    W0 = _initial_point(W0, batch, "lasso")
    if backend != "xla":
        from sdis_tf.solvers import lasso_op  # the op's module imports this one
        if backend == "op" or (method == "auto" and not lasso_op.in_xla_context()
                               and lasso_op.op_available()):
            result = lasso_op.lasso_op(batch.X, batch.Y, batch.lam, tol=tol,
                                       max_epochs=max_epochs, W0=W0)
            return result._replace(W=_batch.restore_output_shape(result.W, batch.single_output))
    method = _resolve_method(method, batch.X)
    result = _solve_compiled(batch.X, batch.Y, batch.lam, W0, tol, max_epochs, method)
    return result._replace(W=_batch.restore_output_shape(result.W, batch.single_output))


def lasso_unrolled(X, Y, lam, *, epochs, W0=None, method="auto"):
    """Exactly `epochs` coordinate-descent epochs, differentiable by ordinary autodiff.

    The unrolled alternative to implicit differentiation (`LassoHead(diff="unroll")`):
    gradients flow through every coordinate update (the loop is a `tf.while_loop`
    with a static trip count, so it also differentiates under XLA). Returns W only.
    """
    _check_positive(epochs, "epochs", "lasso_unrolled", integer=True)
    batch = _batch.as_batch(X, Y, lam, name="lasso_unrolled")
    method = _resolve_method(method, batch.X)
    W0 = _initial_point(W0, batch, "lasso_unrolled")
    init_aux, epoch = _make_epoch(batch.X, batch.Y, batch.lam, method)
    active = tf.ones(tf.shape(batch.X)[:1], tf.bool)
    W_t = tf.transpose(W0, [1, 0, 2])
    _, W_t, _ = tf.while_loop(
        lambda i, *_: i < epochs,
        lambda i, W_t, aux: (i + 1, *epoch(W_t, aux, active)),
        (0, W_t, init_aux(W_t)), maximum_iterations=epochs)
    return _batch.restore_output_shape(tf.transpose(W_t, [1, 0, 2]), batch.single_output)


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
    n = _batch.num_samples(X)
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
    n = _batch.num_samples(X)
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
    n = _batch.num_samples(X)
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
    n = _batch.num_samples(X)
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
