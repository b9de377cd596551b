"""Episode heads (dtype="float64" where compared with float64 references): one contract, the
solvers' solutions, training through them, serialisation, the registry, bad input as one line."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import heads, layers, solvers


CLASSIFICATION = ("sparse_svm", "dense_svm", "ridge_classifier", "proto")
# The smallest valid fields of each registered head.
MINIMAL = {"lasso": dict(eps=0.1), "ridge": dict(eps=0.1), "sparse_svm": dict(num_ways=3, lam1=0.1),
           "dense_svm": dict(num_ways=3), "ridge_classifier": dict(num_ways=3),
           "proto": dict(num_ways=3), "identity": dict()}


def regression_tasks(T=4, n=20, m=6, k=None, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, n, m)).astype(dtype)
    Y = rng.standard_normal((T, n) if k is None else (T, n, k)).astype(dtype)
    return X, Y


def episodes(T=2, ways=3, shots=2, queries=2, m=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(ways), shots), (T, 1)).astype(np.int32)
    return (rng.standard_normal((T, ways * shots, m)), labels,
            rng.standard_normal((T, ways * queries, m)))


def inputs_for(name, T=2, m=4, seed=0):
    """(support, targets, query) float64 inputs of the head registered as `name`."""
    support, labels, query = episodes(T=T, m=m, seed=seed)
    if name in CLASSIFICATION:
        return support, labels, query
    shape = support.shape if name == "identity" else labels.shape   # k = m targets
    return support, np.random.default_rng(seed).standard_normal(shape), query


def one_line_error(error_type, match, function, *args, **kwargs):
    with pytest.raises(error_type, match=match) as error:
        function(*args, **kwargs)
    assert "\n" not in str(error.value), str(error.value)
    return str(error.value)


# --- the solvers' solutions, through one contract ------------------------------------------

def test_lasso_head_relative_and_absolute_regularization():
    X, Y = regression_tasks(k=2)
    Q = regression_tasks(seed=1)[0][:, :7]
    head = heads.LassoHead(eps=0.2, tol=1e-12, dtype="float64")
    lam = 0.2 * solvers.lasso_lambda_max(X, Y)
    W = solvers.lasso(X, Y, lam, tol=1e-12).W.numpy()                                  # [T, m, k]
    solution = head.solve((X, Y, Q))
    np.testing.assert_allclose(solution.weights, W, atol=1e-10)
    np.testing.assert_allclose(solution.predictions, np.einsum("tqm,tmk->tqk", Q, W), atol=1e-9)
    np.testing.assert_allclose(head((X, Y, Q)), solution.predictions, rtol=1e-12)
    np.testing.assert_array_equal(solution.used_features, np.any(W != 0, axis=-1))
    assert 0 < solution.used_features.numpy().mean() < 1
    assert solution.certificate.gap.shape == (4,)
    assert bool(tf.reduce_all(solution.certificate.converged))
    assert np.all(heads.LassoHead(eps=1.0, dtype="float64").solve((X, Y, Q)).weights.numpy() == 0)
    absolute = heads.LassoHead(lam=0.05, tol=1e-12, max_epochs=1000, dtype="float64")
    np.testing.assert_allclose(absolute.solve((X, Y, Q)).weights,
                               solvers.lasso(X, Y, 0.05, tol=1e-12).W, atol=1e-10)


def test_ridge_head_relative_regularization():
    X, Y = regression_tasks()
    Q = X[:, :5]
    solution = heads.RidgeHead(eps=0.01, dtype="float64").solve((X, Y, Q))
    W = solvers.ridge(X, Y, 0.01 * solvers.ridge_lambda_max(X)).W.numpy()              # [T, m]
    np.testing.assert_allclose(solution.weights, W, atol=1e-12)
    np.testing.assert_allclose(solution.predictions, np.einsum("tqm,tm->tq", Q, W), atol=1e-12)
    assert solution.predictions.shape == (4, 5) and np.all(solution.used_features)


def test_eps_is_under_stop_gradient():
    """d lam / d features must not leak into the gradient (paper D.2.3)."""
    X, Y = regression_tasks(seed=1)
    Xt = tf.constant(X)
    head = heads.LassoHead(eps=0.1, tol=1e-13, max_epochs=20_000, dtype="float64")
    lam = 0.1 * solvers.lasso_lambda_max(X, Y)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(Xt)
        relative_loss = tf.reduce_sum(head.solve((Xt, Y, Xt)).weights ** 2)
        constant_loss = tf.reduce_sum(
            solvers.lasso_implicit(Xt, Y, lam, tol=1e-13, max_epochs=20_000)[0] ** 2)
    np.testing.assert_allclose(tape.gradient(relative_loss, Xt).numpy(),
                               tape.gradient(constant_loss, Xt).numpy(), atol=1e-10)


@pytest.mark.parametrize("head", [heads.LassoHead(eps=0.1),
                                  heads.LassoHead(eps=0.1, diff="unroll", unroll_epochs=5),
                                  heads.RidgeHead(eps=1e-3)], ids=["implicit", "unroll", "ridge"])
def test_regression_heads_train_an_encoder_in_a_functional_model(head):
    X, Y = regression_tasks(T=3, n=16, m=5, dtype=np.float32)
    features = keras.Input(shape=(16, 5))
    targets = keras.Input(shape=(16,))
    encoded = layers.TaskBatchNorm()(keras.layers.Dense(4)(features), training=True)
    predictions = head((encoded, targets, encoded))
    assert predictions.shape == (None, 16)
    model = keras.Model([features, targets], predictions)
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function(jit_compile=True)
    def step(X, Y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(Y - model([X, Y])))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, grads

    losses = []
    for _ in range(15):
        loss, grads = step(X, Y)
        losses.append(float(loss))
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert losses[-1] < losses[0]


def test_prototype_head_is_minus_scaled_squared_distance():
    support, labels, query = episodes()
    head = heads.PrototypeHead(3, scale=2.0, dtype="float64")
    logits = head((support, labels, query)).numpy()
    for t in range(2):
        centres = np.stack([support[t][labels[t] == k].mean(0) for k in range(3)])
        distances = ((query[t][:, None, :] - centres[None]) ** 2).sum(-1)
        np.testing.assert_allclose(logits[t], -2.0 * distances / 4, rtol=1e-10)
        np.testing.assert_allclose(head.solve((support, labels, query)).weights[t], centres.T,
                                   rtol=1e-12)


def test_ridge_classifier_is_the_closed_form_ridge_onto_one_hot_labels():
    support, labels, query = episodes(m=5)
    logits = heads.RidgeClassifierHead(3, lam=0.3, scale=1.5)((support, labels, query)).numpy()
    n = support.shape[1]
    for t in range(2):
        onehot = np.eye(3)[labels[t]]
        W = np.linalg.solve(support[t].T @ support[t] / n + 0.3 * np.eye(5),
                            support[t].T @ onehot / n)
        np.testing.assert_allclose(logits[t], 1.5 * query[t] @ W, rtol=2e-4, atol=2e-5)


def test_solve_reports_the_features_each_episode_uses():
    support, labels, query = (tf.constant(a) for a in episodes(m=12, shots=3))
    head = heads.SparseSVMHead(3, lam1=1.5, dtype="float64", tol=1e-8, max_iter=5000)
    solution = head.solve((support, labels, query))
    W = solvers.svm_dual(support, tf.one_hot(labels, 3, dtype=tf.float64), 1.5, 1.0, tol=1e-8,
                         max_iter=5000).W.numpy()                                      # [T, k, m]
    np.testing.assert_allclose(solution.weights, np.transpose(W, [0, 2, 1]), atol=1e-6)
    np.testing.assert_array_equal(solution.used_features, np.any(solution.weights != 0, axis=2))
    assert 0 < solution.used_features.numpy().mean() < 1
    np.testing.assert_allclose(solution.predictions, head((support, labels, query)), rtol=1e-9)
    none = heads.SparseSVMHead(3, lam1=1e6, dtype="float64").solve((support, labels, query))
    assert not np.any(none.used_features) and np.all(none.predictions.numpy() == 0)
    for name in ("dense_svm", "ridge_classifier", "proto"):
        dense = heads.build(name, num_ways=3, dtype="float64").solve((support, labels, query))
        assert dense.used_features.shape == (2, 12) and np.all(dense.used_features), name
    # A feature that is zero on every support sample moves no prediction: unused.
    zeroed = support.numpy().copy()
    zeroed[:, :, 4] = 0.0
    proto = heads.PrototypeHead(3, dtype="float64").solve((zeroed, labels, query))
    np.testing.assert_array_equal(proto.used_features.numpy()[:, 4], [False, False])


def test_refit_head_is_the_dense_svm_on_the_selected_features():
    support, labels, query = (tf.constant(a) for a in episodes(T=3, m=10, shots=3, seed=1))
    settings = dict(dtype="float64", tol=1e-12, max_iter=50_000)
    sparse = heads.SparseSVMHead(3, 0.5, **settings).solve((support, labels, query))
    refit = heads.SparseSVMHead(3, 0.5, refit=True, **settings)
    solution = refit.solve((support, labels, query))
    selected = sparse.used_features.numpy()
    assert 0 < selected.mean() < 1
    np.testing.assert_array_equal(solution.used_features, selected)
    for t in range(3):  # the dense SVM on the selected columns alone
        columns = tf.constant(support.numpy()[t][:, selected[t]][None])
        dense = heads.DenseSVMHead(3, **settings).solve((columns, labels[t:t + 1],
                                                         query[t:t + 1, :, :columns.shape[2]]))
        np.testing.assert_allclose(solution.weights.numpy()[t][selected[t]], dense.weights[0],
                                   atol=1e-8)
    assert np.all(solution.certificate.gap.numpy() <= 1e-10)
    assert heads.SparseSVMHead.from_config(refit.get_config()).refit


def test_refit_head_gradient_matches_finite_differences():
    support, labels, query = episodes(T=2, m=8, shots=3, seed=2)
    head = heads.SparseSVMHead(3, 0.5, refit=True, dtype="float64", tol=1e-13, max_iter=100_000)
    direction = np.random.default_rng(3).standard_normal(support.shape)
    loss = lambda F: tf.reduce_sum(tf.sin(head((F, tf.constant(labels), tf.constant(query)))))
    F = tf.constant(support)
    with tf.GradientTape() as tape:
        tape.watch(F)
        value = loss(F)
    analytic = float(tf.reduce_sum(tape.gradient(value, F) * direction))
    h = 1e-6
    numeric = (float(loss(F + h * direction)) - float(loss(F - h * direction))) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


# --- registry and serialisation ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(heads.HEADS))
def test_every_registered_head_follows_the_contract_and_round_trips(name):
    head_class = heads.HEADS[name]
    parameters = set(inspect.signature(head_class).parameters) - {"kwargs"}
    assert parameters == set(head_class.FIELDS), "FIELDS must list the constructor's arguments"
    head = heads.build(name, **MINIMAL[name], dtype="float64")
    assert type(head) is head_class
    support, targets, query = inputs_for(name)
    solution = head.solve((support, targets, query))
    k = 3 if name in CLASSIFICATION else 4 if name == "identity" else None
    expected = (2, 6) if k is None else (2, 6, k)
    assert solution.predictions.shape == expected and solution.used_features.shape == (2, 4)
    assert solution.weights.shape == ((2, 4) if k is None else (2, 4, k))
    symbolic = head((keras.Input((6, 4)), keras.Input(targets.shape[1:],
                                                     dtype=targets.dtype.name),
                     keras.Input((6, 4))))
    assert symbolic.shape == (None, *expected[1:])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(restored) is head_class and restored.get_config() == head.get_config()
    np.testing.assert_allclose(restored.solve((support, targets, query)).predictions,
                               solution.predictions, rtol=1e-12)


def test_serialised_config_keeps_every_field():
    for head in (heads.LassoHead(eps=0.3, diff="unroll", unroll_epochs=7, tol=1e-4),
                 heads.LassoHead(lam=0.2, max_epochs=9, backend="xla"), heads.RidgeHead(eps=0.5),
                 heads.SparseSVMHead(5, lam1=0.2, lam2=2.0, smoothing=0.1, tol=1e-3, max_iter=7,
                                     scale=3.0, refit=True),
                 heads.RidgeClassifierHead(4, lam=0.7, scale=2.0)):
        config = head.get_config()
        restored = type(head).from_config(config)
        assert restored.get_config() == config
        for field in type(head).FIELDS:
            assert config[field] == head.config_fields[field]
    trained = heads.PrototypeHead(3, scale=2.5)
    trained.build(None)
    trained.scale.assign(7.0)
    assert trained.get_config()["scale"] == 2.5     # the initial scale, not the trained one


def test_build_names_unknown_heads_and_fields():
    message = one_line_error(ValueError, "unknown head 'svm'", heads.build, "svm", num_ways=5)
    assert all(name in message for name in heads.HEADS)
    message = one_line_error(ValueError, "unknown field 'epsilon'", heads.build, "lasso",
                             epsilon=0.1)
    assert "did you mean 'eps'" in message
    one_line_error(ValueError, "'dense_svm': unknown field 'eps'", heads.build, "dense_svm",
                   num_ways=5, eps=0.1)
    one_line_error(ValueError, "missing a required argument: 'num_ways'", heads.build, "proto")
    assert heads.build("sparse_svm", num_ways=5, eps=0.1, name="svm").name == "svm"


# --- bad arguments (issue 31, defect 5) --------------------------------------------------------

NUMERIC_FIELDS = [  # (head, valid fields, the numeric fields checked against them)
    ("lasso", dict(eps=0.1), ("eps", "tol", "max_epochs", "unroll_epochs")),
    ("lasso", dict(lam=0.1), ("lam",)),
    ("ridge", dict(eps=0.1), ("eps",)),
    ("ridge", dict(lam=0.1), ("lam",)),
    ("sparse_svm", dict(num_ways=3, eps=0.1),
     ("num_ways", "eps", "lam2", "smoothing", "tol", "max_iter", "scale")),
    ("sparse_svm", dict(num_ways=3, lam1=0.1), ("lam1",)),
    ("dense_svm", dict(num_ways=3), ("num_ways", "lam2", "smoothing", "tol", "max_iter", "scale")),
    ("ridge_classifier", dict(num_ways=3), ("num_ways", "lam", "scale")),
    ("proto", dict(num_ways=3), ("num_ways", "scale")),
]
NON_NUMERIC = {"diff", "backend", "refit"}


def test_every_numeric_field_is_checked_below():
    for name, head_class in heads.HEADS.items():
        checked = {field for head, _, fields in NUMERIC_FIELDS if head == name for field in fields}
        assert checked == set(head_class.FIELDS) - NON_NUMERIC, name


@pytest.mark.parametrize("name, valid, field", [
    (name, valid, field) for name, valid, fields in NUMERIC_FIELDS for field in fields])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -1.0, -1, True, "1"])
def test_numeric_fields_refuse_non_finite_negative_and_non_numbers(name, valid, field, bad):
    head_class = heads.HEADS[name]
    message = one_line_error(ValueError, f"{head_class.__name__}: {field}=", head_class,
                             **{**valid, field: bad})
    assert "allowed:" in message


@pytest.mark.parametrize("name, valid, field, bad", [
    *[(name, valid, field, 0.5) for name, valid, fields in NUMERIC_FIELDS for field in fields
      if field in ("num_ways", "max_epochs", "unroll_epochs", "max_iter")],
    *[(name, valid, field, 0) for name, valid, fields in NUMERIC_FIELDS for field in fields
      if field in ("tol", "lam2", "scale", "max_epochs", "unroll_epochs", "max_iter")],
    *[(name, valid, "num_ways", 1) for name, valid, fields in NUMERIC_FIELDS
      if "num_ways" in fields]])
def test_numeric_fields_refuse_values_out_of_range(name, valid, field, bad):
    """Counts are integers (num_ways >= 2, budgets >= 1); tolerances, lam2 and scale are > 0."""
    head_class = heads.HEADS[name]
    one_line_error(ValueError, f"{head_class.__name__}: {field}={bad!r} .*allowed:", head_class,
                   **{**valid, field: bad})


def test_nan_eps_was_accepted_and_is_now_refused():
    one_line_error(ValueError, r"LassoHead: eps=nan is not finite; allowed: a finite float in "
                               r"\[0, inf\)", heads.LassoHead, eps=float("nan"))
    one_line_error(ValueError, "SparseSVMHead: num_ways=1 is out of range", heads.SparseSVMHead, 1,
                   0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of"), (dict(eps=0.1, lam=0.1), "exactly one of"),
    (dict(eps=-0.1), "eps"), (dict(lam="a"), "lam"), (dict(eps=0.1, diff="exact"), "diff"),
    (dict(eps=0.1, backend="gpu"), "backend"),
])
def test_lasso_head_rejects_bad_arguments(kwargs, message):
    one_line_error(ValueError, message, heads.LassoHead, **kwargs)


def test_sparse_svm_head_rejects_bad_arguments():
    one_line_error(ValueError, "exactly one of `eps`", heads.SparseSVMHead, 3)
    one_line_error(ValueError, "exactly one of `eps`", heads.SparseSVMHead, 3, 0.1, lam1=0.1)
    one_line_error(ValueError, "refit", heads.SparseSVMHead, 3, 0.5, refit=1)


# --- bad inputs (issue 31, defect 5) -----------------------------------------------------------

@pytest.mark.parametrize("name", CLASSIFICATION)
@pytest.mark.parametrize("bad_label", [3, -1])
def test_labels_outside_the_classes_are_refused_eagerly(name, bad_label):
    support, labels, query = episodes()
    labels = labels.copy()
    labels[1, 2] = bad_label
    head = heads.build(name, **MINIMAL[name])
    for run in (head, head.solve):
        one_line_error(ValueError, r"support labels must lie in \[0, 3\); got values in",
                       run, (support, labels, query))


def test_labels_outside_the_classes_fail_an_assertion_in_a_graph():
    support, labels, query = (tf.constant(a, tf.float32 if a.dtype == np.float64 else None)
                              for a in episodes())
    head = heads.PrototypeHead(3)   # the assertion is in `onehot`, shared by every classifier
    logits = tf.function(lambda labels: head((support, labels, query)))
    assert logits(labels).shape == (2, 6, 3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"PrototypeHead: support labels must lie in \[0, 3\)"):
        logits(labels + 1)


@pytest.mark.parametrize("name", sorted(heads.HEADS))
def test_inputs_of_the_wrong_rank_or_shape_are_one_line(name):
    support, targets, query = inputs_for(name)
    head = heads.build(name, **MINIMAL[name])
    Head = type(head).__name__
    for run in (head, head.solve):
        one_line_error(ValueError, rf"{Head}: support features must be float \[T, n, m\]; got "
                                   r"float64 \[6, 4\]", run, (support[0], targets, query))
        one_line_error(ValueError, rf"{Head}: query features must be float \[T, q, m\] = "
                                   r"\[2, q, 4\] like the support features; got float64 "
                                   r"\[2, 6, 3\]", run, (support, targets, query[..., :3]))
        one_line_error(ValueError, rf"{Head}: support features \[T, n, m\] need n >= 1",
                       run, (support[:, :0], targets[:, :0], query))
        one_line_error(ValueError, rf"{Head}: inputs must be \(support features \[T, n, m\], "
                                   r"support .*; got 4 inputs", run,
                       (support, targets, query, query))
        one_line_error(ValueError, r"support (labels|targets) must be .* = \[2, 6\]", run,
                       (support, targets[:, :5], query))


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_one_hot_or_float_labels_are_one_line(name):
    support, labels, query = episodes()
    head = heads.build(name, **MINIMAL[name])
    onehot = np.eye(3, dtype=np.float32)[labels]
    message = one_line_error(ValueError, r"support labels must be int \[T, n\] = \[2, 6\] with "
                                         r"values in \[0, 3\); got float32 \[2, 6, 3\] "
                                         r"\(one-hot\?\)", head, (support, onehot, query))
    assert message.startswith(type(head).__name__)
    one_line_error(ValueError, r"support labels must be int .*; got float64 \[2, 6\]$", head,
                   (support, labels.astype(np.float64), query))
    one_line_error(ValueError, r"inputs must be .*; got 2 inputs", head, (support, labels))


def test_identity_head_predicts_the_query_features_and_trains_them_to_the_targets():
    """W = I: predictions are Q itself, so the mean squared loss's gradient in Q is
    (Q - Y_q) / Q.size."""
    support, targets, query = inputs_for("identity")
    head = heads.build("identity", dtype="float64")
    solution = head.solve((support, targets, query))
    np.testing.assert_array_equal(solution.predictions, query)
    np.testing.assert_array_equal(solution.weights, np.broadcast_to(np.eye(4), (2, 4, 4)))
    assert solution.certificate is None and bool(np.all(solution.used_features))
    Q, Y = tf.constant(query), tf.constant(targets)
    with tf.GradientTape() as tape:
        tape.watch(Q)
        loss = 0.5 * tf.reduce_mean(tf.square(Y - head((support, targets, Q))))
    np.testing.assert_allclose(tape.gradient(loss, Q), (query - targets) / query.size,
                               rtol=1e-12)
    one_line_error(ValueError, r"IdentityHead: support targets \[T, n, k\] need k = m = 4 "
                               r"\(one target column per feature\); got k = 3", head,
                   (support, targets[..., :3], query))
    one_line_error(ValueError, r"IdentityHead: support targets must be float \[T, n, m\]",
                   head, (support, targets[..., 0], query))


@pytest.mark.parametrize("name", ["lasso", "ridge"])
def test_integer_regression_targets_are_one_line(name):
    support, labels, query = episodes()
    one_line_error(ValueError, r"support targets must be float \[T, n\] or \[T, n, k\] with "
                               r"\[T, n\] = \[2, 6\] \(real values\); got int32 \[2, 6\]",
                   heads.build(name, **MINIMAL[name]), (support, labels, query))
