"""The command line: python -m sdis_tf --config=configs/<name>.py[:preset] --workdir=DIR.

Kept short on purpose (as flax's examples): the config names the experiment
(`config.experiment`), `sdis_tf.experiments.run` validates the config and
dispatches to `sdis_tf.experiments.<name>`. Override any field with
--config.a.b=value. Rerunning with the same workdir resumes; a finished run is
not redone.

Exit status (every error is one line on stderr, no traceback; an invalid config
lists each of its problems on its own line):

    0         done (a finished run rerun: its summary again)
    2         bad input, before any training: the command line (a missing config
              file, a syntax error in one as file:line, an unknown --config.<field>
              with the closest existing ones, a value of the wrong type), an invalid
              config, unusable data files, a workdir that holds a run with another
              config or is in use by another process, checkpoints none of which can be
              read
    3         training diverged: a train metric (loss, gradient norm) became NaN or
              infinite; the line names the step and the last good checkpoint (a rerun
              resumes from it with the same config, so it is a config to change)
    128 + N   stopped by signal N (SIGTERM, SIGINT) after saving a checkpoint
"""

import logging as python_logging
import os
import re
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sdis_tf import config_files  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py[:preset]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; reruns resume).")
flags.mark_flags_as_required(["config", "workdir"])


class _DropSaverNoise(python_logging.Filter):
    """Drops TensorFlow's INFO line on every checkpoint save."""

    def filter(self, record):
        return not str(record.msg).startswith("Sharding callback duration")


_CONFIG_FLAG = re.compile(r"^--?config(?:=(.*))?$")
_OVERRIDE_FLAG = re.compile(r"^--?(?:no)?config\.([^=]+)")


def _config_arguments(argv: list[str]) -> tuple[str | None, str, list[str]]:
    """(config file, preset, overridden fields 'a.b') as config_flags reads them from argv."""
    path, preset, overrides = None, "", []
    for i, arg in enumerate(argv):
        match = _CONFIG_FLAG.match(arg)
        if match:
            value = match.group(1) if match.group(1) is not None else (
                argv[i + 1] if i + 1 < len(argv) else "")
            path, _, preset = value.partition(":")
        match = _OVERRIDE_FLAG.match(arg)
        if match:
            overrides.append(match.group(1))
    return path, preset, overrides


def _raised_in_file(error: BaseException, path: str) -> tuple[BaseException, int] | None:
    """(exception, line) of the innermost frame in file `path` of `error` or of the
    exceptions it was raised from (config_flags re-raises the config file's errors)."""
    target, found = os.path.abspath(path), None
    while error is not None and found is None:
        for frame, line in traceback.walk_tb(error.__traceback__):
            if os.path.abspath(frame.f_code.co_filename) == target:
                found = (error, line)
        error = error.__cause__ or error.__context__
    return found


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(error: Exception, argv: list[str]) -> str:
    """One line for an error of flag parsing: where it is and what is wrong."""
    path, preset, overrides = _config_arguments(argv)
    if isinstance(error, SyntaxError):
        return f"{error.filename}:{error.lineno}: syntax error in the config file: {error.msg}"
    if path:
        raised = _raised_in_file(error, path)
        if raised is not None:
            cause, line = raised
            return (f"{path}:{line}: {type(cause).__name__} in the config file: "
                    f"{_one_line(str(cause))}")
        if isinstance(error, (KeyError, AttributeError)):
            config = config_files.load_config(path, preset)
            for field in overrides:
                problem = config_files.unknown_field(config, field)
                if problem:
                    return problem
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return f"invalid command line: {_one_line(str(message))}"


def _exit_2(line: str):
    print(line, file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl flag parsing; a bad command line or config file exits 2 with one line on stderr.

    The config file is checked to exist first (config_flags would only fail when the
    config is first used); errors raised while loading it or applying the overrides
    are reported by `_describe`.
    """
    expanded = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    path = _config_arguments(expanded)[0]
    if path is not None and not os.path.isfile(path):
        _exit_2(f"config file {path!r} does not exist")
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 -- a config file's own code may raise anything
        _exit_2(_describe(error, expanded))


def main(argv):
    # TensorFlow is imported here, after the flags are parsed: its import writes lines to
    # stderr that TF_CPP_MIN_LOG_LEVEL does not silence, which a command-line error must not.
    from sdis_tf import config_schema, experiments
    from sdis_tf.data.errors import DataFileError
    from sdis_tf.train import loop, rundir
    from sdis_tf.train.checkpoint import NoIntactCheckpointError
    from sdis_tf.train.lock import WorkdirBusyError

    logging.get_absl_logger().addFilter(_DropSaverNoise())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        summary = experiments.run(_CONFIG.value, _WORKDIR.value)
    except (config_schema.ConfigError, rundir.ConfigMismatchError, DataFileError,
            WorkdirBusyError, NoIntactCheckpointError) as error:
        print(error, file=sys.stderr)
        return 2
    except loop.NonFiniteError as error:
        print(error, file=sys.stderr)
        return 3
    except loop.Interrupted as interrupted:
        logging.warning("%s", interrupted)
        return 128 + interrupted.signum
    if summary:
        print(summary)
    return 0


def run() -> None:
    """Parses the flags and runs `main` (the console entry point)."""
    app.run(main, flags_parser=parse_flags)
