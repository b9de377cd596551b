"""The command line: python -m sdis_tf --config=configs/<name>.py[:preset] --workdir=DIR.

Kept short on purpose (as flax's examples): the config names the experiment
(`config.experiment`), `sdis_tf.experiments.run` validates the config and
dispatches to `sdis_tf.experiments.<name>`. Override any field with
--config.a.b=value. Rerunning with the same workdir resumes; a finished run is
not redone. SIGTERM / SIGINT save a checkpoint and exit with status
128 + signal number; invalid configs exit with status 2.
"""

import logging as python_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sdis_tf import config_schema, experiments  # noqa: E402
from sdis_tf.train import loop, rundir  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py[:preset]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; reruns resume).")
flags.mark_flags_as_required(["config", "workdir"])


class _DropSaverNoise(python_logging.Filter):
    """Drops TensorFlow's INFO line on every checkpoint save."""

    def filter(self, record):
        return not str(record.msg).startswith("Sharding callback duration")


def parse_flags(argv):
    """absl flag parsing; a bad --config override exits 2 with one clear line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        message = str(error).replace("\n", " ")
        print(f"invalid command line: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    logging.get_absl_logger().addFilter(_DropSaverNoise())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        summary = experiments.run(_CONFIG.value, _WORKDIR.value)
    except (config_schema.ConfigError, rundir.ConfigMismatchError) as error:
        logging.error("%s", error)
        print(error, file=sys.stderr)
        return 2
    except loop.Interrupted as interrupted:
        logging.warning("%s", interrupted)
        return 128 + interrupted.signum
    if summary:
        print(summary)
    return 0


def run() -> None:
    """Parses the flags and runs `main` (the console entry point)."""
    app.run(main, flags_parser=parse_flags)
