"""Build sdis_tf's custom TensorFlow ops (C++, CPU) without Bazel, into a per-user cache.

    python custom_ops/build.py [--force]

compiles every `*.cc` beside this script into one shared library, `sdis_ops-<key>.so` in
`cache_dir()`: `$SDIS_TF_CACHE/ops`, by default `~/.cache/sdis_tf/ops` (`$XDG_CACHE_HOME`
replaces `~/.cache`), with the flags of the installed TensorFlow
(`tf.sysconfig.get_compile_flags()` / `get_link_flags()`). The key is a hash of the sources
(`*.cc` and `*.h`), the TensorFlow version and location, the compiler, every flag and the CPU
(the library is built with `-march=native`), so a change of any of them gives a new
library name and a rebuild; an up-to-date library is reused (about 15-90 s and 630 MB of RAM
per compile otherwise). The cache keeps the KEEP most recently used libraries.

The package ships this folder as `sdis_tf/custom_ops`, and `sdis_tf.solvers.lasso_op` calls
`build()` on the first use of the op. Concurrent builds do not race: the compile runs under an
exclusive lock on `cache_dir()/.lock` into a temporary file renamed into place, and a process
that finds the lock taken waits, then loads the library the other one built.

Without a compiler, or when compilation fails, `build()` raises `BuildError`: this script then
logs a warning and exits with status 0 (it never fails the set-up), and `sdis_tf` warns once
and uses its pure TensorFlow/XLA solvers.
"""

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
CACHE_ENV = "SDIS_TF_CACHE"
LIBRARY_STEM = "sdis_ops"
KEEP = 8  # libraries kept in the cache, the most recently used (~1 MB each)
# -march=native: the library is built on the machine that runs it (AVX2/FMA where the CPU has
# them: 1.5x on the group-Lasso epochs); the CPU's signature is part of the cache key.
OPT_FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-DNDEBUG")
QUIET_FLAGS = ("-Wno-deprecated-declarations", "-Wno-interference-size")
# The Eigen headers shipped with TensorFlow (2.21) do not compile with AVX512-FP16 enabled
# (PacketMathFP16.h: "expected initializer before '<'" under g++ 12), which -march=native turns
# on for Sapphire Rapids and newer Xeons; the op computes in float32/float64 and loses nothing.
NO_FP16_FLAGS = ("-mno-avx512fp16",)

_log = logging.getLogger("sdis_tf.custom_ops.build")


class BuildError(RuntimeError):
    """No C++ compiler, or the compilation failed (the message has the compiler's errors)."""


def _sources():
    return sorted(SOURCE_DIR.glob("*.cc"))


def _headers():
    return sorted(SOURCE_DIR.glob("*.h"))


def _compiler():
    return os.environ.get("CXX", "g++")


def _cpu_signature():
    """The CPU model and instruction-set flags (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo
                     if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _cpu_flags():
    """Flags that -march=native needs taken back on this CPU (see NO_FP16_FLAGS)."""
    return NO_FP16_FLAGS if "avx512_fp16" in _cpu_signature().split() else ()


def _tf_flags():
    """(TensorFlow version, compile flags, link flags incl. an rpath to the TF library)."""
    import tensorflow as tf

    link = list(tf.sysconfig.get_link_flags())
    lib_dirs = [flag[2:] for flag in link if flag.startswith("-L")]
    link += [f"-Wl,-rpath,{d}" for d in lib_dirs]
    return tf.__version__, list(tf.sysconfig.get_compile_flags()), link


def _command(output, tf_compile, tf_link):
    sources = [str(s) for s in _sources()]
    return [_compiler(), *OPT_FLAGS, *_cpu_flags(), *QUIET_FLAGS, *tf_compile, *sources,
            "-o", str(output), *tf_link]


def cache_key():
    """Hash of the sources, TensorFlow version, compiler, flags and CPU (16 hex digits)."""
    version, tf_compile, tf_link = _tf_flags()
    digest = hashlib.sha256()
    for source in _sources() + _headers():
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    for part in (version, _compiler(), *OPT_FLAGS, *_cpu_flags(), *QUIET_FLAGS, *tf_compile,
                 *tf_link, _cpu_signature()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_dir():
    """$SDIS_TF_CACHE/ops, else $XDG_CACHE_HOME/sdis_tf/ops, else ~/.cache/sdis_tf/ops."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "sdis_tf")
    return Path(root).expanduser() / "ops"


def library_path():
    """Where the library for the current sources, TensorFlow and flags is (or would be) built."""
    return cache_dir() / f"{LIBRARY_STEM}-{cache_key()}.so"


@contextlib.contextmanager
def _exclusive(directory):
    """Holds the exclusive lock of `directory` (fcntl; the kernel releases it if the process
    dies), waiting for it if another process holds it."""
    with open(directory / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.warning("waiting for another process building the C++ ops in %s", directory)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _compile(target):
    """Compiles the library to a temporary file renamed to `target` (never a partial file)."""
    _, tf_compile, tf_link = _tf_flags()
    fd, tmp = tempfile.mkstemp(prefix=f".{LIBRARY_STEM}-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    command = _command(tmp, tf_compile, tf_link)
    # A warning so that it shows without any logging set up: the caller pauses for it.
    _log.warning("compiling the C++ ops for this CPU and TensorFlow (once, ~15-90 s): %s",
                 target)
    _log.info("%s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"{_compiler()} failed:\n{result.stderr[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _prune(directory):
    """Removes what interrupted compiles left and all but the KEEP most recently used
    libraries (run under the lock: no other process is compiling)."""
    for leftover in directory.glob(f".{LIBRARY_STEM}-*.tmp"):
        leftover.unlink(missing_ok=True)
    libraries = sorted(directory.glob(f"{LIBRARY_STEM}-*.so"), key=lambda p: p.stat().st_mtime)
    for old in libraries[:-KEEP]:
        old.unlink(missing_ok=True)


def build(force=False):
    """The path of the up-to-date library, compiled first unless it exists (or `force`).

    Raises:
      BuildError: no C++ compiler (`$CXX`, else g++), or the compilation failed.
      OSError: the cache directory cannot be written.
    """
    target = library_path()
    if target.exists() and not force:
        with contextlib.suppress(OSError):  # the time of last use, for _prune
            os.utime(target)
        return target
    if shutil.which(_compiler()) is None:
        raise BuildError(f"no C++ compiler ({_compiler()}; set $CXX to choose another) found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent):
        if force or not target.exists():  # else another process built it while this one waited
            _compile(target)
            _prune(target.parent)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="custom_ops/build.py: %(message)s")
    try:
        _log.info("library: %s", build(force=args.force))
    except Exception as exc:  # never fail the set-up step
        _log.warning("custom ops not built (%s: %s); sdis_tf will use its TensorFlow/XLA "
                     "solvers", type(exc).__name__, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
