"""Checkpointer: round trip of model, optimizer, step and elapsed time; keeps 3; a damaged
latest checkpoint falls back to the newest intact one."""

import contextlib
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import logging as absl_logging

from sdis_tf.train.checkpoint import Checkpointer, NoIntactCheckpointError


@contextlib.contextmanager
def absltest_logs():
    """Collects the absl log lines emitted inside the block."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect()
    absl_logging.get_absl_logger().addHandler(handler)
    try:
        yield lines
    finally:
        absl_logging.get_absl_logger().removeHandler(handler)


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


def _saved_steps(directory, model, optimizer, steps):
    checkpointer = Checkpointer(directory, model=model, optimizer=optimizer)
    for step in steps:
        for variable in model.trainable_variables:
            variable.assign_add(tf.ones_like(variable))
        checkpointer.save(step, elapsed=float(step))
    return checkpointer


@pytest.mark.parametrize("damage", ["truncate_data", "truncate_index", "garbage_index"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
    directory = str(tmp_path / "ckpt")
    model, optimizer = _model_and_optimizer(0)
    _saved_steps(directory, model, optimizer, (1, 2))
    want = [v.numpy() for v in model.weights]
    _saved_steps(directory, model, optimizer, (3,))
    files = sorted(os.listdir(directory))
    data = [f for f in files if f.startswith("ckpt-3.data")][0]
    path = os.path.join(directory, "ckpt-3.index" if "index" in damage else data)
    with open(path, "r+b") as f:
        if damage.startswith("truncate"):
            f.truncate(os.path.getsize(path) // 2)
        else:
            f.write(b"\0" * 16)

    other, other_optimizer = _model_and_optimizer(1)
    restored = Checkpointer(directory, model=other, optimizer=other_optimizer)
    with absltest_logs() as logs:
        assert restored.restore() == 2
    warnings = [line for line in logs if "ckpt-3" in line]
    assert len(warnings) == 1 and "unreadable" in warnings[0], logs
    assert restored.latest.endswith("ckpt-2")
    for a, b in zip(want, other.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert sorted(os.listdir(directory)) == files  # nothing deleted
    restored.save(3, 3.0)  # training on overwrites the damaged step
    assert restored.latest.endswith("ckpt-3")
    assert Checkpointer(directory, model=model, optimizer=optimizer).restore() == 3


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    directory = str(tmp_path / "ckpt")
    model, optimizer = _model_and_optimizer(0)
    _saved_steps(directory, model, optimizer, (1,))
    index = os.path.join(directory, "ckpt-1.index")
    with open(index, "r+b") as f:
        f.truncate(10)
    with pytest.raises(NoIntactCheckpointError, match="no intact checkpoint in .*ckpt"):
        Checkpointer(directory, model=model, optimizer=optimizer).restore()


def test_a_checkpoint_of_another_model_is_not_taken_for_a_damaged_one(tmp_path):
    directory = str(tmp_path / "ckpt")
    model, optimizer = _model_and_optimizer(0)
    _saved_steps(directory, model, optimizer, (1,))
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(4)])
    with pytest.raises(AssertionError):
        Checkpointer(directory, model=other).restore()
