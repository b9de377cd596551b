"""Benchmark: batched Lasso / group Lasso vs scikit-learn and skglm, forward and backward.

    python bench/solvers.py [--quick] [--out bench/results/solvers]

For each (T, m, k) with n = 50 and lam = 0.1 lam_max, every solver is asked for
the same duality-gap target, gap <= tol * ||y||^2 / (2n) per task (scikit-learn's
own criterion is the same test with tol/2), and the achieved worst gap is
measured with sdis_tf's certificate for all of them. Both of our backends are
timed: the compiled TensorFlow solver (`backend="xla"`, what runs inside
`jit_compile=True` training steps and on TPU) and the C++ working-set op
(`backend="op"`, what `backend="auto"` picks outside XLA), if it is built. Times
are steady-state (after compilation, called from a tf.function; an eager call adds
a few ms of Python-side checks and dispatch), best of `--repeats`; scikit-learn and
skglm (each call a loop over the T tasks) best of `--ref_repeats`. Writes a
Markdown table and JSON.

The error contract's check (README, "Error contract") is timed on its own, compiled as
each backend runs it, and reported as a fraction of that backend's solve: on the XLA
backend the per-task finiteness of X, Y, W0 and lam and the masks of the results; on the
op backend the mask that turns a negative lam into NaN (the kernel checks the column norms
it computes anyway). Each is repeated CHECK_REPEATS times inside one function, each
repetition depending on the previous one (so that nothing is hoisted or merged), and the
time divided by CHECK_REPEATS: the cost inside a solve, without a function call's.
"""

import argparse
import json
import os
import platform
import sys
import warnings

import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, MultiTaskLasso

from sdis_tf import solvers

from sdis_tf.solvers import inputs, lasso_op
from _timing import best_time, write_results

try:
    import skglm
except ImportError:  # optional
    skglm = None

BACKENDS = ("xla", "op") if lasso_op.op_available() else ("xla",)


def loop_solve(estimator, X, Y, lam):
    """A per-task scikit-learn-style estimator looped over the batch -> W [T, m(, k)]."""
    return np.stack([estimator(lam_t).fit(X_t, Y_t).coef_.T for X_t, Y_t, lam_t in zip(X, Y, lam)])


CHECK_REPEATS = 100


@tf.function(jit_compile=True)
def xla_checks(X, Y, lam, W, gap):
    """CHECK_REPEATS times what the XLA backend adds to a solve for the error contract
    (`lasso._solve`); each on X scaled by a factor the previous one leaves at 1."""
    def body(i, scale):
        valid = inputs.valid_tasks(X * scale, Y, W, lam, nonnegative=(lam,))
        W_out = inputs.where_tasks(valid & tf.math.is_finite(gap), W)
        certified = inputs.finite_tasks(W_out) & tf.math.is_finite(inputs.where_tasks(valid, gap))
        return i + 1, tf.where(tf.reduce_all(certified), scale, scale + 1)
    return tf.while_loop(lambda i, scale: i < CHECK_REPEATS, body, (0, tf.ones([], X.dtype)))[1]


@tf.function
def op_checks(lam):
    """CHECK_REPEATS times what the op backend adds to a solve for the error contract
    (`lasso.lasso`)."""
    for _ in range(CHECK_REPEATS):
        lam = tf.where(lam >= 0, lam, tf.constant(float("nan"), lam.dtype))
    return lam


def bench_cell(T, m, k, n, tol, repeats, ref_repeats, rng):
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    worst_gap = lambda W: float(np.max(solvers.lasso_gap(W, X, Y, lam).numpy()))
    Xt, Yt, lamt = tf.constant(X), tf.constant(Y), tf.constant(lam)
    row = dict(T=T, n=n, m=m, k=k)

    for backend in BACKENDS:
        forward = tf.function(
            lambda X, Y, lam: solvers.lasso(X, Y, lam, tol=tol, max_epochs=100_000,
                                            backend=backend),
            jit_compile=backend == "xla")
        result = forward(Xt, Yt, lamt)  # compiles
        row[f"{backend}_s"] = best_time(lambda: forward(Xt, Yt, lamt).W.numpy(), repeats)
        row[f"{backend}_gap"] = worst_gap(result.W.numpy())
        row[f"{backend}_max_epochs"] = int(np.max(result.epochs.numpy()))
    check_args = (Xt, tf.reshape(Yt, [T, n, k]), lamt, tf.reshape(result.W, [T, m, k]),
                  result.gap)
    row["xla_check_s"] = best_time(lambda: xla_checks(*check_args).numpy(), repeats,
                                   warmup=True) / CHECK_REPEATS
    row["op_check_s"] = best_time(lambda: op_checks(lamt).numpy(), repeats,
                                  warmup=True) / CHECK_REPEATS

    sk_class = Lasso if k == 1 else MultiTaskLasso
    sk = lambda a: sk_class(alpha=a, fit_intercept=False, tol=tol / 2, max_iter=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        row["sklearn_s"] = best_time(lambda: loop_solve(sk, X, Y, lam), ref_repeats)
        row["sklearn_gap"] = worst_gap(loop_solve(sk, X, Y, lam))
        if skglm is not None:
            sg_class = skglm.Lasso if k == 1 else skglm.MultiTaskLasso
            sg = lambda a: sg_class(alpha=a, fit_intercept=False, tol=tol * 1e-2, max_iter=1000)
            loop_solve(sg, X[:1], Y[:1], lam[:1])  # numba compilation
            row["skglm_s"] = best_time(lambda: loop_solve(sg, X, Y, lam), ref_repeats)
            row["skglm_gap"] = worst_gap(loop_solve(sg, X, Y, lam))

    def gradient(diff, backend="xla"):
        @tf.function(jit_compile=backend == "xla")
        def fn(X):
            with tf.GradientTape() as tape:
                tape.watch(X)
                if diff == "implicit":
                    W, _ = solvers.lasso_implicit(X, Yt, lamt, tol=tol, max_epochs=100_000,
                                                  backend=backend)
                else:
                    W = solvers.lasso_unrolled(X, Yt, lamt, epochs=row["xla_max_epochs"])
                loss = tf.reduce_sum(tf.square(W))
            return tape.gradient(loss, X)
        fn(Xt)
        return best_time(lambda: fn(Xt).numpy(), repeats)

    for backend in BACKENDS:
        row[f"fwd_bwd_implicit_{backend}_s"] = gradient("implicit", backend)
    # Unrolling stores every coordinate update ([T, m, k] each): skip cells that need > 2 GB.
    if row["xla_max_epochs"] * m * T * m * k * 8 < 2e9:
        row["fwd_bwd_unroll_s"] = gradient("unroll")
    return row


def markdown(rows, tol, command):
    columns = [("T", "T"), ("m", "m"), ("k", "k")]
    columns += [(f"{b}_s", f"{b} (s)") for b in BACKENDS]
    columns += [("sklearn_s", "sklearn (s)"), ("skglm_s", "skglm (s)")]
    columns += [(f"speedup_{b}", f"sklearn / {b}") for b in BACKENDS]
    columns += [("gaps", "worst gap " + " / ".join((*BACKENDS, "sklearn", "skglm")))]
    columns += [(f"fwd_bwd_implicit_{b}_s", f"fwd+bwd implicit {b} (s)") for b in BACKENDS]
    columns += [("fwd_bwd_unroll_s", "fwd+bwd unroll xla (s)")]
    columns += [(f"check_{b}", f"contract check / {b} solve") for b in BACKENDS]
    fmt = lambda v: "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = []
    for r in rows:
        r = dict(r)
        for b in BACKENDS:
            r[f"speedup_{b}"] = f"{r['sklearn_s'] / r[f'{b}_s']:.1f}x"
            r[f"check_{b}"] = f"{100 * r[f'{b}_check_s'] / r[f'{b}_s']:.2f}%"
        r["gaps"] = " / ".join(f"{r[key]:.1e}" if r.get(key) is not None else "n/a"
                               for key in [f"{b}_gap" for b in BACKENDS] + ["sklearn_gap",
                                                                             "skglm_gap"])
        lines.append("| " + " | ".join(fmt(r.get(key)) for key, _ in columns) + " |")
    head = ("| " + " | ".join(title for _, title in columns) + " |\n|"
            + "---|" * len(columns) + "\n")
    return (f"`{command}`: n = 50, lam = 0.1 lam_max, float64, target gap tol = {tol:g} x "
            f"||y||^2/(2n); "
            f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
            f"TF {tf.__version__}. xla = `tf.function(jit_compile=True)` around "
            f"`solvers.lasso(backend='xla')`; op = the C++ kernel (`backend='op'`) in a "
            f"`tf.function`.\n\n" + head + "\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (smoke test)")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for our solvers")
    parser.add_argument("--ref_repeats", type=int, default=3,
                        help="best of N for scikit-learn and skglm (each call loops over T tasks)")
    parser.add_argument("--T", type=int, nargs="+", default=[8, 64, 512], help="batch sizes")
    parser.add_argument("--m", type=int, nargs="+", default=[6, 64, 640], help="feature counts")
    parser.add_argument("--out", default="bench/results/solvers")
    args = parser.parse_args()
    grid = [(8, 6, 1)] if args.quick else [
        (T, m, k) for T in args.T for m in args.m for k in (1, 5)]
    rng = np.random.default_rng(0)
    rows = []
    for T, m, k in grid:
        rows.append(bench_cell(T, m, k, 50, args.tol, args.repeats, args.ref_repeats, rng))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows, args.tol, " ".join(["python", *sys.argv]))
    write_results(args.out, table, rows)
    print(table)


if __name__ == "__main__":
    main()
