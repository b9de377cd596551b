"""Benchmark: batched Lasso / group Lasso vs scikit-learn and skglm, forward and backward.

    python bench/solvers.py [--quick] [--out bench/results/solvers]

For each (T, m, k) with n = 50 and lam = 0.1 lam_max, every solver is asked for
the same duality-gap target, gap <= tol * ||y||^2 / (2n) per task (scikit-learn's
own criterion is the same test with tol/2), and the achieved worst gap is
measured with sdis_tf's certificate for all of them. Times are steady-state
(after XLA compilation, called from a tf.function as in training; an eager call
adds a few ms of Python-side checks and dispatch), best of `--repeats`. Writes a Markdown table and JSON.
"""

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, MultiTaskLasso

from sdis_tf import implicit, solvers

try:
    import skglm
except ImportError:  # optional
    skglm = None


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def loop_solve(estimator, X, Y, lam):
    """A per-task scikit-learn-style estimator looped over the batch -> W [T, m(, k)]."""
    return np.stack([estimator(lam_t).fit(X_t, Y_t).coef_.T for X_t, Y_t, lam_t in zip(X, Y, lam)])


def bench_cell(T, m, k, n, tol, repeats, rng):
    X = rng.standard_normal((T, n, m))
    Y = rng.standard_normal((T, n) if k == 1 else (T, n, k))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    worst_gap = lambda W: float(np.max(solvers.lasso_gap(W, X, Y, lam).numpy()))
    Xt, Yt, lamt = tf.constant(X), tf.constant(Y), tf.constant(lam)
    row = dict(T=T, n=n, m=m, k=k)

    forward = tf.function(lambda X, Y, lam: solvers.lasso(X, Y, lam, tol=tol, max_epochs=100_000))
    result = forward(Xt, Yt, lamt)  # compiles
    row["ours_s"] = best_time(lambda: forward(Xt, Yt, lamt).W.numpy(), repeats)
    row["ours_gap"] = worst_gap(result.W.numpy())
    row["ours_max_epochs"] = int(np.max(result.epochs.numpy()))

    sk_class = Lasso if k == 1 else MultiTaskLasso
    sk = lambda a: sk_class(alpha=a, fit_intercept=False, tol=tol / 2, max_iter=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        row["sklearn_s"] = best_time(lambda: loop_solve(sk, X, Y, lam), 1)
        row["sklearn_gap"] = worst_gap(loop_solve(sk, X, Y, lam))
        if skglm is not None:
            sg_class = skglm.Lasso if k == 1 else skglm.MultiTaskLasso
            sg = lambda a: sg_class(alpha=a, fit_intercept=False, tol=tol * 1e-2, max_iter=1000)
            loop_solve(sg, X[:1], Y[:1], lam[:1])  # numba compilation
            row["skglm_s"] = best_time(lambda: loop_solve(sg, X, Y, lam), 1)
            row["skglm_gap"] = worst_gap(loop_solve(sg, X, Y, lam))

    def gradient(diff):
        @tf.function(jit_compile=True)
        def fn(X):
            with tf.GradientTape() as tape:
                tape.watch(X)
                if diff == "implicit":
                    W, _ = implicit.lasso_implicit(X, Yt, lamt, tol=tol, max_epochs=100_000)
                else:
                    W = solvers.lasso_unrolled(X, Yt, lamt, epochs=row["ours_max_epochs"])
                loss = tf.reduce_sum(tf.square(W))
            return tape.gradient(loss, X)
        fn(Xt)
        return best_time(lambda: fn(Xt).numpy(), repeats)

    row["fwd_bwd_implicit_s"] = gradient("implicit")
    # Unrolling stores every coordinate update ([T, m, k] each): skip cells that need > 2 GB.
    if row["ours_max_epochs"] * m * T * m * k * 8 < 2e9:
        row["fwd_bwd_unroll_s"] = gradient("unroll")
    return row


def markdown(rows, tol):
    head = ("| T | m | k | ours (s) | sklearn (s) | speed-up | skglm (s) | worst gap ours / sklearn / skglm "
            "| fwd+bwd implicit (s) | fwd+bwd unroll (s) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    fmt = lambda v: "n/a" if v is None else f"{v:.4g}"
    lines = [f"| {r['T']} | {r['m']} | {r['k']} | {fmt(r['ours_s'])} | {fmt(r['sklearn_s'])} | "
             f"{r['sklearn_s'] / r['ours_s']:.1f}x | {fmt(r.get('skglm_s'))} | "
             f"{r['ours_gap']:.1e} / {r['sklearn_gap']:.1e} / {fmt(r.get('skglm_gap'))} | "
             f"{fmt(r['fwd_bwd_implicit_s'])} | {fmt(r.get('fwd_bwd_unroll_s'))} |" for r in rows]
    return (f"n = 50, lam = 0.1 lam_max, float64, target gap tol = {tol:g} x ||y||^2/(2n); "
            f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
            f"TF {tf.__version__}.\n\n" + head + "\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (smoke test)")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/solvers")
    args = parser.parse_args()
    grid = [(8, 6, 1)] if args.quick else [
        (T, m, k) for T in (8, 64, 512) for m in (6, 64, 640) for k in (1, 5)]
    rng = np.random.default_rng(0)
    rows = []
    for T, m, k in grid:
        rows.append(bench_cell(T, m, k, 50, args.tol, args.repeats, rng))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    table = markdown(rows, args.tol)
    for suffix, text in ((".md", table), (".json", json.dumps(rows, indent=1))):
        tmp = args.out + suffix + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out + suffix)
    print(table)


if __name__ == "__main__":
    main()
