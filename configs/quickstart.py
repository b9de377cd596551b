"""Quickstart: Theorem 3.1 on synthetic data, inner-Lasso versus inner-Ridge, on a CPU.

    # inner-Lasso and inner-Ridge side by side (make demo): a sweep of two runs and their table
    python -m sdis_tf.sweep --config=configs/quickstart.py --sweep=methods --workdir=runs/quickstart
    # one run
    python -m sdis_tf --config=configs/quickstart.py --config.method=ridge --workdir=runs/ridge
    python -m sdis_tf --config=configs/quickstart.py:quick --workdir=/tmp/qs   # ~1 min

Latents z in R^6 ~ N(0, Sigma_rho) (equicorrelated, rho = 0.9), observations
x = g(z) in R^16 through a fixed random invertible leaky-ReLU MLP (3 layers,
negative slope 0.5), T = 16 tasks per step with Bernoulli(0.5) supports
(never empty), 50 support + 50 query samples per task (data.n_query = 0: the
outer loss reuses the support samples), noise at 10% of the signal norm. An MLP encoder with per-task
batch norm is trained through the head of `method` (LassoHead with
lam = 0.2 lam_max; RidgeHead with a negligible 1e-7 ||F||^2/n), Adam 3e-3
with cosine decay over 3000 steps. MCC and R are measured on held-out
factorised latents (eval.rho = 0, as the paper evaluates on the whole 3D
Shapes grid) and on held-out latents of the training distribution
(MCC_train, R_train). Why eps = 0.2 and slope 0.5: docs/quickstart.md.
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """The quickstart config; presets: "" (the benchmark), "quick", "tiny" (tests)."""
    config = ml_collections.ConfigDict()
    config.experiment = "quickstart"
    config.seed = 0
    config.distribute = "default"
    config.method = "lasso"

    config.data = ml_collections.ConfigDict(dict(
        num_latents=6, dim=16, rho=0.9, structure="equicorrelated",
        mixing_layers=3, mixing_slope=0.5, mixing_condition=4.0,
        n_support=50, n_query=50))
    config.tasks = ml_collections.ConfigDict(dict(
        kind="bernoulli", p=0.5, block_size=1, support_size=1,
        noise="snr", noise_scale=0.1))
    config.model = ml_collections.ConfigDict(dict(
        hidden=(64, 64), activation="leaky_relu", momentum=0.9))
    config.heads = ml_collections.ConfigDict(dict(
        lasso=dict(eps=0.2, diff="implicit", tol=1e-5, max_epochs=500, unroll_epochs=50),
        ridge=dict(eps=1e-7)))
    config.optimizer = ml_collections.ConfigDict(dict(learning_rate=3e-3, schedule="cosine"))
    config.train = ml_collections.ConfigDict(dict(steps=3000, num_tasks=16, jit_compile=True))
    config.eval = ml_collections.ConfigDict(dict(
        every_steps=250, num_samples=5000, rho=0.0, num_tasks=32))
    config.checkpoint_every_steps = 500
    config.log_every_seconds = 10.0

    if preset == "quick":
        config.train.steps = 500
        config.eval.every_steps = 100
        config.checkpoint_every_steps = 100
    elif preset == "tiny":
        config.data.dim = 10
        config.data.n_support = 12
        config.data.n_query = 8
        config.model.hidden = (16,)
        config.train.steps = 6
        config.train.num_tasks = 4
        config.train.jit_compile = False  # compiling costs more than it saves here
        config.eval.every_steps = 3
        config.eval.num_samples = 200
        config.eval.num_tasks = 4
        config.checkpoint_every_steps = 2
        config.log_every_seconds = 0.0
    elif preset:
        raise ValueError(f"unknown preset {preset!r}; allowed: '', 'quick', 'tiny'")
    return config


def get_sweep(name: str, hyper) -> list[dict]:
    """Named sweeps (sdis_tf.sweep): "methods" (inner-Lasso and inner-Ridge, `make demo`)."""
    if name == "methods":
        return hyper.sweep("method", ("lasso", "ridge"))
    raise ValueError(f"unknown sweep {name!r}; allowed: 'methods'")
