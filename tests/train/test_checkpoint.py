"""Checkpointer: round trip of model, optimizer, step and elapsed time; keeps 3."""

import keras
import numpy as np
import tensorflow as tf

from sdis_tf.train.checkpoint import Checkpointer


def _model_and_optimizer(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_round_trip_and_keep_three(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), model=model, optimizer=optimizer)
    assert checkpointer.restore() == 0 and checkpointer.latest is None
    for step in range(1, 6):
        grads = [tf.ones_like(v) for v in model.trainable_variables]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        checkpointer.save(step, elapsed=2.0 * step)
    assert checkpointer.latest.endswith("ckpt-5")
    assert sorted(f for f in tf.io.gfile.listdir(str(tmp_path / "ckpt")) if f.endswith(".index")) \
        == ["ckpt-3.index", "ckpt-4.index", "ckpt-5.index"]

    other, other_optimizer = _model_and_optimizer(1)
    restored = Checkpointer(str(tmp_path / "ckpt"), model=other, optimizer=other_optimizer)
    assert restored.restore() == 5
    assert float(restored.elapsed.numpy()) == 10.0
    for a, b in zip(model.weights + optimizer.variables, other.weights + other_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_non_chief_saves_to_scratch_and_restores_from_chief(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    chief = Checkpointer(str(tmp_path / "ckpt"), model=model, optimizer=optimizer)
    chief.save(4, 1.0)
    worker = Checkpointer(str(tmp_path / "ckpt"), chief=False, worker=1, model=model,
                          optimizer=optimizer)
    assert worker.restore() == 4
    worker.save(6, 2.0)
    assert chief.latest.endswith("ckpt-4")
    assert not (tmp_path / ".worker1_checkpoints").exists()
