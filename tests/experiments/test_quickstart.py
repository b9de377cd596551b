"""The quickstart end to end: the CLI in a subprocess, SIGKILL + resume = uninterrupted run;
the methods side by side (the `methods` sweep's points) and their report."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf import experiments
from sdis_tf.config_files import load_config
from sdis_tf.experiments import quickstart
from sdis_tf.train.rundir import ConfigMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, CHECKPOINT_EVERY = 300, 20
OVERRIDES = {"train.steps": STEPS, "checkpoint_every_steps": CHECKPOINT_EVERY,
             "eval.every_steps": 100}


def _config(method="lasso"):
    config = load_config(os.path.join(ROOT, "configs", "quickstart.py"), "tiny")
    config.update_from_flattened_dict({**OVERRIDES, "method": method})
    return config


def _command(workdir):
    return [sys.executable, os.path.join(ROOT, "main.py"),
            f"--config={os.path.join(ROOT, 'configs', 'quickstart.py')}:tiny",
            *(f"--config.{k}={v}" for k, v in OVERRIDES.items()), f"--workdir={workdir}"]


METHODS = ("lasso", "ridge")


def _latest_step(checkpoint_dir):
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _records(workdir, method):
    with open(os.path.join(workdir, method, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _comparable(record):
    return {k: v for k, v in record.items() if k not in ("time", "elapsed")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    for method in METHODS:
        experiments.run(_config(method), os.path.join(workdir, method))
    return workdir, quickstart.report(workdir)


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    reference, _ = uninterrupted
    workdir = str(tmp_path / "lasso")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(_command(workdir), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    checkpoints = os.path.join(workdir, "checkpoints")
    deadline = time.monotonic() + 120
    while _latest_step(checkpoints) < CHECKPOINT_EVERY and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = _latest_step(checkpoints)
    assert CHECKPOINT_EVERY <= killed_at < STEPS, "the run was not killed mid-run"
    assert not os.path.exists(os.path.join(workdir, "result.json"))

    # The CLI: rerunning the same command resumes and finishes the run.
    done = subprocess.run(_command(workdir), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from step {killed_at}" in done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["method", "MCC", "R", "MCC_train", "R_train", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["lasso"]
    for name in ("config.json", "result.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    kept = [f for f in os.listdir(checkpoints) if f.endswith(".index")]
    assert len(kept) == 3

    resumed, expected = _records(str(tmp_path), "lasso"), _records(reference, "lasso")
    assert [r["step"] for r in resumed] == [0, 100, 200, 300]
    assert set(resumed[-1]) >= {"step", "time", "elapsed", "train/loss", "train/grad_norm",
                                "eval/mcc", "eval/r", "eval/mcc_train", "eval/r_train",
                                "eval/loss"}
    for got, want in zip(resumed, expected):
        got, want = _comparable(got), _comparable(want)
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in sorted(got)],
                                   [want[k] for k in sorted(want)], rtol=1e-6, atol=1e-6)


def test_report_compares_the_methods(uninterrupted):
    workdir, table = uninterrupted
    lines = table.splitlines()
    assert lines[0].split() == ["method", "MCC", "R", "MCC_train", "R_train", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["lasso", "ridge"]
    assert os.path.getsize(os.path.join(workdir, "quickstart.png")) > 10_000


def test_finished_run_is_not_redone(uninterrupted):
    workdir, table = uninterrupted
    before = {m: _records(workdir, m) for m in METHODS}
    checkpoints = os.path.join(workdir, "lasso", "checkpoints")
    files = {f: os.path.getmtime(os.path.join(checkpoints, f)) for f in os.listdir(checkpoints)}
    summary = experiments.run(_config(), os.path.join(workdir, "lasso"))
    assert summary.splitlines()[1] == table.splitlines()[1]
    assert {m: _records(workdir, m) for m in METHODS} == before
    assert {f: os.path.getmtime(os.path.join(checkpoints, f))
            for f in os.listdir(checkpoints)} == files


def test_rerun_with_another_config_is_refused(uninterrupted):
    workdir, _ = uninterrupted
    config = _config()
    config.data.rho = 0.5
    with pytest.raises(ConfigMismatchError, match="config.data.rho: 0.9 in the workdir, 0.5 now"):
        experiments.run(config, os.path.join(workdir, "lasso"))


def test_table_lists_every_method():
    rows = [{"method": "lasso", "eval/mcc": 0.991, "eval/r": 0.998, "eval/mcc_train": 0.9,
             "eval/r_train": 0.95, "elapsed": 75.0}]
    assert quickstart.format_table(rows).splitlines()[1].split() == \
        ["lasso", "0.991", "0.998", "0.900", "0.950", "1m15s"]
