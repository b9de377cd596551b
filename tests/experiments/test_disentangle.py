"""The disentanglement experiment at tiny sizes: step, strategies, penalties, metrics, resume.

End-to-end runs go through `sdis_tf.experiments.run`, as main.py does: on the
renderer (its hues periodic by default: 9 latents), on the sprite world with a
nuisance factor, and on tiny fake files in tmp_path given as `config.data.path`:
a dSprites-like npz (one channel, a constant colour factor dropped, K = 5, shape
categorical and orientation periodic by default: 7 latents) and a plain h5 with
custom keys and an incomplete grid (K = 3, 12x12x3 images average-pooled to 6x6).
"""

import itertools
import json
import logging
import os
import shutil

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import config_schema, experiments
from sdis_tf.config_files import load_config
from sdis_tf.data import pipeline
from sdis_tf.data.latents import FACTOR_NAMES
from sdis_tf.data.tasks import TaskBatch
from sdis_tf.experiments import (disentangle, disentangle_eval, disentangle_figures,
                                 disentangle_rescore)
from sdis_tf.models.conv4 import Conv4Encoder
from sdis_tf.solvers import lasso_lambda_max, ridge_lambda_max
from sdis_tf.train import bilevel, distribute
from sdis_tf.train.rundir import CHECKPOINTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE, TASKS, SAMPLES = 16, 4, 10


def _config(preset="tiny", **data):
    """configs/disentangle.py:preset with the config.data fields `data`."""
    config = load_config(os.path.join(ROOT, "configs", "disentangle.py"), preset)
    config.data.update(data)
    return config


def _batch(query: bool) -> TaskBatch:
    """A fixed batch of random images whose targets depend on the images (learnable)."""
    x = tf.random.stateless_uniform([TASKS, 2 * SAMPLES, SIZE, SIZE, 3], [3, 4])
    w = tf.random.stateless_normal([TASKS, 3], [5, 6])
    y = tf.einsum("tnc,tc->tn", tf.reduce_mean(x, axis=[2, 3]) - 0.5, w) * 10.0
    if not query:
        return TaskBatch(x[:, :SAMPLES], y[:, :SAMPLES])
    return TaskBatch(x[:, :SAMPLES], y[:, :SAMPLES], x[:, SAMPLES:], y[:, SAMPLES:])


def _trainer(method, strategy, learning_rate=1e-3, eps=0.1, precision="float32"):
    config = _config().to_dict()
    config.update(method=method, eps=eps)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        encoder = Conv4Encoder(6, width=0.25, hidden=16, precision=precision)
        encoder(tf.zeros([1, SIZE, SIZE, 3]), training=False)
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(encoder.trainable_variables)
    trainer = bilevel.BilevelTrainer(
        encoder, disentangle.make_head(config), optimizer, strategy, num_tasks=TASKS,
        jit_compile=False, outer_penalty=disentangle.outer_penalty(method, eps))
    return trainer, encoder


def test_presets_are_valid():
    for preset in ("", "cpu", "cpu64", "sprites", "tiny"):
        assert config_schema.check(_config(preset), disentangle.SCHEMA,
                                   disentangle.CONSTRAINTS) == []
    config = _config("tiny")
    config.data.source = "shapes3d"   # the old field: data.path alone chooses the source
    with pytest.raises(config_schema.ConfigError, match="config.data.source: unknown key"):
        experiments.run(config, "/nonexistent")
    config = _config("tiny").to_dict()
    config["data"]["path"] = 3
    with pytest.raises(config_schema.ConfigError,
                       match=r"config.data.path = 3 has type int; allowed: a string"):
        experiments.run(config, "/nonexistent")


def test_text_spec():
    assert config_schema.Text().problem("") is None
    assert config_schema.Text(nonempty=True).problem("") == \
        "is empty; allowed: a non-empty string"
    assert config_schema.Text().problem(None) == \
        "has type NoneType; allowed: a string ('' when unused)"


def test_trainer_fed_by_batches_only_has_no_train_step():
    trainer, _ = _trainer("lasso", tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="train_on_batch"):
        trainer.train_step(0)


def test_step_under_default_and_mirrored_strategies_agree():
    batch = _batch(query=True)
    results = {}
    for name in ("default", "mirrored"):
        strategy = distribute.create_strategy(name)
        trainer, encoder = _trainer("lasso", strategy)
        metrics = {k: float(v) for k, v in trainer.train_on_batch(batch).items()}
        results[name] = metrics, [v.numpy() for v in encoder.weights]
    assert distribute.create_strategy("mirrored").num_replicas_in_sync == 2
    (m_default, w_default), (m_mirrored, w_mirrored) = results["default"], results["mirrored"]
    assert m_default.keys() == {"loss", "grad_norm", "support"}
    for key in m_default:
        np.testing.assert_allclose(m_mirrored[key], m_default[key], rtol=1e-4, atol=1e-6)
    for a, b in zip(w_mirrored, w_default):  # includes the TaskBatchNorm moving statistics
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,query,precision", [
    ("lasso", False, "float32"), ("outer_lasso", True, "float32"), ("ridge", True, "float32"),
    ("lasso", False, "mixed_bfloat16")])
def test_a_few_steps_lower_the_outer_loss(method, query, precision):
    batch = _batch(query)
    trainer, _ = _trainer(method, tf.distribute.get_strategy(), learning_rate=3e-3,
                          precision=precision)
    losses = [float(trainer.train_on_batch(batch)["loss"]) for _ in range(12)]
    # The last three steps' mean: outer-Lasso's loss (with its non-smooth penalty on the
    # task weights) zigzags at this learning rate, and one step's value depends on the CPU's
    # rounding (a Sapphire Rapids machine gave 0.13 -> 0.46 -> 0.07 -> 0.12 in 8 steps).
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_outer_penalties_match_their_formulas():
    F = tf.random.stateless_normal([3, 7, 4], [1, 1], dtype=tf.float64)
    y = tf.random.stateless_normal([3, 7], [2, 2], dtype=tf.float64)
    W = tf.constant([[1.0, 0.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 1.0, -1.0]],
                    tf.float64)
    Fn, yn, Wn = F.numpy(), y.numpy(), W.numpy()
    lam_l1 = np.abs(np.einsum("tnm,tn->tm", Fn, yn)).max(axis=1) / 7
    lam_l2 = (Fn ** 2).sum(axis=(1, 2)) / 7
    np.testing.assert_allclose(lasso_lambda_max(F, y), lam_l1)
    np.testing.assert_allclose(ridge_lambda_max(F), lam_l2)
    l1 = disentangle.outer_penalty("outer_lasso", 0.3)(W, F, y).numpy()
    np.testing.assert_allclose(l1, 0.3 * lam_l1 * np.abs(Wn).sum(axis=1))
    l2 = disentangle.outer_penalty("outer_ridge", 0.3)(W, F, y).numpy()
    np.testing.assert_allclose(l2, 0.15 * lam_l2 * (Wn ** 2).sum(axis=1))
    assert disentangle.outer_penalty("lasso", 0.3) is None


def test_latent_targets_standardise_each_task_over_support_and_query():
    z = tf.random.stateless_normal([3, 5, 2], [7, 7], dtype=tf.float64) * 4.0 + 1.5
    z_query = tf.random.stateless_normal([3, 4, 2], [8, 8], dtype=tf.float64)
    y, y_query = disentangle.latent_targets(z, z_query)
    joint = np.concatenate([z.numpy(), z_query.numpy()], axis=1)
    expected = (joint - joint.mean(1, keepdims=True)) / np.sqrt(joint.var(1, keepdims=True)
                                                               + 1e-6)
    np.testing.assert_allclose(np.concatenate([y, y_query], axis=1), expected, rtol=1e-10)
    alone, none = disentangle.latent_targets(z)
    assert none is None
    np.testing.assert_allclose(alone.numpy().mean(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(alone.numpy().std(1), 1.0, rtol=1e-6)


def test_supervised_steps_fit_the_codes_to_the_latents():
    """The supervised reference: the identity head turns the outer loss into the regression
    of the (per-task standardised) targets by the codes, which a few steps lower."""
    x = tf.random.stateless_uniform([TASKS, SAMPLES, SIZE, SIZE, 3], [3, 4])
    quadrants = tf.concat([tf.reduce_mean(x[:, :, :SIZE // 2], axis=[2, 3]),
                           tf.reduce_mean(x[:, :, SIZE // 2:], axis=[2, 3])], axis=-1)
    y, _ = disentangle.latent_targets(quadrants)                # [T, n, 6] from the images
    trainer, _ = _trainer("supervised", tf.distribute.get_strategy(), learning_rate=3e-3)
    losses = [float(trainer.train_on_batch(TaskBatch(x, y))["loss"]) for _ in range(12)]
    assert 0.7 < losses[0] < 1.3      # 1/2 E||y - f||^2 = 1 - corr for standardised columns
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_supervised_targets_are_the_standardised_latents_of_each_batch():
    """The supervised method's y_support / y_query are `latent_targets` of the pipeline's z /
    z_query, support and query standardised together (a lasso run's are the task targets)."""
    config = _config(path="sprites", categorical=("shape",), periodic=("orientation:1",),
                     num_query=3).to_dict()
    config["method"] = "supervised"
    source = disentangle.prepare(config)
    latents = source.default_latents(1.0, disentangle.factor_roles(config["data"], source))
    batches = lambda config: next(iter(disentangle.task_batches(  # noqa: E731
        config, source, latents, seed=3, num_tasks=2, num_query=3, num_steps=1)))
    raw = next(iter(pipeline.task_batches(
        source, num_tasks=2, num_samples=config["data"]["num_samples"], num_query=3,
        distribution=disentangle.distribution_name(config["data"]), seed=3, num_steps=1,
        latents=latents)))
    y, y_query = disentangle.latent_targets(raw["z"], raw["z_query"])
    supervised = batches(config)
    assert supervised["y_support"].shape == (2, config["data"]["num_samples"], 8)
    np.testing.assert_allclose(supervised["y_support"], y, rtol=1e-6)
    np.testing.assert_allclose(supervised["y_query"], y_query, rtol=1e-6)
    lasso = batches({**config, "method": "lasso"})
    np.testing.assert_allclose(lasso["y_support"], raw["y"], rtol=1e-6)


def test_supervised_needs_one_code_per_latent_column(tmp_path):
    config = _config(path="sprites", categorical=("shape",), periodic=("orientation:1",))
    config.update(method="supervised")
    config.model.num_latents = 5
    workdir = tmp_path / "never"
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, str(workdir))
    assert ("config.model.num_latents = 5 must be 0 or d = 8 (the latent columns) with "
            "config.method = 'supervised'") in str(error.value), str(error.value)
    assert not workdir.exists()


EVAL_KEYS = {f"eval/{p}{name}{s}" for name in ("mcc", "r", "dci_d", "dci_c")
             for p, s in (("", ""), ("", "_train"), ("ica_", ""))} | {"eval/loss"}
CONTINUOUS_KEYS = {"eval/mcc_continuous", "eval/mcc_continuous_train",
                   "eval/ica_mcc_continuous"}


def _factor_keys(names, categorical=()):
    """The per-factor eval keys of task factors `names`."""
    keys = {f"{key}/{name}" for key in EVAL_KEYS - {"eval/loss"} for name in names}
    point_sets = (("", ""), ("", "_train"), ("ica_", ""))
    return keys | {f"eval/{p}{score}{s}/{name}" for p, s in point_sets for name in names
                   for score in ["codes"] + ["class_acc"] * (name in categorical)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("disentangle"))
    summary = experiments.run(_config(), workdir)
    return workdir, summary


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_run_writes_every_metric_image_and_result(finished_run):
    workdir, summary = finished_run
    assert summary.startswith("lasso eps=0.1 step=4: MCC=")
    records = _records(workdir)
    assert [r["step"] for r in records] == [0, 2, 4]
    keys = EVAL_KEYS | CONTINUOUS_KEYS | _factor_keys(FACTOR_NAMES)
    assert set(records[0]) >= keys
    assert set(records[-1]) >= keys | {"train/loss", "train/grad_norm", "train/support",
                                       "train/input_wait"}
    for key in keys:
        value = records[-1][key]
        assert isinstance(value, float) and np.isfinite(value), (key, value)
        if "codes" not in key:
            assert key == "eval/loss" or 0.0 <= value <= 1.0 + 1e-9, (key, value)
    for prefix, suffix in (("", ""), ("", "_train"), ("ica_", "")):   # each code owns a factor
        owned = [records[-1][f"eval/{prefix}codes{suffix}/{name}"] for name in FACTOR_NAMES]
        assert all(n == int(n) >= 0 for n in owned) and sum(owned) == 9, (prefix, owned)
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    assert result["factor_names"] == list(FACTOR_NAMES) and result["num_rows"] == 480000
    # The 3D Shapes hues are periodic by default: cos, sin each, 9 latents and codes.
    assert result["factor_roles"] == {**dict.fromkeys(FACTOR_NAMES[:3], "periodic:1:1"),
                                      **dict.fromkeys(FACTOR_NAMES[3:], "continuous")}
    assert result["latent_names"][:2] == ["floor_hue.cos", "floor_hue.sin"]
    assert len(result["latent_names"]) == 9
    assert [np.shape(s) for s in result["sweeps"]] == [(10, 9), (10, 9), (10, 9), (8, 9),
                                                       (4, 9), (15, 9)]
    assert os.path.getsize(os.path.join(workdir, "sweeps.png")) > 1000
    with np.load(os.path.join(workdir, "codes.npz")) as saved:
        # the agreement rows: the same data-set rows whatever the run's seed
        np.testing.assert_array_equal(
            saved["rows"], disentangle_eval.agreement_rows(100, 480000))
        assert saved["codes"].shape == (100, 9) and saved["codes"].dtype == np.float32
        assert np.isfinite(saved["codes"]).all()
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    assert events
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(
            os.path.join(workdir, "tensorboard", events[0])):
        tags.update(v.tag for v in event.summary.value)
    assert {"eval/mcc", "eval/ica_mcc", "eval/sweeps", "train/loss"} <= tags
    assert _factor_keys(FACTOR_NAMES) | CONTINUOUS_KEYS <= tags  # one tag per factor and score


def test_mcc_continuous_is_the_mean_of_the_continuous_factors_terms(finished_run):
    """The hues are periodic: the MCC over the continuous factors is the mean of the MCC
    terms of scale, shape and orientation, logged on both point sets and for ICA; a result
    without it (written before it was logged) gets the same value computed."""
    result = _result(finished_run[0])
    for prefix, suffix in (("", ""), ("", "_train"), ("ica_", "")):
        key = f"eval/{prefix}mcc_continuous{suffix}"
        terms = [result[f"eval/{prefix}mcc{suffix}/{name}"] for name in FACTOR_NAMES[3:]]
        assert result[key] == pytest.approx(np.mean(terms), abs=1e-12)
        assert _records(finished_run[0])[-1][key] == result[key]
        old = {k: v for k, v in result.items() if k != key}
        assert disentangle_figures.result_mcc_continuous(old, prefix, suffix) == \
            pytest.approx(result[key], abs=1e-12)


def test_summary_prints_each_factors_scores_on_one_line(finished_run):
    summary, result = finished_run[1], _result(finished_run[0])
    lines = summary.splitlines()
    assert lines[1] == (f"  continuous factors: MCC={result['eval/mcc_continuous']:.3f} "
                        f"MCC_train={result['eval/mcc_continuous_train']:.3f}")
    assert lines[2] == ("  per factor (grid MCC term, R, DCI-D, DCI-C; training-distribution "
                        "MCC term; codes it owns on the grid):")
    assert len(lines) == 3 + len(FACTOR_NAMES)
    for line, name in zip(lines[3:], FACTOR_NAMES):
        role = result["factor_roles"][name]
        scores = " ".join(f"{label}={result[f'eval/{key}/{name}']:.3f}" for key, label in (
            ("mcc", "MCC"), ("r", "R"), ("dci_d", "DCI-D"), ("dci_c", "DCI-C"),
            ("mcc_train", "MCC_train")))
        scores += f" codes={result[f'eval/codes/{name}']:g}"
        assert line.startswith(f"    {name} ({role}) ") and line.endswith(f"  {scores}"), line


def test_rescore_reproduces_the_final_evaluation_and_scores_more_rows(finished_run, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(finished_run[0], run)
    final = _records(run)[-1]
    # the run's own rows: the same scores as the evaluation at the end of training
    same = disentangle_rescore.rescore(run, grid_points=300)
    assert same["step"] == 4 and same["grid_points"] == 300 and same["train_points"] == 300
    for key in ("eval/mcc", "eval/r", "eval/dci_d", "eval/mcc_train", "eval/ica_mcc"):
        assert same[key] == pytest.approx(final[key], abs=1e-6), key
    os.remove(os.path.join(run, "codes.npz"))
    more = disentangle_rescore.rescore(run, grid_points=2000, train_points=500,
                                       agreement_points=100)
    assert more["grid_points"] == 2000 and more["train_points"] == 500
    with np.load(os.path.join(run, "codes.npz")) as rescored, \
            np.load(os.path.join(finished_run[0], "codes.npz")) as trained:
        np.testing.assert_array_equal(rescored["rows"], trained["rows"])
        np.testing.assert_allclose(rescored["codes"], trained["codes"], atol=1e-6)
    assert all(0.0 <= more[k] <= 1.0 + 1e-9 for k in ("eval/mcc", "eval/r", "eval/mcc_train"))
    with open(os.path.join(run, "rescore_grid2000.json")) as f:
        stored = json.load(f)
    assert stored["eval/mcc"] == more["eval/mcc"] and stored["grid_points"] == 2000
    assert _records(run)[-1] == final  # the run's own records are untouched
    with pytest.raises(config_schema.ConfigError,
                       match=r"config.eval.grid_points = -1 is out of range"):
        disentangle_rescore.rescore(run, grid_points=-1)
    with pytest.raises(config_schema.ConfigError,
                       match=r"config.eval.grid_points must be 0 \(every row\) or >= 16"):
        disentangle_rescore.rescore(run, grid_points=5)
    with pytest.raises(config_schema.ConfigError,
                       match=r"config.eval.train_points = 3 is out of range"):
        disentangle_rescore.rescore(run, train_points=3)
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    config["data"]["factors"] = ["floor_hue", "colour"]
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(config_schema.ConfigError,  # the data is checked as a run checks it
                       match=r"config.data.factors = \('floor_hue', 'colour'\): 'colour' is "
                             "not a factor of the data"):
        disentangle_rescore.rescore(run)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        disentangle_rescore.rescore(str(tmp_path / "empty"))


def _roll_back_and_rerun(reference, workdir, config):
    """Copies a finished run, rolls it back to its step-2 checkpoint (as if killed before
    step 4), reruns it and checks it ends with the metrics of the uninterrupted run."""
    shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns("tensorboard"))
    checkpoints = os.path.join(workdir, CHECKPOINTS)
    os.remove(os.path.join(workdir, "result.json"))
    for name in os.listdir(checkpoints):
        if name.startswith("ckpt-4"):
            os.remove(os.path.join(checkpoints, name))
    with open(os.path.join(checkpoints, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    experiments.run(config, workdir)
    drop = ("time", "elapsed", "train/input_wait")
    resumed, expected = _records(workdir), _records(reference)
    assert [r["step"] for r in resumed] == [0, 2, 4]
    for got, want in zip(resumed, expected):
        keys = sorted(set(want) - set(drop))
        assert sorted(set(got) - set(drop)) == keys
        np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys],
                                   rtol=1e-5, atol=1e-5)
    for got, want in zip(_result(workdir)["sweeps"], _result(reference)["sweeps"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- labelled-factor files

DSPRITES_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
H5_NAMES = ("hue", "size", "angle")


def _square_images(levels: np.ndarray, size: int) -> np.ndarray:
    """Binary images [N, size, size]: a square whose side and position follow the levels."""
    images = np.zeros((len(levels), size, size), np.uint8)
    for i, level in enumerate(levels):
        side = 3 + level[1] + level[0]
        x, y = 1 + 2 * level[-2], 1 + 2 * level[-1]
        images[i, y:y + side, x:x + side] = 1
    return images


def _dsprites(path) -> None:
    """DeepMind's layout: imgs uint8 0/1 [N, 16, 16], latents_values with colour constant."""
    sizes = (1, 3, 2, 2, 2, 2)
    classes = np.array(list(itertools.product(*map(range, sizes))), np.int64)
    values = classes.astype(np.float64)
    values[:, 0] = 1.0                                       # colour: one value
    values[:, 2] = 0.5 + 0.5 * classes[:, 2]                  # scale
    values[:, 3] = 2 * np.pi * classes[:, 3] / 40            # orientation
    metadata = {"latents_names": DSPRITES_NAMES, "latents_sizes": np.array(sizes)}
    np.savez(path, imgs=_square_images(classes[:, 1:], 16), latents_values=values,
             latents_classes=classes, metadata=np.array(metadata, object))


def _plain_h5(path) -> None:
    """Custom keys 'pictures' [N, 12, 12, 3] float32 and 'angles' [N, 3], with names;
    6 of the 4x3x3 grid points are missing (N = 30)."""
    levels = np.array(list(itertools.product(range(4), range(3), range(3))))
    levels = np.delete(levels, [1, 5, 13, 14, 22, 35], axis=0)
    factors = np.stack([levels[:, 0] / 4.0, 1.0 + levels[:, 1], 15.0 * levels[:, 2]], axis=1)
    gray = _square_images(levels, 12).astype(np.float32)
    pictures = np.stack([gray, gray * (levels[:, :1, None] / 3.0), 1.0 - gray], axis=-1)
    with h5py.File(path, "w") as f:
        f["pictures"] = pictures
        f["angles"] = factors
        f["factor_names"] = np.array(H5_NAMES, dtype="S")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("factor_files")
    paths = {"npz": folder / "dsprites_like.npz", "h5": folder / "mine.h5"}
    _dsprites(paths["npz"])
    _plain_h5(paths["h5"])
    return {key: str(path) for key, path in paths.items()}


def _check_finished(workdir, names, num_rows, num_latents=None, categorical=()):
    """The run's records, per-factor scores of the task factors `names` only, sweeps and
    m = d = `num_latents` codes (default: one per factor)."""
    records = _records(workdir)
    assert [r["step"] for r in records] == [0, 2, 4]
    factor_keys = _factor_keys(names, categorical)
    for key in EVAL_KEYS | CONTINUOUS_KEYS | factor_keys:
        value = records[-1][key]
        assert isinstance(value, float) and np.isfinite(value), (key, value)
    assert {k for k in records[-1] if k.count("/") == 2} == factor_keys
    result = _result(workdir)
    assert tuple(result["factor_names"]) == names
    assert result["num_rows"] == num_rows
    assert len(result["sweeps"]) == len(names)                          # one per task factor
    assert {np.shape(s)[1] for s in result["sweeps"]} == {num_latents or len(names)}  # m = d
    assert os.path.getsize(os.path.join(workdir, "sweeps.png")) > 1000
    return result


def test_dsprites_npz_runs_with_one_channel_and_k5(files, tmp_path, caplog):
    workdir = str(tmp_path / "dsprites")
    caplog.set_level(logging.INFO, logger="absl")
    summary = experiments.run(_config(path=files["npz"]), workdir)
    assert summary.startswith("lasso eps=0.1 step=4: MCC=")
    (shape,) = [line for line in summary.splitlines() if "shape (categorical)" in line]
    assert " class_acc=0." in shape and " class_acc_train=0." in shape
    assert "\n  continuous factors: MCC=0." in summary
    # dSprites' defaults: shape categorical (3 classes: 2 latents), orientation periodic.
    (roles,) = [line for line in caplog.text.splitlines() if "factor roles (config.data" in line]
    for fragment in ("factor roles (config.data.factors, .categorical, .periodic): task "
                     "factors: shape categorical (3 classes: 0, 1, 2; 2 latents); scale "
                     "continuous; orientation periodic (period "
                     f"{2 * np.pi:g}, symmetry 1: cos, sin",
                     "; posX continuous; posY continuous -> 7 latents; nuisance factors: none"):
        assert fragment in roles, roles
    result = _check_finished(workdir, DSPRITES_NAMES[1:], 48, num_latents=7,
                             categorical=("shape",))
    # The grid is complete: each sweep runs over all the values of its factor.
    assert [np.shape(s)[0] for s in result["sweeps"]] == [3, 2, 2, 2, 2]


def test_sprite_world_with_a_nuisance_factor(tmp_path):
    """pos_y a nuisance: in the images only; shape categorical (4 classes: 3 latents) and
    orientation periodic as the preset declares them, 3 + 1 + 2 + 1 = 7 latents."""
    workdir = str(tmp_path / "sprites")
    config = load_config(os.path.join(ROOT, "configs", "disentangle.py"), "tiny")
    preset = load_config(os.path.join(ROOT, "configs", "disentangle.py"), "sprites").data
    config.data.update(path=preset.path, categorical=preset.categorical,
                       periodic=preset.periodic, factors=("shape", "scale", "orientation",
                                                          "pos_x"))
    summary = experiments.run(config, workdir)
    assert "pos_y" not in summary
    result = _check_finished(workdir, ("shape", "scale", "orientation", "pos_x"), 34_560,
                             num_latents=7, categorical=("shape",))
    assert result["factor_roles"] == {"shape": "categorical", "scale": "continuous",
                                      "orientation": "periodic:1:1", "pos_x": "continuous",
                                      "pos_y": "nuisance"}
    assert [np.shape(s)[0] for s in result["sweeps"]] == [4, 6, 10, 12]


@pytest.fixture(scope="module")
def h5_run(files, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("h5_run"))
    config = _config(path=files["h5"], images_key="pictures", factors_key="angles",
                     image_size=6)
    experiments.run(config, workdir)
    return config, workdir


def test_h5_with_custom_keys_and_an_incomplete_grid(h5_run):
    config, workdir = h5_run
    result = _check_finished(workdir, H5_NAMES, 30)
    # every factor continuous: the MCC over the continuous factors is the MCC, not printed
    assert result["eval/mcc_continuous"] == pytest.approx(result["eval/mcc"], abs=1e-12)
    summary = experiments.run(config, workdir)             # the finished run's summary
    assert "continuous factors" not in summary and "\n    angle (continuous)  MCC=" in summary
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["images_key"] == "pictures"
    # The sweeps run through a reference row with every neighbour present: 4, 3, 3 values.
    assert [np.shape(s)[0] for s in result["sweeps"]] == [4, 3, 3]


def test_h5_run_resumes_from_its_checkpoint(h5_run, tmp_path):
    config, reference = h5_run
    _roll_back_and_rerun(reference, str(tmp_path / "resumed"), config)


@pytest.mark.parametrize("data,field,fragment", [
    ({"path": "/nonexistent/x.npz"}, "config.data.path", "no such file"),
    ({"images_key": "pictures"}, "config.data.images_key", "needs config.data.path"),
    ({"path": "h5", "images_key": "nope"}, "config.data.images_key = 'nope'",
     "keys found: 'angles'"),
    ({"path": "h5", "images_key": "angles", "factors_key": "pictures"},
     "config.data.factors_key = 'pictures'", "images 'angles' have shape"),
    ({"path": "h5", "images_key": "pictures", "factors_key": "angles", "image_size": 5},
     "config.data.image_size = 5", "must divide the images' height 12"),
    ({"path": "npz", "image_size": 32}, "config.data.image_size = 32", "0 keeps 16x16"),
    ({"path": "", "image_size": 0}, "config.data.image_size = 0", "with the renderer"),
    ({"path": "sprites", "image_size": 24}, "config.data.image_size = 24", "with the renderer"),
    ({"path": "npz", "factors": ("shape", "colour")}, "config.data.factors = ('shape', 'colour')",
     "'colour' is not a factor of the data (factors: shape, scale, orientation, posX, posY)"),
    ({"periodic": ("orientation:0",)}, "config.data.periodic = ('orientation:0',) item 0",
     "is not a periodic declaration (period 0 is not a finite number > 0); allowed: 'auto' "
     "or \"name:period[:symmetry]\""),
    ({"path": "npz", "categorical": ("auto", "scale"), "periodic": ("scale:1",)},
     "config.data.categorical = ('auto', 'scale'), config.data.periodic = ('scale:1',)",
     "'scale' is declared both categorical and periodic"),
    ({"path": "npz", "factors": ("scale", "posX"), "categorical": ("shape",)},
     "config.data.categorical = ('shape',)", "'shape' is a nuisance factor"),
    ({"path": "h5", "images_key": "pictures", "factors_key": "angles", "image_size": 6,
      "periodic": ("size:2",)}, "config.data.periodic = ('size:2',)",
     "puts the values of 'size' on at most two opposite points"),
])
def test_bad_data_fields_fail_before_any_work_naming_the_field(files, tmp_path, data, field,
                                                               fragment):
    data = {k: files.get(v, v) if k == "path" else v for k, v in data.items()}
    workdir = tmp_path / "never"
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(_config(**data), str(workdir))
    assert field in str(error.value) and fragment in str(error.value), str(error.value)
    assert not workdir.exists()


def test_task_fields_are_checked_against_the_number_of_latents(files, tmp_path):
    config = _config(path=files["npz"])          # shape: 2 latents, orientation: 2
    config.tasks.kind, config.tasks.block_size = "block", 2
    with pytest.raises(config_schema.ConfigError, match="block_size = 2 must divide the "
                       "number of latents 7"):
        experiments.run(config, str(tmp_path / "never"))
    config.data.update(categorical=(), periodic=())
    with pytest.raises(config_schema.ConfigError, match="block_size = 2 must divide the "
                       "number of latents 5"):
        experiments.run(config, str(tmp_path / "never"))


def test_a_file_with_too_few_rows_to_score_is_a_config_error(tmp_path):
    path = str(tmp_path / "three_rows.npz")
    levels = np.array([[0, 1], [1, 2], [2, 0]])
    np.savez(path, images=_square_images(levels, 16), factors=levels)
    workdir = tmp_path / "never"
    with pytest.raises(config_schema.ConfigError, match="holds 3 rows; the evaluation needs at "
                       "least 16"):
        experiments.run(_config(path=path), str(workdir))
    assert not workdir.exists()


@pytest.mark.parametrize("model,eval_,fragment", [
    ({"num_latents": 20}, {"grid_points": 21},
     "config.eval.grid_points = 21 must be 0 (every row) or >= m + 2 = 22 (m = "
     "config.model.num_latents = 20; R regresses each latent on all m codes)"),
    ({"num_latents": 15}, {"train_points": 16},
     "config.eval.train_points = 16 must be >= m + 2 = 17 (m = config.model.num_latents = 15"),
    # m = 0 follows the latent columns: 17 classes of factor 0 give 16 of them, + 1
    ({}, {"train_points": 18}, "config.eval.train_points = 18 must be >= m + 2 = 19 (m = the "
     "17 latent columns, config.model.num_latents = 0"),
])
def test_too_few_points_for_r_are_a_config_error(tmp_path, model, eval_, fragment):
    path = str(tmp_path / "many_classes.npz")
    levels = np.array(list(itertools.product(range(17), range(2))))
    np.savez(path, images=_square_images(levels, 16), factors=levels,
             factor_names=np.array(["kind", "x"]))
    config = _config(path=path, categorical=("kind",))
    config.model.update(model)
    config.eval.update(eval_)
    workdir = tmp_path / "never"
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, str(workdir))
    assert str(error.value).count("\n") == 1 and fragment in str(error.value), str(error.value)
    assert not workdir.exists()


def test_rescore_reads_runs_from_before_factor_roles(tmp_path):
    run = str(tmp_path / "run")
    experiments.run(_config(periodic=()), run)  # every factor continuous, as before roles
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    for role in ("factors", "categorical", "periodic"):
        del config["data"][role]
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)
    rescored = disentangle_rescore.rescore(run, grid_points=300)
    assert rescored["eval/mcc"] == pytest.approx(_records(run)[-1]["eval/mcc"], abs=1e-6)
