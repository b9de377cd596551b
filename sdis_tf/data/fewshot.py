r"""Few-shot classification data: class-labelled image splits and N-way K-shot episodes.

An episode has `ways` classes drawn from a split without replacement and, per
class, `shots + queries` distinct images: the support set (shots per class,
labels 0..ways-1) fits the head, the query set scores it. `EpisodeSampler`
draws batches of T episodes as a pure function of (seed, stream, index), so a
resumed run replays the same batches, and validation/test episodes are the
same every epoch and every run (MetaOptNet reseeded with the epoch number, so
its validation episodes changed every epoch).

Splits (`FewShotSplit`: uint8 images [N, H, W, 3], contiguous labels [N]):

- `procedural_split(split)`: needs no download. 100 classes, each a
  combination of object shape (4) x object-hue bin (5) x scale bin (5),
  rendered by `sdis_tf.data.render`; floor hue, wall hue and orientation are
  uniform nuisance factors, hue and scale jitter inside their bin. A fixed
  permutation assigns 64 / 16 / 20 classes to train / val / test, so novel
  classes are new combinations of seen attribute values.
- `load_split(dataset, root, split)`: miniImageNet, tieredImageNet, CIFAR-FS and
  FC100 in the files MetaOptNet users have (below). Missing files, HTML pages
  saved under the file's name, zip archives, truncated files and wrong shapes
  raise `FewShotFileError` naming the file and the fix; pickles are read as
  data only (`restricted_pickle`), Python 2 pickles with the latin-1 fallback.

    miniImageNet    miniImageNet_category_split_train_phase_train.pickle,
                    miniImageNet_category_split_{val,test}.pickle
                    (dicts with 'data' [N, 84, 84, 3] uint8, 'labels' [N])
    tieredImageNet  {train,val,test}_images.npz ('images' [N, 84, 84, 3]) and
                    {train,val,test}_labels.pkl ('labels' [N])
    CIFAR-FS        CIFAR_FS_{train,val,test}.pickle ('data' [N, 32, 32, 3], 'labels')
    FC100           FC100_{train,val,test}.pickle    ('data' [N, 32, 32, 3], 'labels')

Images are normalised per channel with the dataset's mean and std (MetaOptNet's
constants; 0.5 / 0.25 for the procedural set) when episodes are drawn.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from sdis_tf.data import restricted_pickle
from sdis_tf.data.errors import DataFileError
from sdis_tf.data.render import render

SPLITS = ("train", "val", "test")
DATASETS = ("procedural", "miniImageNet", "tieredImageNet", "CIFAR-FS", "FC100")

_IMAGENET_STATS = ((120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255),
                   (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255))
_CIFAR_STATS = ((129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255),
                (68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255))
_PROCEDURAL_STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# dataset -> (image side, (mean, std), file names per split).
_FORMATS = {
    "miniImageNet": (84, _IMAGENET_STATS, {
        "train": ("miniImageNet_category_split_train_phase_train.pickle",),
        "val": ("miniImageNet_category_split_val.pickle",),
        "test": ("miniImageNet_category_split_test.pickle",)}),
    "tieredImageNet": (84, _IMAGENET_STATS, {
        s: (f"{s}_images.npz", f"{s}_labels.pkl") for s in SPLITS}),
    "CIFAR-FS": (32, _CIFAR_STATS, {s: (f"CIFAR_FS_{s}.pickle",) for s in SPLITS}),
    "FC100": (32, _CIFAR_STATS, {s: (f"FC100_{s}.pickle",) for s in SPLITS}),
}
IMAGE_SIDES = {name: side for name, (side, _, _) in _FORMATS.items()}
"""The image side of each real dataset's files (no resizing is done)."""
_HOW_TO_GET = (
    "These are the files of MetaOptNet's data loaders (github.com/kjunelee/MetaOptNet, "
    "README 'Datasets'); download them with a browser (Google Drive serves an HTML "
    "page instead of the file when its quota is exceeded) and check their sizes. "
    "Without them, use the procedural few-shot set (config.data.dataset='procedural').")


class FewShotFileError(DataFileError):
    """A few-shot data file is missing or unusable; the message says why and how to fix it."""

    def __init__(self, path, problem: str):
        super().__init__(f"few-shot data file {os.fspath(path)!r}: {problem}\n{_HOW_TO_GET}")


class FewShotSplit(NamedTuple):
    """One split of a few-shot dataset.

    images [N, H, W, 3] uint8; labels [N] int64 in 0..num_classes-1 (every
    class present); mean, std: per-channel normalisation of images / 255.
    """

    images: np.ndarray
    labels: np.ndarray
    mean: tuple
    std: tuple

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


class Episodes(NamedTuple):
    """T episodes: normalised float32 images and int32 labels in 0..ways-1.

    support [T, ways*shots, H, W, 3], support_labels [T, ways*shots],
    query [T, ways*queries, H, W, 3], query_labels [T, ways*queries].
    """

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def _contiguous(labels) -> np.ndarray:
    """Relabels arbitrary class ids to 0..C-1 (sorted order)."""
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.astype(np.int64)


# ---------------------------------------------------------------- procedural


NUM_SHAPES, NUM_HUES, NUM_SCALES = 4, 5, 5
PROCEDURAL_CLASSES = NUM_SHAPES * NUM_HUES * NUM_SCALES
PROCEDURAL_SPLIT_SIZES = {"train": 64, "val": 16, "test": 20}
_CLASS_PERMUTATION_SEED = 20221128
_HUE_JITTER = 0.04      # object hue = bin centre +- this (bins are 0.2 wide)
_SCALE_JITTER = 0.025   # scale = bin centre +- this (bins are 0.1 wide)


def procedural_classes(split: str) -> np.ndarray:
    """Class ids (0..99) of a procedural split: a fixed 64 / 16 / 20 partition."""
    _check_choice("split", split, SPLITS)
    order = np.random.default_rng(_CLASS_PERMUTATION_SEED).permutation(PROCEDURAL_CLASSES)
    start = {"train": 0, "val": 64, "test": 80}[split]
    return np.sort(order[start:start + PROCEDURAL_SPLIT_SIZES[split]])


def procedural_factors(class_id: int, num_images: int, seed: int = 0) -> np.ndarray:
    """Render factors [num_images, 6] of one procedural class (see the module docstring).

    class_id = shape * 25 + hue_bin * 5 + scale_bin. Deterministic in (class_id, seed).
    """
    shape, rest = divmod(int(class_id), NUM_HUES * NUM_SCALES)
    hue_bin, scale_bin = divmod(rest, NUM_SCALES)
    rng = np.random.default_rng([seed, class_id])
    jitter = lambda width: rng.uniform(-width, width, num_images)
    return np.stack([
        rng.uniform(0.0, 1.0, num_images),                               # floor hue (nuisance)
        rng.uniform(0.0, 1.0, num_images),                               # wall hue (nuisance)
        (hue_bin + 0.5) / NUM_HUES + jitter(_HUE_JITTER),                # object hue
        0.8 + 0.1 * scale_bin + jitter(_SCALE_JITTER),                   # scale
        np.full(num_images, float(shape)),                               # shape
        rng.uniform(-30.0, 30.0, num_images),                            # orientation (nuisance)
    ], axis=1)


def procedural_split(split: str, *, images_per_class: int = 60, image_size: int = 32,
                     seed: int = 0, render_batch: int = 256) -> FewShotSplit:
    """Renders one split of the procedural few-shot set (no download; see module docstring).

    Args:
      split: "train" (64 classes), "val" (16) or "test" (20).
      images_per_class: images rendered per class.
      image_size: side of the (area-resized) images; 64 is the renderer's own.
      seed: image seed (the class partition is fixed).
      render_batch: images per render call (memory only).
    """
    if images_per_class < 1 or not 8 <= image_size <= 64:
        raise ValueError(f"procedural_split: images_per_class must be >= 1 and image_size in "
                         f"[8, 64]. Received: images_per_class={images_per_class}, "
                         f"image_size={image_size}")
    classes = procedural_classes(split)
    factors = np.concatenate([procedural_factors(c, images_per_class, seed) for c in classes])
    chunks = []
    for start in range(0, len(factors), render_batch):
        images = render(factors[start:start + render_batch])
        if image_size != images.shape[1]:
            images = tf.image.resize(images, [image_size, image_size], method="area")
        chunks.append(np.round(np.clip(images.numpy(), 0.0, 1.0) * 255).astype(np.uint8))
    labels = np.repeat(np.arange(len(classes)), images_per_class)
    return FewShotSplit(np.concatenate(chunks), labels, *_PROCEDURAL_STATS)


# ------------------------------------------------------------------- loaders


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}. Received: {name}={value!r}")


def _check_header(path: str, expect_zip: bool) -> None:
    """Missing / empty files, HTML pages and archives, by their first bytes."""
    if not os.path.isfile(path):
        raise FewShotFileError(path, "no such file.")
    size = os.path.getsize(path)
    if size == 0:
        raise FewShotFileError(path, "the file is empty (0 bytes): an interrupted download.")
    with open(path, "rb") as f:
        head = f.read(512)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<")):
        raise FewShotFileError(
            path, f"this is an HTML page ({size:,} bytes), not the data: a download link "
            "(Google Drive's quota or virus-scan page) was saved under the file's name. "
            "Download the file again.")
    if head.startswith(b"PK") and not expect_zip:
        raise FewShotFileError(path, "this is a zip archive, not a pickle: unzip it first "
                                     "(e.g. MetaOptNet's miniImageNet.zip) and point to the "
                                     "extracted folder.")


def _decode_keys(obj):
    """Python 2 pickles read as bytes may have bytes keys: decode them."""
    if isinstance(obj, dict):
        return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj


def load_pickle(path) -> dict:
    """Reads a (Python 2 or 3) pickle, raising `FewShotFileError` for unusable files.

    The pickle is read as data only (`restricted_pickle`): one that references
    anything but numpy arrays and plain containers raises
    `restricted_pickle.ForbiddenGlobalError`, and nothing in it is run.
    Python 2 pickles of numpy arrays (Gidaris & Komodakis' miniImageNet files)
    fail with UnicodeDecodeError under Python 3's default encoding and are
    retried with encoding="latin1", the documented way to read them.
    """
    path = os.fspath(path)
    _check_header(path, expect_zip=False)
    size = os.path.getsize(path)
    for encoding in ("ASCII", "latin1"):
        try:
            with open(path, "rb") as f:
                return _decode_keys(restricted_pickle.load(f, repr(path), encoding=encoding))
        except UnicodeDecodeError:
            continue  # a Python 2 pickle: retry with latin-1
        except restricted_pickle.ForbiddenGlobalError:
            raise  # already one line naming the file and the global
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, MemoryError, OverflowError) as error:
            raise FewShotFileError(
                path, f"cannot be unpickled ({type(error).__name__}: {error}); the file "
                f"({size:,} bytes) is truncated or corrupt: download it again.") from None
    raise FewShotFileError(path, "cannot be decoded even as a latin-1 Python 2 pickle.")


def _load_npz_images(path: str) -> np.ndarray:
    _check_header(path, expect_zip=True)
    size = os.path.getsize(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise FewShotFileError(path, f"has no 'images' array (found {archive.files}).")
            return archive["images"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise FewShotFileError(
            path, f"cannot be read as an .npz archive ({type(error).__name__}: {error}); the "
            f"file ({size:,} bytes) is truncated or corrupt: download it again.") from None


def _get(path: str, record: dict, key: str):
    if not isinstance(record, dict) or key not in record:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise FewShotFileError(path, f"expected a dict with key {key!r}; found {found}.")
    return record[key]


def _check_arrays(path: str, images, labels, side: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    expected = (side, side, 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise FewShotFileError(path, f"images have shape {images.shape}; expected "
                                     f"[N, {side}, {side}, 3] for this dataset.")
    if images.dtype != np.uint8:
        raise FewShotFileError(path, f"images have dtype {images.dtype}; expected uint8.")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype,
                                                                           np.integer):
        raise FewShotFileError(path, f"labels have shape {labels.shape} and dtype "
                                     f"{labels.dtype}; expected {len(images)} integers "
                                     "(one per image).")
    return images, labels


def load_split(dataset: str, root, split: str) -> FewShotSplit:
    """Loads one split of a real few-shot dataset from `root` (see the module docstring).

    Args:
      dataset: "miniImageNet", "tieredImageNet", "CIFAR-FS" or "FC100".
      root: the folder holding the dataset's files.
      split: "train", "val" or "test".
    Raises:
      FewShotFileError: a file is missing or unusable (the message says why).
    """
    _check_choice("dataset", dataset, tuple(_FORMATS))
    _check_choice("split", split, SPLITS)
    side, (mean, std), files = _FORMATS[dataset]
    paths = [os.path.join(os.fspath(root), name) for name in files[split]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FewShotFileError(missing[0], f"no such file; {dataset} {split} needs "
                                           f"{', '.join(files[split])} in {os.fspath(root)!r}.")
    if dataset == "tieredImageNet":
        images = _load_npz_images(paths[0])
        labels = _get(paths[1], load_pickle(paths[1]), "labels")
        if len(np.asarray(labels)) != len(images):
            raise FewShotFileError(paths[1], f"has {len(np.asarray(labels))} labels for "
                                             f"{len(images)} images in {paths[0]!r}.")
        path = paths[0]
    else:
        record = load_pickle(paths[0])
        images, labels, path = _get(paths[0], record, "data"), _get(paths[0], record,
                                                                  "labels"), paths[0]
    images, labels = _check_arrays(path, images, labels, side)
    return FewShotSplit(images, _contiguous(labels), mean, std)


# ------------------------------------------------------------------ episodes


class EpisodeSampler:
    """Draws batches of N-way K-shot Q-query episodes from a split, statelessly.

    Batch `index` of stream `stream` is a pure function of (seed, stream,
    index): classes by a uniform draw without replacement, then shots + queries
    distinct images per class; support and query orders are shuffled.

    Args:
      data: the split.
      ways, shots, queries: N, K and Q (queries per class).
      seed, stream: the random stream (e.g. stream 0 for training batches,
        1 for validation, 2 for test).
    """

    def __init__(self, data: FewShotSplit, ways: int, shots: int, queries: int, *,
                 seed: int = 0, stream: int = 0):
        for name, value, low in (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"EpisodeSampler: {name} must be an integer >= {low}. "
                                 f"Received: {name}={value!r}")
        order = np.argsort(data.labels, kind="stable")
        counts = np.bincount(data.labels, minlength=data.num_classes)
        if data.num_classes < ways:
            raise ValueError(f"EpisodeSampler: ways={ways} but the split has only "
                             f"{data.num_classes} classes")
        if counts.min() < shots + queries:
            raise ValueError(f"EpisodeSampler: shots + queries = {shots + queries} but class "
                             f"{int(counts.argmin())} has only {int(counts.min())} images")
        self.data, self.ways, self.shots, self.queries = data, ways, shots, queries
        self.seed, self.stream = seed, stream
        self._offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._counts, self._order = counts, order
        self._mean = np.asarray(data.mean, np.float32) * 255.0
        self._std = np.asarray(data.std, np.float32) * 255.0

    def indices(self, index: int, num_episodes: int) -> tuple[np.ndarray, np.ndarray]:
        """Image indices into the split: support [T, ways*shots], query [T, ways*queries].

        Labels follow from the layout: support image i of an episode has label
        `support_labels[t, i]` (see `sample`).
        """
        rng = np.random.default_rng([self.seed, self.stream, int(index)])
        per_class = self.shots + self.queries
        # Uniform draws without replacement, vectorised: the smallest random keys win.
        classes = np.argsort(rng.random((num_episodes, self.data.num_classes)), axis=1)
        classes = classes[:, :self.ways]                                           # [T, ways]
        keys = rng.random((num_episodes, self.ways, int(self._counts.max())))
        keys[np.arange(keys.shape[-1]) >= self._counts[classes][..., None]] = np.inf
        chosen = np.argsort(keys, axis=-1)[..., :per_class]                         # [T, ways, K+Q]
        picks = self._order[self._offsets[classes][..., None] + chosen]
        support = picks[:, :, :self.shots].reshape(num_episodes, -1)
        query = picks[:, :, self.shots:].reshape(num_episodes, -1)
        return support, query

    def sample(self, index: int, num_episodes: int) -> Episodes:
        """Batch `index` of T = num_episodes episodes, images normalised (see `Episodes`)."""
        rng = np.random.default_rng([self.seed, self.stream, int(index), 1])
        support, query = self.indices(index, num_episodes)
        support_labels = np.repeat(np.arange(self.ways), self.shots)[None].repeat(num_episodes, 0)
        query_labels = np.repeat(np.arange(self.ways), self.queries)[None].repeat(num_episodes, 0)
        shuffle = lambda n: np.argsort(rng.random((num_episodes, n)), axis=1)
        s_perm, q_perm = shuffle(support.shape[1]), shuffle(query.shape[1])
        support, support_labels = (np.take_along_axis(a, s_perm, 1)
                                   for a in (support, support_labels))
        query, query_labels = (np.take_along_axis(a, q_perm, 1) for a in (query, query_labels))
        return Episodes(self._normalize(support), support_labels.astype(np.int32),
                        self._normalize(query), query_labels.astype(np.int32))

    def _normalize(self, indices: np.ndarray) -> np.ndarray:
        images = self.data.images[indices.reshape(-1)].astype(np.float32)
        images = (images - self._mean) / self._std
        return images.reshape(indices.shape + images.shape[1:])
