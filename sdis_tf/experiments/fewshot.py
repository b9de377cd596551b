r"""Sparse meta-learning (paper Section 5.2, Fig. 5): few-shot classification with episode heads.

One run trains one head, `config.method`:
- "sparse_svm": `heads.SparseSVMHead(eps)`, the group-Lasso multiclass SVM
  (lam1 = eps * lambda_max, eps = `heads.sparse_svm.eps`; the lam1 grid of Fig. 5
  is a sweep); with `heads.sparse_svm.refit` the group Lasso only selects the
  features and the dense SVM is fitted on them;
- "dense_svm": the same head with lam1 = 0 (MetaOptNet-SVM's Crammer-Singer
  SVM, with a ridge term lam2);
- "ridge": ridge regression onto one-hot labels (MetaOptNet-RR / R2D2);
- "proto": prototypical networks.

Training (MetaOptNet's recipe, `sdis_tf.train.meta`): `train.episodes_per_batch`
N-way K-shot episodes per step, query cross-entropy with label smoothing, SGD
with Nesterov momentum 0.9, coupled weight decay on the backbone, and the
step schedule lr * factors[i] from epoch boundaries[i] on (MetaOptNet:
0.1 x 1 / 0.06 / 0.012 / 0.0024 from epochs 0 / 20 / 40 / 50 of 60, 1000 steps
per epoch). Validation after every epoch on the same `eval.val_episodes`
episodes (eval/accuracy with eval/ci95, eval/features_used). At the end,
test on `eval.test_episodes` fixed episodes (>= 1000 for reported numbers):
mean accuracy +- 1.96 std / sqrt(N) over episodes (MetaOptNet's test script
divided by sqrt(i+1)), the mean fraction of features an episode's head uses,
and each feature's usage (the fraction of test episodes whose W_:j != 0).

Testing a trained backbone with other heads (`eval.backbone_from` = a run directory):
no training; the run restores that run's latest backbone checkpoint
(weights and batch-norm statistics), is validated once (its only metrics record, at the
source's step) and tested with its own head. A head's lam1 can so be chosen on the
validation classes for a backbone trained at another lam1 (or with another head). The
heads' logit scale keeps its initial value: it multiplies the logits and changes no
prediction nor support.

Outputs: workdir/{metrics.jsonl, result.json, checkpoints, ...}. The sweeps of
configs/fewshot.py run the heads and the lam1 grid side by side; `report(sweep dir)`
prints their table and writes the Fig. 5 layout (sorted feature usage per lam1, and
test accuracy vs mean fraction of features used) to <sweep dir>/fewshot.png;
`plot(collect_results(workdir), path)` redraws it, also from several workdirs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sdis_tf import config_schema as cs
from sdis_tf import heads
from sdis_tf.data import fewshot, omniglot
from sdis_tf.models.resnet12 import ResNet12
from sdis_tf.models.small_conv import SmallConv
from sdis_tf.train import distribute, harness, meta, progress
from sdis_tf.train.checkpoint import Checkpointer, list_checkpoints, readable
from sdis_tf.train.rundir import CHECKPOINTS, CONFIG, finished_runs, save_figure

METHODS = ("sparse_svm", "dense_svm", "ridge", "proto")
BACKBONES = ("small_conv", "resnet12")
_TRAIN_STREAM, _VAL_STREAM, _TEST_STREAM = range(3)


class _Setting(cs.Spec):
    """A test setting "<ways>w<shots>s", e.g. "5w1s" (ways >= 2, shots >= 1)."""

    def allowed(self) -> str:
        return 'a string "<ways>w<shots>s" with ways >= 2 and shots >= 1, e.g. "5w1s", "20w5s"'

    def problem(self, value):
        match = isinstance(value, str) and _SETTING.fullmatch(value)
        if not match or int(match[1]) < 2 or int(match[2]) < 1:
            return f"is not a setting; allowed: {self.allowed()}"
        return None


_SETTING = re.compile(r"(\d+)w(\d+)s")


def parse_setting(setting: str) -> tuple[int, int]:
    """"20w5s" -> (20, 5): (ways, shots)."""
    ways, shots = _SETTING.fullmatch(setting).groups()
    return int(ways), int(shots)


DATASETS = fewshot.DATASETS + ("omniglot",)
"""`data.dataset` choices: the MetaOptNet formats, the procedural set and Omniglot."""

_SVM = {"lam2": cs.POSITIVE, "smoothing": cs.NONNEGATIVE, "tol": cs.POSITIVE,
        "max_iter": cs.COUNT}
SCHEMA = {
    "experiment": cs.Choice("fewshot"),
    "seed": cs.Int(min=0),
    "distribute": cs.Choice(*distribute.STRATEGIES),
    "method": cs.Choice(*METHODS),
    "data": {
        "dataset": cs.Choice(*DATASETS),
        "root": cs.Text(),
        "images_per_class": cs.COUNT,
        "image_size": cs.Int(min=8, max=512),
        "ways": cs.Int(min=2),
        "train_shots": cs.COUNT,
        "test_shots": cs.COUNT,
        "train_queries": cs.COUNT,
        "test_queries": cs.COUNT,
        "rotations": cs.Bool(),
        "lake_runs": cs.Text(),
    },
    "model": {
        "name": cs.Choice(*BACKBONES),
        "channels": cs.Tuple(cs.COUNT),
        "drop_rate": cs.Float(min=0.0, max=1.0, max_open=True),
        "dropblock_size": cs.COUNT,
        "ramp_steps": cs.COUNT,
    },
    "heads": {
        "scale": cs.POSITIVE,
        "sparse_svm": {"eps": cs.Float(min=0.0, max=1.0, min_open=True), "refit": cs.Bool(),
                       **_SVM},
        "dense_svm": dict(_SVM),
        "ridge": {"lam": cs.POSITIVE},
    },
    "optimizer": {
        "learning_rate": cs.POSITIVE,
        "momentum": cs.Float(min=0.0, max=1.0, max_open=True),
        "weight_decay": cs.NONNEGATIVE,
        "boundaries_epochs": cs.Tuple(cs.COUNT, min_len=0),
        "factors": cs.Tuple(cs.POSITIVE),
    },
    "train": {
        "epochs": cs.COUNT,
        "steps_per_epoch": cs.COUNT,
        "episodes_per_batch": cs.COUNT,
        "label_smoothing": cs.Float(min=0.0, max=1.0, max_open=True),
        "jit_compile": cs.Bool(),
    },
    "eval": {"val_episodes": cs.COUNT, "test_episodes": cs.COUNT, "batch_episodes": cs.COUNT,
             "settings": cs.Tuple(_Setting(), unique=True), "backbone_from": cs.Text()},
    "checkpoint_every_steps": cs.COUNT,
    "log_every_seconds": cs.NONNEGATIVE,
}


def _cross_field(config: dict) -> list[str]:
    problems = []
    opt, data, model = config["optimizer"], config["data"], config["model"]
    if len(opt["factors"]) != len(opt["boundaries_epochs"]) + 1:
        problems.append(f"config.optimizer.factors has {len(opt['factors'])} items; it needs "
                        f"len(boundaries_epochs) + 1 = {len(opt['boundaries_epochs']) + 1}")
    if list(opt["boundaries_epochs"]) != sorted(set(opt["boundaries_epochs"])):
        problems.append("config.optimizer.boundaries_epochs must be strictly increasing")
    if data["dataset"] not in ("procedural", "omniglot") and not data["root"]:
        problems.append(f"config.data.root is empty; dataset {data['dataset']!r} needs the "
                        "folder holding its files")
    if data["dataset"] == "procedural" and data["image_size"] > 64:
        problems.append(f"config.data.image_size = {data['image_size']} is too large for the "
                        "procedural set; allowed: 8 to 64 (the renderer's resolution)")
    side = fewshot.IMAGE_SIDES.get(data["dataset"])
    if side is not None and data["image_size"] != side:
        problems.append(f"config.data.image_size = {data['image_size']} but {data['dataset']} "
                        f"images are {side}x{side}; set config.data.image_size={side}")
    if data["rotations"] and data["dataset"] != "omniglot":
        problems.append("config.data.rotations is Omniglot's augmentation (each character "
                        "rotated by 90, 180, 270 degrees is a new training class); allowed "
                        f"only with dataset 'omniglot', got {data['dataset']!r}")
    if data["lake_runs"] and data["dataset"] != "omniglot":
        problems.append("config.data.lake_runs is Omniglot's one-shot benchmark (all_runs.zip); "
                        f"allowed only with dataset 'omniglot', got {data['dataset']!r}")
    elif data["lake_runs"] not in ("", omniglot.DOWNLOAD) and \
            not os.path.isfile(data["lake_runs"]):
        problems.append(f"config.data.lake_runs = {data['lake_runs']!r} is not a file; allowed: "
                        f"the path of Lake et al.'s all_runs.zip, {omniglot.DOWNLOAD!r} (the "
                        "data cache, downloaded on first use) or '' to skip the benchmark")
    if model["name"] == "resnet12" and len(model["channels"]) != 4:
        problems.append("config.model.channels must have 4 widths for resnet12")
    if config["eval"]["backbone_from"]:
        problems += _backbone_source_problems(config)
    return problems


def _backbone_source_problems(config: dict) -> list[str]:
    """What keeps `eval.backbone_from` from giving this config's backbone (empty if nothing)."""
    source = config["eval"]["backbone_from"]
    field = f"config.eval.backbone_from = {source!r}"
    allowed = ("allowed: '' (train), or the directory of one finished or checkpointed run "
               "(workdir/<run>, holding config.json and checkpoints/) with the same "
               "config.model and image size")
    config_path = os.path.join(source, CONFIG)
    checkpoints = list_checkpoints(os.path.join(source, CHECKPOINTS))
    if not os.path.isfile(config_path) or not checkpoints:
        return [f"{field} holds no config.json and checkpoint; {allowed}"]
    if not any(map(readable, checkpoints)):
        return [f"{field}: none of its {len(checkpoints)} checkpoints can be read; {allowed}"]
    with open(config_path) as f:
        trained = json.load(f)
    ours = json.loads(json.dumps({"model": config["model"],
                                  "image_size": config["data"]["image_size"]}))
    theirs = {"model": trained.get("model"), "image_size": trained.get("data", {}).get(
        "image_size")}
    differ = [key for key in ("model", "image_size") if ours[key] != theirs[key]]
    return [f"{field} was trained with {key} {theirs[key]!r}, this config has {ours[key]!r}; "
            f"{allowed}" for key in differ]


CONSTRAINTS = (_cross_field,)


def run_name(config: dict) -> str:
    """The run's label: its method, with eps (and "_refit") for the sparse SVM."""
    if config["method"] != "sparse_svm":
        return config["method"]
    head = config["heads"]["sparse_svm"]
    return f"sparse_svm_eps{head['eps']:g}" + "_refit" * head["refit"]


HEADS = {"sparse_svm": "sparse_svm", "dense_svm": "dense_svm", "ridge": "ridge_classifier",
         "proto": "proto"}
"""The registered head (`sdis_tf.heads.HEADS`) of each method."""


def make_head(config: dict, num_ways: int) -> keras.layers.Layer:
    """The episode head of `config.method`: its registered head with the fields of
    `config.heads.<method>` and the shared logit scale."""
    method, fields = config["method"], config["heads"]
    return heads.build(HEADS[method], num_ways=num_ways, scale=fields["scale"],
                       **fields.get(method, {}))


def make_backbone(model: dict, seed: int) -> keras.Model:
    """SmallConv or ResNet12 from `config.model`."""
    if model["name"] == "small_conv":
        return SmallConv(tuple(model["channels"]))
    return ResNet12(tuple(model["channels"]), drop_rate=model["drop_rate"],
                    dropblock_size=model["dropblock_size"], ramp_steps=model["ramp_steps"],
                    seed=seed)


def learning_rate(optimizer: dict, steps_per_epoch: int):
    """MetaOptNet's step schedule: lr * factors[i] from epoch boundaries_epochs[i - 1] on."""
    values = [optimizer["learning_rate"] * f for f in optimizer["factors"]]
    if not optimizer["boundaries_epochs"]:
        return values[0]
    # Keras switches after a boundary (step > b): the step b * steps_per_epoch - 1 is the last
    # one at the old rate, so epoch b's first step uses the new one.
    boundaries = [b * steps_per_epoch - 1 for b in optimizer["boundaries_epochs"]]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def confidence_interval(accuracies) -> tuple[float, float]:
    """(mean, 1.96 std / sqrt(N)) over N episodes: the 95% normal-approximation interval."""
    accuracies = np.asarray(accuracies, np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / math.sqrt(len(accuracies)))


@functools.lru_cache(maxsize=6)
def load_data(dataset: str, root: str, split: str, images_per_class: int, image_size: int,
              seed: int, rotations: bool = False) -> fewshot.FewShotSplit:
    """A split of the configured dataset (procedural splits are rendered once per process).

    Omniglot: train / val are disjoint class pools of the background set (`seed` draws
    them), test is the evaluation set; `rotations` augments the training classes only.
    """
    if dataset == "procedural":
        return fewshot.procedural_split(split, images_per_class=images_per_class,
                                        image_size=image_size, seed=seed)
    if dataset == "omniglot":
        return omniglot.fewshot_split(root, split, size=image_size, pool_seed=seed,
                                      rotations=rotations and split == "train")
    return fewshot.load_split(dataset, root, split)


class FewshotData(NamedTuple):
    """What a run reads, opened and checked before anything is written (`prepare`)."""

    splits: dict            # "train" / "val" / "test" -> fewshot.FewShotSplit
    lake: object            # omniglot.lake_episodes(...) of Lake's runs, or None
    backbone_checkpoints: str  # the checkpoints directory of `eval.backbone_from`, or ""


def prepare(config: dict) -> FewshotData:
    """Loads the three splits, Lake's runs and finds the backbone to restore.

    Raises:
      DataFileError: a data file is missing or unusable (one line naming it).
    """
    data = config["data"]
    splits = {name: load_data(data["dataset"], data["root"], name, data["images_per_class"],
                              data["image_size"], config["seed"], data["rotations"])
              for name in ("train", "val", "test")}
    lake = (omniglot.lake_episodes(omniglot.lake_runs(data["lake_runs"], data["image_size"]))
            if data["lake_runs"] else None)
    source = config["eval"]["backbone_from"]
    return FewshotData(splits, lake, os.path.join(source, CHECKPOINTS) if source else "")


class FewshotRun:
    """One run's pieces (a `sdis_tf.train.harness.Run`): data, backbone, head, optimizer,
    trainer and evaluation.

    With `eval.backbone_from` the backbone is restored from that run's checkpoint and not
    trained: no optimizer, no trainer, `total_steps` 0 (one validation at the source's step).
    """

    def __init__(self, config: dict, inputs: FewshotData, strategy: tf.distribute.Strategy):
        self.config = config
        data, seed, train = config["data"], config["seed"], config["train"]
        self.name = run_name(config)
        ways = data["ways"]
        self.train_sampler = fewshot.EpisodeSampler(
            inputs.splits["train"], ways, data["train_shots"], data["train_queries"], seed=seed,
            stream=_TRAIN_STREAM)
        self.val_sampler = fewshot.EpisodeSampler(
            inputs.splits["val"], ways, data["test_shots"], data["test_queries"], seed=seed,
            stream=_VAL_STREAM)
        self.test_samplers = {
            setting: fewshot.EpisodeSampler(inputs.splits["test"], *parse_setting(setting),
                                            data["test_queries"], seed=seed, stream=stream)
            for stream, setting in enumerate(config["eval"]["settings"], _TEST_STREAM)}
        self.lake = inputs.lake
        image_shape = self.train_sampler.data.images.shape[1:]
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            self.backbone = make_backbone(config["model"], seed)
            self.num_features = self.backbone(tf.zeros([1, *image_shape]),
                                              training=False).shape[-1]
            self.head = self._build_head(make_head(config, ways))
        self.optimizer = self.trainer = None
        self.eval_every_steps = train["steps_per_epoch"]
        self.checkpoint_every_steps = config["checkpoint_every_steps"]
        self.backbone_from = ""
        if inputs.backbone_checkpoints:
            self.total_steps = 0
            self.initial_step = self._restore_backbone(inputs.backbone_checkpoints)
        else:
            self.total_steps, self.initial_step = train["epochs"] * train["steps_per_epoch"], 0
            self._build_trainer(strategy)
            self.train_step = self.trainer.train_step
        self.trackables = {"model": self.backbone, "head": self.head,
                           "optimizer": self.optimizer}
        self._metrics = {}

    def _restore_backbone(self, directory: str) -> int:
        """Restores the backbone (weights and batch-norm statistics) from the newest intact
        checkpoint in `directory` (`backbone_from` becomes its path); returns its step."""
        checkpointer = Checkpointer(directory, model=self.backbone)
        step = checkpointer.restore(partial=True)
        self.backbone_from = checkpointer.latest
        logging.info("[%s] backbone restored from %s (step %d); not trained", self.name,
                     self.backbone_from, step)
        return step

    def _build_trainer(self, strategy: tf.distribute.Strategy):
        """The optimizer (its slots built) and the meta-trainer of the backbone and head."""
        train, opt = self.config["train"], self.config["optimizer"]
        with strategy.scope():
            self.optimizer = keras.optimizers.SGD(
                learning_rate(opt, train["steps_per_epoch"]), momentum=opt["momentum"],
                nesterov=True)
            self.trainer = meta.MetaTrainer(
                self.backbone, self.head, self.optimizer, strategy,
                lambda step: self.train_sampler.sample(step, train["episodes_per_batch"]),
                num_episodes=train["episodes_per_batch"], weight_decay=opt["weight_decay"],
                label_smoothing=train["label_smoothing"], jit_compile=train["jit_compile"])
            self.optimizer.build(self.trainer.variables)

    def _build_head(self, head: keras.layers.Layer) -> keras.layers.Layer:
        ways, m = head.num_ways, self.num_features
        head((tf.zeros([1, ways, m]), tf.zeros([1, ways], tf.int32), tf.zeros([1, 1, m])))
        return head

    def head_for(self, ways: int) -> keras.layers.Layer:
        """The head for `ways`-way episodes: the trained head, or its config with `num_ways`
        changed, sharing its weights (the logit scale) as they are now."""
        if ways == self.head.num_ways:
            return self.head
        head = self._build_head(type(self.head).from_config(
            {**self.head.get_config(), "num_ways": ways}))
        for copy, trained in zip(head.weights, self.head.weights):
            copy.assign(trained)
        return head

    def metrics_fn(self, ways: int):
        """`meta.episode_metrics` for `ways`-way episodes (built and compiled on first use)."""
        if ways not in self._metrics:
            self._metrics[ways] = tf.function(
                functools.partial(meta.episode_metrics, self.backbone, self.head_for(ways)))
        return self._metrics[ways]

    def episodes(self, sampler: fewshot.EpisodeSampler,
                 count: int) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy [count], used [count, m]) on the first `count` episodes of `sampler`."""
        size = self.config["eval"]["batch_episodes"]
        metrics = self.metrics_fn(sampler.ways)
        accuracies, used = [], []
        for index in range(math.ceil(count / size)):
            batch = sampler.sample(index, min(size, count - index * size))
            accuracy, batch_used = metrics(meta.EpisodeBatch(*map(tf.constant, batch)))
            accuracies.append(accuracy.numpy())
            used.append(batch_used.numpy())
        return np.concatenate(accuracies), np.concatenate(used)

    def evaluate(self):
        accuracy, used = self.episodes(self.val_sampler, self.config["eval"]["val_episodes"])
        mean, ci = confidence_interval(accuracy)
        return {"accuracy": mean, "ci95": ci, "features_used": float(used.mean())}, {}

    def finish(self, final: dict, rundir) -> dict:
        """The result: the final record and the test metrics (`test`), with the test time."""
        start = time.monotonic()
        head = self.config["heads"]["sparse_svm"]
        sparse = self.config["method"] == "sparse_svm"
        result = {"run": self.name, "method": self.config["method"],
                  "eps": head["eps"] if sparse else None, "refit": sparse and head["refit"],
                  **final, **self.test()}
        if self.backbone_from:
            result["backbone_from"] = self.backbone_from
        result["test_seconds"] = time.monotonic() - start
        return result

    def test(self) -> dict:
        """Test metrics of every setting (see the module docstring) and Lake's runs."""
        result = {"settings": list(self.test_samplers), "num_features": self.num_features}
        for setting, sampler in self.test_samplers.items():
            accuracy, used = self.episodes(sampler, self.config["eval"]["test_episodes"])
            mean, ci = confidence_interval(accuracy)
            result.update({f"test/{setting}/accuracy": mean, f"test/{setting}/ci95": ci,
                           f"test/{setting}/episodes": len(accuracy),
                           f"test/{setting}/features_used": float(used.mean()),
                           f"test/{setting}/features_used_std": float(used.mean(axis=1).std())})
            if "feature_usage" not in result:
                result["feature_usage"] = np.sort(used.mean(axis=0))[::-1].round(4).tolist()
        if self.lake is not None:
            accuracy, used = self.metrics_fn(self.lake.support_labels.shape[1])(
                meta.EpisodeBatch(*map(tf.constant, self.lake)))
            errors = 100.0 * (1.0 - accuracy.numpy())
            result.update({"lake/error": float(errors.mean()),
                           "lake/error_std": float(errors.std()),
                           "lake/runs_error": errors.round(2).tolist(),
                           "lake/features_used": float(used.numpy().mean())})
        return result


def primary(result: dict, key: str):
    """`test/<first setting>/<key>` of a run's result (the setting of the figure)."""
    return result[f"test/{result['settings'][0]}/{key}"]


def format_table(results: list[dict]) -> str:
    """One row per run: test accuracy +- 95% CI (%) and features used (%) per setting,
    Lake's error (%) when measured, the run's training (and validation) time and its test
    time (blank in results from before test times were recorded)."""
    settings = results[0]["settings"] if results else []
    lake = any("lake/error" in r for r in results)
    header = [f"{'run':<20}"] + [f"{s + ' acc (%)':>16} {'used':>6}" for s in settings]
    header += [f"{'Lake err (%)':>12}"] * lake + [f"{'time':>8}", f"{'test':>8}"]
    lines = [" ".join(header)]
    for r in results:
        row = [f"{r['run']:<20}"]
        for s in settings:
            accuracy = f"{100 * r[f'test/{s}/accuracy']:.2f} +- {100 * r[f'test/{s}/ci95']:.2f}"
            row.append(f"{accuracy:>16} {100 * r[f'test/{s}/features_used']:>5.1f}%")
        if lake:
            row.append(f"{r.get('lake/error', float('nan')):>12.2f}")
        row.append(f"{progress.format_duration(r['elapsed']):>8}")
        test_time = progress.format_duration(r["test_seconds"]) if "test_seconds" in r else ""
        row.append(f"{test_time:>8}")
        lines.append(" ".join(row))
    return "\n".join(lines)


def collect_results(workdir: str) -> list[dict]:
    """The stored results (with feature usage) of every finished run under `workdir`.

    Results written before test settings existed (one setting, keys `test/<metric>`) are
    read as the setting of the run's config (data.ways, data.test_shots).
    """
    results = []
    for _, config, stored in finished_runs(workdir, "fewshot"):
        if "feature_usage" not in stored:
            continue
        if "settings" not in stored:
            data = config["data"]
            setting = f"{data['ways']}w{data['test_shots']}s"
            stored = {"settings": [setting], **{
                key.replace("test/", f"test/{setting}/", 1) if key.startswith("test/") else key:
                value for key, value in stored.items()}}
        results.append(stored)
    return results


def plot(results: list[dict], path: str) -> None:
    """Fig. 5 layout. Left: each feature's usage (fraction of test episodes whose W_:j != 0),
    features sorted by usage, one curve per lam1 (dense SVM = lam1 0). Right: test accuracy
    (+- 95% CI) against the mean fraction of features an episode uses, over the lam1 grid,
    with the dense, ridge and prototype baselines (refitted sparse heads: their own curve)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    by_eps = lambda runs: sorted(runs, key=lambda r: r["eps"] or 0.0)
    svm = by_eps(r for r in results
                 if r["method"] in ("sparse_svm", "dense_svm") and not r.get("refit"))
    refitted = by_eps(r for r in results if r.get("refit"))
    for r in svm + refitted:
        usage = 100 * np.asarray(r["feature_usage"])
        label = "lam1 = 0 (dense)" if r["method"] == "dense_svm" else \
            f"lam1 = {r['eps']:g} lam_max" + " + refit" * bool(r.get("refit"))
        left.plot(100 * np.arange(1, len(usage) + 1) / len(usage), usage, label=label)
    left.set(xlabel="features, sorted by usage (% of all)", ylim=(-2, 102),
             ylabel="test tasks using the feature (%)", title="feature usage across tasks")
    if svm or refitted:
        left.legend(fontsize=8)
    curves = ((svm, "group-Lasso SVM"), (refitted, "group-Lasso selection + dense refit"))
    for runs, label in curves:
        if not runs:
            continue
        right.errorbar([100 * primary(r, "features_used") for r in runs],
                       [100 * primary(r, "accuracy") for r in runs],
                       yerr=[100 * primary(r, "ci95") for r in runs], marker="o", capsize=3,
                       label=label)
        for r in runs:
            right.annotate(f"{r['eps'] or 0:g}", (100 * primary(r, "features_used"),
                                                   100 * primary(r, "accuracy")),
                           textcoords="offset points", xytext=(4, -10), fontsize=7)
    for r in results:
        if r["method"] in ("ridge", "proto"):
            right.errorbar([100 * primary(r, "features_used")], [100 * primary(r, "accuracy")],
                           yerr=[100 * primary(r, "ci95")], marker="s", capsize=3,
                           linestyle="none", label=r["method"])
    right.set(xlabel="features used per task (%, mean over test tasks)",
              ylabel="test accuracy (%)", title="accuracy vs sparsity (labels: lam1/lam_max)")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def report(workdir: str) -> str:
    """The table of the finished runs under `workdir` (a sweep), and their Fig. 5 layout in
    workdir/fewshot.png."""
    results = collect_results(workdir)
    if not results:
        raise FileNotFoundError(f"no finished fewshot runs below {workdir}")
    plot(results, os.path.join(workdir, "fewshot.png"))
    return format_table(results)


EXPERIMENT = harness.Experiment(
    SCHEMA, CONSTRAINTS, prepare,
    build=FewshotRun, summarize=lambda result: format_table([result]), report=report)
