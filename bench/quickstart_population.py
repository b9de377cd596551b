"""Why inner-Lasso MCC drops with latent correlation: the population outer loss.

For linear representations z_hat = A z (rows scaled to unit variance, as
TaskBatchNorm does) the quickstart's outer loss in the limit of infinitely many
noiseless samples is, per task w,

    L(A, w) = 1/2 (v - v*)^T C (v - v*),   C = A Sigma A^T,  v* = A^{-T} w,
    v = argmin_v 1/2 v^T C v - v^T b + lam ||v||_1,  b = A Sigma w,
    lam = eps * max_j |b_j|                               (LassoHead(eps)).

Along the one-parameter family A_c = I - c (1 1^T - I) (each code = its latent
minus c times the others) this prints the minimiser c* of E_w L(A_c, w) over
Bernoulli(0.5)-Gaussian task weights, and the MCC of A_c* on the training
distribution and on factorised latents. With rho = 0 the disentangled c = 0 is
optimal; with rho = 0.9 the Lasso's shrinkage bias favours a partly
decorrelating mixture (c* > 0), less so as eps grows.

    python bench/quickstart_population.py      # numpy only, about a minute on 1 core
"""

import numpy as np

M, NUM_TASKS, EPOCHS = 6, 400, 200


def task_weights(rng):
    support = rng.random((NUM_TASKS, M)) < 0.5
    empty = ~support.any(axis=1)
    support[empty, rng.integers(0, M, empty.sum())] = True
    return rng.standard_normal((NUM_TASKS, M)) * support


def population_lasso(C, B, lam):
    """Coordinate descent on 1/2 v^T C v - v^T b_t + lam_t ||v||_1 for all tasks: B [T, m]."""
    V = np.zeros_like(B)
    for _ in range(EPOCHS):
        for j in range(M):
            r = B[:, j] - V @ C[j] + C[j, j] * V[:, j]
            V[:, j] = np.sign(r) * np.maximum(np.abs(r) - lam, 0.0) / C[j, j]
    return V


def outer_loss(A, sigma, W, eps):
    A = A / np.sqrt(np.diag(A @ sigma @ A.T))[:, None]
    C = A @ sigma @ A.T
    B = W @ sigma @ A.T
    D = population_lasso(C, B, eps * np.abs(B).max(axis=1)) - W @ np.linalg.inv(A)
    return 0.5 * np.mean(np.einsum("ti,ij,tj->t", D, C, D))


def mcc_of(A, sigma):
    """Mean |corr(z_i, z_hat_i)| under latent covariance sigma (A_c keeps the matching)."""
    sd_hat = np.sqrt(np.diag(A @ sigma @ A.T))
    return np.mean(np.abs(np.diag(A @ sigma)) / sd_hat / np.sqrt(np.diag(sigma)))


def main():
    W = task_weights(np.random.default_rng(0))
    off_diagonal = np.ones((M, M)) - np.eye(M)
    grid = np.arange(-0.04, 0.165, 0.01)
    for rho in (0.0, 0.9):
        sigma = (1 - rho) * np.eye(M) + rho
        for eps in (0.05, 0.1, 0.2, 0.3, 0.5):
            losses = [outer_loss(np.eye(M) - c * off_diagonal, sigma, W, eps) for c in grid]
            c_star = grid[int(np.argmin(losses))]
            A = np.eye(M) - c_star * off_diagonal
            print(f"rho={rho} eps={eps}: c*={c_star:+.2f}  MCC(train dist)={mcc_of(A, sigma):.3f}"
                  f"  MCC(factorised)={mcc_of(A, np.eye(M)):.3f}", flush=True)


if __name__ == "__main__":
    main()
