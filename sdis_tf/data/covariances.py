"""The latent covariances of the paper: unit variances, one correlation parameter rho.

    iid             Sigma = I_m                          (rho unused)
    equicorrelated  Sigma = (1 - rho) I_m + rho 1 1^T    positive definite for -1/(m-1) < rho < 1
    toeplitz        Sigma_ij = rho^|i - j|               positive definite for -1 < rho < 1

The synthetic tasks (`sdis_tf.data.synthetic`), the 3D Shapes latent distributions
p_{alpha,rho} (`sdis_tf.data.latents`) and Figure 1 (`experiments.synthetic_regression`)
all draw from this family. The authors' code names the last two `harder_gauss` and
`gauss` (its `z_dist` strings `harder_gauss_<rho>`, `gauss_<rho>`); `covariance`
accepts those names too (`ALIASES`).
"""

from __future__ import annotations

import numpy as np

KINDS = ("iid", "equicorrelated", "toeplitz")
ALIASES = {"harder_gauss": "equicorrelated", "gauss": "toeplitz"}
"""The authors' names of the kinds."""


def canonical(kind: str) -> str:
    """The name in `KINDS` of `kind` (a kind or an alias).

    Raises:
      ValueError: `kind` is neither; the message lists the allowed names.
    """
    name = ALIASES.get(kind, kind)
    if name not in KINDS:
        allowed = ", ".join(repr(k) for k in KINDS + tuple(ALIASES))
        raise ValueError(f"covariance kind must be one of {allowed}; got {kind!r}")
    return name


def covariance(kind: str, dim: int, rho: float = 0.0) -> np.ndarray:
    """Sigma [dim, dim] (float64) of `kind` (module docstring) with correlation `rho`.

    Raises:
      ValueError: unknown kind, dim < 1, or rho outside the kind's positive-definite range.
    """
    kind = canonical(kind)
    if dim < 1:
        raise ValueError(f"dim must be >= 1; got {dim}")
    if kind == "iid" or dim == 1:
        return np.eye(dim)
    lower = -1.0 / (dim - 1) if kind == "equicorrelated" else -1.0
    if not lower < rho < 1.0:
        raise ValueError(f"rho must lie in ({lower:g}, 1) for {kind!r} with dim = {dim}; "
                         f"got {rho}")
    if kind == "equicorrelated":
        return (1.0 - rho) * np.eye(dim) + rho * np.ones((dim, dim))
    lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
    return rho ** lags.astype(np.float64)
