"""Evaluation of the disentanglement experiment: MCC, R, DCI, ICA, factor sweeps.

The points are rows of the run's factor table `[N, K]` (`ImageSource.factor_table`):
the 480,000 points of the 3D Shapes grid for the renderer and the real file,
the file's rows for any other labelled-factor file (whose grid may be
incomplete). Two point sets, both fixed for the whole run (drawn from the
run's seed):

- the factor grid (`grid`): the paper's out-of-distribution evaluation, every
  row (`grid_points = 0`) or a uniform subsample without replacement;
- the training distribution (`train`): `train_points` i.i.d. draws from
  p_{alpha,rho}, the correlated distribution the tasks use.

For each set the codes f(x) (inference mode: moving batch-norm statistics) are
compared with the jittered, standardised latents z [N, K] of the same rows:
`mcc` (Pearson + Hungarian), `r` (mean multiple correlation) and the DCI
`dci_d`, `dci_c` (sdis_tf.metrics). The '+ ICA' baseline fits linear ICA
(sdis_tf.ica, seeded FastICA) on the training-distribution codes and scores
the unmixed grid codes: `ica_mcc`, `ica_r`, `ica_dci_d`, `ica_dci_c`.

Single-factor sweeps (paper Figs. 11-14): from a reference row, for each
factor k the rows that differ from it in factor k only, one per value of k,
sorted by that value (`sweep_rows`); the plot shows every code's response,
codes in the order and sign matched to the factors by the grid MCC. The
reference row is the one with the most such rows (all rows tie on a complete
grid), closest to the grid centre (level size_k // 2 of each factor).
"""

from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from sdis_tf import ica as ica_lib
from sdis_tf import metrics

Encode = Callable[[np.ndarray], np.ndarray]
"""encode(row indices [N]) -> codes [N, m] (float64, inference mode)."""


def scores(z: np.ndarray, codes: np.ndarray, prefix: str = "", suffix: str = "") -> dict:
    """{mcc, r, dci_d, dci_c} (with `prefix`/`suffix` on the names) of codes against z.

    Degenerate codes (a constant or non-finite column, e.g. dead units early
    in training) give NaN scores instead of an exception.
    """
    names = [f"{prefix}{name}{suffix}" for name in ("mcc", "r", "dci_d", "dci_c")]
    try:
        values = [metrics.mcc(z, codes), metrics.multiple_correlation(z, codes),
                  *metrics.dci(z, codes)]
    except ValueError:
        values = [float("nan")] * 4
    return dict(zip(names, (float(v) for v in values)))


def grid_points(num_points: int, seed: int, num_rows: int) -> np.ndarray:
    """Sorted row indices: all `num_rows` rows for num_points = 0 (or >= num_rows),
    else a uniform subsample of `num_points` without replacement drawn from `seed`."""
    if num_points <= 0 or num_points >= num_rows:
        return np.arange(num_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, num_points, replace=False))


def factor_levels(factor_table: np.ndarray) -> tuple[np.ndarray, tuple]:
    """levels [N, K] int64 (index of each value among the factor's sorted distinct
    values) and the K sorted arrays of distinct values, of factors [N, K]."""
    columns = [np.unique(factor_table[:, k], return_inverse=True)
               for k in range(factor_table.shape[1])]
    levels = np.stack([inverse.reshape(-1) for _, inverse in columns], axis=1)
    return levels.astype(np.int64), tuple(values for values, _ in columns)


def sweep_rows(factor_table: np.ndarray) -> list[np.ndarray]:
    """For each factor k, row indices [n_k] of its sweep through the reference row.

    Row r belongs to sweep k if it equals the reference row on every factor
    but k; one row per value of factor k (the first in file order), sorted by
    that value, the reference row included. See the module docstring for the
    reference row.
    """
    levels, values = factor_levels(factor_table)
    sizes = np.array([len(v) for v in values], np.int64)
    num_rows, num_factors = levels.shape
    others_keys, coverage = [], np.zeros(num_rows, np.int64)
    for k in range(num_factors):
        others, other_sizes = np.delete(levels, k, axis=1), np.delete(sizes, k)
        # One id per combination of the other factors' levels.
        if np.prod(other_sizes.astype(np.float64)) < 2.0 ** 62:
            flat = np.ravel_multi_index(others.T, other_sizes) if len(other_sizes) else \
                np.zeros(num_rows, np.int64)
            _, key = np.unique(flat, return_inverse=True)
        else:
            _, key = np.unique(others, axis=0, return_inverse=True)
        key = key.reshape(-1)
        # Distinct values of factor k per combination = the sweep length through any row.
        pairs = np.sort(key * sizes[k] + levels[:, k])
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
        counts = np.bincount(pairs // sizes[k], minlength=key.max() + 1)
        coverage += counts[key]
        others_keys.append(key)
    distance = np.abs(levels - sizes // 2).sum(axis=1)
    reference = int(np.lexsort((distance, -coverage))[0])
    sweeps = []
    for k, key in enumerate(others_keys):
        rows = np.flatnonzero(key == key[reference])
        _, first = np.unique(levels[rows, k], return_index=True)   # sorted by value
        sweeps.append(rows[first])
    return sweeps


class Evaluator:
    """Scores an encoder on the grid and training-distribution rows (module docstring).

    Args:
      encode: row indices [N] -> codes [N, m].
      latents: the run's `latents.Latents` (z [rows, K] of every row).
      grid_indices: the rows to score on.
      train_indices: draws from the training distribution (also fit the ICA).
      sweeps: row indices of each factor's sweep (`sweep_rows`).
      ica: also compute the ICA scores.
      seed: seed of the ICA fit.
    """

    def __init__(self, encode: Encode, latents, grid_indices: np.ndarray,
                 train_indices: np.ndarray, sweeps: Sequence[np.ndarray], *, ica: bool,
                 seed: int = 0):
        self.encode, self.latents, self.ica, self.seed = encode, latents, ica, seed
        self.grid_indices, self.train_indices = grid_indices, train_indices
        self.sweep_indices = list(sweeps)
        self.matching = None  # (permutation [K], signs [K]) of the last grid MCC

    def __call__(self) -> dict:
        """All scalar scores: mcc, r, dci_d, dci_c, *_train, ica_* (see the module docstring)."""
        z_grid = self.latents.z[self.grid_indices]
        codes_grid = self.encode(self.grid_indices)
        result = scores(z_grid, codes_grid)
        if np.isfinite(result["mcc"]):
            _, permutation, signs = metrics.mcc(z_grid, codes_grid, return_matching=True)
            self.matching = (permutation, signs)
        codes_train = self.encode(self.train_indices)
        result.update(scores(self.latents.z[self.train_indices], codes_train, suffix="_train"))
        if self.ica:
            try:
                unmixed = ica_lib.fit_ica(codes_train, seed=self.seed).transform(codes_grid)
            except ValueError:  # constant codes cannot be whitened
                unmixed = np.full_like(codes_grid, np.nan)
            result.update(scores(z_grid, unmixed, prefix="ica_"))
        return result

    def sweeps(self) -> list[np.ndarray]:
        """Codes [n_k, m] along each factor's sweep."""
        return [self.encode(indices) for indices in self.sweep_indices]


def sweep_figure(sweeps: list[np.ndarray], values: Sequence[np.ndarray],
                 factor_names: Sequence[str], matching=None, title: str = "") -> np.ndarray:
    """RGB image [H, W, 3] uint8: one panel per factor k, every code's response to its sweep.

    `sweeps[k]` [n_k, m] are the codes along factor k's sweep, `values[k]` [n_k]
    that factor's values there. With `matching` = (permutation, signs) from the
    grid MCC, code j is drawn as signs[i] * code[permutation[i]] and labelled
    after factor i, so a disentangled encoder shows one moving line per panel,
    the panel's own.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    num_codes = sweeps[0].shape[1]
    order, signs = np.arange(num_codes), np.ones(num_codes)
    labels = [f"code {j}" for j in range(num_codes)]
    if matching is not None:
        permutation, matched_signs = matching
        matched = [j for j in permutation if j >= 0]
        rest = [j for j in range(num_codes) if j not in matched]
        order = np.array(matched + rest)
        signs = np.concatenate([np.where(matched_signs[permutation >= 0] < 0, -1.0, 1.0),
                                np.ones(len(rest))])
        names = [factor_names[i] for i in range(len(permutation)) if permutation[i] >= 0]
        labels = [f"~{name}" for name in names] + [f"code {j}" for j in rest]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(2.6 * len(sweeps), 2.6), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for k, (ax, codes) in enumerate(zip(axes, sweeps)):
        for position, (j, sign) in enumerate(zip(order, signs)):
            ax.plot(values[k], sign * codes[:, j], marker=".",
                    label=labels[position], color=plt.cm.tab10(position % 10))
        ax.set_title(f"vary {factor_names[k]}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("code value")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return tf.io.decode_png(buffer.getvalue(), channels=3).numpy()
