"""The one unpickler for every pickle sdis_tf reads: data in, never code.

A pickle names the callables that rebuild its objects ("globals", such as
`numpy._core.multiarray._reconstruct`), and a plain `pickle.load` imports and
calls whatever it names: a file from a mirror can run `os.system`. The data
pickles sdis_tf reads (few-shot splits, dSprites' `metadata` member) need only
numpy arrays, dtypes and scalars, and plain containers and scalars, so
`RestrictedUnpickler.find_class` hands out exactly those callables from a fixed
table (under every name numpy 1.x, numpy 2.x and Python 2 pickle them by) and
refuses any other global with `ForbiddenGlobalError`, before anything is
imported or called. Dicts, lists, tuples, strings, numbers, True/False/None and
(protocol >= 4) sets need no global at all.

Python 2 pickles load with `encoding="latin1"` (numpy's documented way: the
array bytes were pickled as `str`).
"""

from __future__ import annotations

import codecs
import collections
import pickle

import numpy as np

from sdis_tf.data.errors import DataFileError


def _latin1_bytes(text, encoding):
    """`_codecs.encode` as Python 3 writes bytes in protocol <= 2 pickles: latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}; data pickles use latin-1")
    return codecs.encode(text, "latin-1")


def _numpy_globals() -> dict:
    """numpy's own pickle callables, taken from what numpy pickles arrays and scalars with."""
    reconstruct = np.zeros(1).__reduce__()[0]       # ndarray, any protocol below 5
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]    # contiguous ndarray, protocol 5
    scalar = np.float64(0).__reduce__()[0]          # numpy scalars
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):   # numpy 1.x and 2.x homes
        table[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{package}.multiarray", "scalar")] = scalar
        table[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return table


def _builtin_globals() -> dict:
    """Plain containers and scalars that protocols <= 3 pickle through a global."""
    table = {("_codecs", "encode"): _latin1_bytes,
             ("collections", "OrderedDict"): collections.OrderedDict}
    for module in ("builtins", "__builtin__"):      # Python 3 and Python 2 spellings
        for kind in (set, frozenset, complex, bytes, bytearray):
            table[(module, kind.__name__)] = kind
    return table


ALLOWED_GLOBALS = {**_numpy_globals(), **_builtin_globals()}
"""(module, name) -> the object a data pickle may reference; nothing else is importable."""

_ALLOWED_SUMMARY = ("numpy.ndarray, numpy.dtype and numpy's array and scalar reconstructors; "
                    "builtins set, frozenset, complex, bytes, bytearray; "
                    "collections.OrderedDict; latin-1 _codecs.encode")


class ForbiddenGlobalError(DataFileError):
    """A data pickle references a global outside `ALLOWED_GLOBALS`; nothing was run."""

    def __init__(self, source: str, global_name: str):
        self.source, self.global_name = source, global_name
        super().__init__(f"refusing to load {source}: pickle references {global_name}, which "
                         f"a data file may not use (allowed: {_ALLOWED_SUMMARY})")


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` whose globals come only from `ALLOWED_GLOBALS`.

    Args:
      file: a binary stream positioned at the pickle.
      source: how errors name the data (a path, or a path and member).
      **kwargs: `pickle.Unpickler`'s (e.g. encoding="latin1" for Python 2 pickles).
    """

    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(self.source, f"{module}.{name}") from None


def load(file, source: str, *, encoding: str = "ASCII"):
    """Unpickles one object from the binary stream `file` through `RestrictedUnpickler`.

    Raises:
      ForbiddenGlobalError: the pickle references anything but numpy arrays,
        dtypes, scalars and plain containers (one line naming `source` and the global).
      UnicodeDecodeError: a Python 2 pickle read with encoding="ASCII" (retry with "latin1").
      pickle.UnpicklingError, EOFError, ...: a truncated or corrupt pickle.
    """
    return RestrictedUnpickler(file, source, encoding=encoding).load()
