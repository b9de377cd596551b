"""Section 2 / Figure 1: a disentangled representation plus sparsity generalises better.

One run is one panel of Figure 1: one latent covariance (`data.covariance`) and one
support fraction l/m (`data.support_fraction`), with every seed, training-set size,
representation and method of the panel batched inside. The sweep `figure1`
(configs/synthetic_regression.py) runs the six panels and `report` draws the figure:

    python -m sdis_tf.sweep --config=configs/synthetic_regression.py --sweep=figure1 \
        --workdir=runs/figure1

Protocol (paper appendix D.1). For each seed s < num_seeds:

    z ~ N(0, Sigma) in R^m,   Sigma = covariances.covariance(data.covariance, m, data.rho),
    y = w . z + eps,          eps ~ N(0, noise_std^2),
    w ~ N(0, I_m) on l = round(fraction * m) random coordinates, 0 elsewhere,
    disentangled features z,  entangled features L z with L ~ Haar on O(m).

Every seed redraws w, L, a pool of max(train_sizes) training samples (the training
set of size n is its first n samples, so curves over n are paired) and `num_test`
test samples from its own generator, keyed by (config seed, covariance, fraction,
s): a panel's draws do not depend on the other panels. On each training set, Lasso
min_w 1/(2n)||y - Xw||^2 + lam ||w||_1 and Ridge 1/(2n)||y - Xw||^2 + lam/2 ||w||^2
(with an unpenalised intercept by centring when `cv.fit_intercept`) pick lam on a
geometric grid by K-fold cross-validation (scikit-learn's `KFold`: contiguous folds;
mean validation MSE over folds; ties go to the larger lam), are refitted on the
whole training set and are scored by R^2 on the test samples. The score of the
true w ("oracle") is the noise ceiling.

Batching: every (seed, representation, n) fit and every split of it (K folds and the
refit) is one task of a single batch [T, n, m] (T = 720 for the default panel).
Training sets of different sizes share it by zero-padding to n_pad = max(train_sizes)
rows (zero rows leave X^T X and X^T y unchanged), then as the equivalent compressed
problems with min(n_pad, m) rows (`compress`). The Lasso runs one batched
`solvers.lasso` solve per lam of the grid over the whole batch, warm-started from
the previous (larger) lam; Ridge takes its whole path from one SVD per problem
(`solvers.ridge_path`).

A run (sdis_tf.train.harness) writes config.json, metrics.jsonl (mean test R^2 per
representation, method and n) and result.json (one row per seed, n, representation
and method, solver statistics). `report(workdir)` reads the finished runs below a
sweep's workdir and writes results.csv, summary.csv (mean and standard error over
seeds), figure1.png (one row of panels per covariance, one column per l/m; error
bars = standard error over the seeds of each point) and returns the table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time

import numpy as np
import tensorflow as tf
import threadpoolctl
from absl import logging
from scipy import stats
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from sdis_tf import config_schema as cs
from sdis_tf import solvers
from sdis_tf.data import covariances
from sdis_tf.solvers import lasso_op
from sdis_tf.solvers.lasso import BACKENDS as LASSO_BACKENDS
from sdis_tf.train import harness
from sdis_tf.train.rundir import RunDir, atomic_write, finished_runs, save_figure

# The index of a covariance keys its data stream: new kinds go at the end.
COVARIANCES = ("toeplitz", "iid", "equicorrelated")
REPRESENTATIONS = ("disentangled", "entangled")
METHODS = ("lasso", "ridge")

SCHEMA = {
    "experiment": cs.Choice("synthetic_regression"),
    "seed": cs.Int(min=0),
    "num_seeds": cs.Int(min=2),
    "distribute": cs.Choice("default"),
    "log_every_seconds": cs.NONNEGATIVE,
    "data": {
        "num_features": cs.Int(min=2),
        "covariance": cs.Choice(*COVARIANCES),
        "rho": cs.CORRELATION,
        "support_fraction": cs.Float(min=0.0, max=1.0, min_open=True),
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
        "backend": cs.Choice(*LASSO_BACKENDS),
    },
    "ridge": {"num_lambdas": cs.Int(min=2), "max_ratio": cs.POSITIVE, "min_ratio": cs.POSITIVE},
}


def _cross_field(config: dict) -> list[str]:
    problems = []
    data, folds = config["data"], config["cv"]["num_folds"]
    small = [n for n in data["train_sizes"] if n < 2 * folds]
    if small:
        problems.append(
            f"config.data.train_sizes = {tuple(data['train_sizes'])}: sizes {small} "
            f"are below 2 * config.cv.num_folds = {2 * folds}; allowed: every n >= {2 * folds}")
    m = data["num_features"]
    if round(data["support_fraction"] * m) < 1:
        problems.append(
            f"config.data.support_fraction = {data['support_fraction']} gives an empty support "
            f"with num_features = {m}; allowed: >= {0.5 / m:g}")
    if data["covariance"] == "iid" and data["rho"] != 0:
        problems.append(f"config.data.rho = {data['rho']} has no effect with "
                        "config.data.covariance = 'iid'; allowed: 0")
    if config["ridge"]["min_ratio"] >= config["ridge"]["max_ratio"]:
        problems.append("config.ridge.min_ratio must be < config.ridge.max_ratio")
    return problems


CONSTRAINTS = (_cross_field,)


# --- data ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Datasets:
    """One independent draw per seed (D = num_seeds).

    features [D, 2, n_pool, m] and test_features [D, 2, n_test, m]: the disentangled
    (z) and entangled (z L^T) representations; targets [D, n_pool], test_targets
    [D, n_test], weights [D, m].
    """
    features: np.ndarray
    targets: np.ndarray
    test_features: np.ndarray
    test_targets: np.ndarray
    weights: np.ndarray


def sample_datasets(config: dict) -> Datasets:
    """Draws the panel's datasets, one per seed, each from its own generator keyed by
    (config seed, covariance, fraction, seed index)."""
    data = config["data"]
    m, n_pool, n_test = data["num_features"], max(data["train_sizes"]), data["num_test"]
    fraction = data["support_fraction"]
    factor = np.linalg.cholesky(covariances.covariance(data["covariance"], m, data["rho"]))
    draws = []
    for seed in range(config["num_seeds"]):
        rng = np.random.default_rng(
            [config["seed"], COVARIANCES.index(data["covariance"]), round(fraction * 1e6), seed])
        w = np.zeros(m)
        support = rng.choice(m, size=round(fraction * m), replace=False)
        w[support] = rng.normal(size=support.size)
        rotation = stats.ortho_group.rvs(m, random_state=rng)
        z = rng.normal(size=(n_pool + n_test, m)) @ factor.T
        y = z @ w + data["noise_std"] * rng.normal(size=n_pool + n_test)
        both = np.stack([z, z @ rotation.T])
        draws.append((both[:, :n_pool], y[:n_pool], both[:, n_pool:], y[n_pool:], w))
    return Datasets(*(np.stack(parts) for parts in zip(*draws)))


# --- the cross-validation batch ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Problems:
    """A batch of T = F (K + 1) training problems: task f (K+1) + s is split s of fit f
    (s < K: fold s held out; s = K: the whole training set), fits ordered (seed,
    representation, n).

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


def split_rows(n: int, num_folds: int, n_pad: int, v_pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (-1 = padding) of the training [K+1, n_pad] and validation [K+1, v_pad]
    rows of every split of a training set of n rows: the K folds of `KFold(K)`, then
    the refit on all n rows."""
    train = np.full((num_folds + 1, n_pad), -1)
    val = np.full((num_folds + 1, v_pad), -1)
    for s, (fit_rows, val_rows) in enumerate(KFold(num_folds).split(np.arange(n))):
        train[s, :fit_rows.size] = fit_rows
        val[s, :val_rows.size] = val_rows
    train[num_folds, :n] = np.arange(n)
    return train, val


def _gather(features, targets, index):
    """features [D, P, n_pool, m], targets [D, n_pool], index [...] (-1 = padding) ->
    (features [D, P, ..., m], targets [D, 1, ...], mask [...]), zero on padding."""
    mask = index >= 0
    safe = np.where(mask, index, 0)
    return features[:, :, safe] * mask[..., None], targets[:, None, safe] * mask, mask


def build_problems(datasets: Datasets, train_sizes, num_folds: int,
                   fit_intercept: bool) -> Problems:
    """All splits of all fits (see `Problems`)."""
    n_pad = max(train_sizes)
    v_pad = -(-n_pad // num_folds)
    splits = [split_rows(n, num_folds, n_pad, v_pad) for n in train_sizes]
    train_index = np.stack([train for train, _ in splits])               # [N, S, n_pad]
    val_index = np.stack([val for _, val in splits])                     # [N, S, v_pad]
    X, Y, mask = _gather(datasets.features, datasets.targets, train_index)
    num_train = mask.sum(axis=-1)                                        # [N, S]
    x_mean = X.sum(axis=-2) / num_train[..., None]                       # [D, P, N, S, m]
    y_mean = Y.sum(axis=-1) / num_train                                  # [D, 1, N, S]
    if not fit_intercept:
        x_mean, y_mean = np.zeros_like(x_mean), np.zeros_like(y_mean)
    X = (X - x_mean[..., None, :]) * mask[..., None]
    Y = (Y - y_mean[..., None]) * mask
    X_val, Y_val, val_mask = _gather(datasets.features, datasets.targets, val_index)
    splits_shape = X.shape[:4]                                           # (D, P, N, S)

    def flat(a, rank):
        """a [..., *rest] (`rank` axes rest) broadcast over (D, P, N, S) -> [T, *rest]."""
        rest = a.shape[a.ndim - rank:]
        return np.broadcast_to(a, splits_shape + rest).reshape((-1,) + rest)

    return Problems(flat(X, 2), flat(Y, 1), flat(num_train, 0), flat(x_mean, 1),
                    flat(y_mean, 0), flat(X_val, 2), flat(Y_val, 1), flat(val_mask, 1))


@dataclasses.dataclass(frozen=True)
class Compressed:
    """The tasks of `Problems` as equivalent problems with r = min(n_pad, m) rows.

    R [T, r, m], QtY [T, r] (see `compress`) and factor [T] = n / r: the minimiser
    of 1/(2n)||y - X w||^2 + lam pen(w) (n real rows) is the minimiser of
    1/(2r)||Q^T y - R w||^2 + (lam factor) pen(w) for any penalty.
    """
    R: tf.Tensor
    QtY: tf.Tensor
    factor: np.ndarray


def compress(problems: Problems) -> Compressed:
    """An equivalent least-squares problem with at most m rows per task.

    With the reduced QR decomposition X = Q R (X [T, n_pad, m], R [T, r, m]),
    ||y - X w||^2 = ||Q^T y - R w||^2 + ||(I - Q Q^T) y||^2, so (R, Q^T y) has the
    same minimisers for any penalty, and the solvers' work on the data (Gram
    matrices, residuals, gaps) drops from n_pad to r rows.
    """
    Q, R = np.linalg.qr(problems.X)
    QtY = np.einsum("tnr,tn->tr", Q, problems.Y)
    return Compressed(tf.constant(R), tf.constant(QtY), problems.num_train / R.shape[1])


def lambda_grid(scale: np.ndarray, max_ratio: float, min_ratio: float, num: int) -> np.ndarray:
    """[F, num]: scale[f] * geometric ratios from max_ratio down to min_ratio."""
    return scale[:, None] * np.geomspace(max_ratio, min_ratio, num)[None, :]


def lambda_scales(compressed: Compressed, num_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per fit, from its whole training set (the refit split): the Lasso's lambda_max
    ||X^T y||_inf / n and Ridge's ||X||_F^2 / n ([F] each), from the compressed problems
    (X^T y = R^T Q^T y, ||X||_F = ||R||_F)."""
    refit = slice(num_folds, None, num_folds + 1)
    R, QtY, factor = compressed.R[refit], compressed.QtY[refit], compressed.factor[refit]
    return (solvers.lasso_lambda_max(R, QtY).numpy() / factor,
            solvers.ridge_lambda_max(R).numpy() / factor)


def lasso_path(problems: Compressed, lambdas: np.ndarray, *, tol: float, max_epochs: int,
               backend: str, log_every_seconds: float = 60.0):
    """The Lasso for every task along its grid `lambdas [T, L]` (decreasing).

    One batched `solvers.lasso` solve over all T tasks per lam, warm-started from the
    previous (larger) lam. `lambdas` refer to the original problems (1/(2n)
    normalisation); the solve is on the compressed ones, so "converged" means duality
    gap <= tol ||Q^T y||^2 / (2r) there.

    Returns (W [L, T, m], converged [L, T] bool, epochs [L, T]).
    """
    W, path, converged, epochs = None, [], [], []
    for step in range(lambdas.shape[1]):
        result = solvers.lasso(problems.R, problems.QtY, lambdas[:, step] * problems.factor,
                               tol=tol, max_epochs=max_epochs, W0=W, backend=backend)
        W = result.W
        path.append(W.numpy())
        converged.append(result.converged.numpy())
        epochs.append(result.epochs.numpy())
        logging.log_every_n_seconds(
            logging.INFO, "lasso path: lambda %d/%d, max epochs %d, %d not converged",
            log_every_seconds, step + 1, lambdas.shape[1], epochs[-1].max(),
            (~converged[-1]).sum())
    return np.stack(path), np.stack(converged), np.stack(epochs)


def validation_mse(problems: Problems, W: np.ndarray) -> np.ndarray:
    """Mean squared error on each task's held-out rows for W [L, T, m] -> [L, T]
    (NaN for the refit tasks, which hold nothing out)."""
    centred = (problems.X_val - problems.x_mean[:, None, :]) * problems.val_mask[..., None]
    predictions = np.einsum("tvm,ltm->ltv", centred, W) + problems.y_mean[:, None]
    errors = np.where(problems.val_mask, problems.Y_val - predictions, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(errors ** 2, axis=-1) / problems.val_mask.sum(axis=-1)


def select(cv_error: np.ndarray, num_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean validation MSE over folds per fit and lam, and the chosen lam index.

    cv_error [L, F (K+1)] -> (mean [F, L], index [F]); the first minimiser wins, i.e.
    the largest lam among ties (grids are decreasing).
    """
    L = cv_error.shape[0]
    folds = cv_error.reshape(L, -1, num_folds + 1)[:, :, :num_folds]
    mean = folds.mean(axis=-1).T
    return mean, np.argmin(mean, axis=1)


def r2_scores(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """R^2 (scikit-learn's r2_score) of predictions [..., n] of targets [..., n]
    (broadcast) along the last axis -> [...]."""
    targets, predictions = np.broadcast_arrays(targets, predictions)
    scores = r2_score(targets.reshape(-1, targets.shape[-1]).T,
                      predictions.reshape(-1, targets.shape[-1]).T, multioutput="raw_values")
    return scores.reshape(targets.shape[:-1])


def heldout_r2(datasets: Datasets, problems: Problems, W_refit: np.ndarray, num_sizes: int,
               num_folds: int) -> np.ndarray:
    """Test R^2 of the refitted W [F, m] (fits ordered seed, representation, n) -> [F]."""
    D, P = datasets.features.shape[:2]
    refit = slice(num_folds, None, num_folds + 1)
    intercept = problems.y_mean[refit] - np.einsum("fm,fm->f", problems.x_mean[refit], W_refit)
    W = W_refit.reshape(D, P, num_sizes, -1)
    predictions = np.einsum("dpvm,dpnm->dpnv", datasets.test_features, W)
    predictions += intercept.reshape(D, P, num_sizes, 1)
    return r2_scores(datasets.test_targets[:, None, None, :], predictions).reshape(-1)


def fit_method(method: str, config: dict, datasets: Datasets, problems: Problems,
               compressed: Compressed, scale: np.ndarray) -> tuple[dict, dict]:
    """Cross-validates and refits `method` on all fits: (per-fit arrays [F], solver
    statistics)."""
    num_folds = config["cv"]["num_folds"]
    S = num_folds + 1
    if method == "lasso":
        settings = config["lasso"]
        grid = lambda_grid(scale, 1.0, settings["min_ratio"], settings["num_lambdas"])
        W, converged, epochs = lasso_path(
            compressed, np.repeat(grid, S, axis=0), tol=settings["tol"],
            max_epochs=settings["max_epochs"], backend=settings["backend"],
            log_every_seconds=config["log_every_seconds"])
        statistics = dict(solves=converged.size, not_converged=int((~converged).sum()),
                          task_epochs=int(epochs.sum()))
    else:
        settings = config["ridge"]
        grid = lambda_grid(scale, settings["max_ratio"], settings["min_ratio"],
                           settings["num_lambdas"])
        lambdas = np.repeat(grid, S, axis=0) * compressed.factor[:, None]
        result = solvers.ridge_path(compressed.R, compressed.QtY, lambdas)
        W, residual = result.W.numpy(), result.residual.numpy()
        converged = np.ones(W.shape[:2], dtype=bool)
        statistics = dict(solves=residual.size, max_kkt_residual=float(residual.max()))
    cv_mean, chosen = select(validation_mse(problems, W), num_folds)
    fits = np.arange(grid.shape[0])
    r2 = heldout_r2(datasets, problems, W[chosen, fits * S + num_folds],
                    len(config["data"]["train_sizes"]), num_folds)
    per_fit = dict(r2=r2, lam=grid[fits, chosen], ratio=grid[fits, chosen] / scale,
                   cv_mse=cv_mean[fits, chosen],
                   converged=converged.all(axis=0).reshape(-1, S).all(axis=1))
    return per_fit, statistics


def run_panel(config: dict) -> tuple[list[dict], dict]:
    """The panel of `config`: (rows, one per seed, n, representation and method; statistics).

    numpy's BLAS/LAPACK is limited to one thread: the batched QR and matmuls here act
    on many 100 x 100 matrices, where OpenBLAS threads only add contention.
    """
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        started = time.perf_counter()
        data, num_folds = config["data"], config["cv"]["num_folds"]
        sizes = data["train_sizes"]
        datasets = sample_datasets(config)
        problems = build_problems(datasets, sizes, num_folds, config["cv"]["fit_intercept"])
        compressed = compress(problems)
        scales = dict(zip(METHODS, lambda_scales(compressed, num_folds)))
        timings = {"data": time.perf_counter() - started}
        logging.info("synthetic_regression %s, l/m = %g: %d fits x %d splits = %d tasks "
                     "[T, n_pad, m] = %s", data["covariance"], data["support_fraction"],
                     problems.X.shape[0] // (num_folds + 1), num_folds + 1,
                     problems.X.shape[0], problems.X.shape)
        fitted, solver_statistics = {}, {}
        for method in METHODS:
            start = time.perf_counter()
            fitted[method], solver_statistics[method] = fit_method(
                method, config, datasets, problems, compressed, scales[method])
            timings[method] = time.perf_counter() - start
    oracle = r2_scores(datasets.test_targets,
                       np.einsum("dvm,dm->dv", datasets.test_features[:, 0], datasets.weights))
    fit_keys = [(seed, rep, n) for seed in range(config["num_seeds"])
                for rep in REPRESENTATIONS for n in sizes]
    rows = []
    for f, (seed, rep, n) in enumerate(fit_keys):
        for method in METHODS:
            out = fitted[method]
            rows.append({
                "covariance": data["covariance"], "rho": data["rho"],
                "support_fraction": data["support_fraction"], "seed": seed, "n": n,
                "representation": rep, "method": method, "r2": float(out["r2"][f]),
                "lambda": float(out["lam"][f]), "lambda_ratio": float(out["ratio"][f]),
                "cv_mse": float(out["cv_mse"][f]), "converged": bool(out["converged"][f]),
                "oracle_r2": float(oracle[seed])})
    statistics = {"tasks": int(problems.X.shape[0]), **solver_statistics,
                  "seconds": {**timings, "total": time.perf_counter() - started}}
    return rows, statistics


# --- tables and figure -------------------------------------------------------------

def mean_over_seeds(rows: list[dict]) -> list[dict]:
    """Mean and standard error (std / sqrt(seeds), ddof 1) of R^2 per setting and method."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["covariance"], row["rho"], row["support_fraction"], row["n"],
               row["representation"], row["method"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (cov_name, rho, fraction, n, rep, method), members in groups.items():
        r2 = np.array([r["r2"] for r in members])
        summary.append({
            "covariance": cov_name, "rho": rho, "support_fraction": fraction, "n": n,
            "representation": rep, "method": method, "seeds": len(members),
            "r2_mean": float(r2.mean()), "r2_se": float(r2.std(ddof=1) / np.sqrt(r2.size)),
            "oracle_r2_mean": float(np.mean([r["oracle_r2"] for r in members])),
            "lambda_ratio_median": float(np.median([r["lambda_ratio"] for r in members])),
            "not_converged": int(sum(not r["converged"] for r in members))})
    return summary


def ridge_rotation_gap(rows: list[dict]) -> float:
    """max |R^2(entangled ridge) - R^2(disentangled ridge)| over all fits (0 in exact
    arithmetic: ridge is invariant to rotations of the features)."""
    ridge = {(r["covariance"], r["rho"], r["support_fraction"], r["seed"], r["n"],
              r["representation"]): r["r2"] for r in rows if r["method"] == "ridge"}
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


def covariance_label(cov_name: str, rho: float) -> str:
    """'i.i.d.' or e.g. 'toeplitz rho=0.9'."""
    return "i.i.d." if cov_name == "iid" else f"{cov_name} rho={rho:g}"


def plot_figure1(summary: list[dict], path: str) -> None:
    """One row of panels per covariance, one column per l/m: test R^2 against n, mean
    +- standard error over the seeds of that point; a panel not run stays empty."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    covs = list(dict.fromkeys((s["covariance"], s["rho"]) for s in summary))
    fractions = sorted({s["support_fraction"] for s in summary})
    fig, axes = plt.subplots(len(covs), len(fractions), squeeze=False,
                             figsize=(4.2 * len(fractions), 3.4 * len(covs)))
    for row, cov in enumerate(covs):
        for col, fraction in enumerate(fractions):
            ax = axes[row, col]
            panel = [s for s in summary
                     if (s["covariance"], s["rho"]) == cov and s["support_fraction"] == fraction]
            if not panel:
                ax.axis("off")
                continue
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
            ax.set(title=f"$\\ell/m$ = {100 * fraction:g}% ({covariance_label(*cov)})",
                   xlabel="number of training samples n", ylabel="test $R^2$")
            ax.grid(alpha=0.3)
            if row == col == 0:
                ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def format_table(summary: list[dict]) -> str:
    """Mean test R^2 per covariance, l/m and method, one column per n."""
    sizes = sorted({s["n"] for s in summary})
    lines = [f"{'covariance':<16} {'l/m':>5} {'method':<19}"
             + "".join(f"{'n=' + str(n):>8}" for n in sizes)]
    cells = {(s["covariance"], s["rho"], s["support_fraction"], s["representation"],
              s["method"], s["n"]): s["r2_mean"] for s in summary}
    settings = dict.fromkeys((s["covariance"], s["rho"], s["support_fraction"])
                             for s in summary)
    for cov_name, rho, fraction in settings:
        label = "iid" if cov_name == "iid" else f"{cov_name} {rho:g}"
        for (rep, method), style in _STYLES.items():
            values = [cells.get((cov_name, rho, fraction, rep, method, n)) for n in sizes]
            text = "".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in values)
            lines.append(f"{label:<16} {fraction:>5g} {style['label']:<19}{text}")
    return "\n".join(lines)


# --- the experiment ------------------------------------------------------------------

class PanelRun:
    """One panel (a `sdis_tf.train.harness.Run` without training: `total_steps` = 0, so
    the harness evaluates once, then finishes). `evaluate` computes the panel's rows."""

    def __init__(self, config: dict):
        self.config = config
        data = config["data"]
        self.name = (f"{covariance_label(data['covariance'], data['rho'])}, "
                     f"l/m = {data['support_fraction']:g}")
        self.trackables = {}                      # nothing to checkpoint
        self.total_steps = self.initial_step = 0
        self.eval_every_steps = self.checkpoint_every_steps = 0
        self.rows: list[dict] = []
        self.statistics: dict = {}

    def evaluate(self) -> tuple[dict, dict]:
        """Fits the panel; scalars: mean test R^2 per representation, method and n
        (r2_<representation>_<method>_n<n>), the noise ceiling and the ridge rotation gap."""
        self.rows, self.statistics = run_panel(self.config)
        scalars = {f"r2_{s['representation']}_{s['method']}_n{s['n']}": s["r2_mean"]
                   for s in mean_over_seeds(self.rows)}
        scalars["oracle_r2"] = float(np.mean([r["oracle_r2"] for r in self.rows]))
        scalars["ridge_rotation_gap"] = ridge_rotation_gap(self.rows)
        return scalars, {}

    def finish(self, final: dict, rundir: RunDir) -> dict:
        """The result: the evaluation record, the rows and the solver statistics."""
        data = self.config["data"]
        return {"covariance": data["covariance"], "rho": data["rho"],
                "support_fraction": data["support_fraction"], **final,
                "statistics": self.statistics, "rows": self.rows}


def summarize(result: dict) -> str:
    """One line: the panel, mean test R^2 per method at the smallest and largest n, time."""
    summary = mean_over_seeds(result["rows"])
    sizes = sorted({s["n"] for s in summary})
    cells = {(s["representation"], s["method"], s["n"]): s["r2_mean"] for s in summary}
    parts = [f"{style['label']} " + "/".join(f"{cells[(rep, method, n)]:.3f}"
                                             for n in (sizes[0], sizes[-1]))
             for (rep, method), style in _STYLES.items()]
    label = covariance_label(result["covariance"], result["rho"])
    return (f"{label}, l/m = {result['support_fraction']:g}: test R^2 at n = {sizes[0]}/"
            f"{sizes[-1]}: " + ", ".join(parts) + f" ({result['elapsed']:.0f} s)")


def collect(workdir: str) -> list[dict]:
    """The results of the finished synthetic_regression runs below `workdir` (a sweep's
    points), ordered by covariance (as `COVARIANCES`), rho and l/m."""
    results = [result for _, _, result in finished_runs(workdir, "synthetic_regression")
               if "rows" in result and "support_fraction" in result]
    return sorted(results, key=lambda r: (COVARIANCES.index(r["covariance"]), r["rho"],
                                          r["support_fraction"]))


def report(workdir: str) -> str:
    """Figure 1 of the finished runs below `workdir`: writes results.csv (every row),
    summary.csv and figure1.png there; returns the table of mean test R^2."""
    results = collect(workdir)
    if not results:
        raise FileNotFoundError(f"no finished synthetic_regression runs below {workdir}")
    rows = [row for result in results for row in result["rows"]]
    summary = mean_over_seeds(rows)
    atomic_write(os.path.join(workdir, "results.csv"), _csv_text(rows))
    atomic_write(os.path.join(workdir, "summary.csv"), _csv_text(summary))
    plot_figure1(summary, os.path.join(workdir, "figure1.png"))
    logging.info("synthetic_regression report: %d panels, ridge rotation gap %.1e, "
                 "%s/figure1.png", len(results), ridge_rotation_gap(rows), workdir)
    return format_table(summary)


def prepare(config: dict) -> None:
    """Checks that the Lasso backend asked for is there; the data is drawn from the seed.

    Raises:
      ConfigError: `lasso.backend` is 'op' and the C++ op is unavailable.
    """
    if config["lasso"]["backend"] == "op" and not lasso_op.op_available():
        raise cs.ConfigError(
            "invalid config:\n  config.lasso.backend = 'op': the C++ Lasso op is unavailable "
            "(see the warning issued when loading it); allowed here: 'auto', 'xla'")


EXPERIMENT = harness.Experiment(
    SCHEMA, CONSTRAINTS, prepare, build=lambda config, inputs, strategy: PanelRun(config),
    summarize=summarize, report=report)
