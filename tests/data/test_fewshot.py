"""Few-shot data: episode sampling, the procedural set, and loaders on small files written here."""

import os
import pickle
import struct

import numpy as np
import pytest

from sdis_tf.data import fewshot


def _split(num_classes=7, per_class=9, side=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    images = rng.integers(0, 256, (len(labels), side, side, 3), dtype=np.uint8)
    order = rng.permutation(len(labels))  # classes interleaved, as in the real files
    return fewshot.FewShotSplit(images[order], labels[order], (0.5,) * 3, (0.25,) * 3)


# ------------------------------------------------------------------ episodes


def test_episodes_shapes_labels_and_distinct_images():
    split = _split()
    sampler = fewshot.EpisodeSampler(split, ways=5, shots=3, queries=4, seed=1)
    support, query = sampler.indices(0, num_episodes=6)
    assert support.shape == (6, 15) and query.shape == (6, 20)
    episodes = sampler.sample(0, num_episodes=6)
    assert episodes.support.shape == (6, 15, 8, 8, 3) and episodes.query.shape == (6, 20, 8, 8, 3)
    for t in range(6):
        # shots + queries distinct images per class, no image in both sets
        assert len(set(support[t]) | set(query[t])) == 35
        classes = split.labels[np.concatenate([support[t], query[t]])]
        assert len(set(classes)) == 5
        assert all(np.sum(split.labels[support[t]] == c) == 3 for c in set(classes))
        # labels 0..4, shots per label in the support, queries per label in the query set
        assert sorted(np.bincount(episodes.support_labels[t])) == [3] * 5
        assert sorted(np.bincount(episodes.query_labels[t])) == [4] * 5


def test_sample_labels_match_images():
    split = _split(side=4)
    sampler = fewshot.EpisodeSampler(split, ways=4, shots=2, queries=3, seed=3)
    episodes = sampler.sample(5, num_episodes=3)
    # Undo the normalisation and find each image's class in the split: the
    # label of an episode image must be a function of its class.
    flat = split.images.reshape(len(split.images), -1).astype(np.float32)
    for images, labels in ((episodes.support, episodes.support_labels),
                           (episodes.query, episodes.query_labels)):
        for t in range(3):
            raw = images[t] * 0.25 * 255 + 0.5 * 255
            index = [int(np.argmin(np.abs(flat - r.reshape(-1)).sum(1))) for r in raw]
            mapping = {}
            for label, cls in zip(labels[t], split.labels[index]):
                assert mapping.setdefault(int(cls), int(label)) == int(label)
            assert len(mapping) == 4


def test_episodes_are_reproducible_and_streams_differ():
    split = _split()
    a = fewshot.EpisodeSampler(split, 5, 2, 2, seed=0, stream=1)
    b = fewshot.EpisodeSampler(split, 5, 2, 2, seed=0, stream=1)
    c = fewshot.EpisodeSampler(split, 5, 2, 2, seed=0, stream=2)
    for x, y in zip(a.sample(3, 4), b.sample(3, 4)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.indices(3, 4)[0], c.indices(3, 4)[0])
    assert not np.array_equal(a.indices(3, 4)[0], a.indices(4, 4)[0])


def test_classes_are_drawn_uniformly():
    sampler = fewshot.EpisodeSampler(_split(num_classes=6), ways=2, shots=1, queries=1)
    support, _ = sampler.indices(0, num_episodes=3000)
    counts = np.bincount(sampler.data.labels[support].ravel(), minlength=6)
    np.testing.assert_allclose(counts / counts.sum(), 1 / 6, atol=0.015)


def test_sampler_rejects_impossible_episodes():
    with pytest.raises(ValueError, match="only 7 classes"):
        fewshot.EpisodeSampler(_split(), ways=8, shots=1, queries=1)
    with pytest.raises(ValueError, match="shots \\+ queries = 10"):
        fewshot.EpisodeSampler(_split(), ways=5, shots=5, queries=5)
    with pytest.raises(ValueError, match="ways must be an integer >= 2"):
        fewshot.EpisodeSampler(_split(), ways=1, shots=1, queries=1)


# ---------------------------------------------------------------- procedural


def test_procedural_class_split_is_a_partition():
    parts = [fewshot.procedural_classes(s) for s in fewshot.SPLITS]
    assert [len(p) for p in parts] == [64, 16, 20]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(100))


def test_procedural_factors_define_the_class_and_vary_the_nuisances():
    factors = fewshot.procedural_factors(class_id=2 * 25 + 3 * 5 + 4, num_images=50)
    assert np.all(factors[:, 4] == 2)                                   # shape
    assert np.all(np.abs(factors[:, 2] - 0.7) <= 0.04 + 1e-12)          # hue bin 3
    assert np.all(np.abs(factors[:, 3] - 1.2) <= 0.025 + 1e-12)         # scale bin 4
    assert factors[:, [0, 1]].std(0).min() > 0.2                        # nuisance hues
    assert np.all(np.abs(factors[:, 5]) <= 30) and factors[:, 5].std() > 10


def test_procedural_split_renders_labelled_images():
    split = fewshot.procedural_split("val", images_per_class=1, image_size=16)
    assert split.images.shape == (16, 16, 16, 3) and split.images.dtype == np.uint8
    np.testing.assert_array_equal(split.labels, np.arange(16))
    assert split.images.std() > 10  # not blank


# ------------------------------------------------------------------- loaders


def _write_pickle(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _py2_pickle(data: np.ndarray, labels) -> bytes:
    """A dict {'data': uint8 array, 'labels': list} pickled as Python 2 (protocol 2) does.

    Python 2 stores the array bytes as a `str` (BINSTRING), which Python 3
    cannot decode as ASCII: it needs encoding='latin1'.
    """
    def short(s: bytes):
        return b"U" + bytes([len(s)]) + s

    def integer(i):
        return b"J" + struct.pack("<i", i)

    out = b"\x80\x02}q\x00("
    out += short(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85q\x03"
    out += short(b"b") + b"\x87q\x04Rq\x05("
    out += b"K\x01" + b"(" + b"".join(integer(s) for s in data.shape) + b"tq\x06"
    out += b"cnumpy\ndtype\nq\x07" + short(b"u1") + b"K\x00K\x01\x87q\x08Rq\x09("
    out += b"K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0ab"
    out += b"\x89" + b"T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tq\x0bb"
    out += short(b"labels") + b"]q\x0c(" + b"".join(integer(int(v)) for v in labels) + b"e"
    out += b"u."
    return out


def _cifar_record(n=12, side=32, classes=(3, 7, 9)):
    rng = np.random.default_rng(0)
    return {"data": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
            "labels": [classes[i % len(classes)] for i in range(n)]}


def test_cifar_fs_pickle_loads_with_contiguous_labels(tmp_path):
    record = _cifar_record()
    _write_pickle(tmp_path / "CIFAR_FS_val.pickle", record)
    split = fewshot.load_split("CIFAR-FS", tmp_path, "val")
    np.testing.assert_array_equal(split.images, record["data"])
    np.testing.assert_array_equal(split.labels, [0, 1, 2] * 4)
    assert split.num_classes == 3


def test_python2_pickle_needs_and_gets_latin1(tmp_path):
    data = np.arange(2 * 84 * 84 * 3, dtype=np.uint64).astype(np.uint8).reshape(2, 84, 84, 3)
    path = tmp_path / "miniImageNet_category_split_test.pickle"
    path.write_bytes(_py2_pickle(data, [5, 9]))
    with open(path, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)  # what a plain Python 3 load does with such files
    split = fewshot.load_split("miniImageNet", tmp_path, "test")
    np.testing.assert_array_equal(split.images, data)
    np.testing.assert_array_equal(split.labels, [0, 1])


def test_html_page_saved_as_pickle_is_named(tmp_path):
    path = tmp_path / "FC100_train.pickle"
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning"
                    "</title></head></html>")
    with pytest.raises(fewshot.FewShotFileError, match="HTML page"):
        fewshot.load_split("FC100", tmp_path, "train")


def test_truncated_pickle_is_named(tmp_path):
    path = tmp_path / "CIFAR_FS_train.pickle"
    _write_pickle(path, _cifar_record())
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(fewshot.FewShotFileError, match="truncated or corrupt"):
        fewshot.load_split("CIFAR-FS", tmp_path, "train")


def test_truncated_python2_pickle_is_named(tmp_path):
    data = np.zeros((1, 84, 84, 3), np.uint8) + 200
    path = tmp_path / "miniImageNet_category_split_val.pickle"
    path.write_bytes(_py2_pickle(data, [1])[:3000])
    with pytest.raises(fewshot.FewShotFileError, match="truncated or corrupt"):
        fewshot.load_split("miniImageNet", tmp_path, "val")


def test_wrong_shapes_and_keys_are_named(tmp_path):
    _write_pickle(tmp_path / "CIFAR_FS_test.pickle", _cifar_record(side=84))
    with pytest.raises(fewshot.FewShotFileError, match=r"expected \[N, 32, 32, 3\]"):
        fewshot.load_split("CIFAR-FS", tmp_path, "test")
    record = _cifar_record()
    record["labels"] = record["labels"][:-1]
    _write_pickle(tmp_path / "CIFAR_FS_val.pickle", record)
    with pytest.raises(fewshot.FewShotFileError, match="one per image"):
        fewshot.load_split("CIFAR-FS", tmp_path, "val")
    _write_pickle(tmp_path / "CIFAR_FS_train.pickle", {"images": record["data"]})
    with pytest.raises(fewshot.FewShotFileError, match="key 'data'"):
        fewshot.load_split("CIFAR-FS", tmp_path, "train")


def test_missing_empty_and_zipped_files_are_named(tmp_path):
    with pytest.raises(fewshot.FewShotFileError, match="needs FC100_val.pickle"):
        fewshot.load_split("FC100", tmp_path, "val")
    (tmp_path / "FC100_test.pickle").write_bytes(b"")
    with pytest.raises(fewshot.FewShotFileError, match="empty"):
        fewshot.load_split("FC100", tmp_path, "test")
    (tmp_path / "FC100_train.pickle").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(fewshot.FewShotFileError, match="zip archive"):
        fewshot.load_split("FC100", tmp_path, "train")
    with pytest.raises(ValueError, match="dataset must be one of"):
        fewshot.load_split("Omniglot", tmp_path, "train")


def test_tiered_imagenet_npz_and_labels(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    np.savez(tmp_path / "val_images.npz", images=images)
    _write_pickle(tmp_path / "val_labels.pkl", {"labels": np.array([4, 4, 2, 2, 8, 8])},
                  protocol=2)
    split = fewshot.load_split("tieredImageNet", tmp_path, "val")
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, [1, 1, 0, 0, 2, 2])
    # a truncated archive
    data = (tmp_path / "val_images.npz").read_bytes()
    (tmp_path / "val_images.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(fewshot.FewShotFileError, match="truncated or corrupt"):
        fewshot.load_split("tieredImageNet", tmp_path, "val")
    os.remove(tmp_path / "val_labels.pkl")
    with pytest.raises(fewshot.FewShotFileError, match="needs val_images.npz, val_labels.pkl"):
        fewshot.load_split("tieredImageNet", tmp_path, "val")
