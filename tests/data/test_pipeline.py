"""The task pipeline on a labelled-factor file: any K, any image shape, incomplete grids."""

import numpy as np
import pytest

from sdis_tf.data import factors, pipeline


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
    latents = factors.make_latents(source.data, 1.0)
    np.testing.assert_allclose(first["z"].numpy(), latents.z[indices], atol=1e-6)
    resumed = next(iter(pipeline.task_batches(source, start_step=1, num_steps=1, **options)))
    for key, value in batches[1].items():
        np.testing.assert_array_equal(value.numpy(), resumed[key].numpy())


def test_jittered_rendering_needs_the_renderer(plain_npz):
    with pytest.raises(ValueError, match="render_jittered"):
        pipeline.task_batches(str(plain_npz[0]), render_jittered=True)
