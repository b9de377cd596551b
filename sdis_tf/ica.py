"""The '+ ICA' baseline: linear ICA on top of a learned representation.

The paper (Fig. 4, "inner-Ridge + ICA") asks whether a representation that is
only *linearly* entangled (R close to 1, MCC low) can be disentangled post hoc by
linear ICA. The ICA is fitted on codes of samples from the training
distribution (correlated factors) and then applied, as a fixed linear map, to the
codes of the evaluation samples, whose MCC / R / DCI are then recomputed.

ICA model: codes x = A s + mu with independent, non-Gaussian sources s. FastICA
(Hyvarinen, 1999; scikit-learn, `fun="logcosh"`, `whiten="unit-variance"`,
parallel algorithm) estimates an unmixing matrix U `[c, m]` such that

    s_hat = (x - mu) @ U^T

has independent, unit-variance components on the training codes. Order and
signs of the components are arbitrary (MCC is invariant to both). Unlike the
authors' code, the fit is seeded, so results are reproducible.
"""

import dataclasses

import numpy as np
from sklearn.decomposition import FastICA


@dataclasses.dataclass(frozen=True)
class LinearICA:
    """A fitted linear ICA map `s_hat = (x - mean) @ unmixing.T`.

    Attributes:
      mean: `[m]` training mean of the codes.
      unmixing: `[c, m]` whitening followed by the ICA rotation.
      n_iter: FastICA iterations used.
      converged: whether FastICA met its tolerance before `max_iter`.
    """

    mean: np.ndarray
    unmixing: np.ndarray
    n_iter: int
    converged: bool

    def transform(self, codes):
        """Maps codes `[..., m]` to sources `[..., c]` (float64)."""
        codes = _as_codes("codes", codes, min_ndim=1)
        if codes.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"`codes` must have {self.mean.shape[0]} columns like the training "
                f"codes; received shape {codes.shape}.")
        return (codes - self.mean) @ self.unmixing.T


def _as_codes(name, codes, *, min_ndim):
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must have at least {min_ndim} dimension(s); received shape "
            f"{codes.shape}.")
    if not np.all(np.isfinite(codes)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return codes


def fit_ica(train_codes, *, seed=0, n_components=None, max_iter=1000, tol=1e-4):
    """Fits linear ICA on training-distribution codes.

    Args:
      train_codes: `[N, m]` codes of samples from the training distribution.
      seed: seed of FastICA's random initial rotation.
      n_components: number of sources c (default m).
      max_iter: FastICA iterations (scikit-learn's default is 200).
      tol: FastICA tolerance on the change of the unmixing matrix.

    Returns:
      `LinearICA`.
    """
    train_codes = _as_codes("train_codes", train_codes, min_ndim=2)
    if train_codes.ndim != 2:
        raise ValueError(
            f"`train_codes` must have shape [N, m]; received {train_codes.shape}.")
    n, m = train_codes.shape
    n_components = m if n_components is None else n_components
    if not 1 <= n_components <= m:
        raise ValueError(
            f"`n_components` must be in [1, {m}]; received {n_components}.")
    if n <= m:
        raise ValueError(
            f"`train_codes` needs more samples than columns; received shape {(n, m)}.")
    constant = np.ptp(train_codes, axis=0) <= 1e-12 * np.max(np.abs(train_codes), axis=0)
    if np.any(constant):
        raise ValueError(
            f"`train_codes` has constant columns {np.flatnonzero(constant).tolist()}: "
            "they cannot be whitened.")
    ica = FastICA(n_components=n_components, whiten="unit-variance", fun="logcosh",
                  max_iter=max_iter, tol=tol, random_state=seed)
    ica.fit(train_codes)
    return LinearICA(mean=ica.mean_.copy(), unmixing=ica.components_.copy(),
                     n_iter=int(ica.n_iter_), converged=bool(ica.n_iter_ < max_iter))


def ica_baseline(train_codes, eval_codes, **kwargs):
    """Fits ICA on `train_codes [N, m]`, returns the sources of `eval_codes [..., m]`.

    Keyword arguments go to `fit_ica`.
    """
    eval_codes = _as_codes("eval_codes", eval_codes, min_ndim=1)
    if eval_codes.shape[-1] != np.shape(train_codes)[-1]:
        raise ValueError(
            "`eval_codes` must have as many columns as `train_codes`; received "
            f"shapes {eval_codes.shape} and {np.shape(train_codes)}.")
    return fit_ica(train_codes, **kwargs).transform(eval_codes)
