"""sdis_tf: sparse multi-task learning that disentangles (TensorFlow / Keras 3).

Subpackages: `solvers` (batched Lasso / group Lasso / ridge / SVM solvers with
certificates), `implicit` (implicit differentiation of argmin layers), `heads`
(episode heads and their registry), `layers` (TaskBatchNorm), `metrics`, `data`,
`models`, `train`, `experiments`, `sweep`.
"""

__version__ = "0.1.0"
