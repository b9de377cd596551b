"""The quickstart's MLP encoder: shapes, per-task normalisation, checkpointing."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.models.mlp import MLPEncoder


def test_shapes_and_per_task_normalisation():
    encoder = MLPEncoder(3, hidden=(8, 8))
    x = tf.random.stateless_normal([2, 5, 4], seed=[0, 1])
    z = encoder(x, training=True)
    assert z.shape == (2, 5, 3)
    np.testing.assert_allclose(tf.reduce_mean(z, axis=1), 0.0, atol=1e-5)
    assert encoder.out.kernel.shape == (8, 3) and not encoder.out.use_bias
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPEncoder(3, activation="softsign")
