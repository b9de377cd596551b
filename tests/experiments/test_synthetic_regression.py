"""Figure 1 (Section 2): the CV batch against scikit-learn, the data, one panel through the
harness, and the report over a sweep's panels."""

import csv
import importlib.util
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
from sdis_tf.sweep import hyper
from sdis_tf.train.rundir import ConfigMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILE = os.path.join(ROOT, "configs", "synthetic_regression.py")


def _config(preset="tiny"):
    return load_config(CONFIG_FILE, preset).to_dict()


def _small_problems(sizes=(9, 14), folds=3, fit_intercept=True):
    config = _config()
    config["data"]["train_sizes"] = sizes
    config["cv"].update(num_folds=folds, fit_intercept=fit_intercept)
    datasets = sr.sample_datasets(config)
    return config, datasets, sr.build_problems(datasets, sizes, folds, fit_intercept)


@pytest.mark.parametrize("n, folds", [(25, 5), (27, 5), (10, 3)])
def test_split_rows_are_kfold_then_the_refit(n, folds):
    train, val = sr.split_rows(n, folds, n_pad=30, v_pad=6)
    assert train.shape == (folds + 1, 30) and val.shape == (folds + 1, 6)
    for s, (fit_rows, val_rows) in enumerate(KFold(folds).split(np.zeros(n))):
        np.testing.assert_array_equal(train[s][train[s] >= 0], fit_rows)
        np.testing.assert_array_equal(val[s][val[s] >= 0], val_rows)
        assert np.all(np.diff(val_rows) == 1)          # contiguous blocks
    np.testing.assert_array_equal(train[folds][train[folds] >= 0], np.arange(n))
    assert np.all(val[folds] == -1)


def test_build_problems_centres_pads_and_holds_out():
    sizes, folds = (9, 14), 3
    _, datasets, problems = _small_problems(sizes, folds)
    S = folds + 1
    # Fits are ordered (seed, representation, n): fit 3 = seed 0, entangled, n = 14;
    # its split 1 holds rows 5..9 out.
    task = 3 * S + 1
    rows = np.r_[0:5, 10:14]
    x = datasets.features[0, 1, rows]
    y = datasets.targets[0, rows]
    np.testing.assert_allclose(problems.X[task, :9], x - x.mean(0), atol=1e-14)
    np.testing.assert_allclose(problems.Y[task, :9], y - y.mean(), atol=1e-14)
    np.testing.assert_allclose(problems.x_mean[task], x.mean(0), atol=1e-14)
    assert not problems.X[task, 9:].any() and not problems.Y[task, 9:].any()
    assert problems.num_train[task] == 9
    np.testing.assert_allclose(problems.X_val[task, :5], datasets.features[0, 1, 5:10])
    np.testing.assert_allclose(problems.Y_val[task, :5], datasets.targets[0, 5:10])
    assert problems.val_mask[task].sum() == 5
    # The refit split (s = K) uses all 14 rows and holds nothing out.
    refit = 3 * S + folds
    assert problems.num_train[refit] == 14 and not problems.val_mask[refit].any()
    # Seed 1, disentangled, n = 9: fit 4.
    np.testing.assert_allclose(problems.x_mean[4 * S + folds],
                               datasets.features[1, 0, :9].mean(0), atol=1e-14)
    assert problems.X.shape == (2 * 2 * 2 * S, 14, 12)
    _, _, uncentred = _small_problems(sizes, folds, fit_intercept=False)
    np.testing.assert_allclose(uncentred.X[task, :9], x)
    assert not uncentred.x_mean.any() and not uncentred.y_mean.any()


def test_lambda_scales_of_the_compressed_problems_are_those_of_the_data():
    _, _, problems = _small_problems()
    lasso_scale, ridge_scale = sr.lambda_scales(sr.compress(problems), 3)
    refit = slice(3, None, 4)
    X, Y, n = problems.X[refit], problems.Y[refit], problems.num_train[refit]
    np.testing.assert_allclose(lasso_scale,
                               np.abs(np.einsum("fnm,fn->fm", X, Y)).max(axis=1) / n, rtol=1e-12)
    np.testing.assert_allclose(ridge_scale, np.sum(X ** 2, axis=(1, 2)) / n, rtol=1e-12)


@pytest.mark.parametrize("backend", ["xla", "op"])
def test_lasso_path_matches_sklearn_on_padded_tasks(backend):
    if backend == "op" and not lasso_op.op_available():
        pytest.skip("the C++ Lasso op is not built")
    config = _config()
    sizes, folds = config["data"]["train_sizes"], config["cv"]["num_folds"]
    problems = sr.build_problems(sr.sample_datasets(config), sizes, folds, True)
    full = sr.compress(problems)
    lam_max, _ = sr.lambda_scales(full, folds)
    grid = sr.lambda_grid(np.repeat(lam_max, folds + 1), 1.0, 0.05, 5)
    tol = config["lasso"]["tol"]
    # 8 of the 32 tasks (folds and refits of both training-set sizes): a small batch
    # keeps the XLA compilation short.
    tasks = np.array([0, 3, 5, 7, 14, 19, 28, 31])
    subset = sr.Compressed(tf.gather(full.R, tasks), tf.gather(full.QtY, tasks),
                           full.factor[tasks])
    W, converged, _ = sr.lasso_path(subset, grid[tasks], tol=tol,
                                    max_epochs=config["lasso"]["max_epochs"], backend=backend)
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


def test_ridge_on_the_compressed_problems_is_sklearns_ridge_with_intercept():
    _, datasets, problems = _small_problems()
    compressed = sr.compress(problems)
    _, scale = sr.lambda_scales(compressed, 3)
    grid = np.repeat(sr.lambda_grid(scale, 10.0, 1e-5, 3), 4, axis=0)
    result = solvers.ridge_path(compressed.R, compressed.QtY, grid * compressed.factor[:, None])
    assert result.residual.numpy().max() < 1e-8
    # The refit of fit 0 (seed 0, disentangled, n = 9) and fold 1 of fit 3 (seed 0,
    # entangled, n = 14: rows 0..4 and 10..13): sklearn's alpha = n * lam on raw rows.
    for task, rows, representation in ((3, np.arange(9), 0), (13, np.r_[0:5, 10:14], 1)):
        raw_x, raw_y = datasets.features[0, representation, rows], datasets.targets[0, rows]
        for step in range(3):
            reference = Ridge(alpha=rows.size * grid[task, step]).fit(raw_x, raw_y)
            W = result.W.numpy()[step, task]
            np.testing.assert_allclose(W, reference.coef_, atol=1e-9)
            intercept = problems.y_mean[task] - problems.x_mean[task] @ W
            assert intercept == pytest.approx(reference.intercept_, abs=1e-9)


def test_select_averages_folds_and_breaks_ties_towards_larger_lambda():
    # L = 3 lambdas, F = 1 fit, K = 2 folds (+ the refit column, ignored).
    cv_error = np.array([[2.0, 4.0, np.nan], [1.0, 2.0, np.nan], [2.0, 1.0, np.nan]])
    mean, index = sr.select(cv_error, 2)
    np.testing.assert_allclose(mean, [[3.0, 1.5, 1.5]])
    assert index.tolist() == [1]


def test_validation_mse_and_r2_scores():
    _, _, problems = _small_problems()
    W = np.random.default_rng(0).normal(size=(2,) + problems.x_mean.shape)
    mse = sr.validation_mse(problems, W)
    task = 5   # fold 1 of fit 1 (n = 14): rows 5..9 held out
    held = problems.val_mask[task]
    predictions = (problems.X_val[task, held] - problems.x_mean[task]) @ W[1, task]
    expected = np.mean((problems.Y_val[task, held] - predictions - problems.y_mean[task]) ** 2)
    assert mse[1, task] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(mse[:, 3]).all()   # refit tasks hold nothing out
    y = np.array([[1.0, 2.0, 4.0], [0.0, 1.0, 0.0]])
    predictions = np.stack([y, y + 1.0, np.zeros_like(y)], axis=1)          # [2, 3, 3]
    expected = [[1.0, 1 - 3 / (14 / 3), 1 - 21 / (14 / 3)], [1.0, 1 - 3 / (2 / 3), 1 - 1.5]]
    np.testing.assert_allclose(sr.r2_scores(y[:, None], predictions), expected, rtol=1e-12)


def test_datasets_resample_per_seed_and_do_not_depend_on_other_panels():
    config = _config()
    both = sr.sample_datasets(config)
    config["num_seeds"] = 3
    three = sr.sample_datasets(config)
    np.testing.assert_array_equal(three.features[1], both.features[1])
    np.testing.assert_array_equal(three.weights[1], both.weights[1])
    assert not np.allclose(both.features[0], both.features[1])
    assert not np.allclose(both.weights[0], both.weights[1])
    m = config["data"]["num_features"]
    assert all(np.count_nonzero(w) == round(0.25 * m) for w in both.weights)
    # The entangled features are an orthogonal map of the disentangled ones.
    z, f = both.features[0, 0], both.features[0, 1]
    rotation = np.linalg.lstsq(z, f, rcond=None)[0]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(m), atol=1e-9)
    config["data"]["support_fraction"] = 0.75
    assert not np.allclose(sr.sample_datasets(config).features[0], both.features[0])


def test_latents_have_the_panels_covariance():
    config = _config()
    config["data"].update(num_features=4, train_sizes=(16,), num_test=4000, rho=0.5)
    config["num_seeds"] = 2
    for covariance in ("toeplitz", "equicorrelated", "iid"):
        config["data"]["covariance"] = covariance
        config["data"]["rho"] = 0.0 if covariance == "iid" else 0.5
        z = sr.sample_datasets(config).test_features[:, 0].reshape(-1, 4)
        expected = {"toeplitz": 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4))),
                    "equicorrelated": 0.5 * np.eye(4) + 0.5, "iid": np.eye(4)}[covariance]
        np.testing.assert_allclose(np.cov(z.T), expected, atol=0.06)


def test_invalid_configs_are_rejected_before_any_work(tmp_path):
    bad = str(tmp_path / "bad")
    cases = [
        ({"covariance": "banded"}, "config.data.covariance"),
        ({"train_sizes": (5, 16)}, r"below 2 \* config.cv.num_folds"),
        ({"covariance": "iid"}, "config.data.rho = 0.9 has no effect"),
        ({"support_fraction": 0.01}, "config.data.support_fraction = 0.01 gives an empty"),
    ]
    for change, message in cases:
        config = _config()
        config["data"].update(rho=0.9, **change)
        with pytest.raises(config_schema.ConfigError, match=message):
            experiments.run(config, bad)
    config = _config()
    config["lasso"]["backend"] = "gpu"
    with pytest.raises(config_schema.ConfigError, match="config.lasso.backend"):
        experiments.run(config, bad)
    assert not os.path.exists(bad)


def test_op_backend_without_the_op_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(lasso_op, "op_available", lambda: False)
    config = _config()
    config["lasso"]["backend"] = "op"
    with pytest.raises(config_schema.ConfigError, match="config.lasso.backend = 'op'"):
        experiments.run(config, str(tmp_path / "op"))
    assert not os.path.exists(tmp_path / "op")


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two tiny panels run through `experiments.run` into the sub-directories of a sweep."""
    workdir = str(tmp_path_factory.mktemp("sweep"))
    summaries = {}
    for name, covariance, rho in (("toeplitz", "toeplitz", 0.9), ("iid", "iid", 0.0)):
        config = _config()
        config["data"].update(covariance=covariance, rho=rho)
        summaries[name] = experiments.run(config, os.path.join(workdir, name))
    return workdir, summaries


def test_a_panel_runs_through_the_harness(sweep):
    workdir, summaries = sweep
    point = os.path.join(workdir, "toeplitz")
    assert {"config.json", "metrics.jsonl", "result.json"} <= set(os.listdir(point))
    with open(os.path.join(point, "result.json")) as f:
        result = json.load(f)
    config = _config()
    assert len(result["rows"]) == config["num_seeds"] * 2 * 2 * 2
    assert all(np.isfinite(r["r2"]) and r["r2"] <= 1.0 for r in result["rows"])
    statistics = result["statistics"]
    assert statistics["tasks"] == 2 * 2 * 2 * (config["cv"]["num_folds"] + 1)
    assert statistics["lasso"]["solves"] == statistics["tasks"] * config["lasso"]["num_lambdas"]
    assert statistics["ridge"]["solves"] == statistics["tasks"] * config["ridge"]["num_lambdas"]
    assert statistics["ridge"]["max_kkt_residual"] < 1e-8
    # Ridge is rotation invariant: entangled and disentangled coincide.
    assert result["eval/ridge_rotation_gap"] < 1e-6
    lasso = [r["r2"] for r in result["rows"] if (r["n"], r["representation"], r["method"])
             == (16, "disentangled", "lasso")]
    assert result["eval/r2_disentangled_lasso_n16"] == pytest.approx(np.mean(lasso), rel=1e-12)
    assert summaries["toeplitz"].startswith("toeplitz rho=0.9, l/m = 0.25: test R^2 at n = 10/16")
    assert "Disentangled-Lasso" in summaries["iid"]


def test_a_finished_panel_is_not_redone(sweep, monkeypatch):
    workdir, summaries = sweep
    calls = []
    monkeypatch.setattr(sr, "run_panel", calls.append)
    config = _config()
    assert experiments.run(config, os.path.join(workdir, "toeplitz")) == summaries["toeplitz"]
    assert calls == []
    config["num_seeds"] = 3
    with pytest.raises(ConfigMismatchError, match="config.num_seeds"):
        experiments.run(config, os.path.join(workdir, "toeplitz"))


def test_report_over_two_panels(sweep):
    workdir, _ = sweep
    table = sr.report(workdir)
    lines = table.splitlines()
    assert lines[0].split()[-2:] == ["n=10", "n=16"]
    assert len(lines) == 1 + 2 * 4
    assert lines[1].startswith("toeplitz 0.9") and lines[5].startswith("iid")
    for name in ("results.csv", "summary.csv", "figure1.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "figure1.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = _read_csv(os.path.join(workdir, "results.csv"))
    summary = _read_csv(os.path.join(workdir, "summary.csv"))
    assert len(rows) == 2 * 16 and len(summary) == 2 * 2 * 4
    # Per-point error bars are the standard error of that point's own seeds.
    for point in summary:
        own = [float(r["r2"]) for r in rows if all(
            r[k] == point[k] for k in ("covariance", "n", "representation", "method"))]
        assert len(own) == int(point["seeds"]) == 2
        assert float(point["r2_mean"]) == pytest.approx(np.mean(own), rel=1e-12)
        assert float(point["r2_se"]) == pytest.approx(np.std(own, ddof=1) / np.sqrt(2),
                                                      rel=1e-9)
    cell = next(p for p in summary if (p["covariance"], p["n"], p["representation"],
                                       p["method"]) == ("iid", "16", "entangled", "ridge"))
    assert f"{float(cell['r2_mean']):>8.3f}" in lines[8]


def test_report_without_finished_panels(tmp_path):
    os.makedirs(tmp_path / "unfinished")
    with pytest.raises(FileNotFoundError, match="no finished synthetic_regression runs"):
        sr.report(str(tmp_path))


def test_figure1_sweep_is_six_valid_panels():
    spec = importlib.util.spec_from_file_location("sr_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = module.get_sweep("figure1", hyper)
    assert len(points) == 6
    assert {(p["data.covariance"], p["data.support_fraction"]) for p in points} == {
        (c, f) for c in ("toeplitz", "iid") for f in (0.05, 0.2, 0.8)}
    for point in points:
        config = _config("")
        for key, value in point.items():
            section, field = key.split(".")
            config[section][field] = value
        config_schema.validate(config, sr.SCHEMA, sr.CONSTRAINTS)
    with pytest.raises(ValueError, match="allowed: 'figure1'"):
        module.get_sweep("figure2", hyper)
