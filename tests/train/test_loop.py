"""The shared training loop: evaluation cadence, resume, signals, non-finite losses."""

import math
import signal

import pytest
import tensorflow as tf

from sdis_tf.train import loop
from sdis_tf.train.checkpoint import Checkpointer
from sdis_tf.train.rundir import RunDir


class Counter:
    """A toy "model": state s <- s + step + 1, loss = s (or a chosen value at one step)."""

    def __init__(self, workdir, on_step=None):
        self.state = tf.Variable(0.0, dtype=tf.float64)
        self.on_step = on_step or (lambda step: None)
        self.calls = []
        self.checkpointer = Checkpointer(str(workdir / "checkpoints"), state=self.state)
        self.rundir = RunDir(str(workdir))

    def train_step(self, step):
        self.calls.append(step)
        self.state.assign_add(step + 1.0)
        loss = self.on_step(step)
        return {"loss": self.state if loss is None else loss}

    def evaluate(self):
        return {"state": float(self.state.numpy())}, {}

    def fit(self, total=10):
        return loop.fit(train_step=self.train_step, evaluate=self.evaluate,
                        checkpointer=self.checkpointer, rundir=self.rundir, total_steps=total,
                        eval_every_steps=4, checkpoint_every_steps=3, log_every_seconds=0.0)


def test_fit_evaluates_checkpoints_and_returns_the_final_record(tmp_path):
    counter = Counter(tmp_path)
    final = counter.fit()
    assert final["step"] == 10 and final["eval/state"] == 55.0 and final["train/loss"] == 55.0
    assert [r["step"] for r in counter.rundir.read_metrics()] == [0, 4, 8, 10]
    assert counter.checkpointer.latest.endswith("ckpt-10")
    assert final["elapsed"] > 0


def test_rerun_of_a_finished_run_trains_nothing(tmp_path):
    first = Counter(tmp_path).fit()
    again = Counter(tmp_path)
    assert again.fit() == first
    assert again.calls == []


def test_sigterm_checkpoints_and_a_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    reference = Counter(tmp_path / "reference").fit()

    def preempt(step):
        if step == 4:
            signal.raise_signal(signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    interrupted = Counter(tmp_path / "run", on_step=preempt)
    with pytest.raises(loop.Interrupted, match="SIGTERM at step 5") as info:
        interrupted.fit()
    assert info.value.step == 5 and info.value.checkpoint.endswith("ckpt-5")
    assert signal.getsignal(signal.SIGTERM) is handler  # restored

    resumed = Counter(tmp_path / "run")
    final = resumed.fit()
    assert resumed.calls == [5, 6, 7, 8, 9]
    assert final["eval/state"] == reference["eval/state"]
    assert [r["step"] for r in resumed.rundir.read_metrics()] == [0, 4, 8, 10]


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    Counter(tmp_path).fit(total=4)  # checkpoints at 3 and 4, records at 0 and 4
    counter = Counter(tmp_path)
    counter.rundir.append_metrics(7, 0.0, {"eval/state": -1.0})  # written, then killed
    counter.fit(total=10)
    steps = [r["step"] for r in counter.rundir.read_metrics()]
    assert steps == [0, 4, 8, 10]
    assert counter.calls == [4, 5, 6, 7, 8, 9]


def test_resume_without_checkpoint_redoes_step_zero_once(tmp_path):
    counter = Counter(tmp_path)
    counter.rundir.append_metrics(0, 0.0, {"eval/state": 0.0})  # killed before ckpt-3
    counter.fit(total=4)
    assert [r["step"] for r in counter.rundir.read_metrics()] == [0, 4]


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    counter = Counter(tmp_path, on_step=lambda step: float("nan") if step == 7 else None)
    with pytest.raises(loop.NonFiniteError,
                       match=r"non-finite train/loss=nan at step 8 \(batch 7\).*ckpt-6"):
        counter.fit()
    assert counter.checkpointer.latest.endswith("ckpt-6")
    assert [r["step"] for r in counter.rundir.read_metrics()] == [0, 4]


def test_non_finite_eval_metrics_are_recorded_warned_once_and_training_goes_on(tmp_path, caplog):
    counter = Counter(tmp_path)
    counter.evaluate = lambda: ({"state": float(counter.state.numpy()), "mcc": float("nan"),
                                 "r": float("inf") if counter.calls else 0.5}, {})
    final = counter.fit()
    assert counter.calls == list(range(10)) and final["eval/state"] == 55.0
    records = counter.rundir.read_metrics()
    assert [r["step"] for r in records] == [0, 4, 8, 10]
    assert all(math.isnan(r["eval/mcc"]) for r in records)
    assert records[0]["eval/r"] == 0.5 and records[-1]["eval/r"] == math.inf
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "non-finite eval/mcc=nan at step 0: recorded as is, training continues "
        "(warned once per metric)",
        "non-finite eval/r=inf at step 4: recorded as is, training continues "
        "(warned once per metric)"]
    again = Counter(tmp_path).fit()  # a rerun returns the recorded final record
    assert again.keys() == final.keys() and again["eval/state"] == 55.0
    assert math.isnan(again["eval/mcc"])
