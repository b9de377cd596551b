"""Run directory: atomic writes, config checks on rerun, metrics records, results."""

import json
import math
import os
import stat

import numpy as np
import pytest
import tensorflow as tf

from sdis_tf.train import rundir as rundir_lib
from sdis_tf.train.rundir import (ConfigMismatchError, RunDir, config_differences,
                                  finished_result)


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


def test_a_finished_run_is_found_by_its_config_and_may_gain_resumable_keys(tmp_path):
    old = {"seed": 0, "eval": {"every_steps": 5}, "distribute": "default"}
    workdir = str(tmp_path / "run")
    assert finished_result(workdir, old) is None                    # nothing there
    RunDir(workdir).write_config(old)
    assert finished_result(workdir, old) is None                    # not finished
    RunDir(workdir).write_result({"eval/mcc": 0.9})
    assert finished_result(workdir, old) == {"eval/mcc": 0.9}
    # a key added since the run (what a finished run saves) and the hardware may differ
    new = {**old, "eval": {"every_steps": 5, "agreement_points": 5000}, "distribute": "tpu"}
    assert finished_result(workdir, new) == {"eval/mcc": 0.9}
    RunDir(workdir).write_config(new)
    assert finished_result(workdir, {**new, "seed": 1}) is None     # another run
    assert finished_result(str(tmp_path / "run" / "config.json"), old) is None   # a file


def test_config_differences_compare_as_json_and_leave_out_the_ignored_keys():
    old = {"seed": 0, "data": {"hidden": (8, 8), "rho": 0.9}, "eval": {"a": 1, "b": 2}}
    new = {"seed": 1, "data": {"hidden": [8, 8], "rho": 0.5}, "eval": {"a": 3}, "tpu": "x"}
    assert config_differences(old, new, ignore=()) == [
        ("data.rho", 0.9, 0.5), ("eval.a", 1, 3), ("eval.b", 2, None), ("seed", 0, 1),
        ("tpu", None, "x")]
    # a dotted key leaves out that leaf, a section all of its keys; "eva" is not "eval"
    assert config_differences(old, new, ignore=("seed", "eval.a", "data", "eva")) == [
        ("eval.b", 2, None), ("tpu", None, "x")]
    # by default what a rerun may change ("tpu", "eval.agreement_points") is left out
    assert config_differences({"tpu": "", "eval": {}}, {"eval": {"agreement_points": 9}}) == []


def test_metrics_records_truncate_and_non_finite_values(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.read_metrics() == []
    for step in (0, 5, 10):
        written = run.append_metrics(step, 1.5, {"eval/mcc": step / 10, "eval/r": np.nan,
                                                 "eval/dci": np.float32(-np.inf)})
        assert math.isnan(written["eval/r"]) and written["eval/dci"] == -math.inf
    records = run.read_metrics()
    assert [r["step"] for r in records] == [0, 5, 10]
    assert records[1]["eval/mcc"] == 0.5 and records[1]["time"] == 1.5
    assert math.isnan(records[1]["eval/r"]) and records[1]["eval/dci"] == -math.inf
    assert '"eval/r": NaN' in (tmp_path / "metrics.jsonl").read_text()
    run.truncate_metrics(5)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [0, 5] and math.isnan(records[1]["eval/r"])
    run.write_result({"eval/r": float("nan")})
    assert math.isnan(run.result()["eval/r"])


def test_metrics_written_as_strings_read_back_as_floats(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "time": 1.0, "eval/mcc": "nan", "eval/r": "inf", "eval/loss": "-inf"}\n')
    [record] = RunDir(str(tmp_path)).read_metrics()
    assert math.isnan(record["eval/mcc"]) and record["eval/r"] == math.inf
    assert record["eval/loss"] == -math.inf


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_run_files_follow_the_umask(tmp_path, umask_022):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(str(tmp_path))
    run.write_config({"seed": 0})
    run.append_metrics(0, 0.0, {"eval/mcc": 0.5})
    run.write_result({"eval/mcc": 0.5})
    rundir_lib.save_figure(plt.figure(), str(tmp_path / "figure.png"))
    rundir_lib.atomic_write(str(tmp_path / "table.csv"), "a,b\n")
    for name in ("config.json", "metrics.jsonl", "result.json", "figure.png", "table.csv"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    rundir_lib.save_figure(np.zeros((4, 5, 3), np.uint8), str(tmp_path / "image.png"))
    assert stat.S_IMODE(os.stat(tmp_path / "image.png").st_mode) == 0o644
    os.umask(0o077)
    rundir_lib.atomic_write(str(tmp_path / "private.txt"), b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "private.txt").st_mode) == 0o600


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


def test_summaries_write_tensorboard_events_non_finite_included(tmp_path):
    run = RunDir(str(tmp_path))
    run.write_summaries(3, {"eval/mcc": 0.5, "eval/r": float("nan")},
                        {"eval/abs_corr": np.ones((1, 4, 4, 1), np.float32)})
    run.close()
    events = os.listdir(tmp_path / "tensorboard")
    assert len(events) == 1 and events[0].startswith("events.out.tfevents")
    scalars = {}
    for event in tf.compat.v1.train.summary_iterator(str(tmp_path / "tensorboard" / events[0])):
        for value in event.summary.value:
            if value.tag.startswith("eval/") and value.tag != "eval/abs_corr":
                scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    assert scalars["eval/mcc"] == 0.5 and math.isnan(scalars["eval/r"])


def test_save_figure_is_atomic_and_closes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1))
    path = rundir_lib.save_figure(fig, str(tmp_path / "a" / "fig.png"), dpi=50)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "a") == ["fig.png"] and not plt.fignum_exists(fig.number)
    assert tf.io.decode_png(open(path, "rb").read()).shape[:2] == (50, 100)


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1), (6, 7, 3), (6, 7, 4)])
def test_save_figure_writes_uint8_images_as_they_are(tmp_path, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = rundir_lib.save_figure(image, str(tmp_path / "image.png"))
    decoded = tf.io.decode_png(open(path, "rb").read(), channels=0).numpy()
    np.testing.assert_array_equal(decoded.reshape(shape), image)
    assert os.listdir(tmp_path) == ["image.png"]
    with pytest.raises(ValueError, match=r"uint8 image.*got float32 \(6, 7"):
        rundir_lib.save_figure(image.astype(np.float32), str(tmp_path / "bad.png"))


def test_atomic_write_takes_text_and_bytes(tmp_path):
    rundir_lib.atomic_write(str(tmp_path / "t.txt"), "é\n")
    rundir_lib.atomic_write(str(tmp_path / "b.bin"), b"\x00\xff")
    assert (tmp_path / "t.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
