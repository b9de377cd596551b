"""One process per run directory: an exclusive OS file lock on `workdir/.lock`.

The lock is `fcntl.flock` on an open file: the kernel releases it when the
process ends, however it ends (SIGKILL included), so a crashed run never
leaves a stale lock behind. The file records the holder's PID and host so a
second process can say who holds the directory; the file itself stays (an
empty or old file means nothing: only the kernel's lock counts).
"""

from __future__ import annotations

import fcntl
import os
import socket

LOCK = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another process holds the run directory's lock."""


class WorkdirLock:
    """Holds the exclusive lock of `workdir` from `acquire` (or `with`) to `release`.

    Raises (from `acquire`):
      WorkdirBusyError: another live process holds it; the message names its PID and host.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK)
        self._file = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise WorkdirBusyError(
                f"{os.path.dirname(self.path)} is in use by {holder}; wait for that run to end "
                "or use another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
