r"""Keras 3 layers: differentiable inner-problem heads and per-task batch norm.

Heads map `(features [T, n, m], targets [T, n] or [T, n, k])` to per-task
weights `W [T, m]` or `[T, m, k]`; predictions are `features @ W`. The
regularisation is either absolute (`lam`) or relative (`eps`): lam_t = eps *
lam_max_t with lam_max under stop-gradient (paper appendix D.2.3), so eps in
(0, 1) keeps the same meaning across tasks and training steps.
"""

import keras
import tensorflow as tf

from sdis_tf import implicit
from sdis_tf.solvers.lasso import lasso_lambda_max, lasso_unrolled
from sdis_tf.solvers.ridge import ridge_lambda_max
from sdis_tf.solvers.svm import svm_dual, svm_lambda_max

_PACKAGE = "sdis_tf"
_DIFF_MODES = ("implicit", "unroll")
_BACKENDS = ("auto", "xla", "op")


def _check_regularization(layer_name, eps, lam, lam_name="lam"):
    if (eps is None) == (lam is None):
        raise ValueError(f"{layer_name}: give exactly one of `eps` (relative to lambda_max) or "
                         f"`{lam_name}` (absolute). Received: eps={eps}, {lam_name}={lam}")
    value, field = (eps, "eps") if eps is not None else (lam, lam_name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{layer_name}: `{field}` must be a number >= 0. Received: {field}={value!r}")


class _InnerHead(keras.layers.Layer):
    """Shared plumbing of the regression heads: regularisation and output shape."""

    def __init__(self, eps=None, *, lam=None, **kwargs):
        super().__init__(**kwargs)
        _check_regularization(type(self).__name__, eps, lam)
        self.eps = eps
        self.lam = lam

    # lambda_max(features, targets) -> [T]: the scale of `eps`, set by each head.
    lambda_max = None

    def regularization(self, features, targets):
        """lam per task [T]: eps * stop_gradient(lambda_max), or the absolute lam."""
        if self.lam is not None:
            return tf.fill(tf.shape(features)[:1], tf.constant(self.lam, features.dtype))
        return self.eps * tf.stop_gradient(self.lambda_max(features, targets))

    def compute_output_shape(self, input_shape):
        features_shape, targets_shape = input_shape
        return (features_shape[0], features_shape[2], *targets_shape[2:])

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "lam": self.lam}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LassoHead(_InnerHead):
    r"""Per-task (group) Lasso fitted inside the forward pass, differentiable.

    W_t = argmin_W 1/(2n) ||Y_t - F_t W||_F^2 + lam_t sum_j ||W_j||_2.

    Args:
      eps: lam_t = eps * max_j ||F_{t,j}^T Y_t||_2 / n (stop-gradient on the max).
      lam: absolute lam (exactly one of eps, lam).
      diff: "implicit" (implicit differentiation on the support; exact at the
        solution, memory independent of the number of epochs) or "unroll"
        (autodiff through `unroll_epochs` epochs of coordinate descent).
      tol: duality-gap tolerance of the forward solve, relative to ||Y||^2/(2n).
      max_epochs: epoch budget of the forward solve (implicit mode).
      unroll_epochs: number of epochs differentiated through (unroll mode).
      backend: forward solver of the implicit mode, as in `solvers.lasso`:
        "auto" (the C++ op outside XLA when built, else XLA), "xla" or "op".
        The gradient is the same for all: it is defined by the optimality
        condition, not by the solver.
    Input: (features [T, n, m], targets [T, n] or [T, n, k]).
    Output: W [T, m] or [T, m, k].
    `solve(inputs)` returns (W, LassoResult) to monitor gaps and epochs.
    """

    def __init__(self, eps=None, *, lam=None, diff="implicit", tol=1e-5, max_epochs=500,
                 unroll_epochs=50, backend="auto", **kwargs):
        super().__init__(eps, lam=lam, **kwargs)
        if diff not in _DIFF_MODES:
            raise ValueError(f"LassoHead: `diff` must be one of {_DIFF_MODES}. Received: diff={diff!r}")
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"LassoHead: `tol` must be a number > 0. Received: tol={tol!r}")
        for field, value in (("max_epochs", max_epochs), ("unroll_epochs", unroll_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LassoHead: `{field}` must be an integer >= 1. "
                                 f"Received: {field}={value!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"LassoHead: `backend` must be one of {_BACKENDS}. "
                             f"Received: backend={backend!r}")
        self.diff = diff
        self.backend = backend
        self.tol = tol
        self.max_epochs = max_epochs
        self.unroll_epochs = unroll_epochs

    lambda_max = staticmethod(lasso_lambda_max)

    def call(self, inputs, training=None):
        if self.diff == "unroll":
            features, targets = inputs
            return lasso_unrolled(features, targets, self.regularization(features, targets),
                                  epochs=self.unroll_epochs)
        return self.solve(inputs)[0]

    def solve(self, inputs):
        """Implicit-mode solve returning (W, LassoResult) for monitoring gaps and epochs."""
        features, targets = inputs
        return implicit.lasso_implicit(features, targets, self.regularization(features, targets),
                                       tol=self.tol, max_epochs=self.max_epochs,
                                       backend=self.backend)

    def get_config(self):
        return {**super().get_config(), "diff": self.diff, "tol": self.tol,
                "max_epochs": self.max_epochs, "unroll_epochs": self.unroll_epochs,
                "backend": self.backend}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RidgeHead(_InnerHead):
    r"""Per-task ridge regression in closed form, with its implicit gradient.

    W_t = argmin_W 1/(2n) ||Y_t - F_t W||_F^2 + lam_t/2 ||W||_F^2.

    Args:
      eps: lam_t = eps * ||F_t||_F^2 / n (stop-gradient; paper D.2.3).
      lam: absolute lam (exactly one of eps, lam; 0 gives least squares when
        F_t has full column rank).
    Input: (features [T, n, m], targets [T, n] or [T, n, k]).
    Output: W [T, m] or [T, m, k].
    """

    lambda_max = staticmethod(lambda features, targets: ridge_lambda_max(features))

    def call(self, inputs, training=None):
        features, targets = inputs
        W, _ = implicit.ridge_implicit(features, targets, self.regularization(features, targets))
        return W


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseSVMHead(keras.layers.Layer):
    r"""Group-Lasso multiclass SVM fitted on each episode's support set -> query logits.

    W_t = argmin_W sum_i max_l (1 - Y_il + (W_l - W_{y_i}) . F_i)
                   + sum_j (lam1 ||W_:j||_2 + lam2/2 ||W_:j||_2^2),
    solved in the dual (`solvers.svm_dual`) and differentiated implicitly
    (`implicit.svm_implicit`); logits = scale * Q W^T with a learnable scale
    (MetaOptNet's). Features j with W_:j = 0 are unused by the episode.

    With `refit=True` the group Lasso only selects the features: W is then the
    dense (lam1 = 0) SVM fitted on the selected features S = {j : W_:j != 0}
    alone (the relaxed Lasso of Meinshausen 2007 at phi = 0), which removes
    the shrinkage lam1 puts on the kept weights at the same sparsity. S is
    held fixed under differentiation (it is piecewise constant in the inputs);
    the gradient is the dense SVM's on the columns F_:S.

    Args:
      num_ways: number of classes k per episode.
      eps: lam1 = eps * svm_lambda_max (stop-gradient); or `lam1` absolute.
        eps = 0 (or lam1 = 0) is the dense Crammer-Singer SVM.
      lam2: ridge strength > 0.
      smoothing: >= 0, smoothed hinge (the authors' dual_reg).
      tol, max_iter: dual solver's gap tolerance (relative to n) and budget.
      scale: initial logit scale.
      refit: fit the dense SVM on the features the group Lasso selects.
    Input: (support features [T, n, m], support labels int [T, n], query features [T, q, m]).
    Output: logits [T, q, num_ways].
    """

    def __init__(self, num_ways, eps=None, *, lam1=None, lam2=1.0, smoothing=0.0, tol=1e-4,
                 max_iter=1000, scale=1.0, refit=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_ways, bool) or not isinstance(num_ways, int) or num_ways < 2:
            raise ValueError(f"SparseSVMHead: `num_ways` must be an integer >= 2. "
                             f"Received: num_ways={num_ways!r}")
        _check_regularization("SparseSVMHead", eps, lam1, "lam1")
        if not (isinstance(lam2, (int, float)) and lam2 > 0):
            raise ValueError(f"SparseSVMHead: `lam2` must be a number > 0. Received: lam2={lam2!r}")
        if not isinstance(refit, bool):
            raise ValueError(f"SparseSVMHead: `refit` must be True or False. Received: "
                             f"refit={refit!r}")
        self.num_ways, self.eps, self.lam1, self.lam2 = num_ways, eps, lam1, lam2
        self.smoothing, self.tol, self.max_iter, self.initial_scale = smoothing, tol, max_iter, scale
        self.refit = refit

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), trainable=True,
                                     initializer=keras.initializers.Constant(self.initial_scale))

    def solve(self, inputs):
        """(W [T, k, m], SVMResult) for the episodes' support sets."""
        support, labels, _ = inputs
        onehot = tf.one_hot(labels, self.num_ways, dtype=support.dtype)
        if self.lam1 is not None:
            lam1 = tf.fill(tf.shape(support)[:1], tf.constant(self.lam1, support.dtype))
        else:
            lam1 = self.eps * svm_lambda_max(tf.stop_gradient(support), onehot)
        lam2 = tf.constant(self.lam2, support.dtype)
        settings = dict(smoothing=self.smoothing, tol=self.tol, max_iter=self.max_iter)
        if self.refit:
            W = svm_dual(tf.stop_gradient(support), onehot, lam1, lam2, **settings).W
            selected = tf.cast(tf.reduce_any(tf.not_equal(W, 0.0), axis=1), support.dtype)
            support, lam1 = support * selected[:, None, :], tf.zeros_like(lam1)
        return implicit.svm_implicit(support, onehot, lam1, lam2, **settings)

    def call(self, inputs, training=None):
        W, _ = self.solve(inputs)
        return tf.cast(self.scale, W.dtype) * tf.einsum("tqm,tkm->tqk", inputs[2], W)

    def compute_output_shape(self, input_shape):
        return (input_shape[2][0], input_shape[2][1], self.num_ways)

    def get_config(self):
        return {**super().get_config(), "num_ways": self.num_ways, "eps": self.eps,
                "lam1": self.lam1, "lam2": self.lam2, "smoothing": self.smoothing,
                "tol": self.tol, "max_iter": self.max_iter, "scale": self.initial_scale,
                "refit": self.refit}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TaskBatchNorm(keras.layers.Layer):
    r"""Batch normalisation over the samples of each task, without scale or offset.

    Training: inputs [..., T, n, m] are normalised with the mean and variance
    over the sample axis (-2) of each task separately,
        y = (x - mean_t) / sqrt(var_t + epsilon),
    and the moving statistics are updated with the average over tasks of the
    per-task statistics: moving <- momentum * moving + (1 - momentum) * batch.
    Inference: any [..., m] is normalised with the moving statistics.
    This is the paper's norm control (appendix D.2.3): without it the scale of
    the features can shrink the penalty lam ||W||_{2,1} away.
    Defaults follow the authors' haiku BatchNorm (decay 0.9, eps 1e-5).
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"TaskBatchNorm: `momentum` must be in [0, 1). Received: momentum={momentum}")
        if not epsilon > 0:
            raise ValueError(f"TaskBatchNorm: `epsilon` must be > 0. Received: epsilon={epsilon}")
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = input_shape[-1]
        self.moving_mean = self.add_weight(name="moving_mean", shape=(dim,), initializer="zeros",
                                           trainable=False, aggregation="mean")
        self.moving_variance = self.add_weight(name="moving_variance", shape=(dim,),
                                               initializer="ones", trainable=False,
                                               aggregation="mean")

    def call(self, inputs, training=None):
        if not training:
            mean = tf.cast(self.moving_mean, inputs.dtype)
            variance = tf.cast(self.moving_variance, inputs.dtype)
            return (inputs - mean) * tf.math.rsqrt(variance + self.epsilon)
        if inputs.shape.rank < 3:
            raise ValueError("TaskBatchNorm: in training, inputs must be [..., T, n, m] (tasks, "
                             f"samples, features). Received shape {inputs.shape}")
        mean, variance = tf.nn.moments(inputs, axes=[-2], keepdims=True)
        task_axes = list(range(inputs.shape.rank - 1))
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            batch_average = tf.cast(tf.reduce_mean(batch, axis=task_axes), moving.dtype)
            moving.assign(self.momentum * moving + (1.0 - self.momentum) * batch_average)
        return (inputs - mean) * tf.math.rsqrt(variance + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}
