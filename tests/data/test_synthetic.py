"""Synthetic data: latent covariances, the invertible mixing, task batches."""

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.data import synthetic

SEED = tf.constant([5, 1], tf.int64)


@pytest.mark.parametrize("structure,expected", [
    ("equicorrelated", [[1.0, 0.9, 0.9], [0.9, 1.0, 0.9], [0.9, 0.9, 1.0]]),
    ("toeplitz", [[1.0, 0.9, 0.81], [0.9, 1.0, 0.9], [0.81, 0.9, 1.0]]),
    ("iid", np.eye(3)),
])
def test_sample_latents_has_the_covariance(structure, expected):
    z = synthetic.sample_latents(SEED, (40000, 2), 3, 0.9, structure, dtype=tf.float64).numpy()
    assert z.shape == (40000, 2, 3)
    np.testing.assert_allclose(np.cov(z.reshape(-1, 3).T), expected, atol=0.02)
    again = synthetic.sample_latents(SEED, (40000, 2), 3, 0.9, structure, dtype=tf.float64)
    np.testing.assert_array_equal(z, again)


def test_sample_latents_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"rho must lie in \(-0.5, 1\)"):
        synthetic.sample_latents(SEED, (2,), 3, 1.0)
    with pytest.raises(ValueError, match="covariance kind must be one of"):
        synthetic.sample_latents(SEED, (2,), 3, 0.5, "block")


def test_mixing_is_invertible_nonlinear_and_standardised():
    g = synthetic.Mixing(0, 6, 12, num_layers=3, slope=0.2, condition=4.0)
    z = synthetic.sample_latents(SEED, (5000,), 6, 0.0, dtype=tf.float64)
    x = g(z)
    assert x.shape == (5000, 12)
    np.testing.assert_allclose(g.inverse(x), z, atol=1e-10)
    np.testing.assert_allclose(x.numpy().mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(x.numpy().std(axis=0), 1.0, atol=0.1)
    # Not affine: the best affine fit of x from z leaves a clear residual.
    design = np.c_[z.numpy(), np.ones(len(z))]
    residual = x.numpy() - design @ np.linalg.lstsq(design, x.numpy(), rcond=None)[0]
    assert residual.var() > 0.01


def test_mixing_layers_are_well_conditioned_and_seeded():
    g = synthetic.Mixing(3, 6, 10, num_layers=4, condition=4.0)
    singular = [np.linalg.svd(a, compute_uv=False) for a in g._weights[:-1]]
    assert all(s.max() / s.min() <= 4.0 + 1e-9 for s in singular)
    assert g._weights[0].shape == (10, 6)
    z = tf.ones([2, 6])
    np.testing.assert_array_equal(g(z), synthetic.Mixing(3, 6, 10, num_layers=4)(z))
    assert not np.allclose(g(z), synthetic.Mixing(4, 6, 10, num_layers=4)(z))


def test_mixing_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim must be >= num_latents=6"):
        synthetic.Mixing(0, 6, 5)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        synthetic.Mixing(0, 6, 10, num_layers=0)
    with pytest.raises(ValueError, match=r"slope must be in \(0, 1\]"):
        synthetic.Mixing(0, 6, 10, slope=0.0)


TASKS = dict(kind="bernoulli", p=0.5, block_size=1, support_size=1, noise="snr", noise_scale=0.1)


def test_sample_tasks_targets_are_sparse_linear_in_the_latents():
    g = synthetic.Mixing(1, 6, 10)
    batch, w = synthetic.sample_tasks(SEED, g, num_tasks=5, n_support=30, n_query=20, rho=0.5,
                                      structure="equicorrelated", tasks=TASKS)
    assert batch.x_support.shape == (5, 30, 10) and batch.y_support.shape == (5, 30)
    assert batch.x_query.shape == (5, 20, 10) and batch.y_query.shape == (5, 20)
    for x, y in ((batch.x_support, batch.y_support), (batch.x_query, batch.y_query)):
        z = g.inverse(tf.cast(x, tf.float64)).numpy()
        clean = np.einsum("tnm,tm->tn", z, w.numpy())
        ratio = np.linalg.norm(y.numpy() - clean, axis=1) / np.linalg.norm(clean, axis=1)
        np.testing.assert_allclose(ratio, 0.1, rtol=1e-3)
    again, _ = synthetic.sample_tasks(SEED, g, num_tasks=5, n_support=30, n_query=20, rho=0.5,
                                      structure="equicorrelated", tasks=TASKS)
    np.testing.assert_array_equal(batch.y_query, again.y_query)


def test_sample_tasks_without_query_set():
    batch, _ = synthetic.sample_tasks(SEED, synthetic.Mixing(1, 6, 10), num_tasks=3, n_support=8,
                                      n_query=0, rho=0.0, structure="toeplitz", tasks=TASKS)
    assert batch.x_query is None and batch.y_query is None
    assert batch.x_support.shape == (3, 8, 10)
