"""Handling SIGINT / SIGTERM inside a block: the training loop saves and stops, the sweep
launcher forwards them to its runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator, Sequence


@contextlib.contextmanager
def on_signals(handler: Callable[[int], None],
               signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Calls `handler(signum)` on each of `signums` inside the block, then restores the
    previous handlers. Handlers are only installed in the main thread (Python's rule);
    elsewhere the signals keep their behaviour."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: handler(signum)) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
