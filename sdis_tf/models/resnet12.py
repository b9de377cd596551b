r"""ResNet-12 as in MetaOptNet (Lee et al. 2019), with DropBlock and no global pooling.

Four residual blocks of widths (64, 160, 320, 640). Each block:

    h = conv3x3 -> BN -> LeakyReLU(0.1) -> conv3x3 -> BN -> LeakyReLU(0.1) -> conv3x3 -> BN
    out = MaxPool2(LeakyReLU(0.1)(h + BN(conv1x1(x))))

followed by dropout (blocks 1-2, rate `drop_rate`) or DropBlock (blocks 3-4)
in training. Convolutions have no bias; initialisation is Kaiming-normal
(fan_out, gain sqrt 2); BN momentum 0.9 (PyTorch's 0.1), epsilon 1e-5. The
last map is flattened: 640 * 5 * 5 = 16,000 features for 84x84 inputs,
640 * 2 * 2 = 2,560 for 32x32.

DropBlock (Ghiasi et al. 2018, MetaOptNet's variant): on an f x f map with
block size b, block origins are drawn per (image, channel) on the (f-b+1)^2
valid positions with probability

    gamma = (1 - keep) / b^2 * f^2 / (f - b + 1)^2,

each origin zeroes the b x b block below-right of it, and the output is
rescaled by (#elements / #kept). The keep rate follows MetaOptNet's ramp

    keep(step) = 1 - drop_rate * min(step / ramp_steps, 1),

where `step` is the model's `schedule_step` variable, which the training
loop sets to the global optimizer step (MetaOptNet counted forward calls per
block, two per iteration, so its 40,000-call ramp is ramp_steps = 20,000
iterations; its counter lived on each DataParallel replica and never
advanced there). Random masks are stateless:
drawn from (seed, schedule_step, block, replica id), so a resumed run
replays them and the model has no RNG state to synchronise across replicas.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_NEGATIVE_SLOPE = 0.1
_KAIMING = dict(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _stateless_uniform(shape, step, salt, seed):
    """U[0, 1) draws keyed by (seed, step, salt, replica id)."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    key = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(step, tf.int64),
                    tf.cast(salt, tf.int64) * 1_000 + tf.cast(replica, tf.int64)])
    return tf.random.stateless_uniform(shape, key)


def dropblock(x, keep_rate, block_size: int, uniform):
    """DropBlock on x [B, f, f, C] with `keep_rate` (see the module docstring).

    `uniform(shape)` supplies U[0, 1) draws. Returns x unchanged when keep_rate = 1.
    """
    f = x.shape[1]
    b = min(block_size, f)
    valid = f - b + 1
    gamma = (1.0 - keep_rate) / b ** 2 * f ** 2 / valid ** 2
    shape = tf.stack([tf.shape(x)[0], valid, valid, tf.shape(x)[3]])
    origins = tf.cast(uniform(shape) < tf.cast(gamma, tf.float32), x.dtype)
    padded = tf.pad(origins, [[0, 0], [b - 1, b - 1], [b - 1, b - 1], [0, 0]])
    dropped = tf.nn.max_pool2d(padded, b, 1, "VALID")        # [B, f, f, C]
    kept = 1.0 - dropped
    total = tf.cast(tf.size(kept), x.dtype)
    return x * kept * total / tf.maximum(tf.reduce_sum(kept), 1.0)


@keras.saving.register_keras_serializable(package="sdis_tf")
class ResidualBlock(keras.layers.Layer):
    """One ResNet-12 block without its dropout (see the module docstring): x [B, f, f, C_in]
    -> [B, f/2, f/2, width]; ResNet12 applies the dropout / DropBlock after it."""

    def __init__(self, width: int, momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.width, self.momentum = width, momentum
        conv = lambda size: keras.layers.Conv2D(
            width, size, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(**_KAIMING))
        norm = lambda: keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5)
        # Attributes, not lists: tf.train.Checkpoint does not follow Keras 3 lists.
        self.conv0, self.conv1, self.conv2 = conv(3), conv(3), conv(3)
        self.norm0, self.norm1, self.norm2 = norm(), norm(), norm()
        self.shortcut_conv, self.shortcut_norm = conv(1), norm()
        self.pool = keras.layers.MaxPooling2D(2)

    def call(self, x, training=None):
        h = x
        for i, (conv, norm) in enumerate(((self.conv0, self.norm0), (self.conv1, self.norm1),
                                          (self.conv2, self.norm2))):
            h = norm(conv(h), training=training)
            if i < 2:
                h = tf.nn.leaky_relu(h, _NEGATIVE_SLOPE)
        shortcut = self.shortcut_norm(self.shortcut_conv(x), training=training)
        return self.pool(tf.nn.leaky_relu(h + shortcut, _NEGATIVE_SLOPE))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="sdis_tf")
class ResNet12(keras.Model):
    """x [B, H, W, 3] -> flattened features [B, m] (see the module docstring).

    Args:
      channels: widths of the four blocks.
      drop_rate: dropout rate of blocks 1-2 and final drop rate of DropBlock.
      dropblock_size: DropBlock block size (5 for 84x84 inputs, 2 for 32x32).
      ramp_steps: optimizer steps over which DropBlock's keep rate falls from 1
        to 1 - drop_rate.
      seed: seed of the dropout masks.
    Attributes:
      schedule_step: int64 non-trainable variable read by DropBlock's schedule;
        the training loop assigns the global step to it.
    """

    def __init__(self, channels=(64, 160, 320, 640), drop_rate: float = 0.1,
                 dropblock_size: int = 5, ramp_steps: int = 20_000, seed: int = 0,
                 momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        channels = tuple(channels)
        if len(channels) != 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                     for c in channels):
            raise ValueError("ResNet12: channels must be 4 integers >= 1. "
                             f"Received: channels={channels!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"ResNet12: drop_rate must be in [0, 1). Received: "
                             f"drop_rate={drop_rate!r}")
        if dropblock_size < 1 or ramp_steps < 1:
            raise ValueError("ResNet12: dropblock_size and ramp_steps must be >= 1. Received: "
                             f"dropblock_size={dropblock_size}, ramp_steps={ramp_steps}")
        self.channels, self.drop_rate, self.dropblock_size = channels, drop_rate, dropblock_size
        self.ramp_steps, self.seed, self.momentum = ramp_steps, seed, momentum
        self.block0, self.block1, self.block2, self.block3 = (
            ResidualBlock(width, momentum) for width in channels)   # attributes: checkpointed
        self.flatten = keras.layers.Flatten()
        self.schedule_step = self.add_weight(name="schedule_step", shape=(), dtype="int64",
                                             initializer="zeros", trainable=False)

    def keep_rate(self, step=None):
        """DropBlock's keep rate at `step` (default: the schedule_step variable)."""
        step = self.schedule_step if step is None else step
        progress = tf.minimum(tf.cast(step, tf.float32) / self.ramp_steps, 1.0)
        return 1.0 - self.drop_rate * progress

    def call(self, x, training=None):
        step = tf.convert_to_tensor(self.schedule_step)
        for index, block in enumerate((self.block0, self.block1, self.block2, self.block3)):
            x = block(x, training=training)
            if not training or self.drop_rate == 0.0:
                continue
            uniform = lambda shape, salt=index: _stateless_uniform(shape, step, salt, self.seed)
            if index < 2:  # dropout with a constant rate
                keep = tf.cast(uniform(tf.shape(x)) >= self.drop_rate, x.dtype)
                x = x * keep / (1.0 - self.drop_rate)
            else:
                x = dropblock(x, tf.cast(self.keep_rate(step), x.dtype), self.dropblock_size,
                              uniform)
        return self.flatten(x)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "drop_rate": self.drop_rate,
                "dropblock_size": self.dropblock_size, "ramp_steps": self.ramp_steps,
                "seed": self.seed, "momentum": self.momentum}
