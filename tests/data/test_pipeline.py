"""The task pipeline on a labelled-factor file: any K, any image shape, incomplete grids."""

import numpy as np
import pytest

from sdis_tf.data import factors, pipeline
from sdis_tf.data import latents as latents_lib
from sdis_tf.data import roles as roles_lib


@pytest.fixture
def plain_npz(tmp_path):
    """3 factors on an incomplete 4 x 3 x 5 grid (one row in three missing), 12x10 grey images."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(4), np.linspace(0, 1, 3), np.arange(5) ** 2,
                                indexing="ij"), -1).reshape(-1, 3)
    keep = np.arange(len(grid)) % 3 != 1
    values = grid[keep]
    images = rng.integers(0, 256, size=(len(values), 12, 10, 1), dtype=np.uint8)
    path = tmp_path / "own.npz"
    np.savez(path, images=images, factors=values)
    return path, images, values


def test_tasks_from_a_factor_file(plain_npz):
    path, images, values = plain_npz
    source = pipeline.image_source(str(path))
    assert isinstance(source.data, factors.FactorDataset)
    options = dict(num_tasks=3, num_samples=7, num_query=4, seed=2,
                   distribution="harder_gauss_0.5")
    batches = list(pipeline.task_batches(source, num_steps=2, **options))
    first = batches[0]
    assert first["x"].shape == (3, 7, 12, 10, 1) and first["z"].shape == (3, 7, 3)
    assert first["w"].shape == (3, 3) and first["y_query"].shape == (3, 4)
    indices = first["indices"].numpy()
    assert indices.max() < len(values)
    np.testing.assert_allclose(first["factors"].numpy(), values[indices], atol=1e-6)
    np.testing.assert_allclose(first["x"].numpy(), images[indices] / 255.0, atol=1e-7)
    latents = latents_lib.make_latents(source.data.factors, source.data.grid, alpha=1.0)
    np.testing.assert_allclose(first["z"].numpy(), latents.z[indices], atol=1e-6)
    resumed = next(iter(pipeline.task_batches(source, start_step=1, num_steps=1, **options)))
    for key, value in batches[1].items():
        np.testing.assert_array_equal(value.numpy(), resumed[key].numpy())


def test_jittered_rendering_needs_the_renderer(plain_npz):
    with pytest.raises(ValueError, match="render_jittered"):
        pipeline.task_batches(str(plain_npz[0]), render_jittered=True)


def _nuisance_file(path, nuisance):
    """Task factors a (4 values), b (3 values) on a complete grid, two rows each, with a
    third factor c = `nuisance` [24] (None: no third column); random 6x6 images."""
    task = np.repeat(np.stack(np.meshgrid(np.arange(4.0), [0.5, 1.0, 3.0], indexing="ij"),
                              -1).reshape(-1, 2), 2, axis=0)
    values = task if nuisance is None else np.concatenate([task, nuisance[:, None]], axis=1)
    images = np.random.default_rng(len(path.name)).random((24, 6, 6, 1)).astype(np.float32)
    np.savez(path, images=images, factors=values, factor_names=np.array(["a", "b", "c"][
        :values.shape[1]]))
    return pipeline.image_source(str(path))


def test_a_factor_of_the_file_dropped_as_constant_is_named_as_such(tmp_path):
    source = _nuisance_file(tmp_path / "constant.npz", np.full(24, 7.0))
    assert source.factor_names == ("a", "b")
    with pytest.raises(roles_lib.RolesError, match=r"'c' is not a factor of the data "
                                                   r"\(dropped at load: constant"):
        source.roles(factors=("a", "c"))


def test_a_nuisance_leaves_z_and_the_tasks_untouched_whatever_its_values(tmp_path):
    sources = [_nuisance_file(tmp_path / "cycling.npz", np.tile([0.0, 1.0], 12)),
               _nuisance_file(tmp_path / "random_values.npz",
                              np.random.default_rng(1).choice([-3.0, 2.0, 40.0], 24)),
               _nuisance_file(tmp_path / "none.npz", None)]
    options = dict(num_tasks=3, num_samples=8, num_query=5, seed=3, num_steps=2,
                   distribution="harder_gauss_0.5")
    runs = []
    for source in sources:
        declared = source.roles(factors=("a", "b"))
        latents = source.default_latents(1.0, declared)
        runs.append(list(pipeline.task_batches(source, latents=latents, **options)))
    assert runs[0][0]["z"].shape == (3, 8, 2) and runs[0][0]["w"].shape == (3, 2)
    for other in runs[1:]:
        for got, want in zip(other, runs[0]):
            for key in ("indices", "z", "w", "y", "z_query", "y_query"):
                np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), key)
    assert not np.array_equal(runs[0][0]["x"].numpy(), runs[1][0]["x"].numpy())


def test_sprite_world_source():
    source = pipeline.image_source("sprites")
    assert source.procedural and source.layout == "sprites"
    assert source.image_shape == (64, 64, 1) and source.factor_table.shape == (34_560, 5)
    batch = next(iter(pipeline.task_batches(source, num_tasks=2, num_samples=5, num_steps=1,
                                            render_jittered=True)))
    assert batch["x"].shape == (2, 5, 64, 64, 1) and batch["z"].shape == (2, 5, 8)
    assert batch["w"].shape == (2, 8)
    indices = batch["indices"].numpy()
    latents = source.default_latents(1.0)
    np.testing.assert_allclose(batch["factors"].numpy(), latents.factors[indices], atol=1e-6)
    np.testing.assert_allclose(batch["z"].numpy(), latents.z[indices], atol=1e-6)
