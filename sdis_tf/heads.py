r"""Episode heads: Keras layers that fit a model on each task's support set and predict its queries.

Every head has one contract. For T tasks with support features F [T, n, m],
support targets y and query features Q [T, q, m]:

    head((F, y, Q))        -> predictions
    head.solve((F, y, Q))  -> HeadSolution(predictions, weights, used_features, certificate)

- Regression heads (`LassoHead`, `RidgeHead`): real targets y [T, n] (or
  [T, n, k], k outputs sharing one row sparsity), weights W [T, m] (or
  [T, m, k]), predictions Q W [T, q] (or [T, q, k]). `IdentityHead` fits
  nothing: W = I [T, m, m], targets [T, n, m], predictions Q (a supervised reference).
- Classification heads (`SparseSVMHead`, `DenseSVMHead`, `RidgeClassifierHead`,
  `PrototypeHead`): int labels y [T, n] in [0, num_ways), weights
  W [T, m, num_ways], logits [T, q, num_ways].

Row W_j holds feature j's weights, and used_features [T, m] = (W_j != 0) marks
the features a task's predictions depend on: the support of the (group) Lasso
and of the sparse SVM; for the dense heads every feature that is not zero on
the whole support set. The certificate is the solver's result (`LassoResult`,
`RidgeResult`, `SVMResult`: gap or residual, iterations, convergence), None
for heads without a solver. Gradients reach F, y (regression) and Q through
the solvers' implicit differentiation (`sdis_tf.implicit.custom_root`) or directly.

Regularisation is absolute (`lam`, `lam1`) or relative (`eps`): lam_t = eps *
lam_max_t with lam_max under stop-gradient (paper appendix D.2.3), so eps keeps
its meaning across tasks and training steps.

Heads are built from config by name, `build("lasso", eps=0.2)` or
`build("sparse_svm", num_ways=5, eps=0.1)`; `HEADS` maps the names to the
classes. A new head is one `Head` subclass (its `FIELDS`, `__init__`, `fit`
and, unless it is linear, `predict`) and one line in `HEADS`.

Bad input is one `ValueError` line: each constructor argument outside its
allowed values (NaN, inf, negative, out of range, wrong type), and at each call
an input of the wrong dtype, rank or shape, named with what was expected.
Labels outside [0, num_ways) raise eagerly; inside `tf.function` they fail a
`tf.debugging` assertion, which XLA (`jit_compile=True`) does not run.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from sdis_tf.config_schema import Bool, Choice, Float, Int, Spec, did_you_mean
from sdis_tf.solvers import (lasso_implicit, lasso_lambda_max, lasso_unrolled, ridge_implicit,
                             ridge_lambda_max, svm_dual, svm_implicit, svm_lambda_max)
from sdis_tf.solvers.lasso import BACKENDS as LASSO_BACKENDS
from sdis_tf.solvers.lasso_op import in_xla_context

_PACKAGE = "sdis_tf"


class HeadSolution(NamedTuple):
    """What a head fitted on the support sets of T tasks and predicted for their queries.

    predictions: [T, q] or [T, q, k] (regression), logits [T, q, num_ways] (classification).
    weights: [T, m] or [T, m, k]; row j is feature j's weights.
    used_features: [T, m] bool, W_j != 0.
    certificate: the solver's result (`LassoResult`, `RidgeResult`, `SVMResult`) or None.
    """

    predictions: tf.Tensor
    weights: tf.Tensor
    used_features: tf.Tensor
    certificate: Any


@dataclasses.dataclass(frozen=True)
class _Optional(Spec):
    """None (not given) or a value allowed by `spec`."""

    spec: Spec

    def allowed(self) -> str:
        return f"None or {self.spec.allowed()}"

    def problem(self, value):
        return None if value is None else self.spec.problem(value)


class _Input(NamedTuple):
    """The dtype name and shape (None: unknown rank) of an input: tensor, array or Keras input."""

    dtype: str
    shape: tuple | None

    @classmethod
    def of(cls, x) -> _Input:
        shape = x.shape
        known_rank = not (isinstance(shape, tf.TensorShape) and shape.rank is None)
        return cls(keras.backend.standardize_dtype(x.dtype), tuple(shape) if known_rank else None)

    def fits(self, kinds: tuple[str, ...], shape: tuple) -> bool:
        """True if the dtype is of `kinds` ("float", "int") and the shape matches `shape`
        (None matches any size)."""
        kind = "float" if "float" in self.dtype else "int" if "int" in self.dtype else self.dtype
        return (kind in kinds and self.shape is not None and len(self.shape) == len(shape)
                and all(a is None or b is None or a == b for a, b in zip(self.shape, shape)))

    def __str__(self) -> str:
        """'float32 [4, 25, 5]' (None for a size unknown while tracing)."""
        return f"{self.dtype} {'of unknown rank' if self.shape is None else list(self.shape)}"


def _dims(*dims) -> str:
    """The expected shape, known sizes filled in: _dims(("T", 4), ("q", None)) -> '[4, q]'."""
    return "[" + ", ".join(symbol if size is None else str(size) for symbol, size in dims) + "]"


def _is_concrete(x) -> bool:
    """True for inputs holding values now: arrays and eager tensors."""
    return isinstance(x, np.ndarray) or (tf.is_tensor(x) and tf.executing_eagerly())


def _check_exactly_one(head: str, eps, lam, lam_name: str) -> None:
    if (eps is None) == (lam is None):
        raise ValueError(f"{head}: give exactly one of `eps` (relative to lambda_max) or "
                         f"`{lam_name}` (absolute). Received: eps={eps!r}, {lam_name}={lam!r}")


def _per_task(value: float, features: tf.Tensor) -> tf.Tensor:
    """The constant `value` for each of the T tasks of features [T, ...] -> [T]."""
    return tf.fill(tf.shape(features)[:1], tf.constant(value, features.dtype))


class Head(keras.layers.Layer):
    """Base of the heads: argument and input checks, `solve`, `call` and the config.

    A subclass declares `FIELDS` (each `__init__` argument -> its allowed values,
    a `config_schema.Spec`) and passes every field by keyword to `__init__`,
    which checks them and keeps each as an attribute of its name. It implements
    `check_targets(targets, T, n)` (as `RegressionHead` and `ClassificationHead`
    do), `fit(support, targets) -> (weights, certificate)` and, unless its
    predictions are linear, `predict(query, weights) -> predictions`.
    """

    FIELDS: Mapping[str, Spec] = {}
    TARGETS = "support targets"   # the targets input, as error messages name it

    def __init__(self, **kwargs):
        fields = {field: kwargs.pop(field) for field in self.FIELDS}
        super().__init__(**kwargs)
        self.check_fields(fields)
        self.config_fields = fields
        for field, value in fields.items():
            setattr(self, field, value)

    def check_fields(self, fields: Mapping[str, Any]) -> None:
        """Raises ValueError naming the first field outside its allowed values."""
        for field, value in fields.items():
            problem = self.FIELDS[field].problem(value)
            if problem:
                raise ValueError(f"{type(self).__name__}: {field}={value!r} {problem}")

    def check_inputs(self, inputs) -> None:
        """Raises ValueError (one line) naming an input of the wrong structure, dtype or shape,
        or, given concrete values, labels out of range. Inputs: tensors, arrays or Keras inputs.
        """
        name = type(self).__name__
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
            got = f"{len(inputs)} inputs" if isinstance(inputs, (tuple, list)) else \
                type(inputs).__name__
            raise ValueError(f"{name}: inputs must be (support features [T, n, m], "
                             f"{self.TARGETS}, query features [T, q, m]); got {got}")
        inputs = [x if hasattr(x, "shape") else np.asarray(x) for x in inputs]
        support, _, query = (_Input.of(x) for x in inputs)
        if not support.fits(("float",), (None, None, None)):
            raise ValueError(f"{name}: support features must be float [T, n, m]; got {support}")
        T, n, m = support.shape
        if n == 0 or m == 0:
            raise ValueError(f"{name}: support features [T, n, m] need n >= 1 samples and "
                             f"m >= 1 features; got {support}")
        if not query.fits(("float",), (T, None, m)):
            raise ValueError(f"{name}: query features must be float [T, q, m] = "
                             f"{_dims(('T', T), ('q', None), ('m', m))} like the support "
                             f"features; got {query}")
        self.check_targets(inputs[1], T, n)

    def check_targets(self, targets, T: int | None, n: int | None) -> None:
        """Raises ValueError (one line) if the targets do not fit support features [T, n, m]."""
        raise NotImplementedError

    def fit(self, support: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, Any]:
        """(weights [T, m] or [T, m, k], certificate or None) fitted on the support sets."""
        raise NotImplementedError

    def predict(self, query: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """Linear predictions Q W: [T, q] for W [T, m], [T, q, k] for W [T, m, k]."""
        if weights.shape.rank == 2:
            return tf.einsum("tqm,tm->tq", query, weights)
        return tf.einsum("tqm,tmk->tqk", query, weights)

    def solve(self, inputs) -> HeadSolution:
        """`HeadSolution` for inputs (support features, support targets, query features)."""
        self.check_inputs(inputs)
        return self._solve_checked(inputs)

    def _solve_checked(self, inputs) -> HeadSolution:
        """`solve` for inputs `check_inputs` accepted."""
        support, targets, query = (
            self.dtype_policy.convert_input(tf.convert_to_tensor(x), self.autocast,
                                            self.input_dtype) for x in inputs)
        if not self.built:
            self.build((support.shape, targets.shape, query.shape))
        weights, certificate = self.fit(support, targets)
        nonzero = tf.not_equal(weights, 0.0)
        used = nonzero if weights.shape.rank == 2 else tf.reduce_any(nonzero, axis=-1)
        return HeadSolution(self.predict(query, weights), weights, used, certificate)

    def __call__(self, inputs, *args, **kwargs):
        # Checked before Keras' `__call__`, which reports an error raised in `call` in many lines.
        self.check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None):
        return self._solve_checked(inputs).predictions   # `__call__` checked the inputs

    def get_config(self):
        return {**super().get_config(), **self.config_fields}


class RegressionHead(Head):
    """Base of the regression heads: real targets, lam_t = eps * stop_gradient(lam_max_t) or lam."""

    FIELDS = {"eps": _Optional(Float(min=0.0)), "lam": _Optional(Float(min=0.0))}
    TARGETS = "support targets float [T, n] or [T, n, k]"

    # lambda_max(features [T, n, m], targets) -> [T]: the scale of `eps`, set by each head.
    lambda_max = None

    def check_fields(self, fields):
        _check_exactly_one(type(self).__name__, fields["eps"], fields["lam"], "lam")
        super().check_fields(fields)

    def check_targets(self, targets, T, n):
        found = _Input.of(targets)
        if not (found.fits(("float",), (T, n)) or found.fits(("float",), (T, n, None))):
            raise ValueError(f"{type(self).__name__}: support targets must be float [T, n] or "
                             f"[T, n, k] with [T, n] = {_dims(('T', T), ('n', n))} (real "
                             f"values); got {found}")

    def regularization(self, features, targets):
        """lam per task [T]: eps * stop_gradient(lambda_max), or the absolute lam."""
        if self.lam is not None:
            return _per_task(self.lam, features)
        return self.eps * tf.stop_gradient(self.lambda_max(features, targets))

    def compute_output_shape(self, input_shape):
        _, targets_shape, query_shape = input_shape
        return (query_shape[0], query_shape[1], *targets_shape[2:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LassoHead(RegressionHead):
    r"""Per-task (group) Lasso fitted on the support set, differentiable.

    W_t = argmin_W 1/(2n) ||Y_t - F_t W||_F^2 + lam_t sum_j ||W_j||_2.

    Args:
      eps: lam_t = eps * max_j ||F_{t,j}^T Y_t||_2 / n (stop-gradient on the max).
      lam: absolute lam (exactly one of eps, lam).
      diff: "implicit" (implicit differentiation on the support; exact at the
        solution, memory independent of the number of epochs) or "unroll"
        (autodiff through `unroll_epochs` epochs of coordinate descent; no certificate).
      tol: duality-gap tolerance of the forward solve, relative to ||Y||^2/(2n).
      max_epochs: epoch budget of the forward solve (implicit mode).
      unroll_epochs: number of epochs differentiated through (unroll mode).
      backend: forward solver of the implicit mode, as in `solvers.lasso`:
        "auto" (the C++ op outside XLA when built, else XLA), "xla" or "op".
        The gradient is the same for all: it is defined by the optimality
        condition, not by the solver.
    Input: (support features [T, n, m], targets [T, n] or [T, n, k], query features [T, q, m]).
    Output: predictions [T, q] or [T, q, k]; `solve` adds W and the `LassoResult`.
    """

    FIELDS = {**RegressionHead.FIELDS, "diff": Choice("implicit", "unroll"),
              "tol": Float(min=0.0, min_open=True), "max_epochs": Int(min=1),
              "unroll_epochs": Int(min=1), "backend": Choice(*LASSO_BACKENDS)}

    def __init__(self, eps=None, *, lam=None, diff="implicit", tol=1e-5, max_epochs=500,
                 unroll_epochs=50, backend="auto", **kwargs):
        super().__init__(eps=eps, lam=lam, diff=diff, tol=tol, max_epochs=max_epochs,
                         unroll_epochs=unroll_epochs, backend=backend, **kwargs)

    lambda_max = staticmethod(lasso_lambda_max)

    def fit(self, support, targets):
        lam = self.regularization(support, targets)
        if self.diff == "unroll":
            return lasso_unrolled(support, targets, lam, epochs=self.unroll_epochs), None
        return lasso_implicit(support, targets, lam, tol=self.tol,
                                       max_epochs=self.max_epochs, backend=self.backend)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RidgeHead(RegressionHead):
    r"""Per-task ridge regression in closed form, with its implicit gradient.

    W_t = argmin_W 1/(2n) ||Y_t - F_t W||_F^2 + lam_t/2 ||W||_F^2.

    Args:
      eps: lam_t = eps * ||F_t||_F^2 / n (stop-gradient; paper D.2.3).
      lam: absolute lam (exactly one of eps, lam; 0 gives least squares when
        F_t has full column rank).
    Input: (support features [T, n, m], targets [T, n] or [T, n, k], query features [T, q, m]).
    Output: predictions [T, q] or [T, q, k]; `solve` adds W and the `RidgeResult`.
    """

    def __init__(self, eps=None, *, lam=None, **kwargs):
        super().__init__(eps=eps, lam=lam, **kwargs)

    lambda_max = staticmethod(lambda features, targets: ridge_lambda_max(features))

    def fit(self, support, targets):
        return ridge_implicit(support, targets, self.regularization(support, targets))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IdentityHead(Head):
    r"""No inner problem: W_t = I, so each feature predicts its own target column.

    Predictions Q_t I = Q_t: the outer loss 1/(2qm) ||Y_q - Q||_F^2 trains the features
    to regress the targets column by column (k = m outputs). With the true latents as
    targets this is the supervised reference of the disentanglement experiment: the
    encoder sees the factors (a reference for an encoder trained from tasks, not a bound).
    Input: (support features [T, n, m], targets [T, n, m], query features [T, q, m]).
    Output: predictions [T, q, m] (the query features); `solve` adds W = I [T, m, m] and no
    certificate.
    """

    TARGETS = "support targets float [T, n, m]"

    def check_targets(self, targets, T, n):
        found = _Input.of(targets)
        if not found.fits(("float",), (T, n, None)):
            raise ValueError(f"IdentityHead: support targets must be float [T, n, m] with "
                             f"[T, n] = {_dims(('T', T), ('n', n))}; got {found}")

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        support, targets = (x if hasattr(x, "shape") else np.asarray(x) for x in inputs[:2])
        m, k = _Input.of(support).shape[-1], _Input.of(targets).shape[-1]
        if None not in (m, k) and m != k:
            raise ValueError(f"IdentityHead: support targets [T, n, k] need k = m = {m} "
                             f"(one target column per feature); got k = {k}")

    def fit(self, support, targets):
        shape = tf.shape(support)
        return tf.eye(shape[2], batch_shape=shape[:1], dtype=support.dtype), None

    def compute_output_shape(self, input_shape):
        return input_shape[2]


class ClassificationHead(Head):
    """Base of the classification heads: int labels in [0, num_ways), a learnable logit scale.

    `scale` holds the initial scale until the head is built, then the trained variable.
    The default prediction is the linear classifier's, logits = scale Q W.
    """

    FIELDS = {"num_ways": Int(min=2), "scale": Float(min=0.0, min_open=True)}
    TARGETS = "support labels int [T, n]"

    def build(self, input_shape):
        # replaces the initial value `scale` held until now
        self.scale = self.add_weight(
            name="scale", shape=(), trainable=True,
            initializer=keras.initializers.Constant(self.config_fields["scale"]))

    def check_targets(self, labels, T, n):
        name, ways = type(self).__name__, self.num_ways
        found = _Input.of(labels)
        if not found.fits(("int",), (T, n)):
            hint = " (one-hot?)" if found.shape is not None and len(found.shape) == 3 else ""
            raise ValueError(f"{name}: support labels must be int [T, n] = "
                             f"{_dims(('T', T), ('n', n))} with values in [0, {ways}); got "
                             f"{found}{hint}")
        if _is_concrete(labels) and np.size(labels):
            low, high = int(np.min(labels)), int(np.max(labels))
            if low < 0 or high >= ways:
                raise ValueError(f"{name}: support labels must lie in [0, {ways}); got values "
                                 f"in [{low}, {high}]")

    def onehot(self, labels, dtype):
        """[T, n] int -> [T, n, num_ways] one-hot of `dtype`. In a graph the labels are
        asserted to lie in [0, num_ways) (eagerly `check_targets` did; XLA runs no assertion)."""
        if not tf.executing_eagerly() and not in_xla_context():
            message = f"{type(self).__name__}: support labels must lie in [0, {self.num_ways})"
            with tf.control_dependencies([
                    tf.debugging.assert_non_negative(labels, message=message),
                    tf.debugging.assert_less(labels, tf.cast(self.num_ways, labels.dtype),
                                             message=message)]):
                labels = tf.identity(labels)
        return tf.one_hot(labels, self.num_ways, dtype=dtype)

    def predict(self, query, weights):
        return tf.cast(self.scale, query.dtype) * tf.einsum("tqm,tmk->tqk", query, weights)

    def compute_output_shape(self, input_shape):
        query_shape = input_shape[2]
        return (query_shape[0], query_shape[1], self.num_ways)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DenseSVMHead(ClassificationHead):
    r"""Multiclass (Crammer-Singer) SVM with a ridge term fitted on each support set
    (MetaOptNet-SVM) -> query logits.

    W_t = argmin_W sum_i max_l (1 - Y_il + (W_l - W_{y_i}) . F_i) + lam2/2 ||W||_F^2,
    solved in the dual (`solvers.svm_dual`) and differentiated implicitly
    (`solvers.svm_implicit`); logits = scale Q W with a learnable scale.

    Args:
      num_ways: number of classes k per episode.
      lam2: ridge strength > 0.
      smoothing: >= 0, smoothed hinge (the authors' dual_reg).
      tol, max_iter: dual solver's gap tolerance (relative to n) and budget.
      scale: initial logit scale.
    Input: (support features [T, n, m], labels int [T, n], query features [T, q, m]).
    Output: logits [T, q, num_ways]; `solve` adds W [T, m, num_ways] and the `SVMResult`.
    """

    FIELDS = {**ClassificationHead.FIELDS, "lam2": Float(min=0.0, min_open=True),
              "smoothing": Float(min=0.0), "tol": Float(min=0.0, min_open=True),
              "max_iter": Int(min=1)}

    def __init__(self, num_ways, *, lam2=1.0, smoothing=0.0, tol=1e-4, max_iter=1000,
                 scale=1.0, **kwargs):
        super().__init__(num_ways=num_ways, lam2=lam2, smoothing=smoothing, tol=tol,
                         max_iter=max_iter, scale=scale, **kwargs)

    def solver_settings(self) -> dict:
        """Keyword arguments of the dual solver."""
        return dict(smoothing=self.smoothing, tol=self.tol, max_iter=self.max_iter)

    def fit_svm(self, support, onehot, lam1):
        """The SVM with group-Lasso strength lam1 [T]: (W [T, m, k], `SVMResult`)."""
        W, result = svm_implicit(support, onehot, lam1,
                                          tf.constant(self.lam2, support.dtype),
                                          **self.solver_settings())
        return tf.transpose(W, [0, 2, 1]), result

    def fit(self, support, labels):
        return self.fit_svm(support, self.onehot(labels, support.dtype), _per_task(0.0, support))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseSVMHead(DenseSVMHead):
    r"""Group-Lasso multiclass SVM fitted on each episode's support set -> query logits.

    W_t = argmin_W sum_i max_l (1 - Y_il + (W_l - W_{y_i}) . F_i)
                   + sum_j (lam1 ||W_j||_2 + lam2/2 ||W_j||_2^2),
    with W_j [num_ways] feature j's weights; `DenseSVMHead` at lam1 = 0. Features
    j with W_j = 0 are unused by the episode.

    With `refit=True` the group Lasso only selects the features: W is then the
    dense (lam1 = 0) SVM fitted on the selected features S = {j : W_j != 0}
    alone (the relaxed Lasso of Meinshausen 2007 at phi = 0), which removes
    the shrinkage lam1 puts on the kept weights at the same sparsity. S is
    held fixed under differentiation (it is piecewise constant in the inputs);
    the gradient is the dense SVM's on the columns F_:S.

    Args:
      num_ways: number of classes k per episode.
      eps: lam1 = eps * svm_lambda_max (stop-gradient); or `lam1` absolute
        (exactly one of them). eps = 0 (or lam1 = 0) is the dense SVM.
      lam2, smoothing, tol, max_iter, scale: as in `DenseSVMHead`.
      refit: fit the dense SVM on the features the group Lasso selects.
    Input: (support features [T, n, m], labels int [T, n], query features [T, q, m]).
    Output: logits [T, q, num_ways]; `solve` adds W [T, m, num_ways] and the `SVMResult`.
    """

    FIELDS = {**DenseSVMHead.FIELDS, "eps": _Optional(Float(min=0.0)),
              "lam1": _Optional(Float(min=0.0)), "refit": Bool()}

    def __init__(self, num_ways, eps=None, *, lam1=None, lam2=1.0, smoothing=0.0, tol=1e-4,
                 max_iter=1000, scale=1.0, refit=False, **kwargs):
        super().__init__(num_ways, lam2=lam2, smoothing=smoothing, tol=tol, max_iter=max_iter,
                         scale=scale, eps=eps, lam1=lam1, refit=refit, **kwargs)

    def check_fields(self, fields):
        _check_exactly_one(type(self).__name__, fields["eps"], fields["lam1"], "lam1")
        super().check_fields(fields)

    def fit(self, support, labels):
        onehot = self.onehot(labels, support.dtype)
        if self.lam1 is not None:
            lam1 = _per_task(self.lam1, support)
        else:
            lam1 = self.eps * svm_lambda_max(tf.stop_gradient(support), onehot)
        if self.refit:
            W = svm_dual(tf.stop_gradient(support), onehot, lam1,
                         tf.constant(self.lam2, support.dtype), **self.solver_settings()).W
            selected = tf.cast(tf.reduce_any(tf.not_equal(W, 0.0), axis=1), support.dtype)
            support, lam1 = support * selected[:, None, :], tf.zeros_like(lam1)
        return self.fit_svm(support, onehot, lam1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RidgeClassifierHead(ClassificationHead):
    r"""Ridge regression onto one-hot labels (R2D2 / MetaOptNet-RR): logits = scale Q W.

    W_t = argmin_W 1/(2n) ||onehot(y_t) - F_t W||_F^2 + lam/2 ||W||_F^2 [T, m, num_ways],
    in closed form with its implicit gradient (`solvers.ridge_implicit`).
    MetaOptNet's lam = 50 on the unnormalised ||.||^2 is lam = 50 / n here.

    Args:
      num_ways: number of classes k per episode.
      lam: ridge strength >= 0 (> 0 when m > n).
      scale: initial logit scale.
    Input: (support features [T, n, m], labels int [T, n], query features [T, q, m]).
    Output: logits [T, q, num_ways]; `solve` adds W and the `RidgeResult`.
    """

    FIELDS = {**ClassificationHead.FIELDS, "lam": Float(min=0.0)}

    def __init__(self, num_ways, *, lam=1.0, scale=1.0, **kwargs):
        super().__init__(num_ways=num_ways, lam=lam, scale=scale, **kwargs)

    def fit(self, support, labels):
        return ridge_implicit(support, self.onehot(labels, support.dtype),
                                       _per_task(self.lam, support))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PrototypeHead(ClassificationHead):
    r"""Prototypical-network head: logits_tqk = -scale ||Q_tq - c_tk||^2 / m.

    The prototype c_tk is the mean support feature of class k in episode t
    (Snell et al. 2017; a class without support samples has c_tk = 0); the
    weights are the prototypes, W [T, m, num_ways]. The 1/m keeps the initial
    logits O(1) for any feature size (the learnable scale, init `scale`, then
    adapts them, as in MetaOptNet).

    Args:
      num_ways: number of classes k per episode.
      scale: initial logit scale.
    Input: (support features [T, n, m], labels int [T, n], query features [T, q, m]).
    Output: logits [T, q, num_ways]; `solve` adds the prototypes (no certificate).
    """

    def __init__(self, num_ways, *, scale=1.0, **kwargs):
        super().__init__(num_ways=num_ways, scale=scale, **kwargs)

    def fit(self, support, labels):
        onehot = self.onehot(labels, support.dtype)                               # [T, n, k]
        counts = tf.reduce_sum(onehot, axis=1)[:, None, :]                        # [T, 1, k]
        return tf.einsum("tnm,tnk->tmk", support, onehot) / tf.maximum(counts, 1.0), None

    def predict(self, query, prototypes):
        distances = (tf.reduce_sum(tf.square(query), -1, keepdims=True)
                     - 2.0 * tf.einsum("tqm,tmk->tqk", query, prototypes)
                     + tf.reduce_sum(tf.square(prototypes), axis=1)[:, None, :])
        m = tf.cast(tf.shape(query)[-1], query.dtype)
        return -tf.cast(self.scale, query.dtype) * distances / m


HEADS: dict[str, type[Head]] = {
    "lasso": LassoHead,
    "ridge": RidgeHead,
    "identity": IdentityHead,
    "sparse_svm": SparseSVMHead,
    "dense_svm": DenseSVMHead,
    "ridge_classifier": RidgeClassifierHead,
    "proto": PrototypeHead,
}

LAYER_FIELDS = ("name", "dtype")
"""Keras layer arguments `build` passes on besides a head's FIELDS."""


def build(head: str, /, **fields) -> Head:
    """The head registered as `head` in `HEADS`, constructed with `fields`.

    `fields` are the head class's `FIELDS` (its constructor arguments) and the
    Keras `LAYER_FIELDS`, e.g. `build("lasso", eps=0.2, tol=1e-5)`,
    `build("sparse_svm", num_ways=5, eps=0.1, **config.heads.sparse_svm)`.
    Raises ValueError (one line) for an unknown head, an unknown or missing
    field, or a field outside its allowed values.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choices: {', '.join(HEADS)}")
    head_class = HEADS[head]
    for field in fields:
        if field not in head_class.FIELDS and field not in LAYER_FIELDS:
            raise ValueError(f"head {head!r}: unknown field {field!r}; "
                             f"{did_you_mean('', field, head_class.FIELDS)}fields of "
                             f"{head_class.__name__}: {', '.join(head_class.FIELDS)}")
    try:
        inspect.signature(head_class).bind(**fields)
    except TypeError as error:
        raise ValueError(f"head {head!r}: {error}") from None
    return head_class(**fields)
