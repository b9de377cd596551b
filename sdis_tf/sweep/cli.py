"""python -m sdis_tf.sweep --config=FILE[:preset] --sweep=NAME --workdir=DIR [flags].

Runs every point of the sweep NAME of the config file (its `get_sweep(NAME,
hyper)`, see sdis_tf.sweep.hyper) into DIR/<point name>/; --config.<field>=<value>
sets a field in every point. Points, names and sweep.json: sdis_tf.sweep.points.

- `--launcher=local` (default): `--parallel` points at a time on this machine
  (sdis_tf.sweep.local). Once every point has finished, the experiment's report
  of the sweep (a table, figures), if it has one, is printed.
- `--launcher=slurm`: one job array of the unfinished points (sdis_tf.sweep.slurm),
  each task asking for the resources of the flags below.
- `--dry_run`: prints the commands (local) or the sbatch script and its tasks'
  commands (slurm); writes nothing.

Rerunning the same command skips the finished points and resumes the others; a
rerun with another sweep definition in DIR is refused. Exit status: 0 every point
finished (slurm: the array was submitted); 1 some point failed, or the submission
did; 2 bad input (nothing written); 128 + signal number: stopped by SIGINT or
SIGTERM (rerun to finish).
"""

import os
import shlex
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sdis_tf import experiments  # noqa: E402
from sdis_tf.sweep import local, points, slurm  # noqa: E402
from sdis_tf.train.lock import WorkdirBusyError, WorkdirLock  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command line's flags on absl's FLAGS; called by `run`, not at import, so
    this module and sdis_tf.cli (its own --config and --workdir) import side by side."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file of the runs (configs/<name>.py[:preset]).",
        lock_config=True)
    flags.DEFINE_string("sweep", None, "Name of a sweep of the config file (get_sweep).")
    flags.DEFINE_string("workdir", None, "Sweep directory: one sub-directory per point.")
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where the points run.")
    flags.DEFINE_bool("dry_run", False, "Print what would run or be submitted; write nothing.")
    flags.DEFINE_integer("parallel", 1, "local: points running at once.", lower_bound=1)
    flags.DEFINE_string("partition", "", "slurm: partition ('' = default).")
    flags.DEFINE_string("time", "04:00:00", "slurm: time limit per task (the task "
                        "checkpoints and requeues itself before it).")
    flags.DEFINE_integer("cpus_per_task", 2, "slurm: CPUs per task.", lower_bound=1)
    flags.DEFINE_integer("gpus", 0, "slurm: GPUs per task.", lower_bound=0)
    flags.DEFINE_string("mem", "", "slurm: memory per task, e.g. 32G ('' = default).")
    flags.DEFINE_integer("array_parallelism", 0, "slurm: most tasks running at once (0 = no "
                         "limit).", lower_bound=0)
    flags.DEFINE_multi_string("sbatch", [], "slurm: another sbatch option, e.g. "
                              "--sbatch=--account=proj (repeatable).")
    flags.mark_flags_as_required(["config", "sweep", "workdir"])


def parse_flags(argv):
    """absl flag parsing; a bad flag or --config override exits 2 with one line."""
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        print(f"invalid command line: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)


def _resources() -> slurm.Resources:
    return slurm.Resources(
        partition=FLAGS.partition, time=FLAGS.time, cpus_per_task=FLAGS.cpus_per_task,
        gpus=FLAGS.gpus, mem=FLAGS.mem, array_parallelism=FLAGS.array_parallelism,
        extra=tuple(FLAGS.sbatch))


def _run_local(name: str, workdir: str, sweep: list[points.Point], report) -> int:
    outcome = local.run(sweep, FLAGS.parallel, label=name)
    done = f"{len(outcome.finished)} of {len(sweep)} points finished in {workdir}"
    if outcome.signum is not None:
        print(f"{name}: stopped by {signal.Signals(outcome.signum).name}, {done}; rerun the "
              "same command to finish the rest")
    elif outcome.failed:
        print(f"{name}: {done}; failed: {', '.join(p.name for p, _ in outcome.failed)}; rerun "
              "the same command to retry them")
    else:
        print(f"{name}: {done}")
        if report is not None:
            print(report(workdir))
    return outcome.exit_code


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config_arg = config_flags.get_config_filename(FLAGS["config"])
    base = config_flags.get_override_values(FLAGS["config"])
    name, workdir = FLAGS.sweep, FLAGS.workdir
    try:
        sweep = points.make_points(config_arg, base, points.load_sweep(config_arg, name),
                                   workdir)
    except points.SweepError as error:
        print(error, file=sys.stderr)
        return 2
    if FLAGS.dry_run:
        if FLAGS.launcher == "slurm":
            print(slurm.dry_run(workdir, sweep, _resources(), name))
        else:
            print("\n".join(("# finished: " if p.finished else "") + shlex.join(p.command)
                            for p in sweep))
        return 0
    content = points.record(config_arg, name, base, sweep)
    try:
        if FLAGS.launcher == "slurm":
            points.write_record(workdir, content)
            print(slurm.submit(workdir, sweep, _resources(), name))
            return 0
        # The report is imported before the points run: edits of the package while they
        # run cannot break it with a half-new import.
        report = experiments.get(FLAGS.config.experiment).EXPERIMENT.report
        with WorkdirLock(workdir):
            points.write_record(workdir, content)
            return _run_local(name, workdir, sweep, report)
    except (points.SweepMismatchError, WorkdirBusyError) as error:
        print(error, file=sys.stderr)
        return 2
    except slurm.SubmitError as error:
        print(error, file=sys.stderr)
        return 1


def run() -> None:
    """Defines and parses the flags, then runs `main`."""
    define_flags()
    app.run(main, flags_parser=parse_flags)
