"""Checkpoints of a training run: model, optimizer, step and bookkeeping.

Data in sdis_tf is generated statelessly from (seed, step) (see
`sdis_tf.data.tasks`), so the step counter is the whole data and RNG state:
restoring it replays exactly the batches an uninterrupted run would see.
Weight initialisation is seeded from the config before the model is built.

`tf.train.CheckpointManager` writes each checkpoint under a temporary name and
updates its index file ("checkpoint") last, with an atomic rename: a crash
mid-save leaves the previous checkpoint as the latest one.

With several workers every process must take part in `save` (variables may
be distributed); only the chief writes into the run directory, the others
into a scratch directory that is deleted after each save. Every worker restores
from the chief's directory (a file system shared by the workers is assumed,
as in the TensorFlow multi-worker guide).
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf


class Checkpointer:
    """Saves and restores `step`, `elapsed` (training seconds) and the given trackables.

    Args:
      directory: where checkpoints go (the run directory's "checkpoints").
      max_to_keep: the number of checkpoints kept on disk.
      chief: whether this process owns `directory` (see the module docstring).
      worker: this process's worker id (names the scratch directory of non-chiefs).
      **trackables: objects to save, e.g. model=..., optimizer=....
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, chief: bool = True,
                 worker: int = 0, **trackables):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed")
        self._checkpoint = tf.train.Checkpoint(step=self.step, elapsed=self.elapsed, **trackables)
        self._chief = chief
        self.directory = directory
        self._write_dir = directory if chief else os.path.join(
            os.path.dirname(directory.rstrip("/")), f".worker{worker}_checkpoints")
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._write_dir, max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        """The path prefix of the latest checkpoint in `directory`, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> int:
        """Restores the latest checkpoint if there is one; returns the step (0 if none)."""
        latest = self.latest
        if latest:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self, step: int, elapsed: float) -> str:
        """Saves a checkpoint at `step` with `elapsed` training seconds; returns its path."""
        self.step.assign(step)
        self.elapsed.assign(elapsed)
        path = self._manager.save(checkpoint_number=step)
        if not self._chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path
