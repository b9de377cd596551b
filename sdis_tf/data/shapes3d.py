"""The real 3D Shapes data: `3dshapes.h5` or a prepared TFDS `shapes3d` directory.

`load_shapes3d(path)` validates the data and returns a `Shapes3D` whose
`factors` `[480000, 6]` (float64, dataset units, grid order of `latents.py`)
are in memory (23 MB) while the images stay on disk (h5) or encoded as PNG in
memory (TFDS, ~250 MB): the 5.9 GB of decoded images are never loaded.
`images(indices)` reads any set of images; `images_tf(indices)` does the same
as a TF op (float32 in [0, 1]) for `tf.data` pipelines.

h5 layout (deepmind/3d-shapes): `images` (480000, 64, 64, 3) uint8 and
`labels` (480000, 6) float64 in the grid order, orientation fastest. TFDS
`shapes3d` 2.0.0: one `train` split of 480,000 records with `image` (PNG),
`label_<factor>` (class index) and `value_<factor>` (float32); records are
put back into grid order from their class indices.

Files that are missing, truncated, corrupted, saved HTML pages, or that hold
other data raise `Shapes3DFileError` with a message saying what is wrong and
where to get the data, never a trace from inside h5py.
"""

from __future__ import annotations

import glob
import os
import threading

import h5py
import numpy as np
import tensorflow as tf

from sdis_tf.data import latents
from sdis_tf.data.errors import DataFileError

IMAGE_SHAPE = (64, 64, 3)
H5_URL = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
H5_BYTES = 267_573_662
HOW_TO_GET = (
    f"Download 3dshapes.h5 ({H5_BYTES:,} bytes) from {H5_URL} (see "
    "https://github.com/google-deepmind/3d-shapes) and pass its path, e.g. "
    "load_shapes3d('/data/3dshapes/3dshapes.h5'); or run `tfds build shapes3d` "
    "(tensorflow-datasets) on a machine with internet access and pass its data_dir "
    "(the folder that holds shapes3d/2.0.0). Without the file, use the procedural "
    "renderer (sdis_tf.data.render, image source 'render').")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GRID_ATOL = 1e-4
"""How far a file's factor value may lie from its 3D Shapes grid value (float32 labels)."""
_TFDS_FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")


class Shapes3DFileError(DataFileError):
    """The 3D Shapes data at the given path is missing or unusable."""

    def __init__(self, path, problem: str):
        super().__init__(f"3D Shapes data at {os.fspath(path)!r}: {problem}\n{HOW_TO_GET}")


class Shapes3D:
    """3D Shapes images by grid index, with their factor values.

    Attributes:
      factors: `[480000, 6]` float64 factor values (dataset units), row i for
        grid index i (equal to `latents.grid_factors()`, checked on load).
      path: where the data came from.
    """

    def __init__(self, path, factors: np.ndarray, read_fn, tf_read_fn):
        self.path = os.fspath(path)
        self.factors = factors
        self._read = read_fn
        self._tf_read = tf_read_fn

    def __len__(self) -> int:
        return self.factors.shape[0]

    def images(self, indices) -> np.ndarray:
        """uint8 images `[..., 64, 64, 3]` of grid indices `[...]` (any order, repeats allowed)."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self)}); got range "
                             f"[{indices.min()}, {indices.max()}]")
        flat = self._read(indices.reshape(-1))
        return flat.reshape(indices.shape + IMAGE_SHAPE)

    def images_tf(self, indices: tf.Tensor) -> tf.Tensor:
        """TF op: float32 images `[..., 64, 64, 3]` in [0, 1] of int indices `[...]`."""
        indices = tf.convert_to_tensor(indices)
        flat = self._tf_read(tf.reshape(tf.cast(indices, tf.int64), [-1]))
        images = tf.reshape(flat, tf.concat([tf.shape(indices), IMAGE_SHAPE], 0))
        return tf.cast(images, tf.float32) / 255.0


def load_shapes3d(path) -> Shapes3D:
    """Opens and validates 3D Shapes: a `3dshapes.h5` file or a TFDS data directory.

    Args:
      path: the h5 file; or a TFDS data_dir holding `shapes3d/<version>/`, or
        that version folder itself.
    Raises:
      Shapes3DFileError: missing path, HTML page, truncated or corrupted file,
        wrong keys/shapes/dtypes, factors off the 3D Shapes grid, incomplete TFDS data.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise Shapes3DFileError(path, "no such file or directory.")
    if os.path.isdir(path):
        return _load_tfds(path)
    return _load_h5(path)


# ---------------------------------------------------------------- h5 file


def _check_signature(path: str) -> None:
    """Rejects empty files, HTML pages and non-HDF5 files before h5py sees them."""
    size = os.path.getsize(path)
    if size == 0:
        raise Shapes3DFileError(path, "the file is empty (an interrupted download?).")
    with open(path, "rb") as f:
        head = f.read(4096)
    # The HDF5 superblock sits at offset 0, 512, 1024, 2048, ... (user block).
    if any(head[offset:offset + 8] == _HDF5_SIGNATURE for offset in (0, 512, 1024, 2048)):
        return
    if head.lstrip().startswith(b"<"):
        raise Shapes3DFileError(
            path, f"this is an HTML/XML page ({size:,} bytes), not an HDF5 file: a download "
            "page or error page was saved under the file name.")
    raise Shapes3DFileError(path, f"not an HDF5 file (no HDF5 signature; {size:,} bytes, "
                            f"starts with {head[:16]!r}).")


def _open_h5(path: str) -> h5py.File:
    try:
        # A 64 MB chunk cache keeps random reads cheap when images share chunks.
        return h5py.File(path, "r", rdcc_nbytes=64 * 2**20)
    except OSError as error:
        size = os.path.getsize(path)
        hint = (f" The file has {size:,} bytes; the original has {H5_BYTES:,}."
                if size < H5_BYTES else "")
        raise Shapes3DFileError(
            path, f"HDF5 cannot open it: truncated or corrupted ({error}).{hint}") from None


def _load_h5(path: str) -> Shapes3D:
    _check_signature(path)
    with _open_h5(path) as f:
        found = {key: (f[key].shape, f[key].dtype) for key in f.keys()
                 if hasattr(f[key], "shape")}
        expected = {"images": ((latents.NUM_POINTS,) + IMAGE_SHAPE, np.uint8),
                    "labels": ((latents.NUM_POINTS, 6), np.floating)}
        for key, (shape, dtype) in expected.items():
            if key not in found:
                raise Shapes3DFileError(path, f"no dataset {key!r}; found {sorted(found)}.")
            if found[key][0] != shape or not np.issubdtype(found[key][1], dtype):
                raise Shapes3DFileError(
                    path, f"dataset {key!r} has shape {found[key][0]} and dtype {found[key][1]}; "
                    f"expected shape {shape} and dtype {np.dtype(dtype).name}.")
        try:
            factors = np.asarray(f["labels"][...], np.float64)
            # Reading the last image touches the end of the file (truncation).
            f["images"][0]
            f["images"][latents.NUM_POINTS - 1]
        except (OSError, RuntimeError, ValueError) as error:
            raise Shapes3DFileError(path, f"reading failed: the file is truncated or "
                                    f"corrupted ({error}).") from None
    _check_factors(path, factors)
    reader = _H5Reader(path)
    return Shapes3D(path, factors, reader.read, reader.read_tf)


class _H5Reader:
    """Reads images by index with h5py, opening the file lazily (once per process)."""

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._lock = threading.Lock()   # tf.data may call read from several threads

    def read(self, indices: np.ndarray) -> np.ndarray:
        if indices.size == 0:
            return np.zeros((0,) + IMAGE_SHAPE, np.uint8)
        with self._lock:
            if self._file is None:
                self._file = _open_h5(self.path)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            images = self._file["images"][unique]   # h5py needs increasing indices
        except (OSError, RuntimeError) as error:
            raise Shapes3DFileError(self.path, f"reading images failed: the file is "
                                    f"truncated or corrupted ({error}).") from None
        return images[inverse]

    def read_tf(self, indices: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(self.read, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None,) + IMAGE_SHAPE)


def _check_factors(path, factors: np.ndarray) -> None:
    """Factor values must be the 3D Shapes grid in its order (orientation fastest)."""
    grid = latents.grid_factors()
    for k, name in enumerate(latents.FACTOR_NAMES):
        wrong = ~np.isclose(factors[:, k], grid[:, k], rtol=0.0, atol=GRID_ATOL)
        if wrong.any():
            row = int(np.argmax(wrong))
            raise Shapes3DFileError(
                path, f"factor {name!r} is off the 3D Shapes grid: row {row} has "
                f"{factors[row, k]!r}, expected {grid[row, k]!r} (values "
                f"{np.round(latents.factor_values()[k], 4).tolist()}, orientation fastest).")


# ---------------------------------------------------------------- TFDS directory


def _tfds_version_dir(path: str) -> str:
    """The folder holding dataset_info.json: path, path/shapes3d/<v>, or path/<v>."""
    for pattern in ("", os.path.join("shapes3d", "*"), "*"):
        found = sorted(glob.glob(os.path.join(path, pattern, "dataset_info.json")))
        if found:
            return os.path.dirname(found[-1])
    raise Shapes3DFileError(
        path, "a directory without a prepared TFDS shapes3d dataset (no "
        "dataset_info.json in it, in shapes3d/<version>/ or in <version>/).")


def _read_tfds_records(path: str):
    """All records of a prepared TFDS shapes3d folder, in file order.

    Reads the `*-train.tfrecord-*` shards directly (vectorised parsing; the
    TFDS reader is ~10x slower here) with the TFDS shapes3d feature keys.

    Returns:
      (levels `[M, 6]` int64 class indices, values `[M, 6]` float64,
       encoded `[M]` tf.string tensor of PNG images).
    """
    version_dir = _tfds_version_dir(path)
    shards = sorted(glob.glob(os.path.join(version_dir, "*-train.tfrecord-*")))
    if not shards:
        raise Shapes3DFileError(path, f"no train shards (*-train.tfrecord-*) in {version_dir!r}.")
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    for name in _TFDS_FACTORS:
        spec[f"label_{name}"] = tf.io.FixedLenFeature([], tf.int64)
        spec[f"value_{name}"] = tf.io.FixedLenFeature([], tf.float32)
    dataset = tf.data.TFRecordDataset(shards).batch(16384).map(
        lambda records: tf.io.parse_example(records, spec))
    levels, values, encoded = [], [], []
    try:
        for batch in dataset:
            levels.append(tf.stack([batch[f"label_{k}"] for k in _TFDS_FACTORS], -1).numpy())
            values.append(tf.stack([batch[f"value_{k}"] for k in _TFDS_FACTORS], -1).numpy())
            encoded.append(batch["image"])
    except tf.errors.OpError as error:
        raise Shapes3DFileError(path, f"TFDS records are unreadable or not shapes3d "
                                f"({type(error).__name__}: {error.message}).") from None
    if not levels:
        raise Shapes3DFileError(path, "the TFDS train split is empty.")
    return (np.concatenate(levels), np.concatenate(values).astype(np.float64),
            tf.concat(encoded, axis=0))


def _grid_order(path, levels: np.ndarray) -> np.ndarray:
    """Permutation putting records with class indices `levels` `[M, 6]` in grid order."""
    sizes = np.array(latents.FACTOR_SIZES)
    if levels.min() < 0 or np.any(levels.max(axis=0) >= sizes):
        raise Shapes3DFileError(path, f"class indices exceed the factor sizes {tuple(sizes)}.")
    index = np.ravel_multi_index(levels.T, latents.FACTOR_SIZES)
    counts = np.bincount(index, minlength=latents.NUM_POINTS)
    if levels.shape[0] != latents.NUM_POINTS or np.any(counts != 1):
        raise Shapes3DFileError(
            path, f"incomplete or duplicated data: {levels.shape[0]:,} records cover "
            f"{int(np.count_nonzero(counts)):,} of the {latents.NUM_POINTS:,} grid points "
            "(a partial `tfds build`?).")
    order = np.empty(latents.NUM_POINTS, np.int64)
    order[index] = np.arange(latents.NUM_POINTS)
    return order


def _load_tfds(path: str) -> Shapes3D:
    levels, values, encoded = _read_tfds_records(path)
    order = _grid_order(path, levels)
    factors = values[order]
    _check_factors(path, factors)
    # A variable, so that tf.data functions capture it by reference: a captured
    # tensor would be copied into every function graph (~250 MB here).
    encoded = tf.Variable(tf.gather(encoded, order), trainable=False)

    def read_tf(indices: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(lambda png: tf.io.decode_png(png, channels=3),
                         tf.gather(encoded, indices),
                         fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.uint8))

    def read(indices: np.ndarray) -> np.ndarray:
        return read_tf(tf.constant(indices, tf.int64)).numpy()

    return Shapes3D(path, factors, read, read_tf)
