"""tf.data pipeline of regression tasks on labelled images (section 5.1, appendix D.2.1).

Step k of `task_batches` yields T tasks of n samples:

    indices [T, n]  row indices i ~ p_{alpha,rho} (`latents.GridSampler`: a cell of
                       the task factors' values, then one of its rows uniformly)
    z       [T, n, d] float32, the latents of those rows (`latents.TaskLatents`:
                       d = K for K continuous task factors; `roles`)
    factors [T, n, K] float32, their factor values in dataset units (the grid
                       values, or the jittered values with `render_jittered`)
    x       [T, n, H, W, C] float32 in [0, 1], from a data file or a renderer
                       (K = 6, 64x64x3 for 3D Shapes and its renderer; K = 5,
                       64x64x1 for the sprite world)
    + the task part, `task_fn(seed, z)`: by default (`regression_tasks`)
    w [T, d] sparse weights, w_support [T, d] bool, y [T, n] = z w + noise.

With `num_query > 0` the tasks also get a query set drawn the same way, with
the same weights and fresh noise: keys `indices_query`, `z_query`, ...,
`y_query`. The default (`num_query = 0`) is the paper's setting, where the
inner and outer problems use the same n samples.

Randomness is stateless: step k uses seeds derived from (seed, k) only, so a
pipeline started at `start_step = k` (a resumed run) yields exactly the
batches k, k+1, ... of an uninterrupted one.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from sdis_tf.data import factors as factors_lib
from sdis_tf.data import latents as latents_lib
from sdis_tf.data import render as render_lib
from sdis_tf.data import roles as roles_lib
from sdis_tf.data import shapes3d, sprites
from sdis_tf.data import tasks as tasks_lib

TaskFn = Callable[[tf.Tensor, tf.Tensor, Optional[tf.Tensor]], dict]
"""task_fn(seed [2] int, z [T, n, d], z_query [T, n_q, d] or None) -> dict of task
tensors: 'y' [T, n] and, when z_query is given, 'y_query' [T, n_q]."""


def regression_tasks(kind: str = "bernoulli", *, noise: str = "snr", noise_scale: float = 0.1,
                     **weight_kwargs) -> TaskFn:
    """task_fn drawing w [T, d] with `tasks.sample_weights(kind)` and y = z w + noise.

    Defaults are the paper's: Bernoulli(0.5) supports with N(0, 1) values, and
    noise of norm 0.1 ||z w|| per task ('snr'). Extra keyword arguments
    (p, block_size, support_size) go to `tasks.sample_weights`.
    """
    def task_fn(seed, z, z_query=None):
        seed_w, seed_y, seed_q = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        w = tasks_lib.sample_weights(seed_w, z.shape[0], z.shape[-1], kind, **weight_kwargs)
        batch = {"w": w, "w_support": tf.not_equal(w, 0.0),
                 "y": tasks_lib.targets(seed_y, z, w, noise, noise_scale)}
        if z_query is not None:  # same task, its own noise (and noise scale for 'snr')
            batch["y_query"] = tasks_lib.targets(seed_q, z_query, w, noise, noise_scale)
        return batch

    return task_fn


class ImageSource:
    """Images of data points: a labelled-factor file, the real 3D Shapes data, the 3D Shapes
    renderer or the sprite world.

    `images(indices [T, n], factors [T, n, K]) -> [T, n, H, W, C]` float32 in [0, 1].
    `data` is None for the 3D Shapes renderer, else a `shapes3d.Shapes3D`, a
    `factors.FactorDataset` (row i of `data.factors` is the factor values of image i)
    or a `sprites.SpriteWorld`. The procedural sources (`procedural`) draw images from
    factor values; the others read the images of row indices.
    """

    def __init__(self, data=None):
        self.data = data

    @property
    def _shapes3d_grid(self) -> bool:
        return self.data is None or isinstance(self.data, shapes3d.Shapes3D)

    @property
    def procedural(self) -> bool:
        """True for the renderers (3D Shapes, sprites): images of any factor values."""
        return self.data is None or isinstance(self.data, sprites.SpriteWorld)

    @property
    def factor_table(self) -> np.ndarray:
        """[N, K] factor values of the rows that can be drawn (the full grid for the renderer)."""
        return latents_lib.grid_factors() if self.data is None else self.data.factors

    @property
    def factor_names(self) -> tuple[str, ...]:
        """The K factor names."""
        return latents_lib.FACTOR_NAMES if self._shapes3d_grid else self.data.factor_names

    @property
    def grid(self) -> tuple[np.ndarray, ...]:
        """The K sorted arrays of distinct factor values."""
        return latents_lib.factor_values() if self._shapes3d_grid else self.data.grid

    @property
    def layout(self) -> str:
        """'shapes3d' (renderer, TFDS, h5), 'dsprites', 'plain' or 'sprites' (`roles`)."""
        return "shapes3d" if self._shapes3d_grid else self.data.layout

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images (64x64x3 for 3D Shapes, 64x64x1 for the sprites)."""
        return shapes3d.IMAGE_SHAPE if self._shapes3d_grid else tuple(self.data.image_shape)

    def roles(self, factors=(), categorical=(roles_lib.AUTO,),
              periodic=(roles_lib.AUTO,)) -> roles_lib.Roles:
        """The factor roles of this source from their declarations (`roles.resolve_roles`,
        "auto" = the defaults of its layout)."""
        dropped = self.data.dropped if isinstance(self.data, factors_lib.FactorDataset) else ()
        return roles_lib.resolve_roles(self.factor_names, self.grid, self.layout,
                                       factors=factors, categorical=categorical,
                                       periodic=periodic, dropped=dropped)

    def default_latents(self, alpha: float,
                        roles: roles_lib.Roles | None = None) -> latents_lib.TaskLatents:
        """The latents of this source's rows (p_{alpha,rho}'s support) under `roles`
        (default: every factor a task factor, the layout's kinds: `self.roles()`)."""
        roles = roles if roles is not None else self.roles()
        return latents_lib.make_task_latents(self.factor_table, self.grid, roles, alpha=alpha)

    def images(self, indices: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
        if not self.procedural:
            return self.data.images_tf(indices)
        draw = render_lib.render if self.data is None else self.data.render
        flat = draw(tf.reshape(factors, [-1, len(self.factor_names)]))
        return tf.reshape(flat, tf.concat([tf.shape(indices), flat.shape[1:]], 0))


def image_source(source) -> ImageSource:
    """'render' -> the procedural 3D Shapes renderer; 'sprites' -> the sprite world
    (`sprites.SpriteWorld`); a directory -> a prepared TFDS `shapes3d`
    (`shapes3d.load_shapes3d`); a file -> `factors.load_factor_dataset` (3D Shapes h5,
    dSprites npz, plain npz/h5); a loaded `Shapes3D` / `FactorDataset` / `SpriteWorld`
    is used as is."""
    if isinstance(source, (shapes3d.Shapes3D, factors_lib.FactorDataset, sprites.SpriteWorld)):
        return ImageSource(source)
    if source == "render":
        return ImageSource()
    if source == "sprites":
        return ImageSource(sprites.SpriteWorld())
    if os.path.isdir(source):
        return ImageSource(shapes3d.load_shapes3d(source))
    return ImageSource(factors_lib.load_factor_dataset(source))


def task_batches(source, *, num_tasks: int = 8, num_samples: int = 50, num_query: int = 0,
                 alpha: Optional[float] = None, distribution: str = "harder_gauss_0.9",
                 seed: int = 0, start_step: int = 0, num_steps: Optional[int] = None,
                 task_fn: Optional[TaskFn] = None, render_jittered: bool = False,
                 latents=None) -> tf.data.Dataset:
    """Dataset of task batches (see the module docstring for the keys and shapes).

    Args:
      source: 'render', 'sprites', a path (3dshapes.h5, a TFDS dir, any labelled-factor
        file `factors.load_factor_dataset` reads) or an `ImageSource`.
      num_tasks, num_samples: T and n (support set); num_query: query samples per task.
      alpha: grid jitter level (z_noise_scale), default 1.0 (or `latents.alpha`);
        distribution: 'uniform', 'harder_gauss_<rho>' or 'gauss_<rho>'
        (`latents.parse_distribution`).
      seed: the run's data seed; start_step: first step (to resume); num_steps:
        number of batches (None: infinite).
      task_fn: the task part; default `regression_tasks()`.
      render_jittered: render the jittered factor values instead of the grid
        values (renderers only: a data file has only grid images).
      latents: the latents of the source's rows, a `latents.TaskLatents` (its roles:
        task factors, nuisances, kinds) or a plain `latents.Latents`; None:
        `source.default_latents(alpha)` (every factor a task factor, the layout's kinds).
    Raises:
      ValueError: for invalid sizes, `alpha` different from `latents.alpha`,
        or `render_jittered` with a data file.
    """
    if num_tasks < 1 or num_samples < 1 or num_query < 0:
        raise ValueError(f"need num_tasks >= 1, num_samples >= 1, num_query >= 0; got "
                         f"{num_tasks}, {num_samples}, {num_query}")
    source = source if isinstance(source, ImageSource) else image_source(source)
    if render_jittered and not source.procedural:
        raise ValueError("render_jittered=True needs a renderer ('render', 'sprites'): a data "
                         "file only has images of the grid values")
    if latents is None:
        latents = source.default_latents(1.0 if alpha is None else alpha)
    elif alpha is not None and alpha != latents.alpha:
        raise ValueError(f"alpha={alpha} differs from latents.alpha={latents.alpha}")
    sampler = latents_lib.make_sampler(latents, distribution)
    task_fn = task_fn if task_fn is not None else regression_tasks()
    z_table = tf.constant(latents.z, tf.float32)
    factor_table = tf.constant(
        latents.factors if render_jittered else source.factor_table, tf.float32)
    base_seed = tf.constant([seed, 0x5EED], tf.int64)

    def draw(step_seed, size, suffix):
        seed_idx, seed_task = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
        indices = sampler.sample([num_tasks, size], seed_idx)
        z = tf.gather(z_table, indices)
        factors = tf.gather(factor_table, indices)
        batch = {"indices": indices, "z": z, "factors": factors,
                 "x": source.images(indices, factors)}
        return {key + suffix: value for key, value in batch.items()}, seed_task

    def make_batch(step):
        step_seed = tf.random.experimental.stateless_fold_in(base_seed, step)
        seed_support, seed_query = tf.unstack(
            tf.random.experimental.stateless_split(step_seed, 2))
        batch, seed_task = draw(seed_support, num_samples, "")
        z_query = None
        if num_query > 0:
            query, _ = draw(seed_query, num_query, "_query")
            batch.update(query)
            z_query = query["z_query"]
        batch.update(task_fn(seed_task, batch["z"], z_query))
        batch["step"] = step
        return batch

    steps = tf.data.Dataset.counter(start_step, dtype=tf.int64)
    if num_steps is not None:
        steps = steps.take(num_steps)
    return steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).prefetch(2)

