"""Published data files, fetched once into a per-user cache: progress bar, SHA-256, atomic placement.

A `RemoteFile` names a published file: its place in the cache (`name`, a relative path
such as "omniglot/all_runs.zip"), its URL and its SHA-256. `fetch(remote)` returns
`cache_dir()/name`:

- present: its SHA-256 is checked (milliseconds for 10 MB) and the path returned; no
  network access.
- absent: downloaded once. An exclusive `fcntl.flock` on the cache's `.lock` file makes
  concurrent first uses (threads or processes) wait for a single download; the bytes
  stream into `name + ".part"` under a progress bar (tqdm, on stderr), their SHA-256 is
  checked, and `os.replace` moves the file into place atomically. So
  `name` only ever exists complete and verified; a failed or refused download leaves no
  file behind.

The cache is `$SDIS_TF_DATA` when set, else `~/.cache/sdis_tf` (`$XDG_CACHE_HOME`
replaces `~/.cache`, as for the compiled ops of `custom_ops/build.py`; `cache_dir`). Every
failure is a `DownloadError`, a `DataFileError` (a run stops with its one line and exit
status 2): without network (or on an HTTP error) the line names the URL to fetch and the
exact path to put the file at; a checksum mismatch gives both digests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from typing import NamedTuple

from absl import logging
from tqdm import tqdm

from sdis_tf.data.errors import DataFileError

CACHE_ENV = "SDIS_TF_DATA"
LOCK = ".lock"                # in the cache: held while a download is placed
TIMEOUT_SECONDS = 60          # per blocking network operation (connect, each read)
_CHUNK = 1 << 20              # bytes read, hashed and written at a time


class RemoteFile(NamedTuple):
    """A published file: `name` its path in the cache ("/"-separated), `url`, `sha256` (hex)."""

    name: str
    url: str
    sha256: str


class DownloadError(DataFileError):
    """A file could not be downloaded, or is not the published one (a one-line message)."""


def cache_dir() -> str:
    """The data cache (absolute): `$SDIS_TF_DATA`, else `$XDG_CACHE_HOME/sdis_tf`, else
    `~/.cache/sdis_tf`."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "sdis_tf")
    return os.path.abspath(os.path.expanduser(root))


def cached_path(remote: RemoteFile) -> str:
    """Where `remote` lives in the cache (whether or not it is there yet)."""
    return os.path.join(cache_dir(), *remote.name.split("/"))


def fetch(remote: RemoteFile) -> str:
    """The verified local path of `remote`, downloading it on first use (module docstring).

    Raises:
      DownloadError: no network or an HTTP error (the line names the URL and the path to
        put the file at), a download or a file in the cache whose SHA-256 is not
        `remote.sha256`, or a cache folder that cannot be written.
    """
    path = cached_path(remote)
    if not os.path.exists(path):
        try:
            if _download_once(remote, path):
                return path          # hashed while it streamed in
        except OSError as error:   # network errors are DownloadErrors already: this is local
            raise DownloadError(f"cannot write {path} ({error}); set {CACHE_ENV} to a "
                                "writable folder for the data cache") from None
    found = sha256_of(path)
    if found != remote.sha256:
        raise DownloadError(f"{path} has SHA-256 {found}, expected {remote.sha256} (the file "
                            f"at {remote.url}); delete it to download it again")
    return path


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(lock_path: str):
    """Holds an exclusive `flock` on `lock_path`, waiting for its holder; the kernel frees it
    when the file is closed or the process ends, however it ends (no stale lock)."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("Waiting for another process writing to the data cache (%s)",
                         lock_path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download_once(remote: RemoteFile, path: str) -> bool:
    """Downloads `remote` to `path` (verified) unless another holder of the lock placed it
    meanwhile; returns whether this call downloaded it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _exclusive(os.path.join(cache_dir(), LOCK)):
        if os.path.exists(path):
            return False
        logging.info("Downloading %s to %s", remote.url, path)
        partial = path + ".part"      # one writer at a time (the lock); a killed one's is reset
        try:
            with open(partial, "wb") as out:
                found = _stream(remote, path, out)
            if found != remote.sha256:
                raise DownloadError(f"the download of {remote.url} has SHA-256 {found}, "
                                    f"expected {remote.sha256}: not the published file (a "
                                    f"proxy's page or a changed upstream file); nothing was "
                                    f"kept at {path}")
            os.replace(partial, path)
            return True
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise


def _stream(remote: RemoteFile, path: str, out) -> str:
    """Copies the body of `remote.url` into `out` under a progress bar; returns its SHA-256."""
    digest = hashlib.sha256()
    with _network(remote, path):
        response = urllib.request.urlopen(remote.url, timeout=TIMEOUT_SECONDS)
    with response, tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                        desc=os.path.basename(path), unit="B", unit_scale=True,
                        unit_divisor=1024, file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            with _network(remote, path):
                chunk = response.read(_CHUNK)
            if not chunk:
                return digest.hexdigest()
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))


@contextlib.contextmanager
def _network(remote: RemoteFile, path: str):
    """Turns a network failure into the offline line: what to fetch and where to put it."""
    try:
        yield
    except (OSError, http.client.HTTPException) as error:
        detail = error
        if isinstance(error, urllib.error.URLError) and not isinstance(
                error, urllib.error.HTTPError):
            detail = error.reason            # the socket error, without "<urlopen error ...>"
        reason = " ".join(str(detail).split()) or type(error).__name__
        raise DownloadError(f"cannot download {remote.url} ({reason}); without network "
                            f"access, fetch that file elsewhere and put it at {path}") from None
