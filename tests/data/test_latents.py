"""Tests of sdis_tf/data/latents.py: grid, jitter, standardisation, p_{alpha,rho}, sampling."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from sdis_tf.data import latents


@pytest.fixture(scope="module")
def jittered():
    return latents.make_latents(alpha=1.0)


def test_grid_order_and_values():
    grid = latents.grid_factors()
    assert grid.shape == (480_000, 6)
    np.testing.assert_allclose(grid[0], [0.0, 0.0, 0.0, 0.75, 0.0, -30.0])
    np.testing.assert_allclose(grid[1], [0.0, 0.0, 0.0, 0.75, 0.0, -30.0 + 60.0 / 14])  # fastest
    np.testing.assert_allclose(grid[15], [0.0, 0.0, 0.0, 0.75, 1.0, -30.0])
    np.testing.assert_allclose(grid[-1], [0.9, 0.9, 0.9, 1.25, 3.0, 30.0])
    assert [len(np.unique(grid[:, k])) for k in range(6)] == [10, 10, 10, 8, 4, 15]
    indices = np.random.default_rng(0).integers(0, 480_000, size=(7, 11))
    np.testing.assert_allclose(latents.grid_factors_tf(indices).numpy(),
                               latents.grid_factors(indices), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="indices"):
        latents.grid_factors([480_000])


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_jitter_never_swaps_neighbours(alpha):
    values = latents.grid_factors() + latents.grid_jitter(alpha)
    levels = np.stack(np.unravel_index(np.arange(480_000), latents.FACTOR_SIZES), axis=1)
    strides = np.cumprod((1,) + latents.FACTOR_SIZES[::-1])[:-1][::-1]
    for k, size in enumerate(latents.FACTOR_SIZES):
        lower = np.flatnonzero(levels[:, k] < size - 1)
        assert np.all(values[lower + strides[k], k] > values[lower, k]), latents.FACTOR_NAMES[k]
        # Stronger: the jittered levels do not even overlap.
        per_level = [values[levels[:, k] == j, k] for j in range(size)]
        assert all(a.max() < b.min() for a, b in zip(per_level, per_level[1:]))


def test_jitter_above_one_can_swap_neighbours():
    values = latents.grid_factors() + latents.grid_jitter(3.0)
    assert np.any(values[1:, 5] < values[:-1, 5])   # orientation neighbours swapped


def test_jitter_bounds_seed_and_standardisation(jittered):
    offsets = latents.grid_jitter(0.5, seed=7)
    half = 0.5 * latents.factor_gaps() / 2
    assert np.all(np.abs(offsets) <= half) and np.all(np.abs(offsets).max(0) > 0.99 * half)
    np.testing.assert_array_equal(offsets, latents.grid_jitter(0.5, seed=7))
    assert np.all(latents.grid_jitter(0.0) == 0.0)
    np.testing.assert_allclose(jittered.z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(jittered.z.std(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(jittered.z * jittered.std + jittered.mean, jittered.factors)
    with pytest.raises(ValueError, match="alpha"):
        latents.grid_jitter(-0.1)


def test_covariances_and_parsing():
    np.testing.assert_allclose(latents.covariance("harder_gauss", 0.5, 3),
                               [[1, .5, .5], [.5, 1, .5], [.5, .5, 1]])
    np.testing.assert_allclose(latents.covariance("gauss", 0.5, 3),
                               [[1, .5, .25], [.5, 1, .5], [.25, .5, 1]])
    assert latents.parse_distribution("harder_gauss_0.9") == ("harder_gauss", 0.9)
    assert latents.parse_distribution("gauss_0.5") == ("gauss", 0.5)
    assert latents.parse_distribution("uniform") == ("uniform", 0.0)
    for bad in ("gaussian_0.5", "harder_gauss", "laplace_1"):
        with pytest.raises(ValueError, match="distribution"):
            latents.parse_distribution(bad)
    with pytest.raises(ValueError, match="rho"):
        latents.covariance("harder_gauss", 1.0)


@pytest.mark.parametrize("kind", ["harder_gauss", "gauss"])
def test_log_probs_match_scipy(jittered, kind):
    z = jittered.z[::97]
    logp = latents.log_probs(z, kind, 0.8)
    gaussian = scipy.stats.multivariate_normal(np.zeros(6), latents.covariance(kind, 0.8))
    reference = gaussian.logpdf(z)
    reference -= scipy.special.logsumexp(reference)
    np.testing.assert_allclose(logp, reference, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.exp(latents.log_probs(z, "uniform")).sum(), 1.0)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_sampled_correlation_matches_target(jittered, rho):
    logp = latents.log_probs(jittered.z, "harder_gauss", rho)
    target = latents.distribution_correlation(jittered.z, logp)
    sampler = latents.GridSampler(logp)
    indices = sampler.sample([50, 2000], tf.constant([int(rho * 10), 3])).numpy()
    assert indices.shape == (50, 2000) and indices.min() >= 0 and indices.max() < 480_000
    empirical = np.corrcoef(jittered.z[indices.reshape(-1)].T)
    np.testing.assert_allclose(empirical, target, atol=0.02)
    off_diagonal = target[~np.eye(6, dtype=bool)]
    if rho == 0.0:
        np.testing.assert_allclose(off_diagonal, 0.0, atol=2e-3)
    else:
        # The bounded grid truncates the Gaussian: correlation is positive but below rho.
        assert np.all(off_diagonal > 0.5 * rho) and np.all(off_diagonal < rho)


def test_sampler_frequencies_and_determinism():
    p = np.array([0.1, 0.0001, 0.5, 0.2999, 0.1])
    sampler = latents.GridSampler(np.log(p))
    draws = sampler.sample([400_000], tf.constant([1, 2])).numpy()
    frequencies = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(frequencies, p, atol=3e-3)
    again = sampler.sample([400_000], tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(draws, again)
    other = sampler.sample([400_000], tf.constant([1, 3])).numpy()
    assert np.mean(draws != other) > 0.3
    compiled = tf.function(lambda seed: sampler.sample([3, 4], seed))
    np.testing.assert_array_equal(compiled(tf.constant([5, 6])),
                                  sampler.sample([3, 4], tf.constant([5, 6])))
