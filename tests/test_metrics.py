"""Tests for sdis_tf.metrics: invariances, hand-computed cases, float64 references."""

import itertools

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression

from sdis_tf import metrics


def _correlated_factors(rng, n=500, k=4):
    cov = 0.5 ** np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    return rng.multivariate_normal(np.zeros(k), cov, size=n)


def _permuted_rescaled_flipped(rng, z):
    k = z.shape[1]
    perm = rng.permutation(k)
    scale = rng.uniform(0.1, 10.0, size=k) * rng.choice([-1.0, 1.0], size=k)
    return z[:, perm] * scale + rng.normal(size=k), perm, scale


def _random_rotation(rng, k):
    return stats.ortho_group.rvs(k, random_state=rng)


# --- hand-computed cases --------------------------------------------------------
# z1 = [1,2,3,4], z2 = [1,-1,1,-1]; codes h1 = z2, h2 = [2,1,4,3].
# corr(z1,h1) = -2/(2 sqrt5), corr(z1,h2) = 3/5, corr(z2,h1) = 1, corr(z2,h2) = 2/(2 sqrt5).
_Z = np.array([[1.0, 1.0], [2.0, -1.0], [3.0, 1.0], [4.0, -1.0]])
_H = np.array([[1.0, 2.0], [-1.0, 1.0], [1.0, 4.0], [-1.0, 3.0]])


def test_correlation_matrix_hand_computed():
    expected = np.array([[-1 / np.sqrt(5), 0.6], [1.0, 1 / np.sqrt(5)]])
    np.testing.assert_allclose(metrics.correlation_matrix(_Z, _H), expected, atol=1e-14)


def test_mcc_hand_computed_with_matching():
    # Identity pairing scores 2/sqrt5 ~ 0.894, the swap 0.6 + 1 = 1.6: MCC = 0.8.
    score, perm, signs = metrics.mcc(_Z, _H, return_matching=True)
    assert isinstance(score, float)
    assert score == pytest.approx(0.8, abs=1e-14)
    np.testing.assert_array_equal(perm, [1, 0])
    np.testing.assert_array_equal(signs, [1.0, 1.0])


def test_multiple_correlation_hand_computed():
    # One factor, one code: R = |Pearson correlation| = 0.6 for z1 and h2.
    assert metrics.multiple_correlation(_Z[:, :1], _H[:, 1:]) == pytest.approx(0.6, abs=1e-14)


def test_dci_hand_computed():
    # z1, z2 standardised and orthogonal; codes h1 = z1, h2 = z1 + z2 (std sqrt2).
    # Then z1 = h1 and z2 = sqrt2 * h2_s - h1: importances [code, factor] =
    # [[1, 1], [0, sqrt2]].
    z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    z_hat = np.stack([z[:, 0], z[:, 0] + z[:, 1]], axis=1)
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(
        metrics.importance_matrix(z, z_hat), [[1.0, 1.0], [0.0, r2]], atol=1e-12)
    # D: code 1 is split evenly (D_1 = 0), code 2 is pure (D_2 = 1).
    # C: factor 1 is captured by code 1 only (C_1 = 1), factor 2 by both.
    p = np.array([1.0, r2]) / (1.0 + r2)
    c2 = 1.0 + np.sum(p * np.log2(p))
    d, c = metrics.dci(z, z_hat)
    assert d == pytest.approx(0.5, abs=1e-12)
    assert c == pytest.approx((1.0 + c2) / 2, abs=1e-12)
    d_w, c_w = metrics.dci(z, z_hat, weighting="importance")
    assert d_w == pytest.approx(r2 / (2.0 + r2), abs=1e-12)
    assert c_w == pytest.approx((1.0 * 1.0 + (1.0 + r2) * c2) / (2.0 + r2), abs=1e-12)


def test_per_factor_terms_hand_computed():
    # The MCC's terms: z1 is matched to h2 (0.6), z2 to h1 (1.0); MCC = their mean.
    matched, perm, signs = metrics.matched_correlations(_Z, _H)
    np.testing.assert_allclose(matched, [0.6, 1.0], atol=1e-14)
    np.testing.assert_array_equal(perm, [1, 0])
    np.testing.assert_array_equal(signs, [1.0, 1.0])
    assert metrics.mcc(_Z, _H) == pytest.approx(np.mean(matched), abs=1e-15)
    # R^2 of one factor on one code is the squared correlation: 0.36.
    np.testing.assert_allclose(
        metrics.coefficients_of_determination(_Z[:, :1], _H[:, 1:]), [0.36], atol=1e-14)
    # The DCI example below: D = [0, 1] per code, C = [1, c2] per factor.
    z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    z_hat = np.stack([z[:, 0], z[:, 0] + z[:, 1]], axis=1)
    p = np.array([1.0, np.sqrt(2.0)]) / (1.0 + np.sqrt(2.0))
    per_code, per_factor = metrics.dci_terms(z, z_hat)
    np.testing.assert_allclose(per_code, [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(per_factor, [1.0, 1.0 + np.sum(p * np.log2(p))], atol=1e-12)
    np.testing.assert_allclose(metrics.coefficients_of_determination(z, z_hat), [1.0, 1.0],
                               atol=1e-12)


def test_unmatched_factors_have_no_term():
    rng = np.random.default_rng(12)
    z = rng.normal(size=(50, 3))
    matched, perm, _ = metrics.matched_correlations(z, z[:, :2] + 0.1 * rng.normal(size=(50, 2)))
    assert np.isnan(matched[2]) and perm[2] == -1 and np.all(matched[:2] > 0.9)


def test_class_decodability_hand_computed():
    # Codes: classes 0 (4 samples) and 1 (2 samples) share the values -1.1 / -0.9, class 2
    # sits at +-1 around 1. LDA (shared variance 0.01, priors 1/2, 1/4, 1/4) labels every
    # negative code as class 0 (same mean as class 1, larger prior) and every positive one
    # as class 2: accuracy 6/8; the most common class has 4/8, so (0.75 - 0.5) / 0.5 = 0.5.
    codes = np.array([-1.1, -0.9, -1.1, -0.9, -1.1, -0.9, 0.9, 1.1])[:, None]
    classes = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    assert metrics.class_decodability(classes, codes) == pytest.approx(0.5, abs=1e-12)
    # Any labels; any invertible affine map of the codes.
    names = np.array(["b", "b", "b", "b", "c", "c", "a", "a"])
    assert metrics.class_decodability(names, 2.0 - 3.0 * codes) == pytest.approx(0.5,
                                                                                  abs=1e-12)
    noise = np.array([0.3, -0.2, 0.1, 0.4, -0.3, 0.2, -0.1, 0.5])[:, None]
    two_codes = np.concatenate([codes, noise], axis=1)
    mixed = two_codes @ np.array([[1.0, 0.0], [1.0, 2.0]]) + [0.0, -1.0]
    assert metrics.class_decodability(classes, mixed) == pytest.approx(
        metrics.class_decodability(classes, two_codes), abs=1e-12)
    # A code that separates all three classes: 1; a code that carries no class: 0.
    separated = np.array([0.0, 0.1, 0.05, 0.12, 1.0, 1.1, 2.0, 2.1])[:, None]
    assert metrics.class_decodability(classes, separated) == 1.0
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 2, 400)
    assert metrics.class_decodability(labels, rng.normal(size=(400, 1))) < 0.1
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        metrics.class_decodability(np.zeros(8), codes)
    with pytest.raises(ValueError, match=r"shape \[N, m\] with N = 7"):
        metrics.class_decodability(classes[:7], codes)
    with pytest.raises(ValueError, match="constant columns"):
        metrics.class_decodability(classes, np.ones((8, 1)))


# --- invariances ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_permuted_rescaled_flipped_copy_is_perfect(method):
    rng = np.random.default_rng(0)
    z = _correlated_factors(rng)
    z_hat, perm, scale = _permuted_rescaled_flipped(rng, z)
    score, matched, signs = metrics.mcc(z, z_hat, method=method, return_matching=True)
    assert score == pytest.approx(1.0, abs=1e-12)
    # z[:, i] is column argwhere(perm == i) of z_hat, with the sign of its scale.
    np.testing.assert_array_equal(matched, np.argsort(perm))
    np.testing.assert_array_equal(signs, np.sign(scale[np.argsort(perm)]))
    assert metrics.multiple_correlation(z, z_hat) == pytest.approx(1.0, abs=1e-12)
    d, c = metrics.dci(z, z_hat)
    assert d == pytest.approx(1.0, abs=1e-9)
    assert c == pytest.approx(1.0, abs=1e-9)


def test_random_rotation_is_linearly_entangled():
    rng = np.random.default_rng(1)
    z = _correlated_factors(rng)
    z_hat = z @ _random_rotation(rng, z.shape[1])
    assert metrics.multiple_correlation(z, z_hat) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mcc(z, z_hat) < 0.95
    d, c = metrics.dci(z, z_hat)
    assert d < 0.9 and c < 0.9


def test_invariant_to_sample_order():
    rng = np.random.default_rng(2)
    z = _correlated_factors(rng, n=200)
    z_hat = z @ rng.normal(size=(4, 5)) + 0.3 * rng.normal(size=(200, 5))
    order = rng.permutation(200)
    for fn in (metrics.mcc, metrics.multiple_correlation, metrics.dci):
        np.testing.assert_allclose(fn(z, z_hat), fn(z[order], z_hat[order]), rtol=1e-12)
    assert metrics.mcc(z, z_hat, method="spearman") == pytest.approx(
        metrics.mcc(z[order], z_hat[order], method="spearman"), rel=1e-12)


def test_spearman_sees_through_monotone_maps():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 3))
    z_hat = np.exp(2.0 * z[:, ::-1])
    assert metrics.mcc(z, z_hat, method="spearman") == pytest.approx(1.0, abs=1e-12)
    assert metrics.mcc(z, z_hat, method="pearson") < 0.9


# --- float64 references -----------------------------------------------------------

def test_mcc_matches_brute_force_matching_rectangular():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(60, 3))
    z_hat = z @ rng.normal(size=(3, 5)) + rng.normal(size=(60, 5))
    c = np.abs(np.corrcoef(z, z_hat, rowvar=False)[:3, 3:])
    best = max(np.mean(c[np.arange(3), list(p)])
               for p in itertools.permutations(range(5), 3))
    score, perm, _ = metrics.mcc(z, z_hat, return_matching=True)
    assert score == pytest.approx(best, abs=1e-12)
    assert np.mean(c[np.arange(3), perm]) == pytest.approx(best, abs=1e-12)
    # Fewer codes than factors: unmatched factors get -1 and sign 0.
    score, perm, signs = metrics.mcc(z_hat[:, :2], z[:, :1], return_matching=True)
    assert sorted(perm.tolist()) == [-1, 0] and signs[perm == -1] == 0


def test_correlation_matrix_matches_scipy():
    rng = np.random.default_rng(10)
    z = rng.normal(size=(40, 3))
    z_hat = np.round(z @ rng.normal(size=(3, 2)) + rng.normal(size=(40, 2)))  # ties
    pearson = metrics.correlation_matrix(z, z_hat)
    spearman = metrics.correlation_matrix(z, z_hat, method="spearman")
    for i, j in np.ndindex(3, 2):
        assert pearson[i, j] == pytest.approx(
            stats.pearsonr(z[:, i], z_hat[:, j]).statistic, abs=1e-12)
        assert spearman[i, j] == pytest.approx(
            stats.spearmanr(z[:, i], z_hat[:, j]).statistic, abs=1e-12)


def _dci_reference(z, z_hat):
    """Independent DCI: sklearn regression on standardised data, scipy entropies,
    D over codes (rows) and C over factors (columns); uniform and E&W weights."""
    zs = (z - z.mean(0)) / z.std(0)
    hs = (z_hat - z_hat.mean(0)) / z_hat.std(0)
    importance = np.abs(LinearRegression().fit(hs, zs).coef_.T)       # [code, factor]
    k, m = z.shape[1], z_hat.shape[1]
    d = np.array([1 - stats.entropy(row, base=k) for row in importance])
    c = np.array([1 - stats.entropy(col, base=m) for col in importance.T])
    rho = importance.sum(1) / importance.sum()
    kappa = importance.sum(0) / importance.sum()
    return (d.mean(), c.mean()), (rho @ d, kappa @ c)


def test_dci_matches_an_independent_reference():
    rng = np.random.default_rng(11)
    z = rng.normal(size=(300, 3)) * [1.0, 3.0, 0.5]
    z_hat = z @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(300, 4))
    uniform, weighted = _dci_reference(z, z_hat)
    np.testing.assert_allclose(metrics.dci(z, z_hat), uniform, atol=1e-10)
    np.testing.assert_allclose(metrics.dci(z, z_hat, weighting="importance"), weighted,
                               atol=1e-10)


def test_multiple_correlation_and_importances_match_sklearn():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(80, 3)) * [1.0, 5.0, 0.2]
    z_hat = z @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(80, 4))
    zs = (z - z.mean(0)) / z.std(0)
    hs = (z_hat - z_hat.mean(0)) / z_hat.std(0)
    reg = LinearRegression().fit(hs, zs)
    r2 = 1 - np.sum((zs - reg.predict(hs)) ** 2, 0) / np.sum(zs ** 2, 0)
    assert metrics.multiple_correlation(z, z_hat) == pytest.approx(
        np.mean(np.sqrt(r2)), abs=1e-12)
    np.testing.assert_allclose(
        metrics.importance_matrix(z, z_hat), np.abs(reg.coef_.T), atol=1e-10)


def test_batched_equals_loop():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(2, 3, 50, 3))
    z_hat = np.einsum("abnk,abkm->abnm", z, rng.normal(size=(2, 3, 3, 3)))
    z_hat += 0.1 * rng.normal(size=z_hat.shape)
    score, perm, signs = metrics.mcc(z, z_hat, return_matching=True)
    r = metrics.multiple_correlation(z, z_hat)
    d, c = metrics.dci(z, z_hat)
    assert score.shape == r.shape == d.shape == c.shape == (2, 3)
    assert perm.shape == signs.shape == (2, 3, 3)
    for a, b in np.ndindex(2, 3):
        s, p, g = metrics.mcc(z[a, b], z_hat[a, b], return_matching=True)
        assert score[a, b] == pytest.approx(s, abs=1e-14)
        np.testing.assert_array_equal(perm[a, b], p)
        np.testing.assert_array_equal(signs[a, b], g)
        assert r[a, b] == pytest.approx(
            metrics.multiple_correlation(z[a, b], z_hat[a, b]), abs=1e-12)
        np.testing.assert_allclose((d[a, b], c[a, b]),
                                   metrics.dci(z[a, b], z_hat[a, b]), atol=1e-12)


def test_float32_inputs_are_computed_in_float64():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(100, 3))
    z_hat = z[:, ::-1] * 3.0
    assert metrics.mcc(z.astype(np.float32), z_hat.astype(np.float32)) == pytest.approx(
        metrics.mcc(z.astype(np.float32).astype(np.float64),
                    z_hat.astype(np.float32).astype(np.float64)), abs=1e-15)


# --- errors -------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [metrics.mcc, metrics.multiple_correlation, metrics.dci])
def test_errors(fn):
    rng = np.random.default_rng(8)
    z = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="same number of samples"):
        fn(z, z[:19])
    with pytest.raises(ValueError, match="batch shape"):
        fn(np.stack([z, z]), np.stack([z, z, z]))
    with pytest.raises(ValueError, match=r"shape \[..., N, dim\]"):
        fn(z[:, 0], z)
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`z_hat` contains NaN"):
        fn(z, bad)
    bad[3, 1] = -np.inf
    with pytest.raises(ValueError, match="`z` contains NaN or infinite"):
        fn(bad, z)
    constant = z.copy()
    constant[:, 2] = 4.0
    with pytest.raises(ValueError, match=r"`z` has constant columns \[2\]"):
        fn(constant, z)


def test_argument_errors():
    z = np.random.default_rng(9).normal(size=(20, 3))
    with pytest.raises(ValueError, match="`method` must be one of"):
        metrics.mcc(z, z, method="kendall")
    with pytest.raises(ValueError, match="`weighting` must be one of"):
        metrics.dci(z, z, weighting="mean")
    with pytest.raises(ValueError, match="at least 2 columns in `z`"):
        metrics.dci(z[:, :1], z)
    with pytest.raises(ValueError, match="Need at least 5 samples"):
        metrics.multiple_correlation(z[:4], z[:4])


def _brute_force_mcc(a, b):
    """Mean |Pearson| over the best one-to-one matching, by trying every permutation."""
    k = a.shape[1]
    c = np.abs(np.corrcoef(a.T, b.T)[:k, k:])
    return max(np.mean(c[np.arange(k), list(p)]) for p in itertools.permutations(range(k)))


def test_code_agreement_is_the_median_of_pairwise_mccs():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(400, 3))
    codes = np.stack([z * [1.0, -2.0, 0.5],                       # copies of the factors
                      z[:, [2, 0, 1]] * 3.0,
                      z @ rng.normal(size=(3, 3)),                # mixtures
                      z @ rng.normal(size=(3, 3))])
    pairwise = np.array([[_brute_force_mcc(a, b) for b in codes] for a in codes])
    expected = [np.median(np.delete(pairwise[i], i)) for i in range(4)]
    np.testing.assert_allclose(metrics.code_agreement(codes), expected, rtol=1e-12)
    # the two copies of the factors agree perfectly with each other
    assert pairwise[0, 1] == pytest.approx(1.0)


def test_code_agreement_counts_dead_codes_as_zero_and_leaves_broken_models_out():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(200, 2))
    dead = z.copy()
    dead[:, 1] = 0.5                          # a constant code: matches nothing, counts 0
    broken = z.copy()
    broken[3, 0] = np.nan
    agreement = metrics.code_agreement(np.stack([z, 2 * z, dead, broken, np.ones_like(z)]))
    # z and 2z: 1 with each other, 1/2 with `dead` (one of its two codes matches)
    np.testing.assert_allclose(agreement[:3], [0.75, 0.75, 0.5])
    assert np.isnan(agreement[3:]).all()      # a NaN code; no code that varies
    assert np.isnan(metrics.code_agreement(np.stack([z, broken]))).all()
    with pytest.raises(ValueError, match=r"\[S, P, m\] with S >= 2"):
        metrics.code_agreement(z[None])
