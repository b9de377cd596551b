"""Every encoder's tf.train.Checkpoint holds every weight, moving statistics included.

Keras 3 layers kept in a Python list are not followed by tf.train.Checkpoint: a model that
did so would save, and restore, only part of itself (the training loop's optimizer slots
hid this for the trainable weights, never for a model checkpointed alone).
"""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.models.conv4 import Conv4Encoder
from sdis_tf.models.mlp import MLPEncoder
from sdis_tf.models.resnet12 import ResNet12
from sdis_tf.models.small_conv import SmallConv

# (make model, input shape, number of weights)
MODELS = {
    # 4 convs (kernel, bias), dense (kernel, bias), output kernel, 2 moving statistics
    "conv4": (lambda: Conv4Encoder(3, width=0.25, hidden=8), [1, 5, 16, 16, 3], 4 * 2 + 2 + 1 + 2),
    # 2 hidden layers (kernel, bias), output kernel, 2 moving statistics
    "mlp": (lambda: MLPEncoder(3, hidden=(8, 8)), [1, 5, 4], 2 * 2 + 1 + 2),
    # per block 4 convs and 4 batch norms x 4 variables; the DropBlock schedule step
    "resnet12": (lambda: ResNet12((2, 2, 2, 2)), [1, 16, 16, 3], 4 * (4 + 4 * 4) + 1),
    # 2 x (conv kernel, bias, batch norm gamma... moving variance)
    "small_conv": (lambda: SmallConv((4, 4)), [1, 8, 8, 3], 2 * 5),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_restores_every_weight(name, tmp_path):
    make, input_shape, num_weights = MODELS[name]
    model = make()
    model(tf.zeros(input_shape), training=True)
    for v in model.weights:
        v.assign(v + tf.cast(1, v.dtype))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    clone = make()
    clone(tf.zeros(input_shape), training=True)
    tf.train.Checkpoint(model=clone).restore(path).assert_existing_objects_matched()
    assert len(clone.weights) == num_weights
    for u, v in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(u.numpy(), v.numpy(), err_msg=u.path)
