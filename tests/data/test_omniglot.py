"""Tests of sdis_tf/data/omniglot.py: small fakes for every layout and for the download, and
the real files (images_{background,evaluation}.npz, all_runs.zip) in the `omniglot` folder of
the local real-data copies (the `real_data` fixture: skipped when $SDIS_TF_TEST_DATA is unset).
"""

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.spatial import cKDTree

from sdis_tf.config_files import load_config
from sdis_tf.data import download, fewshot, omniglot
from sdis_tf.data.errors import DataFileError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Fake tree: (alphabet, character number) of the first six classes, in sorted order.
TREE = [("Alpha", 1), ("Alpha", 2), ("Alpha", 10), ("Beta_(x)", 1), ("Beta_(x)", 3),
        ("Gamma", 7)]


def _digest(paper):
    return hashlib.sha1(np.packbits(paper)).digest()


def _png(paper, mode="1"):
    buffer = io.BytesIO()
    image = Image.fromarray(paper)
    (image if mode == "1" else image.convert(mode)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def real_root(real_data):
    """The folder of the real Omniglot files."""
    return real_data / "omniglot"


@pytest.fixture(scope="module")
def real(real_root):
    """Real raw npz arrays and their 28x28 loads, read once per module."""
    raw = {split: np.load(real_root / f"images_{split}.npz")["images"]
           for split in omniglot.SPLITS}
    loaded = {split: omniglot.load_omniglot(real_root, split) for split in omniglot.SPLITS}
    return raw, loaded


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """bool paper [6, 20, 105, 105] of six random characters (~8% ink) and their npz."""
    paper = np.random.default_rng(0).random((6, 20, 105, 105)) > 0.08
    path = tmp_path_factory.mktemp("npz") / "images_background.npz"
    np.savez_compressed(path, images=paper, labels=np.repeat(np.arange(6)[:, None], 20, 1))
    return paper, path


def test_real_class_counts_polarity_and_area_mean(real):
    raw, loaded = real
    for split, classes in (("background", 964), ("evaluation", 659)):
        images = loaded[split]
        assert images.shape == (classes, 20, 28, 28, 1) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        # Ink = 1: ink covers ~8% of the page; the page border is paper.
        assert 0.05 < images.mean() < 0.12
        assert images[:, :, 0, :].mean() < 0.01
        # Area averaging keeps each drawing's mean: mean ink = fraction of False pixels.
        np.testing.assert_allclose(images.mean(axis=(2, 3, 4)),
                                   (~raw[split]).mean(axis=(2, 3), dtype=np.float64),
                                   atol=2e-6)


def test_real_pools_hold_no_evaluation_class(real):
    raw, _ = real
    pools = omniglot.class_pools(num_val=164, seed=0)
    assert len(pools.train) == 800 and len(pools.val) == 164
    assert not set(pools.train) & set(pools.val)
    assert set(pools.train) | set(pools.val) == set(range(964))
    evaluation_ids = set(omniglot.global_ids("evaluation", np.arange(659)))
    for pool in pools:
        assert not set(omniglot.global_ids("background", pool)) & evaluation_ids
    # And no drawing of either pool is a drawing of the evaluation set.
    evaluation = {_digest(p) for p in raw["evaluation"].reshape(-1, 105, 105)}
    pooled = raw["background"][np.concatenate(pools)].reshape(-1, 105, 105)
    assert not {_digest(p) for p in pooled} & evaluation


def test_real_lake_runs_match_class_labels_and_come_from_evaluation(real, real_root):
    raw, _ = real
    runs = omniglot.lake_runs(real_root / "all_runs.zip", size=105)
    assert runs.support.shape == runs.query.shape == (20, 20, 105, 105, 1)
    with zipfile.ZipFile(real_root / "all_runs.zip") as archive:
        for r in range(20):
            lines = archive.read(f"run{r + 1:02d}/class_labels.txt").decode().split()
            expected = [int(lines[i + 1][-6:-4]) - 1 for i in range(0, 40, 2)]
            assert [int(lines[i][-6:-4]) for i in range(0, 40, 2)] == list(range(1, 21))
            np.testing.assert_array_equal(runs.answers[r], expected)
    # At 105 pixels the images are exact: each is an evaluation drawing, none a background one.
    evaluation = {_digest(p) for p in raw["evaluation"].reshape(-1, 105, 105)}
    background = {_digest(p) for p in raw["background"].reshape(-1, 105, 105)}
    drawn = {_digest(p < 0.5) for p in np.concatenate([runs.support, runs.query])[..., 0]
             .reshape(-1, 105, 105)}
    assert drawn <= evaluation and not drawn & background


def test_area_averaging_against_block_means_and_pil_box(six):
    paper, path = six
    ink = (~paper[:2]).astype(np.float64)
    load = lambda size: omniglot.load_omniglot(path, size=size, complete=False)
    np.testing.assert_array_equal(load(105)[:2, ..., 0], ink)
    blocks = ink.reshape(2, 20, 35, 3, 35, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(load(35)[:2, ..., 0], blocks, atol=1e-6)
    images = load(28)
    for c, d in ((0, 0), (1, 7)):
        # Exact area averaging: each pixel split into 28 x 28 sub-pixels, 105 x 105 blocks averaged.
        fine = np.kron(ink[c, d], np.ones((28, 28)))
        exact = fine.reshape(28, 105, 28, 105).mean(axis=(1, 3))
        np.testing.assert_allclose(images[c, d, ..., 0], exact, atol=1e-6)
        area = tf.image.resize(ink[c, d, None, :, :, None], (28, 28), method="area")
        np.testing.assert_allclose(images[c, d, ..., 0], area.numpy()[0, ..., 0], atol=1e-6)
    np.testing.assert_allclose(omniglot.area_matrix(28).sum(axis=1), 1.0)


def _write_tree(paper, root=None, archive=None, split="background"):
    """The original layout: images_<split>/Alphabet/characterNN/XXXX_YY.png."""
    for c, (alphabet, character) in enumerate(TREE):
        for d in range(20):
            name = (f"images_{split}/{alphabet}/character{character:02d}/"
                    f"{c + 1:04d}_{d + 1:02d}.png")
            data = _png(paper[c, d], mode="L" if d == 3 else "1")
            if archive is not None:
                archive.writestr(name, data)
            else:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)


def test_zip_folder_and_npz_give_the_same_arrays(six, tmp_path):
    paper, npz = six
    zip_path = tmp_path / "zip" / "images_background.zip"
    zip_path.parent.mkdir()
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("images_background/", b"")
        for d in reversed(range(20)):     # drawers out of order in the archive
            archive.writestr(f"images_background/Alpha/character01/0001_{d + 1:02d}.png",
                             _png(paper[0, d]))
        for c, (alphabet, character) in enumerate(TREE[1:], start=1):
            for d in range(20):
                archive.writestr(f"images_background/{alphabet}/character{character:02d}/"
                                 f"{c + 1:04d}_{d + 1:02d}.png", _png(paper[c, d]))
    _write_tree(paper, root=tmp_path / "folder")
    expected = omniglot.load_omniglot(npz, "background", complete=False)
    names = tuple(f"{a}/character{c:02d}" for a, c in TREE)
    for path in (zip_path, zip_path.parent, tmp_path / "folder",
                 tmp_path / "folder" / "images_background"):
        images, found = omniglot.load_omniglot(path, "background", with_names=True,
                                               complete=False)
        np.testing.assert_array_equal(images, expected)
        assert found == names
        with pytest.raises(omniglot.OmniglotFileError, match=(
                r"holds 6 characters of 3 alphabets; the background set has 964 characters "
                r"of 30 alphabets: a partial or foreign set.$")):
            omniglot.load_omniglot(path, "background")
    assert omniglot.load_omniglot(npz, "background", with_names=True, complete=False)[1] is None


def test_tfds_folder_has_the_same_drawings(six, tmp_path):
    paper, npz = six
    version = tmp_path / "omniglot" / "3.0.0"
    version.mkdir(parents=True)
    alphabets = ["Alpha", "Beta_(x)", "Gamma", "Zeta"]
    (version / "alphabet.labels.txt").write_text("\n".join(alphabets) + "\n")
    (version / "dataset_info.json").write_text(json.dumps({"name": "omniglot"}))
    order = np.random.default_rng(1).permutation(6 * 20)   # TFDS shuffles records
    with tf.io.TFRecordWriter(str(version / "omniglot-train.tfrecord-00000-of-00001")) as out:
        for flat in order:
            c, d = divmod(int(flat), 20)
            alphabet, character = TREE[c]
            rgb = np.repeat(paper[c, d, :, :, None].astype(np.uint8) * 255, 3, axis=2)
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_png(rgb).numpy()])),
                "alphabet": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[alphabets.index(alphabet)])),
                "alphabet_char_id": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[character - 1])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[c])),
            }
            out.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
    images, names = omniglot.load_omniglot(tmp_path, "background", size=105, with_names=True,
                                           complete=False)
    assert names == tuple(f"{a}/character{c:02d}" for a, c in TREE)
    for c in range(6):   # same drawings per class; TFDS does not keep the drawer order
        assert sorted(_digest(i < 0.5) for i in images[c, ..., 0]) == sorted(
            _digest(p) for p in paper[c])
    with pytest.raises(omniglot.OmniglotFileError, match="omniglot-test.tfrecord"):
        omniglot.load_omniglot(tmp_path, "evaluation")


def _write_lake_runs(path, seed):
    """A fake all_runs.zip; returns its paper [20 runs, support / query, 20, 105, 105] and the
    answers [20 runs, 20 queries]."""
    rng = np.random.default_rng(seed)
    paper = rng.random((20, 2, 20, 105, 105)) > 0.1
    answers = np.stack([rng.permutation(20) for _ in range(20)])
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(20):
            run = f"run{r + 1:02d}"
            lines = [f"{run}/test/item{q + 1:02d}.png "
                     f"{run}/training/class{answers[r, q] + 1:02d}.png" for q in range(20)]
            archive.writestr(f"{run}/class_labels.txt", "\r\n".join(lines[::-1]) + "\r\n")
            for i in range(20):
                archive.writestr(f"{run}/training/class{i + 1:02d}.png", _png(paper[r, 0, i]))
                archive.writestr(f"{run}/test/item{i + 1:02d}.png", _png(paper[r, 1, i]))
    return paper, answers


def test_fake_lake_runs(tmp_path):
    path = tmp_path / "all_runs.zip"
    paper, answers = _write_lake_runs(path, seed=2)
    assert omniglot.lake_runs(path).query.shape == (20, 20, 28, 28, 1)
    runs = omniglot.lake_runs(path, size=35)
    np.testing.assert_array_equal(runs.answers, answers)
    blocks = (~paper).reshape(20, 2, 20, 35, 3, 35, 3).mean(axis=(4, 6))
    np.testing.assert_allclose(runs.support[..., 0], blocks[:, 0], atol=1e-6)
    np.testing.assert_allclose(runs.query[..., 0], blocks[:, 1], atol=1e-6)
    episodes = omniglot.lake_episodes(runs)
    (mean,), (std,) = omniglot.STATS
    assert episodes.support.shape == episodes.query.shape == (20, 20, 35, 35, 1)
    np.testing.assert_array_equal(episodes.support_labels, np.tile(np.arange(20), (20, 1)))
    np.testing.assert_array_equal(episodes.query_labels, answers)
    np.testing.assert_allclose(episodes.query[..., 0] * std + mean, blocks[:, 1], atol=0.5 / 255)
    with zipfile.ZipFile(tmp_path / "partial.zip", "w") as archive:
        archive.writestr("run01/training/class01.png", _png(paper[0, 0, 0]))
    with pytest.raises(omniglot.OmniglotFileError, match="no member 'run01/training/class02"):
        omniglot.lake_runs(tmp_path / "partial.zip")


def test_pools_seeded_and_rotations():
    a, b = omniglot.class_pools(seed=3), omniglot.class_pools(seed=3)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.val, omniglot.class_pools(seed=4).val)
    assert omniglot.global_ids("evaluation", [0, 658]).tolist() == [964, 1622]
    with pytest.raises(ValueError, match="num_val"):
        omniglot.class_pools(num_val=964)
    images = np.random.default_rng(0).random((3, 2, 5, 5, 1)).astype(np.float32)
    rotated = omniglot.with_rotations(images)
    assert rotated.shape == (12, 2, 5, 5, 1)
    np.testing.assert_array_equal(rotated[2 * 3 + 1, 0, ..., 0], images[1, 0, ::-1, ::-1, 0])
    np.testing.assert_array_equal(rotated[1 * 3 + 2, 1, ..., 0], np.rot90(images[2, 1, ..., 0]))


def test_errors_name_the_file_and_what_was_expected(six, tmp_path):
    paper, npz = six
    with pytest.raises(omniglot.OmniglotFileError, match="no such file"):
        omniglot.load_omniglot(tmp_path / "nothing", "background")
    with pytest.raises(omniglot.OmniglotFileError, match="background set's file"):
        omniglot.load_omniglot(npz, "evaluation")
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(npz.read_bytes()[: os.path.getsize(npz) // 2])
    with pytest.raises(omniglot.OmniglotFileError, match="cut.npz.*truncated or corrupted"):
        omniglot.load_omniglot(truncated, "background")
    (tmp_path / "page.zip").write_text("<html>moved</html>")
    with pytest.raises(omniglot.OmniglotFileError, match="not an npz or zip"):
        omniglot.load_omniglot(tmp_path / "page.zip", "background")
    np.savez(tmp_path / "wrong.npz", images=np.ones((2, 20, 28, 28), bool))
    with pytest.raises(omniglot.OmniglotFileError, match=r"shape \(2, 20, 28, 28\).*expected "
                       r"bool \[C, 20, 105, 105\]"):
        omniglot.load_omniglot(tmp_path / "wrong.npz", "background")
    with zipfile.ZipFile(tmp_path / "short.zip", "w") as archive:
        for d in range(19):
            archive.writestr(f"A/character01/0001_{d + 1:02d}.png", _png(paper[0, d]))
    with pytest.raises(omniglot.OmniglotFileError, match="A/character01 has 19 drawings"):
        omniglot.load_omniglot(tmp_path / "short.zip", "background")
    (tmp_path / "empty").mkdir()
    with pytest.raises(omniglot.OmniglotFileError, match="expected images_background.npz"):
        omniglot.load_omniglot(tmp_path / "empty", "background")
    with pytest.raises(ValueError, match="split must be one of"):
        omniglot.load_omniglot(npz, "train")
    with pytest.raises(ValueError, match="size must be an int"):
        omniglot.load_omniglot(npz, "background", size=210)


def test_foreign_and_corrupted_files(six, tmp_path):
    paper, _ = six
    np.savez(tmp_path / "other.npz", pixels=np.zeros(3))
    with pytest.raises(omniglot.OmniglotFileError, match=r"other.npz.*no 'images' array; "
                       r"found \['pixels'\]"):
        omniglot.load_omniglot(tmp_path / "other.npz", "background")
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(omniglot.OmniglotFileError, match="notes.zip.*no Alphabet/characterNN"):
        omniglot.load_omniglot(tmp_path / "notes.zip", "background")
    with zipfile.ZipFile(tmp_path / "bad_png.zip", "w") as archive:
        for d in range(20):
            archive.writestr(f"A/character01/0001_{d + 1:02d}.png",
                             b"not a png" if d == 4 else _png(paper[0, d]))
    with pytest.raises(omniglot.OmniglotFileError,
                       match="bad_png.zip:A/character01/0001_05.png.*not a readable PNG"):
        omniglot.load_omniglot(tmp_path / "bad_png.zip", "background")
    folder = tmp_path / "small" / "A" / "character01"
    folder.mkdir(parents=True)
    for d in range(20):
        (folder / f"0001_{d + 1:02d}.png").write_bytes(_png(paper[0, d, :28, :28]))
    with pytest.raises(omniglot.OmniglotFileError, match=r"0001_\d\d.png.*size \(28, 28\); "
                       "expected 105 x 105"):
        omniglot.load_omniglot(tmp_path / "small", "background")
    (tmp_path / "runs.zip").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(omniglot.OmniglotFileError, match="runs.zip.*not a zip file"):
        omniglot.lake_runs(tmp_path / "runs.zip")
    with zipfile.ZipFile(tmp_path / "labels.zip", "w") as archive:
        for i in range(20):
            archive.writestr(f"run01/training/class{i + 1:02d}.png", _png(paper[0, i]))
            archive.writestr(f"run01/test/item{i + 1:02d}.png", _png(paper[1, i]))
        archive.writestr("run01/class_labels.txt", "item01 is class 3\n")
    with pytest.raises(omniglot.OmniglotFileError, match="class_labels.txt: cannot read line"):
        omniglot.lake_runs(tmp_path / "labels.zip")


def _modified_hausdorff(a_sets, b_sets):
    """[len(a), len(b)] directed mean nearest distances of centred ink point sets (Lake's demo)."""
    stacked = np.concatenate(a_sets)
    starts = np.cumsum([0] + [len(p) for p in a_sets[:-1]])
    out = np.empty((len(a_sets), len(b_sets)))
    for j, b in enumerate(b_sets):
        out[:, j] = np.add.reduceat(cKDTree(b).query(stacked)[0], starts)
    return out / np.array([len(p) for p in a_sets])[:, None]


def test_real_lake_runs_reproduce_the_modified_hausdorff_baseline(real_root):
    """Lake et al.'s demo_classification.py: 38.8% mean error over the 20 runs."""
    runs = omniglot.lake_runs(real_root / "all_runs.zip", size=105)
    episodes = omniglot.lake_episodes(runs)

    def points(image):
        ink = np.argwhere(image[..., 0] > 0.5).astype(np.float64)
        return ink - ink.mean(axis=0)

    errors = []
    for r in range(20):
        support = [points(x) for x in runs.support[r]]
        query = [points(x) for x in runs.query[r]]
        cost = np.maximum(_modified_hausdorff(query, support),
                          _modified_hausdorff(support, query).T)
        prediction = episodes.support_labels[r][cost.argmin(axis=1)]
        errors.append(100.0 * np.mean(prediction != episodes.query_labels[r]))
    assert abs(np.mean(errors) - 38.8) < 0.05


def test_real_fewshot_splits_are_the_background_pools_and_the_evaluation_set(real, real_root):
    _, loaded = real
    pools = omniglot.class_pools(num_val=164, seed=0)
    val = omniglot.fewshot_split(real_root, "val")
    assert val.images.shape == (164 * 20, 28, 28, 1) and val.num_classes == 164
    as_uint8 = lambda ink: np.rint(ink * np.float32(255)).astype(np.uint8).reshape(-1, 28, 28, 1)
    np.testing.assert_array_equal(val.images, as_uint8(loaded["background"][pools.val]))
    test = omniglot.fewshot_split(real_root, "test")
    assert test.num_classes == 659
    np.testing.assert_array_equal(test.images, as_uint8(loaded["evaluation"]))
    (mean,), (std,) = omniglot.STATS
    assert abs(loaded["background"].mean() - mean) < 1e-4
    assert abs(loaded["background"].std() - std) < 1e-4


def test_fewshot_splits_hold_out_evaluation_rotate_and_feed_the_episode_sampler(tmp_path):
    rng = np.random.default_rng(5)
    background = rng.random((6, 20, 105, 105)) > 0.08
    evaluation = rng.random((4, 20, 105, 105)) > 0.08
    np.savez_compressed(tmp_path / "images_background.npz", images=background)
    np.savez_compressed(tmp_path / "images_evaluation.npz", images=evaluation)
    pools = omniglot.class_pools(num_val=2, seed=1, num_classes=6)
    split = lambda name, **kw: omniglot.fewshot_split(tmp_path, name, size=105, num_val=2,
                                                      pool_seed=1, complete=False, **kw)
    ink = lambda paper: (~paper).astype(np.uint8) * 255
    train = split("train", rotations=True)
    assert train.images.shape == (4 * 4 * 20, 105, 105, 1) and train.images.dtype == np.uint8
    assert train.num_classes == 16 and train.mean == omniglot.STATS[0]
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(16), 20))
    by_class = train.images[..., 0].reshape(16, 20, 105, 105)
    np.testing.assert_array_equal(by_class[:4], ink(background[pools.train]))
    np.testing.assert_array_equal(by_class[4 * 3 + 1], np.rot90(ink(background[pools.train[1]]),
                                                                3, axes=(1, 2)))
    np.testing.assert_array_equal(split("val").images[..., 0].reshape(2, 20, 105, 105),
                                  ink(background[pools.val]))
    np.testing.assert_array_equal(split("test").images[..., 0].reshape(4, 20, 105, 105),
                                  ink(evaluation))
    evaluation_digests = {_digest(p) for p in evaluation.reshape(-1, 105, 105)}
    for name in ("train", "val"):
        pooled = {_digest(x < 128) for x in split(name).images[..., 0]}
        assert not pooled & evaluation_digests
    with pytest.raises(ValueError, match="rotations=True is a training option"):
        split("val", rotations=True)
    with pytest.raises(ValueError, match="split must be one of \\('train', 'val', 'test'\\)"):
        split("background")
    # 5-way 1-shot 2-query episodes from fewshot.EpisodeSampler, one channel.
    sampler = fewshot.EpisodeSampler(train, ways=5, shots=1, queries=2, seed=7)
    episodes = sampler.sample(3, 4)
    assert episodes.support.shape == (4, 5, 105, 105, 1)
    assert episodes.query.shape == (4, 10, 105, 105, 1)
    np.testing.assert_array_equal(episodes.query, sampler.sample(3, 4).query)
    (mean,), (std,) = omniglot.STATS
    owner = {_digest(x): c for c, drawings in enumerate(by_class) for x in drawings}
    decode = lambda x: owner[_digest(np.rint(x[..., 0] * 255 * std + 255 * mean).astype(np.uint8))]
    for t in range(4):
        support = [decode(x) for x in episodes.support[t]]
        query = [decode(x) for x in episodes.query[t]]
        assert len(set(support)) == 5
        assert [support[list(episodes.support_labels[t]).index(label)]
                for label in episodes.query_labels[t]] == query


def _swapped(root, source):
    """`root` holding the npz files of `source` under each other's names (symbolic links)."""
    root.mkdir()
    for split, other in zip(omniglot.SPLITS, omniglot.SPLITS[::-1]):
        (root / f"images_{split}.npz").symlink_to(source / f"images_{other}.npz")
    return root


def test_swapped_partial_and_too_small_sets_are_refused_by_name(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    for split, classes in (("background", 3), ("evaluation", 2)):
        np.savez(tmp_path / f"images_{split}.npz", images=rng.random((classes, 20, 105, 105)) > 0.1)
    # The counts of the whole sets, scaled down: background 3 / evaluation 2 characters.
    monkeypatch.setattr(omniglot, "NUM_CLASSES", {"background": 3, "evaluation": 2})
    assert omniglot.load_omniglot(tmp_path, "background", size=7).shape == (3, 20, 7, 7, 1)
    swapped = _swapped(tmp_path / "swapped", tmp_path)
    for split, found, expected, other in (("background", 2, 3, "evaluation"),
                                          ("evaluation", 3, 2, "background")):
        with pytest.raises(omniglot.OmniglotFileError) as error:
            omniglot.load_omniglot(swapped, split)
        assert str(error.value) == (
            f"Omniglot data at '{swapped / f'images_{split}.npz'}': holds {found} characters; "
            f"the {split} set has {expected} characters of {omniglot.NUM_ALPHABETS[split]} "
            f"alphabets: these are the {other} set's counts: are images_background and "
            "images_evaluation swapped?")
    monkeypatch.undo()
    with pytest.raises(omniglot.OmniglotFileError, match=r"images_background.npz'?: holds 3 "
                       r"characters; the background set has 964 characters of 30 alphabets: "
                       r"a partial or foreign set.$"):
        omniglot.fewshot_split(tmp_path, "val")
    with pytest.raises(omniglot.OmniglotFileError, match=rf"'{tmp_path}': the background set "
                       r"holds 3 characters: too few for 164 validation characters"):
        omniglot.fewshot_split(tmp_path, "val", complete=False)


def test_real_swapped_files_are_refused_by_name(tmp_path, real_root):
    swapped = _swapped(tmp_path / "swapped", real_root)
    with pytest.raises(omniglot.OmniglotFileError, match=(
            r"images_background.npz': holds 659 characters; the background set has 964 "
            r"characters of 30 alphabets: these are the evaluation set's counts: are "
            r"images_background and images_evaluation swapped\?$")):
        omniglot.fewshot_split(swapped, "train")


def test_missing_data_and_lake_runs_are_one_line(tmp_path):
    errors = []
    for call in (lambda: omniglot.load_omniglot(tmp_path / "none", "background"),
                 lambda: omniglot.lake_runs(tmp_path / "all_runs.zip"),
                 lambda: omniglot.lake_runs(tmp_path)):
        with pytest.raises(omniglot.OmniglotFileError) as error:
            call()
        errors.append(str(error.value))
    assert errors == [f"Omniglot data at '{tmp_path / 'none'}': no such file or directory.",
                      f"Omniglot data at '{tmp_path / 'all_runs.zip'}': no such file.",
                      f"Omniglot data at '{tmp_path}': a directory, not a zip file."]


@pytest.fixture
def published(six, tmp_path, monkeypatch):
    """`omniglot.REMOTE` served from fake official files (file:// URLs, no network) into an
    empty data cache; returns the paper of each image set."""
    paper, _ = six
    sets = {"background": paper, "evaluation": paper[:, :, ::-1]}
    folder = tmp_path / "published"
    folder.mkdir()
    for split, drawings in sets.items():
        with zipfile.ZipFile(folder / f"images_{split}.zip", "w") as archive:
            _write_tree(drawings, archive=archive, split=split)
    _write_lake_runs(folder / "all_runs.zip", seed=3)
    remote = {}
    for key, official in omniglot.REMOTE.items():
        served = folder / os.path.basename(official.name)
        remote[key] = official._replace(url=served.as_uri(),
                                        sha256=download.sha256_of(str(served)))
    monkeypatch.setattr(omniglot, "REMOTE", remote)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    return sets


def test_the_presets_default_data_downloads_once_into_the_cache(published, tmp_path,
                                                                monkeypatch):
    data = load_config(os.path.join(ROOT, "configs", "fewshot_omniglot.py")).data
    assert (data.root, data.lake_runs) == ("", omniglot.DOWNLOAD)
    ink = lambda paper: (~paper).astype(np.float32)[..., None]
    images = omniglot.load_omniglot(data.root, "background", size=105, complete=False)
    np.testing.assert_array_equal(images, ink(published["background"]))
    test = omniglot.fewshot_split(data.root, "test", size=105, complete=False)
    np.testing.assert_array_equal(test.images, 255 * ink(published["evaluation"]).reshape(
        -1, 105, 105, 1).astype(np.uint8))
    assert omniglot.lake_runs(data.lake_runs).support.shape == (20, 20, 28, 28, 1)
    cache = tmp_path / "cache" / "omniglot"
    assert sorted(os.listdir(cache)) == ["all_runs.zip", "images_background.zip",
                                         "images_evaluation.zip"]
    for name in os.listdir(cache):
        assert (cache / name).read_bytes() == (tmp_path / "published" / name).read_bytes()

    def refuse(url, timeout=None):
        raise AssertionError(f"unexpected download of {url}")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)       # later uses read the cache
    np.testing.assert_array_equal(omniglot.load_omniglot("", "background", size=105,
                                                         complete=False), images)
    omniglot.lake_runs(omniglot.DOWNLOAD)


def test_without_network_the_default_data_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))

    def offline(url, timeout=None):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    official = "https://github.com/brendenlake/omniglot/raw/master/python/"
    for load, file in ((lambda: omniglot.fewshot_split("", "val"), "images_background.zip"),
                       (lambda: omniglot.fewshot_split("", "test"), "images_evaluation.zip"),
                       (lambda: omniglot.lake_runs(omniglot.DOWNLOAD),
                        "one-shot-classification/all_runs.zip")):
        with pytest.raises(DataFileError) as error:        # the CLI's exit status 2
            load()
        path = tmp_path / "cache" / "omniglot" / os.path.basename(file)
        assert str(error.value) == (
            f"cannot download {official}{file} ([Errno 101] Network is unreachable); without "
            f"network access, fetch that file elsewhere and put it at {path}")


def test_real_lake_runs_are_the_published_file(real_root):
    assert download.sha256_of(str(real_root / "all_runs.zip")) == \
        omniglot.REMOTE["lake_runs"].sha256
