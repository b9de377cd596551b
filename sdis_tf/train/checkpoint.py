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

A checkpoint can still be damaged after it was written (a full disk, a copy cut
short): `restore` then warns with one line naming the unreadable checkpoint and
restores the newest intact one. Nothing is deleted; the damaged files are
replaced when training reaches their step again.
"""

from __future__ import annotations

import os
import re
import shutil

import tensorflow as tf
from absl import logging


class NoIntactCheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be read."""


def list_checkpoints(directory: str) -> list[str]:
    """Path prefixes of the checkpoints in `directory` (listed in its index file or found
    as ckpt-<step>.index), oldest first (by step); [] if none."""
    state = tf.train.get_checkpoint_state(directory)
    listed = set(state.all_model_checkpoint_paths) if state else set()
    found = {path[:-len(".index")] for path in tf.io.gfile.glob(
        os.path.join(directory, "ckpt-*.index"))}
    paths = {p if os.path.isabs(p) else os.path.join(directory, p) for p in listed | found}
    number = lambda path: int(re.search(r"(\d+)$", path).group(1))  # noqa: E731
    return sorted((p for p in paths if re.search(r"ckpt-\d+$", p)), key=number)


def readable(path: str) -> bool:
    """Whether the checkpoint `path` (a prefix) has a readable index: a quick check that
    reads no variable (a truncated `.data` file shows only on restore)."""
    try:
        tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError):
        return False
    return True


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

        self._current = None  # the checkpoint restored or last saved by the chief

    @property
    def latest(self) -> str | None:
        """The path prefix of the newest checkpoint this run stands on, or None."""
        return self._current or tf.train.latest_checkpoint(self.directory)

    def checkpoints(self) -> list[str]:
        """Path prefixes of the checkpoints in `directory`, oldest first (by step)."""
        return list_checkpoints(self.directory)

    def restore(self, partial: bool = False) -> int:
        """Restores the newest intact checkpoint; returns its step (0 if there is none).

        An unreadable checkpoint (truncated or corrupt `.index` / `.data`) gets one
        warning line and the next older one is tried; a readable one that does not match
        the trackables (another model) raises as it is. `partial`: the trackables are
        part of what was saved (a backbone without its head and optimizer); the rest of
        the checkpoint is left unread without a warning.

        Raises:
          NoIntactCheckpointError: there are checkpoints and none can be read.
        """
        candidates = self.checkpoints()
        for path in reversed(candidates):
            try:
                status = self._checkpoint.restore(path)
                if partial:
                    status.expect_partial()
                status.assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, IndexError) as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else \
                    type(error).__name__
                logging.warning("checkpoint %s is unreadable (%s); trying an older one",
                                path, reason)
                continue
            self._current = path
            return int(self.step.numpy())
        if candidates:
            raise NoIntactCheckpointError(
                f"no intact checkpoint in {self.directory} ({len(candidates)} unreadable); "
                "move that directory aside to train from the start")
        return 0

    def save(self, step: int, elapsed: float) -> str:
        """Saves a checkpoint at `step` with `elapsed` training seconds; returns its path."""
        self.step.assign(step)
        self.elapsed.assign(elapsed)
        path = self._manager.save(checkpoint_number=step)
        self._current = path if self._chief else None
        if not self._chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path
