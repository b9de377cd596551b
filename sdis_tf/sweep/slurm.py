"""One SLURM job array per sweep; array task i runs point i of WORKDIR/sweep.json.

The array covers the unfinished points (`--array=0-215`, or `3,7-9` when a rerun
finds the others finished), at most `array_parallelism` at a time. Each task runs

    python -m sdis_tf.sweep.slurm WORKDIR INDEX

which runs the point as the local launcher does (output appended to
<point>/sweep.log) and turns SLURM's signals into the run's own resume:
- SIGUSR1, sent SIGNAL_SECONDS before the time limit (`--signal=B:USR1@...`): the
  run saves a checkpoint and exits, then the task requeues itself
  (`scontrol requeue`) and starts again from that checkpoint;
- SIGTERM (preemption, scancel): the run saves a checkpoint and exits; with
  `--requeue` SLURM puts a preempted task back in the queue.
The sbatch script and the tasks' own logs are in WORKDIR/slurm/. The script calls
the submitting Python by its path: the cluster's nodes must see it (a shared
file system), as they must see the config file and WORKDIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from typing import Sequence

from sdis_tf.signals import on_signals
from sdis_tf.sweep import local
from sdis_tf.sweep.points import RECORD, Point, read_points
from sdis_tf.train.rundir import atomic_write

SIGNAL_SECONDS = 180
"""Seconds between SIGUSR1 and the time limit: time to finish a step and save."""
SLURM_DIR = "slurm"
SCRIPT = "sweep.sbatch"


class SubmitError(RuntimeError):
    """sbatch is missing or refused the job."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each array task asks for (sbatch options).

    Attributes:
      partition: --partition ("" = the cluster's default).
      time: --time, e.g. "04:00:00" or "1-00:00:00".
      cpus_per_task: --cpus-per-task.
      gpus: GPUs per task (--gres=gpu:N; 0 = none).
      mem: --mem, e.g. "32G" ("" = the partition's default).
      array_parallelism: most tasks running at once (the `%N` of --array; 0 = no limit).
      extra: more sbatch options, each as on the command line, e.g. "--account=proj".
    """

    partition: str = ""
    time: str = "04:00:00"
    cpus_per_task: int = 2
    gpus: int = 0
    mem: str = ""
    array_parallelism: int = 0
    extra: tuple[str, ...] = ()


def array_spec(indices: Sequence[int]) -> str:
    """SLURM's --array list of sorted `indices`: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def script(workdir: str, indices: Sequence[int], resources: Resources, job_name: str,
           python: str = sys.executable, cwd: str | None = None) -> str:
    """The sbatch script of the array of `indices` (points of WORKDIR/sweep.json)."""
    workdir = os.path.abspath(workdir)
    array = array_spec(indices)
    if resources.array_parallelism:
        array += f"%{resources.array_parallelism}"
    options = [f"--job-name={job_name}", f"--array={array}",
               f"--chdir={cwd or os.getcwd()}",
               f"--output={os.path.join(workdir, SLURM_DIR, '%A_%a.log')}",
               "--open-mode=append", "--requeue", f"--signal=B:USR1@{SIGNAL_SECONDS}",
               f"--time={resources.time}", f"--cpus-per-task={resources.cpus_per_task}"]
    if resources.partition:
        options.append(f"--partition={resources.partition}")
    if resources.gpus:
        options.append(f"--gres=gpu:{resources.gpus}")
    if resources.mem:
        options.append(f"--mem={resources.mem}")
    options += resources.extra
    lines = ["#!/bin/bash", *(f"#SBATCH {shlex.quote(o)}" for o in options),
             f"# Array task i runs point i of {os.path.join(workdir, RECORD)}.",
             f"exec {shlex.join([python, '-m', 'sdis_tf.sweep.slurm', workdir])} "
             '"$SLURM_ARRAY_TASK_ID"']
    return "\n".join(lines) + "\n"


def dry_run(workdir: str, points: Sequence[Point], resources: Resources, job_name: str) -> str:
    """The script `submit` would submit, then the command of each of its array tasks."""
    todo = [i for i, p in enumerate(points) if not p.finished]
    if not todo:
        return f"all {len(points)} points finished: nothing to submit"
    tasks = [f"#   {i}: {shlex.join(points[i].command)}" for i in todo]
    return (script(workdir, todo, resources, job_name)
            + f"# {len(todo)} array tasks:\n" + "\n".join(tasks))


def submit(workdir: str, points: Sequence[Point], resources: Resources, job_name: str) -> str:
    """Submits the array of the unfinished points (sweep.json written); returns a message.

    Raises:
      SubmitError: no sbatch here, or sbatch failed (its message).
    """
    todo = [i for i, p in enumerate(points) if not p.finished]
    if not todo:
        return f"all {len(points)} points finished: nothing to submit"
    path = os.path.join(workdir, SLURM_DIR, SCRIPT)
    atomic_write(path, script(workdir, todo, resources, job_name))
    try:
        done = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
    except FileNotFoundError:
        raise SubmitError("sbatch not found: submit from a SLURM login node (--dry_run "
                          "prints the script)") from None
    if done.returncode:
        raise SubmitError(f"sbatch {path} failed: {' '.join(done.stderr.split())}")
    job = done.stdout.strip().split(";")[0]
    return (f"submitted job array {job}: {len(todo)} of {len(points)} points; logs in "
            f"{os.path.join(workdir, SLURM_DIR)} and <point>/sweep.log; squeue -j {job}")


def run_task(workdir: str, index: int, python: str = sys.executable) -> int:
    """Runs point `index` of WORKDIR/sweep.json as one array task; returns its exit status.

    SIGUSR1 or SIGTERM / SIGINT go to the run as SIGTERM (it saves a checkpoint and
    exits); after SIGUSR1 the task requeues itself unless the run finished.
    """
    point = read_points(workdir)[index]
    if point.finished:
        print(f"point {point.name} finished: nothing to do")
        return 0
    caught: list[int] = []
    started: list[subprocess.Popen] = []

    def stop(signum: int) -> None:
        caught.append(signum)
        for process in started:
            process.send_signal(signal.SIGTERM)

    with on_signals(stop, (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)):
        started.append(local.start(point, python))
        if caught:
            started[0].send_signal(signal.SIGTERM)
        code = started[0].wait()
    code = 128 - code if code < 0 else code
    if signal.SIGUSR1 in caught and not point.finished:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        subprocess.run(["scontrol", "requeue", job], check=True)
        print(f"time limit near: point {point.name} saved its checkpoint; requeued {job}")
    elif code and not caught:
        print(local.failure_report(point, code), file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Runs one array task of a sweep.")
    parser.add_argument("workdir", help=f"the sweep's directory (holding {RECORD})")
    parser.add_argument("index", type=int, help="the point's index ($SLURM_ARRAY_TASK_ID)")
    args = parser.parse_args(argv)
    sys.exit(run_task(args.workdir, args.index))


if __name__ == "__main__":
    main()
