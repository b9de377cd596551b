"""Batched solvers of the inner problems, each returning a certificate, and their
differentiable (implicit-gradient) entry points."""

from sdis_tf.solvers.lasso import lasso, lasso_unrolled
from sdis_tf.solvers.lasso_grad import lasso_implicit
from sdis_tf.solvers.lasso_problem import (LassoResult, lasso_gap, lasso_lambda_max,
                                           lasso_objective)
from sdis_tf.solvers.ridge import RidgeResult, ridge, ridge_implicit, ridge_lambda_max, ridge_path
from sdis_tf.solvers.svm import (SVMResult, svm_dual, svm_dual_objective, svm_implicit,
                                 svm_lambda_max, svm_primal)

__all__ = [
    "LassoResult", "lasso", "lasso_gap", "lasso_implicit", "lasso_lambda_max",
    "lasso_objective", "lasso_unrolled", "RidgeResult", "ridge", "ridge_implicit",
    "ridge_lambda_max", "ridge_path", "SVMResult", "svm_dual", "svm_dual_objective",
    "svm_implicit", "svm_lambda_max", "svm_primal",
]
