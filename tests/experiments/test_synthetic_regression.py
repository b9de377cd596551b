"""The Section 2 experiment: CV plumbing against scikit-learn, data, and a tiny grid end to end."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import Lasso, Ridge
from sklearn.model_selection import KFold

from sdis_tf import config_schema, experiments, solvers
from sdis_tf.config_files import load_config
from sdis_tf.experiments import synthetic_regression as sr
from sdis_tf.solvers import lasso_op

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(preset="tiny"):
    return load_config(os.path.join(ROOT, "configs", "synthetic_regression.py"), preset).to_dict()


def _small_problems(sizes=(9, 14), folds=3, fit_intercept=True):
    config = _config()
    config["data"].update(train_sizes=sizes, support_fractions=(0.25,))
    config["num_seeds"] = 2
    config["cv"].update(num_folds=folds, fit_intercept=fit_intercept)
    datasets = sr.sample_datasets(config, "toeplitz")
    return config, datasets, sr.build_problems(datasets, sizes, folds, fit_intercept)


@pytest.mark.parametrize("n, folds", [(25, 5), (27, 5), (10, 3)])
def test_fold_bounds_match_sklearn_kfold(n, folds):
    expected = [(int(val[0]), int(val[-1]) + 1) for _, val in KFold(folds).split(np.zeros(n))]
    assert sr.fold_bounds(n, folds) == expected


def test_build_problems_centres_pads_and_holds_out():
    sizes, folds = (9, 14), 3
    _, datasets, problems = _small_problems(sizes, folds)
    S = folds + 1
    # Fits are ordered (dataset, representation, n): fit 3 = dataset 0, entangled,
    # n = 14; its split 1 holds rows 5..9 out.
    task = 3 * S + 1
    rows = np.r_[0:5, 10:14]
    x = datasets.features[0, 1, rows]
    y = datasets.targets[0, rows]
    np.testing.assert_allclose(problems.X[task, :9], x - x.mean(0), atol=1e-14)
    np.testing.assert_allclose(problems.Y[task, :9], y - y.mean(), atol=1e-14)
    assert not problems.X[task, 9:].any() and not problems.Y[task, 9:].any()
    assert problems.num_train[task] == 9
    np.testing.assert_allclose(problems.X_val[task, :5], datasets.features[0, 1, 5:10])
    assert problems.val_mask[task].sum() == 5
    # The refit split (s = K) uses all 14 rows and holds nothing out.
    refit = 3 * S + folds
    assert problems.num_train[refit] == 14 and not problems.val_mask[refit].any()


@pytest.mark.parametrize("solver", ["xla", "op"])
def test_lasso_path_matches_sklearn_on_padded_tasks(solver):
    if solver == "op" and not lasso_op.op_available():
        pytest.skip("the C++ Lasso op is not built")
    config = _config()
    sizes, folds = config["data"]["train_sizes"], config["cv"]["num_folds"]
    datasets = sr.sample_datasets(config, "iid")
    problems = sr.build_problems(datasets, sizes, folds, True)
    lam_max, _ = sr.lambda_scales(problems, folds)
    grid = sr.lambda_grid(np.repeat(lam_max, folds + 1), 1.0, 0.05, 5)
    tol = config["lasso"]["tol"]
    # 8 of the 64 tasks (folds and refits of both training-set sizes): a small
    # batch keeps the XLA compilation short.
    tasks = np.array([0, 3, 5, 7, 14, 31, 60, 63])
    full = sr.compress(problems)
    subset = sr.Compressed(tf.gather(full.R, tasks), tf.gather(full.QtY, tasks),
                           full.factor[tasks])
    W, converged, _ = sr.lasso_path(subset, grid[tasks], tol=tol,
                                    max_epochs=config["lasso"]["max_epochs"], solver=solver)
    assert W.shape == (5, 8, config["data"]["num_features"])
    for i, task in enumerate(tasks):
        n = int(problems.num_train[task])
        X, y = problems.X[task, :n], problems.Y[task, :n]
        for step in (1, 3):
            if not converged[step, i]:
                continue
            lam = grid[task, step]
            reference = Lasso(alpha=lam, fit_intercept=False, tol=1e-12,
                              max_iter=100000).fit(X, y).coef_

            def objective(w):
                return np.sum((y - X @ w) ** 2) / (2 * n) + lam * np.abs(w).sum()

            # Converged means a duality gap <= tol * ||Q^T y||^2 / (2 r) <= tol * P(0).
            assert objective(W[step, i]) <= objective(reference) + tol * y @ y / (2 * n)
            np.testing.assert_allclose(X @ W[step, i], X @ reference,
                                       atol=10 * np.sqrt(tol) * np.linalg.norm(y))
    assert converged.mean() > 0.9


def test_ridge_path_matches_the_solver_and_sklearn():
    _, datasets, problems = _small_problems()
    _, scale = sr.lambda_scales(problems, 3)
    grid = sr.lambda_grid(np.repeat(scale, 4), 10.0, 1e-5, 3)
    W, residual = sr.ridge_path(sr.compress(problems), grid)
    assert residual.shape == grid.T.shape and residual.max() < 1e-8
    for task in (2, 11):   # a fold of n = 9 (6 training rows) and a refit of n = 14
        n = int(problems.num_train[task])
        X, y = problems.X[task, :n], problems.Y[task, :n]
        for step in range(3):
            reference = solvers.ridge(X[None], y[None], grid[task, step]).W.numpy()[0]
            np.testing.assert_allclose(W[step, task], reference, atol=1e-9)
    # With the intercept: sklearn's alpha = n * lam on the raw (uncentred) rows.
    task, n = 3, 9   # refit of fit 0 (n = 9)
    raw_x, raw_y = datasets.features[0, 0, :n], datasets.targets[0, :n]
    reference = Ridge(alpha=n * grid[task, 1]).fit(raw_x, raw_y)
    np.testing.assert_allclose(W[1, task], reference.coef_, atol=1e-9)
    intercept = problems.y_mean[task] - problems.x_mean[task] @ W[1, task]
    assert intercept == pytest.approx(reference.intercept_, abs=1e-9)


def test_select_averages_folds_and_breaks_ties_towards_larger_lambda():
    # L = 3 lambdas, F = 1 fit, K = 2 folds (+ the refit column, ignored).
    cv_error = np.array([[2.0, 4.0, np.nan], [1.0, 2.0, np.nan], [2.0, 1.0, np.nan]])
    mean, index = sr.select(cv_error, 2)
    np.testing.assert_allclose(mean, [[3.0, 1.5, 1.5]])
    assert index.tolist() == [1]


def test_datasets_resample_per_seed_and_do_not_depend_on_the_grid():
    config = _config()
    full = sr.sample_datasets(config, "iid")
    config["data"]["support_fractions"] = (0.75,)
    part = sr.sample_datasets(config, "iid")
    k = full.keys.index(("iid", 0.75, 1))
    np.testing.assert_array_equal(part.features[1], full.features[k])
    np.testing.assert_array_equal(part.weights[1], full.weights[k])
    assert not np.allclose(part.features[0], part.features[1])
    assert not np.allclose(part.weights[0], part.weights[1])
    m = config["data"]["num_features"]
    assert all(np.count_nonzero(w) == round(0.75 * m) for w in part.weights)
    # The entangled features are an orthogonal map of the disentangled ones.
    z, f = part.features[0, 0], part.features[0, 1]
    rotation = np.linalg.lstsq(z, f, rcond=None)[0]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(m), atol=1e-9)


def test_covariance():
    sigma = sr.covariance("toeplitz", 4, 0.5)
    np.testing.assert_allclose(sigma[0], [1.0, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(sigma, sigma.T)
    np.testing.assert_array_equal(sr.covariance("iid", 3, 0.5), np.eye(3))
    with pytest.raises(ValueError, match="covariance must be one of"):
        sr.covariance("equicorrelated", 3, 0.5)


def test_invalid_configs_are_rejected_before_any_work(tmp_path):
    config = _config()
    config["data"]["train_sizes"] = (5, 16)
    config["data"]["covariances"] = ("toeplitz", "banded")
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, str(tmp_path / "bad"))
    assert "config.data.covariances" in str(error.value)
    config["data"]["covariances"] = ("iid",)
    with pytest.raises(config_schema.ConfigError, match="below 2 \\* config.cv.num_folds"):
        experiments.run(config, str(tmp_path / "bad"))
    config["data"]["train_sizes"] = (6, 16)
    config["lasso"]["solver"] = "gpu"
    with pytest.raises(config_schema.ConfigError, match="config.lasso.solver"):
        experiments.run(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_grid_end_to_end_and_resume(tmp_path, monkeypatch):
    config = _config()
    workdir = str(tmp_path / "run")
    table = experiments.run(config, workdir)
    for name in ("config.json", "result.json", "results.csv", "summary.csv", "figure1.png",
                 "rows_toeplitz.json", "rows_iid.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    rows = _read_csv(os.path.join(workdir, "results.csv"))
    data = config["data"]
    assert len(rows) == (len(data["covariances"]) * len(data["support_fractions"])
                         * config["num_seeds"] * len(data["train_sizes"]) * 4)
    assert all(np.isfinite(float(r["r2"])) and float(r["r2"]) <= 1.0 for r in rows)
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    statistics = result["statistics"]["iid"]
    assert statistics["tasks"] == 2 * 2 * 2 * 2 * (config["cv"]["num_folds"] + 1)
    assert statistics["ridge"]["solves"] == statistics["tasks"] * config["ridge"]["num_lambdas"]
    assert statistics["ridge"]["max_kkt_residual"] < 1e-8
    # Ridge is rotation invariant: entangled and disentangled coincide.
    assert result["ridge_rotation_gap"] < 1e-6
    # Per-point error bars are the standard error of that point's own seeds.
    point = next(s for s in result["summary"] if s["method"] == "lasso")
    own = [float(r["r2"]) for r in rows
           if (r["covariance"], float(r["support_fraction"]), int(r["n"]), r["representation"],
               r["method"]) == (point["covariance"], point["support_fraction"], point["n"],
                                point["representation"], "lasso")]
    assert point["r2_se"] == pytest.approx(np.std(own, ddof=1) / np.sqrt(len(own)), rel=1e-9)
    assert "Disentangled-Lasso" in table

    # A finished workdir is not redone: the same table comes back from result.json.
    compute = sr.run_covariance
    calls = []

    def counted(config, cov_name):
        calls.append(cov_name)
        return compute(config, cov_name)

    monkeypatch.setattr(sr, "run_covariance", counted)
    assert experiments.run(config, workdir) == table
    assert calls == []
    # An interrupted run (no result.json; only the Toeplitz rows saved) computes
    # only the missing covariance and assembles the same results.
    for name in ("result.json", "figure1.png", "results.csv", "rows_iid.json"):
        os.remove(os.path.join(workdir, name))
    assert experiments.run(config, workdir) == table
    assert calls == ["iid"]
    resumed = _read_csv(os.path.join(workdir, "results.csv"))
    assert [float(r["r2"]) for r in resumed] == pytest.approx(
        [float(r["r2"]) for r in rows], abs=1e-9)
    # A rerun with another config in the same workdir is refused.
    config["num_seeds"] = 3
    with pytest.raises(ValueError, match="config.num_seeds"):
        experiments.run(config, workdir)
