"""The small conv backbone: feature size (no global pooling), BatchNorm modes, errors."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.models.small_conv import SmallConv


def test_features_are_the_flattened_last_map():
    model = SmallConv()
    assert model(tf.zeros([3, 32, 32, 3]), training=False).shape == (3, 64 * 2 * 2)
    assert SmallConv((8, 16))(tf.zeros([1, 16, 16, 3])).shape == (1, 16 * 4 * 4)


def test_batchnorm_uses_batch_statistics_only_in_training():
    model = SmallConv((4,))
    x = 5.0 + 3.0 * tf.random.stateless_normal([16, 8, 8, 3], [0, 0])
    model(x, training=False)
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    train = model(x, training=True)
    after = [v.numpy() for v in model.non_trainable_variables]
    assert any(not np.allclose(u, v) for u, v in zip(before, after))   # moving stats updated
    # With batch statistics, the pre-pooling activations are centred: LeakyReLU of a
    # zero-mean map then max-pooled stays O(1) although the input has mean 5.
    assert float(tf.reduce_max(tf.abs(train))) < 10.0
    inference = model(x, training=False)
    assert not np.allclose(train, inference)


def test_config_round_trip_and_errors():
    clone = SmallConv.from_config(SmallConv((3, 5), momentum=0.5).get_config())
    assert clone.channels == (3, 5) and clone.momentum == 0.5
    with pytest.raises(ValueError, match="channels must be a non-empty tuple"):
        SmallConv(())
    with pytest.raises(ValueError, match="channels must be a non-empty tuple"):
        SmallConv((4, 0))
