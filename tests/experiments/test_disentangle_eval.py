"""Evaluation of the disentanglement experiment: grid subsamples, factor sweeps, per-factor
scores."""

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from sdis_tf import metrics
from sdis_tf.data import latents as latents_lib
from sdis_tf.data import roles as roles_lib
from sdis_tf.experiments import disentangle_eval


def _grid(sizes):
    return np.array(list(itertools.product(*map(range, sizes))), np.float64)


def test_grid_points_all_rows_or_a_sorted_subsample():
    np.testing.assert_array_equal(disentangle_eval.grid_points(0, 1, 7), np.arange(7))
    np.testing.assert_array_equal(disentangle_eval.grid_points(9, 1, 7), np.arange(7))
    points = disentangle_eval.grid_points(5, 1, 100)
    assert len(np.unique(points)) == 5 and np.all(np.diff(points) > 0) and points.max() < 100


def test_sweeps_of_a_complete_grid_run_through_its_centre():
    sizes = (3, 4, 5)
    table = _grid(sizes) * [1.0, 0.5, 10.0]          # any units
    sweeps = disentangle_eval.sweep_rows(table[::-1])  # any row order
    centre = np.array([1, 2, 2])
    for k, rows in enumerate(sweeps):
        levels = table[::-1][rows] / [1.0, 0.5, 10.0]
        assert len(rows) == sizes[k]
        np.testing.assert_array_equal(levels[:, k], np.arange(sizes[k]))   # sorted by value
        others = np.delete(levels, k, axis=1)
        np.testing.assert_array_equal(others, np.broadcast_to(np.delete(centre, k), others.shape))


def test_sweeps_on_the_3d_shapes_grid_match_its_centre_levels():
    sweeps = disentangle_eval.sweep_rows(latents_lib.grid_factors())
    centre = [size // 2 for size in latents_lib.FACTOR_SIZES]
    for k, size in enumerate(latents_lib.FACTOR_SIZES):
        levels = [np.full(size, c) for c in centre]
        levels[k] = np.arange(size)
        np.testing.assert_array_equal(sweeps[k],
                                      np.ravel_multi_index(levels, latents_lib.FACTOR_SIZES))


def test_sweeps_of_an_incomplete_grid_with_repeated_rows():
    table = _grid((4, 3))
    # Without (1, 1) and (2, 0), only (0, 2) and (3, 2) see every value of both factors
    # along their lines (4 + 3); (3, 2) is the closer to the centre (2, 1).
    keep = [i for i, row in enumerate(table) if tuple(row) not in {(1, 1), (2, 0)}]
    table = np.concatenate([table[keep], table[keep][:3]])   # rows 0..2 repeated
    sweeps = disentangle_eval.sweep_rows(table)
    np.testing.assert_array_equal(table[sweeps[0]], [[0, 2], [1, 2], [2, 2], [3, 2]])
    np.testing.assert_array_equal(table[sweeps[1]], [[3, 0], [3, 1], [3, 2]])
    assert np.all(sweeps[0] < 10) and np.all(sweeps[1] < 10)   # first rows, not repeats


# ---------------------------------------------------------------- per-factor scores

ROLES = roles_lib.Roles(("a", "b", "c"), (
    roles_lib.FactorRole("a", 0),
    roles_lib.FactorRole("b", 1, "periodic", period=1.0),
    roles_lib.FactorRole("c", 2, "categorical", classes=(0.0, 1.0, 2.0))))


def test_per_factor_scores_against_a_hand_computation():
    """Latents z = 5 orthogonal +-1 columns (a; b's cos, sin; c's two indicators) and codes
    [z0, (z1 + z2) / sqrt2, z2, -3 z3, z3 + z4]. Matching z_i -> code i: |corr| 1, 1/sqrt2,
    1, 1, 1/sqrt2. The codes are an invertible map of z: every R^2 is 1. Regressing the
    standardised z on the standardised codes: z1 = sqrt2 c1 - c2, z4 = sqrt2 c4 + c3, the
    others one code each, so codes c2 and c3 split evenly between two factors
    (D = 1 - log 2 / log 5) and factors z1, z4 between two codes with weights
    (sqrt2, 1) / (1 + sqrt2) (C = 1 - H / log 5); every other D, C is 1."""
    z = scipy.linalg.hadamard(8)[:, 1:6].astype(np.float64)
    codes = np.stack([z[:, 0], (z[:, 1] + z[:, 2]) / np.sqrt(2), z[:, 2], -3 * z[:, 3],
                      z[:, 3] + z[:, 4]], axis=1)
    classes = {"c": np.array([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 0.0, 2.0])}
    result, (permutation, signs) = disentangle_eval.scores(z, codes, ROLES, classes,
                                                           return_matching=True)
    half = 1 / np.sqrt(2)
    d_split = 1 - np.log(2) / np.log(5)
    p = np.array([np.sqrt(2), 1.0]) / (1 + np.sqrt(2))
    c_split = 1 + np.sum(p * np.log(p)) / np.log(5)
    expected = {
        "mcc": (3 + 2 * half) / 5, "r": 1.0, "dci_d": (3 + 2 * d_split) / 5,
        "dci_c": (3 + 2 * c_split) / 5,
        "mcc/a": 1.0, "mcc/b": (half + 1) / 2, "mcc/c": (1 + half) / 2,
        "r/a": 1.0, "r/b": 1.0, "r/c": 1.0,
        "dci_d/a": 1.0, "dci_d/b": (1 + d_split) / 2, "dci_d/c": (d_split + 1) / 2,
        "dci_c/a": 1.0, "dci_c/b": (c_split + 1) / 2, "dci_c/c": (1 + c_split) / 2,
        "class_acc/c": metrics.class_decodability(classes["c"], codes),
        # Each code's most correlated column: code 1 ties z1 and z2 (both b's), code 4
        # ties z3 and z4 (both c's).
        "codes/a": 1.0, "codes/b": 2.0, "codes/c": 2.0,
        "mcc_continuous": 1.0}                   # a: the only continuous factor
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-10), key
    np.testing.assert_array_equal(permutation, np.arange(5))
    np.testing.assert_array_equal(signs, [1, 1, 1, -1, 1])
    # The overall scores are the metrics module's.
    assert result["mcc"] == pytest.approx(metrics.mcc(z, codes), abs=1e-14)
    np.testing.assert_allclose((result["dci_d"], result["dci_c"]), metrics.dci(z, codes),
                               atol=1e-14)
    # Without the code of b's cos column z1 (orthogonal to every other code): R^2(z1) = 0,
    # so b's R, the R of its (cos, sin) pair, is sqrt((0 + 1) / 2); z1 is left unmatched
    # (m = 4 < d = 5) and b's MCC term is z2's alone.
    partial = disentangle_eval.scores(z, codes[:, [0, 2, 3, 4]], ROLES, classes,
                                      prefix="p_", suffix="_s")
    assert partial["p_r_s/b"] == pytest.approx(np.sqrt(0.5), abs=1e-12)
    assert partial["p_mcc_s/b"] == pytest.approx(1.0, abs=1e-12)
    assert partial["p_mcc_s"] == pytest.approx((3 + half) / 4, abs=1e-12)
    assert "p_class_acc_s/c" in partial
    # b keeps one code (z2's); a and c keep theirs.
    assert [partial[f"p_codes_s/{f}"] for f in "abc"] == [1.0, 1.0, 2.0]


def test_degenerate_codes_give_nan_scores():
    z = scipy.linalg.hadamard(8)[:, 1:6].astype(np.float64)
    codes = np.ones((8, 5))
    result = disentangle_eval.scores(z, codes, ROLES, {"c": np.arange(8) % 3 * 1.0})
    assert len(result) == 4 + 1 + 5 * 3 + 1 and all(np.isnan(v) for v in result.values())
    # One latent, one code: MCC and R are |corr|, DCI (entropies in base 1) is undefined.
    single = roles_lib.Roles(("a",), (roles_lib.FactorRole("a", 0),))
    result = disentangle_eval.scores(z[:, :1], z[:, :1] + 0.5 * z[:, 1:2], single)
    assert result["mcc"] == result["mcc/a"] == pytest.approx(1 / np.sqrt(1.25), abs=1e-12)
    assert result["r"] == result["r/a"] == pytest.approx(1 / np.sqrt(1.25), abs=1e-12)
    assert all(np.isnan(result[k]) for k in ("dci_d", "dci_c", "dci_d/a", "dci_c/a"))
    assert result["codes/a"] == 1.0


def test_a_nuisance_leaves_the_scores_untouched_whatever_its_values():
    """Two tables that differ only in the nuisance column c give the same scores of an
    encoder that reads the task factors (an entangled map of them)."""
    levels = np.stack(np.meshgrid(np.arange(6.0), np.arange(5.0), np.arange(3.0),
                                  indexing="ij"), -1).reshape(-1, 3)
    results = []
    for nuisance in (levels[:, 2], np.random.default_rng(0).normal(size=len(levels))):
        table = np.concatenate([levels[:, :2], nuisance[:, None]], axis=1)
        grid = [np.unique(table[:, k]) for k in range(3)]
        declared = roles_lib.resolve_roles(("a", "b", "c"), grid, factors=("a", "b"))
        task = latents_lib.make_task_latents(table, grid, declared, alpha=1.0)
        mixing = np.array([[1.0, 0.4, 0.1], [0.2, 1.0, -0.5]])

        def encode(indices, task=task):
            return np.tanh(task.factors[indices][:, :2] @ mixing)

        evaluator = disentangle_eval.Evaluator(
            encode, task, np.arange(len(table)), np.arange(0, len(table), 2), [], ica=True)
        results.append(evaluator())
    assert results[0] == results[1]
    assert not any(key.endswith("/c") for key in results[0])
    assert {key for key in results[0] if key.startswith("mcc")} == {
        "mcc", "mcc/a", "mcc/b", "mcc_train", "mcc_train/a", "mcc_train/b",
        "mcc_continuous", "mcc_continuous_train"}


def test_the_mcc_stays_defined_when_r_and_dci_are_not():
    """N = 6 points of m = 5 codes: R's regression on all codes (and DCI) needs N >= m + 2,
    the MCC only correlations; it matches scipy's Hungarian matching of |corr|."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 5))
    codes = z @ (np.eye(5) + 0.8 * rng.normal(size=(5, 5)))
    correlations = np.abs(np.corrcoef(z.T, codes.T)[:5, 5:])
    rows, cols = scipy.optimize.linear_sum_assignment(-correlations)
    continuous = roles_lib.Roles(tuple("abcde"), tuple(roles_lib.FactorRole(name, k)
                                                      for k, name in enumerate("abcde")))
    result, (permutation, _) = disentangle_eval.scores(z, codes, continuous,
                                                       return_matching=True)
    assert result["mcc"] == pytest.approx(correlations[rows, cols].mean(), abs=1e-12)
    assert 0.5 < result["mcc"] < 0.99
    assert result["mcc_continuous"] == pytest.approx(result["mcc"], abs=1e-12)
    np.testing.assert_array_equal(permutation, cols)
    for i, name in enumerate("abcde"):
        assert result[f"mcc/{name}"] == pytest.approx(correlations[i, cols[i]], abs=1e-12)
        assert np.isnan(result[f"r/{name}"]) and np.isnan(result[f"dci_d/{name}"])
    assert all(np.isnan(result[k]) for k in ("r", "dci_d", "dci_c"))


def test_mcc_continuous_averages_the_continuous_factors_terms():
    terms = {"shape": 0.2, "scale": 0.9, "angle": 0.3, "x": 0.7, "y": float("nan")}
    roles = {"shape": "categorical", "scale": "continuous", "angle": "periodic:1:1",
             "y": "continuous", "bg": "nuisance"}
    # x has no role (a result from before roles): continuous; y's NaN term (unmatched) is
    # left out, as the MCC leaves out unmatched columns.
    assert disentangle_eval.mcc_continuous(terms, roles) == pytest.approx(0.8)
    assert disentangle_eval.mcc_continuous(terms, {}) == pytest.approx(0.525)
    assert np.isnan(disentangle_eval.mcc_continuous({"shape": 0.2}, roles))
