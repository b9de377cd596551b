"""The fewshot experiment end to end (tiny preset): train, validate, test, sparsity, resume."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import config_schema, experiments, heads
from sdis_tf.config_files import load_config
from sdis_tf.experiments import fewshot
from sdis_tf.train import loop, meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(preset="tiny", **overrides):
    config = load_config(os.path.join(ROOT, "configs", "fewshot.py"), preset)
    config.update_from_flattened_dict(overrides)
    return config


def _records(workdir, run):
    with open(os.path.join(workdir, run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _run_points(workdir, points, **common):
    """Runs one point per {name: overrides} into workdir/<name> (as a sweep does)."""
    return {name: experiments.run(_config(**common, **overrides), os.path.join(workdir, name))
            for name, overrides in points.items()}


TINY_POINTS = {"sparse_svm_eps0.3": {"method": "sparse_svm"}, "proto": {"method": "proto"}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tiny"))
    _run_points(workdir, TINY_POINTS)
    return workdir, fewshot.report(workdir)


def test_tiny_run_trains_validates_tests_and_plots(tiny):
    workdir, table = tiny
    config = _config()
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["proto", "sparse_svm_eps0.3"]
    results = {r["run"]: r for r in fewshot.collect_results(workdir)}
    steps = config.train.epochs * config.train.steps_per_epoch
    for run in ("sparse_svm_eps0.3", "proto"):
        records = _records(workdir, run)
        # validation at the start and after every epoch
        assert [r["step"] for r in records] == [0, 2, 4] == list(range(0, steps + 1, 2))
        assert {"eval/accuracy", "eval/ci95", "eval/features_used", "train/loss",
                "train/accuracy", "train/features_used"} <= set(records[-1])
        assert all(np.isfinite(v) for r in records for k, v in r.items() if k != "time")
        assert os.listdir(os.path.join(workdir, run, "tensorboard"))
        result = results[run]
        # trained 3-way; tested 3-way and 2-way 1-shot
        assert result["settings"] == ["3w1s", "2w1s"]
        for setting in result["settings"]:
            assert result[f"test/{setting}/episodes"] == config.eval.test_episodes == 6
            assert 0.0 <= result[f"test/{setting}/accuracy"] <= 1.0
            assert result[f"test/{setting}/ci95"] >= 0.0
    sparse, proto = results["sparse_svm_eps0.3"], results["proto"]
    assert 0.0 < sparse["test/3w1s/features_used"] < 1.0 and sparse["eps"] == 0.3
    assert proto["test/3w1s/features_used"] == proto["test/2w1s/features_used"] == 1.0
    # feature usage: one value per feature (4 channels x 4 x 4), sorted, mean = features used
    stored = fewshot.collect_results(workdir)
    assert [r["run"] for r in stored] == ["proto", "sparse_svm_eps0.3"]
    usage = np.asarray(stored[1]["feature_usage"])
    assert usage.shape == (64,) == (stored[1]["num_features"],)
    assert np.all(np.diff(usage) <= 0) and np.all((usage >= 0) & (usage <= 1))
    np.testing.assert_allclose(usage.mean(), sparse["test/3w1s/features_used"], atol=1e-3)
    assert "3w1s acc (%)" in lines[0] and "2w1s acc (%)" in lines[0]
    assert os.path.getsize(os.path.join(workdir, "fewshot.png")) > 10_000


def test_sigterm_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny, monkeypatch):
    reference, _ = tiny
    config = _config(method="proto")
    workdir = str(tmp_path / "run")
    original = meta.MetaTrainer.train_step

    def interrupted_after_step_0(self, step):
        metrics = original(self, step)
        if step == 0:
            signal.raise_signal(signal.SIGTERM)
        return metrics

    monkeypatch.setattr(meta.MetaTrainer, "train_step", interrupted_after_step_0)
    with pytest.raises(loop.Interrupted, match="stopped by signal SIGTERM at step 1"):
        experiments.run(config, workdir)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("-1")
    monkeypatch.setattr(meta.MetaTrainer, "train_step", original)
    experiments.run(config, workdir)
    resumed, expected = _records(workdir, ""), _records(reference, "proto")
    assert [r["step"] for r in resumed] == [r["step"] for r in expected]
    for got, want in zip(resumed, expected):
        keys = sorted(k for k in want if k not in ("time", "elapsed"))
        assert sorted(k for k in got if k not in ("time", "elapsed")) == keys
        np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys],
                                   rtol=1e-5, atol=1e-6)
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    with open(os.path.join(reference, "proto", "result.json")) as f:
        want = json.load(f)
    for key in ("test/3w1s/accuracy", "test/2w1s/ci95", "test/3w1s/features_used"):
        np.testing.assert_allclose(result[key], want[key], rtol=1e-5, atol=1e-6)


def test_finished_run_is_not_redone(tiny):
    workdir, _ = tiny
    before = _records(workdir, "sparse_svm_eps0.3")
    stored = fewshot.collect_results(workdir)[1]
    assert experiments.run(_config(), os.path.join(workdir, "sparse_svm_eps0.3")) == \
        fewshot.format_table([stored])
    assert _records(workdir, "sparse_svm_eps0.3") == before


def test_confidence_interval_is_1_96_std_over_sqrt_n():
    accuracies = np.random.default_rng(0).uniform(0.4, 1.0, 1000)
    mean, ci = fewshot.confidence_interval(accuracies)
    assert mean == pytest.approx(accuracies.mean())
    assert ci == pytest.approx(1.96 * accuracies.std() / np.sqrt(1000))


def test_heads_and_schedule_from_the_config():
    config = _config("cpu").to_dict()
    assert fewshot.run_name(config) == "sparse_svm_eps0.05"
    sparse = fewshot.make_head(config, 5)
    assert isinstance(sparse, heads.SparseSVMHead) and sparse.eps == 0.05 and not sparse.refit
    config["heads"]["sparse_svm"]["refit"] = True
    assert fewshot.run_name(config) == "sparse_svm_eps0.05_refit"
    assert fewshot.make_head(config, 5).refit
    dense = fewshot.make_head({**config, "method": "dense_svm"}, 5)
    assert isinstance(dense, heads.DenseSVMHead)
    assert fewshot.run_name({**config, "method": "dense_svm"}) == "dense_svm"
    assert isinstance(fewshot.make_head({**config, "method": "ridge"}, 5),
                      heads.RidgeClassifierHead)
    assert isinstance(fewshot.make_head({**config, "method": "proto"}, 5), heads.PrototypeHead)
    schedule = fewshot.learning_rate(_config("").to_dict()["optimizer"], 1000)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 19_999, 20_000, 40_000, 50_001)],
                               [0.1, 0.1, 0.006, 0.0012, 0.00024], rtol=1e-6)


def test_metaoptnet_preset_and_config_errors():
    config = _config("")
    assert (config.model.name, config.model.channels, config.data.image_size) == \
        ("resnet12", (64, 160, 320, 640), 84)
    config.optimizer.factors = (1.0, 0.1)
    config.data.root = ""
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, "/nonexistent")
    assert "config.optimizer.factors has 2 items" in str(error.value)
    assert "config.data.root is empty" in str(error.value)
    config = _config("")
    config.update_from_flattened_dict({"data.dataset": "CIFAR-FS", "data.root": "/data"})
    with pytest.raises(config_schema.ConfigError, match="CIFAR-FS images are 32x32"):
        experiments.run(config, "/nonexistent")


def test_plot_draws_the_fig5_layout(tmp_path):
    usage = lambda p: sorted(np.random.default_rng(0).uniform(0, p, 50), reverse=True)
    test = lambda accuracy, used: {"settings": ["5w1s"], "test/5w1s/accuracy": accuracy,
                                   "test/5w1s/ci95": 0.01, "test/5w1s/features_used": used}
    results = [dict(run=f"sparse_svm_eps{e:g}", method="sparse_svm", eps=e,
                    **test(0.9 - e, 1 - 2 * e), feature_usage=usage(1 - 2 * e))
               for e in (0.05, 0.2)]
    results.append(dict(run="sparse_svm_eps0.2_refit", method="sparse_svm", eps=0.2, refit=True,
                        **test(0.905, 0.6), feature_usage=usage(0.6)))
    results.append(dict(run="dense_svm", method="dense_svm", eps=None, feature_usage=[1.0] * 50,
                        **test(0.91, 1.0)))
    results.append(dict(run="proto", method="proto", eps=None, feature_usage=[1.0] * 50,
                        **test(0.88, 1.0)))
    path = str(tmp_path / "fig5.png")
    fewshot.plot(results, path)
    assert os.path.getsize(path) > 10_000


def test_omniglot_run_trains_on_background_and_tests_on_evaluation(tmp_path, real_data):
    omniglot_dir = str(real_data / "omniglot")
    config = _config("tiny")
    config.data.update(dataset="omniglot", root=omniglot_dir, image_size=14, rotations=True,
                       lake_runs=os.path.join(omniglot_dir, "all_runs.zip"))
    config.eval.settings = ("3w1s", "20w1s")
    config.method = "proto"
    table = experiments.run(config, str(tmp_path / "proto"))
    with open(tmp_path / "proto" / "result.json") as f:
        result = json.load(f)
    assert result["run"] == "proto" and 0.0 <= result["test/20w1s/accuracy"] <= 1.0
    # Lake's 20 runs of 20-way one-shot: an error rate in %, one per run, mean over runs
    assert len(result["lake/runs_error"]) == 20 and result["lake/features_used"] == 1.0
    assert result["lake/error"] == pytest.approx(np.mean(result["lake/runs_error"]), abs=0.01)
    assert all(e in np.arange(0, 101, 5) for e in np.round(result["lake/runs_error"], 2))
    assert "Lake err (%)" in table
    assert "proto" in table and "eval/accuracy" in _records(str(tmp_path), "proto")[-1]
    train = fewshot.load_data("omniglot", omniglot_dir, "train", 0, 14, 0, True)
    val = fewshot.load_data("omniglot", omniglot_dir, "val", 0, 14, 0)
    test = fewshot.load_data("omniglot", omniglot_dir, "test", 0, 14, 0)
    # 964 background classes = 800 training (x 4 rotations) + 164 validation; 659 test.
    assert (len(np.unique(train.labels)), len(np.unique(val.labels)),
            len(np.unique(test.labels))) == (3200, 164, 659)
    config.data.dataset = "procedural"
    with pytest.raises(config_schema.ConfigError, match="config.data.rotations") as error:
        experiments.run(config, str(tmp_path / "bad"))
    assert "config.data.lake_runs is Omniglot's" in str(error.value)


def test_test_settings_are_validated_and_heads_follow_the_number_of_ways(tmp_path):
    config = _config("tiny")
    config.eval.settings = ("3w1s", "5x1s", "1w1s")
    config.data.update(dataset="omniglot", root="/data/omniglot", image_size=28,
                       lake_runs=str(tmp_path / "missing.zip"))
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, str(tmp_path / "bad"))
    assert "config.eval.settings" in str(error.value)
    assert "item 1 ('5x1s') is not a setting" in str(error.value)
    config.eval.settings = ("3w1s",)
    with pytest.raises(config_schema.ConfigError, match="missing.zip' is not a file"):
        experiments.run(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")
    config = _config("tiny").to_dict()
    built = fewshot.FewshotRun(config, fewshot.prepare(config), tf.distribute.get_strategy())
    built.head.scale.assign(3.7)
    head = built.head_for(2)
    assert head.num_ways == 2 and float(head.scale) == pytest.approx(3.7)
    assert head.eps == 0.3 and built.head_for(3) is built.head


def test_results_from_before_test_settings_are_read_as_the_config_setting(tmp_path):
    run = tmp_path / "dense_svm"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "fewshot",
                                                "data": {"ways": 5, "test_shots": 5}}))
    (run / "result.json").write_text(json.dumps(
        {"run": "dense_svm", "method": "dense_svm", "eps": None, "elapsed": 60.0,
         "test/accuracy": 0.98, "test/ci95": 0.002, "test/features_used": 1.0,
         "feature_usage": [1.0] * 4}))
    [result] = fewshot.collect_results(str(tmp_path))
    assert result["settings"] == ["5w5s"] and result["test/5w5s/accuracy"] == 0.98
    assert "test/accuracy" not in result and "98.00 +- 0.20" in fewshot.format_table([result])


def test_a_trained_backbone_is_tested_with_other_heads(tiny, tmp_path):
    workdir, _ = tiny
    retest = str(tmp_path / "retest")
    source = os.path.join(workdir, "proto")
    _run_points(retest, {"eps0.3": {"method": "sparse_svm"},
                         "eps0.1": {"method": "sparse_svm", "heads.sparse_svm.eps": 0.1},
                         "proto": {"method": "proto"}}, **{"eval.backbone_from": source})
    table = fewshot.report(retest)
    assert [line.split()[0] for line in table.splitlines()[1:]] == \
        ["sparse_svm_eps0.1", "sparse_svm_eps0.3", "proto"]
    with open(os.path.join(workdir, "proto", "result.json")) as f:
        trained = json.load(f)
    with open(os.path.join(retest, "proto", "result.json")) as f:
        restored = json.load(f)
    # the same backbone, head and episodes: the same test, without a step of training
    for key in ("test/3w1s/accuracy", "test/2w1s/accuracy", "eval/accuracy"):
        assert restored[key] == pytest.approx(trained[key], abs=1e-6)
    assert restored["backbone_from"].endswith(os.path.join("proto", "checkpoints", "ckpt-4"))
    assert [r["step"] for r in _records(retest, "proto")] == [4]
    assert not os.path.exists(os.path.join(retest, "proto", "checkpoints"))
    with open(os.path.join(retest, "eps0.1", "result.json")) as f:
        sparse = json.load(f)
    assert 0.0 < sparse["test/3w1s/features_used"] <= 1.0 and sparse["eps"] == 0.1
    assert sparse["test_seconds"] > 0.0

    config = _config(method="proto")
    config.eval.backbone_from = str(tmp_path / "nowhere")
    with pytest.raises(config_schema.ConfigError, match="holds no config.json and checkpoint"):
        experiments.run(config, str(tmp_path / "bad"))
    config.eval.backbone_from = os.path.join(workdir, "proto")
    config.model.channels = (4, 8)
    with pytest.raises(config_schema.ConfigError) as error:
        experiments.run(config, str(tmp_path / "bad"))
    assert "was trained with model" in str(error.value) and "'channels': [4, 4]" in str(error.value)
    assert not os.path.exists(tmp_path / "bad")


def test_a_damaged_backbone_checkpoint_falls_back_to_an_older_one(tiny, tmp_path):
    workdir, _ = tiny
    source = str(tmp_path / "source")
    shutil.copytree(os.path.join(workdir, "proto"), source)
    checkpoints = os.path.join(source, "checkpoints")
    newest = sorted(f for f in os.listdir(checkpoints) if f.endswith(".index"))[-1]
    assert newest == "ckpt-4.index"
    [data] = [f for f in os.listdir(checkpoints) if f.startswith("ckpt-4.data")]
    with open(os.path.join(checkpoints, data), "r+b") as f:
        f.truncate(16)
    retest = str(tmp_path / "retest")
    _run_points(retest, {"proto": {"method": "proto"}}, **{"eval.backbone_from": source})
    with open(os.path.join(retest, "proto", "result.json")) as f:
        restored = json.load(f)
    assert restored["backbone_from"] == os.path.join(checkpoints, "ckpt-2")
    assert [r["step"] for r in _records(retest, "proto")] == [2]
    for index in (f for f in os.listdir(checkpoints) if f.endswith(".index")):
        with open(os.path.join(checkpoints, index), "wb") as f:
            f.write(b"not a checkpoint index")
    config = _config(method="proto")
    config.eval.backbone_from = source
    with pytest.raises(config_schema.ConfigError, match="none of its 2 checkpoints can be read"):
        experiments.run(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")
