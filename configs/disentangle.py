"""Disentanglement (paper section 5.1, Fig. 4) on 3D Shapes or any labelled-factor file.

One method and one eps per run:

    # the paper's protocol (64x64, 20,000 steps; a GPU), real data (or the renderer
    # without data.path):
    python main.py --config=configs/disentangle.py --config.method=lasso --config.eps=0.1 \
        --config.data.path=/data/3dshapes.h5 --workdir=runs/lasso
    # the 2-core CPU preset (32x32 renders, smaller budget), rho = 0.9, alpha = 1:
    python main.py --config=configs/disentangle.py:cpu --config.method=lasso --workdir=runs/cl
    python main.py --config=configs/disentangle.py:cpu --config.method=ridge --workdir=runs/cr
    # the paper's 64x64 images on 2 CPU cores (9,000 steps: ~11-15 min alone, ~37 min with two
    # runs sharing the cores; docs/disentangle.md):
    python main.py --config=configs/disentangle.py:cpu64 --config.method=lasso --workdir=runs/c64
    # any labelled-factor file (dSprites npz, your own npz / h5; docs/factor_datasets.md):
    python main.py --config=configs/disentangle.py:cpu --config.data.path=dsprites.npz \
        --workdir=runs/dsprites
    # the procedural sprite world, cpu64's budget, shape categorical, orientation periodic:
    python main.py --config=configs/disentangle.py:sprites --config.method=lasso --workdir=runs/s

Data: `data.path` "" = the procedural 3D Shapes renderer; "sprites" = the
procedural sprite world; a file = any file
`sdis_tf.data.factors.load_factor_dataset` reads (`data.images_key`,
`data.factors_key` name its members when they are not detected); a directory =
a prepared TFDS shapes3d. `data.image_size` is the image height after
average-pooling by an integer factor (0: the file's own size; the renderers
draw 64x64 and take 64, 32 or 16).

Factor roles (sdis_tf.data.roles): `data.factors` the task factors (() = every
factor; the others are nuisances), `data.categorical` factor names,
`data.periodic` "name:period[:symmetry]" strings; "auto" = the layout's defaults
(3D Shapes: the three hues periodic over 1; dSprites: shape categorical,
orientation periodic over 2 pi; sprites: shape categorical, orientation periodic
over 1). `--config.data.periodic="()"` treats the 3D Shapes hues as continuous,
as the paper does.

Defaults (the paper's settings, appendix D.2): latents from p_{alpha=1, rho=0.9}
(equicorrelated Gaussian on the jittered, standardised grid), T = 8 tasks of
n = 50 samples per step, inner and outer problems on the same samples
(data.num_query = 0; > 0 gives a held-out query set), Bernoulli(0.5)
supports with N(0, 1) weights, noise of norm 0.1 ||z w||, the conv4 encoder
with m = d codes (model.num_latents = 0; d = the latent columns: 9 for 3D Shapes with
periodic hues, 6 with every factor continuous), Adam 1e-3 (constant;
`optimizer.schedule="cosine"` decays it to 0 over the run),
20,000 steps, evaluation every 1,000 steps on every row (the 480,000 grid
points of 3D Shapes) and on 100,000 training-distribution points.
`eps` is lambda / lambda_max (the paper's x-axis); the paper sweeps
{0, 0.01, 0.03, 0.1, 0.3, 1}. The figures' sweeps (`get_sweep`; docs/sweeps.md):

    python -m sdis_tf.sweep --config=configs/disentangle.py:cpu64 --sweep=fig4 --workdir=runs/fig4
    python -m sdis_tf.experiments.disentangle_figures runs/fig4
`train.jit_compile` XLA-compiles the step (for GPUs and TPUs); on CPU, XLA's convolutions
are ~3x slower than TensorFlow's oneDNN kernels, so the cpu64 preset turns it off and runs
the encoder in mixed bfloat16 (`model.precision`).
Presets: "" (paper), "cpu" (32x32, 3,000 steps), "cpu64" (64x64, 9,000 steps, no XLA,
bfloat16, eps 0.05 for the periodic hues), "sprites" (cpu64 on the sprite world, its roles
declared, eps 0.1), "tiny" (tests).
"""

import ml_collections

PRESETS = ("", "cpu", "cpu64", "sprites", "tiny")


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """The disentangle config; presets "" (the paper), "cpu", "cpu64", "sprites", "tiny"."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: "
                         + ", ".join(map(repr, PRESETS)))
    config = ml_collections.ConfigDict()
    config.experiment = "disentangle"
    config.seed = 0
    config.distribute = "default"
    config.method = "lasso"
    config.eps = 0.1

    config.data = ml_collections.ConfigDict(dict(
        path="", images_key="", factors_key="", factors=(), categorical=("auto",),
        periodic=("auto",), image_size=64, correlation="harder_gauss", rho=0.9, alpha=1.0,
        num_samples=50, num_query=0))
    config.tasks = ml_collections.ConfigDict(dict(
        kind="bernoulli", p=0.5, block_size=1, support_size=1, noise="snr", noise_scale=0.1))
    config.model = ml_collections.ConfigDict(dict(
        num_latents=0, width=1.0, hidden=256, momentum=0.9, precision="float32"))
    config.head = ml_collections.ConfigDict(dict(
        diff="implicit", tol=1e-5, max_epochs=500, unroll_epochs=50, inner_ridge_eps=1e-7))
    config.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, schedule="constant"))
    config.train = ml_collections.ConfigDict(dict(steps=20000, num_tasks=8, jit_compile=True))
    config.eval = ml_collections.ConfigDict(dict(
        every_steps=1000, grid_points=0, train_points=100000, agreement_points=5000,
        batch_size=1000, num_tasks=20, ica=True, sweep_image=True))
    config.checkpoint_every_steps = 1000
    config.log_every_seconds = 30.0

    if preset in ("cpu", "cpu64", "sprites"):
        config.data.image_size = 32
        config.train.steps = 3000
        config.eval.every_steps = 500
        config.eval.grid_points = 5000
        config.eval.train_points = 5000
        config.eval.batch_size = 500
        config.eval.num_tasks = 16
        config.checkpoint_every_steps = 500
    if preset in ("cpu64", "sprites"):
        config.data.image_size = 64
        config.model.precision = "mixed_bfloat16"
        config.train.update(steps=9000, jit_compile=False)
        config.eval.every_steps = 1500
        config.checkpoint_every_steps = 1500
    if preset == "cpu64":
        # With the hues periodic (the default roles, 9 latents), eps 0.1 left shape without
        # a code of its own in 4 of 5 seeds; eps 0.05 gave every latent column a code
        # (docs/disentangle.md, Expected results).
        config.eps = 0.05
    if preset == "sprites":
        config.data.update(path="sprites", categorical=("shape",), periodic=("orientation:1",))
    if preset == "tiny":
        config.data.image_size = 16
        config.data.num_samples = 12
        config.model.width = 0.25
        config.model.hidden = 32
        config.train.steps = 4
        config.train.num_tasks = 4
        config.train.jit_compile = False  # compiling costs more than it saves here
        config.eval.every_steps = 2
        config.eval.grid_points = 300
        config.eval.train_points = 300
        config.eval.agreement_points = 100
        config.eval.batch_size = 150
        config.eval.num_tasks = 2
        config.checkpoint_every_steps = 2
        config.log_every_seconds = 0.0
    return config


EPS_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
SELECT_EPS_GRID = (0.1, 0.2, 0.3)
SELECT_SEEDS = (0, 1, 2, 3, 4)


def get_sweep(name: str, hyper) -> list[dict]:
    """The paper's figures as sweeps: settings x methods x eps in EPS_GRID x SEEDS, every
    factor a continuous latent as in the paper (data.periodic = (): 6 latents on 3D Shapes).

    "fig4" (Figs. 4, 6, 15; ICA from the ridge runs): rho in {0, 0.5, 0.9, 0.99} at
    alpha = 1, then alpha in {0, 0.5} at rho = 0.9; inner-Lasso and inner-Ridge (216 runs).
    "fig4_rho": the rho half of fig4 (144 runs). "fig8": block supports of size 2, 3, 6
    (108 runs). "fig9": Laplace task weights (36 runs). "fig10": outer-Lasso and
    outer-Ridge (36 runs). "fig4_rho_small": the rho sweep in miniature for a 2-core CPU
    (with the "cpu" preset): rho in {0, 0.5, 0.9}, inner-Lasso and inner-Ridge at eps 0.1,
    one seed, 1,500 steps (6 runs).

    Not the paper's: "eps_select" (model selection without the factors, with the "cpu64"
    preset): inner-Lasso at eps in SELECT_EPS_GRID x SELECT_SEEDS under the config's own
    factor roles (15 runs), for disentangle_figures' oracle, val_loss and agreement rules.
    "sprites" (with the "sprites" preset): inner-Lasso, inner-Ridge and the supervised
    reference x SELECT_SEEDS at the preset's eps (15 runs). "seeds": the command line's
    config x SELECT_SEEDS (5 runs).
    """
    if name == "seeds":
        return hyper.sweep("seed", SELECT_SEEDS)
    if name == "eps_select":
        return hyper.product([hyper.fixed("method", "lasso"),
                              hyper.sweep("eps", SELECT_EPS_GRID),
                              hyper.sweep("seed", SELECT_SEEDS)])
    if name == "sprites":
        return hyper.product([hyper.sweep("method", ("lasso", "ridge", "supervised")),
                              hyper.sweep("seed", SELECT_SEEDS)])
    paper = hyper.fixed("data.periodic", ())
    if name == "fig4_rho_small":
        return hyper.product([paper, hyper.fixed("train.steps", 1500),
                              hyper.sweep("data.rho", (0.0, 0.5, 0.9)),
                              hyper.sweep("method", ("lasso", "ridge"))])
    rho = hyper.sweep("data.rho", (0.0, 0.5, 0.9, 0.99))
    settings = {
        "fig4": hyper.chainit([rho, hyper.sweep("data.alpha", (0.0, 0.5))]),
        "fig4_rho": rho,
        "fig8": hyper.product([hyper.fixed("tasks.kind", "block"),
                               hyper.sweep("tasks.block_size", (2, 3, 6))]),
        "fig9": hyper.fixed("tasks.kind", "laplace"),
        "fig10": hyper.product([]),
    }
    if name not in settings:
        raise ValueError(f"unknown sweep {name!r}; allowed: {', '.join(map(repr, settings))}"
                         ", 'fig4_rho_small', 'eps_select', 'sprites', 'seeds'")
    methods = ("outer_lasso", "outer_ridge") if name == "fig10" else ("lasso", "ridge")
    return hyper.product([paper, settings[name], hyper.sweep("method", methods),
                          hyper.sweep("eps", EPS_GRID), hyper.sweep("seed", SEEDS)])
