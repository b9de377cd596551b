"""The latent covariance family against its closed forms."""

import numpy as np
import pytest

from sdis_tf.data import covariances


def test_toeplitz_is_rho_to_the_lag():
    sigma = covariances.covariance("toeplitz", 5, 0.7)
    for i in range(5):
        for j in range(5):
            assert sigma[i, j] == pytest.approx(0.7 ** abs(i - j), rel=1e-15)
    np.testing.assert_array_equal(covariances.covariance("gauss", 5, 0.7), sigma)
    np.testing.assert_allclose(covariances.covariance("toeplitz", 3, -0.5),
                               [[1, -.5, .25], [-.5, 1, -.5], [.25, -.5, 1]])


def test_equicorrelated_has_one_correlation_and_the_known_spectrum():
    m, rho = 6, 0.3
    sigma = covariances.covariance("equicorrelated", m, rho)
    np.testing.assert_array_equal(np.diag(sigma), np.ones(m))
    np.testing.assert_array_equal(sigma[~np.eye(m, dtype=bool)], np.full(m * m - m, rho))
    # Eigenvalues: 1 + (m - 1) rho once (along 1), 1 - rho (m - 1 times).
    np.testing.assert_allclose(np.linalg.eigvalsh(sigma),
                               [1 - rho] * (m - 1) + [1 + (m - 1) * rho], rtol=1e-12)
    np.testing.assert_array_equal(covariances.covariance("harder_gauss", m, rho), sigma)


def test_iid_ignores_rho_and_one_dimension_is_one():
    np.testing.assert_array_equal(covariances.covariance("iid", 4, 0.9), np.eye(4))
    for kind in covariances.KINDS:
        np.testing.assert_array_equal(covariances.covariance(kind, 1, 0.5), [[1.0]])


@pytest.mark.parametrize("kind, dim, rho", [
    ("toeplitz", 3, 1.0), ("toeplitz", 3, -1.0), ("equicorrelated", 3, 1.0),
    ("equicorrelated", 3, -0.5), ("harder_gauss", 5, -0.3)])
def test_rho_outside_the_positive_definite_range_is_refused(kind, dim, rho):
    with pytest.raises(ValueError, match=r"rho must lie in \(-"):
        covariances.covariance(kind, dim, rho)


def test_every_allowed_rho_gives_a_positive_definite_matrix():
    for kind in ("equicorrelated", "toeplitz"):
        for rho in (-0.24, 0.0, 0.5, 0.999):
            assert np.linalg.eigvalsh(covariances.covariance(kind, 5, rho)).min() > 0


def test_unknown_kinds_and_names():
    assert covariances.canonical("gauss") == "toeplitz"
    assert covariances.canonical("iid") == "iid"
    with pytest.raises(ValueError, match="'iid', 'equicorrelated', 'toeplitz', 'harder_gauss'"):
        covariances.covariance("banded", 3, 0.5)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        covariances.covariance("iid", 0)
