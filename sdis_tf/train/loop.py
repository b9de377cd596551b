"""The training loop shared by every experiment: resume, evaluate, checkpoint, stop cleanly.

`fit` runs steps [start, total) where start is restored from the latest
checkpoint, so rerunning a killed run continues it, and rerunning a finished
run does no training. Around the steps it

- evaluates every `eval_every_steps` (and at steps 0 and total), appending
  one record to metrics.jsonl (train/ metrics of the last step, eval/ metrics)
  and writing TensorBoard summaries; a non-finite evaluation metric (scores
  of a degenerate model) is recorded as NaN / inf, with one warning line the
  first time each metric is non-finite, and training goes on;
- checkpoints every `checkpoint_every_steps` and at the end;
- logs a progress line at least every `log_every_seconds`;
- on SIGTERM or SIGINT finishes the current step, checkpoints and raises
  `Interrupted` (sdis_tf.cli turns it into a clean exit);
- on a non-finite train metric (loss, gradient norm) raises
  `NonFiniteError` (one line naming the step and the last checkpoint),
  without checkpointing, so the latest checkpoint on disk is the last good
  state.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Callable, Mapping

import tensorflow as tf
from absl import logging

from sdis_tf.signals import on_signals
from sdis_tf.train.checkpoint import Checkpointer
from sdis_tf.train.progress import Progress
from sdis_tf.train.rundir import RunDir

TrainStep = Callable[[int], Mapping[str, tf.Tensor]]
"""train_step(step) -> train metrics (scalars), running data batch number `step`."""

Evaluate = Callable[[], tuple[Mapping[str, float], Mapping[str, tf.Tensor]]]
"""evaluate() -> (eval scalars, TensorBoard images [k, h, w, c])."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by signal {signal.Signals(signum).name} at step {step}; "
                         f"checkpoint {checkpoint}; rerun the same command to resume")


class NonFiniteError(FloatingPointError):
    """A train metric became NaN or infinite."""


def _warn_non_finite(step: int, metrics: Mapping[str, float], warned: set, name: str) -> None:
    """Logs one warning naming the metrics non-finite for the first time (added to `warned`)."""
    new = sorted(k for k, v in metrics.items() if k not in warned and not math.isfinite(v))
    if new:
        warned.update(new)
        logging.warning("%snon-finite %s at step %d: recorded as is, training continues "
                        "(warned once per metric)", f"[{name}] " if name else "",
                        ", ".join(f"{k}={metrics[k]}" for k in new), step)


def fit(*, train_step: TrainStep, evaluate: Evaluate, checkpointer: Checkpointer,
        rundir: RunDir, total_steps: int, eval_every_steps: int,
        checkpoint_every_steps: int, log_every_seconds: float = 30.0,
        name: str = "") -> dict:
    """Trains to `total_steps` from the latest checkpoint; returns the final record.

    The final record is {"step": total_steps, "time", "elapsed", train/..., eval/...},
    `elapsed` being the run's seconds of training and evaluation summed over
    resumes. See the module docstring for everything else.
    """
    start = checkpointer.restore()
    # Records after the checkpoint are redone; without a checkpoint, so is step 0's.
    rundir.truncate_metrics(start if start else -1)
    if start:
        logging.info("%sresuming from step %d (%s)", f"[{name}] " if name else "", start,
                     checkpointer.latest)
    clock_start = time.monotonic()
    elapsed_before = float(checkpointer.elapsed.numpy())

    def elapsed():
        return elapsed_before + time.monotonic() - clock_start

    warned: set[str] = set()

    def record(step, train_metrics):
        scalars, images = evaluate()
        metrics = {**{f"train/{k}": v for k, v in train_metrics.items()},
                   **{f"eval/{k}": v for k, v in scalars.items()}}
        _warn_non_finite(step, metrics, warned, name)
        rundir.write_summaries(step, metrics, {f"eval/{k}": v for k, v in images.items()})
        return rundir.append_metrics(step, time.time(), {"elapsed": elapsed(), **metrics})

    progress = Progress(total_steps, every_seconds=log_every_seconds, name=name)
    last = record(0, {}) if start == 0 else None
    train_metrics: dict[str, float] = {}
    caught: list[int] = []
    with on_signals(caught.append):
        for step in range(start, total_steps):
            train_metrics = {k: float(v) for k, v in train_step(step).items()}
            bad = sorted(k for k, v in train_metrics.items() if not math.isfinite(v))
            if bad:
                raise NonFiniteError(
                    f"non-finite {', '.join(f'train/{k}={train_metrics[k]}' for k in bad)} at "
                    f"step {step + 1} (batch {step}); nothing saved after it; last good "
                    f"checkpoint: {checkpointer.latest or 'none'}")
            done = step + 1
            if done % eval_every_steps == 0 or done == total_steps:
                last = record(done, train_metrics)
            if done % checkpoint_every_steps == 0 or done == total_steps:
                checkpointer.save(done, elapsed())
            latest = {k: v for k, v in (last or {}).items() if k.startswith("eval/")}
            progress.update(done, {**{f"train/{k}": v for k, v in train_metrics.items()},
                                   **latest}, force=done == total_steps)
            if caught:
                path = checkpointer.latest if done % checkpoint_every_steps == 0 or \
                    done == total_steps else checkpointer.save(done, elapsed())
                raise Interrupted(caught[0], done, path)
    if last is None:  # Restored at the end: the run's last record is on disk.
        records = rundir.read_metrics()
        if records and records[-1]["step"] == total_steps:
            return records[-1]
        scalars, _ = evaluate()
        last = {"step": total_steps, "time": time.time(),
                "elapsed": float(checkpointer.elapsed.numpy()),
                **{f"eval/{k}": v for k, v in scalars.items()}}
    return last
