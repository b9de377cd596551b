"""Section 2 / Figure 1: disentanglement plus sparsity regularisation generalises better.

    # Figure 1: six panels (Toeplitz 0.9 and i.i.d. latents x l/m = 5, 20, 80 %), one run each
    python -m sdis_tf.sweep --config=configs/synthetic_regression.py --sweep=figure1 \
        --workdir=runs/figure1
    python -m sdis_tf.sweep --config=configs/synthetic_regression.py:quick --sweep=figure1 \
        --workdir=/tmp/figure1_quick                  # 3 seeds, n in {25, 75, 150}
    # one panel
    python -m sdis_tf --config=configs/synthetic_regression.py \
        --config.data.support_fraction=0.2 --workdir=runs/sr_toeplitz_20

Appendix D.1: latents z ~ N(0, Sigma) in R^100 (Sigma_ij = 0.9^|i-j|, the paper's
"toeplitz"; the sweep adds i.i.d. latents, Sigma = I, for comparison), targets
y = w.z + eps with eps ~ N(0, 0.04) and w ~ N(0, I) restricted to l = fraction * m
random coordinates; the entangled representation is L z with a random orthogonal
L. Lasso and Ridge with lambda chosen by 5-fold cross-validation on the n training
samples, test R^2 on 1000 fresh samples; every seed redraws w, L and all data.
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """One panel of Figure 1; presets: "" (10 seeds, 6 sizes), "quick", "tiny" (tests)."""
    config = ml_collections.ConfigDict()
    config.experiment = "synthetic_regression"
    config.seed = 0
    config.num_seeds = 10
    config.distribute = "default"
    config.log_every_seconds = 60.0

    config.data = ml_collections.ConfigDict(dict(
        num_features=100,
        covariance="toeplitz",                # sdis_tf.data.covariances: Sigma_ij = rho^|i-j|
        rho=0.9,
        support_fraction=0.05,                # l / m
        noise_std=0.2,                        # eps ~ N(0, 0.04)
        train_sizes=(25, 50, 75, 100, 125, 150),
        num_test=1000))
    config.cv = ml_collections.ConfigDict(dict(num_folds=5, fit_intercept=True))
    # Lambda grids, geometric, relative to each training set's scale (the full
    # training set's lasso_lambda_max, resp. ridge_lambda_max = ||X||_F^2 / n).
    config.lasso = ml_collections.ConfigDict(dict(
        num_lambdas=30, min_ratio=1e-3, tol=1e-4, max_epochs=20000,
        backend="auto"))                      # solvers.lasso: the C++ op if built, else XLA
    config.ridge = ml_collections.ConfigDict(dict(
        num_lambdas=30, max_ratio=10.0, min_ratio=1e-7))

    if preset == "quick":
        config.num_seeds = 3
        config.data.train_sizes = (25, 75, 150)
    elif preset == "tiny":
        config.num_seeds = 2
        config.data.num_features = 12
        config.data.support_fraction = 0.25
        config.data.train_sizes = (10, 16)
        config.data.num_test = 50
        config.cv.num_folds = 3
        config.lasso.num_lambdas = 5
        config.lasso.min_ratio = 1e-2
        config.lasso.max_epochs = 300
        config.ridge.num_lambdas = 5
        config.log_every_seconds = 0.0
    elif preset:
        raise ValueError(f"unknown preset {preset!r}; allowed: '', 'quick', 'tiny'")
    return config


def get_sweep(name: str, hyper) -> list[dict]:
    """Named sweeps (sdis_tf.sweep): "figure1" (the six panels of Figure 1: Toeplitz
    rho = 0.9 and i.i.d. latents x l/m in {5, 20, 80} %)."""
    if name == "figure1":
        covariances = hyper.zipit([hyper.sweep("data.covariance", ("toeplitz", "iid")),
                                   hyper.sweep("data.rho", (0.9, 0.0))])
        return hyper.product([covariances,
                              hyper.sweep("data.support_fraction", (0.05, 0.2, 0.8))])
    raise ValueError(f"unknown sweep {name!r}; allowed: 'figure1'")
