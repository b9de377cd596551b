"""A procedural 2D sprite world (no download): one white shape on black, 64x64x1.

Five factors, stored in this order with pos_y varying fastest (row-major):

    shape        4 values  0 square, 1 ellipse, 2 triangle, 3 heart   (categorical)
    scale        6 values  linspace(0.5, 1, 6)
    orientation 10 values  0, 0.1, ..., 0.9: the fraction of the shape's own
                           symmetry turn                             (periodic, period 1)
    pos_x       12 values  linspace(0.22, 0.78, 12) (fraction of the width)
    pos_y       12 values  linspace(0.22, 0.78, 12) (fraction of the height, downwards)

34,560 grid points. A shape with rotational symmetry of order s (square 4,
ellipse 2, triangle 3, heart 1) looks the same after a turn of 2 pi / s, so
the sprite is drawn rotated by 2 pi * orientation / s (clockwise on the
image): for every shape the images repeat exactly once per unit of
orientation, and orientation is a periodic factor of period 1 whose value the
image determines (dSprites' raw angle is not: its square repeats after a
quarter turn).

`render(factors)` draws images `[N, 64, 64, 1]` float32 in [0, 1] from factor
values `[N, 5]` in these units. Each shape is a signed distance function d(p)
in the sprite's frame (p = R(-theta) (pixel - position) / (radius * scale),
radius 0.16 of the image); a pixel's intensity is its coverage
clip(1/2 - d * pixels per unit, 0, 1), one pixel of anti-aliasing, so scale,
orientation and position enter the image continuously (jittered values render
as such). Shape values are rounded to the nearest shape. Deterministic; the
whole batch in one XLA-compiled function, also inside `tf.data`.

`SpriteWorld` is the image source (`pipeline.ImageSource`, `data.path =
"sprites"` in the disentangle config): its factor table is the grid, its
layout "sprites" (`roles.LAYOUT_DEFAULTS`: shape categorical, orientation
periodic with period 1).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

IMAGE_SIZE = 64
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SHAPE_NAMES = ("square", "ellipse", "triangle", "heart")
SYMMETRY = (4, 2, 3, 1)
"""Order of each shape's rotational symmetry."""
FACTOR_SIZES = (4, 6, 10, 12, 12)
NUM_POINTS = int(np.prod(FACTOR_SIZES))
_RADIUS = 0.16            # sprite radius at scale 1, fraction of the image side
_SQUARE_HALF_SIDE = 0.75
_ELLIPSE_AXES = (1.0, 0.5)
_TRIANGLE_HALF_SIDE = 1.2 * np.sqrt(3.0) / 2.0   # circumradius 1.2
_HEART_SIZE = 0.65        # heart frame (tip (0, 0), lobes up to y ~ 1.1) units per sprite unit
_HEART_CENTRE = 0.55      # the heart frame's y at the sprite's centre


def factor_values() -> tuple[np.ndarray, ...]:
    """The sorted values of each factor (float64)."""
    position = np.linspace(0.22, 0.78, 12)
    return (np.arange(4, dtype=np.float64), np.linspace(0.5, 1.0, 6), np.arange(10) / 10.0,
            position, position.copy())


def grid_factors() -> np.ndarray:
    """Factor values `[34560, 5]` (float64) of every grid point, pos_y fastest."""
    mesh = np.meshgrid(*factor_values(), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _square(x, y):
    qx, qy = tf.abs(x) - _SQUARE_HALF_SIDE, tf.abs(y) - _SQUARE_HALF_SIDE
    outside = tf.sqrt(tf.square(tf.maximum(qx, 0.0)) + tf.square(tf.maximum(qy, 0.0)))
    return outside + tf.minimum(tf.maximum(qx, qy), 0.0)


def _ellipse(x, y):
    """Approximate distance to the ellipse x^2/a^2 + y^2/b^2 = 1: k0 (k0 - 1) / k1 with
    k0 = |(x/a, y/b)|, k1 = |(x/a^2, y/b^2)| (exact on the boundary, first order near it)."""
    a, b = _ELLIPSE_AXES
    k0 = tf.sqrt(tf.square(x / a) + tf.square(y / b))
    k1 = tf.sqrt(tf.square(x / (a * a)) + tf.square(y / (b * b)))
    return k0 * (k0 - 1.0) / tf.maximum(k1, 1e-6)


def _triangle(x, y):
    """Exact distance to the equilateral triangle of circumradius 1.2 centred at 0,
    pointing to -y (I. Quilez's construction)."""
    k, r = np.sqrt(3.0), _TRIANGLE_HALF_SIDE
    x = tf.abs(x) - r
    y = y + r / k
    fold = x + k * y > 0.0
    x, y = tf.where(fold, (x - k * y) / 2.0, x), tf.where(fold, (-k * x - y) / 2.0, y)
    x = x - tf.clip_by_value(x, -2.0 * r, 0.0)
    return -tf.sqrt(x * x + y * y) * tf.sign(y)


def _heart(x, y):
    """Exact distance to a heart (I. Quilez's), tip down in the image, lobes up."""
    x = tf.abs(x) * _HEART_SIZE
    y = -y * _HEART_SIZE + _HEART_CENTRE
    lobe = tf.sqrt(tf.square(x - 0.25) + tf.square(y - 0.75)) - np.sqrt(2.0) / 4.0
    t = 0.5 * tf.maximum(x + y, 0.0)
    body = tf.sqrt(tf.minimum(tf.square(x) + tf.square(y - 1.0),
                              tf.square(x - t) + tf.square(y - t))) * tf.sign(x - y)
    return tf.where(x + y > 1.0, lobe, body) / _HEART_SIZE


_SHAPES = (_square, _ellipse, _triangle, _heart)


def _render(factors: tf.Tensor) -> tf.Tensor:
    """`render` without validation: factors `[N, 5]` float32 -> `[N, 64, 64, 1]`."""
    shape, scale, orientation, pos_x, pos_y = [
        f[:, None, None] for f in tf.unstack(factors, axis=1)]
    index = tf.clip_by_value(tf.round(shape), 0.0, len(_SHAPES) - 1.0)
    symmetry = tf.gather(tf.constant(SYMMETRY, tf.float32), tf.cast(index, tf.int32))
    theta = 2.0 * np.pi * orientation / symmetry
    centres = tf.constant((np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE, tf.float32)
    radius = _RADIUS * scale
    dx, dy = (centres[None, None, :] - pos_x) / radius, (centres[None, :, None] - pos_y) / radius
    cos, sin = tf.cos(theta), tf.sin(theta)
    x, y = cos * dx + sin * dy, -sin * dx + cos * dy          # R(-theta) (pixel - position)
    distance = tf.zeros_like(x)
    for k, sdf in enumerate(_SHAPES):
        distance += tf.where(tf.equal(index, float(k)), sdf(x, y), 0.0)
    coverage = tf.clip_by_value(0.5 - distance * (radius * IMAGE_SIZE), 0.0, 1.0)
    return coverage[..., None]


_render_xla = tf.function(_render, jit_compile=True, reduce_retracing=True)


def render(factors) -> tf.Tensor:
    """Sprite images from factor values.

    Args:
      factors: `[N, 5]` (numpy or tensor, any float dtype): shape, scale,
        orientation, pos_x, pos_y in the units of the module docstring.
    Returns:
      `[N, 64, 64, 1]` float32 in [0, 1]. Deterministic; works eagerly, in
      `tf.function` and in `tf.data` pipelines.
    """
    factors = tf.convert_to_tensor(factors)
    if factors.shape.rank != 2 or factors.shape[-1] != len(FACTOR_NAMES):
        raise ValueError(f"factors must have shape [N, {len(FACTOR_NAMES)}]; got {factors.shape}")
    return _render_xla(tf.cast(factors, tf.float32))


class SpriteWorld:
    """The sprite world as a labelled-factor source: its grid rows, names and renderer.

    Attributes:
      layout: "sprites".
      factor_names: the 5 names.
      factors: `[34560, 5]` float64, the grid (`grid_factors`).
      grid: the 5 sorted arrays of values (`factor_values`).
      image_shape: (64, 64, 1).
    """

    layout = "sprites"
    factor_names = FACTOR_NAMES
    image_shape = IMAGE_SHAPE

    def __init__(self):
        self.factors = grid_factors()
        self.grid = factor_values()

    def __len__(self) -> int:
        return self.factors.shape[0]

    def render(self, factors) -> tf.Tensor:
        """`render(factors)`: images `[N, 64, 64, 1]` of factor values `[N, 5]`."""
        return render(factors)
