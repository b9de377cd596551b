"""The run directory: the only output of a run, and what a rerun resumes from.

    workdir/
      config.json      the resolved config (written once; a rerun must match it)
      metrics.jsonl    one JSON object per evaluation: {"step", "time", "train/...", "eval/..."}
      result.json      written last: the run is finished and is not redone
      tensorboard/     TensorBoard event files (scalars, images)
      checkpoints/     tf.train.CheckpointManager files (see checkpoint.py)
      .lock            locked by the process running the run (see lock.py)

Every file is written atomically (`atomic_write`, `save_figure`): to a
temporary file in the same directory, then `os.replace`d, so a crash (even
SIGKILL) never leaves half a file. Files get the permissions of an ordinary
`open` (0666 minus the umask: 0644 under umask 022). Only the chief process
writes (`chief=False` makes every write a no-op).

Non-finite numbers (a metric of an untrained or degenerate model) are written
as JSON's common extension `NaN`, `Infinity`, `-Infinity`, which Python's
`json.loads` (and `read_metrics`, `result`) read back as floats.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any, Iterable, Mapping

import numpy as np
import tensorflow as tf


CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"

RESUMABLE_KEYS = frozenset({"distribute", "tpu", "log_every_seconds", "eval.agreement_points"})
"""Config keys (dotted; a section covers its keys) a rerun may change or add: the hardware,
the log cadence, and what a finished run saves besides its scores (the disentangle runs'
agreement codes, which runs from before that key can then write when they finish)."""


def atomic_write(path: str, data: str | bytes) -> None:
    """Writes `data` (text as UTF-8, or bytes) to `path` via a temporary file and a rename.

    The temporary file is created as `open` would (mode 0666 minus the umask), in
    the directory of `path` (created if missing); on any error it is removed and
    an existing `path` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_figure(figure, path: str, dpi: int = 100) -> str:
    """Writes a PNG atomically (`atomic_write`); returns `path`.

    Args:
      figure: a matplotlib figure (rendered at `dpi`, then closed), or a uint8
        image `[H, W]`, `[H, W, 1]`, `[H, W, 3]` or `[H, W, 4]` (written as is).
      path: the PNG file.
      dpi: the resolution of a matplotlib figure.
    """
    if hasattr(figure, "savefig"):
        import matplotlib.pyplot as plt  # only the experiments that plot need it

        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=dpi)
        finally:
            plt.close(figure)
        png = buffer.getvalue()
    else:
        image = np.asarray(figure)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
                image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"save_figure takes a matplotlib figure or a uint8 image [H, W] "
                             f"or [H, W, 1 | 3 | 4]; got {image.dtype} {image.shape}")
        png = tf.io.encode_png(image if image.ndim == 3 else image[..., None]).numpy()
    atomic_write(path, png)
    return path


_NON_FINITE_TEXT = ("nan", "inf", "-inf")


def _json_value(value: Any) -> Any:
    """Python floats for JSON (non-finite ones stay floats: written as NaN / Infinity)."""
    return float(value) if hasattr(value, "__float__") else value


class ConfigMismatchError(ValueError):
    """The workdir holds a run with another config."""


class RunDir:
    """Reads and writes one run directory (see the module docstring).

    Args:
      workdir: the directory (created if missing).
      chief: whether this process writes.
    """

    def __init__(self, workdir: str, chief: bool = True):
        self.workdir = workdir
        self.chief = chief
        if chief:
            os.makedirs(workdir, exist_ok=True)
        self._writer = None

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def write_config(self, config: Mapping) -> None:
        """Writes config.json, or checks that a rerun uses the same config.

        Raises:
          ConfigMismatchError: the existing config.json differs in a key
            outside `RESUMABLE_KEYS`; the message lists the differences.
        """
        config = json.loads(json.dumps(config))  # tuples -> lists, as read back.
        path = self.path(CONFIG)
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            diffs = config_differences(old, config, ignore=())
            fatal = config_differences(old, config)
            if fatal:
                lines = [f"config.{k}: {a!r} in the workdir, {b!r} now" for k, a, b in fatal]
                raise ConfigMismatchError(
                    f"{self.workdir} holds a run with another config; use a new --workdir "
                    "or the same config:\n  " + "\n  ".join(lines))
            if not diffs:
                return
        if self.chief:
            atomic_write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict]:
        """The evaluations recorded so far, oldest first.

        Non-finite values come back as floats, whether written as NaN / Infinity
        or as the strings "nan", "inf", "-inf".
        """
        path = self.path(METRICS)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [{k: float(v) if v in _NON_FINITE_TEXT else v for k, v in r.items()}
                for r in records]

    def truncate_metrics(self, step: int) -> None:
        """Drops evaluations after `step` (written after the checkpoint we resume from)."""
        records = self.read_metrics()
        kept = [r for r in records if r["step"] <= step]
        if self.chief and len(kept) != len(records):
            atomic_write(self.path(METRICS), "".join(json.dumps(r) + "\n" for r in kept))

    def append_metrics(self, step: int, wall_time: float, metrics: Mapping[str, Any]) -> dict:
        """Appends {"step", "time", **metrics} to metrics.jsonl (atomically) and returns it."""
        record = {"step": int(step), "time": float(wall_time)}
        record.update({k: _json_value(v) for k, v in sorted(metrics.items())})
        if self.chief:
            lines = "".join(json.dumps(r) + "\n" for r in self.read_metrics())
            atomic_write(self.path(METRICS), lines + json.dumps(record) + "\n")
        return record

    def write_summaries(self, step: int, scalars: Mapping[str, Any],
                        images: Mapping[str, tf.Tensor] | None = None) -> None:
        """TensorBoard scalars (and images [k, h, w, c] in [0, 1]) at `step`."""
        if not self.chief:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.path(TENSORBOARD))
        with self._writer.as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, float(value), step=step)
            for name, image in (images or {}).items():
                tf.summary.image(name, image, step=step)
        self._writer.flush()

    def result(self) -> dict | None:
        """The finished run's result, or None if the run is not finished."""
        path = self.path(RESULT)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def write_result(self, result: Mapping[str, Any]) -> None:
        """Marks the run finished (result.json); a rerun then returns it."""
        if self.chief:
            atomic_write(self.path(RESULT), json.dumps(result, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def finished_runs(root: str, experiment: str) -> list[tuple[str, dict, dict]]:
    """(directory, config, result) of every finished run of `experiment` (config.json's
    "experiment") at or below `root` (a sweep's workdir, or a folder of runs), sorted by
    directory; [] if none."""
    runs = []
    for folder, _, files in os.walk(root):
        if RESULT not in files or CONFIG not in files:
            continue
        with open(os.path.join(folder, CONFIG)) as f:
            config = json.load(f)
        if config.get("experiment") != experiment:
            continue
        with open(os.path.join(folder, RESULT)) as f:
            runs.append((folder, config, json.load(f)))
    return sorted(runs, key=lambda run: run[0])


def finished_result(workdir: str, config: Mapping) -> dict | None:
    """The result of the finished run of `config` in `workdir`, or None: read only, so a
    rerun of a finished run needs neither its inputs nor the workdir's lock. None also
    when config.json differs outside `RESUMABLE_KEYS` (`RunDir.write_config` then says how).
    """
    try:
        with open(os.path.join(workdir, CONFIG)) as f:
            old = json.load(f)
        with open(os.path.join(workdir, RESULT)) as f:
            result = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if config_differences(old, config) else result


def config_differences(old: Mapping, new: Mapping, ignore: Iterable[str] = RESUMABLE_KEYS
                       ) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf where two configs differ (as JSON:
    a tuple equals its list), leaving out the dotted keys `ignore` (a section covers its
    keys). The default leaves out what a rerun may change: two configs without differences
    are the same run."""
    ignore = tuple(ignore)
    return [d for d in _diff(json.loads(json.dumps(old)), json.loads(json.dumps(new)))
            if not any(d[0] == key or d[0].startswith(key + ".") for key in ignore)]


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two JSON trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else key
            out += _diff(old.get(key), new.get(key), name)
        return out
    return [] if old == new else [(prefix, old, new)]
