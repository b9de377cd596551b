"""The few-shot step: the loss and episode metrics, the SGD update against a direct gradient,
mirrored (the heads: tests/test_heads.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import heads
from sdis_tf.models.resnet12 import ResNet12
from sdis_tf.train import distribute, meta


def _features(T=2, ways=3, shots=2, queries=2, m=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(ways), shots), (T, 1)).astype(np.int32)
    return (rng.standard_normal((T, ways * shots, m)), labels,
            rng.standard_normal((T, ways * queries, m)))


def test_smoothed_cross_entropy():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((2, 3, 5)), rng.integers(0, 5, (2, 3))
    got = meta.smoothed_cross_entropy(tf.constant(labels), tf.constant(logits), 0.1).numpy()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full((2, 3, 5), 0.1 / 4)
    np.put_along_axis(target, labels[..., None], 0.9, axis=-1)
    np.testing.assert_allclose(got, -(target * log_p).sum(-1), rtol=1e-12)
    plain = meta.smoothed_cross_entropy(tf.constant(labels), tf.constant(logits), 0.0)
    np.testing.assert_allclose(plain, tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits), rtol=1e-12)


def test_encode_episodes_and_episode_metrics():
    support, labels, query = _features(T=2, ways=3, shots=1, queries=1, m=6)
    images = lambda a: tf.constant(a.reshape(a.shape[:2] + (1, 2, 3)), tf.float32)
    f_s, f_q = meta.encode_episodes(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]),
                                    images(support), images(query))
    np.testing.assert_allclose(f_s, support, rtol=1e-6)
    np.testing.assert_allclose(f_q, query, rtol=1e-6)
    # Queries = the support images: prototypes classify them all correctly, then a
    # relabelled second episode scores 1/3.
    backbone = keras.Sequential([keras.layers.Flatten()])
    query_labels = np.stack([labels[0], [1, 0, 2]]).astype(np.int32)
    batch = meta.EpisodeBatch(images(support), tf.constant(labels), images(support),
                              tf.constant(query_labels))
    accuracy, used = meta.episode_metrics(backbone, heads.PrototypeHead(3), batch)
    np.testing.assert_allclose(accuracy, [1.0, 1.0 / 3.0])
    assert used.shape == (2, 6)


def _batch(T=2, side=16, ways=3, shots=2, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    labels = lambda per: np.stack([rng.permutation(np.repeat(np.arange(ways), per))
                                   for _ in range(T)]).astype(np.int32)
    return meta.EpisodeBatch(rng.standard_normal((T, ways * shots, side, side, 3)), labels(shots),
                             rng.standard_normal((T, ways * queries, side, side, 3)),
                             labels(queries))


def _trainer(strategy, backbone_fn, head_fn, *, lr=0.1, decay=0.0, smoothing=0.0, T=2):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        backbone = backbone_fn()
        m = backbone(tf.zeros([1, 16, 16, 3])).shape[-1]
        head = head_fn()
        head((tf.zeros([1, 3, m]), tf.zeros([1, 3], tf.int32), tf.zeros([1, 1, m])))
        optimizer = keras.optimizers.SGD(lr)
        trainer = meta.MetaTrainer(backbone, head, optimizer, strategy,
                                   lambda step: _batch(T=T, seed=step), num_episodes=T,
                                   weight_decay=decay, label_smoothing=smoothing)
        optimizer.build(trainer.variables)
    return trainer


def test_sgd_step_equals_a_direct_gradient_through_the_svm_head():
    """ResNet-12 with DropBlock (masks keyed by the step), BN in training mode, label smoothing,
    weight decay and the learnable scale: the update is -lr * the directly computed gradient."""
    backbone_fn = lambda: ResNet12((2, 2, 2, 2), drop_rate=0.2, dropblock_size=2, ramp_steps=4)
    head_fn = lambda: heads.SparseSVMHead(3, lam1=0.05, tol=1e-3, max_iter=2000)
    trainer = _trainer(distribute.create_strategy("default"), backbone_fn, head_fn,
                       lr=0.1, decay=0.01, smoothing=0.2)
    # The direct gradient first, then the step on the same weights (the moving BN
    # statistics the direct pass updates do not enter a training-mode forward pass).
    step = 3
    batch = meta.EpisodeBatch(*(tf.constant(a, tf.float32 if a.dtype == np.float64 else None)
                                for a in _batch(seed=step)))
    trainer.backbone.schedule_step.assign(step)

    @tf.function  # (eagerly, a tape around svm_lambda_max's XLA while loop fails)
    def direct_gradient():
        with tf.GradientTape() as tape:
            f_s, f_q = meta.encode_episodes(lambda x: trainer.backbone(x, training=True),
                                            batch.support, batch.query)
            logits = trainer.head((f_s, batch.support_labels, f_q))
            data_loss = tf.reduce_mean(meta.smoothed_cross_entropy(batch.query_labels, logits,
                                                                   0.2))
            loss = data_loss + 0.005 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in
                                                 trainer.backbone.trainable_variables])
        return data_loss, tape.gradient(loss, trainer.variables)

    data_loss, grads = direct_gradient()
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(trainer.variables, grads)]
    trainer.backbone.schedule_step.assign(0)   # the step assigns it
    metrics = trainer.train_step(step)
    assert int(trainer.backbone.schedule_step.numpy()) == step
    np.testing.assert_allclose(metrics["loss"], data_loss, rtol=1e-4)
    assert trainer.variables[-1] is trainer.head.scale
    assert abs(float(grads[-1])) > 0            # the scale is trained
    for v, e in zip(trainer.variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=2e-3, atol=2e-5, err_msg=v.path)


def test_mirrored_steps_equal_default_steps():
    backbone_fn = lambda: keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(8)])
    head_fn = lambda: heads.PrototypeHead(3)
    default = _trainer(distribute.create_strategy("default"), backbone_fn, head_fn, decay=0.1,
                       smoothing=0.1)
    mirrored = _trainer(distribute.create_strategy("mirrored"), backbone_fn, head_fn, decay=0.1,
                        smoothing=0.1)
    assert mirrored.strategy.num_replicas_in_sync == 2
    for step in range(2):
        a, b = default.train_step(step), mirrored.train_step(step)
        for key in ("loss", "accuracy", "grad_norm", "features_used"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for u, v in zip(default.variables, mirrored.variables):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=u.path)
    with pytest.raises(ValueError, match="num_episodes=3 must be a multiple"):
        _trainer(distribute.create_strategy("mirrored"), backbone_fn, head_fn, T=3)
