"""Any labelled-factor image file: 3D Shapes h5, dSprites npz, plain npz / h5.

`load_factor_dataset(path)` returns a `FactorDataset` with

    images        [N, H, W, C] float32 in [0, 1], read on demand (`FactorImages`)
    factors       [N, K] float64, the factor values of each row (file units)
    factor_names  K names
    grid          K sorted arrays: the distinct values of each factor

Layouts recognised without any key given (first match wins):

    3D Shapes h5    `images` (N, H, W, 3) uint8 and `labels` (N, 6) float whose
                    values lie on the 3D Shapes grid (`latents.factor_values`): the
                    full 480,000-image file goes through `shapes3d.load_shapes3d`
                    (validated against the grid); a subset is read as a plain file
                    with the 3D Shapes factor names. Labels off that grid make a
                    plain file (generic names, no layout defaults; logged).
    dSprites npz    `imgs` (N, 64, 64) uint8 0/1, `latents_values` (N, 6),
                    `latents_classes`, and `metadata` (a pickled dict whose
                    `latents_names` names the factors), whole or a subset.
    plain npz / h5  `images` (N, H, W) or (N, H, W, C) and `factors` (N, K) or (N,),
                    optional `factor_names` (K strings).

`images_key=` and `factors_key=` name the members of any other file. Images
come out as float32 in [0, 1] with their own channel count: bool as 0/1; uint8
as value / 255, except an npz's uint8 images whose values are all 0 or 1
(dSprites), read as 0/1; floats as stored. A factor with a single value
(dSprites' colour) is dropped with a log line. Factor names must be distinct
and non-empty (they name the latents and the scores). NaN or infinite
factors, and float images with a NaN or a value infinite as float32, are
refused at load (`FactorFileError` naming the file and the first such row).

Memory: h5 images are indexed (sorted, deduplicated reads), never read whole;
an npz member cannot be read by index, so it is decompressed once at load and
kept in memory: uint8 / bool images are streamed in 16 MB chunks and, when
binary, kept bit-packed (full dSprites: 377 MB instead of 3 GB), else as stored.
Float images are checked for non-finite values in chunks of the same size
(an h5 file's are read once at load for that, a chunk at a time).

The grid need not be complete: the latent distributions of the paper are
defined over the rows the file has. `latents.make_latents(dataset.factors,
dataset.grid, alpha=alpha)` jitters and standardises the rows as it does the 3D
Shapes grid (with the same result on the 3D Shapes file); `latents.make_sampler`
then gives p_{alpha,rho} over the N rows.
"""

from __future__ import annotations

import os
import pickle
import threading
import zipfile
from typing import Optional, Sequence

import h5py
import numpy as np
import tensorflow as tf
from absl import logging

from sdis_tf.data import latents as latents_lib
from sdis_tf.data import restricted_pickle
from sdis_tf.data import shapes3d
from sdis_tf.data.errors import DataFileError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHUNK_BYTES = 1 << 24
_IMAGE_KEYS = ("images", "imgs")
_FACTOR_KEYS = ("factors", "labels", "latents_values")
EXPECTED_KEYS = ("'images' + 'factors' (optional 'factor_names'); 'images' + 'labels' "
                 "(3D Shapes); 'imgs' + 'latents_values' (+ 'metadata', dSprites); "
                 "or name them with images_key=..., factors_key=...")


class FactorFileError(DataFileError):
    """A labelled-factor file is missing or does not hold usable images and factors.

    One line: the file, the problem and, given `found` ({key: (shape, dtype)}), the
    keys found in the file and the keys expected.
    """

    def __init__(self, path, problem: str, found: Optional[dict] = None):
        message = f"factor dataset {os.fspath(path)!r}: {' '.join(problem.split())}"
        if found is not None:
            described = ", ".join(f"{key!r} {shape} {dtype}"
                                  for key, (shape, dtype) in sorted(found.items()))
            message += f" (keys found: {described or 'none'}; keys expected: {EXPECTED_KEYS})"
        super().__init__(message)


class FactorImages:
    """Images `[N, H, W, C]` read on demand; indexing returns float32 in [0, 1].

    `images[i]`, `images[a:b]`, `images[idx]` with an int array of any shape
    (any order, repeats allowed) read only the requested rows.
    """

    def __init__(self, read, shape: tuple, scale: float):
        self._read = read                   # int64 indices [M] -> stored images [M, ...]
        self.shape = tuple(int(s) for s in shape)
        self._scale = scale

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            indices = np.arange(*key.indices(len(self)))
        else:
            indices = np.asarray(key)
            if not np.issubdtype(indices.dtype, np.integer):
                raise IndexError(f"images are indexed by ints, slices or int arrays; "
                                 f"got {key!r}")
            if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
                raise IndexError(f"indices must lie in [-{len(self)}, {len(self)}); got "
                                 f"range [{indices.min()}, {indices.max()}]")
            indices = np.where(indices < 0, indices + len(self), indices)
        flat = self._read(indices.reshape(-1).astype(np.int64))
        images = flat.astype(np.float32) * np.float32(self._scale)
        return images.reshape(indices.shape + self.shape[1:])

    def images_tf(self, indices: tf.Tensor) -> tf.Tensor:
        """TF op: float32 images `[..., H, W, C]` in [0, 1] of int indices `[...]`."""
        indices = tf.convert_to_tensor(indices)
        flat = tf.numpy_function(lambda i: self[i], [tf.reshape(indices, [-1])],
                                 tf.float32, stateful=False)
        flat = tf.ensure_shape(flat, (None,) + self.shape[1:])
        return tf.reshape(flat, tf.concat([tf.shape(indices), self.shape[1:]], 0))


class FactorDataset:
    """Images with factor values (see the module docstring).

    Attributes:
      path: the file.
      layout: 'shapes3d', 'dsprites' or 'plain'.
      images: `FactorImages` `[N, H, W, C]`.
      factors: `[N, K]` float64.
      factor_names: tuple of K names.
      grid: tuple of K sorted float64 arrays, the distinct values of each factor.
      levels: `[N, K]` int64, `factors[i, k] == grid[k][levels[i, k]]`.
      dropped: names of the constant factors that were dropped.
    """

    def __init__(self, path, layout: str, images: FactorImages, factors: np.ndarray,
                 factor_names: Sequence[str], dropped: Sequence[str] = ()):
        self.path = os.fspath(path)
        self.layout = layout
        self.images = images
        self.factors = factors
        self.factor_names = tuple(factor_names)
        self.dropped = tuple(dropped)
        self.grid = tuple(np.unique(factors[:, k]) for k in range(factors.shape[1]))
        self.levels = np.stack([np.searchsorted(g, factors[:, k])
                                for k, g in enumerate(self.grid)], axis=1)

    def __len__(self) -> int:
        return self.factors.shape[0]

    @property
    def image_shape(self) -> tuple:
        """(H, W, C): what the encoder takes."""
        return self.images.shape[1:]

    @property
    def grid_sizes(self) -> tuple:
        return tuple(len(g) for g in self.grid)

    @property
    def complete_grid(self) -> bool:
        """True if every grid point (product of the factor values) is a row, exactly once."""
        if len(self) != np.prod(self.grid_sizes, dtype=np.float64):
            return False
        index = np.ravel_multi_index(self.levels.T, self.grid_sizes)
        return np.unique(index).size == len(self)

    def images_tf(self, indices: tf.Tensor) -> tf.Tensor:
        """TF op: float32 images `[..., H, W, C]` of row indices `[...]` (for `pipeline`)."""
        return self.images.images_tf(indices)


def load_factor_dataset(path, *, images_key: Optional[str] = None,
                        factors_key: Optional[str] = None,
                        factor_names: Optional[Sequence[str]] = None) -> FactorDataset:
    """Opens a labelled-factor image file (npz or h5) and checks it.

    Args:
      path: an `.npz` or HDF5 file (recognised by content, not by name).
      images_key, factors_key: members to read; None detects them (module docstring).
      factor_names: K names overriding those of the file.
    Raises:
      FactorFileError: missing or unreadable file; no images or no factors; lengths
        that differ; non-numeric or non-finite factors; wrong ranks; factor names
        repeated or empty; every factor constant. The message names the file, the
        keys found and the keys expected.
      shapes3d.Shapes3DFileError: a full 3D Shapes h5 that fails its validation.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FactorFileError(path, "no such file (give an .npz or .h5 file).")
    with open(path, "rb") as f:
        head = f.read(2056)
    if head.startswith(b"PK"):
        return _load_npz(path, images_key, factors_key, factor_names)
    if any(head[o:o + 8] == _HDF5_SIGNATURE for o in (0, 512, 1024, 2048)):
        return _load_h5(path, images_key, factors_key, factor_names)
    raise FactorFileError(path, f"neither an npz (zip) nor an HDF5 file; it starts with "
                          f"{head[:16]!r}.")


# ---------------------------------------------------------------- layouts


def _pick(path, found: dict, given: Optional[str], candidates: tuple, what: str) -> str:
    if given is not None:
        if given not in found:
            raise FactorFileError(path, f"no member {given!r} (given as {what}).", found)
        return given
    for key in candidates:
        if key in found:
            return key
    raise FactorFileError(path, f"no {what.split('_')[0]}: none of {list(candidates)} "
                          "is in the file.", found)


def _load_npz(path, images_key, factors_key, factor_names) -> FactorDataset:
    with open(path, "rb") as handle:      # np.load leaves its own handle open on a bad zip
        return _read_npz(handle, path, images_key, factors_key, factor_names)


def _read_npz(handle, path, images_key, factors_key, factor_names) -> FactorDataset:
    try:
        archive = np.load(handle, allow_pickle=False)
        found = {key: _npy_header(archive, key) for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise FactorFileError(path, f"not a readable npz: {error}") from None
    try:
        images_key = _pick(path, found, images_key, _IMAGE_KEYS, "images_key")
        factors_key = _pick(path, found, factors_key, _FACTOR_KEYS, "factors_key")
        _check_shapes(path, found, images_key, factors_key)
    except FactorFileError:
        archive.close()
        raise
    layout = "dsprites" if (images_key, factors_key) == ("imgs", "latents_values") else "plain"
    try:
        images = _NpzImages(archive, images_key)      # each member decompressed once
        factors = archive[factors_key]
        names = factor_names
        if names is None and "factor_names" in found:
            names = [_text(n) for n in archive["factor_names"].reshape(-1)]
        if names is None and layout == "dsprites" and "metadata" in found:
            names = [_text(n) for n in _get(_dsprites_metadata(archive, path), "latents_names")]
    except restricted_pickle.ForbiddenGlobalError:
        raise  # one line naming the file and the global; nothing was run
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise FactorFileError(path, f"reading failed: truncated or corrupted ({error}).",
                              found) from None
    finally:
        archive.close()
    _check_finite_images(path, images_key, images.read, found[images_key])
    return _build(path, layout, FactorImages(images.read, images.shape, images.scale),
                  factors, names, found, factors_key)


class _NpzImages:
    """An npz images member, decompressed once into memory.

    uint8 / bool members are streamed in chunks of about `_CHUNK_BYTES`: if every
    value is 0 or 1 (dSprites) the images are kept bit-packed (8 pixels a byte:
    dSprites' 3 GB of uint8 take 377 MB) and read as 0/1, else kept as stored
    (uint8 read as value / 255). Other types are read whole and kept as stored.
    """

    def __init__(self, archive, key: str):
        with archive.zip.open(key + ".npy") as f:
            shape, fortran_order, dtype = _read_npy_header(f)
            self.shape = _with_channels(shape)
            if dtype.kind == "b" or dtype == np.uint8:
                pixels = int(np.prod(shape[1:], dtype=np.int64))
                chunks = (_chunks(f, shape, dtype) if not fortran_order
                          else [archive[key].reshape(shape[0], pixels)])
                self._fill(chunks, shape[0], pixels)
                return
        self._images = archive[key]
        self._bits = None
        self.scale = 1.0

    def _fill(self, chunks, rows: int, pixels: int) -> None:
        """Binary chunks -> `_bits` [rows, ceil(pixels / 8)]; else `_images` [rows, pixels]."""
        self._pixels, self.scale = pixels, 1.0
        self._bits, self._images = np.empty((rows, -(-pixels // 8)), np.uint8), None
        start = 0
        for chunk in chunks:
            chunk = chunk.view(np.uint8)
            if self._images is None and chunk.max(initial=0) > 1:    # not binary after all
                self._images = np.empty((rows, pixels), np.uint8)
                self._images[:start] = np.unpackbits(self._bits[:start], axis=1, count=pixels)
                self._bits, self.scale = None, 1.0 / 255.0
            if self._images is None:
                self._bits[start:start + len(chunk)] = np.packbits(chunk, axis=1)
            else:
                self._images[start:start + len(chunk)] = chunk
            start += len(chunk)

    def read(self, indices: np.ndarray) -> np.ndarray:
        if self._bits is not None:
            return np.unpackbits(self._bits[indices], axis=1, count=self._pixels)
        return self._images[indices]


def _chunks(stream, shape, dtype):
    """C-order rows of an .npy stream as `[rows, pixels]` arrays, about `_CHUNK_BYTES` each."""
    pixels = int(np.prod(shape[1:], dtype=np.int64))
    row_bytes = max(pixels * dtype.itemsize, 1)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        data = stream.read(rows * row_bytes)
        if len(data) != rows * row_bytes:
            raise EOFError(f"the images end after {start + len(data) // row_bytes} of "
                           f"{shape[0]} rows")
        yield np.frombuffer(data, dtype).reshape(rows, pixels)


def _load_h5(path, images_key, factors_key, factor_names) -> FactorDataset:
    try:
        with h5py.File(path, "r") as f:
            found = {key: (f[key].shape, f[key].dtype) for key in f.keys()
                     if isinstance(f[key], h5py.Dataset)}
            images_key = _pick(path, found, images_key, _IMAGE_KEYS, "images_key")
            factors_key = _pick(path, found, factors_key, _FACTOR_KEYS, "factors_key")
            _check_shapes(path, found, images_key, factors_key)
            factors = f[factors_key][...]         # [N, K]: small; the images stay on disk
            named_shapes3d = (images_key, factors_key) == ("images", "labels")
            off_grid = _off_shapes3d_grid(factors) if named_shapes3d else None
            shapes3d_layout = named_shapes3d and off_grid is None
            full_shapes3d = shapes3d_layout and len(factors) == latents_lib.NUM_POINTS
            if not full_shapes3d:
                names = factor_names
                if names is None and "factor_names" in found:
                    names = [_text(n) for n in f["factor_names"][...].reshape(-1)]
                if names is None and shapes3d_layout:
                    names = latents_lib.FACTOR_NAMES
    except OSError as error:
        raise FactorFileError(path, f"HDF5 cannot read it: truncated or corrupted "
                              f"({error}).") from None
    if off_grid is not None:
        logging.info("%s: 'images' and 'labels' as in 3D Shapes, but %s: read as a plain file "
                     "(no 3D Shapes names or roles).", path, off_grid)
    if full_shapes3d:
        return _from_shapes3d(path, factor_names)
    image_shape, image_dtype = found[images_key]
    reader = _H5Reader(path, images_key)
    _check_finite_images(path, images_key, reader.read, found[images_key])
    return _build(path, "shapes3d" if shapes3d_layout else "plain",
                  FactorImages(reader.read, _with_channels(image_shape), _scale(image_dtype)),
                  factors, names, found, factors_key)


def _off_shapes3d_grid(labels: np.ndarray) -> Optional[str]:
    """None if `labels` [N, 6] take only 3D Shapes grid values (`latents.factor_values`,
    to within `shapes3d.GRID_ATOL`), else what is off the grid."""
    if labels.ndim != 2 or labels.shape[1] != len(latents_lib.FACTOR_NAMES):
        return f"the labels have shape {labels.shape}, not (N, 6)"
    for k, (name, grid) in enumerate(zip(latents_lib.FACTOR_NAMES,
                                         latents_lib.factor_values())):
        values = np.unique(labels[:, k])
        above = np.clip(np.searchsorted(grid, values), 1, len(grid) - 1)
        distance = np.minimum(np.abs(values - grid[above - 1]), np.abs(values - grid[above]))
        off = ~(distance <= shapes3d.GRID_ATOL)     # NaN is off the grid too
        if off.any():
            return (f"label column {k} takes {values[np.argmax(off)]:g}, not a 3D Shapes "
                    f"{name} {np.round(grid, 4).tolist()}")
    return None


def _from_shapes3d(path, factor_names) -> FactorDataset:
    data = shapes3d.load_shapes3d(path)
    images = FactorImages(data.images, (len(data),) + shapes3d.IMAGE_SHAPE, 1.0 / 255.0)
    names = factor_names if factor_names is not None else latents_lib.FACTOR_NAMES
    return _build(path, "shapes3d", images, data.factors, names, None, "labels")


def _build(path, layout, images, factors, names, found, factors_key) -> FactorDataset:
    """Checks the factors, drops the constant ones and makes the dataset."""
    factors = np.asarray(factors, np.float64).reshape(factors.shape[0], -1)
    if not np.all(np.isfinite(factors)):
        row = int(np.argmax(~np.all(np.isfinite(factors), axis=1)))
        raise FactorFileError(path, f"factors {factors_key!r} hold NaN or infinite values "
                              f"(first in row {row}).", found)
    num = factors.shape[1]
    names = tuple(names) if names is not None else tuple(f"factor_{k}" for k in range(num))
    if len(names) != num:
        raise FactorFileError(path, f"{len(names)} factor names {names} for {num} factors.",
                              found)
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    empty = [k for k, name in enumerate(names) if not str(name).strip()]
    if repeated or empty:
        raise FactorFileError(path, f"factor names {names} must be distinct and non-empty "
                              f"(repeated: {repeated or 'none'}; empty at columns: "
                              f"{empty or 'none'}): they name the latents and the scores; give "
                              "each factor its own name (factor_names=...).", found)
    constant = np.all(factors == factors[:1], axis=0)
    dropped = tuple(n for n, c in zip(names, constant) if c)
    if dropped:
        logging.info("%s: dropping constant factor(s) %s (a single value each).",
                     path, ", ".join(dropped))
    if constant.all():
        raise FactorFileError(path, f"every factor is constant ({names}): nothing to "
                              "disentangle.", found)
    return FactorDataset(path, layout, images, factors[:, ~constant],
                         [n for n, c in zip(names, constant) if not c], dropped)


def _check_finite_images(path, key: str, read, shape_and_dtype: tuple) -> None:
    """Refuses float images holding a NaN or a value infinite as float32 (as they are read).

    `read(indices [M]) -> stored images [M, ...]` is called on consecutive rows, about
    `_CHUNK_BYTES` at a time, so memory stays that of one chunk.
    """
    shape, dtype = shape_and_dtype
    if np.dtype(dtype).kind != "f":
        return
    row_bytes = max(int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        with np.errstate(over="ignore"):   # float64 beyond float32's range: inf, refused
            chunk = read(np.arange(start, min(start + step, shape[0]))).astype(np.float32)
        finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise FactorFileError(path, f"images {key!r} hold NaN or infinite values (first in "
                                  f"row {row}; float images are read as float32).")


def _check_shapes(path, found, images_key, factors_key) -> None:
    image_shape, image_dtype = found[images_key]
    factor_shape, factor_dtype = found[factors_key]
    if len(image_shape) not in (3, 4):
        raise FactorFileError(path, f"images {images_key!r} have shape {image_shape}; "
                              "expected (N, H, W) or (N, H, W, C).", found)
    if not (np.issubdtype(image_dtype, np.number) or image_dtype == bool):
        raise FactorFileError(path, f"images {images_key!r} are not numeric "
                              f"(dtype {image_dtype}).", found)
    if not (np.issubdtype(factor_dtype, np.number) or factor_dtype == bool):
        raise FactorFileError(path, f"factors {factors_key!r} are not numeric "
                              f"(dtype {factor_dtype}).", found)
    if len(factor_shape) not in (1, 2):
        raise FactorFileError(path, f"factors {factors_key!r} have shape {factor_shape}; "
                              "expected (N, K) or (N,).", found)
    if image_shape[0] != factor_shape[0]:
        raise FactorFileError(path, f"{image_shape[0]} images ({images_key!r}) but "
                              f"{factor_shape[0]} factor rows ({factors_key!r}).", found)
    if image_shape[0] == 0:
        raise FactorFileError(path, "the file holds no rows.", found)


class _H5Reader:
    """Reads images by index with h5py, opening the file lazily (once per process)."""

    def __init__(self, path: str, key: str):
        self.path, self.key = path, key
        self._file = None
        self._lock = threading.Lock()   # tf.data may read from several threads

    def read(self, indices: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._file is None:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=64 * 2**20)
        dataset = self._file[self.key]
        if indices.size == 0:
            return np.zeros((0,) + dataset.shape[1:], dataset.dtype)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            if unique[-1] - unique[0] + 1 == unique.size:     # a contiguous block
                images = dataset[int(unique[0]):int(unique[-1]) + 1]
            else:
                images = dataset[unique]                      # h5py needs increasing indices
        except (OSError, RuntimeError) as error:
            raise FactorFileError(self.path, f"reading images failed: truncated or "
                                  f"corrupted ({error}).") from None
        return images[inverse.reshape(-1)]


def _npy_header(archive, key: str) -> tuple:
    """(shape, dtype) of an npz member without decompressing it."""
    with archive.zip.open(key + ".npy") as f:
        shape, _, dtype = _read_npy_header(f)
    return shape, dtype


def _dsprites_metadata(archive, path) -> dict:
    """dSprites' `metadata` member: a (Python 2) pickled 0-d object array holding a dict.

    The only pickle in an npz: read through `restricted_pickle` (numpy arrays and
    plain containers, nothing run); every other member is read with allow_pickle=False.
    """
    with archive.zip.open("metadata.npy") as f:
        _, _, dtype = _read_npy_header(f)
        if not dtype.hasobject:
            raise ValueError(f"'metadata' holds {dtype} values, not a pickled dict")
        try:
            metadata = restricted_pickle.load(f, f"{os.fspath(path)!r} member 'metadata'",
                                              encoding="latin1")
        except (pickle.UnpicklingError, TypeError, AttributeError, IndexError) as error:
            raise ValueError(f"'metadata' cannot be unpickled ({error})") from None
    if not (isinstance(metadata, np.ndarray) and metadata.shape == ()
            and isinstance(metadata[()], dict)):
        raise ValueError("'metadata' does not hold a dict")
    return metadata[()]


def _read_npy_header(stream) -> tuple:
    """(shape, fortran_order, dtype) of an .npy stream, left at the start of the data."""
    version = np.lib.format.read_magic(stream)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    return read_header(stream)


def _with_channels(shape) -> tuple:
    return tuple(shape) + (1,) if len(shape) == 3 else tuple(shape)


def _scale(dtype) -> float:
    return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _get(mapping: dict, key: str):
    """dSprites' metadata dict has str or bytes keys depending on how it is unpickled."""
    return mapping[key] if key in mapping else mapping[key.encode()]

