"""The bilevel step: outer loss against float64 least squares; mirrored equals default."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import heads
from sdis_tf.data import synthetic
from sdis_tf.data.tasks import TaskBatch
from sdis_tf.models.mlp import MLPEncoder
from sdis_tf.train import bilevel, distribute

TASKS = dict(kind="bernoulli", p=0.5, block_size=1, support_size=1, noise="snr", noise_scale=0.1)


def test_task_losses_match_float64_least_squares():
    rng = np.random.default_rng(0)
    f_s, f_q = rng.standard_normal((3, 20, 4)), rng.standard_normal((3, 7, 4))
    y_s, y_q = rng.standard_normal((3, 20)), rng.standard_normal((3, 7))
    losses, W = bilevel.task_losses(heads.RidgeHead(lam=0.0, dtype="float64"), tf.constant(f_s), tf.constant(y_s),
                                    tf.constant(f_q), tf.constant(y_q))
    for t in range(3):
        w = np.linalg.lstsq(f_s[t], y_s[t], rcond=None)[0]
        np.testing.assert_allclose(W[t], w, rtol=1e-9)
        np.testing.assert_allclose(losses[t], np.sum((y_q[t] - f_q[t] @ w) ** 2) / (2 * 7), rtol=1e-9)
    # Without a query set the loss is the support fit.
    same, _ = bilevel.task_losses(heads.RidgeHead(lam=0.0, dtype="float64"), tf.constant(f_s), tf.constant(y_s))
    w0 = np.linalg.lstsq(f_s[0], y_s[0], rcond=None)[0]
    np.testing.assert_allclose(same[0], np.sum((y_s[0] - f_s[0] @ w0) ** 2) / 40, rtol=1e-9)


def test_encode_tasks_normalises_support_and_query_together():
    x = tf.reshape(tf.range(2 * 5 * 3, dtype=tf.float32), [2, 5, 3])
    batch = TaskBatch(x[:, :3], tf.zeros([2, 3]), x[:, 3:], tf.zeros([2, 2]))
    f_s, f_q = bilevel.encode_tasks(lambda t: t - tf.reduce_mean(t, axis=1, keepdims=True), batch)
    assert f_s.shape == (2, 3, 3) and f_q.shape == (2, 2, 3)
    np.testing.assert_allclose(tf.concat([f_s, f_q], 1), x - tf.reduce_mean(x, 1, keepdims=True))


def _trainer(strategy, num_tasks=4):
    mixing = synthetic.Mixing(0, 6, 10)

    def sample_batch(step):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), step)
        return synthetic.sample_tasks(seed, mixing, num_tasks=num_tasks, n_support=12, n_query=8,
                                      rho=0.9, structure="equicorrelated", tasks=TASKS)[0]

    keras.utils.set_random_seed(0)
    with strategy.scope():
        encoder = MLPEncoder(6, hidden=(16,))
        encoder(tf.zeros([1, 10]))
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(encoder.trainable_variables)
    # A tight inner tolerance: the solves must not differ by more than float32 rounding
    # when the replicas see the tasks in smaller batches.
    trainer = bilevel.BilevelTrainer(encoder, heads.LassoHead(eps=0.1, tol=1e-9), optimizer, strategy,
                                     sample_batch, num_tasks=num_tasks)
    return trainer, encoder


def test_mirrored_steps_equal_default_steps():
    default, default_encoder = _trainer(distribute.create_strategy("default"))
    mirrored, mirrored_encoder = _trainer(distribute.create_strategy("mirrored"))
    assert mirrored.strategy.num_replicas_in_sync == 2
    for step in range(2):
        a, b = default.train_step(step), mirrored.train_step(step)
        for key in ("loss", "grad_norm", "support"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert len(default_encoder.non_trainable_variables) == 2  # TaskBatchNorm statistics
    for u, v in zip(default_encoder.weights, mirrored_encoder.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=u.path)
    assert float(a["loss"]) > 0 and 0 < float(a["support"]) <= 1


def test_tasks_must_split_evenly_over_replicas():
    with pytest.raises(ValueError, match="num_tasks=3 must be a multiple of the number of replicas"):
        _trainer(distribute.create_strategy("mirrored"), num_tasks=3)
