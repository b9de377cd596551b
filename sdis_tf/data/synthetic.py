"""Synthetic disentanglement data: correlated latents through a fixed invertible mixing.

Latents z in R^m are Gaussian with unit variances and correlation rho, their
covariance Sigma one of `sdis_tf.data.covariances` (`structure`):
- "equicorrelated": Sigma = (1 - rho) I + rho 1 1^T (the reference code's
  `harder_gauss_rho`);
- "toeplitz": Sigma_ij = rho^|i - j| (the reference code's `gauss_rho`);
- "iid": Sigma = I.

Observations are x = g(z) in R^d, d >= m, with g a fixed random leaky-ReLU MLP
(`Mixing`) whose layers are well conditioned: the first is an injective
d x m map, the others square d x d, each with singular values in
[1/sqrt(kappa), sqrt(kappa)], so g is a bijection onto its image with an
explicit inverse. Seeded by an integer, so a run's mixing is a function of
its config.

All sampling is stateless (seed = shape-[2] integer tensor): see
`sdis_tf.data.tasks`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sdis_tf import config_schema as cs
from sdis_tf.data import covariances
from sdis_tf.data import tasks as tasks_lib

SCHEMA = {
    "num_latents": cs.COUNT,
    "dim": cs.COUNT,
    "rho": cs.CORRELATION,
    "structure": cs.Choice(*covariances.KINDS),
    "mixing_layers": cs.COUNT,
    "mixing_slope": cs.Float(min=0.0, max=1.0, min_open=True),
    "mixing_condition": cs.Float(min=1.0),
    "n_support": cs.COUNT,
    "n_query": cs.Int(min=0),
}
"""Schema of a `config.data` section for synthetic data (see `config_schema`)."""


def schema_problems(data: dict, path: str = "config.data") -> list[str]:
    """Cross-field checks of a valid `config.data` section."""
    if data["dim"] < data["num_latents"]:
        return [f"{path}.dim = {data['dim']} must be >= {path}.num_latents = "
                f"{data['num_latents']} (the mixing must be injective)"]
    return []


def sample_latents(seed, shape, num_latents: int, rho: float,
                   structure: str = "equicorrelated", dtype=tf.float32) -> tf.Tensor:
    """z [*shape, m] ~ N(0, Sigma), as eps L^T with Sigma = L L^T
    (Sigma = `covariances.covariance(structure, m, rho)`)."""
    chol = np.linalg.cholesky(covariances.covariance(structure, num_latents, rho))
    eps = tf.random.stateless_normal(tuple(shape) + (num_latents,), seed, dtype=dtype)
    return tf.linalg.matvec(tf.constant(chol, dtype), eps)


def _well_conditioned(rng, rows, cols, condition):
    """A rows x cols matrix U diag(s) V^T, orthonormal U, V, s in [1/sqrt(k), sqrt(k)]."""
    u, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, cols)))
    s = np.exp(rng.uniform(-0.5, 0.5, cols) * np.log(condition))
    return (u * s) @ v.T


class Mixing:
    """A fixed random invertible leaky-ReLU MLP g: R^m -> R^d.

    g(z) = A_L( a( ... a(A_1 z + b_1) ... ) ) + b_L with a(u) = max(u, slope u),
    A_1 [d, m] injective, A_2..A_L [d, d] invertible, every A_l with condition
    number <= kappa. The output is standardised (per-coordinate mean 0, std 1
    under z ~ N(0, I)); the standardisation is folded into A_L, b_L.

    Args:
      seed: integer seed of the random layers.
      num_latents, dim: m and d (d >= m).
      num_layers: L >= 1 linear layers (L - 1 nonlinearities).
      slope: leaky-ReLU negative slope, in (0, 1].
      condition: kappa >= 1.
    """

    def __init__(self, seed: int, num_latents: int, dim: int, *, num_layers: int = 3,
                 slope: float = 0.2, condition: float = 4.0):
        if dim < num_latents:
            raise ValueError(f"dim must be >= num_latents={num_latents}. Received: dim={dim}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1. Received: num_layers={num_layers}")
        if not 0.0 < slope <= 1.0:
            raise ValueError(f"slope must be in (0, 1]. Received: slope={slope}")
        rng = np.random.default_rng(seed)
        self.num_latents, self.dim, self.slope = num_latents, dim, slope
        self._weights = [_well_conditioned(rng, dim, num_latents, condition)]
        self._weights += [_well_conditioned(rng, dim, dim, condition)
                          for _ in range(num_layers - 1)]
        self._biases = [0.5 * rng.standard_normal(dim) for _ in range(num_layers)]
        x = self._forward_np(rng.standard_normal((20000, num_latents)))
        mean, std = x.mean(axis=0), x.std(axis=0)
        self._weights[-1] = self._weights[-1] / std[:, None]
        self._biases[-1] = (self._biases[-1] - mean) / std

    def _forward_np(self, z):
        h = z
        for i, (a, b) in enumerate(zip(self._weights, self._biases)):
            h = h @ a.T + b
            if i < len(self._weights) - 1:
                h = np.maximum(h, self.slope * h)
        return h

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        """x = g(z): z [..., m] -> x [..., d] (dtype of z)."""
        h = z
        for i, (a, b) in enumerate(zip(self._weights, self._biases)):
            h = tf.linalg.matvec(tf.constant(a, z.dtype), h) + tf.constant(b, z.dtype)
            if i < len(self._weights) - 1:
                h = tf.maximum(h, self.slope * h)
        return h

    def inverse(self, x: tf.Tensor) -> tf.Tensor:
        """z = g^{-1}(x) for x in the image of g: x [..., d] -> z [..., m]."""
        h = x
        for i in reversed(range(len(self._weights))):
            a, b = self._weights[i], self._biases[i]
            h = tf.linalg.matvec(tf.constant(np.linalg.pinv(a), x.dtype), h - tf.constant(b, x.dtype))
            if i > 0:
                h = tf.minimum(h, h / self.slope)
        return h


def sample_tasks(seed, mixing: Mixing, *, num_tasks: int, n_support: int, n_query: int,
                 rho: float, structure: str, tasks: dict) -> tuple[tasks_lib.TaskBatch, tf.Tensor]:
    """T regression tasks on x = g(z): support and query sets share each task's w_t.

    Args:
      seed: shape-[2] integer tensor.
      mixing: the observation map g.
      num_tasks, n_support, n_query: T, n_s, n_q (n_q = 0: no query set, the
        outer loss then uses the support samples).
      rho, structure: the latent distribution (see `sample_latents`).
      tasks: a `config.tasks` dict (see `sdis_tf.data.tasks.SCHEMA`).
    Returns:
      (TaskBatch with x [T, n, d], y [T, n]; the task weights w [T, m]).
    """
    m = mixing.num_latents
    seed_z, seed_w, seed_s, seed_q = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    z = sample_latents(seed_z, (num_tasks, n_support + n_query), m, rho, structure)
    w = tasks_lib.sample_weights(seed_w, num_tasks, m, tasks["kind"], p=tasks["p"],
                                 block_size=tasks["block_size"],
                                 support_size=tasks["support_size"])
    x = mixing(z)
    noise = dict(noise=tasks["noise"], noise_scale=tasks["noise_scale"])
    y_s = tasks_lib.targets(seed_s, z[:, :n_support], w, **noise)
    if n_query == 0:
        return tasks_lib.TaskBatch(x, y_s), w
    y_q = tasks_lib.targets(seed_q, z[:, n_support:], w, **noise)
    return tasks_lib.TaskBatch(x[:, :n_support], y_s, x[:, n_support:], y_q), w
