r"""Keras layers that are not heads: per-task batch normalisation.

The episode heads (Lasso, ridge, SVM, prototypes) are in `sdis_tf.heads`.
"""

import keras
import tensorflow as tf

from sdis_tf.config_schema import Float

_PACKAGE = "sdis_tf"


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
        for field, value, spec in (("momentum", momentum, Float(0.0, 1.0, max_open=True)),
                                   ("epsilon", epsilon, Float(0.0, min_open=True))):
            problem = spec.problem(value)
            if problem:
                raise ValueError(f"TaskBatchNorm: {field}={value!r} {problem}")
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
