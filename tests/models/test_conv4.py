"""Conv4Encoder: the paper's architecture, per-task normalisation, shapes, config."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.models.conv4 import Conv4Encoder


def _paper_parameter_count(m):
    """Convs 32k4, 32k4, 64k2, 64k2 (biases) on RGB, dense 1024->256, 256->m (no bias)."""
    convs = [(3, 32, 4), (32, 32, 4), (32, 64, 2), (64, 64, 2)]
    count = sum(k * k * c_in * c_out + c_out for c_in, c_out, k in convs)
    return count + (4 * 4 * 64) * 256 + 256 + 256 * m


def test_paper_architecture_on_64x64():
    encoder = Conv4Encoder(num_latents=6)
    codes = encoder(tf.zeros([2, 64, 64, 3]), training=False)
    assert codes.shape == (2, 6)
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == \
        _paper_parameter_count(6)
    assert len(encoder.non_trainable_variables) == 2  # TaskBatchNorm moving mean / variance


def test_training_normalises_each_task_and_inference_keeps_leading_axes():
    encoder = Conv4Encoder(num_latents=5, width=0.25, hidden=16)
    # Scaled up so the pre-norm variance dwarfs TaskBatchNorm's epsilon (1e-5): at
    # initialisation (zero biases) the ReLU network is positively homogeneous.
    x = 1e3 * tf.random.stateless_uniform([3, 10, 32, 32, 3], [1, 2])
    codes = encoder(x, training=True).numpy()
    assert codes.shape == (3, 10, 5)
    np.testing.assert_allclose(codes.mean(axis=1), 0.0, atol=1e-3)
    variance = codes.var(axis=1)
    np.testing.assert_allclose(variance, 1.0, atol=1e-3)
    assert encoder(x, training=False).shape == (3, 10, 5)


def test_config_round_trip_and_validation():
    encoder = Conv4Encoder(num_latents=8, width=0.5, hidden=64, momentum=0.8,
                           precision="mixed_bfloat16")
    clone = Conv4Encoder.from_config(encoder.get_config())
    assert (clone.num_latents, clone.width, clone.hidden, clone.momentum, clone.precision) == \
        (8, 0.5, 64, 0.8, "mixed_bfloat16")
    with pytest.raises(ValueError, match="num_latents"):
        Conv4Encoder(num_latents=0)
    with pytest.raises(ValueError, match="width"):
        Conv4Encoder(width=-1.0)
    with pytest.raises(ValueError, match="precision.*mixed_bfloat16.*float16"):
        Conv4Encoder(precision="float16")


def test_mixed_bfloat16_computes_in_bfloat16_and_returns_float32_codes():
    """Same weights, both precisions: bfloat16 convolutions (8-bit mantissa) change the
    normalised codes by ~1e-2, the codes and every weight stay float32, and gradients flow."""
    x = tf.random.stateless_uniform([2, 12, 32, 32, 3], [3, 4])
    reference = Conv4Encoder(num_latents=4, width=0.5, hidden=32)
    mixed = Conv4Encoder(num_latents=4, width=0.5, hidden=32, precision="mixed_bfloat16")
    expected = reference(x, training=True)
    mixed(x, training=True)
    mixed.set_weights(reference.get_weights())
    with tf.GradientTape() as tape:
        codes = mixed(x, training=True)
        loss = tf.reduce_sum(tf.square(codes[..., 0] - 1.0))
    grads = tape.gradient(loss, mixed.trainable_variables)
    assert mixed.conv0.compute_dtype == "bfloat16" and mixed.dense.compute_dtype == "bfloat16"
    assert codes.dtype == tf.float32
    assert {v.dtype for v in mixed.weights} == {"float32"}
    assert all(g is not None and g.dtype == tf.float32 and np.isfinite(g.numpy()).all()
               for g in grads)
    error = np.abs(codes.numpy() - expected.numpy())
    assert 0 < error.max() < 0.1, error.max()


@pytest.mark.parametrize("shape,flat", [((64, 64, 1), 4 * 4 * 16), ((12, 10, 1), 1 * 1 * 16),
                                        ((6, 6, 3), 1 * 1 * 16)])
def test_any_image_size_and_channel_count(shape, flat):
    """dSprites' 64x64x1 and small images: each conv maps a side s to ceil(s / 2)."""
    encoder = Conv4Encoder(num_latents=5, width=0.25, hidden=16)
    codes = encoder(tf.zeros((2,) + shape), training=False)
    assert codes.shape == (2, 5)
    assert encoder.conv0.kernel.shape == (4, 4, shape[-1], 8)
    assert encoder.dense.kernel.shape == (flat, 4)
