"""Section 2 / Figure 1: a disentangled representation plus sparsity generalises better.

Protocol (paper appendix D.1). For each latent covariance in
`data.covariances`, support fraction l/m in `data.support_fractions` and seed:

    z ~ N(0, Sigma) in R^m,   Sigma_ij = rho^|i-j| ("toeplitz") or I ("iid"),
    y = w . z + eps,          eps ~ N(0, noise_std^2),
    w ~ N(0, I_m) on l = round(fraction * m) random coordinates, 0 elsewhere,
    disentangled features z,  entangled features L z with L ~ Haar on O(m).

Every seed redraws w, L, a pool of max(train_sizes) training samples (the
training set of size n is its first n samples, so curves over n are paired)
and `num_test` test samples. On each training set, Lasso
min_w 1/(2n)||y - Xw||^2 + lam ||w||_1 and Ridge 1/(2n)||y - Xw||^2 +
lam/2 ||w||^2 (with an unpenalised intercept by centring when
`cv.fit_intercept`) pick lam on a geometric grid by K-fold cross-validation
(contiguous folds, like scikit-learn's KFold; mean validation MSE over folds;
ties go to the larger lam), are refitted on the whole training set, and are
scored by R^2 on the test samples. The score of the true w ("oracle") is the
noise ceiling.

Batching: for each covariance, every (fraction, seed, representation, n) fit
and every split (K folds plus the refit) is one task of a single batch (2160
tasks for the default grid). Training sets of different sizes share it by
zero-padding to n_pad = max(train_sizes) rows (zero rows leave X^T X and X^T y
unchanged), then by the equivalent compressed problems with min(n_pad, m) rows
(`compress`). The Lasso runs one batched solve per lam of the grid over the
whole batch (all seeds x folds x sizes), warm-started from the previous
(larger) lam, with the C++ op `sdis_tf.solvers.lasso_op` when it is built
(working sets and screening; ~30x faster here) or else `sdis_tf.solvers.lasso`
(`lasso.solver`). Ridge takes the whole lam path from one SVD per problem (`solvers.ridge_path`).

Outputs in the workdir: config.json; rows_<covariance>.json (the rows of each
finished covariance: what an interrupted run resumes from); results.csv (one
row per seed, setting and method); summary.csv (mean and standard error over
seeds); figure1.png (one row of three panels per covariance, as the paper's
Fig. 1, error bars = standard error over the seeds of each point); result.json
(summary and run statistics; written last, a finished run is not redone).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time

import numpy as np
import tensorflow as tf
import threadpoolctl
from absl import logging
from scipy import stats

from sdis_tf import config_schema as cs
from sdis_tf import solvers
from sdis_tf.solvers import lasso_op
from sdis_tf.train.rundir import RunDir, atomic_write, save_figure

COVARIANCES = ("toeplitz", "iid")
REPRESENTATIONS = ("disentangled", "entangled")
METHODS = ("lasso", "ridge")

SCHEMA = {
    "experiment": cs.Choice("synthetic_regression"),
    "seed": cs.Int(min=0),
    "num_seeds": cs.Int(min=2),
    "data": {
        "num_features": cs.Int(min=2),
        "covariances": cs.Tuple(cs.Choice(*COVARIANCES), unique=True),
        "rho": cs.CORRELATION,
        "support_fractions": cs.Tuple(cs.Float(min=0.0, max=1.0, min_open=True), unique=True),
        "noise_std": cs.NONNEGATIVE,
        "train_sizes": cs.Tuple(cs.Int(min=4), unique=True),
        "num_test": cs.Int(min=2),
    },
    "cv": {"num_folds": cs.Int(min=2), "fit_intercept": cs.Bool()},
    "lasso": {
        "num_lambdas": cs.Int(min=2),
        "min_ratio": cs.Float(min=0.0, max=1.0, min_open=True, max_open=True),
        "tol": cs.POSITIVE,
        "max_epochs": cs.COUNT,
        "solver": cs.Choice("auto", "xla", "op"),
    },
    "ridge": {"num_lambdas": cs.Int(min=2), "max_ratio": cs.POSITIVE, "min_ratio": cs.POSITIVE},
}


def _cross_field(config: dict) -> list[str]:
    problems = []
    folds = config["cv"]["num_folds"]
    small = [n for n in config["data"]["train_sizes"] if n < 2 * folds]
    if small:
        problems.append(
            f"config.data.train_sizes = {tuple(config['data']['train_sizes'])}: sizes {small} "
            f"are below 2 * config.cv.num_folds = {2 * folds}; allowed: every n >= {2 * folds}")
    m = config["data"]["num_features"]
    empty = [f for f in config["data"]["support_fractions"] if round(f * m) < 1]
    if empty:
        problems.append(
            f"config.data.support_fractions: {empty} give an empty support with "
            f"num_features = {m}; allowed: fractions >= {0.5 / m:g}")
    if config["ridge"]["min_ratio"] >= config["ridge"]["max_ratio"]:
        problems.append("config.ridge.min_ratio must be < config.ridge.max_ratio")
    return problems


CONSTRAINTS = (_cross_field,)


# --- data ----------------------------------------------------------------------------

def covariance(name: str, num_features: int, rho: float) -> np.ndarray:
    """Sigma [m, m]: rho^|i-j| ("toeplitz") or the identity ("iid")."""
    if name not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}; received {name!r}.")
    if name == "iid":
        return np.eye(num_features)
    index = np.arange(num_features)
    return rho ** np.abs(np.subtract.outer(index, index)).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Datasets:
    """D independent draws, one per (covariance, fraction, seed) in `keys`.

    features [D, 2, n_pool, m] and test_features [D, 2, n_test, m]: the
    disentangled (z) and entangled (z L^T) representations; targets [D, n_pool],
    test_targets [D, n_test], weights [D, m].
    """
    keys: tuple
    features: np.ndarray
    targets: np.ndarray
    test_features: np.ndarray
    test_targets: np.ndarray
    weights: np.ndarray


def sample_datasets(config: dict, cov_name: str) -> Datasets:
    """Draws the datasets of covariance `cov_name`, one per (l/m, seed). Each has
    its own generator keyed by (config seed, covariance, fraction, seed index),
    so a draw does not depend on the rest of the grid."""
    data = config["data"]
    m, n_pool, n_test = data["num_features"], max(data["train_sizes"]), data["num_test"]
    factor = np.linalg.cholesky(covariance(cov_name, m, data["rho"]))
    keys, features, targets, test_features, test_targets, weights = [], [], [], [], [], []
    for fraction in data["support_fractions"]:
        for seed in range(config["num_seeds"]):
            rng = np.random.default_rng(
                [config["seed"], COVARIANCES.index(cov_name), round(fraction * 1e6), seed])
            w = np.zeros(m)
            support = rng.choice(m, size=round(fraction * m), replace=False)
            w[support] = rng.normal(size=support.size)
            rotation = stats.ortho_group.rvs(m, random_state=rng)
            z = rng.normal(size=(n_pool + n_test, m)) @ factor.T
            y = z @ w + data["noise_std"] * rng.normal(size=n_pool + n_test)
            both = np.stack([z, z @ rotation.T])
            keys.append((cov_name, fraction, seed))
            features.append(both[:, :n_pool])
            test_features.append(both[:, n_pool:])
            targets.append(y[:n_pool])
            test_targets.append(y[n_pool:])
            weights.append(w)
    return Datasets(tuple(keys), np.stack(features), np.stack(targets),
                    np.stack(test_features), np.stack(test_targets), np.stack(weights))


# --- cross-validation problems -------------------------------------------------------------

def _matvec(A, x):
    """Batched A [..., p, q] @ x [..., q] -> [..., p] (BLAS, broadcasting batch axes)."""
    return (A @ x[..., None])[..., 0]


def fold_bounds(n: int, num_folds: int) -> list[tuple[int, int]]:
    """Contiguous validation blocks [start, stop); the first n % K are one longer."""
    sizes = np.full(num_folds, n // num_folds) + (np.arange(num_folds) < n % num_folds)
    stops = np.cumsum(sizes)
    return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]


@dataclasses.dataclass(frozen=True)
class Problems:
    """A batch of T = F (K + 1) training problems: task f (K+1) + s is split s of fit f
    (s < K: fold s held out; s = K: the whole training set).

    X [T, n_pad, m], Y [T, n_pad]: centred training rows, zero padding;
    num_train [T]; x_mean [T, m], y_mean [T] (zero without intercept);
    X_val [T, v_pad, m], Y_val [T, v_pad], val_mask [T, v_pad] (empty for s = K).
    """
    X: np.ndarray
    Y: np.ndarray
    num_train: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    val_mask: np.ndarray


def _split_indices(n: int, num_folds: int, n_pad: int, v_pad: int):
    """Row indices (-1 = padding) of the training [K+1, n_pad] and validation
    [K+1, v_pad] rows of every split of a training set of size n."""
    train = np.full((num_folds + 1, n_pad), -1)
    val = np.full((num_folds + 1, v_pad), -1)
    for s, (start, stop) in enumerate(fold_bounds(n, num_folds)):
        rows = np.r_[0:start, stop:n]
        train[s, :rows.size] = rows
        val[s, :stop - start] = np.arange(start, stop)
    train[num_folds, :n] = np.arange(n)
    return train, val


def _gather(features, targets, index):
    """features [G, n, m], targets [G, n], index [S, p] (-1 = padding)
    -> (features [G, S, p, m], targets [G, S, p], mask [S, p]), zero on padding."""
    mask = index >= 0
    safe = np.where(mask, index, 0)
    return (features[:, safe] * mask[..., None], targets[:, safe] * mask, mask)


def build_problems(datasets: Datasets, train_sizes, num_folds: int,
                   fit_intercept: bool) -> Problems:
    """All splits of all fits, fits ordered (dataset, representation, n)."""
    D, P, _, m = datasets.features.shape
    N, S = len(train_sizes), num_folds + 1
    n_pad = max(train_sizes)
    v_pad = -(-n_pad // num_folds)
    shape = (D, P, N, S)
    X, Y = np.zeros(shape + (n_pad, m)), np.zeros(shape + (n_pad,))
    X_val, Y_val = np.zeros(shape + (v_pad, m)), np.zeros(shape + (v_pad,))
    val_mask = np.zeros(shape + (v_pad,), dtype=bool)
    num_train = np.zeros(shape)
    x_mean, y_mean = np.zeros(shape + (m,)), np.zeros(shape)
    features = datasets.features.reshape(D * P, -1, m)
    targets = np.repeat(datasets.targets, P, axis=0)
    for i, n in enumerate(train_sizes):
        train_index, val_index = _split_indices(n, num_folds, n_pad, v_pad)
        x, y, mask = _gather(features[:, :n], targets[:, :n], train_index)
        count = mask.sum(axis=-1)                                          # [S]
        if fit_intercept:
            xm = x.sum(axis=-2) / count[:, None]                           # [DP, S, m]
            ym = y.sum(axis=-1) / count
            x = (x - xm[..., None, :]) * mask[..., None]
            y = (y - ym[..., None]) * mask
            x_mean[:, :, i] = xm.reshape(D, P, S, m)
            y_mean[:, :, i] = ym.reshape(D, P, S)
        X[:, :, i] = x.reshape(D, P, S, n_pad, m)
        Y[:, :, i] = y.reshape(D, P, S, n_pad)
        num_train[:, :, i] = count
        xv, yv, vmask = _gather(features[:, :n], targets[:, :n], val_index)
        X_val[:, :, i] = xv.reshape(D, P, S, v_pad, m)
        Y_val[:, :, i] = yv.reshape(D, P, S, v_pad)
        val_mask[:, :, i] = vmask
    flat = lambda a: a.reshape((-1,) + a.shape[4:])  # noqa: E731
    return Problems(flat(X), flat(Y), flat(num_train), flat(x_mean), flat(y_mean),
                    flat(X_val), flat(Y_val), flat(val_mask))


# --- regularisation paths --------------------------------------------------------------

def lambda_grid(scale: np.ndarray, max_ratio: float, min_ratio: float, num: int) -> np.ndarray:
    """[F, num]: scale[f] * geometric ratios from max_ratio down to min_ratio."""
    return scale[:, None] * np.geomspace(max_ratio, min_ratio, num)[None, :]


@dataclasses.dataclass(frozen=True)
class Compressed:
    """The tasks of `Problems` as equivalent problems with r = min(n_pad, m) rows.

    R [T, r, m], QtY [T, r] (see `compress`) and factor [T] = n / r: the
    minimiser of 1/(2n)||y - X w||^2 + lam pen(w) (n real rows) is the
    minimiser of 1/(2r)||Q^T y - R w||^2 + (lam factor) pen(w) for any penalty.
    """
    R: tf.Tensor
    QtY: tf.Tensor
    factor: np.ndarray


def compress(problems: Problems) -> Compressed:
    """An equivalent least-squares problem with at most m rows per task.

    With the reduced QR decomposition X = Q R (X [T, n_pad, m], R [T, r, m]),
    ||y - X w||^2 = ||Q^T y - R w||^2 + ||(I - Q Q^T) y||^2, so (R, Q^T y) has
    the same minimisers for any penalty, and the solvers' work on the data
    (Gram matrices, residuals, gaps) drops from n_pad to r rows.
    """
    Q, R = np.linalg.qr(problems.X)
    QtY = _matvec(np.swapaxes(Q, -1, -2), problems.Y)
    return Compressed(tf.constant(R), tf.constant(QtY), problems.num_train / R.shape[1])


def resolve_lasso_solver(name: str) -> str:
    """"auto" -> "op" when the C++ op is loaded, else "xla"; others unchanged."""
    if name == "auto":
        return "op" if lasso_op.op_available() else "xla"
    if name == "op" and not lasso_op.op_available():
        raise RuntimeError("config.lasso.solver = 'op' but the C++ Lasso op is unavailable; "
                           "build it (python custom_ops/build.py) or use 'auto' or 'xla'.")
    return name


def lasso_path(problems: Compressed, lambdas: np.ndarray, *, tol: float, max_epochs: int,
               solver: str = "xla"):
    """Lasso for every task along its grid `lambdas [T, L]` (decreasing) -> W [L, T, m].

    One batched solve over all T tasks per lam, warm-started from the previous
    (larger) lam. solver: "xla" (`sdis_tf.solvers.lasso`, coordinate descent
    under XLA) or "op" (`sdis_tf.solvers.lasso_op`, the C++ kernel with working
    sets and screening): same problem and stopping rule. `lambdas` refer to the
    original problems (1/(2n) normalisation); the solve is on the compressed
    ones, so "converged" means duality gap <= tol ||Q^T y||^2 / (2r) there.

    Returns (W [L, T, m], converged [L, T] bool, epochs [L, T]).
    """
    if solver not in ("xla", "op"):
        raise ValueError(f"solver must be 'xla' or 'op'; received {solver!r}.")
    W, path, converged, epochs = None, [], [], []
    for step in range(lambdas.shape[1]):
        lam = lambdas[:, step] * problems.factor
        if solver == "op":
            result = lasso_op.lasso_op(problems.R, problems.QtY, lam, tol=tol,
                                       max_epochs=max_epochs, W0=W)
        else:
            result = solvers.lasso(problems.R, problems.QtY, lam, tol=tol,
                                   max_epochs=max_epochs, W0=W, method="gram")
        W = result.W
        path.append(W.numpy())
        converged.append(result.converged.numpy())
        epochs.append(result.epochs.numpy())
        logging.log_every_n_seconds(
            logging.INFO, "lasso path: lambda %d/%d, max epochs %d, %d not converged", 10,
            step + 1, lambdas.shape[1], epochs[-1].max(), (~converged[-1]).sum())
    return np.stack(path), np.stack(converged), np.stack(epochs)


def ridge_path(problems: Compressed, lambdas: np.ndarray):
    """Ridge for every task and every lam of `lambdas [T, L]`.

    The whole path from one SVD per compressed problem (`sdis_tf.solvers.ridge_path`);
    `lambdas` refer to the original problems, 1/(2n)||y - X w||^2 + lam/2 ||w||^2.

    Returns (W [L, T, m], residual [L, T]: the solver's relative KKT residual).
    """
    result = solvers.ridge_path(problems.R, problems.QtY, lambdas * problems.factor[:, None])
    return result.W.numpy(), result.residual.numpy()


def validation_mse(problems: Problems, W: np.ndarray) -> np.ndarray:
    """Mean squared error on each task's held-out rows for W [L, T, m] -> [L, T]
    (NaN for the refit tasks, which hold nothing out)."""
    centred = (problems.X_val - problems.x_mean[:, None, :]) * problems.val_mask[..., None]
    predictions = _matvec(centred, W) + problems.y_mean[:, None]
    errors = np.where(problems.val_mask, problems.Y_val - predictions, 0.0)
    count = problems.val_mask.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(errors ** 2, axis=-1) / count


def select(cv_error: np.ndarray, num_folds: int):
    """Mean validation MSE over folds per fit and lam, and the chosen lam index.

    cv_error [L, F (K+1)] -> (mean [F, L], index [F]); the first minimiser wins,
    i.e. the largest lam among ties (grids are decreasing).
    """
    L = cv_error.shape[0]
    folds = cv_error.reshape(L, -1, num_folds + 1)[:, :, :num_folds]
    mean = folds.mean(axis=-1).T
    return mean, np.argmin(mean, axis=1)


def r2_score(y, predictions):
    """Coefficient of determination along the last axis: 1 - SSE / SST."""
    sse = np.sum((y - predictions) ** 2, axis=-1)
    sst = np.sum((y - y.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    return 1.0 - sse / sst


def heldout_r2(datasets: Datasets, problems: Problems, W_refit: np.ndarray, num_sizes: int,
               num_folds: int) -> np.ndarray:
    """Test R^2 of the refitted W [F, m] (fits ordered dataset, representation, n)
    -> [D, P, N]."""
    S = num_folds + 1
    D, P = datasets.features.shape[:2]
    refit = slice(num_folds, None, S)
    intercept = problems.y_mean[refit] - np.einsum("fm,fm->f", problems.x_mean[refit], W_refit)
    W = W_refit.reshape(D, P, num_sizes, -1)
    predictions = np.swapaxes(datasets.test_features @ np.swapaxes(W, -1, -2), -1, -2)
    predictions += intercept.reshape(D, P, num_sizes, 1)
    return r2_score(datasets.test_targets[:, None, None, :], predictions)


# --- the experiment ------------------------------------------------------------------

def _fit_method(method, config, datasets, problems, compressed, scale):
    """Cross-validates and refits `method` on all fits: returns per-fit arrays
    and solver statistics."""
    num_folds = config["cv"]["num_folds"]
    S = num_folds + 1
    if method == "lasso":
        settings = config["lasso"]
        grid = lambda_grid(scale, 1.0, settings["min_ratio"], settings["num_lambdas"])
        W, converged, epochs = lasso_path(
            compressed, np.repeat(grid, S, axis=0), tol=settings["tol"],
            max_epochs=settings["max_epochs"], solver=resolve_lasso_solver(settings["solver"]))
        statistics = dict(solves=converged.size, not_converged=int((~converged).sum()),
                          task_epochs=int(epochs.sum()))
    else:
        settings = config["ridge"]
        grid = lambda_grid(scale, settings["max_ratio"], settings["min_ratio"],
                           settings["num_lambdas"])
        W, residual = ridge_path(compressed, np.repeat(grid, S, axis=0))
        converged = np.ones(W.shape[:2], dtype=bool)
        statistics = dict(solves=residual.size, max_kkt_residual=float(residual.max()))
    cv_mean, chosen = select(validation_mse(problems, W), num_folds)
    fits = np.arange(grid.shape[0])
    refit_task = fits * S + num_folds
    r2 = heldout_r2(datasets, problems, W[chosen, refit_task],
                    len(config["data"]["train_sizes"]), num_folds)
    per_fit = dict(r2=r2.reshape(-1), lam=grid[fits, chosen], ratio=grid[fits, chosen] / scale,
                   cv_mse=cv_mean[fits, chosen],
                   converged=converged.all(axis=0).reshape(-1, S).all(axis=1))
    return per_fit, statistics


def lambda_scales(problems: Problems, num_folds: int):
    """Per fit, from its whole training set: lasso_lambda_max and ridge_lambda_max."""
    refit = slice(num_folds, None, num_folds + 1)
    X, Y, n = problems.X[refit], problems.Y[refit], problems.num_train[refit]
    lasso_scale = np.max(np.abs(_matvec(np.swapaxes(X, -1, -2), Y)), axis=-1) / n
    ridge_scale = np.sum(X ** 2, axis=(1, 2)) / n
    return lasso_scale, ridge_scale


def run_covariance(config: dict, cov_name: str) -> tuple[list[dict], dict]:
    """Runs the grid of one covariance (all l/m, seeds, representations, n, folds
    and lambdas as one batch per lam); returns (rows, statistics).

    numpy's BLAS/LAPACK is limited to one thread: the batched QR and matmuls
    here act on many 100 x 100 matrices, where OpenBLAS threads only add
    contention on a busy machine (measured on 2 busy cores: a batched eigh of
    648 such matrices took 56 s with 2 threads, 1.8 s with 1).
    """
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        return _run_covariance(config, cov_name)


def _run_covariance(config: dict, cov_name: str) -> tuple[list[dict], dict]:
    started = time.perf_counter()
    datasets = sample_datasets(config, cov_name)
    sizes, num_folds = config["data"]["train_sizes"], config["cv"]["num_folds"]
    problems = build_problems(datasets, sizes, num_folds, config["cv"]["fit_intercept"])
    compressed = compress(problems)
    lasso_scale, ridge_scale = lambda_scales(problems, num_folds)
    timings = {"data": time.perf_counter() - started}
    logging.info("synthetic_regression %s: %d fits x %d splits = %d tasks, n_pad %d, m %d",
                 cov_name, lasso_scale.size, num_folds + 1, problems.X.shape[0],
                 problems.X.shape[1], problems.X.shape[2])
    fitted, solver_statistics = {}, {}
    for method, scale in (("lasso", lasso_scale), ("ridge", ridge_scale)):
        start = time.perf_counter()
        fitted[method], solver_statistics[method] = _fit_method(
            method, config, datasets, problems, compressed, scale)
        timings[method] = time.perf_counter() - start
        logging.info("synthetic_regression %s: %s done in %.1f s", cov_name, method,
                     timings[method])
    oracle = r2_score(datasets.test_targets,
                      np.einsum("dnm,dm->dn", datasets.test_features[:, 0], datasets.weights))
    rows = []
    fit_keys = [(key, rep, n) for key in datasets.keys for rep in REPRESENTATIONS for n in sizes]
    for f, ((_, fraction, seed), rep, n) in enumerate(fit_keys):
        for method in METHODS:
            out = fitted[method]
            rows.append({
                "covariance": cov_name, "support_fraction": fraction, "seed": seed,
                "n": n, "representation": rep, "method": method,
                "r2": float(out["r2"][f]), "lambda": float(out["lam"][f]),
                "lambda_ratio": float(out["ratio"][f]), "cv_mse": float(out["cv_mse"][f]),
                "converged": bool(out["converged"][f]),
                "oracle_r2": float(oracle[f // (len(REPRESENTATIONS) * len(sizes))])})
    statistics = {
        "tasks": int(problems.X.shape[0]),
        "lasso_solver": resolve_lasso_solver(config["lasso"]["solver"]),
        "lasso": solver_statistics["lasso"],
        "ridge": solver_statistics["ridge"],
        "seconds": {**timings, "total": time.perf_counter() - started},
    }
    return rows, statistics


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard error (std / sqrt(seeds), ddof 1) of R^2 per setting and method."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["covariance"], row["support_fraction"], row["n"], row["representation"],
               row["method"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (cov_name, fraction, n, rep, method), members in groups.items():
        r2 = np.array([r["r2"] for r in members])
        summary.append({
            "covariance": cov_name, "support_fraction": fraction, "n": n,
            "representation": rep, "method": method, "seeds": len(members),
            "r2_mean": float(r2.mean()), "r2_se": float(r2.std(ddof=1) / np.sqrt(r2.size)),
            "oracle_r2_mean": float(np.mean([r["oracle_r2"] for r in members])),
            "lambda_ratio_median": float(np.median([r["lambda_ratio"] for r in members])),
            "not_converged": int(sum(not r["converged"] for r in members))})
    return summary


def ridge_rotation_gap(rows: list[dict]) -> float:
    """max |R^2(entangled ridge) - R^2(disentangled ridge)| over all fits (0 in exact
    arithmetic: ridge is invariant to rotations of the features)."""
    ridge = {(r["covariance"], r["support_fraction"], r["seed"], r["n"], r["representation"]):
             r["r2"] for r in rows if r["method"] == "ridge"}
    return max(abs(ridge[k] - ridge[k[:-1] + ("disentangled",)])
               for k in ridge if k[-1] == "entangled")


def _csv_text(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


_STYLES = {
    ("disentangled", "lasso"): dict(color="tab:blue", marker="o", label="Disentangled-Lasso"),
    ("entangled", "lasso"): dict(color="tab:orange", marker="s", label="Entangled-Lasso"),
    ("disentangled", "ridge"): dict(color="tab:green", marker="^", label="Disentangled-Ridge"),
    ("entangled", "ridge"): dict(color="tab:red", marker="v", linestyle="--",
                                 label="Entangled-Ridge"),
}


def plot_figure1(summary: list[dict], path: str, rho: float) -> None:
    """One row of panels per covariance, one panel per l/m: test R^2 against n,
    mean +- standard error over the seeds of that panel's own points."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    covs = list(dict.fromkeys(s["covariance"] for s in summary))
    fractions = sorted({s["support_fraction"] for s in summary})
    fig, axes = plt.subplots(len(covs), len(fractions), squeeze=False,
                             figsize=(4.2 * len(fractions), 3.4 * len(covs)))
    for row, cov_name in enumerate(covs):
        for col, fraction in enumerate(fractions):
            ax = axes[row, col]
            panel = [s for s in summary
                     if s["covariance"] == cov_name and s["support_fraction"] == fraction]
            for (rep, method), style in _STYLES.items():
                points = sorted((s for s in panel
                                 if s["representation"] == rep and s["method"] == method),
                                key=lambda s: s["n"])
                ax.errorbar([s["n"] for s in points], [s["r2_mean"] for s in points],
                            yerr=[s["r2_se"] for s in points], capsize=3, markersize=4,
                            **style)
            ceiling = sorted({(s["n"], s["oracle_r2_mean"]) for s in panel})
            ax.plot([c[0] for c in ceiling], [c[1] for c in ceiling], ":", color="gray",
                    label="true w (noise ceiling)")
            cov_label = f"Toeplitz $\\rho$={rho:g}" if cov_name == "toeplitz" else "i.i.d."
            ax.set(title=f"$\\ell/m$ = {100 * fraction:g}% ({cov_label})",
                   xlabel="number of training samples n", ylabel="test $R^2$")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def format_table(summary: list[dict]) -> str:
    """Mean test R^2 per covariance, l/m and method, one column per n."""
    sizes = sorted({s["n"] for s in summary})
    lines = [f"{'covariance':<10} {'l/m':>5} {'method':<19}"
             + "".join(f"{'n=' + str(n):>8}" for n in sizes)]
    cells = {(s["covariance"], s["support_fraction"], s["representation"], s["method"], s["n"]):
             s["r2_mean"] for s in summary}
    settings = dict.fromkeys((s["covariance"], s["support_fraction"]) for s in summary)
    for cov_name, fraction in settings:
        for (rep, method), style in _STYLES.items():
            values = "".join(f"{cells[(cov_name, fraction, rep, method, n)]:>8.3f}" for n in sizes)
            lines.append(f"{cov_name:<10} {fraction:>5g} {style['label']:<19}{values}")
    return "\n".join(lines)


def _covariance_part(rundir: RunDir, config: dict, cov_name: str) -> dict:
    """The rows and statistics of one covariance: read from `rows_<cov>.json` when
    an earlier (interrupted) run finished it, else computed and saved there."""
    path = rundir.path(f"rows_{cov_name}.json")
    if os.path.exists(path):
        logging.info("synthetic_regression %s: found %s, not redone", cov_name, path)
        with open(path) as f:
            return json.load(f)
    rows, statistics = run_covariance(config, cov_name)
    part = {"rows": rows, "statistics": statistics}
    atomic_write(path, json.dumps(part) + "\n")
    return part


def run(config, workdir: str) -> str:
    """Runs the grid into `workdir`; returns the table of mean test R^2.

    Resumable: each covariance's rows are saved when it finishes
    (rows_<cov>.json), and a rerun with the same workdir computes only the
    missing ones; a finished workdir (result.json) is not redone at all.
    """
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    rundir = RunDir(workdir)
    rundir.write_config(config)
    stored = rundir.result()
    if stored is not None:
        logging.info("synthetic_regression: finished run found in %s: not redone", workdir)
        return format_table(stored["summary"])
    rows, statistics = [], {}
    for cov_name in config["data"]["covariances"]:
        part = _covariance_part(rundir, config, cov_name)
        rows += part["rows"]
        statistics[cov_name] = part["statistics"]
    summary = summarise(rows)
    atomic_write(rundir.path("results.csv"), _csv_text(rows))
    atomic_write(rundir.path("summary.csv"), _csv_text(summary))
    plot_figure1(summary, rundir.path("figure1.png"), config["data"]["rho"])
    rundir.write_result({"summary": summary, "statistics": statistics,
                         "ridge_rotation_gap": ridge_rotation_gap(rows)})
    logging.info("synthetic_regression finished (%.1f s of compute): %s/figure1.png",
                 sum(s["seconds"]["total"] for s in statistics.values()), workdir)
    return format_table(summary)
