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

For each set the codes f(x) [N, m] (inference mode: moving batch-norm
statistics) are compared with the latents z [N, d] of the same rows (the task
factors' latent columns, `latents.TaskLatents`; d = K when every factor is a
continuous task factor): `mcc` (Pearson + Hungarian), `r` (mean multiple
correlation) and the DCI `dci_d`, `dci_c` over the d columns (sdis_tf.metrics),
and per task factor f (`scores`), with J_f its latent columns:

    mcc/<f>        mean over J_f of the MCC's terms |corr(z_i, code matched to i)|
    r/<f>          sqrt(mean over J_f of R^2_i), R^2_i of z_i regressed on all codes
                   (a periodic factor: R of its (cos, sin) pair, its angle score)
    dci_d/<f>      mean over J_f of D_j of the code j matched to column i
    dci_c/<f>      mean over J_f of the completeness C_i
                   (columns left unmatched when m < d have no MCC term nor D)
    codes/<f>      the number of codes whose most correlated latent column is one of
                   J_f: |J_f| when each column has a code of its own; 0 when the
                   encoder spends no code on f (its MCC term then falls far below R)
    class_acc/<f>  categorical factors only: its classes' linear decodability
                   (chance-corrected LDA accuracy from all codes, `metrics.class_decodability`)

For a continuous factor these are the terms whose means are mcc, r, dci_c (and
dci_d when m = d). `mcc_continuous` is the mean of the continuous factors' MCC
terms (the function `mcc_continuous`): the MCC over the factors the
identifiability theorem covers (= mcc when every task factor is continuous).
The '+ ICA' baseline fits linear ICA (sdis_tf.ica, seeded FastICA) on the
training-distribution codes and scores the unmixed grid codes:
`ica_mcc`, `ica_r`, `ica_dci_d`, `ica_dci_c`, `ica_mcc_continuous` and their
per-factor terms (`ica_mcc/<f>`, ...); the training-distribution ones are
`mcc_train`, `mcc_continuous_train`, `mcc_train/<f>`, .... Nuisance factors are
in none of them.

Single-factor sweeps (paper Figs. 11-14): from a reference row, for each
factor k the rows that differ from it in factor k only, one per value of k,
sorted by that value (`sweep_rows`); the plot shows every code's response,
codes in the order and sign matched to the factors by the grid MCC. The
reference row is the one with the most such rows (all rows tie on a complete
grid), closest to the grid centre (level size_k // 2 of each factor).
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from sdis_tf import ica as ica_lib
from sdis_tf import metrics
from sdis_tf.data import latents as latents_lib
from sdis_tf.data import roles as roles_lib

Encode = Callable[[np.ndarray], np.ndarray]
"""encode(row indices [N]) -> codes [N, m] (float64, inference mode)."""


SCORES = ("mcc", "r", "dci_d", "dci_c")
"""The scores of every point set, over all latent columns and per task factor."""


def scores(z: np.ndarray, codes: np.ndarray, roles: roles_lib.Roles,
           classes: dict[str, np.ndarray] | None = None, prefix: str = "", suffix: str = "",
           return_matching: bool = False):
    """Scores of codes `[N, m]` against latents z `[N, d]` (module docstring).

    Keys `<prefix><score><suffix>` for score in SCORES (over the d columns, as
    `metrics.mcc`, `metrics.multiple_correlation`, `metrics.dci`),
    `<prefix>mcc_continuous<suffix>` (`mcc_continuous`), then
    `<prefix><score><suffix>/<factor>` and `<prefix>codes<suffix>/<factor>` for every task
    factor of `roles` and `<prefix>class_acc<suffix>/<factor>` for its categorical ones, whose class
    values `[N]` `classes` holds by name. Degenerate codes (a constant or
    non-finite column, e.g. dead units early in training) give NaN scores instead
    of an exception; so do R and DCI with N < m + 2 (the MCC stays defined) and
    DCI with d or m < 2.

    Returns:
      the dict; with `return_matching`, also (permutation [d], signs [d]) of the MCC
      matching (None for degenerate codes).
    """
    # Per latent column: MCC term, R^2, D of the matched code, C; NaN where undefined.
    matched = r2 = disentanglement = completeness = np.full(z.shape[1], np.nan)
    per_code, matching = np.full(codes.shape[1], np.nan), None
    owner = None                               # per code: its most correlated column
    with contextlib.suppress(ValueError):      # degenerate codes
        corr = metrics.correlation_matrix(z, codes)
        matched, permutation, signs = metrics.match_correlations(corr)
        matching = (permutation, signs)
        owner = np.argmax(np.abs(corr), axis=0)
    with contextlib.suppress(ValueError):      # degenerate codes, N < m + 2
        r2 = metrics.coefficients_of_determination(z, codes)
    with contextlib.suppress(ValueError):      # degenerate codes, N < m + 2, d or m < 2
        per_code, completeness = metrics.dci_terms(z, codes)
        if matching is not None:
            disentanglement = np.where(permutation >= 0, per_code[permutation], np.nan)
    overall = [_mean(matched), np.mean(np.sqrt(r2)), np.mean(per_code), np.mean(completeness)]
    result = {f"{prefix}{name}{suffix}": float(v) for name, v in zip(SCORES, overall)}
    for j, role in enumerate(roles.task):
        group = roles.latent_factor == j
        per_factor = [_mean(matched[group]), float(np.sqrt(np.mean(r2[group]))),
                      _mean(disentanglement[group]), _mean(completeness[group])]
        result.update({f"{prefix}{name}{suffix}/{role.name}": value
                       for name, value in zip(SCORES, per_factor)})
        result[f"{prefix}codes{suffix}/{role.name}"] = (
            float("nan") if owner is None else float(np.isin(owner, np.flatnonzero(group)).sum()))
        if role.kind == "categorical":
            try:
                value = metrics.class_decodability(classes[role.name], codes)
            except ValueError:
                value = float("nan")
            result[f"{prefix}class_acc{suffix}/{role.name}"] = value
    result[f"{prefix}mcc_continuous{suffix}"] = mcc_continuous(
        {role.name: result[f"{prefix}mcc{suffix}/{role.name}"] for role in roles.task},
        roles.as_dict())
    return (result, matching) if return_matching else result


def mcc_continuous(factor_mcc: Mapping[str, float], factor_roles: Mapping[str, str]) -> float:
    """The MCC over the continuous task factors: the mean of their MCC terms (the finite
    ones; NaN if none).

    Args:
      factor_mcc: {task factor: its MCC term} (the `mcc/<factor>` scores of `scores`).
      factor_roles: {factor: role} as `roles.Roles.as_dict` gives it ('continuous',
        'categorical', 'periodic:P:s', 'nuisance'); a factor it does not name counts as
        continuous (results written before factor roles).
    """
    return _mean(np.array([value for name, value in factor_mcc.items()
                           if factor_roles.get(name, "continuous") == "continuous"],
                          np.float64))


def _mean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN if none)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def grid_points(num_points: int, seed: int, num_rows: int) -> np.ndarray:
    """Sorted row indices: all `num_rows` rows for num_points = 0 (or >= num_rows),
    else a uniform subsample of `num_points` without replacement drawn from `seed`."""
    if num_points <= 0 or num_points >= num_rows:
        return np.arange(num_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, num_points, replace=False))


AGREEMENT_SEED = 0x5EED
"""Seed of the agreement rows: the same rows for every run on a data set, whatever its seed."""


def agreement_rows(num_points: int, num_rows: int) -> np.ndarray:
    """Sorted row indices whose codes a run saves for the code-agreement rule
    (`metrics.code_agreement`): a uniform subsample of the data set's `num_rows` rows (the
    rule compares codes of their images; no factor value is stored or scored), the same for
    every run (`AGREEMENT_SEED`); none for num_points = 0."""
    if num_points <= 0:
        return np.zeros(0, np.int64)
    return grid_points(num_points, AGREEMENT_SEED, num_rows)


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
        # One id per combination of the other factors' levels.
        key = latents_lib.combination_ids(np.delete(levels, k, axis=1), np.delete(sizes, k))
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
      latents: the run's `latents.TaskLatents` (z [rows, d] of every row, the roles).
      grid_indices: the rows to score on.
      train_indices: draws from the training distribution (also fit the ICA).
      sweeps: row indices of each task factor's sweep (`sweep_rows`).
      ica: also compute the ICA scores.
      seed: seed of the ICA fit.
    """

    def __init__(self, encode: Encode, latents, grid_indices: np.ndarray,
                 train_indices: np.ndarray, sweeps: Sequence[np.ndarray], *, ica: bool,
                 seed: int = 0):
        self.encode, self.latents, self.ica, self.seed = encode, latents, ica, seed
        self.grid_indices, self.train_indices = grid_indices, train_indices
        self.sweep_indices = list(sweeps)
        self.matching = None  # (permutation [d], signs [d]) of the last grid MCC

    def __call__(self) -> dict:
        """All scalar scores: mcc, r, dci_d, dci_c, *_train, ica_* and their per-factor
        terms (see the module docstring)."""
        roles, grid = self.latents.roles, self.grid_indices
        z_grid, classes_grid = self.latents.z[grid], self.latents.classes(grid)
        codes_grid = self.encode(grid)
        result, matching = scores(z_grid, codes_grid, roles, classes_grid,
                                  return_matching=True)
        self.matching = matching if matching is not None else self.matching
        codes_train = self.encode(self.train_indices)
        result.update(scores(self.latents.z[self.train_indices], codes_train, roles,
                             self.latents.classes(self.train_indices), suffix="_train"))
        if self.ica:
            try:
                unmixed = ica_lib.fit_ica(codes_train, seed=self.seed).transform(codes_grid)
            except ValueError:  # constant codes cannot be whitened
                unmixed = np.full_like(codes_grid, np.nan)
            result.update(scores(z_grid, unmixed, roles, classes_grid, prefix="ica_"))
        return result

    def sweeps(self) -> list[np.ndarray]:
        """Codes [n_k, m] along each factor's sweep."""
        return [self.encode(indices) for indices in self.sweep_indices]


def sweep_figure(sweeps: list[np.ndarray], values: Sequence[np.ndarray],
                 factor_names: Sequence[str], matching=None, title: str = "",
                 latent_names: Sequence[str] | None = None) -> np.ndarray:
    """RGB image [H, W, 3] uint8: one panel per factor k, every code's response to its sweep.

    `sweeps[k]` [n_k, m] are the codes along factor k's sweep, `values[k]` [n_k]
    that factor's values there. With `matching` = (permutation, signs) from the
    grid MCC over the latent columns (named `latent_names`, default
    `factor_names`), the code matched to latent column i is drawn as
    signs[i] * code[permutation[i]] and labelled after column i, so a
    disentangled encoder shows in each panel only the lines of that factor's
    columns moving (one for a continuous factor, cos and sin for a periodic one).
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
        latent_names = factor_names if latent_names is None else latent_names
        names = [latent_names[i] for i in range(len(permutation)) if permutation[i] >= 0]
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
