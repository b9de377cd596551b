"""Omniglot (Lake et al., 2015): every file layout, Lake's one-shot runs, class pools.

`load_omniglot(path, split, size)` -> float32 `[classes, 20, size, size, 1]`,
ink = 1 and paper = 0, `images[c, d]` character c drawn by drawer d. Layouts
(`path` may be the file/folder itself or a folder holding it):

    npz      images_background.npz / images_evaluation.npz: `images` bool
             [C, 20, 105, 105] with True = paper (the 1-bit PNGs' polarity),
             `labels` [C, 20]. No class names.
    zip      the original images_background.zip / images_evaluation.zip, read as
             they are: `[images_background/]Alphabet/characterNN/XXXX_YY.png`.
    folder   the same tree unpacked (what TFDS downloads).
    TFDS     a prepared `omniglot` data directory (train = background,
             test = evaluation); read from its tfrecord shards, never downloaded.

Download: `load_omniglot("", split)` reads the official `images_<split>.zip` and
`lake_runs(DOWNLOAD)` Lake's `all_runs.zip` (github.com/brendenlake/omniglot, MIT
licence) from the data cache, `$SDIS_TF_DATA/omniglot/` (default
`~/.cache/sdis_tf/omniglot/`), each downloaded on first use and checked against its
SHA-256 (`REMOTE`, `sdis_tf.data.download`). Offline, the error names the URL to fetch
and the path to put it at.

Class order: alphabets sorted by name, characters by NN; drawers by YY (TFDS
records do not keep the drawer, so there the 20 drawings are in record order).
Class names `Alphabet/characterNN` come with the zip, folder and TFDS layouts.

Resizing is exact area averaging (box filter, antialiased): with s = 105 / size,
output pixel (i, j) is the mean of the source over the square
[i s, (i + 1) s) x [j s, (j + 1) s), source pixels counted by their overlapping
area, i.e. `out = A img A^T` with A `[size, 105]`,
A_ik = |[k, k + 1) n [i s, (i + 1) s)| / s (rows sum to 1). Applied to ink in
{0, 1}, a pixel's value is the fraction of its area covered by ink. Same
method for every layout, so all layouts give identical arrays.

Splits: learn only from the background set, evaluate on the evaluation set
(Lake's split). Every layout holds the background set as 964 characters of 30
alphabets and the evaluation set as 659 characters of 20 alphabets
(`NUM_CLASSES`, `NUM_ALPHABETS`); `load_omniglot` checks them (the alphabets
where the layout names them: zip, folder, TFDS), so the other split's file, a
swapped pair or a partial set is refused, naming the file or folder read
(`complete=False` reads a subset of the characters, for small tests).
`class_pools` draws training and validation pools from the background
classes only. Global class ids: background c -> c, evaluation
c -> 964 + c (`global_ids`).

Episodes: `fewshot_split(path, 'train' | 'val' | 'test')` gives a
`fewshot.FewShotSplit` (train / val: the background pools, train optionally
with rotations; test: the evaluation set) for `fewshot.EpisodeSampler`
(N-way K-shot Q-query episodes, seeded). `lake_episodes(runs)` turns Lake's 20
runs into 20 episodes of 20-way 1-shot classification with one query per
class, normalised the same way.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import zipfile
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from sdis_tf.data import download, fewshot
from sdis_tf.data.errors import DataFileError

SPLITS = ("background", "evaluation")
NUM_CLASSES = {"background": 964, "evaluation": 659}
NUM_ALPHABETS = {"background": 30, "evaluation": 20}
DRAWERS = 20
SOURCE_SIZE = 105
_TFDS_SPLIT = {"background": "train", "evaluation": "test"}
_PNG_PATH = re.compile(r"(?:^|/)([^/]+)/character(\d+)/(\d+)_(\d+)\.png$")
_CHUNK = 64           # classes resized at a time (bounds the float32 working memory)
FEWSHOT_SPLITS = ("train", "val", "test")
# Ink mean and std of the background set at 28 x 28 (the mean holds at every size).
STATS = ((0.0779,), (0.2303,))
_GITHUB = "https://github.com/brendenlake/omniglot/raw/master/python/"
REMOTE = {
    "background": download.RemoteFile(
        "omniglot/images_background.zip", _GITHUB + "images_background.zip",
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640"),
    "evaluation": download.RemoteFile(
        "omniglot/images_evaluation.zip", _GITHUB + "images_evaluation.zip",
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee"),
    "lake_runs": download.RemoteFile(
        "omniglot/all_runs.zip", _GITHUB + "one-shot-classification/all_runs.zip",
        "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"),
}
"""The official files in the data cache: the image sets' zips (9,464,212 and 6,462,886 bytes,
the SHA-256 TFDS registers for the same URLs) and Lake's runs (352,787 bytes)."""
DOWNLOAD = "download"
"""`lake_runs(DOWNLOAD)`: Lake's all_runs.zip from the data cache, downloaded on first use."""


class OmniglotFileError(DataFileError):
    """Omniglot data at the given path is missing or unusable (a one-line message)."""

    def __init__(self, path, problem: str):
        problem = " ".join(problem.split())
        super().__init__(f"Omniglot data at {os.fspath(path)!r}: {problem}")


class LakeRuns(NamedTuple):
    """Lake et al.'s 20 runs of 20-way within-alphabet one-shot classification.

    support: `[20 runs, 20 classes, size, size, 1]` (training/classNN.png, NN = class + 1).
    query: `[20 runs, 20 items, size, size, 1]` (test/itemNN.png, NN = item + 1).
    answers: `[20 runs, 20 items]` int64, the support class of each query
      (class_labels.txt). Error rate = mean of `prediction != answers`, in %.
    """

    support: np.ndarray
    query: np.ndarray
    answers: np.ndarray


class ClassPools(NamedTuple):
    """Background class indices for training and validation (disjoint)."""

    train: np.ndarray
    val: np.ndarray


def load_omniglot(path, split: str = "background", size: int = 28, *,
                  with_names: bool = False, complete: bool = True):
    """Omniglot images `[classes, 20, size, size, 1]` float32, ink = 1 (module docstring).

    Args:
      path: an npz or zip file; an unpacked `Alphabet/characterNN/*.png` folder; a
        TFDS data dir (holding `omniglot/<version>/`) or version folder; a folder
        holding `images_<split>.npz`, `images_<split>.zip` or `images_<split>/`; or ""
        (the str): the official `images_<split>.zip` in the data cache, downloaded on
        first use (`REMOTE`).
      split: 'background' or 'evaluation'.
      size: output side in [1, 105] (area averaging).
      with_names: also return the class names (None for the npz layout).
      complete: require the whole split (`NUM_CLASSES` characters, `NUM_ALPHABETS`
        alphabets where the layout names them); False accepts any subset.
    Returns:
      images, or (images, names) with `with_names`.
    Raises:
      OmniglotFileError: missing path, a file of the other split, truncated or
        foreign files, wrong shapes, a class without 20 drawings, and with
        `complete` other counts than the split's (a swapped or partial set).
      download.DownloadError: with path "", no network (the line names the URL to
        fetch and the path to put it at) or a file that fails its SHA-256.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= SOURCE_SIZE:
        raise ValueError(f"size must be an int in [1, {SOURCE_SIZE}]; got {size!r}")
    path = download.fetch(REMOTE[split]) if path == "" else os.fspath(path)
    paper, names, source = _read_paper(path, split)
    if complete:
        _check_counts(split, len(paper), names, source)
    images = _resize(paper, size)
    return (images, names) if with_names else images


def lake_runs(path, size: int = 28) -> LakeRuns:
    """Reads all_runs.zip as it is (no unpacking): runNN/{training,test}/*.png, class_labels.txt.

    `path` is the zip, or `DOWNLOAD` for the copy in the data cache, downloaded on first
    use (raising `download.DownloadError` as `load_omniglot` does for path "").
    """
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= SOURCE_SIZE:
        raise ValueError(f"size must be an int in [1, {SOURCE_SIZE}]; got {size!r}")
    path = download.fetch(REMOTE["lake_runs"]) if path == DOWNLOAD else os.fspath(path)
    archive = _open_zip(path)
    with archive:
        support, query, answers = [], [], []
        for run in range(1, 21):
            folder = f"run{run:02d}/"
            support.append([_png(archive, f"{folder}training/class{c:02d}.png", path)
                            for c in range(1, 21)])
            query.append([_png(archive, f"{folder}test/item{q:02d}.png", path)
                          for q in range(1, 21)])
            answers.append(_answers(archive, folder, path))
    return LakeRuns(_resize(np.array(support), size), _resize(np.array(query), size),
                    np.array(answers, np.int64))


def class_pools(num_val: int = 164, seed: int = 0,
                num_classes: int = NUM_CLASSES["background"]) -> ClassPools:
    """Random disjoint training / validation pools of background class indices.

    The evaluation set is never drawn from: both pools index the background
    array (global ids `global_ids('background', pool)` are all < 964).
    """
    if not 0 < num_val < num_classes:
        raise ValueError(f"num_val must lie in (0, {num_classes}); got {num_val}")
    order = np.random.default_rng(seed).permutation(num_classes)
    return ClassPools(np.sort(order[num_val:]), np.sort(order[:num_val]))


def global_ids(split: str, classes) -> np.ndarray:
    """Global class ids over both sets: background c -> c, evaluation c -> 964 + c."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    classes = np.asarray(classes, np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES[split]):
        raise ValueError(f"{split} class indices must lie in [0, {NUM_CLASSES[split]})")
    return classes + (0 if split == "background" else NUM_CLASSES["background"])


def with_rotations(images: np.ndarray) -> np.ndarray:
    """Rotation augmentation: `[C, D, s, s, 1]` -> `[4C, D, s, s, 1]`.

    Class k C + c is class c rotated by k x 90 degrees (k = 0..3), a new class
    (Santoro et al., 2016; Vinyals et al., 2016). For training pools only.
    """
    return np.concatenate([np.rot90(images, k, axes=(2, 3)) for k in range(4)], axis=0)


def fewshot_split(path, split: str, *, size: int = 28, num_val: int = 164, pool_seed: int = 0,
                  rotations: bool = False, complete: bool = True) -> fewshot.FewShotSplit:
    """One few-shot split for `fewshot.EpisodeSampler`: uint8 images `[N, size, size, 1]`.

    'train' and 'val' are the two `class_pools(num_val, pool_seed)` of the
    background set ('train' with `rotations`: 4 x its classes, `with_rotations`);
    'test' is the whole evaluation set. Images are round(255 ink); labels
    c * 20 + d -> c (class-major); mean / std = `STATS`. `path` ("" = the data cache)
    and `complete` as in `load_omniglot`.

    Raises:
      ValueError: an unknown split, or rotations for 'val' / 'test' (the
        augmentation is for training only).
      OmniglotFileError: as `load_omniglot`; a background set of at most
        `num_val` characters (none left for training).
    """
    if split not in FEWSHOT_SPLITS:
        raise ValueError(f"split must be one of {FEWSHOT_SPLITS}; got {split!r}")
    if rotations and split != "train":
        raise ValueError(f"rotations=True is a training option; got split={split!r}")
    images = load_omniglot(path, "evaluation" if split == "test" else "background", size,
                           complete=complete)
    if split != "test":
        if not 0 < num_val < len(images):
            raise OmniglotFileError(path, f"the background set holds {len(images)} characters: "
                                    f"too few for {num_val} validation characters (num_val) "
                                    "and at least one for training.")
        pools = class_pools(num_val, pool_seed, num_classes=len(images))
        images = images[pools.train if split == "train" else pools.val]
    if rotations:
        images = with_rotations(images)
    labels = np.repeat(np.arange(len(images), dtype=np.int64), images.shape[1])
    return fewshot.FewShotSplit(_to_uint8(images.reshape((-1,) + images.shape[2:])), labels,
                                *STATS)


def lake_episodes(runs: LakeRuns) -> fewshot.Episodes:
    """Lake's runs as 20 episodes (20-way 1-shot, 20 queries), normalised as `fewshot_split`.

    support `[20, 20, s, s, 1]` with labels 0..19 (classNN -> NN - 1), query
    `[20, 20, s, s, 1]` with labels `runs.answers`. Error rate in % = 100 x
    (1 - mean query accuracy over the 20 episodes).
    """
    mean, std = (np.float32(255.0 * v[0]) for v in STATS)
    normalize = lambda images: (_to_uint8(images).astype(np.float32) - mean) / std
    support_labels = np.tile(np.arange(runs.support.shape[1], dtype=np.int32),
                             (runs.support.shape[0], 1))
    return fewshot.Episodes(normalize(runs.support), support_labels, normalize(runs.query),
                            runs.answers.astype(np.int32))


# ---------------------------------------------------------------- resizing


def _to_uint8(ink: np.ndarray) -> np.ndarray:
    """float ink in [0, 1] -> uint8 round(255 ink) (the few-shot splits' storage)."""
    return np.rint(ink * np.float32(255.0)).astype(np.uint8)



def area_matrix(size: int, source: int = SOURCE_SIZE) -> np.ndarray:
    """A `[size, source]` float64: A_ik = |[k, k+1) n [i s, (i+1) s)| / s, s = source / size."""
    edges = np.arange(size + 1) * (source / size)
    left = np.maximum(edges[:-1, None], np.arange(source)[None, :])
    right = np.minimum(edges[1:, None], np.arange(source)[None, :] + 1)
    return np.clip(right - left, 0.0, None) / (source / size)


def _resize(paper: np.ndarray, size: int) -> np.ndarray:
    """bool paper `[..., 105, 105]` (True = paper) -> float32 ink `[..., size, size, 1]`."""
    lead = paper.shape[:-2]
    flat = paper.reshape((-1,) + paper.shape[-2:])
    if size == SOURCE_SIZE:                       # A is the identity
        return (~flat).astype(np.float32).reshape(lead + (size, size, 1))
    matrix = area_matrix(size).astype(np.float32)
    transposed = np.ascontiguousarray(matrix.T)   # a strided operand leaves BLAS (10x slower)
    out = np.empty((flat.shape[0], size, size), np.float32)
    step = _CHUNK * DRAWERS
    for start in range(0, flat.shape[0], step):   # chunks bound memory, not a per-task loop
        ink = 1.0 - flat[start:start + step].astype(np.float32)
        out[start:start + step] = (matrix @ ink) @ transposed
    np.clip(out, 0.0, 1.0, out=out)               # float32 rounding of the row sums
    return out.reshape(lead + (size, size, 1))


# ---------------------------------------------------------------- layouts


def _check_counts(split: str, classes: int, names, source: str) -> None:
    """Refuses a set whose character (and, given `names`, alphabet) counts are not `split`'s."""
    alphabets = None if names is None else len({name.split("/")[0] for name in names})
    counts = {s: (NUM_CLASSES[s], None if names is None else NUM_ALPHABETS[s]) for s in SPLITS}
    if (classes, alphabets) == counts[split]:
        return
    other = SPLITS[1 - SPLITS.index(split)]
    hint = (f"these are the {other} set's counts: are images_background and "
            "images_evaluation swapped?" if (classes, alphabets) == counts[other]
            else "a partial or foreign set.")
    found = f"{classes} characters" + ("" if names is None else f" of {alphabets} alphabets")
    raise OmniglotFileError(source, f"holds {found}; the {split} set has "
                            f"{NUM_CLASSES[split]} characters of {NUM_ALPHABETS[split]} "
                            f"alphabets: {hint}")


def _read_paper(path: str, split: str):
    """bool paper `[C, 20, 105, 105]`, class names (or None) and the file or folder read."""
    if not os.path.exists(path):
        raise OmniglotFileError(path, "no such file or directory.")
    if os.path.isfile(path):
        other = SPLITS[1 - SPLITS.index(split)]
        if other in os.path.basename(path):
            raise OmniglotFileError(path, f"this is the {other} set's file; split={split!r} "
                                    f"asks for images_{split}.*")
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith(b"PK"):
            raise OmniglotFileError(path, f"not an npz or zip file (starts with {head!r}); "
                                    "expected images_<split>.npz or images_<split>.zip.")
        if _is_npz(path):
            return _read_npz(path, split), None, path
        with _open_zip(path) as archive:
            return (*_read_tree(_zip_entries(archive, path), path), path)
    for name in (f"images_{split}.npz", f"images_{split}.zip", f"images_{split}"):
        candidate = os.path.join(path, name)
        if os.path.exists(candidate):
            return _read_paper(candidate, split)
    version_dir = _tfds_version_dir(path)
    if version_dir is not None:
        return (*_read_tfds(version_dir, split), version_dir)
    entries = _folder_entries(path)
    if entries:
        return (*_read_tree(entries, path), path)
    raise OmniglotFileError(
        path, f"a folder without Omniglot data: expected images_{split}.npz, "
        f"images_{split}.zip, images_{split}/ (Alphabet/characterNN/XXXX_YY.png), "
        "a TFDS omniglot/<version>/ folder, or the Alphabet folders themselves.")


def _is_npz(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".npy") for name in archive.namelist())
    except zipfile.BadZipFile as error:
        raise OmniglotFileError(path, f"truncated or corrupted zip/npz ({error}).") from None


def _read_npz(path: str, split: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise OmniglotFileError(path, f"no 'images' array; found {archive.files}; "
                                        "expected images bool [C, 20, 105, 105].")
            paper = archive["images"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise OmniglotFileError(path, f"truncated or corrupted npz ({error}).") from None
    expected = (DRAWERS, SOURCE_SIZE, SOURCE_SIZE)
    if paper.dtype != bool or paper.ndim != 4 or paper.shape[1:] != expected:
        raise OmniglotFileError(path, f"'images' has shape {paper.shape} and dtype "
                                f"{paper.dtype}; expected bool [C, 20, 105, 105] "
                                f"(C = {NUM_CLASSES[split]} for the {split} set).")
    return paper


def _zip_entries(archive: zipfile.ZipFile, path: str) -> dict:
    """{(alphabet, character): {drawer: loader}} of a zip's PNGs."""
    entries = {}
    for name in archive.namelist():
        match = _PNG_PATH.search(name)
        if match:
            alphabet, character, _, drawer = match.groups()
            entries.setdefault((alphabet, int(character)), {})[int(drawer)] = (
                lambda name=name: _png(archive, name, path))
    if not entries:
        raise OmniglotFileError(path, "no Alphabet/characterNN/XXXX_YY.png images in the "
                                "zip; expected images_background.zip or images_evaluation.zip.")
    return entries


def _folder_entries(path: str) -> dict:
    entries = {}
    for file in glob.glob(os.path.join(path, "**", "character*", "*_*.png"), recursive=True):
        match = _PNG_PATH.search(file.replace(os.sep, "/"))
        if match:
            alphabet, character, _, drawer = match.groups()
            entries.setdefault((alphabet, int(character)), {})[int(drawer)] = (
                lambda file=file: _decode(_read_bytes(file), file))
    return entries


def _read_bytes(file: str) -> bytes:
    with open(file, "rb") as f:
        return f.read()


def _read_tree(entries: dict, path: str):
    """Classes sorted by (alphabet, character), drawings by drawer number."""
    keys = sorted(entries)
    for alphabet, character in keys:
        drawers = sorted(entries[(alphabet, character)])
        if len(drawers) != DRAWERS:
            raise OmniglotFileError(path, f"{alphabet}/character{character:02d} has "
                                    f"{len(drawers)} drawings; expected {DRAWERS}.")
    paper = np.array([[entries[key][d]() for d in sorted(entries[key])] for key in keys])
    return paper, tuple(f"{a}/character{c:02d}" for a, c in keys)


def _open_zip(path: str) -> zipfile.ZipFile:
    if not os.path.isfile(path):
        raise OmniglotFileError(path, "a directory, not a zip file." if os.path.isdir(path)
                                else "no such file.")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise OmniglotFileError(path, f"not a zip file or truncated ({error}).") from None


def _png(archive: zipfile.ZipFile, name: str, path: str) -> np.ndarray:
    try:
        data = archive.read(name)
    except KeyError:
        raise OmniglotFileError(path, f"no member {name!r} in the zip.") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise OmniglotFileError(path, f"{name!r} is unreadable: truncated or corrupted "
                                f"({error}).") from None
    return _decode(data, f"{path}:{name}")


def _decode(data: bytes, where: str) -> np.ndarray:
    """PNG bytes -> bool paper `[105, 105]` (True = white paper)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise OmniglotFileError(where, f"not a readable PNG ({error}).") from None
    if image.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise OmniglotFileError(where, f"image of size {image.size}; expected 105 x 105.")
    if image.mode == "1":
        return np.array(image, bool)
    return np.array(image.convert("L")) >= 128


def _answers(archive: zipfile.ZipFile, folder: str, path: str) -> list:
    """class_labels.txt, 'test/itemNN.png training/classMM.png' a line -> MM - 1 for NN = 1..20."""
    try:
        text = archive.read(folder + "class_labels.txt").decode()
    except KeyError:
        raise OmniglotFileError(path, f"no {folder}class_labels.txt in the zip; expected "
                                "Lake's all_runs.zip.") from None
    answers = {}
    for line in text.split("\n"):
        if line.strip():
            match = re.fullmatch(r"\s*\S*item(\d+)\.png\s+\S*class(\d+)\.png\s*", line)
            if match is None:
                raise OmniglotFileError(path, f"{folder}class_labels.txt: cannot read line "
                                        f"{line!r}; expected 'test/itemNN.png "
                                        "training/classMM.png'.")
            answers[int(match.group(1))] = int(match.group(2)) - 1
    if sorted(answers) != list(range(1, 21)) or not all(0 <= a < 20 for a in answers.values()):
        raise OmniglotFileError(path, f"{folder}class_labels.txt must give a class 01..20 "
                                f"for each of item01..item20; got {answers}.")
    return [answers[q] for q in range(1, 21)]


# ---------------------------------------------------------------- TFDS


def _tfds_version_dir(path: str) -> Optional[str]:
    """The folder holding omniglot's dataset_info.json: path, path/omniglot/<v>, path/<v>."""
    for pattern in ("", os.path.join("omniglot", "*"), "*"):
        for info in sorted(glob.glob(os.path.join(path, pattern, "dataset_info.json")))[::-1]:
            with open(info) as f:
                if json.load(f).get("name") == "omniglot":
                    return os.path.dirname(info)
    return None


def _read_tfds(version_dir: str, split: str):
    """A prepared TFDS omniglot folder: records grouped by (alphabet, alphabet_char_id)."""
    shards = sorted(glob.glob(os.path.join(
        version_dir, f"omniglot-{_TFDS_SPLIT[split]}.tfrecord-*")))
    if not shards:
        raise OmniglotFileError(version_dir, f"no omniglot-{_TFDS_SPLIT[split]}.tfrecord-* "
                                f"shards (the {split} set is TFDS's '{_TFDS_SPLIT[split]}').")
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "alphabet": tf.io.FixedLenFeature([], tf.int64),
            "alphabet_char_id": tf.io.FixedLenFeature([], tf.int64)}
    alphabets, characters, pngs = [], [], []
    try:
        for batch in tf.data.TFRecordDataset(shards).batch(4096).map(
                lambda records: tf.io.parse_example(records, spec)):
            alphabets.append(batch["alphabet"].numpy())
            characters.append(batch["alphabet_char_id"].numpy())
            pngs.extend(batch["image"].numpy())
    except tf.errors.OpError as error:
        raise OmniglotFileError(version_dir, f"TFDS records are unreadable or not omniglot "
                                f"({type(error).__name__}: {error.message}).") from None
    names_file = os.path.join(version_dir, "alphabet.labels.txt")
    alphabet_names = None
    if os.path.exists(names_file):
        with open(names_file) as f:
            alphabet_names = f.read().split()
    entries = {}
    for alphabet, character, png in zip(np.concatenate(alphabets), np.concatenate(characters),
                                        pngs):
        name = alphabet_names[alphabet] if alphabet_names else f"alphabet{alphabet:02d}"
        drawings = entries.setdefault((name, int(character) + 1), {})
        drawings[len(drawings)] = lambda png=png: _decode(png, version_dir)
    return _read_tree(entries, version_dir)
