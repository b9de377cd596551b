"""ResNet-12: MetaOptNet's widths and feature size, DropBlock's masks, rate and keep-rate ramp."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.models.resnet12 import ResNet12, dropblock


def _metaoptnet_parameter_count(channels=(64, 160, 320, 640)):
    """Per block: 3 convs 3x3 and a 1x1 shortcut (no bias), 4 BN with scale and offset."""
    total, previous = 0, 3
    for width in channels:
        total += 9 * previous * width + 2 * 9 * width * width + previous * width + 4 * 2 * width
        previous = width
    return total


def test_full_size_has_metaoptnet_parameters_and_16000_features():
    model = ResNet12()
    features = model(tf.zeros([1, 84, 84, 3]), training=False)
    assert features.shape == (1, 640 * 5 * 5) == (1, 16_000)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == _metaoptnet_parameter_count() == 12_424_320
    assert model(tf.zeros([2, 32, 32, 3]), training=False).shape == (2, 640 * 2 * 2)


def test_keep_rate_ramps_linearly_then_stays():
    model = ResNet12((4, 4, 4, 4), drop_rate=0.1, ramp_steps=100)
    np.testing.assert_allclose([float(model.keep_rate(s)) for s in (0, 50, 100, 1000)],
                               [1.0, 0.95, 0.9, 0.9], rtol=1e-6)
    model.schedule_step.assign(25)
    np.testing.assert_allclose(float(model.keep_rate()), 0.975, rtol=1e-6)


def test_dropblock_zeroes_a_block_below_right_of_each_origin_and_rescales():
    x = tf.ones([1, 6, 6, 1])
    # One origin at (1, 2) of the 4 x 4 valid positions (block 3): gamma ~ 0.05 < 0.01 there only.
    draws = np.ones([1, 4, 4, 1], np.float32)
    draws[0, 1, 2, 0] = 0.0
    out = dropblock(x, 0.9, 3, lambda shape: tf.constant(draws)).numpy()[0, :, :, 0]
    expected_mask = np.ones([6, 6])
    expected_mask[1:4, 2:5] = 0.0
    np.testing.assert_allclose(out, expected_mask * 36 / 27, rtol=1e-6)
    # keep rate 1: no origin, identity
    np.testing.assert_allclose(dropblock(x, 1.0, 3, lambda shape: tf.zeros(shape)), x)


def test_dropblock_drop_fraction_matches_its_gamma():
    f, b, keep = 11, 5, 0.8
    x = tf.ones([8, f, f, 64])
    out = dropblock(x, keep, b, lambda shape: tf.random.stateless_uniform(shape, [1, 2]))
    dropped = float(tf.reduce_mean(tf.cast(out == 0.0, tf.float32)))
    # Exact expectation: a position is kept iff none of the origins covering it fires.
    valid = f - b + 1
    gamma = (1 - keep) / b ** 2 * f ** 2 / valid ** 2
    cover = np.zeros([f, f])
    for i in range(valid):
        for j in range(valid):
            cover[i:i + b, j:j + b] += 1
    expected = 1.0 - np.mean((1.0 - gamma) ** cover)
    assert abs(dropped - expected) < 0.01
    assert 0.1 < expected < 1 - keep   # overlaps make it a bit less than 1 - keep
    # the survivors are rescaled so that the mean is preserved exactly
    np.testing.assert_allclose(float(tf.reduce_mean(out)), 1.0, rtol=1e-5)


def test_masks_are_a_function_of_the_schedule_step_and_off_in_inference():
    model = ResNet12((4, 4, 8, 8), drop_rate=0.5, dropblock_size=2, ramp_steps=1, seed=3)
    x = tf.random.stateless_normal([2, 32, 32, 3], [0, 1])
    model.schedule_step.assign(5)
    a, b = model(x, training=True), model(x, training=True)
    np.testing.assert_array_equal(a, b)            # stateless: replayed after a resume
    model.schedule_step.assign(6)
    assert not np.array_equal(a, model(x, training=True))
    assert float(tf.reduce_mean(tf.cast(a == 0.0, tf.float32))) > 0.2   # dropout + DropBlock
    inference = model(x, training=False)
    np.testing.assert_array_equal(inference, model(x, training=False))
    assert float(tf.reduce_mean(tf.cast(inference == 0.0, tf.float32))) < 0.05


def test_config_round_trip_and_argument_errors():
    model = ResNet12((4, 4, 4, 4), drop_rate=0.2, dropblock_size=2, ramp_steps=7, seed=1)
    clone = ResNet12.from_config(model.get_config())
    assert (clone.channels, clone.drop_rate, clone.dropblock_size, clone.ramp_steps, clone.seed) \
        == ((4, 4, 4, 4), 0.2, 2, 7, 1)
    with pytest.raises(ValueError, match="channels must be 4 integers"):
        ResNet12((4, 4, 4))
    with pytest.raises(ValueError, match="drop_rate must be in"):
        ResNet12(drop_rate=1.0)
    assert isinstance(keras.saving.get_registered_object("sdis_tf>ResNet12"), type)
