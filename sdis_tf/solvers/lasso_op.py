r"""Batched (group) Lasso through C++ custom ops (`custom_ops/`), CPU only.

Same problem, result and stopping rule as the XLA backend of `sdis_tf.solvers.lasso`: for
each task t,

    min_W 1/(2n) ||Y_t - X_t W||_F^2 + lam_t sum_j ||W_j||_2,     X [T,n,m], Y [T,n] or [T,n,k],

stopping when the certificate of `sdis_tf.solvers.lasso_problem` is within its threshold (the
duality gap of the full problem <= tol * ||Y_t||^2 / (2n); for lam = 0 the stationarity
residual ||X_t^T (Y_t - X_t W)||_F / n <= tol * ||X_t^T Y_t||_F / n). The kernel runs
exact block coordinate descent on working sets grown from the violation of the optimality
conditions (skglm style), Gap Safe screening and Anderson extrapolation, tasks spread over
the threads of TensorFlow's CPU pool.
`epochs` counts passes over the working sets (each far cheaper than a pass over all m features).

`lasso_implicit_vjp` is the implicit gradient (`custom_ops/lasso_implicit_vjp_op.cc`): at a
solution W, whichever solver found it, U = H^{-1} C for the Jacobian H of
`sdis_tf.solvers.lasso_grad.lasso_optimality` and the pull-back of U through that map, i.e.
`sdis_tf.implicit.root_vjp` for the Lasso in one kernel; `lasso_grad.lasso_implicit` uses it
when the backend is the op (`sdis_tf.solvers.lasso.resolve_backend`).

These are the kernels' thin wrappers: a NaN or inf input gives that task a NaN W and
converged = False, and a bad shape or a negative lam an InvalidArgumentError.
`sdis_tf.solvers.lasso(..., backend="op")` adds the error contract of the package (README,
"Error contract").

The ops have no XLA kernels: they work eagerly and inside `tf.function`, not under
`jit_compile=True` (`in_xla_context()` tells which case applies; both wrappers raise a ValueError
there instead of failing at XLA compilation). They are registered with `tf.no_gradient`: their
outputs are constants for autodiff, and differentiation goes through the implicit gradient of
the caller (`sdis_tf.solvers.lasso_grad`), which needs only the optimality condition, not the
solver.

The library is built and loaded on the first use of an op (`op_available()`, or an "auto"
backend's first solve): `sdis_tf/custom_ops/build.py` (`custom_ops/` as the package ships it)
compiles it once per sources, TensorFlow and CPU into a per-user cache (`$SDIS_TF_CACHE/ops`,
by default `~/.cache/sdis_tf/ops`), logging one line while it compiles (~15-90 s); concurrent
first uses wait for one compile. If it cannot be built (no C++ compiler) or loaded,
`op_available()` is False, one warning is issued, and importing sdis_tf still works.
"""

import collections
import importlib.util
import threading
import warnings
from pathlib import Path

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util

from sdis_tf.solvers.lasso_problem import LassoResult

_OP_NAMES = ("SdisLassoCd", "SdisLassoImplicitVjp")
_BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "custom_ops" / "build.py"
_FLOAT_DTYPES = (tf.float32, tf.float64)
_state = {"tried": False, "module": None}
_state_lock = threading.Lock()  # replicas trace in threads (MirroredStrategy): one load

LassoVjp = collections.namedtuple("LassoVjp", ["U", "grad_X", "grad_Y", "grad_lam"])


@tf.autograph.experimental.do_not_convert  # file loading, never graph code
def _build_module():
    """sdis_tf/custom_ops/build.py as a module (a script, also run on its own)."""
    if not _BUILD_SCRIPT.exists():
        raise FileNotFoundError(f"{_BUILD_SCRIPT} not found (an incomplete sdis_tf install)")
    spec = importlib.util.spec_from_file_location("_sdis_tf_custom_ops_build", _BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@tf.autograph.experimental.do_not_convert
def library():
    """The loaded op library (its raw ops, e.g. `sdis_lasso_cd`), built first if needed;
    None (with one warning) if unavailable."""
    with _state_lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["module"] = tf.load_op_library(str(_build_module().build()))
            except Exception as exc:  # no compiler or a broken library must never break sdis_tf
                warnings.warn(f"sdis_tf: the C++ Lasso op is unavailable ({type(exc).__name__}: "
                              f"{exc}); the TensorFlow/XLA solvers are used instead.",
                              RuntimeWarning, stacklevel=3)
        return _state["module"]


def op_available():
    """True when the compiled Lasso op is loaded (builds and loads it on first call)."""
    return library() is not None


def in_xla_context():
    """True while tracing a function that XLA will compile (`tf.function(jit_compile=True)`).

    Also True in any function or loop body traced inside one (TensorFlow marks the outermost
    compiled graph with an XLA control-flow context; nested graphs reach it through their
    outer graphs). False eagerly and in a plain `tf.function`. If this TensorFlow no longer
    exposes the context (a private API), every traced context counts as XLA: the XLA path is
    the one that always works.
    """
    if tf.executing_eagerly():
        return False
    try:
        return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    except AttributeError:
        return True


def _invalid(message):
    return tf.errors.InvalidArgumentError(None, None, message)


def _convert(value, dtype, name):
    """value as a tensor of X's dtype; a tensor of another float dtype is an error."""
    tensor = tf.convert_to_tensor(value, dtype_hint=dtype)
    if tensor.dtype != dtype:
        if name != "lam" or not (tensor.dtype.is_floating or tensor.dtype.is_integer):
            raise _invalid(f"lasso_op: {name} must have the dtype of X ({dtype.name}), "
                           f"got {tensor.dtype.name}.")
        tensor = tf.cast(tensor, dtype)
    return tensor


def _check_options(tol, max_epochs):
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"lasso_op: tol must be a number > 0, got {tol!r}.")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or not (
            0 <= max_epochs < 2**31):
        raise ValueError(f"lasso_op: max_epochs must be an integer in [0, 2**31), "
                         f"got {max_epochs!r}.")


def lasso_op(X, Y, lam, *, tol=1e-6, max_epochs=1000, W0=None):
    """Solves a batch of (group) Lasso problems with the C++ op.

    Args:
      X: [T, n, m] features, float32 or float64.
      Y: [T, n] (Lasso) or [T, n, k] (group Lasso over rows of W [m, k]), X's dtype.
      lam: scalar or [T], >= 0 (lam >= lasso_lambda_max(X, Y) gives W = 0 exactly).
      tol: stop a task when its duality gap <= tol * ||Y_t||^2 / (2n).
      max_epochs: maximum number of coordinate-descent passes (over working sets) per task.
      W0: optional warm start shaped like the solution; zeros by default.
    Returns:
      LassoResult(W [T,m] or [T,m,k], gap [T], epochs [T] int32, converged [T] bool);
      a task with a NaN or inf input, or whose certificate is not finite, gets a NaN W.
    Raises:
      tf.errors.InvalidArgumentError: bad shapes or dtypes, lam < 0.
      ValueError: bad tol or max_epochs, or called under `jit_compile=True`
        (`in_xla_context()`; the op has no XLA kernel: use `sdis_tf.solvers.lasso` there).
      RuntimeError: the op library is unavailable (check `op_available()` first).
    """
    _check_options(tol, max_epochs)
    if in_xla_context():
        raise ValueError("lasso_op: the C++ op has no XLA kernel and cannot run inside "
                         "tf.function(jit_compile=True); use sdis_tf.solvers.lasso there.")
    module = library()
    if module is None:
        raise RuntimeError("lasso_op: the C++ Lasso op is unavailable (see the warning issued "
                           "when loading it); use sdis_tf.solvers.lasso.")
    X = tf.convert_to_tensor(X)
    if X.dtype not in _FLOAT_DTYPES:
        raise _invalid(f"lasso_op: X must be float32 or float64, got {X.dtype.name}.")
    Y = _convert(Y, X.dtype, "Y")
    lam = _convert(lam, X.dtype, "lam")
    if W0 is None:
        if Y.shape.rank not in (2, 3):
            raise _invalid(f"lasso_op: Y must have shape [T, n] or [T, n, k], got {Y.shape}.")
        W0 = tf.zeros(tf.concat([tf.shape(X)[::2], tf.shape(Y)[2:]], axis=0), X.dtype)
    else:
        W0 = _convert(W0, X.dtype, "W0")
    W, gap, epochs, converged = module.sdis_lasso_cd(
        X, Y, lam, W0, tf.constant(tol, tf.float64), max_epochs=max_epochs)
    return LassoResult(W, gap, epochs, converged)


def lasso_implicit_vjp(X, Y3, W3, lam, C):
    """The implicit gradient of the (group) Lasso at a solution W3, for the cotangent C = dL/dW.

    Returns `LassoVjp(U, grad_X, grad_Y, grad_lam)`: U [T, m, k] = H^{-1} C with H = d
    lasso_grad.lasso_optimality / dW (on the support S = {j : W_j != 0}, H = X_S^T X_S / n +
    lam (I - u_j u_j^T) / ||W_j|| per group, u_j = W_j / ||W_j||; Woodbury in double with
    iterative refinement; U_j = C_j off S), and its pull-back through lasso_optimality,
    -(dF/d(X, Y, lam))^T U: with V = U on S and 0 off S, R = X W - Y,

        grad_X = -(R V^T + X V W^T) / n,   grad_Y = X V / n,   grad_lam = -sum_{j in S} u_j . U_j.

    X [T, n, m], Y3 [T, n, k], W3 and C [T, m, k], lam [T], all of X's dtype. Same conditions of
    use as `lasso_op` (no XLA; RuntimeError if the library is unavailable).
    """
    if in_xla_context():
        raise ValueError("lasso_implicit_vjp: the C++ op has no XLA kernel.")
    module = library()
    if module is None:
        raise RuntimeError("lasso_implicit_vjp: the C++ Lasso ops are unavailable (see the "
                           "warning issued when loading them).")
    return LassoVjp(*module.sdis_lasso_implicit_vjp(X, Y3, W3, lam, C))


for _name in _OP_NAMES:
    tf.no_gradient(_name)
