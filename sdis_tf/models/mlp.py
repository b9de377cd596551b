"""A per-sample MLP encoder with per-task batch norm on its output (the quickstart's f)."""

from __future__ import annotations

import keras

from sdis_tf.layers import TaskBatchNorm

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh")


@keras.saving.register_keras_serializable(package="sdis_tf")
class MLPEncoder(keras.Model):
    """f(x) = TaskBatchNorm(A_L a(... a(A_1 x + b_1) ...)): [..., d] -> [..., m].

    The last layer has no bias (TaskBatchNorm removes it anyway, and a
    parameter with zero gradient only adds optimizer noise). In training the
    input is [..., T, n, d] (TaskBatchNorm normalises per task); in inference
    any [..., d].

    Args:
      num_latents: m, the representation size.
      hidden: widths of the hidden layers.
      activation: one of `ACTIVATIONS`.
      momentum: TaskBatchNorm's moving-average momentum.
    """

    def __init__(self, num_latents: int, hidden=(64, 64), activation: str = "leaky_relu",
                 momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLPEncoder: activation must be one of {ACTIVATIONS}. "
                             f"Received: activation={activation!r}")
        self.num_latents, self.hidden = num_latents, tuple(hidden)
        self.activation, self.momentum = activation, momentum
        # Layers are attributes, not list items: tf.train.Checkpoint does not follow
        # Keras 3 lists.
        for i, width in enumerate(self.hidden):
            setattr(self, f"dense{i}", keras.layers.Dense(width, activation=activation))
        self.out = keras.layers.Dense(num_latents, use_bias=False)
        self.norm = TaskBatchNorm(momentum=momentum)

    def call(self, x, training=None):
        for i in range(len(self.hidden)):
            x = getattr(self, f"dense{i}")(x)
        return self.norm(self.out(x), training=training)

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents, "hidden": self.hidden,
                "activation": self.activation, "momentum": self.momentum}
