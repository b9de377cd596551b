"""Run directory: atomic writes, config checks on rerun, metrics records, results."""

import json
import os

import pytest

from sdis_tf.train import rundir as rundir_lib
from sdis_tf.train.rundir import ConfigMismatchError, RunDir


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "f.json"
    rundir_lib.atomic_write(str(path), "one")
    rundir_lib.atomic_write(str(path), "two")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path / "a") == ["f.json"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    rundir_lib.atomic_write(str(path), "good")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        rundir_lib.atomic_write(str(path), "bad")
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_config_is_written_then_checked_on_rerun(tmp_path):
    config = {"seed": 0, "data": {"rho": 0.9, "hidden": (8, 8)}, "distribute": "default"}
    RunDir(str(tmp_path)).write_config(config)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["hidden"] == [8, 8]
    RunDir(str(tmp_path)).write_config(config)  # same config: fine
    RunDir(str(tmp_path)).write_config({**config, "distribute": "mirrored"})  # resumable key
    assert json.loads((tmp_path / "config.json").read_text())["distribute"] == "mirrored"
    with pytest.raises(ConfigMismatchError, match=r"config.data.rho: 0.9 in the workdir, 0.5 now"):
        RunDir(str(tmp_path)).write_config({**config, "data": {"rho": 0.5, "hidden": (8, 8)}})


def test_metrics_records_truncate_and_non_finite_values(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.read_metrics() == []
    for step in (0, 5, 10):
        run.append_metrics(step, 1.5, {"eval/mcc": step / 10, "train/loss": float("nan")})
    records = run.read_metrics()
    assert [r["step"] for r in records] == [0, 5, 10]
    assert records[1] == {"step": 5, "time": 1.5, "eval/mcc": 0.5, "train/loss": "nan"}
    run.truncate_metrics(5)
    assert [r["step"] for r in run.read_metrics()] == [0, 5]


def test_result_marks_the_run_finished(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.result() is None
    run.write_result({"eval/mcc": 0.99})
    assert RunDir(str(tmp_path)).result() == {"eval/mcc": 0.99}


def test_non_chief_writes_nothing(tmp_path):
    run = RunDir(str(tmp_path / "w"), chief=False)
    run.write_config({"a": 1})
    run.append_metrics(0, 0.0, {"x": 1.0})
    run.write_summaries(0, {"x": 1.0})
    run.write_result({"x": 1})
    assert not (tmp_path / "w").exists()


def test_summaries_write_tensorboard_events(tmp_path):
    import numpy as np
    run = RunDir(str(tmp_path))
    run.write_summaries(3, {"eval/mcc": 0.5}, {"eval/abs_corr": np.ones((1, 4, 4, 1), np.float32)})
    run.close()
    events = os.listdir(tmp_path / "tensorboard")
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")


def test_save_figure_is_atomic_and_closes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    path = rundir_lib.save_figure(fig, str(tmp_path / "a" / "fig.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "a") == ["fig.png"] and not plt.fignum_exists(fig.number)
