"""Runs a sweep's points on this machine, `parallel` at a time, each as its own process.

Every point is `python -m sdis_tf ... --workdir=<point>` (sdis_tf.sweep.points),
its output appended to `<point>/sweep.log`. A point holding result.json is
finished and skipped; any other is started, and resumes from its own
checkpoints. A point whose process ends without result.json has failed: it is
reported (exit code, last lines of its log) and the others go on. SIGINT /
SIGTERM to the launcher stop it from starting points and are passed on to the
running ones (which save a checkpoint and exit); the launcher waits for them, so
rerunning the same command finishes the rest. The points run in their own
process groups, so a Ctrl-C in the terminal reaches each of them once.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Sequence

from tqdm import tqdm

from sdis_tf.signals import on_signals
from sdis_tf.sweep.points import Point

POLL_SECONDS = 0.2
TAIL_LINES = 12


@dataclasses.dataclass
class Outcome:
    """What a launch left: finished points, failed ones with their exit codes, and the
    signal that stopped the launcher (None: it ran to the end)."""

    finished: list[Point]
    failed: list[tuple[Point, int]]
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """0: every point finished; 128 + signal: stopped; 1: some point failed."""
        if self.signum is not None:
            return 128 + self.signum
        return 1 if self.failed else 0


def start(point: Point, python: str = sys.executable) -> subprocess.Popen:
    """Starts `point`'s run in a new process group, its output appended to its log."""
    os.makedirs(point.workdir, exist_ok=True)
    argv = point.argv(python)
    with open(point.log, "ab") as log:
        log.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, process_group=0)


def tail(path: str, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of the text file `path`."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 200 * lines))
        return f.read().decode(errors="replace").splitlines()[-lines:]


def failure_report(point: Point, code: int) -> str:
    """`point` ended with exit `code` and no result.json: the message, with the last lines
    of its log."""
    reason = "exited 0 without result.json" if code == 0 else f"exit {code}"
    lines = "\n".join(f"    {line}" for line in tail(point.log))
    return f"point {point.name} failed ({reason}); last lines of {point.log}:\n{lines}"


def run(points: Sequence[Point], parallel: int = 1, *, python: str = sys.executable,
        label: str = "sweep") -> Outcome:
    """Runs the unfinished `points`, `parallel` at a time (see the module docstring).

    Progress (one step per finished point) and failure reports go to stderr.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1. Received: {parallel}")
    outcome = Outcome(finished=[p for p in points if p.finished], failed=[])
    queue = collections.deque(p for p in points if not p.finished)
    running: dict[int, tuple[Point, subprocess.Popen]] = {}
    caught: list[int] = []

    def forward(signum: int) -> None:
        caught.append(signum)
        for _, process in list(running.values()):
            process.send_signal(signum)

    bar = tqdm(total=len(points), initial=len(outcome.finished), desc=label, unit="point",
               file=sys.stderr, dynamic_ncols=True)
    with bar, on_signals(forward):
        while running or (queue and not caught):
            while queue and not caught and len(running) < parallel:
                point = queue.popleft()
                process = start(point, python)
                running[process.pid] = (point, process)
                if caught:  # the signal came while it started
                    process.send_signal(caught[0])
            time.sleep(POLL_SECONDS)
            for pid, (point, process) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[pid]
                if point.finished:
                    outcome.finished.append(point)
                    bar.update(1)
                elif not caught:  # a point stopped by the forwarded signal has not failed
                    outcome.failed.append((point, code))
                    bar.set_postfix(failed=len(outcome.failed))
                    bar.write(failure_report(point, code), file=sys.stderr)
    outcome.signum = caught[0] if caught else None
    return outcome
