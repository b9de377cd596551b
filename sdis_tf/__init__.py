"""sdis_tf: sparse multi-task learning that disentangles (TensorFlow / Keras 3).

Subpackages: `solvers` (batched Lasso / group Lasso / ridge / SVM solvers with
certificates), `implicit` (implicit differentiation of argmin layers), `layers`
(Keras heads and TaskBatchNorm), `metrics`, `data`, `models`, `train`,
`experiments`.
"""

__version__ = "0.1.0"
