"""Tests of sdis_tf/data/sprites.py: the procedural 2D sprite world."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.data import sprites

SMALL = 24     # batch size of the renders below: each new size costs an XLA compilation
STRIDES = np.cumprod((1,) + sprites.FACTOR_SIZES[::-1])[:-1][::-1]


def _render(factors):
    """Renders [N, 5] in batches of SMALL (padded): [N, 64, 64] float32."""
    factors = np.asarray(factors, np.float64)
    out = []
    for start in range(0, len(factors), SMALL):
        part = factors[start:start + SMALL]
        padded = np.concatenate([part, np.repeat(part[:1], SMALL - len(part), 0)])
        out.append(sprites.render(padded).numpy()[:len(part), ..., 0])
    return np.concatenate(out)


def test_grid_shape_range_determinism_and_validation():
    world = sprites.SpriteWorld()
    assert world.factors.shape == (34_560, 5) and len(world) == sprites.NUM_POINTS
    assert [len(np.unique(world.factors[:, k])) for k in range(5)] == list(sprites.FACTOR_SIZES)
    np.testing.assert_allclose(world.factors[1] - world.factors[0], [0, 0, 0, 0, 0.56 / 11],
                               rtol=1e-12)
    factors = world.factors[::1440]
    images = world.render(factors)
    assert images.shape == (SMALL, 64, 64, 1) and images.dtype == tf.float32
    values = images.numpy()
    assert values.min() == 0.0 and values.max() == 1.0
    np.testing.assert_array_equal(values, sprites.render(factors.astype(np.float32)).numpy())
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        sprites.render(np.zeros((3, 6)))


def test_inside_tf_function_and_tf_data():
    factors = sprites.grid_factors()[::1440].astype(np.float32)
    eager = sprites.render(factors).numpy()
    dataset = tf.data.Dataset.from_tensors(factors).map(sprites.render)
    np.testing.assert_allclose(next(iter(dataset)).numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(tf.function(sprites.render)(factors).numpy(), eager, atol=1e-6)


def test_each_shape_repeats_after_one_unit_of_orientation_only():
    """Orientation is the fraction of the shape's own symmetry turn: the image at 1 is the
    image at 0, every value in between is a different image."""
    rows = [[shape, 1.0, orientation, 0.5, 0.5] for shape in range(4)
            for orientation in (0.0, 0.25, 0.5, 0.75, 1.0, 0.1)]
    images = _render(rows).reshape(4, 6, 64, 64)
    for shape, turn in enumerate(images):
        np.testing.assert_allclose(turn[4], turn[0], atol=1e-5)      # a full symmetry turn
        for i in range(1, 4):
            assert np.abs(turn[i] - turn[0]).sum() > 20.0, (shape, i)
    # The turn is 2 pi * orientation / symmetry, clockwise on the image: at the image centre
    # a quarter turn maps pixels onto pixels, the ellipse's at orientation 1/2, the heart's
    # at 1/4.
    ellipse, heart = images[1], images[3]
    np.testing.assert_allclose(ellipse[2], np.rot90(ellipse[0], -1), atol=1e-4)
    np.testing.assert_allclose(heart[1], np.rot90(heart[0], -1), atol=1e-4)
    np.testing.assert_allclose(heart[2], np.rot90(heart[0], 2), atol=1e-4)


def test_images_are_distinct_and_neighbours_visibly_different():
    indices = np.random.default_rng(0).choice(sprites.NUM_POINTS, size=2000, replace=False)
    images = (_render(sprites.grid_factors()[indices]) * 255).round().astype(np.uint8)
    digests = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images}
    assert len(digests) == len(indices)
    levels = np.stack(np.unravel_index(np.arange(sprites.NUM_POINTS), sprites.FACTOR_SIZES), 1)
    grid = sprites.grid_factors()
    for point in (0, 12_345, 20_000, 34_559):
        neighbours = [point + sign * STRIDES[k] for k in range(5) for sign in (-1, 1)
                      if 0 <= levels[point, k] + sign < sprites.FACTOR_SIZES[k]]
        rendered = _render(grid[[point] + neighbours])
        for neighbour, image in zip(neighbours, rendered[1:]):
            changed = (np.abs(image - rendered[0]) >= 0.1).sum()
            assert changed >= 8, (point, neighbour, changed)


def test_sprites_stay_inside_the_frame():
    rows = [[shape, 1.0, orientation, x, y] for shape in range(4)
            for orientation in np.arange(10) / 10 for x in (0.22, 0.78) for y in (0.22, 0.78)]
    images = _render(rows)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert border.max() == 0.0


def test_continuous_factors_render_continuously():
    base = np.array([2.0, 0.8, 0.3, 0.5, 0.45])
    steps = np.diag([0.0, 0.01, 0.005, 0.003, 0.003])[1:]
    images = _render(np.concatenate([base[None], base + steps]))
    for image in images[1:]:   # a small change gives a small, nonzero change
        difference = np.abs(image - images[0])
        assert 0.0 < difference.mean() < 0.01
