"""Task-weight samplers and targets: supports, distributions, determinism, noise levels."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.data import tasks

SEED = tf.constant([3, 7], tf.int64)


def _weights(kind, num_tasks=4000, m=6, seed=SEED, **kwargs):
    return tasks.sample_weights(seed, num_tasks, m, kind, **kwargs).numpy()


@pytest.mark.parametrize("kind", tasks.KINDS)
def test_shape_dtype_and_statelessness(kind):
    kwargs = dict(block_size=2, support_size=3)
    w = tasks.sample_weights(SEED, 8, 6, kind, dtype=tf.float64, **kwargs)
    assert w.shape == (8, 6) and w.dtype == tf.float64
    np.testing.assert_array_equal(w, tasks.sample_weights(SEED, 8, 6, kind, dtype=tf.float64, **kwargs))
    other = tasks.sample_weights(tf.constant([3, 8], tf.int64), 8, 6, kind, dtype=tf.float64, **kwargs)
    assert not np.array_equal(w, other)


def test_bernoulli_never_empty_and_forced_coordinates_are_per_task():
    p, m = 0.2, 6
    w = _weights("bernoulli", p=p, m=m)
    support = w != 0
    assert support.any(axis=1).all()
    # Tasks with exactly one coordinate: the naturally single ones plus the forced ones,
    # P = m p (1-p)^(m-1) + (1-p)^m; the forced coordinate is uniform over the m columns.
    single = support.sum(axis=1) == 1
    expected = m * p * (1 - p) ** (m - 1) + (1 - p) ** m
    assert abs(single.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / len(w))
    columns = np.bincount(np.argmax(support[single], axis=1), minlength=m) / single.sum()
    np.testing.assert_allclose(columns, 1 / m, atol=0.05)


def test_bernoulli_support_rate_and_gaussian_values():
    p = 0.5
    w = _weights("bernoulli", p=p)
    rate = (w != 0).mean()
    expected = p + (1 - p) ** 6 / 6  # forced coordinates add (1-p)^m / m per entry
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / w.size)
    values = w[w != 0]
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05


def test_bernoulli_p_one_is_dense():
    assert (_weights("bernoulli", p=1.0, num_tasks=50) != 0).all()


def test_block_support_is_one_contiguous_block():
    w = _weights("block", block_size=2, m=6)
    support = w != 0
    blocks = support.reshape(len(w), 3, 2)
    assert (blocks.all(axis=2).sum(axis=1) == 1).all()
    assert support.sum(axis=1).max() == 2
    np.testing.assert_allclose(blocks.all(axis=2).mean(axis=0), 1 / 3, atol=0.04)


def test_fixed_size_support_has_exact_size_and_uniform_coordinates():
    w = _weights("fixed_size", support_size=2, m=6)
    support = w != 0
    assert (support.sum(axis=1) == 2).all()
    np.testing.assert_allclose(support.mean(axis=0), 2 / 6, atol=0.04)


def test_dense_laplace_and_gauss_moments():
    laplace = _weights("laplace", num_tasks=20000)
    assert np.isfinite(laplace).all()
    assert abs(np.abs(laplace).mean() - 1.0) < 0.03  # E|w| = b = 1
    assert abs(laplace.var() - 2.0) < 0.1  # Var = 2 b^2
    gauss = _weights("gauss", num_tasks=20000)
    assert abs(gauss.var() - 1.0) < 0.03 and (gauss != 0).all()


@pytest.mark.parametrize("kind,kwargs,match", [
    ("binomial", {}, "kind must be one of"),
    ("bernoulli", {"p": 0.0}, r"p must be in \(0, 1\]"),
    ("block", {"block_size": 4}, "block_size must divide num_latents=6"),
    ("fixed_size", {"support_size": 7}, r"support_size must be in \[1, 6\]"),
])
def test_invalid_arguments(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.sample_weights(SEED, 4, 6, kind, **kwargs)


def test_snr_noise_has_exact_relative_norm():
    z = tf.random.stateless_normal([5, 40, 6], SEED, dtype=tf.float64)
    w = tasks.sample_weights(SEED, 5, 6, dtype=tf.float64)
    clean = tf.einsum("tnm,tm->tn", z, w).numpy()
    y = tasks.targets(tf.constant([1, 2], tf.int64), z, w, "snr", 0.1).numpy()
    ratio = np.linalg.norm(y - clean, axis=1) / np.linalg.norm(clean, axis=1)
    np.testing.assert_allclose(ratio, 0.1, rtol=1e-12)


def test_std_noise_has_the_given_std_and_zero_scale_is_noiseless():
    y = tf.zeros([50, 400], tf.float64)
    noisy = tasks.add_noise(SEED, y, "std", 0.3).numpy()
    assert abs(noisy.std() - 0.3) < 0.01
    np.testing.assert_array_equal(tasks.add_noise(SEED, y + 1.0, "snr", 0.0), y + 1.0)
    with pytest.raises(ValueError, match="noise must be one of"):
        tasks.add_noise(SEED, y, "relative", 0.1)
