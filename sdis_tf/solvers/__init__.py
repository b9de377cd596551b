"""Batched solvers of the inner problems, each returning a certificate."""

from sdis_tf.solvers.lasso import (LassoResult, lasso, lasso_gap, lasso_lambda_max,
                                   lasso_objective, lasso_unrolled)
from sdis_tf.solvers.ridge import RidgeResult, ridge, ridge_lambda_max, ridge_path
from sdis_tf.solvers.svm import (SVMResult, svm_dual, svm_dual_objective, svm_lambda_max,
                                 svm_primal)

__all__ = [
    "LassoResult", "lasso", "lasso_gap", "lasso_lambda_max", "lasso_objective",
    "lasso_unrolled", "RidgeResult", "ridge", "ridge_lambda_max", "ridge_path",
    "SVMResult", "svm_dual", "svm_dual_objective", "svm_lambda_max", "svm_primal",
]
