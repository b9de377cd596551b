"""Tests of sdis_tf/data/shapes3d.py and pipeline.py on small fake h5 / TFDS data."""

import io
import os
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sdis_tf.data import latents, pipeline, render, shapes3d

N = 480_000
WRITTEN = (0, 1, 17, 123_456, 300_001, N - 1)   # images present in the fake h5
FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")


def _reference_labels():
    """The 3D Shapes labels, built independently of sdis_tf (orientation fastest)."""
    hue = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    axes = [hue, hue, hue, np.linspace(0.75, 1.25, 8), [0.0, 1.0, 2.0, 3.0],
            np.linspace(-30.0, 30.0, 15)]
    return np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], axis=1)


def _fake_image(index):
    return np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _write_h5(path, labels=None, images_shape=(N, 64, 64, 3), image_key="images"):
    """A full-size 3dshapes.h5 whose unwritten image chunks cost no disk space."""
    with h5py.File(path, "w") as f:
        images = f.create_dataset(image_key, shape=images_shape, dtype=np.uint8,
                                  chunks=(1, 64, 64, 3), compression="gzip")
        for index in WRITTEN:
            if index < images_shape[0]:
                images[index] = _fake_image(index)
        f.create_dataset("labels", data=_reference_labels() if labels is None else labels)
    return path


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory):
    return _write_h5(tmp_path_factory.mktemp("shapes3d") / "3dshapes.h5")


def test_h5_loader_reads_factors_and_images(h5_path):
    data = shapes3d.load_shapes3d(h5_path)
    assert len(data) == N
    np.testing.assert_allclose(data.factors, latents.grid_factors(), atol=1e-12)
    indices = np.array([[N - 1, 17], [0, 17]])          # unsorted, repeated
    images = data.images(indices)
    assert images.shape == (2, 2, 64, 64, 3) and images.dtype == np.uint8
    for index, image in zip(indices.reshape(-1), images.reshape(-1, 64, 64, 3)):
        np.testing.assert_array_equal(image, _fake_image(index))
    as_tf = tf.function(data.images_tf)(tf.constant(indices))
    np.testing.assert_allclose(as_tf.numpy(), images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(data.images([5]), 0)    # never written: fill value
    with pytest.raises(ValueError, match="indices"):
        data.images([N])


def _expect_error(path, *phrases):
    with pytest.raises(shapes3d.Shapes3DFileError) as info:
        shapes3d.load_shapes3d(path)
    message = str(info.value)
    for phrase in phrases + (shapes3d.H5_URL, "tfds build shapes3d", "render"):
        assert phrase in message, message
    return message


def test_wrong_path_html_empty_and_other_files(tmp_path):
    _expect_error(tmp_path / "missing.h5", "no such file")
    html = tmp_path / "3dshapes.h5"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning"
                    "</title></head><body>Download anyway</body></html>")
    _expect_error(html, "HTML", "not an HDF5 file")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    _expect_error(empty, "empty")
    other = tmp_path / "other.h5"
    other.write_bytes(b"PK\x03\x04" + bytes(1000))
    _expect_error(other, "not an HDF5 file")
    _expect_error(tmp_path, "dataset_info.json")      # a directory, not TFDS


def test_truncated_and_corrupted_h5(h5_path, tmp_path):
    truncated = tmp_path / "truncated.h5"
    with open(h5_path, "rb") as source:
        truncated.write_bytes(source.read(os.path.getsize(h5_path) // 2))
    _expect_error(truncated, "truncated or corrupted")

    superblock = tmp_path / "superblock.h5"
    shutil.copy(h5_path, superblock)
    with open(superblock, "r+b") as f:
        f.seek(8)
        f.write(b"\xff" * 40)
    _expect_error(superblock, "truncated or corrupted")

    chunk = tmp_path / "chunk.h5"
    shutil.copy(h5_path, chunk)
    with h5py.File(chunk, "r") as f:
        info = f["images"].id.get_chunk_info_by_coord((N - 1, 0, 0, 0))
    with open(chunk, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\x00\xff" * (info.size // 2))
    _expect_error(chunk, "truncated or corrupted")


def test_wrong_structure_and_off_grid_factors(tmp_path):
    _expect_error(_write_h5(tmp_path / "keys.h5", image_key="imgs"), "no dataset 'images'")
    _expect_error(_write_h5(tmp_path / "shape.h5", images_shape=(10, 64, 64, 3)),
                  "shape (10, 64, 64, 3)")
    shuffled = _reference_labels()
    shuffled[[3, 4]] = shuffled[[4, 3]]
    _expect_error(_write_h5(tmp_path / "order.h5", labels=shuffled), "'orientation'", "row 3")
    scale_in_01 = _reference_labels()
    scale_in_01[:, 3] = (scale_in_01[:, 3] - 0.75) * 2       # the README's [0, 1] claim
    _expect_error(_write_h5(tmp_path / "scale.h5", labels=scale_in_01), "'scale'")


def _example_piece(key, feature):
    return tf.train.Example(features=tf.train.Features(feature={key: feature})).SerializeToString()


def _write_tfds(version_dir, levels, images, image_index):
    """A TFDS shapes3d folder: record r has class indices levels[r] [6] and the
    image images[image_index[r]] (images [K, 64, 64, 3] uint8).

    Serialised protos concatenate to their merge, so each record is the join of
    per-feature pieces (vectorised with tf.strings: fast for 480,000 records).
    """
    import tensorflow_datasets as tfds

    os.makedirs(version_dir)
    values = latents.factor_values()
    columns = []
    for k, name in enumerate(FACTORS):
        pieces = [_example_piece(f"label_{name}", tf.train.Feature(
                      int64_list=tf.train.Int64List(value=[level])))
                  + _example_piece(f"value_{name}", tf.train.Feature(
                      float_list=tf.train.FloatList(value=[value])))
                  for level, value in enumerate(values[k])]
        columns.append(tf.gather(tf.constant(pieces), levels[:, k]))
    pieces = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pieces.append(_example_piece("image", tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[buffer.getvalue()]))))
    records = tf.strings.join([tf.gather(tf.constant(pieces), image_index)] + columns)
    shard = os.path.join(version_dir, "shapes3d-train.tfrecord-00000-of-00001")
    tf.data.experimental.TFRecordWriter(shard).write(tf.data.Dataset.from_tensor_slices(records))
    split = tfds.core.SplitInfo(name="train", shard_lengths=[len(levels)], num_bytes=0)
    tfds.folder_dataset.write_metadata(data_dir=version_dir, split_infos=[split],
                                       features=tfds.builder("shapes3d").info.features,
                                       check_data=False)


def test_tfds_partial_directory(tmp_path):
    rng = np.random.default_rng(0)
    indices = rng.choice(N, size=12, replace=False)
    levels = np.stack(np.unravel_index(indices, latents.FACTOR_SIZES), axis=1)
    _write_tfds(tmp_path / "shapes3d" / "2.0.0", levels,
                np.stack([_fake_image(index) for index in indices]), np.arange(12))
    read_levels, values, encoded = shapes3d._read_tfds_records(str(tmp_path))
    np.testing.assert_array_equal(read_levels, levels)
    np.testing.assert_allclose(values, latents.grid_factors(indices), atol=1e-5)
    np.testing.assert_array_equal(tf.io.decode_png(encoded[3]).numpy(), _fake_image(indices[3]))
    _expect_error(tmp_path, "12 records cover 12 of the 480,000")


def test_grid_order_of_shuffled_and_duplicated_records():
    permutation = np.random.default_rng(1).permutation(N)
    levels = np.stack(np.unravel_index(permutation, latents.FACTOR_SIZES), axis=1)
    order = shapes3d._grid_order("x", levels)
    np.testing.assert_array_equal(permutation[order], np.arange(N))
    levels[5] = levels[6]
    with pytest.raises(shapes3d.Shapes3DFileError, match="479,999 of the 480,000"):
        shapes3d._grid_order("x", levels)


@pytest.mark.slow
def test_tfds_full_directory(tmp_path):
    permutation = np.random.default_rng(2).permutation(N)
    levels = np.stack(np.unravel_index(permutation, latents.FACTOR_SIZES), axis=1)
    # Image = the shape level as a grey value.
    greys = np.stack([np.full((64, 64, 3), 60 * shape, np.uint8) for shape in range(4)])
    _write_tfds(tmp_path / "shapes3d" / "2.0.0", levels, greys, levels[:, 4])
    data = shapes3d.load_shapes3d(tmp_path)
    np.testing.assert_allclose(data.factors, latents.grid_factors(), atol=1e-5)
    indices = np.array([0, 15, 479_999, 15])
    expected = 60 * latents.grid_factors(indices)[:, 4]
    np.testing.assert_array_equal(data.images(indices)[:, 7, 9, 0], expected)
    np.testing.assert_allclose(data.images_tf(indices).numpy()[:, 7, 9, 0], expected / 255)
    in_pipeline = tf.data.Dataset.from_tensors(indices).map(data.images_tf)
    np.testing.assert_allclose(next(iter(in_pipeline)).numpy()[:, 7, 9, 0], expected / 255)


def test_pipeline_real_and_rendered_agree_on_factors(h5_path):
    """Same seed: same grid indices and factor values from the real data and the renderer."""
    data = shapes3d.load_shapes3d(h5_path)
    options = dict(num_tasks=2, num_samples=10, seed=4, distribution="harder_gauss_0.5")
    real = next(iter(pipeline.task_batches(data, **options)))
    rendered = next(iter(pipeline.task_batches("render", **options)))
    for key in ("indices", "z", "factors", "w", "y"):
        np.testing.assert_array_equal(real[key].numpy(), rendered[key].numpy())
    indices = real["indices"].numpy()
    np.testing.assert_allclose(real["factors"].numpy(), data.factors[indices], atol=1e-5)
    np.testing.assert_allclose(real["x"].numpy(), data.images(indices) / 255.0, atol=1e-7)
    np.testing.assert_allclose(
        rendered["x"].numpy(),
        render.render(latents.grid_factors(indices.reshape(-1))).numpy().reshape(2, 10, 64, 64, 3),
        atol=1e-6)


def test_pipeline_shapes_resume_and_query():
    latent_grid = latents.make_latents(alpha=1.0)
    options = dict(num_tasks=2, num_samples=10, seed=11, latents=latent_grid)
    batches = list(pipeline.task_batches("render", num_steps=3, **options))
    resumed = next(iter(pipeline.task_batches("render", start_step=2, num_steps=1, **options)))
    for key, value in batches[2].items():
        np.testing.assert_array_equal(value.numpy(), resumed[key].numpy())
    first = batches[0]
    assert first["x"].shape == (2, 10, 64, 64, 3) and first["z"].shape == (2, 10, 6)
    assert first["y"].shape == (2, 10) and first["w"].shape == (2, 6)
    assert not np.array_equal(first["indices"].numpy(), batches[1]["indices"].numpy())
    np.testing.assert_allclose(first["z"].numpy(), latent_grid.z[first["indices"].numpy()],
                               atol=1e-6)
    np.testing.assert_array_equal(first["w_support"].numpy(), first["w"].numpy() != 0)
    np.testing.assert_allclose(first["y"].numpy(),
                               np.einsum("tnm,tm->tn", first["z"], first["w"]), atol=0.5)

    query = next(iter(pipeline.task_batches("render", num_query=10, render_jittered=True,
                                            **options)))
    assert query["x_query"].shape == (2, 10, 64, 64, 3) and query["y_query"].shape == (2, 10)
    np.testing.assert_allclose(query["factors"].numpy(),
                               latent_grid.factors[query["indices"].numpy()], atol=1e-4)
    with pytest.raises(ValueError, match="differs"):
        pipeline.task_batches("render", alpha=0.5, **options)
    with pytest.raises(ValueError, match="render_jittered"):
        pipeline.task_batches(shapes3d.Shapes3D("x", None, None, None), render_jittered=True,
                              **options)
