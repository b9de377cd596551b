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
normalised over it, with Sigma from `sdis_tf.data.covariances`: (1 - rho) I +
rho 1 1^T ('harder_gauss' = 'equicorrelated', the paper's choice), rho^|j-k|
('gauss' = 'toeplitz') or I ('iid'); 'uniform' gives 1/480,000 to every point.
Because the grid is bounded (|z| <~ 1.7), the correlation of p is smaller than
rho: see `distribution_correlation`.

`make_latents` jitters and standardises any rows of factor values the same way
(a labelled-factor file's rows, complete grid or not), with gap_k the spacing of
factor k's grid (`grid_gaps`); by default the 3D Shapes grid.

`make_task_latents` applies the factor roles (`sdis_tf.data.roles`): the rows
are grouped into cells, one per distinct combination of the task factors'
values (the nuisance factors vary inside a cell); each cell is jittered and
standardised as above over the task factors only (its "coordinates", where
p_{alpha,rho} lives), and its latents z are the task factors' encodings
(continuous, categorical indicators, periodic cos / sin), each column
standardised over the cells. Every row gets the z of its cell. A draw
(`GridSampler`) picks a cell from p_{alpha,rho}, then one of the cell's rows
uniformly: for a complete grid, the nuisances are uniform over their values.
When every row is its own cell and every task factor is continuous (3D Shapes
and the renderer with every role continuous), this is `make_latents` and the
sampler's draws are those over the rows.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from sdis_tf.data import covariances
from sdis_tf.data import roles as roles_lib

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
NUM_POINTS = int(np.prod(FACTOR_SIZES))
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
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


def grid_gaps(grid: Sequence[np.ndarray]) -> np.ndarray:
    """gap_k `[K]` (float64): the spacing of factor k, the smallest difference of consecutive
    values of its sorted distinct values `grid[k]` (second minus first when evenly spaced)."""
    gaps = []
    for values in grid:
        steps = np.diff(values)
        even = np.allclose(steps, steps[0], rtol=1e-9, atol=0.0)
        gaps.append(steps[0] if even else steps.min())
    return np.array(gaps, np.float64)


@dataclasses.dataclass(frozen=True)
class Latents:
    """The jittered, standardised rows (`make_latents`; N = 480,000, K = 6 for 3D Shapes).

    Attributes:
      alpha: jitter level (the authors' `z_noise_scale`).
      factors: `[N, K]` float64, factor values + jitter, dataset units
        (what the renderer draws when asked to render jittered latents).
      z: `[N, K]` float64, `(factors - mean) / std`.
      mean, std: `[K]` float64, over the N rows (std with ddof=0).
    """

    alpha: float
    factors: np.ndarray
    z: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def make_latents(factors: np.ndarray | None = None, grid: Sequence[np.ndarray] | None = None,
                 *, alpha: float = 1.0, seed: int = JITTER_SEED) -> Latents:
    """The jittered, standardised rows (module docstring).

        factors + u,  u_ik ~ U(-alpha gap_k / 2, alpha gap_k / 2) drawn once from `seed`,
        z = (factors + u - mean) / std over the N rows.

    Args:
      factors: `[N, K]` factor values of the rows; None: the 3D Shapes grid
        (`grid_factors()`).
      grid: K sorted arrays, the distinct values of each factor (`grid_gaps`); given
        with `factors`, None with it (then `factor_values()`).
      alpha: jitter level (the authors' `z_noise_scale`), >= 0.
      seed: seed of the jitter draw.
    """
    if (factors is None) != (grid is None):
        raise ValueError("make_latents: give both factors and grid, or neither (3D Shapes)")
    if factors is None:
        factors, grid = grid_factors(), factor_values()
    if len(grid) != factors.shape[1]:
        raise ValueError(f"make_latents: grid has {len(grid)} factors, factors has "
                         f"{factors.shape[1]} columns")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha (z_noise_scale) must be a finite number >= 0; got {alpha}")
    half = alpha * grid_gaps(grid) / 2.0
    jittered = factors + np.random.default_rng(seed).uniform(-half, half, size=factors.shape)
    mean = jittered.mean(axis=0)
    std = jittered.std(axis=0)
    return Latents(alpha=float(alpha), factors=jittered, z=(jittered - mean) / std,
                   mean=mean, std=std)


def parse_distribution(name: str) -> tuple[str, float]:
    """'harder_gauss_0.9' -> ('harder_gauss', 0.9); 'uniform' -> ('uniform', 0.0).

    Accepts the authors' `z_dist` strings and the names of `covariances`:
    'uniform', 'iid', '<kind>_<rho>' for kind harder_gauss, gauss, equicorrelated, toeplitz.
    """
    if name in ("uniform", "iid"):
        return name, 0.0
    kinds = "|".join(sorted(set(covariances.KINDS) - {"iid"} | set(covariances.ALIASES)))
    match = re.fullmatch(rf"({kinds})_(-?[0-9.]+(?:e-?[0-9]+)?)", name)
    if match is None:
        raise ValueError(f"distribution must be 'uniform', 'iid' or '<kind>_<rho>' with kind "
                         f"one of {kinds.replace('|', ', ')}; got {name!r}")
    return match.group(1), float(match.group(2))


def log_probs(z: np.ndarray, kind: str, rho: float = 0.0) -> np.ndarray:
    """log p(i) `[N]` (float64), normalised over the N points z `[N, d]`.

    log p(i) = -z_i^T Sigma^{-1} z_i / 2 - logsumexp_j(-z_j^T Sigma^{-1} z_j / 2),
    Sigma = `covariances.covariance(kind, d, rho)`; kind 'uniform' gives -log N for
    every point.
    """
    z = np.asarray(z, np.float64)
    if kind == "uniform":
        return np.full(z.shape[0], -np.log(z.shape[0]))
    precision = np.linalg.inv(covariances.covariance(kind, z.shape[1], rho))
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


def combination_ids(levels: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """One id per distinct row of `levels` `[N, J]` (level indices, column j in
    [0, sizes[j])): `[N]` int64 in [0, number of distinct rows), in the rows' sorted order
    (all 0 when J = 0)."""
    sizes = np.asarray(sizes, np.int64)
    if not len(sizes):
        return np.zeros(len(levels), np.int64)
    if np.prod(sizes.astype(np.float64)) < 2.0 ** 62:
        _, ids = np.unique(np.ravel_multi_index(levels.T, sizes), return_inverse=True)
    else:
        _, ids = np.unique(levels, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class CellRows:
    """The rows of each cell: cell c holds rows `order[starts[c]:starts[c] + counts[c]]`.

    Attributes:
      order: `[N]` int64, the row indices sorted by cell (file order inside a cell).
      starts, counts: `[M]` int64.
    """

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, cell_of_row: np.ndarray, num_cells: int) -> "CellRows":
        order = np.argsort(cell_of_row, kind="stable")
        counts = np.bincount(cell_of_row, minlength=num_cells)
        return cls(order.astype(np.int64), np.cumsum(counts) - counts, counts.astype(np.int64))


class GridSampler:
    """Draws indices i.i.d. from a distribution over M points (cells).

    The CDF is computed once (float64); a draw of shape S costs one stateless
    uniform draw and a binary search, O(|S| log M): no per-step work over the
    whole grid. With `cells`, the drawn cell c is then replaced by one of its
    rows, uniformly (a second uniform draw from a seed folded from `seed`), so
    the result indexes rows. `sample(shape, seed)` is a pure function of `seed`,
    usable in `tf.function` and `tf.data`.
    """

    def __init__(self, logp: np.ndarray, cells: CellRows | None = None):
        logp = np.asarray(logp, np.float64)
        if logp.ndim != 1 or not np.all(np.isfinite(logp)):
            raise ValueError("logp must be a finite 1-D array of log-probabilities")
        if cells is not None and len(cells.counts) != logp.shape[0]:
            raise ValueError(f"{len(cells.counts)} cells for {logp.shape[0]} probabilities")
        cdf = np.cumsum(np.exp(logp - logp.max()))
        self.num_points = logp.shape[0]
        self._cdf = tf.constant(cdf / cdf[-1], tf.float64)
        self._cells = None if cells is None else tuple(
            tf.constant(a, tf.int64) for a in (cells.order, cells.starts, cells.counts))

    def sample(self, shape, seed) -> tf.Tensor:
        """int32 indices `shape`; `seed` is a shape-[2] int tensor (stateless RNG)."""
        size = [tf.reduce_prod(shape)]
        u = tf.random.stateless_uniform(size, seed, dtype=tf.float64)
        flat = tf.searchsorted(self._cdf, u, side="right", out_type=tf.int32)
        flat = tf.minimum(flat, self.num_points - 1)
        if self._cells is not None:
            order, starts, counts = self._cells
            row_seed = tf.random.experimental.stateless_fold_in(seed, 1)
            v = tf.random.stateless_uniform(size, row_seed, dtype=tf.float64)
            count = tf.gather(counts, flat)
            pick = tf.minimum(tf.cast(v * tf.cast(count, tf.float64), tf.int64), count - 1)
            flat = tf.cast(tf.gather(order, tf.gather(starts, flat) + pick), tf.int32)
        return tf.reshape(flat, shape)


def make_sampler(latents: Latents | TaskLatents,
                 distribution: str = "harder_gauss_0.9") -> GridSampler:
    """`GridSampler` of row indices for p_{alpha,rho}; `distribution` as in
    `parse_distribution`.

    `Latents`: p over its rows' z. `TaskLatents`: p over its cells' coordinates, then a
    row of the drawn cell uniformly (module docstring).
    """
    kind, rho = parse_distribution(distribution)
    if isinstance(latents, TaskLatents):
        return GridSampler(log_probs(latents.coordinates, kind, rho), latents.cells)
    return GridSampler(log_probs(latents.z, kind, rho))


@dataclasses.dataclass(frozen=True)
class TaskLatents:
    """The latents of a source's rows under factor roles (`make_task_latents`).

    N rows, K factors, K_t task factors, M cells (distinct task-factor combinations),
    d latent columns (`roles.num_latents`).

    Attributes:
      roles: the factor roles (`sdis_tf.data.roles.Roles`).
      alpha: jitter level.
      factors: `[N, K]` float64, every row's factor values with the task factors
        jittered (the cell's offset): what the renderer draws with `render_jittered`.
      z: `[N, d]` float64, the latents of every row (its cell's), standardised.
      coordinates: `[M, K_t]` float64, the cells' jittered, standardised task-factor
        values: p_{alpha,rho} is a density over these.
      cell_of_row: `[N]` int64.
      cells: the rows of each cell (`CellRows`), None when every row is its own cell.
      latent_mean, latent_std: `[d]`, the standardisation of the encoded columns
        (z = (encoding - mean) / std).
    """

    roles: roles_lib.Roles
    alpha: float
    factors: np.ndarray
    z: np.ndarray
    coordinates: np.ndarray
    cell_of_row: np.ndarray
    cells: CellRows | None
    latent_mean: np.ndarray
    latent_std: np.ndarray

    def task_values(self, z: np.ndarray) -> np.ndarray:
        """Task-factor values `[N, K_t]` of latents `[N, d]`, decoded (`FactorRole.decode`):
        continuous and periodic values jittered, periodic ones modulo P / s, classes."""
        encoded = np.asarray(z, np.float64) * self.latent_std + self.latent_mean
        column = np.cumsum([0] + [role.width for role in self.roles.task])
        return np.stack([role.decode(encoded[:, column[j]:column[j + 1]])
                         for j, role in enumerate(self.roles.task)], axis=1)

    def classes(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """{categorical factor name: class values `[n]` of rows `indices`}."""
        return {role.name: self.factors[indices, role.column]
                for role in self.roles.task if role.kind == "categorical"}


def make_task_latents(factor_table: np.ndarray, grid: Sequence[np.ndarray],
                      roles: roles_lib.Roles, *, alpha: float = 1.0,
                      seed: int = JITTER_SEED) -> TaskLatents:
    """The latents of every row of `factor_table` under `roles` (module docstring).

        cells      distinct task-factor combinations, in order of first appearance
        jitter     u_c ~ U(-alpha gap_k / 2, alpha gap_k / 2) per cell and task factor
                   (`make_latents` on the cells' task values)
        z_c        [encode_k(v_ck + u_ck) for each task factor k] (categorical: the
                   class, unjittered), each column standardised over the M cells
        z_i        z of row i's cell

    Args:
      factor_table: `[N, K]` factor values of the rows.
      grid: K sorted arrays, the distinct values of each factor.
      roles: the factor roles (`roles.resolve_roles`).
      alpha, seed: jitter level (>= 0) and the seed of its draw.
    """
    columns = list(roles.task_columns)
    task_grid = [np.asarray(grid[k], np.float64) for k in columns]
    levels = np.stack([np.searchsorted(values, factor_table[:, k])
                       for values, k in zip(task_grid, columns)], axis=1)
    _, first, cell_of_row = np.unique(combination_ids(levels, [len(v) for v in task_grid]),
                                      return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))      # cells in order of first appearance
    cell_of_row = rank[cell_of_row].astype(np.int64)
    first_rows = np.sort(first)
    cell_values = factor_table[first_rows][:, columns].astype(np.float64)
    jittered = make_latents(cell_values, task_grid, alpha=alpha, seed=seed)
    encoded = np.concatenate([
        role.encode(cell_values[:, j] if role.kind == "categorical" else jittered.factors[:, j])
        for j, role in enumerate(roles.task)], axis=1)
    mean, std = encoded.mean(axis=0), encoded.std(axis=0)
    z_cells = (encoded - mean) / std
    continuous = [j for j, role in enumerate(roles.task) if role.kind == "continuous"]
    at = np.cumsum([0] + [role.width for role in roles.task])[continuous]
    z_cells[:, at] = jittered.z[:, continuous]          # bit for bit `make_latents`' z
    mean[at], std[at] = jittered.mean[continuous], jittered.std[continuous]
    factors = np.array(factor_table, np.float64)
    factors[:, columns] = jittered.factors[cell_of_row]
    classes = [role.column for role in roles.task if role.kind == "categorical"]
    factors[:, classes] = factor_table[:, classes]                 # classes unjittered
    one_per_row = len(first_rows) == len(factor_table)
    return TaskLatents(
        roles=roles, alpha=float(alpha), factors=factors, z=z_cells[cell_of_row],
        coordinates=jittered.z, cell_of_row=cell_of_row,
        cells=None if one_per_row else CellRows.of(cell_of_row, len(first_rows)),
        latent_mean=mean, latent_std=std)
