"""Proximal operators: block soft-thresholding and simplex projection, values and gradients."""

import numpy as np
import tensorflow as tf
from scipy.optimize import minimize

from sdis_tf.solvers.prox import block_soft_threshold, safe_norm, simplex_projection


def test_block_soft_threshold_is_the_group_prox():
    rng = np.random.default_rng(0)
    v, t = rng.standard_normal((4, 3)), 0.7
    out = block_soft_threshold(tf.constant(v), t).numpy()
    for row, got in zip(v, out):
        res = minimize(lambda u: 0.5 * np.sum((u - row) ** 2) + t * np.linalg.norm(u), row, tol=1e-12)
        np.testing.assert_allclose(got, res.x, atol=1e-5)
    scalar = block_soft_threshold(tf.constant(v[:, :1]), t).numpy()
    np.testing.assert_allclose(scalar, np.sign(v[:, :1]) * np.maximum(np.abs(v[:, :1]) - t, 0))


def test_zero_vectors_have_finite_gradients():
    v = tf.zeros((2, 3), tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(v)
        outs = [block_soft_threshold(v, 0.5), block_soft_threshold(v, 0.0), safe_norm(v)]
    for out in outs:
        assert np.all(np.isfinite(tape.gradient(out, v).numpy()))


def test_simplex_projection_matches_a_constrained_solver():
    rng = np.random.default_rng(1)
    v = 2 * rng.standard_normal((5, 4))
    out = simplex_projection(tf.constant(v)).numpy()
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(out >= 0)
    for row, got in zip(v, out):
        res = minimize(lambda u: np.sum((u - row) ** 2), np.full(4, 0.25), method="SLSQP",
                       bounds=[(0, None)] * 4, constraints={"type": "eq", "fun": lambda u: u.sum() - 1},
                       options={"ftol": 1e-14})
        np.testing.assert_allclose(got, res.x, atol=1e-6)
    inside = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_allclose(simplex_projection(tf.constant(inside)).numpy(), inside)
