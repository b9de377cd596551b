"""Tests for sdis_tf.ica: source recovery, the sklearn reference, reproducibility."""

import warnings

import numpy as np
import pytest
from sklearn.decomposition import FastICA

from sdis_tf import ica, metrics


def _mixed_sources(rng, n, k=3):
    return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size=(n, k))  # non-Gaussian, unit var


def test_recovers_independent_sources_from_a_linear_mixture():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 3))
    train = _mixed_sources(rng, 3000)
    evaluation = _mixed_sources(rng, 1000)
    codes = evaluation @ mixing.T + 1.5
    assert metrics.mcc(evaluation, codes) < 0.9
    recovered = ica.ica_baseline(train @ mixing.T + 1.5, codes, seed=0)
    assert recovered.shape == (1000, 3)
    assert metrics.mcc(evaluation, recovered) > 0.99


def test_matches_sklearn_fastica_fit_on_train_applied_to_eval():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(4, 4))
    train = rng.laplace(size=(800, 4)) @ mixing.T
    evaluation = rng.laplace(size=(50, 4)) @ mixing.T
    fitted = ica.fit_ica(train, seed=3, max_iter=500)
    reference = FastICA(whiten="unit-variance", fun="logcosh", random_state=3,
                        max_iter=500).fit(train)
    np.testing.assert_allclose(fitted.transform(evaluation), reference.transform(evaluation),
                               atol=1e-10)
    assert fitted.converged
    # Unit-variance, decorrelated sources on the training codes.
    sources = fitted.transform(train)
    np.testing.assert_allclose(np.cov(sources, rowvar=False, bias=True), np.eye(4), atol=1e-8)


def test_seeded_is_reproducible_and_transform_is_batched():
    rng = np.random.default_rng(2)
    train = rng.laplace(size=(500, 3)) @ rng.normal(size=(3, 3))
    a, b = ica.fit_ica(train, seed=7), ica.fit_ica(train, seed=7)
    np.testing.assert_array_equal(a.unmixing, b.unmixing)
    batch = rng.normal(size=(2, 5, 3))
    np.testing.assert_allclose(a.transform(batch)[1], a.transform(batch[1]), atol=1e-14)


def test_reports_non_convergence():
    rng = np.random.default_rng(3)
    train = rng.laplace(size=(500, 3)) @ rng.normal(size=(3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ica.fit_ica(train, seed=0, max_iter=1, tol=1e-12)
    assert not fitted.converged and fitted.n_iter == 1


def test_errors():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(50, 3))
    bad = train.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="`train_codes` contains NaN"):
        ica.fit_ica(bad)
    constant = train.copy()
    constant[:, 1] = 2.0
    with pytest.raises(ValueError, match=r"constant columns \[1\]"):
        ica.fit_ica(constant)
    with pytest.raises(ValueError, match="more samples than columns"):
        ica.fit_ica(train[:3])
    with pytest.raises(ValueError, match="`n_components` must be in"):
        ica.fit_ica(train, n_components=4)
    with pytest.raises(ValueError, match="as many columns as `train_codes`"):
        ica.ica_baseline(train, train[:, :2])
    with pytest.raises(ValueError, match="must have 3 columns"):
        ica.fit_ica(rng.laplace(size=(200, 3))).transform(train[:, :2])
