"""Disentanglement metrics: MCC, multiple correlation R and DCI.

All metrics compare true factors `z [..., N, k]` with learned codes
`z_hat [..., N, m]` (N samples in the second-to-last axis, any matching leading
batch axes). They compute in float64 with numpy/scipy, return a Python float for
unbatched inputs and an array of the batch shape otherwise, and are invariant to
the order of the samples. Conventions follow the paper (Synergies between
disentanglement and sparsity, Lachapelle et al., 2023, Sec. 5 and App. D.2.7):

- `mcc`: mean over matched pairs of |Pearson| (or |Spearman|) correlation, the
  pairing being the Hungarian matching that maximises the sum (Hyvarinen & Morioka
  2016; the icebeem convention). Invariant to permutations, rescaling and sign
  flips of the codes, not to rotations.
- `multiple_correlation`: R = mean_i sqrt(R^2_i), where R^2_i is the in-sample
  coefficient of determination of the least-squares regression (with intercept)
  of factor i on all codes. Invariant to any invertible linear map of the codes.
- `dci`: Eastwood & Williams' disentanglement and completeness, with the
  importance matrix |linear regression coefficients| on standardised data.

Per-factor terms, whose means are the scores above: `matched_correlations`
(the MCC's term of each factor), `coefficients_of_determination` (R^2_i of each
factor) and `dci_terms` (D_j of each code, C_i of each factor). For an
unordered (categorical) factor, `class_decodability` scores how well a linear
classifier recovers its classes from the codes. Without any factor,
`code_agreement` scores each of several independently trained encoders by how
well its codes match the others' on the same inputs (a model-selection signal).

Inputs must be finite and no column may be constant (a correlation with a
constant is undefined); violations raise `ValueError` naming the argument.
"""

import warnings

import numpy as np
from scipy import optimize, special, stats
from sklearn import discriminant_analysis

_CORRELATION_METHODS = ("pearson", "spearman")
_DCI_WEIGHTINGS = ("uniform", "importance")


def _as_pair(z, z_hat, *, min_samples):
    """Validates `z [..., N, k]`, `z_hat [..., N, m]`; returns float64 copies."""
    z = np.asarray(z, dtype=np.float64)
    z_hat = np.asarray(z_hat, dtype=np.float64)
    for name, a in (("z", z), ("z_hat", z_hat)):
        if a.ndim < 2:
            raise ValueError(
                f"`{name}` must have shape [..., N, dim] (samples in axis -2); "
                f"received shape {a.shape}.")
        if a.shape[-1] == 0:
            raise ValueError(f"`{name}` has no columns; received shape {a.shape}.")
    if z.shape[-2] != z_hat.shape[-2]:
        raise ValueError(
            "`z` and `z_hat` must have the same number of samples (axis -2); "
            f"received z.shape={z.shape} and z_hat.shape={z_hat.shape}.")
    if z.shape[:-2] != z_hat.shape[:-2]:
        raise ValueError(
            "`z` and `z_hat` must have the same leading batch shape; "
            f"received z.shape={z.shape} and z_hat.shape={z_hat.shape}.")
    n = z.shape[-2]
    if n < min_samples:
        raise ValueError(
            f"Need at least {min_samples} samples for z_hat with "
            f"{z_hat.shape[-1]} columns; received N={n}.")
    for name, a in (("z", z), ("z_hat", z_hat)):
        _check_values(name, a)
    return z, z_hat


def _check_values(name, a):
    """Raises if `a [..., N, d]` holds a NaN or infinite value or a constant column (to
    float64 rounding)."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    constant = _constant_columns(a)
    if np.any(constant):
        columns = sorted(set(np.nonzero(constant)[-1].tolist()))
        raise ValueError(
            f"`{name}` has constant columns {columns}: correlations and "
            "regressions with a constant are undefined.")


def _constant_columns(a):
    """`[..., d]` bool: the columns of `a [..., N, d]` constant to float64 rounding."""
    return np.ptp(a, axis=-2) <= 1e-12 * np.max(np.abs(a), axis=-2)


def _num_columns(a):
    """Number of columns of `a [..., N, d]` (0 for malformed input)."""
    shape = np.shape(a)
    return shape[-1] if len(shape) >= 2 else 0


def _standardise(a):
    """Zero mean, unit (population) variance along the sample axis -2."""
    a = a - a.mean(axis=-2, keepdims=True)
    return a / np.sqrt(np.mean(a * a, axis=-2, keepdims=True))


def _scalar_or_array(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def correlation_matrix(z, z_hat, *, method="pearson"):
    """Correlations between factors and codes.

    Args:
      z: true factors `[..., N, k]`.
      z_hat: learned codes `[..., N, m]`.
      method: "pearson", or "spearman" (Pearson correlation of the ranks, ties
        get their average rank).

    Returns:
      float64 array `[..., k, m]`, entry (i, j) = corr(z_i, z_hat_j).
    """
    if method not in _CORRELATION_METHODS:
        raise ValueError(
            f"`method` must be one of {_CORRELATION_METHODS}; received {method!r}.")
    z, z_hat = _as_pair(z, z_hat, min_samples=2)
    if method == "spearman":
        z = stats.rankdata(z, axis=-2)
        z_hat = stats.rankdata(z_hat, axis=-2)
    n = z.shape[-2]
    return np.einsum("...nk,...nm->...km", _standardise(z), _standardise(z_hat)) / n


def matched_correlations(z, z_hat, *, method="pearson"):
    """The MCC's term of each factor: |corr(z_i, z_hat_pi(i))| under the best matching.

    With C the k x m matrix of |corr(z_i, z_hat_j)| (`correlation_matrix`), the
    one-to-one assignment pi of factors to codes maximising sum_i C[i, pi(i)] is
    found with the Hungarian algorithm (scipy `linear_sum_assignment`); factor i's
    term is C[i, pi(i)]. `mcc` is their mean over the min(k, m) matched factors.

    Args:
      z: true factors `[..., N, k]`.
      z_hat: learned codes `[..., N, m]` (m may differ from k).
      method: "pearson" (the paper's default) or "spearman".

    Returns:
      `(correlations, permutation, signs)`: `correlations [..., k]` float64, NaN for
      a factor left unmatched (m < k); `permutation [..., k]` int, the code matched
      to each factor (-1 when unmatched); `signs [..., k]`, the sign of the matched
      correlation (0 when unmatched), so that `signs * z_hat[..., permutation]` is
      positively aligned with `z` column by column.
    """
    return match_correlations(correlation_matrix(z, z_hat, method=method))


def match_correlations(corr):
    """`matched_correlations` from the correlation matrix `[..., k, m]` itself
    (`correlation_matrix`), for a caller that also needs the matrix."""
    corr = np.asarray(corr, np.float64)
    batch_shape, (k, m) = corr.shape[:-2], corr.shape[-2:]
    flat = corr.reshape((-1, k, m))
    matched = np.full((flat.shape[0], k), np.nan)
    permutation = np.full((flat.shape[0], k), -1, dtype=np.int64)
    signs = np.zeros((flat.shape[0], k))
    for b, c in enumerate(flat):  # scipy's Hungarian solver is not batched.
        rows, cols = optimize.linear_sum_assignment(-np.abs(c))
        matched[b, rows] = np.abs(c[rows, cols])
        permutation[b, rows] = cols
        signs[b, rows] = np.sign(c[rows, cols])
    shape = batch_shape + (k,)
    return matched.reshape(shape), permutation.reshape(shape), signs.reshape(shape)


def mcc(z, z_hat, *, method="pearson", return_matching=False):
    """Mean correlation coefficient after the best one-to-one matching.

    With C the k x m matrix of |corr(z_i, z_hat_j)| (`correlation_matrix`),
    a one-to-one assignment pi of factors to codes maximising sum_i C[i, pi(i)]
    is found with the Hungarian algorithm (scipy `linear_sum_assignment`) and

        MCC = mean over the min(k, m) matched pairs of C[i, pi(i)]

    (the terms: `matched_correlations`).

    Equals 1 iff every matched code is an affine function of its factor (e.g. a
    permuted, rescaled, sign-flipped copy); a rotation of the factors gives < 1.

    Args:
      z: true factors `[..., N, k]`.
      z_hat: learned codes `[..., N, m]` (m may differ from k).
      method: "pearson" (the paper's default) or "spearman".
      return_matching: also return the matching.

    Returns:
      `score` (float, or array `[...]` for batched inputs). With
      `return_matching=True`, `(score, permutation, signs)`: `permutation [..., k]`
      int, the code matched to each factor (-1 for factors left unmatched when
      m < k), and `signs [..., k]`, the sign of the matched correlation (0 when
      unmatched), so that `signs * z_hat[..., permutation]` is positively
      aligned with `z` column by column.
    """
    matched, permutation, signs = matched_correlations(z, z_hat, method=method)
    score = _scalar_or_array(np.nanmean(matched, axis=-1))
    if not return_matching:
        return score
    return score, permutation, signs


def _regression_coefficients(z, z_hat):
    """Least squares of standardised z on standardised z_hat (with intercept).

    Returns (coef `[..., m, k]`, r2 `[..., k]`): `z_s ~ z_hat_s @ coef`, the
    minimum-norm solution when the codes are collinear, and the in-sample R^2 of
    each factor clipped to [0, 1] (it can only leave that range by rounding).
    Standardised columns are centred, so the intercept is 0.
    """
    zs, hs = _standardise(z), _standardise(z_hat)
    coef = np.linalg.pinv(hs) @ zs
    residual = zs - hs @ coef
    r2 = 1.0 - np.mean(residual * residual, axis=-2)  # total SS / N is 1.
    return coef, np.clip(r2, 0.0, 1.0)


def multiple_correlation(z, z_hat):
    """Mean coefficient of multiple correlation R of the factors on the codes.

    For each factor i, ordinary least squares with intercept of z_i on all the
    codes gives the in-sample coefficient of determination R^2_i (the paper
    fits and scores on the same samples too); R = mean_i sqrt(max(R^2_i, 0)),
    on the same [0, 1] scale as MCC. R is invariant to any invertible affine map
    of the codes, so R = 1 with MCC < 1 means "linearly entangled".

    Args:
      z: true factors `[..., N, k]`.
      z_hat: learned codes `[..., N, m]`, N > m + 1 (otherwise the fit is exact).

    Returns:
      float, or array `[...]` for batched inputs.
    """
    return _scalar_or_array(np.mean(np.sqrt(coefficients_of_determination(z, z_hat)), axis=-1))


def coefficients_of_determination(z, z_hat):
    """R^2_i `[..., k]` of each factor: in-sample R^2 of the least-squares regression
    (with intercept) of z_i on all the codes, in [0, 1] (`multiple_correlation` is the
    mean of their square roots). Same arguments as `multiple_correlation`."""
    z, z_hat = _as_pair(z, z_hat, min_samples=_num_columns(z_hat) + 2)
    _, r2 = _regression_coefficients(z, z_hat)
    return r2


def _one_minus_entropy(p, axis):
    """1 - H(p) along `axis`, entropy in base = size of that axis (0 log 0 = 0)."""
    size = p.shape[axis]
    return 1.0 + np.sum(special.xlogy(p, p), axis=axis) / np.log(size)


def _normalise(importance, axis):
    """Divides by the sum along `axis`; an all-zero slice becomes uniform."""
    total = importance.sum(axis=axis, keepdims=True)
    uniform = np.full_like(importance, 1.0 / importance.shape[axis])
    safe_total = np.where(total > 0, total, 1.0)
    return np.where(total > 0, importance / safe_total, uniform)


def importance_matrix(z, z_hat):
    """DCI importances `[..., m, k]`: |coefficient| of code j for factor i.

    The coefficients are those of the least-squares regression (with
    intercept) of each standardised factor on all standardised codes, the
    paper's App. D.2.7 convention. Standardising makes them invariant to
    rescaling of factors and codes.
    """
    z, z_hat = _as_pair(z, z_hat, min_samples=_num_columns(z_hat) + 2)
    coef, _ = _regression_coefficients(z, z_hat)
    return np.abs(coef)


def dci(z, z_hat, *, weighting="uniform"):
    """DCI disentanglement and completeness (Eastwood & Williams, 2018).

    With importances I `[m, k]` (`importance_matrix`; I[j, i] = |coefficient of
    code j in the linear regression of factor i on all codes|):

        D_j = 1 - H_k(I[j, :] / sum_i I[j, i])    per code, entropy in base k
        C_i = 1 - H_m(I[:, i] / sum_j I[j, i])    per factor, entropy in base m
        D = sum_j rho_j D_j,   C = sum_i kappa_i C_i.

    `weighting="uniform"` (default, the paper's D.2.7: rho_j = 1/m,
    kappa_i = 1/k, plain means) or `"importance"` (Eastwood & Williams and
    disentanglement_lib: rho_j = sum_i I[j, i] / sum I, kappa_i likewise over
    factors), where codes that barely matter count less. A code (factor) with
    all-zero importances gets a uniform distribution, i.e. D_j = 0 (C_i = 0).

    How this differs from other implementations:
      - Eastwood & Williams obtain importances from Lasso or random-forest
        regressors and weight D by relative code importance; they also report
        informativeness (prediction error), which is omitted here as in the paper.
      - disentanglement_lib (and `disent`) fit one gradient-boosted-trees
        classifier per discretised factor and use its `feature_importances_`,
        which capture non-linear dependence and are not comparable with linear
        coefficients; it reports train/test accuracy as informativeness.
      - The authors' code normalises the importance matrix before computing the
        weights, so its weights are uniform (like ours by default), and it adds
        1e-11 inside the entropy (we use 0 log 0 = 0, so an exact permutation
        scores exactly 1). The paper's text indexes I by [factor, code]; the
        disentanglement it describes is the per-code quantity above, as in the
        authors' code and in Eastwood & Williams.

    Args:
      z: true factors `[..., N, k]`, k >= 2.
      z_hat: learned codes `[..., N, m]`, m >= 2, N > m + 1.
      weighting: "uniform" or "importance".

    Returns:
      `(disentanglement, completeness)`, floats or arrays `[...]` if batched.
    """
    if weighting not in _DCI_WEIGHTINGS:
        raise ValueError(
            f"`weighting` must be one of {_DCI_WEIGHTINGS}; received {weighting!r}.")
    importance, per_code, per_factor = _dci_parts(z, z_hat)
    if weighting == "uniform":
        d, c = per_code.mean(axis=-1), per_factor.mean(axis=-1)
    else:
        total = importance.sum(axis=(-2, -1))[..., None]
        total = np.where(total > 0, total, 1.0)
        d = np.sum(per_code * importance.sum(axis=-1) / total, axis=-1)
        c = np.sum(per_factor * importance.sum(axis=-2) / total, axis=-1)
    return _scalar_or_array(d), _scalar_or_array(c)


def _dci_parts(z, z_hat):
    """(importances `[..., m, k]`, D_j `[..., m]`, C_i `[..., k]`) of `dci`."""
    for name, dim in (("z", np.shape(z)[-1:]), ("z_hat", np.shape(z_hat)[-1:])):
        if dim and dim[0] < 2:
            raise ValueError(
                f"DCI needs at least 2 columns in `{name}` (the entropy base is the "
                f"number of columns); received {dim[0]}.")
    importance = importance_matrix(z, z_hat)
    per_code = _one_minus_entropy(_normalise(importance, axis=-1), axis=-1)
    per_factor = _one_minus_entropy(_normalise(importance, axis=-2), axis=-2)
    return importance, per_code, per_factor


def dci_terms(z, z_hat):
    """The terms of `dci`: disentanglement D_j of each code and completeness C_i of each
    factor (formulas in `dci`; their plain means are `dci`'s default scores).

    Returns:
      `(per_code [..., m], per_factor [..., k])` float64 arrays.
    """
    _, per_code, per_factor = _dci_parts(z, z_hat)
    return per_code, per_factor


def class_decodability(classes, z_hat):
    """Linear decodability of an unordered factor: chance-corrected accuracy of linear
    discriminant analysis (LDA) classifying its classes from all the codes.

    LDA (scikit-learn, shared covariance, class priors = frequencies) is fitted and
    scored on the same N samples (in-sample, as `multiple_correlation`); with a0 the
    frequency of the most common class (the accuracy of always guessing it),

        score = max(0, (accuracy - a0) / (1 - a0)),

    so 1 = every class recovered by a linear rule, 0 = no better than guessing the most
    common class. Invariant to any invertible affine map of the codes and to the
    labels' order, unlike a correlation with class indices.

    Args:
      classes: `[N]` class labels (any hashable values), at least 2 distinct.
      z_hat: learned codes `[N, m]` (unbatched), finite, no constant column.

    Returns:
      float in [0, 1].
    """
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"`classes` must have shape [N]; received shape {classes.shape}.")
    z_hat = np.asarray(z_hat, dtype=np.float64)
    if z_hat.ndim != 2 or z_hat.shape[0] != classes.shape[0]:
        raise ValueError(f"`z_hat` must have shape [N, m] with N = {classes.shape[0]} (the "
                         f"number of `classes`); received shape {z_hat.shape}.")
    _check_values("z_hat", z_hat)
    labels, counts = np.unique(classes, return_counts=True)
    if len(labels) < 2:
        raise ValueError(f"`classes` needs at least 2 distinct labels; received {labels}.")
    chance = counts.max() / counts.sum()
    with warnings.catch_warnings():   # "Variables are collinear": the SVD solver handles them
        warnings.simplefilter("ignore", UserWarning)
        codes = _standardise(z_hat)
        lda = discriminant_analysis.LinearDiscriminantAnalysis(solver="svd")
        accuracy = lda.fit(codes, classes).score(codes, classes)
    return float(max(0.0, (accuracy - chance) / (1.0 - chance)))


def code_agreement(codes):
    """Agreement of S encoders' codes on the same P inputs: for each model, the median
    over the other models of the MCC between their codes.

    With A[i, j] the MCC between codes[i] and codes[j] (|Pearson|, Hungarian matching;
    symmetric), a constant code (a dead unit) matching nothing, so that it counts 0 in
    the mean over the m codes,

        agreement_i = median over j != i of A[i, j].

    Encoders identified up to permutation and rescaling of the codes (the inner-Lasso's
    guarantee) agree with each other, since each one's codes are then rescaled copies
    of the same factors; encoders that only share the factors' span (inner-Ridge:
    identified up to an invertible linear map) do not. It needs no factor, in the spirit
    of unsupervised disentanglement ranking (UDR; Duan et al., 2020), with the MCC as the
    similarity and every code counted (an encoder without a KL term has no KL-based choice
    of active codes). A model with a non-finite code, or no code that varies, gets NaN
    and is left out of the others' medians.

    Args:
      codes: `[S, P, m]` codes of S models on the same P inputs, S >= 2.

    Returns:
      `[S]` float64 agreements in [0, 1] (NaN for a degenerate model or when fewer than
      two models are usable).
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 3 or codes.shape[0] < 2:
        raise ValueError(f"`codes` must have shape [S, P, m] with S >= 2 models; received "
                         f"shape {codes.shape}.")
    num_models, _, num_codes = codes.shape
    live = [~_constant_columns(c) for c in codes]
    usable = [i for i in range(num_models)
              if np.all(np.isfinite(codes[i])) and live[i].any()]
    pairs = np.full((num_models, num_models), np.nan)
    for a, i in enumerate(usable):
        for j in usable[a + 1:]:
            matched, _, _ = matched_correlations(codes[i][:, live[i]], codes[j][:, live[j]])
            pairs[i, j] = pairs[j, i] = np.nansum(matched) / num_codes
    agreement = np.full(num_models, np.nan)
    for i in usable:
        others = np.delete(pairs[i], i)
        if np.isfinite(others).any():
            agreement[i] = np.nanmedian(others)
    return agreement
