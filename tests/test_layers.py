"""Keras layers that are not heads (tests/test_heads.py): TaskBatchNorm."""

import keras
import numpy as np
import pytest

from sdis_tf import layers


def test_task_batch_norm_serialises_and_rejects_bad_arguments():
    norm = layers.TaskBatchNorm(momentum=0.8, epsilon=1e-3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(norm))
    assert type(restored) is layers.TaskBatchNorm and restored.get_config() == norm.get_config()
    for field, bad in (("momentum", 1.0), ("momentum", float("nan")), ("momentum", -0.1),
                       ("epsilon", 0.0), ("epsilon", float("inf")), ("epsilon", float("nan"))):
        with pytest.raises(ValueError, match=f"TaskBatchNorm: {field}=.* allowed: a finite "
                                             f"float in") as error:
            layers.TaskBatchNorm(**{field: bad})
        assert "\n" not in str(error.value)


def test_task_batch_norm_normalises_each_task_and_tracks_moving_statistics():
    rng = np.random.default_rng(2)
    scales = np.array([1.0, 3.0])[:, None, None]
    X = (rng.standard_normal((2, 50, 3)) * scales + np.array([[[5.0]], [[-1.0]]])).astype(np.float32)
    norm = layers.TaskBatchNorm(momentum=0.0)
    out = norm(X, training=True).numpy()
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(norm.moving_mean.numpy(), X.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), X.var(axis=1).mean(axis=0), rtol=1e-5)
    flat = rng.standard_normal((7, 3)).astype(np.float32)  # inference accepts any [..., m]
    expected = (flat - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + 1e-5)
    np.testing.assert_allclose(norm(flat, training=False).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="T, n, m"):
        norm(flat, training=True)
