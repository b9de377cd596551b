"""Keras layers (dtype="float64" where compared with float64 references): heads agree with the solvers, train in a model, serialise; TaskBatchNorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import layers, solvers
from sdis_tf.implicit import lasso_implicit


def regression_tasks(T=4, n=20, m=6, k=None, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, n, m)).astype(dtype)
    Y = rng.standard_normal((T, n) if k is None else (T, n, k)).astype(dtype)
    return X, Y


def test_lasso_head_relative_and_absolute_regularization():
    X, Y = regression_tasks(k=2)
    head = layers.LassoHead(eps=0.2, tol=1e-12, dtype="float64")
    lam = 0.2 * solvers.lasso_lambda_max(X, Y)
    np.testing.assert_allclose(head((X, Y)).numpy(), solvers.lasso(X, Y, lam, tol=1e-12).W.numpy(),
                               atol=1e-10)
    assert np.all(layers.LassoHead(eps=1.0, dtype="float64")((X, Y)).numpy() == 0)
    np.testing.assert_allclose(layers.LassoHead(lam=0.05, tol=1e-12, max_epochs=1000, dtype="float64")((X, Y)).numpy(),
                               solvers.lasso(X, Y, 0.05, tol=1e-12).W.numpy(), atol=1e-10)
    W, result = head.solve((X, Y))
    assert result.gap.shape == (4,) and bool(tf.reduce_all(result.converged))


def test_ridge_head_relative_regularization():
    X, Y = regression_tasks()
    W = layers.RidgeHead(eps=0.01, dtype="float64")((X, Y)).numpy()
    lam = 0.01 * solvers.ridge_lambda_max(X)
    np.testing.assert_allclose(W, solvers.ridge(X, Y, lam).W.numpy(), atol=1e-12)


def test_eps_is_under_stop_gradient():
    """d lam / d features must not leak into the gradient (paper D.2.3)."""
    X, Y = regression_tasks(seed=1)
    Xt = tf.constant(X)
    head = layers.LassoHead(eps=0.1, tol=1e-13, max_epochs=20_000, dtype="float64")
    lam = 0.1 * solvers.lasso_lambda_max(X, Y)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(Xt)
        relative_loss = tf.reduce_sum(head((Xt, Y)) ** 2)
        constant_loss = tf.reduce_sum(lasso_implicit(Xt, Y, lam, tol=1e-13, max_epochs=20_000)[0] ** 2)
    np.testing.assert_allclose(tape.gradient(relative_loss, Xt).numpy(),
                               tape.gradient(constant_loss, Xt).numpy(), atol=1e-10)


@pytest.mark.parametrize("head", [layers.LassoHead(eps=0.1), layers.LassoHead(eps=0.1, diff="unroll",
                                                                               unroll_epochs=5),
                                  layers.RidgeHead(eps=1e-3)], ids=["implicit", "unroll", "ridge"])
def test_heads_train_an_encoder_in_a_functional_model(head):
    X, Y = regression_tasks(T=3, n=16, m=5, dtype=np.float32)
    features = keras.Input(shape=(16, 5))
    targets = keras.Input(shape=(16,))
    encoded = layers.TaskBatchNorm()(keras.layers.Dense(4)(features), training=True)
    weights = head((encoded, targets))
    model = keras.Model([features, targets], [encoded, weights])
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function(jit_compile=True)
    def step(X, Y):
        with tf.GradientTape() as tape:
            encoded, W = model([X, Y])
            loss = tf.reduce_mean(tf.square(Y - tf.einsum("tnm,tm->tn", encoded, W)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, grads

    losses = []
    for _ in range(15):
        loss, grads = step(X, Y)
        losses.append(float(loss))
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert losses[-1] < losses[0]


def test_heads_serialise():
    for head in (layers.LassoHead(eps=0.3, diff="unroll", unroll_epochs=7, tol=1e-4),
                 layers.LassoHead(lam=0.2, max_epochs=9), layers.RidgeHead(eps=0.5),
                 layers.TaskBatchNorm(momentum=0.8)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
        assert type(restored) is type(head) and restored.get_config() == head.get_config()


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of"), (dict(eps=0.1, lam=0.1), "exactly one of"),
    (dict(eps=-0.1), "eps"), (dict(lam="a"), "lam"), (dict(eps=0.1, diff="exact"), "diff"),
    (dict(eps=0.1, tol=0), "tol"), (dict(eps=0.1, max_epochs=0), "max_epochs"),
])
def test_lasso_head_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.LassoHead(**kwargs)


def test_task_batch_norm_normalises_each_task_and_tracks_moving_statistics():
    rng = np.random.default_rng(2)
    scales = np.array([1.0, 3.0])[:, None, None]
    X = (rng.standard_normal((2, 50, 3)) * scales + np.array([[[5.0]], [[-1.0]]])).astype(np.float32)
    norm = layers.TaskBatchNorm(momentum=0.0)
    out = norm(X, training=True).numpy()
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(norm.moving_mean.numpy(), X.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), X.var(axis=1).mean(axis=0), rtol=1e-5)
    flat = rng.standard_normal((7, 3)).astype(np.float32)  # inference accepts any [..., m]
    expected = (flat - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + 1e-5)
    np.testing.assert_allclose(norm(flat, training=False).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="T, n, m"):
        norm(flat, training=True)
