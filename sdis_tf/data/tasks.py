"""Regression tasks on latent factors: sparse task weights and noisy targets.

Every regression experiment draws, per outer step, T tasks with weights
w_t in R^m and targets y_t = z_t w_t + noise on latents z_t [n, m]. All
sampling is stateless: a `seed` is a shape-[2] integer tensor (as for
`tf.random.stateless_normal`), so a batch is a pure function of
(seed, step) and a resumed run sees exactly the data of an uninterrupted one.

Weight distributions (`kind`), batched as w [T, m]:
- "bernoulli": support_j ~ Bernoulli(p) independently per task and
  coordinate; a task whose support came out empty gets exactly one
  coordinate, drawn uniformly for that task (so no task is the zero task,
  and the forced coordinates are independent across tasks). Values N(0, 1).
- "block": one of m / block_size contiguous blocks, uniformly; values N(0, 1)
  on it.
- "fixed_size": a uniformly random support of exactly support_size
  coordinates; values N(0, 1).
- "laplace": dense, w_j ~ Laplace(0, 1) iid.
- "gauss": dense, w_j ~ N(0, 1) iid.

Noise (`noise`): "std" adds noise_scale * eps with eps ~ N(0, I_n); "snr"
adds noise_scale * (||z w|| / ||eps||) * eps per task, so the noise norm is
exactly noise_scale times the signal norm (a fixed signal-to-noise ratio).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import tensorflow as tf

from sdis_tf import config_schema as cs

KINDS = ("bernoulli", "block", "fixed_size", "laplace", "gauss")
NOISE_MODES = ("std", "snr")

SCHEMA = {
    "kind": cs.Choice(*KINDS),
    "p": cs.Float(min=0.0, max=1.0, min_open=True),
    "block_size": cs.COUNT,
    "support_size": cs.COUNT,
    "noise": cs.Choice(*NOISE_MODES),
    "noise_scale": cs.NONNEGATIVE,
}
"""Schema of a `config.tasks` section (see `config_schema`)."""


def schema_problems(tasks: dict, num_latents: int, path: str = "config.tasks") -> list[str]:
    """Cross-field checks of a valid `config.tasks` section against m = num_latents."""
    problems = []
    if tasks["kind"] == "block" and num_latents % tasks["block_size"]:
        problems.append(f"{path}.block_size = {tasks['block_size']} must divide the number "
                        f"of latents {num_latents}")
    if tasks["kind"] == "fixed_size" and tasks["support_size"] > num_latents:
        problems.append(f"{path}.support_size = {tasks['support_size']} must be in "
                        f"[1, {num_latents}] (the number of latents)")
    return problems


class TaskBatch(NamedTuple):
    """T regression tasks: support set for the inner fit, query set for the outer loss.

    x_* [T, n, ...] observations, y_* [T, n] targets. `x_query` / `y_query`
    are None when the outer loss uses the support samples themselves.
    """

    x_support: tf.Tensor
    y_support: tf.Tensor
    x_query: Optional[tf.Tensor] = None
    y_query: Optional[tf.Tensor] = None


def _support_bernoulli(seed, shape, p):
    seed_mask, seed_forced = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    support = tf.random.stateless_uniform(shape, seed_mask) < p
    forced = tf.random.stateless_uniform(
        shape[:1], seed_forced, minval=0, maxval=shape[1], dtype=tf.int32)
    empty = tf.logical_not(tf.reduce_any(support, axis=1, keepdims=True))
    return tf.logical_or(support, tf.logical_and(empty, tf.one_hot(forced, shape[1]) > 0))


def _support_block(seed, shape, block_size):
    num_blocks = shape[1] // block_size
    block = tf.random.stateless_uniform(
        shape[:1], seed, minval=0, maxval=num_blocks, dtype=tf.int32)
    return tf.range(shape[1])[None, :] // block_size == block[:, None]


def _support_fixed_size(seed, shape, support_size):
    # The ranks of iid uniforms are a uniform random permutation per task.
    ranks = tf.argsort(tf.argsort(tf.random.stateless_uniform(shape, seed), axis=1), axis=1)
    return ranks < support_size


def sample_weights(seed, num_tasks: int, num_latents: int, kind: str = "bernoulli", *,
                   p: float = 0.5, block_size: int = 1, support_size: int = 1,
                   dtype=tf.float32) -> tf.Tensor:
    """Draws task weights w [T, m] (see the module docstring for each `kind`).

    Args:
      seed: shape-[2] integer tensor, the stateless seed.
      num_tasks, num_latents: T and m.
      kind: one of `KINDS`.
      p: support probability of "bernoulli", in (0, 1].
      block_size: block length of "block"; must divide m.
      support_size: support size of "fixed_size", in [1, m].
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    shape = (num_tasks, num_latents)
    seed_support, seed_values = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if kind == "laplace":
        # Laplace(0, 1) = E1 - E2 with E1, E2 ~ Exp(1) = -log(1 - U), U in [0, 1).
        u = tf.random.stateless_uniform((2,) + shape, seed_values, dtype=dtype)
        return tf.math.log1p(-u[1]) - tf.math.log1p(-u[0])
    values = tf.random.stateless_normal(shape, seed_values, dtype=dtype)
    if kind == "gauss":
        return values
    if kind == "bernoulli":
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1]. Received: p={p}")
        support = _support_bernoulli(seed_support, shape, p)
    elif kind == "block":
        if block_size < 1 or num_latents % block_size:
            raise ValueError(f"block_size must divide num_latents={num_latents}. "
                             f"Received: block_size={block_size}")
        support = _support_block(seed_support, shape, block_size)
    else:
        if not 1 <= support_size <= num_latents:
            raise ValueError(f"support_size must be in [1, {num_latents}]. "
                             f"Received: support_size={support_size}")
        support = _support_fixed_size(seed_support, shape, support_size)
    return values * tf.cast(support, dtype)


def add_noise(seed, y: tf.Tensor, noise: str, noise_scale: float) -> tf.Tensor:
    """Adds noise to clean targets y [T, n] (per-task norms are over the n axis).

    "std": y + s * eps.  "snr": y + s * (||y_t|| / ||eps_t||) * eps_t, so that
    ||noise_t|| = s * ||y_t|| exactly.
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}. Received: noise={noise!r}")
    eps = tf.random.stateless_normal(tf.shape(y), seed, dtype=y.dtype)
    if noise == "snr":
        ratio = tf.norm(y, axis=-1, keepdims=True) / tf.norm(eps, axis=-1, keepdims=True)
        eps = eps * ratio
    return y + noise_scale * eps


def targets(seed, z: tf.Tensor, w: tf.Tensor, noise: str, noise_scale: float) -> tf.Tensor:
    """y = z w + noise: z [T, n, m], w [T, m] -> y [T, n] (see `add_noise`)."""
    return add_noise(seed, tf.einsum("tnm,tm->tn", z, w), noise, noise_scale)
