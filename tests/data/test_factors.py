"""Tests of sdis_tf/data/factors.py on small fake files in every layout."""

import logging

import h5py
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.data import factors, latents, pipeline, shapes3d

RNG = np.random.default_rng(0)


def _grid(*axes):
    """All rows of the product of `axes`, last axis fastest, `[prod, K]` float64."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.float64)


def _dsprites(path, rows=None):
    """A small dSprites npz: colour constant, shape 1..3, scale, orientation, x, y."""
    values = _grid([1.0], [1.0, 2.0, 3.0], [0.5, 1.0], np.linspace(0, 2 * np.pi, 3),
                   [0.0, 0.5, 1.0], [0.0, 1.0])
    classes = np.stack([np.unique(values[:, k], return_inverse=True)[1]
                        for k in range(6)], axis=1)
    imgs = RNG.integers(0, 2, (len(values), 8, 8), dtype=np.uint8)
    rows = slice(None) if rows is None else rows
    metadata = {"latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
                "latents_sizes": np.array([1, 3, 2, 3, 3, 2]), "title": "dSprites"}
    np.savez_compressed(path, imgs=imgs[rows], latents_values=values[rows],
                        latents_classes=classes[rows], metadata=np.array(metadata, object))
    return imgs[rows], values[rows]


def test_dsprites_npz_drops_colour_and_keeps_binary_images(tmp_path, caplog):
    imgs, values = _dsprites(tmp_path / "dsprites.npz")
    caplog.set_level(logging.INFO, logger="absl")  # absl sets its own level once flags are parsed
    data = factors.load_factor_dataset(tmp_path / "dsprites.npz")
    assert "dropping constant factor(s) color" in caplog.text
    assert data.layout == "dsprites"
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.dropped == ("color",)
    np.testing.assert_array_equal(data.factors, values[:, 1:])
    assert data.image_shape == (8, 8, 1) and len(data.images) == len(values)
    batch = data.images[np.array([[5, 0], [5, 107]])]
    assert batch.dtype == np.float32 and batch.shape == (2, 2, 8, 8, 1)
    np.testing.assert_array_equal(batch[..., 0], imgs[[[5, 0], [5, 107]]])   # 0/1 kept
    np.testing.assert_array_equal(data.images[-1][..., 0], imgs[-1])
    assert data.grid_sizes == (3, 2, 3, 3, 2) and data.complete_grid
    np.testing.assert_allclose(data.grid[2], np.linspace(0, 2 * np.pi, 3))


def test_dsprites_subset_is_an_incomplete_grid(tmp_path):
    keep = np.sort(RNG.choice(108, 40, replace=False))
    _, values = _dsprites(tmp_path / "subset.npz", rows=keep)
    data = factors.load_factor_dataset(tmp_path / "subset.npz")
    assert len(data) == 40 and not data.complete_grid
    for k in range(5):
        np.testing.assert_array_equal(data.grid[k], np.unique(values[:, k + 1]))
        np.testing.assert_array_equal(data.grid[k][data.levels[:, k]], data.factors[:, k])


def test_plain_npz_and_h5_with_names(tmp_path):
    images = RNG.integers(0, 256, (12, 5, 6, 3), dtype=np.uint8)
    values = _grid([0.0, 1.0, 2.0], [-1.0, 1.0], [10.0, 20.0])
    names = np.array(["a", "b", "c"])
    np.savez(tmp_path / "plain.npz", images=images, factors=values, factor_names=names)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["images"] = images
        f["factors"] = values
        f["factor_names"] = names.astype("S")
    for name in ("plain.npz", "plain.h5"):
        data = factors.load_factor_dataset(tmp_path / name)
        assert data.layout == "plain" and data.factor_names == ("a", "b", "c")
        assert data.complete_grid and data.grid_sizes == (3, 2, 2)
        np.testing.assert_array_equal(data.factors, values)
        np.testing.assert_allclose(data.images[3:7], images[3:7] / 255.0, rtol=1e-6)
        np.testing.assert_allclose(data.images[[11, 0, 11]], images[[11, 0, 11]] / 255.0,
                                   rtol=1e-6)
        as_tf = tf.function(data.images_tf)(tf.constant([[2, 9]]))
        np.testing.assert_allclose(as_tf.numpy(), images[[[2, 9]]] / 255.0, rtol=1e-6)


def test_custom_keys_one_factor_and_float_images(tmp_path):
    pictures = RNG.random((7, 4, 4)).astype(np.float32)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["pictures"] = pictures
        f["angle"] = np.arange(7.0)
    data = factors.load_factor_dataset(tmp_path / "mine.h5", images_key="pictures",
                                       factors_key="angle", factor_names=["angle"])
    assert data.factor_names == ("angle",) and data.factors.shape == (7, 1)
    np.testing.assert_array_equal(data.images[2][..., 0], pictures[2])
    with pytest.raises(factors.FactorFileError, match="'label'.*given as factors_key"):
        factors.load_factor_dataset(tmp_path / "mine.h5", images_key="pictures",
                                    factors_key="label")


def test_h5_images_are_indexed_not_read_whole(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("images", shape=(1000, 4, 4, 1), dtype=np.uint8, chunks=(1, 4, 4, 1))
        f["images"][17] = 255
        f["factors"] = np.arange(1000.0)
    data = factors.load_factor_dataset(tmp_path / "big.h5")
    requested = []
    original = h5py.Dataset.__getitem__

    def spy(self, key, *args):
        requested.append(key)
        return original(self, key, *args)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    np.testing.assert_array_equal(data.images[[17, 3, 17]][:, 0, 0, 0], [1.0, 0.0, 1.0])
    assert len(requested) == 1 and list(requested[0]) == [3, 17]


def test_incomplete_grid_latents_and_sampler(tmp_path):
    values = _grid([0.0, 0.5, 1.0], [2.0, 3.0, 5.0])[[0, 1, 2, 4, 5, 8]]   # 6 of 9 points
    np.savez(tmp_path / "part.npz", images=np.zeros((6, 2, 2, 1), np.uint8), factors=values)
    data = factors.load_factor_dataset(tmp_path / "part.npz")
    assert not data.complete_grid
    np.testing.assert_allclose(latents.grid_gaps(data.grid), [0.5, 1.0])   # uneven: min step
    jittered = latents.make_latents(data.factors, data.grid, alpha=1.0, seed=3)
    offsets = jittered.factors - values
    assert np.all(np.abs(offsets) <= [0.25, 0.5]) and np.any(offsets != 0)
    np.testing.assert_allclose(jittered.z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(jittered.z.std(0), 1.0)
    np.testing.assert_array_equal(
        latents.make_latents(data.factors, data.grid, alpha=0.0).factors, values)
    sampler = latents.make_sampler(jittered, "harder_gauss_0.5")
    draws = sampler.sample([4, 50], tf.constant([1, 2], tf.int64)).numpy()
    assert draws.min() >= 0 and draws.max() < 6


def test_full_shapes3d_h5_goes_through_load_shapes3d(tmp_path, monkeypatch):
    n = latents.NUM_POINTS
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        images = f.create_dataset("images", shape=(n, 64, 64, 3), dtype=np.uint8,
                                  chunks=(1, 64, 64, 3), compression="gzip")
        images[n - 1] = 200
        f["labels"] = latents.grid_factors()
    calls, original = [], shapes3d.load_shapes3d
    monkeypatch.setattr(shapes3d, "load_shapes3d", lambda p: calls.append(p) or original(p))
    data = factors.load_factor_dataset(path)
    assert calls and data.layout == "shapes3d" and data.factor_names == latents.FACTOR_NAMES
    assert data.complete_grid and data.grid_sizes == latents.FACTOR_SIZES
    np.testing.assert_allclose(data.images[[n - 1, 0]][:, 0, 0], [[200 / 255] * 3, [0] * 3],
                               rtol=1e-6)
    ours = latents.make_latents(data.factors, data.grid, alpha=1.0)
    theirs = latents.make_latents(alpha=1.0)
    np.testing.assert_array_equal(ours.factors, theirs.factors)
    np.testing.assert_array_equal(ours.z, theirs.z)
    # The pipeline's image source takes the dataset as it takes a Shapes3D.
    source = pipeline.ImageSource(data)
    x = source.images(tf.constant([[n - 1]]), None)
    assert x.shape == (1, 1, 64, 64, 3)


def test_shapes3d_subset_keeps_names(tmp_path):
    rows = np.array([0, 5, 60, 479_940])   # shape index (i // 15) % 4 == 0 in all
    with h5py.File(tmp_path / "few.h5", "w") as f:
        f["images"] = np.zeros((4, 64, 64, 3), np.uint8)
        f["labels"] = latents.grid_factors(rows)
    data = factors.load_factor_dataset(tmp_path / "few.h5")
    assert data.layout == "shapes3d" and not data.complete_grid
    # shape is 0 in every row: dropped.
    assert data.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "orientation")


def test_labels_off_the_3d_shapes_grid_are_a_plain_file(tmp_path, caplog):
    """'images' + 'labels' (N, 6) name the 3D Shapes layout only when the labels take 3D
    Shapes values; a user's own labels get generic names and no layout defaults."""
    labels = latents.grid_factors(np.array([0, 5, 60, 479_940]))
    labels[:, 5] = [0.0, 45.0, 90.0, 135.0]                # an angle in degrees: off the grid
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["images"] = np.zeros((4, 8, 8, 3), np.uint8)
        f["labels"] = labels
    caplog.set_level(logging.INFO, logger="absl")
    data = factors.load_factor_dataset(tmp_path / "mine.h5")
    assert data.layout == "plain"
    assert data.factor_names == ("factor_0", "factor_1", "factor_2", "factor_3", "factor_5")
    assert ("'images' and 'labels' as in 3D Shapes, but label column 5 takes 45, not a 3D "
            "Shapes orientation") in caplog.text
    roles = pipeline.ImageSource(data).roles()            # "auto": no periods undeclared
    assert {role.kind for role in roles.task} == {"continuous"}
    assert "auto" not in roles.describe()


@pytest.mark.parametrize("names, problem", [
    (["a", "a", "b"], "(repeated: ['a']; empty at columns: none)"),
    (["a", "", "b"], "(repeated: none; empty at columns: [1])"),
    (["a", " ", "a"], "(repeated: ['a']; empty at columns: [1])"),
])
@pytest.mark.parametrize("given", ["file", "argument"])
def test_factor_names_must_be_distinct_and_non_empty(tmp_path, names, problem, given):
    path = tmp_path / "named.npz"
    values = _grid([0.0, 1.0], [2.0, 3.0], [4.0, 5.0])
    np.savez(path, images=np.zeros((8, 2, 2), np.uint8), factors=values,
             factor_names=np.array(names if given == "file" else ["x", "y", "z"]))
    with pytest.raises(factors.FactorFileError) as error:
        factors.load_factor_dataset(path, factor_names=names if given == "argument" else None)
    text = str(error.value)
    assert text.startswith(f"factor dataset {str(path)!r}: factor names {tuple(names)} must "
                           f"be distinct and non-empty {problem}")
    assert "\n" not in text


@pytest.mark.parametrize("members, message", [
    ({"pictures": np.zeros((3, 4, 4))}, r"no images: none of \['images', 'imgs'\]"),
    ({"images": np.zeros((3, 4, 4))}, r"no factors: none of \['factors', 'labels'"),
    ({"images": np.zeros((3, 4, 4)), "factors": np.zeros((4, 2))},
     r"3 images \('images'\) but 4 factor rows \('factors'\)"),
    ({"images": np.zeros((3, 4, 4)), "factors": np.array(["a", "b", "c"])},
     r"factors 'factors' are not numeric"),
    ({"images": np.zeros((3, 4, 4)), "factors": np.array([0.0, np.nan, 1.0])}, r"NaN"),
    ({"images": np.zeros((3, 4)), "factors": np.zeros(3)}, r"expected \(N, H, W\)"),
    ({"images": np.zeros((3, 4, 4)), "factors": np.ones((3, 2))}, r"every factor is constant"),
])
@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_errors_name_file_keys_found_and_expected(tmp_path, members, message, kind):
    path = tmp_path / f"bad.{kind}"
    if kind == "npz":
        np.savez(path, **members)
    else:
        with h5py.File(path, "w") as f:
            for key, value in members.items():
                f[key] = value.astype("S") if value.dtype.kind == "U" else value
    with pytest.raises(factors.FactorFileError, match=message) as error:
        factors.load_factor_dataset(path)
    text = str(error.value)
    assert str(path) in text and "\n" not in text
    if "constant" not in message and "NaN" not in message:
        assert "keys found: " + repr(sorted(members)[0]) in text
        assert "keys expected: 'images' + 'factors'" in text


def test_not_a_data_file(tmp_path):
    (tmp_path / "page.h5").write_text("<html>Not found</html>")
    with pytest.raises(factors.FactorFileError, match="neither an npz"):
        factors.load_factor_dataset(tmp_path / "page.h5")
    with pytest.raises(factors.FactorFileError, match="no such file"):
        factors.load_factor_dataset(tmp_path / "missing.npz")


def test_npz_uint8_binary_images_are_streamed_and_bit_packed(tmp_path, monkeypatch):
    """0/1 uint8 images are read as 0/1 and never held whole as uint8 (tracemalloc peak)."""
    import tracemalloc

    imgs = RNG.integers(0, 2, (2048, 64, 64), dtype=np.uint8)          # 8 MB as uint8
    np.savez_compressed(tmp_path / "bits.npz", images=imgs, factors=np.arange(2048) % 7)
    monkeypatch.setattr(factors, "_CHUNK_BYTES", 1 << 16)
    tracemalloc.start()
    data = factors.load_factor_dataset(tmp_path / "bits.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < imgs.nbytes / 3
    np.testing.assert_array_equal(data.images[[2047, 5, 5]][..., 0], imgs[[2047, 5, 5]])


def test_npz_uint8_images_that_turn_out_not_binary(tmp_path, monkeypatch):
    images = RNG.integers(0, 2, (40, 8, 8, 3), dtype=np.uint8)
    images[33, 2, 2, 1] = 200                   # a later chunk holds a value > 1
    np.savez(tmp_path / "grey.npz", images=images, factors=np.arange(40.0))
    np.savez(tmp_path / "bool.npz", images=images > 0, factors=np.arange(40.0))
    np.save(tmp_path / "images.npy", np.asfortranarray(images))
    with np.load(tmp_path / "grey.npz") as grey:
        members = dict(grey)
    monkeypatch.setattr(factors, "_CHUNK_BYTES", 8 * 8 * 3 * 5)   # five rows a chunk
    grey = factors.load_factor_dataset(tmp_path / "grey.npz")
    np.testing.assert_allclose(grey.images[:], members["images"] / 255.0, rtol=1e-6)
    binary = factors.load_factor_dataset(tmp_path / "bool.npz")
    np.testing.assert_array_equal(binary.images[[33, 0]], images[[33, 0]] > 0)
    np.savez(tmp_path / "fortran.npz", images=np.asfortranarray(images), factors=np.arange(40.0))
    fortran = factors.load_factor_dataset(tmp_path / "fortran.npz")
    np.testing.assert_allclose(fortran.images[[39, 33]], images[[39, 33]] / 255.0, rtol=1e-6)


def test_truncated_files(tmp_path):
    np.savez(tmp_path / "whole.npz", images=np.zeros((50, 8, 8), np.uint8),
             factors=np.arange(50.0))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(factors.FactorFileError, match="cut.npz.*not a readable npz"):
        factors.load_factor_dataset(tmp_path / "cut.npz")
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        f["images"] = np.zeros((50, 8, 8), np.uint8)
        f["factors"] = np.arange(50.0)
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:1000])
    with pytest.raises(factors.FactorFileError, match="cut.h5.*HDF5 cannot read it"):
        factors.load_factor_dataset(tmp_path / "cut.h5")


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_non_finite_images_are_refused_naming_the_first_row_read_in_chunks(tmp_path, kind,
                                                                          monkeypatch):
    images = RNG.random((40, 4, 4, 2))                   # float64, read as float32
    images[23, 1, 2, 0] = 1e39                           # finite as float64, inf as float32
    images[31, 0, 0, 1] = np.nan
    path = tmp_path / f"bad.{kind}"
    if kind == "npz":
        np.savez(path, images=images, factors=np.arange(40.0))
    else:
        with h5py.File(path, "w") as f:
            f["images"] = images
            f["factors"] = np.arange(40.0)
    monkeypatch.setattr(factors, "_CHUNK_BYTES", 5 * 4 * 4 * 2 * 8)   # five rows a chunk
    rows_read = []
    original = factors._H5Reader.read
    monkeypatch.setattr(factors._H5Reader, "read",
                        lambda self, indices: rows_read.append(len(indices))
                        or original(self, indices))
    with pytest.raises(factors.FactorFileError) as error:
        factors.load_factor_dataset(path)
    assert str(error.value) == (f"factor dataset {str(path)!r}: images 'images' hold NaN or "
                                "infinite values (first in row 23; float images are read as "
                                "float32).")
    assert rows_read == ([] if kind == "npz" else [5] * 5)   # rows 0..24: stops at row 23
    images[23, 1, 2, 0] = images[31, 0, 0, 1] = 0.5
    good = tmp_path / f"good.{kind}"
    if kind == "npz":
        np.savez(good, images=images.astype(np.float32), factors=np.arange(40.0))
    else:
        with h5py.File(good, "w") as f:
            f["images"] = images.astype(np.float32)
            f["factors"] = np.arange(40.0)
    np.testing.assert_array_equal(factors.load_factor_dataset(good).images[:],
                                  images.astype(np.float32))
