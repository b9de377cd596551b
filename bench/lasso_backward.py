"""Benchmark: the Lasso's implicit backward solve, conjugate gradient without preconditioner,
with the block-Jacobi one and with the Woodbury inverse of the support Hessian, and the C++ op.

    python bench/lasso_backward.py [--repeats 3] [--out bench/results/lasso_backward]

For each (T, n, m, k, dtype, active): random tasks with that fraction of active groups
(0.1: a sparse support; 1.0: the support exceeds n, a near-singular Hessian) and 10% noise,
lam = 0.1 lambda_max, W from `solvers.lasso`; the system is the backward pass's
(the support-restricted Hessian of `solvers.lasso_grad.support_hessian_matvec`) with a
random right-hand side on the support. Reports the relative residual
||H x - c|| / ||c|| after 5, 10, 20 and 40 iterations, and the wall time of the
solve (preconditioner set-up included; at most m k iterations, stopping at rtol 1e-6
in float32, 1e-12 in float64) in a plain `tf.function`, best of `--repeats`; and the same
for the C++ op `lasso_op.lasso_implicit_vjp` (Woodbury per task in double, refined; its time
includes the pull-back to dL/dX, dL/dY, dL/dlam that it computes in the same pass), which
`solvers.lasso_implicit` uses on the op backend. (On the XLA backend it caps Woodbury PCG at
10 iterations and uses it only when no support in the batch exceeds 192 features, outside
XLA, whose CPU Cholesky and LU are 10-20x slower than TensorFlow's.
Woodbury PCG works on the supports gathered into s = largest support rows per task.)
"""

import argparse
import json
import os
import platform

import numpy as np
import tensorflow as tf

from sdis_tf import implicit, solvers
from sdis_tf.solvers import lasso_op
from sdis_tf.solvers.lasso_grad import (support_hessian_block_inverse, support_hessian_inverse,
                                        support_hessian_matvec)
from _timing import best_time, write_results

# (T, n, m, k, dtype, fraction of active groups in the true W)
CELLS = ((512, 50, 64, 5, "float32", 0.1), (64, 50, 640, 5, "float32", 0.1),
         (64, 50, 64, 1, "float32", 0.1), (64, 50, 64, 5, "float64", 0.1),
         (64, 50, 64, 5, "float64", 1.0), (512, 50, 64, 5, "float32", 1.0))
CHECKPOINTS = (5, 10, 20, 40)


def bench_cell(T, n, m, k, dtype, active, repeats):
    dtype = tf.as_dtype(dtype)
    rng = np.random.default_rng(0)
    X = tf.constant(rng.standard_normal((T, n, m)), dtype)
    W_true = rng.standard_normal((T, m, k)) * (rng.random((T, m, 1)) < active)
    Y = tf.matmul(X, tf.constant(W_true, dtype)) + 0.1 * tf.constant(
        rng.standard_normal((T, n, k)), dtype)
    lam = 0.1 * solvers.lasso_lambda_max(X, Y)
    W = solvers.lasso(X, Y, lam, tol=1e-7 if dtype == tf.float64 else 1e-5,
                      max_epochs=2000).W
    support = tf.cast(tf.norm(W, axis=-1, keepdims=True) > 0, dtype)
    rhs = tf.constant(rng.standard_normal((T, m, k)), dtype) * support
    matvec = support_hessian_matvec(W, X, lam)
    row = dict(T=T, n=n, m=m, k=k, dtype=dtype.name, active=active,
               support=float(tf.reduce_mean(support)))
    for name, preconditioner in (("cg", None), ("pcg", support_hessian_block_inverse),
                                 ("woodbury", support_hessian_inverse)):
        # The preconditioner is built inside the timed function, as the backward pass does.
        solve = tf.function(
            lambda rhs, max_iter, preconditioner=preconditioner: implicit.conjugate_gradient(
                matvec, rhs, max_iter=max_iter,
                precondition=preconditioner and preconditioner(W, X, lam)))
        for iterations in CHECKPOINTS:
            x = solve(rhs, tf.constant(iterations))
            row[f"{name}_residual_{iterations}"] = float(tf.norm(matvec(x) - rhs) / tf.norm(rhs))
        row[f"{name}_s"] = best_time(lambda: solve(rhs, tf.constant(m * k)).numpy(), repeats,
                                     warmup=True)
    if lasso_op.op_available():
        solve = tf.function(lambda rhs: lasso_op.lasso_implicit_vjp(X, Y, W, lam, rhs).U)
        row["op_residual"] = float(tf.norm(matvec(solve(rhs)) - rhs) / tf.norm(rhs))
        row["op_s"] = best_time(lambda: solve(rhs).numpy(), repeats, warmup=True)
    return row


METHODS = (("cg", "CG"), ("pcg", "block-Jacobi PCG"), ("woodbury", "Woodbury PCG"))


def markdown(rows):
    lines = [f"Lasso backward solve: CG, block-Jacobi PCG and Woodbury PCG (the exact inverse "
             f"of the support Hessian, up to rounding, as preconditioner); CPU: "
             f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}). "
             "Residuals ||Hx - c|| / ||c|| after 5 / 10 / 20 / 40 iterations; time of the full "
             "solve, preconditioner set-up included; the C++ op: residual and time (of the solve "
             "and the pull-back).", "",
             "| T | n | m | k | dtype | active | support | "
             + " | ".join(f"{label} residuals" for _, label in METHODS) + " | "
             + " | ".join(f"{label} (ms)" for _, label in METHODS)
             + " | C++ op residual | C++ op (ms) |",
             "|" + "---|" * (9 + 2 * len(METHODS))]
    for r in rows:
        residuals = lambda name: " / ".join(f"{r[f'{name}_residual_{i}']:.0e}"
                                            for i in CHECKPOINTS)
        lines.append(f"| {r['T']} | {r['n']} | {r['m']} | {r['k']} | {r['dtype']} | "
                     f"{r['active']} | {100 * r['support']:.0f}% | "
                     + " | ".join(residuals(name) for name, _ in METHODS) + " | "
                     + " | ".join(f"{1e3 * r[f'{name}_s']:.1f}" for name, _ in METHODS)
                     + (f" | {r['op_residual']:.0e} | {1e3 * r['op_s']:.1f} |" if "op_s" in r
                        else " | - | - |"))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "lasso_backward"))
    args = parser.parse_args()
    rows = []
    for cell in CELLS:
        rows.append(bench_cell(*cell, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, markdown(rows), rows)
    print(markdown(rows))


if __name__ == "__main__":
    main()
