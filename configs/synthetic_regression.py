"""Section 2 / Figure 1: disentanglement plus sparsity regularisation generalises better.

    python main.py --config=configs/synthetic_regression.py --workdir=runs/synthetic_regression
    python main.py --config=configs/synthetic_regression.py:quick --workdir=/tmp/sr   # ~70 s
    python main.py --config=configs/synthetic_regression.py \
        --config.data.covariances='("iid",)' --workdir=runs/sr_iid

Appendix D.1: latents z ~ N(0, Sigma) in R^100 (Sigma_ij = 0.9^|i-j|, the paper's
"toeplitz", and an "iid" Sigma = I for comparison), targets y = w.z + eps with
eps ~ N(0, 0.04) and w ~ N(0, I) restricted to l = fraction * m random
coordinates; the entangled representation is L z with a random orthogonal L.
Lasso and Ridge with lambda chosen by 5-fold cross-validation on the n training
samples, test R^2 on 1000 fresh samples; every seed redraws w, L and all data.
The full grid took 5-6 min on 2 busy cores (docs/synthetic_regression.md); a
rerun with the same workdir resumes (finished covariances are not redone).
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """The Figure 1 config; presets: "" (the full grid), "quick", "tiny" (tests)."""
    config = ml_collections.ConfigDict()
    config.experiment = "synthetic_regression"
    config.seed = 0
    config.num_seeds = 10

    config.data = ml_collections.ConfigDict(dict(
        num_features=100,
        covariances=("toeplitz", "iid"),
        rho=0.9,                              # toeplitz: Sigma_ij = rho^|i-j|
        support_fractions=(0.05, 0.2, 0.8),   # l / m
        noise_std=0.2,                        # eps ~ N(0, 0.04)
        train_sizes=(25, 50, 75, 100, 125, 150),
        num_test=1000))
    config.cv = ml_collections.ConfigDict(dict(num_folds=5, fit_intercept=True))
    # Lambda grids, geometric, relative to each training set's scale (the full
    # training set's lasso_lambda_max, resp. ridge_lambda_max = ||X||_F^2 / n).
    config.lasso = ml_collections.ConfigDict(dict(
        num_lambdas=30, min_ratio=1e-3, tol=1e-4, max_epochs=20000,
        solver="auto"))                       # "auto": the C++ op if built, else XLA
    config.ridge = ml_collections.ConfigDict(dict(
        num_lambdas=30, max_ratio=10.0, min_ratio=1e-7))

    if preset == "quick":
        config.num_seeds = 3
        config.data.train_sizes = (25, 75, 150)
    elif preset == "tiny":
        config.num_seeds = 2
        config.data.num_features = 12
        config.data.support_fractions = (0.25, 0.75)
        config.data.train_sizes = (10, 16)
        config.data.num_test = 50
        config.cv.num_folds = 3
        config.lasso.num_lambdas = 5
        config.lasso.min_ratio = 1e-2
        config.lasso.max_epochs = 300
        config.ridge.num_lambdas = 5
    elif preset:
        raise ValueError(f"unknown preset {preset!r}; allowed: '', 'quick', 'tiny'")
    return config
