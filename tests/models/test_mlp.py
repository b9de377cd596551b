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


def test_checkpoint_saves_every_weight_including_the_moving_statistics(tmp_path):
    model = MLPEncoder(3, hidden=(8, 8))
    model(tf.zeros([1, 5, 4]), training=True)
    for v in model.weights:
        v.assign(v + 1.5)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    clone = MLPEncoder(3, hidden=(8, 8))
    clone(tf.zeros([1, 5, 4]), training=True)
    tf.train.Checkpoint(model=clone).restore(path).assert_existing_objects_matched()
    # two hidden layers (kernel, bias), the output kernel, two moving statistics
    assert len(clone.weights) == 2 * 2 + 1 + 2
    for u, v in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(u.numpy(), v.numpy(), err_msg=u.path)
