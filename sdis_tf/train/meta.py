r"""The few-shot (meta-learning) step: backbone -> episode head -> query cross-entropy -> SGD.

For T episodes with support sets (x_s [T, n, ...], labels y_s [T, n]) and
query sets (x_q [T, q, ...], y_q [T, q]):

    F_s, F_q = f(x_s), f(x_q)                           features [T, n, m], [T, q, m]
    logits_t = head(F_s, y_s, F_q)                      [T, q, k], the head fitted on the support
    L = 1/(T q) sum_t sum_i CE(smooth(y_q,ti), logits_ti)
        + wd/2 ||theta||^2                              (coupled weight decay, backbone only)

with label smoothing smooth(y) = (1 - s) onehot(y) + s (1 - onehot(y)) / (k - 1)
(MetaOptNet's). The gradient reaches the backbone through the head's
implicit (SVM), closed-form (ridge) or direct (prototypes) differentiation.
The learnable logit scale of the head is trained without weight decay
(MetaOptNet decayed it).

The head is any classification head of `sdis_tf.heads` (sparse or dense SVM,
ridge classifier, prototypes): `head.solve((F_s, y_s, F_q))` gives the logits
and the features each episode uses.

Support and query images of all T episodes go through the backbone as one
batch (BatchNorm statistics over the whole batch). Backbones map
[B, H, W, C] -> [B, m]; one with a `schedule_step` variable (ResNet12's
DropBlock) gets the global step assigned before each step.

Distribution follows `train.bilevel`: replica r takes episodes
[r T/R, (r+1) T/R), divides its summed episode losses by T, float
non-trainable state (BN moving statistics) is averaged over replicas, and the
loss and gradient are a pure function (`stateless_call`) that XLA may compile.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import keras
import tensorflow as tf

from sdis_tf.heads import Head
from sdis_tf.train import distribute
from sdis_tf.train.stateless import StatelessForward


class EpisodeBatch(NamedTuple):
    """support [T, n, H, W, C], support_labels int [T, n], query [T, q, H, W, C],
    query_labels int [T, q]."""

    support: tf.Tensor
    support_labels: tf.Tensor
    query: tf.Tensor
    query_labels: tf.Tensor


SampleBatch = Callable[[int], EpisodeBatch]
"""sample_batch(step) -> the global EpisodeBatch of batch `step` (host side, e.g. NumPy)."""


def smoothed_cross_entropy(labels, logits, smoothing: float):
    """Per-query CE [T, q] against (1 - s) onehot + s (1 - onehot) / (k - 1)."""
    k = logits.shape[-1]
    onehot = tf.one_hot(labels, k, dtype=logits.dtype)
    target = (1.0 - smoothing) * onehot + smoothing * (1.0 - onehot) / (k - 1)
    return -tf.reduce_sum(target * tf.nn.log_softmax(logits), axis=-1)


def encode_episodes(encode: Callable, support, query):
    """Runs support and query images through `encode` as one batch -> (F_s [T,n,m], F_q [T,q,m])."""
    T, n, q = tf.shape(support)[0], tf.shape(support)[1], tf.shape(query)[1]
    image_shape = tf.shape(support)[2:]
    flat = lambda x: tf.reshape(x, tf.concat([[-1], image_shape], 0))
    features = encode(tf.concat([flat(support), flat(query)], axis=0))
    m = tf.shape(features)[-1]
    return (tf.reshape(features[:T * n], [T, n, m]), tf.reshape(features[T * n:], [T, q, m]))


def episode_metrics(backbone: keras.Model, head: Head, batch: EpisodeBatch):
    """Inference-mode evaluation of T episodes.

    Returns (accuracy [T] on the queries, used [T, m] bool: the features with W_j != 0).
    """
    encode = lambda x: backbone(x, training=False)
    f_s, f_q = encode_episodes(encode, batch.support, batch.query)
    solution = head.solve((f_s, batch.support_labels, f_q))
    correct = tf.equal(tf.argmax(solution.predictions, -1, output_type=tf.int32),
                       batch.query_labels)
    return tf.reduce_mean(tf.cast(correct, tf.float32), axis=-1), solution.used_features


class MetaTrainer:
    """One `tf.function` meta-training step (see the module docstring).

    Build the backbone, the head and the optimizer under `strategy.scope()`,
    and call `optimizer.build(trainer.variables)` there before the first step.

    Args:
      backbone: built Keras model [B, H, W, C] -> [B, m].
      head: built classification head of `sdis_tf.heads`, (F_s, y_s, F_q) -> logits.
      optimizer: Keras optimizer for `backbone.trainable_variables + head.trainable_variables`.
      strategy: the tf.distribute strategy.
      sample_batch: step -> global EpisodeBatch (T episodes).
      num_episodes: T, a multiple of the number of replicas.
      weight_decay: coupled L2 on the backbone's weights (PyTorch SGD's weight_decay).
      label_smoothing: s in [0, 1).
      jit_compile: XLA-compile the loss and gradient computation.
    """

    def __init__(self, backbone: keras.Model, head: Head,
                 optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy,
                 sample_batch: SampleBatch, *, num_episodes: int, weight_decay: float = 0.0,
                 label_smoothing: float = 0.0, jit_compile: bool = False):
        replicas = strategy.num_replicas_in_sync
        if num_episodes % replicas:
            raise ValueError(f"num_episodes={num_episodes} must be a multiple of the number "
                             f"of replicas ({replicas})")
        self.backbone, self.head, self.optimizer = backbone, head, optimizer
        self.strategy, self.sample_batch, self.num_episodes = strategy, sample_batch, num_episodes
        self.weight_decay, self.label_smoothing = weight_decay, label_smoothing
        self._loss_and_grads = tf.function(self._loss_and_grads_fn, jit_compile=jit_compile)
        self._step = tf.function(self._step_fn)

    @property
    def variables(self) -> list:
        """The trained variables: the backbone's, then the head's (its logit scale)."""
        return self.backbone.trainable_variables + self.head.trainable_variables

    def _loss_and_grads_fn(self, trainable, non_trainable, batch):
        encode = StatelessForward(self.backbone, trainable, non_trainable)
        head_variables = self.head.trainable_variables
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            f_s, f_q = encode_episodes(encode, batch.support, batch.query)
            solution = self.head.solve((f_s, batch.support_labels, f_q))
            losses = smoothed_cross_entropy(batch.query_labels, solution.predictions,
                                            self.label_smoothing)
            data_loss = tf.reduce_sum(tf.reduce_mean(losses, axis=-1)) / self.num_episodes
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            decay = 0.5 * self.weight_decay * tf.add_n(
                [tf.reduce_sum(tf.square(w)) for w in trainable]) / replicas
            loss = data_loss + decay
        grads = tape.gradient(loss, list(trainable) + head_variables)
        correct = tf.equal(tf.argmax(solution.predictions, -1, output_type=tf.int32),
                           batch.query_labels)
        accuracy = tf.reduce_sum(tf.reduce_mean(tf.cast(correct, tf.float32), -1))
        used = tf.reduce_sum(tf.reduce_mean(tf.cast(solution.used_features, tf.float32), -1))
        return (data_loss, grads, encode.state,
                {"accuracy": accuracy / self.num_episodes,
                 "features_used": used / self.num_episodes})

    def _replica_step(self, batch):
        ctx = tf.distribute.get_replica_context()
        batch = distribute.replica_share(batch)
        non_trainable = self.backbone.non_trainable_variables
        loss, grads, state, sums = self._loss_and_grads(
            [v.value for v in self.backbone.trainable_variables],
            [v.value for v in non_trainable], batch)
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        for variable, value in zip(non_trainable, state):
            # BN statistics; the integer schedule_step keeps its assigned value
            if tf.as_dtype(variable.dtype).is_floating:
                variable.assign(ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value))
        return {"loss": loss, "grad_norm": tf.linalg.global_norm(summed), **sums}

    def _step_fn(self, step, batch):
        schedule_step = getattr(self.backbone, "schedule_step", None)
        if schedule_step is not None:
            schedule_step.assign(tf.cast(step, schedule_step.dtype))
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        reduce = lambda op, value: self.strategy.reduce(op, value, axis=None)
        return {"loss": reduce(tf.distribute.ReduceOp.SUM, per_replica["loss"]),
                "accuracy": reduce(tf.distribute.ReduceOp.SUM, per_replica["accuracy"]),
                "features_used": reduce(tf.distribute.ReduceOp.SUM, per_replica["features_used"]),
                "grad_norm": reduce(tf.distribute.ReduceOp.MEAN, per_replica["grad_norm"])}

    def train_step(self, step: int) -> dict[str, tf.Tensor]:
        """Runs the step on batch `step`.

        Returns global metrics: "loss" (mean smoothed query CE, without the
        weight decay), "accuracy" (train query accuracy), "features_used"
        (mean fraction of features an episode's head uses), "grad_norm".
        """
        batch = EpisodeBatch(*(tf.convert_to_tensor(t) for t in self.sample_batch(step)))
        return self._step(tf.constant(step, tf.int64), batch)
