"""Tests of sdis_tf/data/latents.py: grid, jitter, standardisation, p_{alpha,rho}, sampling."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from sdis_tf.data import latents, roles, sprites


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
    values = latents.make_latents(alpha=alpha).factors
    levels = np.stack(np.unravel_index(np.arange(480_000), latents.FACTOR_SIZES), axis=1)
    strides = np.cumprod((1,) + latents.FACTOR_SIZES[::-1])[:-1][::-1]
    for k, size in enumerate(latents.FACTOR_SIZES):
        lower = np.flatnonzero(levels[:, k] < size - 1)
        assert np.all(values[lower + strides[k], k] > values[lower, k]), latents.FACTOR_NAMES[k]
        # Stronger: the jittered levels do not even overlap.
        per_level = [values[levels[:, k] == j, k] for j in range(size)]
        assert all(a.max() < b.min() for a, b in zip(per_level, per_level[1:]))


def test_jitter_above_one_can_swap_neighbours():
    values = latents.make_latents(alpha=3.0).factors
    assert np.any(values[1:, 5] < values[:-1, 5])   # orientation neighbours swapped


def test_jitter_bounds_seed_and_standardisation(jittered):
    offsets = latents.make_latents(alpha=0.5, seed=7).factors - latents.grid_factors()
    half = 0.5 * latents.grid_gaps(latents.factor_values()) / 2
    np.testing.assert_allclose(half, 0.25 * np.array([0.1, 0.1, 0.1, 0.5 / 7, 1.0, 60 / 14]))
    assert np.all(np.abs(offsets) <= half) and np.all(np.abs(offsets).max(0) > 0.99 * half)
    np.testing.assert_array_equal(offsets, latents.make_latents(alpha=0.5, seed=7).factors
                                  - latents.grid_factors())
    np.testing.assert_array_equal(latents.make_latents(alpha=0.0).factors, latents.grid_factors())
    np.testing.assert_allclose(jittered.z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(jittered.z.std(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(jittered.z * jittered.std + jittered.mean, jittered.factors)
    with pytest.raises(ValueError, match="alpha"):
        latents.make_latents(alpha=-0.1)


def test_make_latents_of_any_rows_against_closed_form():
    """Rows of a 2-factor table, one factor unevenly spaced: jitter within +-alpha gap / 2 with
    gap the smallest step, the draw of `seed` (numpy's uniform), then standardisation."""
    factors = np.array([[0.0, 2.0], [0.5, 3.0], [1.0, 5.0], [0.5, 5.0]])
    grid = (np.array([0.0, 0.5, 1.0]), np.array([2.0, 3.0, 5.0]))
    np.testing.assert_array_equal(latents.grid_gaps(grid), [0.5, 1.0])
    made = latents.make_latents(factors, grid, alpha=0.8, seed=5)
    offsets = np.random.default_rng(5).uniform(-0.4 * np.array([0.5, 1.0]),
                                               0.4 * np.array([0.5, 1.0]), size=(4, 2))
    np.testing.assert_array_equal(made.factors, factors + offsets)
    expected = (made.factors - made.factors.mean(0)) / made.factors.std(0)
    np.testing.assert_allclose(made.z, expected, rtol=0, atol=1e-15)
    assert made.alpha == 0.8
    with pytest.raises(ValueError, match="both factors and grid"):
        latents.make_latents(factors)
    with pytest.raises(ValueError, match="grid has 1 factors"):
        latents.make_latents(factors, grid[:1])


def test_parse_distribution():
    assert latents.parse_distribution("harder_gauss_0.9") == ("harder_gauss", 0.9)
    assert latents.parse_distribution("gauss_0.5") == ("gauss", 0.5)
    assert latents.parse_distribution("toeplitz_0.5") == ("toeplitz", 0.5)
    assert latents.parse_distribution("uniform") == ("uniform", 0.0)
    assert latents.parse_distribution("iid") == ("iid", 0.0)
    for bad in ("gaussian_0.5", "harder_gauss", "laplace_1", "iid_0.5"):
        with pytest.raises(ValueError, match="distribution"):
            latents.parse_distribution(bad)
    with pytest.raises(ValueError, match="rho"):
        latents.log_probs(np.zeros((3, 6)), "harder_gauss", 1.0)


@pytest.mark.parametrize("kind", ["harder_gauss", "gauss", "iid"])
def test_log_probs_match_scipy(jittered, kind):
    z = jittered.z[::97]
    logp = latents.log_probs(z, kind, 0.8)
    sigma = {"harder_gauss": 0.2 * np.eye(6) + 0.8, "iid": np.eye(6),
             "gauss": 0.8 ** np.abs(np.subtract.outer(np.arange(6), np.arange(6)))}[kind]
    gaussian = scipy.stats.multivariate_normal(np.zeros(6), sigma)
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


# ---------------------------------------------------------------- factor roles


def test_task_latents_with_every_factor_continuous_are_the_paper_latents(jittered):
    paper = roles.resolve_roles(latents.FACTOR_NAMES, latents.factor_values(), "shapes3d",
                                categorical=(), periodic=())
    task = latents.make_task_latents(latents.grid_factors(), latents.factor_values(), paper)
    np.testing.assert_array_equal(task.z, jittered.z)
    np.testing.assert_array_equal(task.factors, jittered.factors)
    np.testing.assert_array_equal(task.coordinates, jittered.z)
    assert task.cells is None                          # every row is its own cell
    seed = tf.constant([4, 2])
    np.testing.assert_array_equal(
        latents.make_sampler(task, "harder_gauss_0.9").sample([3, 50], seed),
        latents.GridSampler(latents.log_probs(jittered.z, "harder_gauss", 0.9)).sample(
            [3, 50], seed))
    # The default roles: the hues periodic (cos, sin), the same coordinates and draws.
    hues = latents.make_task_latents(
        latents.grid_factors(), latents.factor_values(),
        roles.resolve_roles(latents.FACTOR_NAMES, latents.factor_values(), "shapes3d"))
    assert hues.z.shape == (480_000, 9)
    np.testing.assert_array_equal(hues.coordinates, jittered.z)
    np.testing.assert_array_equal(hues.z[:, 6:], jittered.z[:, 3:])


def _table(nuisance=None, keep=None):
    """Rows of a 5 x 4 grid of task factors a, b (b fastest), three rows per point, with a
    third column `nuisance` [60] if given; rows `keep` only."""
    a, b = np.meshgrid(np.linspace(0.0, 2.0, 5), [1.0, 2.0, 4.0, 8.0], indexing="ij")
    task = np.repeat(np.stack([a.reshape(-1), b.reshape(-1)], axis=1), 3, axis=0)
    table = task if nuisance is None else np.concatenate([task, nuisance[:, None]], axis=1)
    return table if keep is None else table[keep]


def _task_latents(table, names=("a", "b", "c"), **declared):
    grid = [np.unique(table[:, k]) for k in range(table.shape[1])]
    declared.setdefault("factors", ("a", "b"))
    return latents.make_task_latents(
        table, grid, roles.resolve_roles(names[:table.shape[1]], grid, **declared), alpha=0.7)


def test_a_nuisance_leaves_the_latents_untouched_whatever_its_values():
    rng = np.random.default_rng(0)
    cycling = _task_latents(_table(np.tile([0.0, 1.0, 2.0], 20)))
    random = _task_latents(_table(rng.choice([-5.0, 0.5, 7.0, 9.0], 60)))
    without = _task_latents(_table(), factors=())    # no third column at all
    for other in (random, without):
        for field in ("z", "coordinates", "cell_of_row", "latent_mean", "latent_std"):
            np.testing.assert_array_equal(getattr(other, field), getattr(cycling, field))
        np.testing.assert_array_equal(other.cells.order, cycling.cells.order)
    assert cycling.roles.latent_names == ("a", "b") and cycling.roles.nuisances == ("c",)
    assert cycling.z.shape == (60, 2) and cycling.coordinates.shape == (20, 2)
    np.testing.assert_array_equal(cycling.cells.counts, np.full(20, 3))
    # The rows of a cell share its jittered task values; the nuisance stays as it is.
    np.testing.assert_array_equal(cycling.factors[::3, :2], cycling.factors[2::3, :2])
    np.testing.assert_array_equal(cycling.factors[:, 2], np.tile([0.0, 1.0, 2.0], 20))


def test_sampler_draws_task_factors_from_p_and_nuisances_uniformly_among_their_rows():
    """An incomplete grid (some cells keep 1 or 2 of their 3 nuisance rows): a draw is row r
    with probability p(cell(r)) / rows(cell(r)); checked by a chi-square test over the rows
    and by the task factors' sample correlation against p's exact correlation."""
    keep = np.array([i for i in range(60) if i not in (1, 2, 7, 20, 22, 40)])
    task = _task_latents(_table(np.tile([0.0, 1.0, 2.0], 20), keep=keep))
    logp = latents.log_probs(task.coordinates, "harder_gauss", 0.8)
    draws = latents.make_sampler(task, "harder_gauss_0.8").sample(
        [200_000], tf.constant([7, 1])).numpy()
    counts = np.bincount(draws, minlength=len(keep))
    cell = task.cell_of_row
    expected = len(draws) * np.exp(logp)[cell] / task.cells.counts[cell]
    rare = expected < 5                                 # pooled into one bin
    assert rare.sum() < 10
    assert scipy.stats.chisquare(np.append(counts[~rare], counts[rare].sum()),
                                 np.append(expected[~rare], expected[rare].sum())).pvalue > 1e-3
    target = latents.distribution_correlation(task.coordinates, logp)[0, 1]
    empirical = np.corrcoef(task.coordinates[cell[draws]].T)[0, 1]
    assert target > 0.3 and abs(empirical - target) < 0.01
    # Within each cell, the nuisance values are uniform: a chi-square over the cells that
    # keep all three rows, (cell, nuisance) counts against n_cell / 3 each.
    full = np.flatnonzero((task.cells.counts == 3) & (np.exp(logp) * len(draws) > 30))
    table = np.zeros((len(full), 3))
    for j, c in enumerate(full):
        rows = task.cells.order[task.cells.starts[c]:task.cells.starts[c] + 3]
        table[j] = counts[rows][np.argsort(task.factors[rows, 2])]
    statistic = np.sum((table - table.mean(1, keepdims=True)) ** 2 / table.mean(1, keepdims=True))
    assert scipy.stats.chi2.sf(statistic, 2 * len(full)) > 1e-3


def test_categorical_and_periodic_latents_decode_to_their_factor_values():
    world = sprites.SpriteWorld()
    declared = roles.resolve_roles(world.factor_names, world.grid, "sprites")
    task = latents.make_task_latents(world.factors, world.grid, declared, alpha=1.0)
    assert task.z.shape == (34_560, 8) and task.cells is None
    np.testing.assert_allclose(task.z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(task.z.std(0), 1.0, atol=1e-12)
    decoded = task.task_values(task.z)
    np.testing.assert_array_equal(decoded[:, 0], world.factors[:, 0])         # the classes
    np.testing.assert_array_equal(task.factors[:, 0], world.factors[:, 0])    # unjittered
    np.testing.assert_allclose(decoded[:, [1, 3, 4]], task.factors[:, [1, 3, 4]], atol=1e-12)
    np.testing.assert_allclose(decoded[:, 2], np.mod(task.factors[:, 2], 1.0), atol=1e-9)
    assert np.abs(task.factors[:, 2] - world.factors[:, 2]).max() > 0.04     # jittered
    np.testing.assert_array_equal(task.classes(np.array([0, 34_559]))["shape"], [0.0, 3.0])
