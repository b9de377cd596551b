"""Procedural renderer of the 3D Shapes world (no download needed).

`render(factors)` ray-casts 64x64 RGB images, float32 in [0, 1], from factor
values `[N, 6]` in the dataset's units and order (see `latents.py`):
floor hue, wall hue, object hue in [0, 1) (HSV hue, so 1 wraps to 0); scale in
[0.75, 1.25]; shape 0 cube, 1 cylinder, 2 sphere, 3 capsule; orientation =
camera azimuth in degrees, [-30, 30] on the grid.

Scene (world frame, y up, unit = object half-width at scale 1): the floor
y = 0; two walls meeting in a vertical corner behind the object, the planes
z - x = D and z + x = D (the room is z + |x| < D); one object resting on the
floor at the origin, half-width r = 0.5 * scale. The camera orbits the object
at a fixed elevation, looking at it; the orientation factor is its azimuth.
Shading: a white directional light fixed in the world; Lambert + ambient on
every surface, a Phong highlight on the object, a floor that darkens with
distance, and a soft contact shadow under the object (no cast shadows, no
anti-aliasing). Colours: albedo = HSV(hue, 0.75, 0.95).

Every factor value is continuous: hues, scale and azimuth enter the geometry
and colours smoothly, and a non-integer shape s is the blend of the two
neighbouring shapes with weights max(0, 1 - |s - k|) (the exact shape when s
is an integer), so jittered latents render exactly. Hues outside [0, 1) wrap.

Implementation: the frame is attached to the camera ("pre-yaw"): floor,
sphere, cylinder and capsule are symmetric about the vertical axis, so their
ray intersections do not depend on the azimuth; only the walls, the cube and
the light rotate, by a per-image 2x2 rotation. The object is only intersected
inside a fixed window around the image centre that contains it for every
factor value in the grid's range, jitter included (checked in the tests).
(Separate smaller windows per shape were slower under XLA: the padding
breaks the fusion.) One XLA-compiled
function renders a batch; it also runs inside `tf.data` (`Dataset.map`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

IMAGE_SIZE = 64
# Scene constants (world units).
_HALF_WIDTH = 0.5          # object half-width at scale 1
_CORNER = 2.6              # the walls meet on the line x = 0, z = _CORNER
_CAMERA_DISTANCE = 4.9     # from the orbit centre
_CAMERA_ELEVATION = 22.0   # degrees
_TARGET_HEIGHT = 0.55      # the camera looks at (0, _TARGET_HEIGHT, 0)
_FIELD_OF_VIEW = 44.0      # degrees, horizontal and vertical
_LIGHT = np.array([-0.3, 1.0, -0.9])   # towards the light, world frame
_AMBIENT = 0.38
_DIFFUSE = 0.62
_SPECULAR = 0.35
_SATURATION = 0.75
_VALUE = 0.95
_CAPSULE_RADIUS = 0.78     # capsule radius / object half-width
_CAPSULE_HEIGHT = 2.5      # capsule height / object half-width
# Rows and columns (half-open) where the object can appear: measured for every
# shape with scale <= 1.3 and |azimuth| <= 35 degrees, plus 1 pixel.
_WINDOW_ROWS = (13, 49)
_WINDOW_COLS = (15, 49)


def _camera():
    """Camera origin `[3]` and unnormalised ray directions `[H, W, 3]` in the pre-yaw frame.

    The pre-yaw frame is the world frame rotated by the azimuth; at azimuth 0
    it is the world frame. Pixel (i, j) looks through image-plane point
    (u, v) = tan(fov/2) * ((2j + 1)/W - 1, 1 - (2i + 1)/H) at depth 1.
    """
    elevation = np.deg2rad(_CAMERA_ELEVATION)
    target = np.array([0.0, _TARGET_HEIGHT, 0.0])
    origin = target + _CAMERA_DISTANCE * np.array(
        [0.0, np.sin(elevation), -np.cos(elevation)])
    forward = (target - origin) / np.linalg.norm(target - origin)
    right = np.array([1.0, 0.0, 0.0])
    up = np.cross(forward, right)
    half = np.tan(np.deg2rad(_FIELD_OF_VIEW) / 2)
    centres = (2 * np.arange(IMAGE_SIZE) + 1) / IMAGE_SIZE - 1
    u = half * centres[None, :, None]
    v = -half * centres[:, None, None]
    directions = forward + u * right + v * up
    return origin, directions


def _hsv_to_rgb(hue: tf.Tensor) -> tf.Tensor:
    """Albedo HSV(hue, _SATURATION, _VALUE) `[N, 1, 1, 3]` of hue `[N]` (period 1)."""
    k = tf.math.floormod(tf.constant([5.0, 3.0, 1.0]) + 6.0 * hue[:, None], 6.0)
    ramp = tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)
    return (_VALUE * (1.0 - _SATURATION * ramp))[:, None, None, :]


class _Rays:
    """Per-pixel constants of the camera rays (origin o, directions d), float32."""

    def __init__(self, origin, directions):
        const = lambda x: tf.constant(np.asarray(x, np.float32))  # noqa: E731
        d = directions
        self.o = [float(x) for x in origin]
        self.d = [const(d[..., k]) for k in range(3)]
        norm = np.linalg.norm(d, axis=-1)
        self.inv_norm = const(1.0 / norm)
        self.a = const(norm**2)
        self.inv_a = const(1.0 / norm**2)
        horizontal = d[..., 0] ** 2 + d[..., 2] ** 2
        self.a_h = const(horizontal)
        self.inv_a_h = const(1.0 / horizontal)
        self.b_h = const(origin[0] * d[..., 0] + origin[2] * d[..., 2])
        self.od = const(d @ origin)
        self.inv_dy = const(1.0 / d[..., 1])


def _sphere(rays, centre_y, radius, light, d_l):
    """Sphere of `radius` centred at (0, centre_y, 0): hit mask, t, n.L, n.V `[N, h, w]`.

    `light` is L (3 components), `d_l` = d.L per pixel.

    With oc = o - c: b = oc.d, disc = b^2 - |d|^2 (|oc|^2 - r^2), t = (-b - sqrt(disc))/|d|^2,
    n = (oc + t d)/r, so n.L = (oc.L + t d.L)/r and n.V = sqrt(disc)/(r |d|) (V = -d/|d|).
    """
    o = rays.o
    b = rays.od - centre_y * rays.d[1]
    c = o[0] ** 2 + o[2] ** 2 + (o[1] - centre_y) ** 2 - radius * radius
    disc = b * b - rays.a * c
    root = tf.sqrt(tf.maximum(disc, 0.0))
    t = (-b - root) * rays.inv_a
    oc_l = o[0] * light[0] + (o[1] - centre_y) * light[1] + o[2] * light[2]
    inv_r = 1.0 / radius
    return disc >= 0.0, t, (oc_l + t * d_l) * inv_r, root * rays.inv_norm * inv_r


def _cylinder_side(rays, radius, y_low, y_high, light, d_l):
    """Side x^2 + z^2 = r^2, y in [y_low, y_high]: hit, t, n.L, n.V (as `_sphere`, horizontal)."""
    o = rays.o
    c = o[0] ** 2 + o[2] ** 2 - radius * radius
    disc = rays.b_h * rays.b_h - rays.a_h * c
    root = tf.sqrt(tf.maximum(disc, 0.0))
    t = (-rays.b_h - root) * rays.inv_a_h
    y = o[1] + t * rays.d[1]
    hit = (disc >= 0.0) & (y >= y_low) & (y <= y_high)
    oc_l = o[0] * light[0] + o[2] * light[2]
    horizontal_d_l = d_l - rays.d[1] * light[1]
    inv_r = 1.0 / radius
    return hit, t, (oc_l + t * horizontal_d_l) * inv_r, root * rays.inv_norm * inv_r


def _cylinder(rays, radius, light, d_l):
    """Cylinder of radius r, y in [0, 2r], with its top disc: hit, n.L, n.V."""
    hit, _, n_l, n_v = _cylinder_side(rays, radius, 0.0, 2.0 * radius, light, d_l)
    o = rays.o
    t_cap = (2.0 * radius - o[1]) * rays.inv_dy
    horizontal_sq = (o[0] ** 2 + o[2] ** 2) + t_cap * (2.0 * rays.b_h + t_cap * rays.a_h)
    on_cap = ~hit & (t_cap > 0.0) & (horizontal_sq <= radius * radius)
    n_l = tf.where(on_cap, light[1], n_l)
    n_v = tf.where(on_cap, -rays.d[1] * rays.inv_norm, n_v)
    return hit | on_cap, n_l, n_v


def _capsule(rays, radius, light, d_l):
    """Vertical capsule of radius rc = 0.78 r and height 2.5 r on the floor: hit, n.L, n.V."""
    rc = _CAPSULE_RADIUS * radius
    top = _CAPSULE_HEIGHT * radius - rc
    pieces = [_cylinder_side(rays, rc, rc, top, light, d_l),
              _sphere(rays, top, rc, light, d_l), _sphere(rays, rc, rc, light, d_l)]
    t = [tf.where(hit, tk, np.inf) for hit, tk, _, _ in pieces]
    first = tf.minimum(tf.minimum(t[0], t[1]), t[2])
    n_l = tf.where(tf.equal(first, t[0]), pieces[0][2],
                   tf.where(tf.equal(first, t[1]), pieces[1][2], pieces[2][2]))
    n_v = tf.where(tf.equal(first, t[0]), pieces[0][3],
                   tf.where(tf.equal(first, t[1]), pieces[1][3], pieces[2][3]))
    return tf.math.is_finite(first), n_l, n_v


def _cube(rays, radius, cos, sin, world_light):
    """Box [-r, r] x [0, 2r] x [-r, r] in the world frame (slab method): hit, n.L, n.V.

    The ray is rotated into the world frame; the face normal is -sign(d_k) e_k
    for the axis k whose slab is entered last, so n.L = -sign(d_k) L_k and
    n.V = |d_k| / |d|.
    """
    o, d = rays.o, rays.d
    ox, oz = cos * o[0] + sin * o[2], -sin * o[0] + cos * o[2]
    dx, dz = cos * d[0] + sin * d[2], -sin * d[0] + cos * d[2]
    slabs = []
    for origin, direction in ((ox, dx), (oz, dz)):
        inverse = 1.0 / direction
        t1 = (-radius - origin) * inverse
        t2 = (radius - origin) * inverse
        slabs.append((tf.minimum(t1, t2), tf.maximum(t1, t2)))
    near_y = (2.0 * radius - o[1]) * rays.inv_dy      # the top face (rays look down)
    far_y = -o[1] * rays.inv_dy
    t_near = tf.maximum(tf.maximum(slabs[0][0], slabs[1][0]), near_y)
    t_far = tf.minimum(tf.minimum(slabs[0][1], slabs[1][1]), far_y)
    hit = (t_near <= t_far) & (t_near > 0.0)
    on_x = tf.equal(t_near, slabs[0][0])
    on_z = tf.equal(t_near, slabs[1][0])
    n_l = tf.where(on_x, -tf.sign(dx) * world_light[0],
                   tf.where(on_z, -tf.sign(dz) * world_light[2], world_light[1]))
    n_v = tf.where(on_x, tf.abs(dx), tf.where(on_z, tf.abs(dz), -d[1])) * rays.inv_norm
    return hit, n_l, n_v


def _render(factors: tf.Tensor) -> tf.Tensor:
    """`render` without validation: factors `[N, 6]` float32 -> `[N, 64, 64, 3]`."""
    origin, directions = _camera()
    floor_hue, wall_hue, object_hue, scale, shape, azimuth = tf.unstack(factors, axis=1)
    per_image = lambda x: x[:, None, None]  # noqa: E731
    radius = per_image(_HALF_WIDTH * scale)
    angle = azimuth * (np.pi / 180.0)
    cos, sin = per_image(tf.cos(angle)), per_image(tf.sin(angle))
    world_light = _LIGHT / np.linalg.norm(_LIGHT)
    # The light in the pre-yaw frame, L' = R(-azimuth) L (rotation about y).
    light = [cos * world_light[0] - sin * world_light[2], float(world_light[1]),
             sin * world_light[0] + cos * world_light[2]]

    # Background. Floor y = 0 (its hit point is the same for every azimuth);
    # walls n.p = D with world normals (-1, 0, 1) and (1, 0, 1), here rotated.
    full = _Rays(origin, directions)
    o, d = full.o, full.d
    floor_t = np.where(directions[..., 1] < 0, -origin[1] / directions[..., 1], np.inf)
    floor_x = origin[0] + floor_t * directions[..., 0]
    floor_z = origin[2] + floor_t * directions[..., 2]
    floor_r2 = tf.constant(np.where(np.isfinite(floor_t), floor_x**2 + floor_z**2, 1e6),
                           tf.float32)
    floor_shade = tf.constant(1.2 * (_AMBIENT + _DIFFUSE * world_light[1])
                              / (1.0 + 0.05 * np.minimum(floor_t, 1e6)), tf.float32)
    t_wall, wall_shade = [], []
    for side in (-1.0, 1.0):
        nx, nz = cos * side - sin, sin * side + cos
        denominator = nx * d[0] + nz * d[2]
        t = (_CORNER - nx * o[0] - nz * o[2]) / denominator
        t_wall.append(tf.where(denominator > 0.0, t, np.inf))
        lambert = tf.maximum(-(nx * light[0] + nz * light[2]) / np.sqrt(2.0), 0.0)
        wall_shade.append(0.5 + 0.5 * lambert)
    on_floor = tf.constant(floor_t, tf.float32) < tf.minimum(t_wall[0], t_wall[1])
    # Soft contact shadow with compact support: radius 1.6 r around the object.
    falloff = tf.maximum(1.0 - floor_r2 * (1.0 / 2.56) / (radius * radius), 0.0)
    contact = 1.0 - 0.55 * falloff * falloff
    wall = tf.where(t_wall[0] < t_wall[1], wall_shade[0], wall_shade[1])
    floor_light = (floor_shade * contact)[..., None]
    background = tf.where(on_floor[..., None], _hsv_to_rgb(floor_hue) * floor_light,
                          _hsv_to_rgb(wall_hue) * wall[..., None])          # [N, H, W, 3]

    # Object, inside the window only. Shapes are blended with weights
    # max(0, 1 - |shape - k|); shading = albedo (ambient + diffuse max(n.L, 0))
    # + specular max(R.V, 0)^17 with R.V = 2 (n.L)(n.V) - L.V.
    (r0, r1), (c0, c1) = _WINDOW_ROWS, _WINDOW_COLS
    rays = _Rays(origin, directions[r0:r1, c0:c1])
    d_l = light[0] * rays.d[0] + light[1] * rays.d[1] + light[2] * rays.d[2]
    sphere_hit, _, sphere_n_l, sphere_n_v = _sphere(rays, radius, radius, light, d_l)
    shapes = [_cube(rays, radius, cos, sin, world_light),
              _cylinder(rays, radius, light, d_l),
              (sphere_hit, sphere_n_l, sphere_n_v),
              _capsule(rays, radius, light, d_l)]
    coverage, diffuse, specular = 0.0, 0.0, 0.0
    for k, (hit, n_l, n_v) in enumerate(shapes):
        weight = tf.where(hit, per_image(tf.maximum(1.0 - tf.abs(shape - k), 0.0)), 0.0)
        reflection = tf.maximum(2.0 * n_l * n_v + d_l * rays.inv_norm, 0.0)
        power = reflection * reflection
        power = power * power
        power = power * power
        power = power * power * reflection  # reflection^17
        coverage += weight
        diffuse += weight * (_AMBIENT + _DIFFUSE * tf.maximum(n_l, 0.0))
        specular += weight * (_SPECULAR * power)
    inside = background[:, r0:r1, c0:c1]
    delta = (1.2 * (_hsv_to_rgb(object_hue) * diffuse[..., None] + specular[..., None])
             - coverage[..., None] * inside)
    delta = tf.pad(delta, [[0, 0], [r0, IMAGE_SIZE - r1], [c0, IMAGE_SIZE - c1], [0, 0]])
    return tf.clip_by_value(background + delta, 0.0, 1.0)


_render_xla = tf.function(_render, jit_compile=True, reduce_retracing=True)


def render(factors) -> tf.Tensor:
    """Renders 3D-Shapes-like images from factor values.

    Args:
      factors: `[N, 6]` (numpy or tensor, any float dtype) in the dataset's
        units and order: floor hue, wall hue, object hue, scale, shape,
        orientation (degrees).
    Returns:
      `[N, 64, 64, 3]` float32 in [0, 1]. Deterministic; works eagerly, in
      `tf.function` and in `tf.data` pipelines.
    """
    factors = tf.convert_to_tensor(factors)
    if factors.shape.rank != 2 or factors.shape[-1] != 6:
        raise ValueError(f"factors must have shape [N, 6]; got {factors.shape}")
    return _render_xla(tf.cast(factors, tf.float32))
