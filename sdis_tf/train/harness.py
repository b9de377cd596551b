"""The life of one run, the same for every experiment.

    run(experiment, config, workdir):
      0. finished? a workdir holding result.json of the same config returns its summary:
                   no input opened, no lock, nothing written
      1. prepare   open and check everything the run reads (data files, Lake's runs, a
                   backbone to restore) against the config; bad input raises before
                   anything is written
      2. lock      one process per workdir (sdis_tf.train.lock; the chief only)
      3. config    write config.json, or check that a rerun has the same config
      4. finished? (again, under the lock: another process may have finished it)
      5. build     model, optimizer, trainer, evaluation (the experiment's `Run`)
      6. restore   from the newest intact checkpoint, then fit (sdis_tf.train.loop)
      7. finish    test, figures, result.json (written last: the run is finished)

An experiment module supplies one public `Experiment` (its schema, constraints and
the three functions `prepare`, `build`, `summarize`); `build` returns a `Run`, the
small object holding one run's pieces. One run is one point of the configuration
space: grids over methods, eps, seeds are sweeps (sdis_tf.sweep).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import tensorflow as tf
from absl import logging

from sdis_tf import config_schema
from sdis_tf.train import distribute, loop
from sdis_tf.train.checkpoint import Checkpointer
from sdis_tf.train.lock import WorkdirLock
from sdis_tf.train.rundir import CHECKPOINTS, RunDir, finished_result


class Run(Protocol):
    """One run's pieces, built by `Experiment.build`.

    Attributes:
      name: a short label for log lines (e.g. "lasso eps=0.1").
      trackables: what a checkpoint holds besides the step (model=..., optimizer=...).
      total_steps: the training steps of the run; 0: no training (a restored model
        is evaluated once, at `initial_step`).
      initial_step: the step a run without training reports (0 otherwise).
      eval_every_steps, checkpoint_every_steps: the loop's cadence.
    """

    name: str
    trackables: Mapping[str, Any]
    total_steps: int
    initial_step: int
    eval_every_steps: int
    checkpoint_every_steps: int

    def train_step(self, step: int) -> Mapping[str, Any]:
        """Trains on batch `step`; returns the step's train metrics (only called, and so
        only needed, when `total_steps > 0`; so are `trackables` and the cadences)."""

    def evaluate(self) -> tuple[Mapping[str, float], Mapping[str, tf.Tensor]]:
        """(eval scalars, TensorBoard images [k, h, w, c])."""

    def finish(self, final: dict, rundir: RunDir) -> dict:
        """The result of the finished run from the loop's final record (tests, figures)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What an experiment module gives the harness.

    Attributes:
      schema: the config schema (sdis_tf.config_schema).
      constraints: cross-field checks, each config -> list of problems.
      prepare: config -> inputs: opens and checks what the run reads; raises
        `config_schema.ConfigError` or `sdis_tf.data.errors.DataFileError` (one line each)
        before anything is written.
      build: (config, inputs, strategy) -> Run.
      summarize: result -> the one-line summary printed at the end.
      report: a sweep's directory -> its table (and figures written there), for the
        experiments whose points are compared side by side; None: no report.
    """

    schema: Mapping
    constraints: Sequence[Callable[[dict], list[str]]]
    prepare: Callable[[dict], Any]
    build: Callable[[dict, Any, tf.distribute.Strategy], Run]
    summarize: Callable[[dict], str]
    report: Callable[[str], str] | None = None


def run(experiment: Experiment, config, workdir: str) -> str:
    """Runs `config` in `workdir` through the steps of the module docstring; returns the
    summary of the (new or stored) result."""
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    config_schema.validate(config, experiment.schema, experiment.constraints)
    stored = finished_result(workdir, config)
    if stored is not None:
        logging.info("finished run found in %s: not redone", workdir)
        return experiment.summarize(stored)
    inputs = experiment.prepare(config)
    strategy = distribute.create_strategy(config["distribute"])
    chief = distribute.is_chief(strategy)
    lock = WorkdirLock(workdir).acquire() if chief else None
    rundir = RunDir(workdir, chief=chief)
    try:
        rundir.write_config(config)
        stored = rundir.result()
        if stored is not None:
            logging.info("finished run found in %s: not redone", workdir)
            return experiment.summarize(stored)
        built = experiment.build(config, inputs, strategy)
        result = _train_and_finish(built, rundir, strategy, config["log_every_seconds"])
        return experiment.summarize(result)
    finally:
        rundir.close()  # the TensorBoard writer, also when training raised
        if lock is not None:
            lock.release()


def _train_and_finish(built: Run, rundir: RunDir, strategy: tf.distribute.Strategy,
                      log_every_seconds: float) -> dict:
    if built.total_steps:
        checkpointer = Checkpointer(
            os.path.join(rundir.workdir, CHECKPOINTS), chief=rundir.chief,
            worker=distribute.worker_id(strategy), **built.trackables)
        final = loop.fit(
            train_step=built.train_step, evaluate=built.evaluate, checkpointer=checkpointer,
            rundir=rundir, total_steps=built.total_steps,
            eval_every_steps=built.eval_every_steps,
            checkpoint_every_steps=built.checkpoint_every_steps,
            log_every_seconds=log_every_seconds, name=built.name)
    else:
        final = evaluate_once(built, rundir)
    result = built.finish(final, rundir)
    rundir.write_result(result)
    return result


def evaluate_once(built: Run, rundir: RunDir) -> dict:
    """The only record of a run without training: one evaluation at `built.initial_step`."""
    start = time.monotonic()
    scalars, images = built.evaluate()
    metrics = {f"eval/{k}": v for k, v in scalars.items()}
    rundir.truncate_metrics(-1)
    rundir.write_summaries(built.initial_step, metrics,
                           {f"eval/{k}": v for k, v in images.items()})
    return rundir.append_metrics(built.initial_step, time.time(),
                                 {"elapsed": time.monotonic() - start, **metrics})
