"""Progress lines for long runs: step/total, steps/s, ETA and the latest metrics."""

from __future__ import annotations

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


class Progress:
    """Logs a progress line when `every_seconds` have passed since the last one.

    Rates are measured over the steps run by this process (a resumed run
    starts counting at `start_step`).

    Args:
      total_steps: the step count of the full run.
      start_step: the step this process starts from.
      every_seconds: the minimum interval between two lines.
      name: a prefix for the lines (e.g. the method).
      clock: a monotonic clock (injected by tests).
    """

    def __init__(self, total_steps: int, start_step: int = 0, *, every_seconds: float = 30.0,
                 name: str = "", clock: Callable[[], float] = time.monotonic):
        self.total_steps = total_steps
        self.name = name
        self.every_seconds = every_seconds
        self._clock = clock
        self._start_step = start_step
        self._start = clock()
        self._last = self._start

    def line(self, step: int, metrics: Mapping[str, float]) -> str:
        """The progress line for `step` with `metrics`."""
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = (step - self._start_step) / elapsed
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        eta_text = format_duration(eta) if eta != float("inf") else "?"
        values = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        prefix = f"[{self.name}] " if self.name else ""
        return (f"{prefix}step {step}/{self.total_steps} "
                f"({100.0 * step / max(self.total_steps, 1):.0f}%), {rate:.2f} steps/s, "
                f"ETA {eta_text}, {values}")

    def update(self, step: int, metrics: Mapping[str, float], force: bool = False) -> str | None:
        """Logs and returns the progress line if one is due (or `force`), else None."""
        now = self._clock()
        if not force and now - self._last < self.every_seconds:
            return None
        self._last = now
        text = self.line(step, metrics)
        logging.info(text)
        return text
