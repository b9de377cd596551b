"""Disentanglement on 3D Shapes, the sprite world or any labelled-factor file (paper
section 5.1, B.3, D.2).

One run = one method and one regularisation level `eps` (= lambda / lambda_max):

    python main.py --config=configs/disentangle.py:cpu --config.method=lasso --workdir=runs/a
    python main.py --config=configs/disentangle.py:sprites --config.method=lasso --workdir=runs/s
    python main.py --config=configs/disentangle.py:cpu --config.data.path=dsprites.npz \
        --workdir=runs/dsprites

Data (sdis_tf.data.pipeline, a tf.data pipeline, prefetched), chosen by
`data.path`: "" = the procedural 3D Shapes renderer; "sprites" = the procedural
sprite world (sdis_tf.data.sprites); a file = any labelled-factor file
`factors.load_factor_dataset` reads (3D Shapes h5, dSprites npz, plain npz /
h5; `data.images_key` / `data.factors_key` name other members); a directory =
a prepared TFDS `shapes3d`. The source has N rows of K factors (the 480,000 x 6
grid for 3D Shapes; the file's rows, complete grid or not, otherwise) and
images [H, W, C].

Factor roles (sdis_tf.data.roles, logged at the start): `data.factors` names
the task factors (() = all); the others are nuisances, free in the images and
absent from z, the tasks and the metrics. `data.categorical` (names) and
`data.periodic` ("name:period[:symmetry]") declare unordered and periodic task
factors; their item "auto" stands for the layout's defaults (dSprites' shape
categorical and orientation periodic over 2 pi, 3D Shapes' hues periodic over
1, the sprite world's shape categorical and orientation periodic over 1).
Continuous factors give one latent column, categorical ones C - 1 class
indicators, periodic ones (cos, sin): d columns in all.

Per step T tasks of n images whose latents z [T, n, d] are drawn from
p_{alpha,rho} over the task factors' jittered, standardised values (then a row
of the drawn values uniformly: the nuisances), average-pooled to height
`data.image_size` (0: the file's own size); task weights w_t [d] (Bernoulli
supports by default) and targets y_t = z_t w_t + noise. With `data.num_query >
0` the outer loss uses a fresh query set of the same tasks; with 0 it reuses
the n inner samples (the paper's setting).

Model: `Conv4Encoder` (sdis_tf.models.conv4) on [H, W, C] with
m = `model.num_latents` codes (0: m = d), ending in TaskBatchNorm.
Methods (inner problem on the support set, outer loss on the query set):

    lasso        W_t = argmin 1/(2n)||y - F w||^2 + eps lam_max ||w||_1,
                 lam_max = ||F^T y||_inf / n (stop-gradient)        inner-Lasso
    ridge        W_t = argmin 1/(2n)||y - F w||^2 + eps lam_max/2 ||w||^2,
                 lam_max = ||F||_F^2 / n (stop-gradient)            inner-Ridge
    none         least squares (ridge with lam = 0)                 no regularisation
    outer_lasso  inner: ridge with eps = head.inner_ridge_eps (smooth);
                 outer loss + eps lam_max ||W_t||_1 (lasso lam_max)   (B.3, eq. 62)
    outer_ridge  same inner; outer loss + eps lam_max/2 ||W_t||^2 (ridge lam_max)
    supervised   no task targets, no eps: the codes regress the latents themselves, outer
                 loss 1/(2nd) ||std_t(z_t) - F_t||^2 (heads.IdentityHead; std_t
                 standardises each column over task t's samples, as TaskBatchNorm does the
                 codes in training; m = d). It sees the factors: a reference for how this
                 encoder, trained on p_{alpha,rho}, extrapolates to the grid (not a bound).

"+ ICA" is not a training method: every run with `eval.ica` also reports the
scores of its codes after linear ICA (inner-Ridge + ICA = the ica_* scores of a
`ridge` run). Adam (`optimizer.learning_rate`, `optimizer.schedule` constant or
cosine: sdis_tf.train.schedules), one `tf.function` step under `config.distribute`
(sdis_tf.train.bilevel), evaluation every `eval.every_steps` and at the end
(disentangle_eval) over the source's rows: eval/{mcc, r, dci_d, dci_c} on all
rows or `eval.grid_points` of them, and per task factor eval/{mcc, r, dci_d,
dci_c}/<factor> (eval/class_acc/<factor> for a categorical one),
eval/mcc_continuous (the mean of the continuous factors' MCC terms), eval/*_train
on the training distribution, eval/ica_*, eval/loss (outer loss on held-out
query samples of held-out tasks: the validation loss, which never looks at the
true factors), a TensorBoard image of the single-factor sweeps; train/{loss,
grad_norm, support, input_wait}. workdir/result.json holds the last record, the
task factors' names, every factor's role, the latent columns' names and the
sweep codes; workdir/sweeps.png the final sweep figure; workdir/codes.npz the codes
of `eval.agreement_points` rows of the data set, the same rows for every run (images
only), which the code-agreement rule of disentangle_figures compares across seeds to
choose eps without the factors.
"""

from __future__ import annotations

import functools
import io
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sdis_tf import config_schema as cs
from sdis_tf import heads
from sdis_tf.data import factors as factors_lib
from sdis_tf.data import latents as latents_lib
from sdis_tf.data import pipeline
from sdis_tf.data import roles as roles_lib
from sdis_tf.data import tasks as tasks_lib
from sdis_tf.data.errors import DataFileError
from sdis_tf.experiments import disentangle_eval, disentangle_figures
from sdis_tf.models.conv4 import PRECISIONS, Conv4Encoder
from sdis_tf.solvers import lasso_lambda_max, lasso_op, ridge_lambda_max
from sdis_tf.train import bilevel, distribute, harness, schedules
from sdis_tf.train.rundir import atomic_write, save_figure

METHODS = ("lasso", "ridge", "none", "outer_lasso", "outer_ridge", "supervised")
CORRELATIONS = ("harder_gauss", "gauss", "uniform")
RENDERERS = {"": "render", "sprites": "sprites"}
"""`data.path` values that name a renderer (no file): the 3D Shapes renderer, the sprite world."""
RENDER_IMAGE_SIZES = (64, 32, 16)  # the renderers' 64x64 average-pooled by 1, 2, 4
_EVAL_SEED_OFFSET = 1_000_003  # eval tasks use pipeline seed (seed + offset)


class _Periodic(cs.Spec):
    """An item of `data.periodic`: "auto" or "name:period[:symmetry]" (`roles.parse_periodic`)."""

    def allowed(self) -> str:
        return f"'auto' or {roles_lib.PERIODIC_FORMAT}"

    def problem(self, value):
        if value == roles_lib.AUTO:
            return None
        try:
            roles_lib.parse_periodic(value)
        except roles_lib.PeriodicFormatError as error:
            return (f"is not a periodic declaration ({error.reason}); "
                    f"allowed: {self.allowed()}")
        return None


SCHEMA = {
    "experiment": cs.Choice("disentangle"),
    "seed": cs.Int(min=0, max=_EVAL_SEED_OFFSET - 1),
    "distribute": cs.Choice(*distribute.STRATEGIES),
    "method": cs.Choice(*METHODS),
    "eps": cs.NONNEGATIVE,
    "data": {
        "path": cs.Text(),
        "images_key": cs.Text(),
        "factors_key": cs.Text(),
        "factors": cs.Tuple(cs.Text(nonempty=True), min_len=0, unique=True),
        "categorical": cs.Tuple(cs.Text(nonempty=True), min_len=0, unique=True),
        "periodic": cs.Tuple(_Periodic(), min_len=0, unique=True),
        "image_size": cs.Int(min=0),
        "correlation": cs.Choice(*CORRELATIONS),
        "rho": cs.CORRELATION,
        "alpha": cs.Float(min=0.0, max=1.0),
        "num_samples": cs.Int(min=2),
        "num_query": cs.Int(min=0),
    },
    "tasks": tasks_lib.SCHEMA,
    "model": {
        "num_latents": cs.Int(min=0),
        "width": cs.POSITIVE,
        "hidden": cs.COUNT,
        "momentum": cs.Float(min=0.0, max=1.0, max_open=True),
        "precision": cs.Choice(*PRECISIONS),
    },
    "head": {
        "diff": cs.Choice("implicit", "unroll"),
        "tol": cs.POSITIVE,
        "max_epochs": cs.COUNT,
        "unroll_epochs": cs.COUNT,
        "inner_ridge_eps": cs.NONNEGATIVE,
    },
    "optimizer": schedules.OPTIMIZER_SCHEMA,
    "train": {"steps": cs.COUNT, "num_tasks": cs.COUNT, "jit_compile": cs.Bool()},
    "eval": {
        "every_steps": cs.COUNT,
        "grid_points": cs.Int(min=0),
        "train_points": cs.Int(min=16),
        "agreement_points": cs.Int(min=0),
        "batch_size": cs.COUNT,
        "num_tasks": cs.COUNT,
        "ica": cs.Bool(),
        "sweep_image": cs.Bool(),
    },
    "checkpoint_every_steps": cs.COUNT,
    "log_every_seconds": cs.NONNEGATIVE,
}


def _cross_field(config: dict) -> list[str]:
    """Checks that need no data: the file exists, keys only with a file, renderer sizes."""
    data, problems = config["data"], []
    path = data["path"]
    for key in ("images_key", "factors_key"):
        if data[key] and not os.path.isfile(path):
            problems.append(f"config.data.{key} = {data[key]!r} names a member of a file: "
                            "it needs config.data.path = an .npz or .h5 file")
    if path not in RENDERERS and not os.path.exists(path):
        problems.append(f"config.data.path = {path!r}: no such file or directory (give a "
                        "labelled-factor .npz / .h5 file, a TFDS shapes3d dir, '' for "
                        "the 3D Shapes renderer or 'sprites' for the sprite world)")
    if path in RENDERERS and data["image_size"] not in RENDER_IMAGE_SIZES:
        problems.append(f"config.data.image_size = {data['image_size']} must be one of "
                        f"{RENDER_IMAGE_SIZES} with the renderer (64x64 renders "
                        "average-pooled by an integer factor)")
    if config["eval"]["grid_points"] and config["eval"]["grid_points"] < 16:
        problems.append("config.eval.grid_points must be 0 (every row) or >= 16")
    if 0 < config["eval"]["agreement_points"] < 16:
        problems.append("config.eval.agreement_points must be 0 (no codes saved) or >= 16")
    return problems


CONSTRAINTS = (_cross_field,)


def run_name(method: str, eps: float) -> str:
    """'lasso eps=0.1'; 'supervised' alone (it has no eps)."""
    return method if method == "supervised" else f"{method} eps={eps:g}"


def distribution_name(data: dict) -> str:
    """p_{alpha,rho} of `config.data` named as `latents.parse_distribution` reads it."""
    if data["correlation"] == "uniform":
        return "uniform"
    return f"{data['correlation']}_{float(data['rho'])!r}"


def make_head(config: dict) -> keras.layers.Layer:
    """The inner head of `config.method` (module docstring)."""
    method, eps, head = config["method"], config["eps"], config["head"]
    if method == "lasso":
        return heads.build("lasso", eps=eps, diff=head["diff"], tol=head["tol"],
                           max_epochs=head["max_epochs"], unroll_epochs=head["unroll_epochs"])
    if method == "ridge":
        return heads.build("ridge", eps=eps)
    if method == "none":
        return heads.build("ridge", lam=0.0)
    if method in ("outer_lasso", "outer_ridge"):
        return heads.build("ridge", eps=head["inner_ridge_eps"])
    if method == "supervised":
        return heads.build("identity")
    raise ValueError(f"method must be one of {METHODS}. Received: {method!r}")


def outer_penalty(method: str, eps: float):
    """penalty(W [T, m], F_s [T, n, m], y_s [T, n]) -> [T] of an outer-regularised method, or None.

    outer_lasso: eps * lam_max * ||W_t||_1 with lam_max = ||F_t^T y_t||_inf / n;
    outer_ridge: eps * lam_max / 2 * ||W_t||^2 with lam_max = ||F_t||_F^2 / n;
    lam_max under stop-gradient, as for the inner penalties. d|w|/dw = 0 at w = 0.
    """
    if method == "outer_lasso":
        return lambda W, F, y: (eps * tf.stop_gradient(lasso_lambda_max(F, y))
                                * tf.reduce_sum(tf.abs(W), axis=-1))
    if method == "outer_ridge":
        return lambda W, F, y: (0.5 * eps * tf.stop_gradient(ridge_lambda_max(F))
                                * tf.reduce_sum(tf.square(W), axis=-1))
    return None


def downsample(x: tf.Tensor, image_size: int) -> tf.Tensor:
    """Average-pools images [..., H, W, C] by the factor H / image_size (0: unchanged)."""
    factor = x.shape[-3] // image_size if image_size else 1
    if factor == 1:
        return x
    flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
    pooled = tf.nn.avg_pool2d(flat, factor, factor, "VALID")
    return tf.reshape(pooled, tf.concat([tf.shape(x)[:-3], tf.shape(pooled)[1:]], 0))


def image_source(data: dict) -> pipeline.ImageSource:
    """The source of `config.data`: the renderer (path ""), a labelled-factor file
    (with its optional member keys) or a TFDS shapes3d directory.

    Raises:
      ConfigError: the file cannot be used (the message names config.data.path,
        the keys given, the keys found in the file and those expected).
    """
    path = data["path"]
    try:
        if data["images_key"] or data["factors_key"]:
            return pipeline.image_source(factors_lib.load_factor_dataset(
                path, images_key=data["images_key"] or None,
                factors_key=data["factors_key"] or None))
        return pipeline.image_source(RENDERERS.get(path, path))
    except DataFileError as error:
        keys = "".join(f", config.data.{key} = {data[key]!r}"
                       for key in ("images_key", "factors_key") if data[key])
        hint = ("" if keys else "\n  (name the members with config.data.images_key and "
                "config.data.factors_key)")
        raise cs.ConfigError(f"invalid config:\n  config.data.path = {path!r}{keys} cannot be "
                             f"read: {error}{hint}") from None


def factor_roles(data: dict, source: pipeline.ImageSource) -> roles_lib.Roles:
    """The factor roles `config.data` declares (factors, categorical, periodic) on `source`.

    Raises:
      roles.RolesError: declarations that do not fit the source's factors.
    """
    return source.roles(factors=tuple(data["factors"]), categorical=tuple(data["categorical"]),
                        periodic=tuple(data["periodic"]))


def model_image_shape(image_shape: tuple, image_size: int) -> tuple[int, int, int]:
    """What the encoder takes: (H, W, C) after `downsample(., image_size)`."""
    height, width, channels = image_shape
    factor = height // image_size if image_size else 1
    return height // factor, width // factor, channels


def data_problems(config: dict, source: pipeline.ImageSource) -> list[str]:
    """Checks of `config` against the loaded source: the factor roles, image size,
    d-dependent task fields (d latent columns), enough rows and points to score (at least
    16, and m + 2 for R's regression on all m codes: the data set's rows,
    eval.grid_points when not 0 and eval.train_points)."""
    size, (height, width, _) = config["data"]["image_size"], source.image_shape
    rows = len(source.factor_table)
    try:
        num_latents = factor_roles(config["data"], source).num_latents
    except roles_lib.RolesError as error:
        return error.lines("config.data.")
    problems = tasks_lib.schema_problems(config["tasks"], num_latents)
    num_codes = config["model"]["num_latents"] or num_latents
    if config["method"] == "supervised" and num_codes != num_latents:
        problems.append(f"config.model.num_latents = {num_codes} must be 0 or d = "
                        f"{num_latents} (the latent columns) with config.method = "
                        "'supervised': each code regresses one latent column")
    needed = max(16, num_codes + 2)
    if rows < needed:
        problems.append(f"config.data.path = {config['data']['path']!r} holds {rows} rows; the "
                        f"evaluation needs at least {needed} (16, and num_latents + 2 for R)")
    codes = (f"m = config.model.num_latents = {num_codes}" if config["model"]["num_latents"]
             else f"m = the {num_codes} latent columns, config.model.num_latents = 0")
    for_r = f">= m + 2 = {num_codes + 2} ({codes}; R regresses each latent on all m codes)"
    grid_points, train_points = config["eval"]["grid_points"], config["eval"]["train_points"]
    if 0 < grid_points < num_codes + 2:
        problems.append(f"config.eval.grid_points = {grid_points} must be 0 (every row) or "
                        + for_r)
    if train_points < num_codes + 2:
        problems.append(f"config.eval.train_points = {train_points} must be " + for_r)
    if size and (height % size or width % (height // size)):
        problems.append(f"config.data.image_size = {size} must divide the images' height "
                        f"{height} (average-pooling by {height} / image_size, which must "
                        f"also divide the width {width}); 0 keeps {height}x{width}")
    return problems


def task_batches(config: dict, source, latents, *, seed: int, num_tasks: int,
                 num_query: int, start_step: int = 0, num_steps=None) -> tf.data.Dataset:
    """tf.data of model inputs {x_support, y_support[, x_query, y_query]} from step `start_step`."""
    data, tasks = config["data"], config["tasks"]
    task_fn = pipeline.regression_tasks(
        tasks["kind"], noise=tasks["noise"], noise_scale=tasks["noise_scale"], p=tasks["p"],
        block_size=tasks["block_size"], support_size=tasks["support_size"])
    dataset = pipeline.task_batches(
        source, num_tasks=num_tasks, num_samples=data["num_samples"], num_query=num_query,
        distribution=distribution_name(data), seed=seed, start_step=start_step,
        num_steps=num_steps, task_fn=task_fn, latents=latents)

    def model_inputs(batch):
        y, y_query = batch["y"], batch.get("y_query")
        if config["method"] == "supervised":
            y, y_query = latent_targets(batch["z"], batch.get("z_query"))
        inputs = {"x_support": downsample(batch["x"], data["image_size"]), "y_support": y}
        if num_query:
            inputs.update(x_query=downsample(batch["x_query"], data["image_size"]),
                          y_query=y_query)
        return inputs

    return dataset.map(model_inputs, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(2)


def latent_targets(z: tf.Tensor, z_query: tf.Tensor | None = None):
    """The supervised method's targets: z [T, n, d] (and z_query [T, q, d]) standardised
    per task and column over the task's support and query samples together, the samples
    TaskBatchNorm normalises the codes over. Returns (y [T, n, d], y_query or None)."""
    joint = z if z_query is None else tf.concat([z, z_query], axis=1)
    mean, variance = tf.nn.moments(joint, axes=[1], keepdims=True)
    standardised = (joint - mean) * tf.math.rsqrt(variance + 1e-6)
    if z_query is None:
        return standardised, None
    return standardised[:, :z.shape[1]], standardised[:, z.shape[1]:]


def _as_task_batch(inputs: dict) -> tasks_lib.TaskBatch:
    return tasks_lib.TaskBatch(inputs["x_support"], inputs["y_support"],
                               inputs.get("x_query"), inputs.get("y_query"))


class _Inputs:
    """Training batches by step: a prefetching iterator, rebuilt when a step is skipped
    (resume), and the seconds the step waited for its batch."""

    def __init__(self, make_dataset):
        self._make_dataset, self._iterator, self._next_step = make_dataset, None, None

    def __call__(self, step: int) -> tuple[tasks_lib.TaskBatch, float]:
        if self._iterator is None or step != self._next_step:
            self._iterator = iter(self._make_dataset(step))
        start = time.perf_counter()
        batch = next(self._iterator)
        self._next_step = step + 1
        return _as_task_batch(batch), time.perf_counter() - start


class DisentangleRun:
    """One run's pieces (a `sdis_tf.train.harness.Run`): data, encoder, trainer, evaluation.

    `source` is the opened data (`prepare`); None opens `config.data` here.
    """

    def __init__(self, config: dict, strategy: tf.distribute.Strategy,
                 source: pipeline.ImageSource | None = None):
        self.config = config
        data, seed = config["data"], config["seed"]
        source = source if source is not None else image_source(data)
        self.name = run_name(config["method"], config["eps"])
        self.total_steps, self.initial_step = config["train"]["steps"], 0
        self.eval_every_steps = config["eval"]["every_steps"]
        self.checkpoint_every_steps = config["checkpoint_every_steps"]
        self.source, self.roles = source, factor_roles(data, source)
        self.factor_names = self.roles.task_names
        self.factor_table = source.factor_table
        self.latents = source.default_latents(data["alpha"], self.roles)
        keras.utils.set_random_seed(seed)
        size = data["image_size"]
        shape = model_image_shape(source.image_shape, size)
        num_latents = config["model"]["num_latents"] or self.roles.num_latents
        with strategy.scope():
            self.encoder = Conv4Encoder(**{**config["model"], "num_latents": num_latents})
            self.encoder(tf.zeros((1,) + shape), training=False)
            self.optimizer = schedules.adam(config["optimizer"], config["train"]["steps"])
            self.optimizer.build(self.encoder.trainable_variables)
        self.head = make_head(config)
        self.trainer = bilevel.BilevelTrainer(
            self.encoder, self.head, self.optimizer, strategy,
            num_tasks=config["train"]["num_tasks"], jit_compile=config["train"]["jit_compile"],
            outer_penalty=outer_penalty(config["method"], config["eps"]))
        self.inputs = _Inputs(lambda start: task_batches(
            config, self.source, self.latents, seed=seed, num_tasks=config["train"]["num_tasks"],
            num_query=data["num_query"], start_step=start))
        self._encode = tf.function(lambda x: self.encoder(downsample(x, size), training=False),
                                   reduce_retracing=True)
        self.trackables = {"model": self.encoder, "optimizer": self.optimizer}
        self._eval_loss = tf.function(functools.partial(bilevel.validation_loss, self.encoder,
                                                        self.head))
        ev = config["eval"]
        eval_batch = next(iter(task_batches(
            config, self.source, self.latents, seed=seed + _EVAL_SEED_OFFSET,
            num_tasks=ev["num_tasks"], num_query=data["num_samples"], num_steps=1)))
        self.eval_tasks = _as_task_batch(eval_batch)
        train_indices = latents_lib.make_sampler(self.latents, distribution_name(data)).sample(
            [ev["train_points"]], tf.constant([seed, 0xE7A1], tf.int64)).numpy()
        sweeps = disentangle_eval.sweep_rows(self.factor_table)
        self.evaluator = disentangle_eval.Evaluator(
            self.encode, self.latents,
            disentangle_eval.grid_points(ev["grid_points"], seed, len(self.factor_table)),
            train_indices, [sweeps[k] for k in self.roles.task_columns], ica=ev["ica"],
            seed=seed)
        self.agreement_indices = disentangle_eval.agreement_rows(ev["agreement_points"],
                                                                 len(self.factor_table))

    def train_step(self, step: int) -> dict:
        batch, wait = self.inputs(step)
        return {**self.trainer.train_on_batch(batch), "input_wait": wait}

    def encode(self, indices: np.ndarray) -> np.ndarray:
        """Codes [N, m] (float64, inference mode) of row indices [N], in batches."""
        factors = self.factor_table[indices].astype(np.float32)
        batch_size, codes = self.config["eval"]["batch_size"], []
        for start in range(0, len(indices), batch_size):
            part = slice(start, start + batch_size)
            images = self.source.images(tf.constant(indices[None, part]),
                                        tf.constant(factors[None, part]))[0]
            codes.append(self._encode(images).numpy())
        return np.concatenate(codes).astype(np.float64)

    def sweep_figure(self, sweeps: list[np.ndarray], mcc: float) -> np.ndarray:
        """The sweep image (disentangle_eval.sweep_figure) of codes `sweeps`, titled."""
        values = [self.factor_table[rows, k]
                  for k, rows in zip(self.roles.task_columns, self.evaluator.sweep_indices)]
        title = f"{self.name}: grid MCC {mcc:.3f}"
        return disentangle_eval.sweep_figure(sweeps, values, self.factor_names,
                                             self.evaluator.matching, title,
                                             latent_names=self.roles.latent_names)

    def save_agreement_codes(self, path: str) -> None:
        """Writes `path` (npz, atomically): `rows` [P] (`agreement_indices`) and their codes
        `codes` [P, m] float32, read by the code-agreement rule of disentangle_figures;
        nothing when eval.agreement_points = 0."""
        if len(self.agreement_indices) == 0:
            return
        buffer = io.BytesIO()
        np.savez(buffer, rows=self.agreement_indices,
                 codes=self.encode(self.agreement_indices).astype(np.float32))
        atomic_write(path, buffer.getvalue())

    def evaluate(self):
        scalars = self.evaluator()
        scalars["loss"] = float(self._eval_loss(self.eval_tasks))
        images = {}
        if self.config["eval"]["sweep_image"]:
            image = self.sweep_figure(self.evaluator.sweeps(), scalars["mcc"])
            images["sweeps"] = tf.constant(image[None] / 255.0, tf.float32)
        return scalars, images


    def finish(self, final: dict, rundir) -> dict:
        """The result: the final record, the task factors' names (one sweep each), every
        factor's role, the latent columns' names and the sweep codes; the sweep figure in
        workdir/sweeps.png, the agreement rows' codes in workdir/codes.npz."""
        sweeps = self.evaluator.sweeps()
        if rundir.chief:
            save_figure(self.sweep_figure(sweeps, final["eval/mcc"]), rundir.path("sweeps.png"))
            self.save_agreement_codes(rundir.path(disentangle_figures.AGREEMENT_CODES))
        return {"method": self.config["method"], "eps": self.config["eps"], **final,
                "factor_names": list(self.factor_names), "factor_roles": self.roles.as_dict(),
                "latent_names": list(self.roles.latent_names),
                "num_rows": len(self.factor_table), "sweeps": [s.tolist() for s in sweeps]}


_FACTOR_SUMMARY = {"mcc": "MCC", "r": "R", "dci_d": "DCI-D", "dci_c": "DCI-C",
                   "mcc_train": "MCC_train"}
_CATEGORICAL_SUMMARY = {"class_acc": "class_acc", "class_acc_train": "class_acc_train"}
"""The per-factor scores of the printed summary, {key: label} (the second for categorical
factors only)."""


def format_summary(result: dict) -> str:
    """One line: method and eps (`run_name`), grid MCC / R / DCI, training-distribution MCC,
    validation loss, ICA MCC, time; when some task factor is not continuous, a line with the
    MCC over the continuous factors (grid, training distribution); then one line per task factor:
    its role, grid MCC term, R, DCI-D, DCI-C and training-distribution MCC term (and both
    class accuracies for a categorical factor), then the number of codes it owns on the
    grid."""
    text = (f"{run_name(result['method'], result['eps'])} step={result['step']}: "
            f"MCC={result['eval/mcc']:.3f} R={result['eval/r']:.3f} "
            f"DCI-D={result['eval/dci_d']:.3f} DCI-C={result['eval/dci_c']:.3f} "
            f"MCC_train={result['eval/mcc_train']:.3f} val_loss={result['eval/loss']:.4f}")
    if "eval/ica_mcc" in result:
        text += f" ICA-MCC={result['eval/ica_mcc']:.3f}"
    text += f" time={result['elapsed']:.0f}s"
    factors = [f for f in result.get("factor_names", ()) if f"eval/mcc/{f}" in result]
    if not factors:
        return text
    roles = {name: result.get("factor_roles", {}).get(name, "continuous") for name in factors}
    if set(roles.values()) != {"continuous"}:
        text += ("\n  continuous factors: "
                 f"MCC={disentangle_figures.result_mcc_continuous(result):.3f} MCC_train="
                 f"{disentangle_figures.result_mcc_continuous(result, suffix='_train'):.3f}")
    text += ("\n  per factor (grid MCC term, R, DCI-D, DCI-C; training-distribution MCC "
             "term; codes it owns on the grid):")
    labels = {name: f"{name} ({role})" for name, role in roles.items()}
    width = max(map(len, labels.values()))
    for name in factors:
        keys = _FACTOR_SUMMARY | (_CATEGORICAL_SUMMARY if f"eval/class_acc/{name}" in result
                                  else {})
        scores = " ".join(f"{label}={result.get(f'eval/{key}/{name}', float('nan')):.3f}"
                          for key, label in keys.items())
        if f"eval/codes/{name}" in result:
            scores += f" codes={result[f'eval/codes/{name}']:g}"
        text += f"\n    {labels[name]:<{width}}  {scores}"
    return text


def prepare(config: dict) -> pipeline.ImageSource:
    """Opens the data source and checks the config against it (`data_problems`), before
    anything is written; an inner-Lasso run builds the C++ Lasso op here if it is not cached
    (once per machine and TensorFlow, 15-90 s; the evaluation solves with it even when
    training is XLA-compiled), not inside its first step.

    Raises:
      ConfigError: the source cannot be read or does not fit the config.
    """
    if config["method"] == "lasso":
        lasso_op.op_available()
    source = image_source(config["data"])
    problems = data_problems(config, source)
    if problems:
        raise cs.ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return source


def build(config: dict, source: pipeline.ImageSource,
          strategy: tf.distribute.Strategy) -> DisentangleRun:
    """The run of `config` on the opened `source`."""
    built = DisentangleRun(config, strategy, source)
    logging.info("data %s: %d rows, K = %d factors %s, images %s, encoder input %s",
                 config["data"]["path"] or "renderer", len(built.factor_table),
                 len(source.factor_names), source.factor_names, source.image_shape,
                 model_image_shape(source.image_shape, config["data"]["image_size"]))
    logging.info("factor roles (config.data.factors, .categorical, .periodic): %s",
                 built.roles.describe())
    return built


EXPERIMENT = harness.Experiment(SCHEMA, CONSTRAINTS, prepare, build, format_summary,
                                report=disentangle_figures.report)
