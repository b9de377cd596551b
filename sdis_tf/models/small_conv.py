"""A small conv backbone for CPU few-shot runs (Conv-4 style, no global pooling).

Each block: conv 3x3 (no bias) -> BatchNorm -> LeakyReLU(0.1) -> MaxPool 2.
The last feature map is flattened, as in MetaOptNet's backbones, so every
spatial position of every channel is a feature the sparse head can select:
m = channels[-1] * (H / 2^blocks)^2, e.g. 64 * 2 * 2 = 256 for 32x32 inputs
and the default four blocks.
"""

from __future__ import annotations

import keras

_NEGATIVE_SLOPE = 0.1


@keras.saving.register_keras_serializable(package="sdis_tf")
class SmallConv(keras.Model):
    """x [B, H, W, C] -> features [B, m] (see the module docstring).

    Args:
      channels: output channels of each block (one block per entry).
      momentum: BatchNorm moving-average momentum (Keras convention).
    """

    def __init__(self, channels=(32, 32, 64, 64), momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        channels = tuple(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                               for c in channels):
            raise ValueError("SmallConv: channels must be a non-empty tuple of integers >= 1. "
                             f"Received: channels={channels!r}")
        self.channels, self.momentum = channels, momentum
        # Layers are attributes, not list items: tf.train.Checkpoint does not follow
        # Keras 3 lists, and the BN moving statistics would not be saved.
        for i, width in enumerate(channels):
            setattr(self, f"conv{i}", keras.layers.Conv2D(width, 3, padding="same",
                                                          use_bias=False))
            setattr(self, f"norm{i}", keras.layers.BatchNormalization(momentum=momentum,
                                                                      epsilon=1e-5))
        self.pool = keras.layers.MaxPooling2D(2)
        self.flatten = keras.layers.Flatten()

    def call(self, x, training=None):
        for i in range(len(self.channels)):
            x = getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x), training=training)
            x = self.pool(keras.ops.leaky_relu(x, _NEGATIVE_SLOPE))
        return self.flatten(x)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "momentum": self.momentum}
