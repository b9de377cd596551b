r"""The bilevel regression step: encoder -> inner head -> outer loss -> encoder update.

For T tasks with support sets (x_s, y_s) and query sets (x_q, y_q):

    F_t = f(x_t)                                      features [T, n, m]
    W_t = argmin_W 1/(2 n_s) ||y_s - F_s W||^2 + R(W)  (the head: Lasso, ridge, ...)
    L   = 1/T sum_t 1/(2 n_q) ||y_q - F_q W_t||^2     (outer loss)

and one optimizer step on the encoder's weights with dL/dtheta, the gradient
flowing through W_t by the head's implicit (or unrolled) differentiation.
Support and query samples go through the encoder together, so a per-task batch
norm (TaskBatchNorm) normalises both with the same statistics. Without a
query set (`TaskBatch.x_query is None`) the outer loss is measured on the
support samples (the reference's `--no_inner_outer_split`).

Encoder contract (any Keras model; an MLP for the quickstart, a conv net for
3D Shapes): x [T, n, ...] -> features [T, n, m] with `training=True`, any
[..., d] -> [..., m] with `training=False`.

Distribution: the step runs under `strategy.run`; replica r of R takes tasks
[r T/R, (r+1) T/R) of the global batch (T must be a multiple of R), and
scales its summed task losses by 1/T, so the optimizer's sum of replica
gradients is the gradient of the global mean. Non-trainable state
(TaskBatchNorm moving statistics) is averaged over replicas, which equals the
single-device average over tasks. The encoder is called through
`stateless_call`, so the loss and gradient computation is a pure function
that XLA compiles (`jit_compile=True`); variable updates happen outside it.
"""

from __future__ import annotations

from typing import Callable, Optional

import keras
import tensorflow as tf

from sdis_tf.data.tasks import TaskBatch
from sdis_tf.train import distribute
from sdis_tf.train.stateless import StatelessForward

SampleBatch = Callable[[tf.Tensor], TaskBatch]
"""sample_batch(step) -> TaskBatch of the global T tasks of batch `step` (stateless)."""

OuterPenalty = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
"""penalty(W [T, m], F_s [T, n, m], y_s [T, n]) -> [T], added to each task's outer loss."""


def task_losses(head: keras.layers.Layer, features_support, y_support,
                features_query=None, y_query=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-task outer losses 1/(2 n_q) ||y_q - F_q W_t||^2 [T] and the weights W [T, m].

    W_t is the head's inner solution on (F_s, y_s) (`sdis_tf.heads`, `solve`). Without a
    query set the loss uses the support set.
    """
    if features_query is None:
        features_query, y_query = features_support, y_support
    solution = head.solve((features_support, y_support, features_query))
    residual = y_query - solution.predictions
    axes = list(range(1, residual.shape.rank))
    return 0.5 * tf.reduce_mean(tf.square(residual), axis=axes), solution.weights


def encode_tasks(encode: Callable, batch: TaskBatch):
    """Encodes support and query samples together: returns (F_s, F_q or None)."""
    if batch.x_query is None:
        return encode(batch.x_support), None
    n_support = tf.shape(batch.x_support)[1]
    features = encode(tf.concat([batch.x_support, batch.x_query], axis=1))
    return features[:, :n_support], features[:, n_support:]


def validation_loss(encoder: keras.Model, head: keras.layers.Layer, batch: TaskBatch) -> tf.Tensor:
    """The outer loss averaged over the tasks of `batch`, the encoder in inference mode:
    the validation loss (it never looks at the true factors)."""
    f_s, f_q = encode_tasks(lambda x: encoder(x, training=False), batch)
    losses, _ = task_losses(head, f_s, batch.y_support, f_q, batch.y_query)
    return tf.reduce_mean(losses)


class BilevelTrainer:
    """One `tf.function` outer step on the encoder (see the module docstring).

    Build the encoder and the optimizer under `strategy.scope()` and call
    `optimizer.build(encoder.trainable_variables)` there before the first
    step (a Keras 3 requirement under tf.distribute).

    Two ways to feed it: `train_step(step)` draws the global batch with
    `sample_batch(step)` inside the step (stateless synthetic data);
    `train_on_batch(batch)` takes a `TaskBatch` produced elsewhere (e.g. a
    prefetched tf.data pipeline). Both run the same replica step.

    With `outer_penalty`, the per-task outer loss becomes
    1/(2 n_q) ||y_q - F_q W_t||^2 + penalty(W_t, F_s, y_s) (e.g. the outer-Lasso
    of the paper's appendix B.3), and the "loss" metric includes the penalty.

    Args:
      encoder: a built Keras model (see the encoder contract above).
      head: the inner-problem head (`sdis_tf.heads`; its `solve` gives W and the predictions).
      optimizer: a built Keras optimizer for `encoder.trainable_variables`.
      strategy: the tf.distribute strategy the variables live in.
      sample_batch: step -> global TaskBatch (T tasks), stateless in the step;
        None if the trainer is only fed through `train_on_batch`.
      num_tasks: T, a multiple of `strategy.num_replicas_in_sync`.
      jit_compile: XLA-compile the loss and gradient computation.
      outer_penalty: optional `OuterPenalty` (per task, differentiable in W and F_s).
    """

    def __init__(self, encoder: keras.Model, head: keras.layers.Layer,
                 optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy,
                 sample_batch: Optional[SampleBatch] = None, *, num_tasks: int,
                 jit_compile: bool = True, outer_penalty: Optional[OuterPenalty] = None):
        replicas = strategy.num_replicas_in_sync
        if num_tasks % replicas:
            raise ValueError(f"num_tasks={num_tasks} must be a multiple of the number of "
                             f"replicas ({replicas}) to split the tasks evenly")
        self.encoder, self.head, self.optimizer = encoder, head, optimizer
        self.strategy, self.sample_batch, self.num_tasks = strategy, sample_batch, num_tasks
        self.outer_penalty = outer_penalty
        self._loss_and_grads = tf.function(self._loss_and_grads_fn, jit_compile=jit_compile)
        self._sampled_step = tf.function(
            lambda step: self._run(lambda s: self._replica_step(self.sample_batch(s)), step))
        self._batch_step = tf.function(lambda batch: self._run(self._replica_step, batch))

    def _loss_and_grads_fn(self, trainable, non_trainable, batch):
        """Pure: (weights, state, batch) -> (sum of task losses / T, grads, new state, support)."""
        encode = StatelessForward(self.encoder, trainable, non_trainable)
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            f_s, f_q = encode_tasks(encode, batch)
            losses, W = task_losses(self.head, f_s, batch.y_support, f_q, batch.y_query)
            if self.outer_penalty is not None:
                losses = losses + self.outer_penalty(W, f_s, batch.y_support)
            loss = tf.reduce_sum(losses) / self.num_tasks
        grads = tape.gradient(loss, trainable)
        support = tf.reduce_sum(tf.reduce_mean(tf.cast(W != 0, loss.dtype), axis=1))
        return loss, grads, encode.state, support / self.num_tasks

    def _replica_step(self, batch: TaskBatch):
        """One replica's update on its share of the global `batch`."""
        ctx = tf.distribute.get_replica_context()
        batch = distribute.replica_share(batch)
        variables = self.encoder.trainable_variables
        loss, grads, state, support = self._loss_and_grads(
            [v.value for v in variables],
            [v.value for v in self.encoder.non_trainable_variables], batch)
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        state = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, state) if state else state
        for variable, value in zip(self.encoder.non_trainable_variables, state):
            variable.assign(value)
        return {"loss": loss, "grad_norm": tf.linalg.global_norm(summed), "support": support}

    def _run(self, replica_fn, argument):
        per_replica = self.strategy.run(replica_fn, args=(argument,))
        reduce = lambda op, value: self.strategy.reduce(op, value, axis=None)  # noqa: E731
        return {"loss": reduce(tf.distribute.ReduceOp.SUM, per_replica["loss"]),
                "support": reduce(tf.distribute.ReduceOp.SUM, per_replica["support"]),
                "grad_norm": reduce(tf.distribute.ReduceOp.MEAN, per_replica["grad_norm"])}

    def train_step(self, step: int) -> dict[str, tf.Tensor]:
        """Runs the outer step on data batch `sample_batch(step)`; returns global train metrics.

        Metrics: "loss" (mean outer loss over the T tasks, penalty included),
        "grad_norm" (norm of the gradient of that loss), "support" (mean
        fraction of nonzero entries of W_t).
        """
        if self.sample_batch is None:
            raise ValueError("train_step needs the trainer's sample_batch; this trainer has "
                             "none: feed it with train_on_batch(batch)")
        return self._sampled_step(tf.constant(step, tf.int64))

    def train_on_batch(self, batch: TaskBatch) -> dict[str, tf.Tensor]:
        """Runs the outer step on `batch`, a `TaskBatch` of the global T tasks
        (each replica takes its share); returns the metrics of `train_step`."""
        return self._batch_step(batch)
