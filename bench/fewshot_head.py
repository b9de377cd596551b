"""Benchmark: the sparse SVM head's cost against the backbone's, per few-shot episode batch.

    python bench/fewshot_head.py [--quick] [--repeats 3] [--tol 1e-4] \
        [--out bench/results/fewshot_head]

For each backbone (small conv at 32x32; ResNet-12 at 32x32 and, without
--quick, at 84x84) and T 5-way 5-shot episodes with 15 queries per class:

- backbone: forward + backward of the T * (25 + 75) images in training mode
  (gradient of a scalar of the features w.r.t. the backbone's weights),
  as the meta-training step does (`train.meta`, not XLA-compiled);
- head: forward + backward of `heads.SparseSVMHead` on those features
  (lambda_max, the dual FISTA solve, the query logits, the implicit gradient
  w.r.t. the support and query features and the scale), for the sparse head
  (eps = 0.1, i.e. lam1 = 0.1 lambda_max) and the dense one (`heads.DenseSVMHead`,
  lam1 = 0), with the
  dual gap tolerance `--tol` (the head's default 1e-4; the CPU presets use 1e-3) and
  max_iter 1000; `svm_lambda_max` alone is timed too;
- the head's share: head / backbone (issue 8 asks <= 25%).

Features are those of the freshly initialised backbone in training mode.
Times are steady-state (after tracing and XLA compilation), best of
`--repeats`, on whatever CPU this runs on (shared machines give noisy numbers).
Writes a Markdown table and JSON.
"""

import argparse
import json
import os
import platform

import keras
import numpy as np
import tensorflow as tf

from sdis_tf import heads
from sdis_tf.solvers import svm_lambda_max
from sdis_tf.models.resnet12 import ResNet12
from sdis_tf.models.small_conv import SmallConv
from _timing import best_time, write_results

WAYS, SHOTS, QUERIES = 5, 5, 15


def bench_cell(name, backbone, side, T, repeats, rng, tol):
    n, q = WAYS * SHOTS, WAYS * QUERIES
    images = tf.constant(rng.standard_normal((T * (n + q), side, side, 3)), tf.float32)
    features = backbone(images, training=True)
    probe = tf.constant(rng.standard_normal(features.shape), tf.float32)

    @tf.function
    def backbone_step(images, probe):
        with tf.GradientTape() as tape:
            features = backbone(images, training=True)
            loss = tf.reduce_sum(features * probe)
        return tape.gradient(loss, backbone.trainable_variables)

    m = int(features.shape[-1])
    support = tf.reshape(features[:T * n], [T, n, m])
    query = tf.reshape(features[T * n:], [T, q, m])
    labels = tf.constant(np.tile(np.repeat(np.arange(WAYS), SHOTS), (T, 1)), tf.int32)
    query_labels = tf.constant(np.tile(np.repeat(np.arange(WAYS), QUERIES), (T, 1)), tf.int32)
    row = dict(backbone=name, side=side, T=T, m=m)
    row["backbone_s"] = best_time(lambda: [g.numpy() for g in backbone_step(images, probe)],
                                  repeats, warmup=True)

    onehot = tf.one_hot(labels, WAYS)
    lambda_max = tf.function(lambda support: svm_lambda_max(support, onehot))
    row["lambda_max_s"] = best_time(lambda: lambda_max(support).numpy(), repeats, warmup=True)
    for head_name, head in (("sparse", heads.SparseSVMHead(WAYS, 0.1, tol=tol)),
                            ("dense", heads.DenseSVMHead(WAYS, tol=tol))):
        head((support, labels, query))

        @tf.function
        def head_step(support, query, head=head):
            with tf.GradientTape() as tape:
                tape.watch([support, query])
                solution = head.solve((support, labels, query))
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    query_labels, solution.predictions))
            grads = tape.gradient(loss, [support, query, head.scale])
            used = tf.reduce_mean(tf.cast(solution.used_features, tf.float32))
            return grads, used, solution.certificate.iterations

        _, used, iterations = head_step(support, query)
        row[f"{head_name}_s"] = best_time(
            lambda: [g.numpy() for g in head_step(support, query)[0]], repeats, warmup=True)
        row[f"{head_name}_share"] = row[f"{head_name}_s"] / row["backbone_s"]
        row[f"{head_name}_features_used"] = float(used)
        row[f"{head_name}_iterations"] = float(np.mean(iterations.numpy()))
    return row


def markdown(rows, tol):
    lines = [f"Per batch of T 5-way {SHOTS}-shot episodes with {QUERIES} queries per class; "
             f"dual gap tolerance {tol:g} n, at most 1000 FISTA iterations; "
             f"steady-state seconds, best of the repeats; CPU: {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), shared with other jobs.", "",
             "| backbone | input | T | m | backbone fwd+bwd (s) | sparse head fwd+bwd (s) | "
             "share | of which lambda_max (s) | features used | FISTA iters | dense head (s) | "
             "share | FISTA iters |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['side']}x{r['side']} | {r['T']} | {r['m']} | "
            f"{r['backbone_s']:.3f} | {r['sparse_s']:.3f} | {100 * r['sparse_share']:.0f}% | "
            f"{r['lambda_max_s']:.3f} | "
            f"{100 * r['sparse_features_used']:.0f}% | {r['sparse_iterations']:.0f} | "
            f"{r['dense_s']:.3f} | {100 * r['dense_share']:.0f}% | {r['dense_iterations']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip ResNet-12 at 84x84")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-4, help="the heads' dual gap tolerance")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "fewshot_head"))
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    cells = [("small_conv", SmallConv(), 32, 8), ("resnet12", ResNet12(), 32, 2)]
    if not args.quick:
        cells.append(("resnet12", ResNet12(dropblock_size=5), 84, 1))
    rows = []
    for name, backbone, side, T in cells:
        rows.append(bench_cell(name, backbone, side, T, args.repeats, rng, args.tol))
        print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, markdown(rows, args.tol), {"tol": args.tol, "rows": rows})
    print(markdown(rows, args.tol))


if __name__ == "__main__":
    main()
