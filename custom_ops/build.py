"""Build sdis_tf's custom TensorFlow ops (C++, CPU) without Bazel.

    python custom_ops/build.py [--force]

compiles every `custom_ops/*.cc` into one shared library,
`custom_ops/build/sdis_ops-<key>.so`, with the flags of the installed TensorFlow
(`tf.sysconfig.get_compile_flags()` / `get_link_flags()`). The key is a hash of the sources
(`custom_ops/*.cc` and `*.h`), the TensorFlow version, the compiler, every flag and the CPU
(the library is built with `-march=native`), so a change of any of them gives a new
library name and a rebuild; an up-to-date library is reused (about 15 s and 630 MB of RAM per
compile otherwise). Older libraries are removed after a successful build.

The script never fails the set-up: without a compiler, or when compilation fails, it logs a
warning and exits with status 0; `sdis_tf` then uses its pure TensorFlow/XLA solvers.
`sdis_tf.solvers.lasso_op` finds the library through `library_path()`.
"""

import argparse
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
BUILD_DIR = SOURCE_DIR / "build"
LIBRARY_STEM = "sdis_ops"
# -march=native: the library is built on the machine that runs it (AVX2/FMA where the CPU has
# them: 1.5x on the group-Lasso epochs); the CPU's signature is part of the cache key.
OPT_FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-DNDEBUG")
QUIET_FLAGS = ("-Wno-deprecated-declarations", "-Wno-interference-size")
# The Eigen headers shipped with TensorFlow (2.21) do not compile with AVX512-FP16 enabled
# (PacketMathFP16.h: "expected initializer before '<'" under g++ 12), which -march=native turns
# on for Sapphire Rapids and newer Xeons; the op computes in float32/float64 and loses nothing.
NO_FP16_FLAGS = ("-mno-avx512fp16",)

_log = logging.getLogger("sdis_tf.custom_ops.build")


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


def library_path():
    """Where the library for the current sources, TensorFlow and flags is (or would be) built."""
    return BUILD_DIR / f"{LIBRARY_STEM}-{cache_key()}.so"


def build(force=False):
    """Builds the library unless an up-to-date one exists.

    Returns its path, or None (with a logged warning) when there is no compiler or the
    compilation fails.
    """
    target = library_path()
    if target.exists() and not force:
        _log.info("up to date: %s", target)
        return target
    if shutil.which(_compiler()) is None:
        _log.warning("no C++ compiler (%s) found: custom ops not built; sdis_tf will use its "
                     "TensorFlow/XLA solvers", _compiler())
        return None
    _, tf_compile, tf_link = _tf_flags()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename: concurrent builds never see a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=BUILD_DIR)
    os.close(fd)
    command = _command(tmp, tf_compile, tf_link)
    _log.info("compiling: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        _log.warning("custom ops failed to compile (sdis_tf will use its TensorFlow/XLA "
                     "solvers):\n%s", result.stderr[-4000:])
        return None
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    for old in BUILD_DIR.glob(f"{LIBRARY_STEM}-*.so"):
        if old != target:
            old.unlink(missing_ok=True)
    _log.info("built %s", target)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="custom_ops/build.py: %(message)s")
    try:
        build(force=args.force)
    except Exception as exc:  # never fail the set-up step
        _log.warning("custom ops not built (%s: %s); sdis_tf will use its TensorFlow/XLA "
                     "solvers", type(exc).__name__, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
