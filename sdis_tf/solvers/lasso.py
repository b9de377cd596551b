r"""Batched (group) Lasso: the solver, its XLA backend and the choice of backend.

For each task t of a batch (X [T, n, m], Y [T, n, k], lam [T]) `lasso` minimises

    P(W) = 1/(2n) ||Y - X W||_F^2 + lam * sum_j ||W_j||_2,      W [m, k]

and returns W with its certificate (`sdis_tf.solvers.lasso_problem`: the duality gap, or
the stationarity residual where lam = 0). Two backends solve it with the same stopping
rule, chosen in one place (`resolve_backend`): the C++ working-set op
(`sdis_tf.solvers.lasso_op`) and the compiled TensorFlow solver of this module.

XLA backend: proximal block coordinate descent. Coordinate step (exact minimisation over
row j, L_j = ||X_j||^2 / n):

    W_j <- BST(W_j - grad_j / L_j, lam / L_j),   grad_j = X_j^T (X W - Y) / n,

skipping (zeroing) columns with L_j = 0. The step is 1/L_j, not the reference
code's n-times-smaller 1/||X_j||^2 (docs/math.md). A task stops when its
certificate is within the threshold; it is then frozen, so its result does not depend on
the other tasks of the batch, and the batch is compacted as tasks finish so that finished
tasks stop costing.

Two update schemes give the same iterates: Gram (G = X^T X / n precomputed,
O(m k) per coordinate) when m <= n, residual (O(n k) per coordinate) otherwise.
The solve runs as an XLA-compiled `tf.while_loop`; call it eagerly, inside
`tf.function`, under `jit_compile=True` or in `strategy.run`.
"""

import math

import tensorflow as tf

from sdis_tf.solvers import inputs, lasso_op
from sdis_tf.solvers.lasso_problem import (LassoResult, certificate_threshold, is_certified,
                                           objective_and_certificate)
from sdis_tf.solvers.prox import block_soft_threshold

METHODS = ("auto", "gram", "residual")
BACKENDS = ("auto", "xla", "op")
ANDERSON_K = 5  # epochs between Anderson extrapolations
RESIDUAL_BLOCK = 32  # coordinates per in-place block of the residual method


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
    n = inputs.num_samples(X)
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
    if method not in METHODS:
        raise ValueError(f"lasso: method must be one of {METHODS}, got {method!r}.")
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
    current = objective_and_certificate(tf.transpose(W_t, [1, 0, 2]), X, Y3, lam)[0]
    candidate = objective_and_certificate(tf.transpose(W_acc, [1, 0, 2]), X, Y3, lam)[0]
    finite = tf.reduce_all(tf.math.is_finite(W_acc), axis=[0, 2])
    accept = active & finite & (candidate < current)
    W_t = tf.where(accept[None, :, None], W_acc, W_t)
    return W_t, init_aux(W_t)


def _run_epochs(X, Y3, lam, threshold, method, state, step, max_epochs, max_active):
    """Epochs on one (sub)batch until at most `max_active` tasks are unconverged.

    state = (W [S, m, k], certificate [S], epochs [S], active [S], history [S, K+1, m, k]);
    converged tasks are frozen (their rows are left untouched by the coordinate
    updates). Every ANDERSON_K epochs (counted from the start of the solve, so a
    task's iterates do not depend on the compaction of the batch) the last
    iterates are extrapolated (`_anderson_extrapolate`).
    """
    init_aux, epoch = _make_epoch(X, Y3, lam, method)
    W, certificate, epochs, active, history = state

    def body(step, W_t, aux, history, certificate, epochs, active):
        W_t, aux = epoch(W_t, aux, active)
        history = tf.concat([history[1:], W_t[None]], axis=0)
        due = (step + 1) % ANDERSON_K == 0
        W_t, aux = tf.cond(
            due, lambda: _anderson_extrapolate(history, W_t, aux, init_aux, X, Y3, lam, active),
            lambda: (W_t, aux))
        history = tf.concat([history[:-1], W_t[None]], axis=0)
        new_certificate = objective_and_certificate(tf.transpose(W_t, [1, 0, 2]), X, Y3, lam)[1]
        certificate = tf.where(active, new_certificate, certificate)
        epochs = tf.where(active, step + 1, epochs)
        return step + 1, W_t, aux, history, certificate, epochs, active & (certificate > threshold)

    def cond(step, W_t, aux, history, certificate, epochs, active):
        return (step < max_epochs) & (tf.reduce_sum(tf.cast(active, tf.int32)) > max_active)

    W_t = tf.transpose(W, [1, 0, 2])
    history = tf.transpose(history, [1, 2, 0, 3])
    step, W_t, _, history, certificate, epochs, active = tf.while_loop(
        cond, body, (step, W_t, init_aux(W_t), history, certificate, epochs, active),
        maximum_iterations=max_epochs)
    state = (tf.transpose(W_t, [1, 0, 2]), certificate, epochs, active,
             tf.transpose(history, [2, 0, 1, 3]))
    return state, step


def _solve(X, Y3, lam, W0, tol, max_epochs, method):
    """Coordinate descent until every task's certificate is within its threshold.

    Finished tasks stop costing: the batch is compacted in rounds. Round r
    works on a static sub-batch of S_r = T / 2^r tasks (the unconverged ones
    first) until at most S_{r+1} of them are still running, then hands those
    to the next, half-size round; the last round (S >= 8) runs to the end. So
    the work is within 2x of what each task needs alone, with static shapes
    throughout (XLA). A task with a NaN or inf input or a negative lam (possible
    only when traced: eager calls raise) never runs and gets a NaN W; so does a
    task whose certificate or threshold is not finite (overflow).
    """
    valid = inputs.valid_tasks(X, Y3, W0, lam, nonnegative=(lam,))
    threshold = certificate_threshold(X, Y3, lam, tol)
    certificate = objective_and_certificate(W0, X, Y3, lam)[1]
    active = valid & (certificate > threshold)  # False for a NaN, or against an inf threshold
    history = tf.tile(W0[:, None], [1, ANDERSON_K + 1, 1, 1])
    state = (W0, certificate, tf.zeros_like(active, tf.int32), active, history)
    step = tf.constant(0)
    sizes = _round_sizes(X.shape[0]) if X.shape[0] != 0 and X.shape[2] != 0 else []
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
    W, certificate, epochs, _, _ = state
    W = inputs.where_tasks(valid & tf.math.is_finite(certificate)
                           & tf.math.is_finite(threshold), W)
    certificate = inputs.where_tasks(valid, certificate)
    return LassoResult(W, certificate, epochs, is_certified(certificate, threshold, W))


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
    inputs.check_finite(name, W0=W0)
    return W0


def _check_positive(value, what, name, integer=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or (
            value <= 0 if not integer else value < 0):
        allowed = "an integer >= 0" if integer else "a finite number > 0"
        raise ValueError(f"{name}: {what} must be {allowed}, got {value!r}.")


def resolve_backend(backend="auto", method="auto"):
    """The backend a Lasso call runs on, "xla" or "op": the one place where it is chosen.

    "auto" is the C++ op (`lasso_op`) when its library is loaded, the call is eager or in a
    plain `tf.function` (not traced for XLA: `lasso_op.in_xla_context()`) and `method` is
    "auto" (the methods are the XLA backend's); else "xla". "xla" and "op" are taken as they
    are (the op then raises its own clear error under XLA or without its library). `lasso`
    solves, and `lasso_grad.lasso_implicit` differentiates, on the backend chosen here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"lasso: backend must be one of {BACKENDS}, got {backend!r}.")
    if backend != "auto":
        return backend
    use_op = method == "auto" and not lasso_op.in_xla_context() and lasso_op.op_available()
    return "op" if use_op else "xla"


def lasso(X, Y, lam, *, tol=1e-6, max_epochs=1000, W0=None, method="auto", backend="auto"):
    """Solves a batch of (group) Lasso problems by proximal coordinate descent.

    Minimises, for each task t, 1/(2n) ||Y_t - X_t W||_F^2 + lam_t sum_j ||W_j||_2.

    Args:
      X: [T, n, m] features, float32 or float64 (n >= 1; T = 0 or m = 0 give empty or
        trivial solutions, converged).
      Y: [T, n] targets (Lasso) or [T, n, k] (group Lasso over rows of W [m, k]).
      lam: scalar or [T], >= 0 (lam >= lasso_lambda_max(X, Y) gives W = 0; lam = 0 is
        least squares, certified by its stationarity residual).
      tol: stop a task when its certificate <= tol * ||Y_t||^2 / (2n) (lam > 0: duality
        gap) or <= tol * ||X_t^T Y_t||_F / n (lam = 0: stationarity residual).
      max_epochs: maximum number of passes over the m coordinates (over the
        working set with the C++ op).
      W0: optional warm start, shaped like the solution.
      method: XLA backend only: "gram" (precomputed X^T X, best for m <= n),
        "residual" (best for m > n) or "auto" (chooses by the static shapes).
      backend: "xla" (the compiled TensorFlow solver of this module), "op" (the
        C++ working-set solver of `custom_ops/`, CPU, not under XLA) or "auto"
        (`resolve_backend`): the op when it is built and the call is eager or in a
        plain `tf.function` (and `method` is "auto"), else XLA (inside
        `jit_compile=True` functions and on TPU).
    Returns:
      LassoResult(W, gap, epochs, converged) (`lasso_problem.LassoResult`). Traced calls
      give a task with a NaN or inf input or a negative lam a NaN W and converged = False.
    Raises:
      ValueError: bad shapes, dtypes or options; eagerly also a NaN or inf in X, Y, lam or
        W0 (naming the argument and the first such task) and a negative lam.
    """
    _check_positive(tol, "tol", "lasso")
    _check_positive(max_epochs, "max_epochs", "lasso", integer=True)
    batch = inputs.as_batch(X, Y, lam, name="lasso")
    W0 = _initial_point(W0, batch, "lasso")
    if resolve_backend(backend, method) == "op":
        # The op refuses a negative lam for the whole batch; as NaN it fails that task only.
        lam = tf.where(batch.lam >= 0, batch.lam, tf.constant(float("nan"), batch.lam.dtype))
        result = lasso_op.lasso_op(batch.X, batch.Y, lam, tol=tol, max_epochs=max_epochs, W0=W0)
    else:
        result = _solve_compiled(batch.X, batch.Y, batch.lam, W0, tol, max_epochs,
                                 _resolve_method(method, batch.X))
    return result._replace(W=inputs.restore_output_shape(result.W, batch.single_output))


def lasso_unrolled(X, Y, lam, *, epochs, W0=None, method="auto"):
    """Exactly `epochs` coordinate-descent epochs, differentiable by ordinary autodiff.

    The unrolled alternative to implicit differentiation (`LassoHead(diff="unroll")`):
    gradients flow through every coordinate update (the loop is a `tf.while_loop`
    with a static trip count, so it also differentiates under XLA). Returns W only,
    NaN for a task with a NaN or inf input or a negative lam (traced; eager calls raise).
    """
    _check_positive(epochs, "epochs", "lasso_unrolled", integer=True)
    batch = inputs.as_batch(X, Y, lam, name="lasso_unrolled")
    method = _resolve_method(method, batch.X)
    W0 = _initial_point(W0, batch, "lasso_unrolled")
    init_aux, epoch = _make_epoch(batch.X, batch.Y, batch.lam, method)
    active = tf.ones(tf.shape(batch.X)[:1], tf.bool)
    W_t = tf.transpose(W0, [1, 0, 2])
    if batch.X.shape[0] != 0 and batch.X.shape[2] != 0:  # else nothing to iterate
        _, W_t, _ = tf.while_loop(
            lambda i, *_: i < epochs,
            lambda i, W_t, aux: (i + 1, *epoch(W_t, aux, active)),
            (0, W_t, init_aux(W_t)), maximum_iterations=epochs)
    valid = inputs.valid_tasks(batch.X, batch.Y, W0, batch.lam, nonnegative=(batch.lam,))
    W = inputs.where_tasks(valid, tf.transpose(W_t, [1, 0, 2]))
    return inputs.restore_output_shape(W, batch.single_output)
