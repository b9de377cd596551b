"""Quickstart: identifiability through inner-Lasso (paper Theorem 3.1), on synthetic data.

One run trains one encoder through the head of `config.method`. The sweep
`methods` (configs/quickstart.py) runs inner-Lasso and inner-Ridge side by side;
`report(workdir)` then writes the comparison figure workdir/quickstart.png and
returns the table (method, MCC, R, time):

    python -m sdis_tf.sweep --config=configs/quickstart.py --sweep=methods --workdir=runs/qs

Data (sdis_tf.data.synthetic): z ~ N(0, Sigma_rho) in R^m, x = g(z) in R^d,
tasks y = z w_t + noise with sparse w_t (sdis_tf.data.tasks). Model: an MLP
encoder with TaskBatchNorm (sdis_tf.models.mlp), the inner head
`LassoHead(eps)` or `RidgeHead(eps)`, and the bilevel step of
sdis_tf.train.bilevel.

Evaluation (every eval.every_steps): MCC (Pearson + Hungarian) and R (mean
sqrt R^2 of a linear regression) between z and the codes f(x) (inference
mode) on eval.num_samples held-out latents drawn with correlation eval.rho
(eval/mcc, eval/r; default 0: factorised latents, the analogue of the
paper's evaluation on the whole 3D Shapes grid), the same on held-out latents
of the training distribution (eval/mcc_train, eval/r_train; correlated
latents make MCC flatter entangled codes there, see docs/quickstart.md), and
the outer loss on eval.num_tasks held-out tasks (eval/loss).
"""

from __future__ import annotations

import functools
import os

import keras
import numpy as np
import tensorflow as tf

from sdis_tf import config_schema as cs
from sdis_tf import heads, metrics
from sdis_tf.data import synthetic
from sdis_tf.data import tasks as tasks_lib
from sdis_tf.models.mlp import ACTIVATIONS, MLPEncoder
from sdis_tf.solvers import lasso_op
from sdis_tf.train import bilevel, distribute, harness, progress, schedules
from sdis_tf.train.rundir import RunDir, finished_runs, save_figure

METHODS = ("lasso", "ridge")

SCHEMA = {
    "experiment": cs.Choice("quickstart"),
    "seed": cs.Int(min=0),
    "distribute": cs.Choice(*distribute.STRATEGIES),
    "method": cs.Choice(*METHODS),
    "data": synthetic.SCHEMA,
    "tasks": tasks_lib.SCHEMA,
    "model": {
        "hidden": cs.Tuple(cs.COUNT, min_len=0),
        "activation": cs.Choice(*ACTIVATIONS),
        "momentum": cs.Float(min=0.0, max=1.0, max_open=True),
    },
    "heads": {
        "lasso": {
            "eps": cs.Float(min=0.0, max=1.0, max_open=True),
            "diff": cs.Choice("implicit", "unroll"),
            "tol": cs.POSITIVE,
            "max_epochs": cs.COUNT,
            "unroll_epochs": cs.COUNT,
        },
        "ridge": {"eps": cs.NONNEGATIVE},
    },
    "optimizer": schedules.OPTIMIZER_SCHEMA,
    "train": {"steps": cs.COUNT, "num_tasks": cs.COUNT, "jit_compile": cs.Bool()},
    "eval": {
        "every_steps": cs.COUNT,
        "num_samples": cs.Int(min=16),
        "rho": cs.CORRELATION,
        "num_tasks": cs.COUNT,
    },
    "checkpoint_every_steps": cs.COUNT,
    "log_every_seconds": cs.NONNEGATIVE,
}


def _cross_field(config: dict) -> list[str]:
    problems = synthetic.schema_problems(config["data"])
    problems += tasks_lib.schema_problems(config["tasks"], config["data"]["num_latents"])
    if config["eval"]["num_samples"] < config["data"]["num_latents"] + 2:
        problems.append(f"config.eval.num_samples = {config['eval']['num_samples']} must be "
                        f">= num_latents + 2 (R regresses on all codes)")
    return problems


CONSTRAINTS = (_cross_field,)

_TRAIN_STREAM, _EVAL_TASK_STREAM, _EVAL_STREAM, _EVAL_TRAIN_DIST_STREAM = range(4)


def _stream_seed(seed: int, stream: int):
    """The stateless seed [2] of one random stream of a run."""
    return tf.constant([seed, stream], tf.int64)


class QuickstartRun:
    """One run's pieces (a `sdis_tf.train.harness.Run`): data, encoder, trainer, evaluation."""

    def __init__(self, config: dict, strategy: tf.distribute.Strategy):
        data, self.config, method = config["data"], config, config["method"]
        self.name = method
        self.total_steps, self.initial_step = config["train"]["steps"], 0
        self.eval_every_steps = config["eval"]["every_steps"]
        self.checkpoint_every_steps = config["checkpoint_every_steps"]
        self.mixing = synthetic.Mixing(
            config["seed"], data["num_latents"], data["dim"], num_layers=data["mixing_layers"],
            slope=data["mixing_slope"], condition=data["mixing_condition"])
        keras.utils.set_random_seed(config["seed"])
        with strategy.scope():
            self.encoder = MLPEncoder(data["num_latents"], **config["model"])
            self.encoder(tf.zeros([1, data["dim"]]), training=False)
            self.optimizer = schedules.adam(config["optimizer"], config["train"]["steps"])
            self.optimizer.build(self.encoder.trainable_variables)
        self.head = heads.build(method, **config["heads"][method])
        train_seed = _stream_seed(config["seed"], _TRAIN_STREAM)
        self.trainer = bilevel.BilevelTrainer(
            self.encoder, self.head, self.optimizer, strategy,
            lambda step: self.sample(tf.random.experimental.stateless_fold_in(train_seed, step),
                                     config["train"]["num_tasks"]),
            num_tasks=config["train"]["num_tasks"], jit_compile=config["train"]["jit_compile"])
        self.trackables = {"model": self.encoder, "optimizer": self.optimizer}
        self.train_step = self.trainer.train_step
        self._eval_data()
        self._eval_loss = tf.function(functools.partial(bilevel.validation_loss, self.encoder,
                                                        self.head))

    def sample(self, seed, num_tasks: int) -> tasks_lib.TaskBatch:
        data = self.config["data"]
        batch, _ = synthetic.sample_tasks(
            seed, self.mixing, num_tasks=num_tasks, n_support=data["n_support"],
            n_query=data["n_query"], rho=data["rho"], structure=data["structure"],
            tasks=self.config["tasks"])
        return batch

    def _eval_data(self):
        seed, data, ev = self.config["seed"], self.config["data"], self.config["eval"]
        self.eval_tasks = self.sample(_stream_seed(seed, _EVAL_TASK_STREAM), ev["num_tasks"])
        self.eval_latents = {}
        for name, stream, rho in (("", _EVAL_STREAM, ev["rho"]),
                                  ("_train", _EVAL_TRAIN_DIST_STREAM, data["rho"])):
            z = synthetic.sample_latents(_stream_seed(seed, stream), (ev["num_samples"],),
                                         data["num_latents"], rho, data["structure"])
            self.eval_latents[name] = (z, self.mixing(z))

    def correlations(self, name: str = ""):
        """(matched |corr(z_i, code_pi(i))| [m, m], MCC, R) on the eval latents `name`."""
        z, x = self.eval_latents[name]
        z, z_hat = z.numpy(), self.encoder(x, training=False).numpy()
        corr = np.abs(metrics.correlation_matrix(z, z_hat))
        matched, permutation, _ = metrics.match_correlations(corr)
        return corr[:, permutation], float(np.mean(matched)), metrics.multiple_correlation(z, z_hat)

    def evaluate(self):
        corr, score, r = self.correlations()
        _, score_train, r_train = self.correlations("_train")
        scalars = {"mcc": score, "r": r, "mcc_train": score_train, "r_train": r_train,
                   "loss": float(self._eval_loss(self.eval_tasks))}
        size = 16  # pixels per matrix entry
        image = np.kron(corr, np.ones((size, size)))[None, :, :, None]
        return scalars, {"abs_corr": tf.constant(image, tf.float32)}

    def finish(self, final: dict, rundir) -> dict:
        """The result: the final record and the matched |corr| matrix (nested lists)."""
        corr, _, _ = self.correlations()
        return {"method": self.config["method"], **final, "abs_corr": corr.tolist()}


def format_table(results: list[dict]) -> str:
    """A fixed-width table: method, MCC, R (eval latents; and on the training
    distribution: MCC_train, R_train), run time."""
    lines = [f"{'method':<8} {'MCC':>6} {'R':>6} {'MCC_train':>10} {'R_train':>8} {'time':>7}"]
    for r in results:
        lines.append(f"{r['method']:<8} {r['eval/mcc']:>6.3f} {r['eval/r']:>6.3f} "
                     f"{r['eval/mcc_train']:>10.3f} {r['eval/r_train']:>8.3f} "
                     f"{progress.format_duration(r['elapsed']):>7}")
    return "\n".join(lines)


def plot(results: list[dict], histories: list[list[dict]], path: str) -> None:
    """MCC and R over training for each method, and each method's matched |corr| matrix."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(results), figsize=(4.2 * (1 + len(results)), 3.6))
    curves = axes[0]
    for result, history in zip(results, histories):
        steps = [h["step"] for h in history]
        line, = curves.plot(steps, [h["eval/mcc"] for h in history], label=f"{result['method']} MCC")
        curves.plot(steps, [h["eval/r"] for h in history], "--", color=line.get_color(),
                    label=f"{result['method']} R")
    curves.set(xlabel="outer step", ylabel="score", ylim=(0, 1.02), title="held-out latents")
    curves.legend(loc="lower right", fontsize=8)
    for ax, result in zip(axes[1:], results):
        corr = np.array(result["abs_corr"])
        ax.imshow(corr, vmin=0, vmax=1, cmap="viridis")
        for (i, j), value in np.ndenumerate(corr):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.5 else "white")
        ax.set(title=f"inner-{result['method']}: MCC {result['eval/mcc']:.3f}",
               xlabel="code (matched order)", ylabel="true latent")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def collect(workdir: str) -> tuple[list[dict], list[list[dict]]]:
    """(results, metric histories) of the finished runs below `workdir`, in the order of
    `METHODS`."""
    runs = [(METHODS.index(result["method"]), path, result,
             RunDir(path, chief=False).read_metrics())
            for path, _, result in finished_runs(workdir, "quickstart")
            if result.get("method") in METHODS]
    runs.sort(key=lambda run: run[:2])
    return [run[2] for run in runs], [run[3] for run in runs]


def report(workdir: str) -> str:
    """The table of the finished runs under `workdir` (a sweep), and their comparison figure
    in workdir/quickstart.png."""
    results, histories = collect(workdir)
    if not results:
        raise FileNotFoundError(f"no finished quickstart runs below {workdir}")
    plot(results, histories, os.path.join(workdir, "quickstart.png"))
    return format_table(results)


def prepare(config: dict) -> None:
    """The quickstart reads nothing (its data is generated from the seed); a Lasso run
    builds the C++ Lasso op here if it is not cached (once per machine and TensorFlow,
    15-90 s; the evaluation solves with it even when training is XLA-compiled), not inside
    its first step."""
    if config["method"] == "lasso":
        lasso_op.op_available()


EXPERIMENT = harness.Experiment(
    SCHEMA, CONSTRAINTS, prepare,
    build=lambda config, inputs, strategy: QuickstartRun(config, strategy),
    summarize=lambda result: format_table([result]), report=report)
