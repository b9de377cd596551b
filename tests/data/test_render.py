"""Tests of sdis_tf/data/render.py: the procedural 3D Shapes renderer."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.data import latents, render

STRIDES = np.cumprod((1,) + latents.FACTOR_SIZES[::-1])[:-1][::-1]
SMALL = 20     # batch size of every render below: each new size costs an XLA compilation


def _render_chunked(factors):
    """Renders [N, 6] in batches of SMALL (padded), as uint8 like the real data."""
    out = []
    for start in range(0, len(factors), SMALL):
        part = factors[start:start + SMALL]
        padded = np.concatenate([part, np.repeat(part[:1], SMALL - len(part), 0)])
        out.append(render.render(padded).numpy()[:len(part)])
    return (np.concatenate(out) * 255).round().astype(np.uint8)


def test_shape_range_determinism_and_validation():
    factors = latents.grid_factors(np.arange(0, 480_000, 24_000))
    images = render.render(factors)
    assert images.shape == (len(factors), 64, 64, 3) and images.dtype == tf.float32
    values = images.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.std() > 0.1
    np.testing.assert_array_equal(values, render.render(factors.astype(np.float32)).numpy())
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        render.render(np.zeros((3, 5)))


def test_inside_tf_function_and_tf_data():
    factors = latents.grid_factors(np.arange(SMALL) * 23_999).astype(np.float32)
    eager = render.render(factors).numpy()
    dataset = tf.data.Dataset.from_tensors(factors).map(render.render)
    np.testing.assert_allclose(next(iter(dataset)).numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(tf.function(render.render)(factors).numpy(), eager, atol=1e-6)


def test_distinct_on_large_random_subset():
    # bench/shapes3d_render.py --all-distinct checks all 480,000 (7 minutes).
    indices = np.random.default_rng(0).choice(480_000, size=6_000, replace=False)
    images = _render_chunked(latents.grid_factors(indices))
    digests = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images}
    assert len(digests) == len(indices)


@pytest.mark.parametrize("point", [0, 123_457, 239_999, 400_321, 479_999])
def test_all_neighbours_visibly_different(point):
    levels = np.unravel_index(point, latents.FACTOR_SIZES)
    neighbours = [point + sign * STRIDES[k] for k in range(6) for sign in (-1, 1)
                  if 0 <= levels[k] + sign < latents.FACTOR_SIZES[k]]
    images = _render_chunked(latents.grid_factors([point] + neighbours)).astype(np.int32)
    for neighbour, image in zip(neighbours, images[1:]):
        changed = (np.abs(image - images[0]).max(-1) >= 25).sum()  # >= 0.1 in [0, 1] units
        assert changed >= 20, (point, neighbour, changed)


def test_object_stays_inside_the_window(monkeypatch):
    """The object is only ray-cast in a window: it must fit for the grid's whole range."""
    factors = np.array([[0.1, 0.5, 0.7, 1.3, shape, azimuth]
                        for shape in range(4) for azimuth in (-35.0, -15.0, 0.0, 20.0, 35.0)])
    windowed = render.render(factors).numpy()
    monkeypatch.setattr(render, "_WINDOW_ROWS", (0, 64))
    monkeypatch.setattr(render, "_WINDOW_COLS", (0, 64))
    full_frame = tf.function(render._render, jit_compile=True)(tf.constant(factors, tf.float32))
    np.testing.assert_allclose(windowed, full_frame.numpy(), atol=1e-5)


def test_continuous_factors():
    base = np.array([0.3, 0.6, 0.1, 1.0, 1.0, 0.0])
    steps = np.array([0.01, 0.01, 0.01, 0.005, 0.0, 0.3])
    factors = np.stack([base] + [base + np.eye(6)[k] * steps[k] for k in range(6)
                                 if steps[k]] + [base + [0, 0, 0, 0, 0.5, 0],
                                                 base + [0, 0, 0, 0, 1.0, 0]])
    padded = np.concatenate([factors, np.repeat(factors[:1], SMALL - len(factors), 0)])
    images = render.render(padded).numpy()
    for image in images[1:6]:   # a small change gives a small, nonzero change
        difference = np.abs(image - images[0])
        assert 0.0 < difference.mean() < 0.01
    # Shape 1.5 is the even blend of the cylinder and the sphere (up to clipping).
    blend = 0.5 * (images[0] + images[7])
    assert np.abs(images[6] - blend).mean() < 1e-3
    assert np.abs(images[6] - images[0]).mean() > 1e-3
