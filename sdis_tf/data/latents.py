"""The 3D Shapes factor grid and the paper's latent distributions p_{alpha,rho}.

The grid (Burgess & Kim, 2018) is the product of six factors, stored in this
order with orientation varying fastest (row-major):

    floor hue    10 values  0.0, 0.1, ..., 0.9
    wall hue     10 values  0.0, 0.1, ..., 0.9
    object hue   10 values  0.0, 0.1, ..., 0.9
    scale         8 values  linspace(0.75, 1.25, 8)
    shape         4 values  0 cube, 1 cylinder, 2 sphere, 3 capsule
    orientation  15 values  linspace(-30, 30, 15) degrees (camera azimuth)

480,000 grid points in all; grid index i has the factor indices
`np.unravel_index(i, FACTOR_SIZES)`.

Latents (appendix D.2.1 of Lachapelle et al., 2023). With gap_k the spacing of
factor k and a jitter level alpha >= 0, every grid point z gets one fixed offset

    u_z ~ U([-alpha gap_1 / 2, alpha gap_1 / 2] x ... x [-alpha gap_6 / 2, ...])

drawn once from a seed, so z -> z + u_z is deterministic. For alpha <= 1 the
offsets never swap neighbouring grid values. The jittered factors are then
standardised to zero mean and unit variance over the 480,000 points (jitter
first, then standardise, as in the authors' code). The latent distribution

    p_{alpha,rho}(i)  proportional to  N(z_i; 0, Sigma),   i = 0 .. 479,999

is a Gaussian density evaluated on the jittered standardised grid and
normalised over it, with Sigma = (1 - rho) I + rho 1 1^T ('harder_gauss',
the paper's choice) or Sigma_jk = rho^|j-k| ('gauss'); 'uniform' gives
1/480,000 to every point. Because the grid is bounded (|z| <~ 1.7), the
correlation of p is smaller than rho: see `distribution_correlation`.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
NUM_POINTS = int(np.prod(FACTOR_SIZES))
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
DISTRIBUTIONS = ("uniform", "harder_gauss", "gauss")
# Seed of the authors' jitter draw (sparsemeta/datasets/regression_3dshapes.py).
JITTER_SEED = 546243265


def factor_values() -> tuple[np.ndarray, ...]:
    """The sorted values of each factor, in the dataset's units (float64)."""
    hue = np.arange(10) / 10.0
    return (
        hue,
        hue.copy(),
        hue.copy(),
        np.linspace(0.75, 1.25, 8),
        np.arange(4, dtype=np.float64),
        np.linspace(-30.0, 30.0, 15),
    )


def factor_gaps() -> np.ndarray:
    """gap_k = second minus first value of factor k, `[6]` float64."""
    return np.array([v[1] - v[0] for v in factor_values()])


def grid_factors(indices=None) -> np.ndarray:
    """Factor values `[N, 6]` (float64, dataset units) of grid indices `[N]`.

    Args:
      indices: integer array of grid indices in [0, 480000); None for all.
    """
    if indices is None:
        indices = np.arange(NUM_POINTS)
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= NUM_POINTS):
        raise ValueError(f"indices must lie in [0, {NUM_POINTS}); got range "
                         f"[{indices.min()}, {indices.max()}]")
    levels = np.unravel_index(indices, FACTOR_SIZES)
    return np.stack([v[k] for v, k in zip(factor_values(), levels)], axis=-1)


def grid_factors_tf(indices: tf.Tensor) -> tf.Tensor:
    """TF version of `grid_factors`: int indices `[...]` -> float32 `[..., 6]`."""
    indices = tf.cast(indices, tf.int64)
    strides = np.cumprod((1,) + FACTOR_SIZES[::-1])[:-1][::-1]
    columns = []
    for values, size, stride in zip(factor_values(), FACTOR_SIZES, strides):
        level = (indices // int(stride)) % size
        columns.append(tf.gather(tf.constant(values, tf.float32), level))
    return tf.stack(columns, axis=-1)


def grid_jitter(alpha: float, seed: int = JITTER_SEED) -> np.ndarray:
    """Fixed offsets `[480000, 6]` (dataset units): U(-alpha gap_k/2, alpha gap_k/2)."""
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha (z_noise_scale) must be a finite number >= 0; got {alpha}")
    half = alpha * factor_gaps() / 2.0
    return np.random.default_rng(seed).uniform(-half, half, size=(NUM_POINTS, 6))


@dataclasses.dataclass(frozen=True)
class Latents:
    """The jittered, standardised grid.

    Attributes:
      alpha: jitter level (the authors' `z_noise_scale`).
      factors: `[480000, 6]` float64, grid values + jitter, dataset units
        (what the renderer draws when asked to render jittered latents).
      z: `[480000, 6]` float64, `(factors - mean) / std`.
      mean, std: `[6]` float64, over the 480,000 points (std with ddof=0).
    """

    alpha: float
    factors: np.ndarray
    z: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def make_latents(alpha: float = 1.0, seed: int = JITTER_SEED) -> Latents:
    """Jitters the grid with level `alpha`, then standardises each factor."""
    factors = grid_factors() + grid_jitter(alpha, seed)
    mean = factors.mean(axis=0)
    std = factors.std(axis=0)
    return Latents(alpha=float(alpha), factors=factors, z=(factors - mean) / std,
                   mean=mean, std=std)


def covariance(kind: str, rho: float, dim: int = 6) -> np.ndarray:
    """Sigma `[dim, dim]`: 'harder_gauss' (1-rho) I + rho 11^T; 'gauss' rho^|j-k|."""
    if kind == "harder_gauss":
        if dim == 1:
            return np.ones((1, 1))  # one factor: no correlation to speak of
        if not -1.0 / (dim - 1) < rho < 1.0:
            raise ValueError(f"rho must lie in (-1/{dim - 1}, 1) for 'harder_gauss'; got {rho}")
        return (1.0 - rho) * np.eye(dim) + rho * np.ones((dim, dim))
    if kind == "gauss":
        if not -1.0 < rho < 1.0:
            raise ValueError(f"rho must lie in (-1, 1) for 'gauss'; got {rho}")
        lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
        return rho ** lags
    raise ValueError(f"kind must be one of 'harder_gauss', 'gauss'; got {kind!r}")


def parse_distribution(name: str) -> tuple[str, float]:
    """'harder_gauss_0.9' -> ('harder_gauss', 0.9); 'uniform' -> ('uniform', 0.0).

    Accepts the authors' `z_dist` strings.
    """
    if name == "uniform":
        return "uniform", 0.0
    match = re.fullmatch(r"(harder_gauss|gauss)_(-?[0-9.]+(?:e-?[0-9]+)?)", name)
    if match is None:
        raise ValueError(f"distribution must be 'uniform', 'harder_gauss_<rho>' or "
                         f"'gauss_<rho>'; got {name!r}")
    return match.group(1), float(match.group(2))


def log_probs(z: np.ndarray, kind: str, rho: float = 0.0) -> np.ndarray:
    """log p(i) `[N]` (float64), normalised over the N points z `[N, d]`.

    log p(i) = -z_i^T Sigma^{-1} z_i / 2 - logsumexp_j(-z_j^T Sigma^{-1} z_j / 2);
    kind 'uniform' gives -log N for every point.
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"kind must be one of {DISTRIBUTIONS}; got {kind!r}")
    z = np.asarray(z, np.float64)
    if kind == "uniform":
        return np.full(z.shape[0], -np.log(z.shape[0]))
    precision = np.linalg.inv(covariance(kind, rho, z.shape[1]))
    energy = -0.5 * np.einsum("nj,jk,nk->n", z, precision, z)
    top = energy.max()
    return energy - (top + np.log(np.exp(energy - top).sum()))


def distribution_correlation(z: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Exact Pearson correlation `[d, d]` of z `[N, d]` under p = exp(logp)."""
    p = np.exp(logp)
    mean = p @ z
    centred = z - mean
    cov = (centred * p[:, None]).T @ centred
    scale = np.sqrt(np.diag(cov))
    return cov / np.outer(scale, scale)


class GridSampler:
    """Draws grid indices i.i.d. from a distribution over the N grid points.

    The CDF is computed once (float64); a draw of shape S costs one stateless
    uniform draw and a binary search, O(|S| log N): no per-step work over the
    whole grid. `sample(shape, seed)` is a pure function of `seed`, usable in
    `tf.function` and `tf.data`.
    """

    def __init__(self, logp: np.ndarray):
        logp = np.asarray(logp, np.float64)
        if logp.ndim != 1 or not np.all(np.isfinite(logp)):
            raise ValueError("logp must be a finite 1-D array of log-probabilities")
        cdf = np.cumsum(np.exp(logp - logp.max()))
        self.num_points = logp.shape[0]
        self._cdf = tf.constant(cdf / cdf[-1], tf.float64)

    def sample(self, shape, seed) -> tf.Tensor:
        """int32 indices `shape`; `seed` is a shape-[2] int tensor (stateless RNG)."""
        u = tf.random.stateless_uniform([tf.reduce_prod(shape)], seed, dtype=tf.float64)
        flat = tf.searchsorted(self._cdf, u, side="right", out_type=tf.int32)
        flat = tf.minimum(flat, self.num_points - 1)
        return tf.reshape(flat, shape)


def make_sampler(latents: Latents, distribution: str = "harder_gauss_0.9") -> GridSampler:
    """`GridSampler` for p_{alpha,rho} on `latents.z`; `distribution` as in `parse_distribution`."""
    kind, rho = parse_distribution(distribution)
    return GridSampler(log_probs(latents.z, kind, rho))
