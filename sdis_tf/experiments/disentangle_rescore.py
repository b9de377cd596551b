"""Scores finished disentangle runs again from their latest checkpoint, e.g. on the whole grid.

    python -m sdis_tf.experiments.disentangle_rescore runs/cpu64/lasso runs/cpu64/ridge \
        [--grid_points=0] [--train_points=N] [--agreement_points=5000]

Training scores the encoder on `eval.grid_points` rows of the factor grid (5,000 in the CPU
presets, to keep evaluations short); the paper scores every row (480,000 for 3D Shapes). For
each run directory this rebuilds the run's experiment from its config.json with
`eval.grid_points` (0: every row) and, if given, `eval.train_points` replaced, restores the
encoder (weights and TaskBatchNorm moving averages) from the latest checkpoint, and scores it
as training does (`disentangle_eval.Evaluator`: mcc, r, dci_d, dci_c, their *_train versions,
and ica_* when the run had ICA on). It writes RUN_DIR/rescore_grid<grid_points>.json
atomically (and RUN_DIR/codes.npz with --agreement_points) and prints one JSON line per run;
nothing else in the run directory changes.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import tensorflow as tf

from sdis_tf import config_schema
from sdis_tf.experiments import disentangle
from sdis_tf.experiments.disentangle_figures import AGREEMENT_CODES
from sdis_tf.train.checkpoint import Checkpointer
from sdis_tf.train.rundir import CHECKPOINTS, atomic_write


def rescore(rundir: str, grid_points: int = 0, train_points: int | None = None,
            agreement_points: int | None = None) -> dict:
    """Scores the latest checkpoint of the disentangle run in `rundir` on `grid_points` grid
    rows (0: all) and `train_points` training-distribution points (None: the run's own);
    returns and writes {"run", "step", "grid_points", "train_points", "eval/<score>": ...,
    "seconds"}. With `agreement_points` > 0 it also writes the codes of that many agreement
    rows (RUN_DIR/codes.npz, as a run does when it finishes), e.g. so that runs trained
    without them can be ranked by the code-agreement rule of disentangle_figures.

    Raises:
      ValueError: `rundir` holds no disentangle config.
      config_schema.ConfigError: the config with grid_points / train_points replaced fails the
        experiment's schema or its data (`disentangle.prepare`: e.g. grid_points < 0 or in
        1..15, train_points < 16 or < m + 2).
      FileNotFoundError: `rundir` has no config.json or no checkpoint.
    """
    config_path = os.path.join(rundir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{rundir} holds no config.json: not a run directory")
    with open(config_path) as f:
        config = json.load(f)
    if config.get("experiment") != "disentangle":
        raise ValueError(f"{config_path}: experiment is {config.get('experiment')!r}, "
                         "not 'disentangle'")
    for role in ("factors", "categorical", "periodic"):  # runs from before factor roles
        config["data"].setdefault(role, [])
    config["eval"].setdefault("agreement_points", 0)  # runs from before the agreement rule
    if agreement_points is not None:
        config["eval"]["agreement_points"] = agreement_points
    config["eval"]["grid_points"] = grid_points
    if train_points is not None:
        config["eval"]["train_points"] = train_points
    config_schema.validate(config, disentangle.SCHEMA, disentangle.CONSTRAINTS)
    checkpoints = os.path.join(rundir, CHECKPOINTS)
    if tf.train.latest_checkpoint(checkpoints) is None:
        raise FileNotFoundError(f"{rundir}: no checkpoint in {checkpoints}")
    source = disentangle.prepare(config)
    experiment = disentangle.DisentangleRun(config, tf.distribute.get_strategy(), source)
    step = Checkpointer(checkpoints, model=experiment.encoder,
                        optimizer=experiment.optimizer).restore()
    start = time.monotonic()
    scores = experiment.evaluator()
    result = {"run": rundir, "step": step,
              "grid_points": len(experiment.evaluator.grid_indices),
              "train_points": len(experiment.evaluator.train_indices),
              **{f"eval/{name}": value for name, value in scores.items()},
              "seconds": time.monotonic() - start}
    atomic_write(os.path.join(rundir, f"rescore_grid{grid_points}.json"),
                 json.dumps(result, indent=2))
    if agreement_points:
        experiment.save_agreement_codes(os.path.join(rundir, AGREEMENT_CODES))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with config.json "
                                                "and checkpoints/)")
    parser.add_argument("--grid_points", type=int, default=0,
                        help="grid rows to score (0: every row; default 0)")
    parser.add_argument("--train_points", type=int, default=None,
                        help="training-distribution points (default: the run's own)")
    parser.add_argument("--agreement_points", type=int, default=None,
                        help="also write the codes of this many agreement rows (codes.npz)")
    args = parser.parse_args(argv)
    for rundir in args.runs:
        print(json.dumps(rescore(rundir, args.grid_points, args.train_points,
                                 args.agreement_points)), flush=True)


if __name__ == "__main__":
    main()
