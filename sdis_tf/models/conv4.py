"""The four-layer conv encoder of the disentanglement literature, ending in per-task batch norm.

Architecture (Locatello et al., 2019; the authors' `ConvDisentanglement`):

    conv 32 k4 s2 -> ReLU -> conv 32 k4 s2 -> ReLU -> conv 64 k2 s2 -> ReLU
    -> conv 64 k2 s2 -> ReLU -> flatten -> dense 256 -> ReLU -> dense m
    -> TaskBatchNorm (no scale, no offset)

with SAME padding, so any input [H, W, C] works (any channel count: 1 for
dSprites, 3 for 3D Shapes): each convolution maps a side s to ceil(s / 2), so a
64x64 input becomes 4x4x64 = 1024 features before the dense layers (32x32 gives
2x2x64 = 256, 16x16 or smaller 1x1x64 = 64). The input shape is fixed by the
first call (`encoder(tf.zeros([1, H, W, C]))` builds it). Weights are drawn as in haiku
(truncated normal with variance 1/fan_in), biases start at zero. The last
dense layer has no bias: TaskBatchNorm subtracts each task's mean anyway, and
a parameter with zero gradient would only add optimizer noise.

Precision: `precision="mixed_bfloat16"` runs the convolutions and the hidden dense layer
in bfloat16 with float32 weights (Keras' mixed policy; ~1.5x faster steps on CPUs with
AVX512-BF16, and on TPUs and recent GPUs); the code layer and the normalisation stay in
float32, so the inner solvers always see float32 features.

Shapes: in training, x [..., T, n, H, W, C] -> f(x) [..., T, n, m], normalised
per task (TaskBatchNorm); in inference any x [..., H, W, C] -> [..., m],
normalised with the moving statistics.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from sdis_tf.layers import TaskBatchNorm

# (filters, kernel size) of the four stride-2 convolutions.
CONV_LAYERS = ((32, 4), (32, 4), (64, 2), (64, 2))
# Keras dtype policies of the convolutions and the hidden dense layer.
PRECISIONS = ("float32", "mixed_bfloat16")


def _haiku_init():
    return keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


@keras.saving.register_keras_serializable(package="sdis_tf")
class Conv4Encoder(keras.Model):
    """x [..., H, W, C] -> codes [..., m] (see the module docstring).

    Args:
      num_latents: m, the size of the representation (6 for 3D Shapes; larger allowed).
      width: multiplies the channels of the convolutions and the dense width
        (1.0 = the paper's 32, 32, 64, 64 and 256).
      hidden: width of the dense layer before the codes, before `width` scaling.
      momentum: TaskBatchNorm's moving-average momentum.
      precision: one of `PRECISIONS`, the dtype policy of the convolutions and the hidden
        dense layer (codes and normalisation are float32 either way).
    """

    def __init__(self, num_latents: int = 6, width: float = 1.0, hidden: int = 256,
                 momentum: float = 0.9, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError("Conv4Encoder: num_latents must be an integer >= 1. "
                             f"Received: num_latents={num_latents!r}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"Conv4Encoder: width must be a number > 0. Received: width={width!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"Conv4Encoder: precision must be one of {PRECISIONS}. "
                             f"Received: precision={precision!r}")
        self.num_latents, self.width, self.hidden, self.momentum, self.precision = (
            num_latents, width, hidden, momentum, precision)
        scaled = lambda c: max(1, int(round(c * width)))  # noqa: E731
        # Attributes conv0..conv3, not a list: tf.train.Checkpoint does not follow lists of
        # Keras 3 layers, so listed convolutions would be missing from the model's checkpoint.
        for i, (filters, kernel) in enumerate(CONV_LAYERS):
            setattr(self, f"conv{i}", keras.layers.Conv2D(
                scaled(filters), kernel, strides=2, padding="same", activation="relu",
                kernel_initializer=_haiku_init(), dtype=precision))
        self.flatten = keras.layers.Flatten(dtype=precision)
        self.dense = keras.layers.Dense(scaled(hidden), activation="relu",
                                        kernel_initializer=_haiku_init(), dtype=precision)
        self.out = keras.layers.Dense(num_latents, use_bias=False,
                                      kernel_initializer=_haiku_init(), dtype="float32")
        self.norm = TaskBatchNorm(momentum=momentum, dtype="float32")

    def call(self, x, training=None):
        leading = tf.shape(x)[:-3]
        h = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
        h.set_shape([None] + list(x.shape[-3:]))
        for i in range(len(CONV_LAYERS)):
            h = getattr(self, f"conv{i}")(h)
        h = self.out(self.dense(self.flatten(h)))
        codes = tf.reshape(h, tf.concat([leading, [self.num_latents]], 0))
        codes.set_shape(list(x.shape[:-3]) + [self.num_latents])
        return self.norm(codes, training=training)

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents, "width": self.width,
                "hidden": self.hidden, "momentum": self.momentum, "precision": self.precision}
