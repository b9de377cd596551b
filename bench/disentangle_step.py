"""Cost of the bilevel step of the disentanglement experiment, and input-pipeline idle time.

    python bench/disentangle_step.py                      # 64x64 and 32x32, lasso, 30 steps
    python bench/disentangle_step.py --image_sizes=32 --steps=20 --methods=lasso,ridge
    python bench/disentangle_step.py --image_sizes=64 --jit_compile=true,false \
        --precisions=float32,mixed_bfloat16

For each image size and method, on the experiment's own objects
(sdis_tf.experiments.disentangle, configs/disentangle.py with T = 8, n = 50):

- bilevel: the training step (`DisentangleTrainer.train_on_batch`, one
  tf.function, the loss and gradient XLA-compiled or not: `train.jit_compile`)
  on one fixed batch, for each `model.precision`;
- supervised: the same encoder, batch and optimizer, regressing the true
  latents z directly, loss 1/2 mean ||f(x) - z||^2, also one tf.function with
  the same loss-and-gradient split and the same compilation;
- ratio = bilevel / supervised (target <= 1.5);
- idle fraction: over `steps` steps of the real training loop (tf.data
  pipeline with prefetch -> train step), the time spent waiting for the next
  batch divided by the total time (target < 5%).

Times are medians over `steps` steps after warm-up. Results go to
bench/results/disentangle_step.{json,md}. The machine is shared: say so
when quoting the numbers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from sdis_tf.config_files import load_config  # noqa: E402
from sdis_tf.data import pipeline  # noqa: E402
from sdis_tf.data.tasks import TaskBatch  # noqa: E402
from sdis_tf.experiments import disentangle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIZES = flags.DEFINE_list("image_sizes", ["64", "32"], "Image sizes to measure.")
_METHODS = flags.DEFINE_list("methods", ["lasso"], "Methods to measure.")
_JIT = flags.DEFINE_list("jit_compile", ["true"], "train.jit_compile values to measure.")
_PRECISIONS = flags.DEFINE_list("precisions", ["float32"], "model.precision values to measure.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "bench", "results"), "Output folder.")


def _config(method: str, image_size: int, jit_compile: bool, precision: str):
    config = load_config(os.path.join(ROOT, "configs", "disentangle.py"), "cpu").to_dict()
    config["method"] = method
    config["data"]["image_size"] = image_size
    config["train"]["jit_compile"] = jit_compile
    config["model"]["precision"] = precision
    config["eval"].update(grid_points=16, train_points=16, num_tasks=1)
    return config


def _median_seconds(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _block(metrics):
    return {k: float(v) for k, v in metrics.items()}


def _supervised_step(experiment, jit_compile: bool):
    """One tf.function step regressing z with the same encoder and optimizer."""
    encoder, optimizer = experiment.encoder, experiment.optimizer

    def loss_and_grads(trainable, non_trainable, x, z):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            codes, state = encoder.stateless_call(trainable, non_trainable, x, training=True)
            loss = 0.5 * tf.reduce_mean(tf.square(codes - z))
        return loss, tape.gradient(loss, trainable), state

    compiled = tf.function(loss_and_grads, jit_compile=jit_compile)

    @tf.function
    def step(x, z):
        variables = encoder.trainable_variables
        loss, grads, state = compiled([v.value for v in variables],
                                      [v.value for v in encoder.non_trainable_variables], x, z)
        optimizer.apply_gradients(zip(grads, variables))
        for variable, value in zip(encoder.non_trainable_variables, state):
            variable.assign(value)
        return {"loss": loss}

    return step


def measure(method: str, image_size: int, jit_compile: bool, precision: str, steps: int,
            warmup: int) -> dict:
    config = _config(method, image_size, jit_compile, precision)
    experiment = disentangle.DisentangleRun(config, tf.distribute.get_strategy())
    raw = next(iter(pipeline.task_batches(
        experiment.source, num_tasks=8, num_samples=50, latents=experiment.latents,
        distribution=disentangle.distribution_name(config["data"]), num_steps=1)))
    batch = TaskBatch(disentangle.downsample(raw["x"], image_size), raw["y"])
    z = raw["z"]  # the true latents of the batch's images
    bilevel = _median_seconds(lambda: experiment.trainer.train_on_batch(batch), steps, warmup)
    supervised_step = _supervised_step(experiment, jit_compile)
    supervised = _median_seconds(lambda: supervised_step(batch.x_support, z), steps, warmup)
    # The real loop: pipeline + step, counting the wait for each batch.
    for step in range(warmup):
        experiment.train_step(step)
    waits, start = 0.0, time.perf_counter()
    for step in range(warmup, warmup + steps):
        waits += float(experiment.train_step(step)["input_wait"])
    total = time.perf_counter() - start
    return {"method": method, "image_size": image_size, "jit_compile": jit_compile,
            "precision": precision, "bilevel_s": bilevel,
            "supervised_s": supervised, "ratio": bilevel / supervised,
            "loop_step_s": total / steps, "idle_fraction": waits / total}


def main(argv):
    del argv
    flag_bool = {"true": True, "false": False}
    rows = [measure(method, int(size), flag_bool[jit.lower()], precision, _STEPS.value,
                    _WARMUP.value)
            for size in _SIZES.value for method in _METHODS.value for jit in _JIT.value
            for precision in _PRECISIONS.value]
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
            "tensorflow": tf.__version__, "steps": _STEPS.value, "rows": rows}
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "disentangle_step.json"), "w") as f:
        json.dump(info, f, indent=2)
    lines = ["# Disentanglement step: bilevel vs supervised, input-pipeline idle time", "",
             f"`python bench/disentangle_step.py --image_sizes={','.join(_SIZES.value)} "
             f"--methods={','.join(_METHODS.value)} --jit_compile={','.join(_JIT.value)} "
             f"--precisions={','.join(_PRECISIONS.value)} --steps={_STEPS.value}`; "
             f"{info['machine']}, "
             f"TF {tf.__version__}; T = 8 tasks x n = 50 images; medians over {_STEPS.value} "
             "steps.",
             "", "| method | image | XLA | precision | bilevel step | supervised step | ratio | "
             "loop step | idle |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['image_size']}x{r['image_size']} | "
                     f"{'yes' if r['jit_compile'] else 'no'} | {r['precision']} | "
                     f"{1e3 * r['bilevel_s']:.0f} ms | {1e3 * r['supervised_s']:.0f} ms | "
                     f"{r['ratio']:.2f} | {1e3 * r['loop_step_s']:.0f} ms | "
                     f"{100 * r['idle_fraction']:.1f}% |")
    with open(os.path.join(_OUT.value, "disentangle_step.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
