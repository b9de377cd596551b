"""Time to the duality-gap target of both Lasso backends on one problem size, no epoch cap.

    python bench/lasso_backends.py T n m k [--tol 1e-6]

Complements bench/solvers_op.py, whose XLA runs stop at an epoch cap on large problems:
here both backends run to the target (gap <= tol * ||y||^2 / (2n) for every task) inside a
`tf.function` (jit_compile for XLA), X, Y standard normal, lam = 0.1 lam_max, float64.
Prints the first call (tracing, compilation) and the steady-state time.
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from sdis_tf import solvers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("T", "n", "m", "k"):
        parser.add_argument(name, type=int)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.T, args.n, args.m))
    Y = rng.standard_normal((args.T, args.n, args.k))
    lam = 0.1 * solvers.lasso_lambda_max(X, Y).numpy()
    X, Y, lam = map(tf.constant, (X, Y, lam))
    for backend in ("op", "xla"):
        solve = tf.function(
            lambda X, Y, lam: solvers.lasso(X, Y, lam, tol=args.tol, max_epochs=100_000,
                                            backend=backend),
            jit_compile=backend == "xla")
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = solve(X, Y, lam)
            result.W.numpy()
            times.append(time.perf_counter() - start)
        print(f"{backend}: first call {times[0]:.2f} s, steady {times[1]:.3f} s "
              f"({1e3 * times[1] / args.T:.2f} ms per problem), max epochs "
              f"{int(result.epochs.numpy().max())}, all converged "
              f"{bool(result.converged.numpy().all())}", flush=True)


if __name__ == "__main__":
    main()
