"""Progress lines for long runs: step/total, steps/s, ETA and the latest metrics."""

from __future__ import annotations

import numbers
import time
from typing import Callable, Mapping

from absl import logging


def format_duration(seconds: float) -> str:
    """3725 -> '1h02m05s', 65 -> '1m05s', 4.2 -> '4s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _format(value) -> str:
    """4 significant digits for numbers (nan and inf included), str() for anything else."""
    return f"{value:.4g}" if isinstance(value, numbers.Real) else str(value)


class Progress:
    """Logs a progress line when `every_seconds` have passed since the last one.

    Rates are measured from the first `update` on (so the first step, which
    includes tracing and XLA compilation, does not distort the ETA); the
    first line reports "? steps/s".

    Args:
      total_steps: the step count of the full run.
      start_step: the step this process starts from.
      every_seconds: the minimum interval between two lines.
      name: a prefix for the lines (e.g. the method).
      clock: a monotonic clock (injected by tests).
    """

    def __init__(self, total_steps: int, *, every_seconds: float = 30.0, name: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.total_steps = total_steps
        self.name = name
        self.every_seconds = every_seconds
        self._clock = clock
        self._last = clock()
        self._reference = None  # (step, time) of the first update

    def line(self, step: int, metrics: Mapping[str, float]) -> str:
        """The progress line for `step` with `metrics`: the run-level ones ("train/loss",
        "eval/mcc"); per-factor scores ("eval/mcc/<factor>") stay in metrics.jsonl and
        TensorBoard."""
        rate_text = eta_text = "?"
        if self._reference is not None and step > self._reference[0]:
            rate = (step - self._reference[0]) / max(self._clock() - self._reference[1], 1e-9)
            rate_text = f"{rate:.2f}"
            eta_text = format_duration((self.total_steps - step) / rate)
        values = " ".join(f"{k}={_format(v)}" for k, v in sorted(metrics.items())
                          if k.count("/") < 2)
        prefix = f"[{self.name}] " if self.name else ""
        return (f"{prefix}step {step}/{self.total_steps} "
                f"({100.0 * step / max(self.total_steps, 1):.0f}%), {rate_text} steps/s, "
                f"ETA {eta_text}, {values}")

    def update(self, step: int, metrics: Mapping[str, float], force: bool = False) -> str | None:
        """Logs and returns the progress line if one is due (or `force`), else None."""
        now = self._clock()
        if self._reference is None:
            self._reference = (step, now)
        if not force and now - self._last < self.every_seconds:
            return None
        self._last = now
        text = self.line(step, metrics)
        logging.info(text)
        return text
