"""The run harness: one process per workdir, inputs checked before anything is written."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sdis_tf import experiments
from sdis_tf.config_files import load_config
from sdis_tf.data.errors import DataFileError
from sdis_tf.train.lock import LOCK, WorkdirBusyError, WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_HOLD = """
import sys, time
from sdis_tf.train.lock import WorkdirLock
held = WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/run (killed at the end)."""
    workdir = str(tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert process.stdout.readline().strip() == "locked"
    yield workdir, process
    process.kill()
    process.wait()


def _quickstart(**overrides):
    config = load_config(os.path.join(ROOT, "configs", "quickstart.py"), "tiny")
    config.update_from_flattened_dict(overrides)
    return config


def test_a_second_process_is_refused_naming_the_holder(holder):
    workdir, process = holder
    with pytest.raises(WorkdirBusyError) as error:
        experiments.run(_quickstart(), workdir)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert f"process {process.pid} on host {socket.gethostname()}" in message
    assert os.listdir(workdir) == [LOCK]  # nothing written


def test_a_killed_holder_leaves_no_stale_lock(holder):
    workdir, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    with WorkdirLock(workdir):
        with pytest.raises(WorkdirBusyError):
            WorkdirLock(workdir).acquire()
    WorkdirLock(workdir).acquire().release()  # released at the end of the block


def test_the_cli_exits_2_with_one_line_when_the_workdir_is_busy(holder):
    workdir, process = holder
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sdis_tf", f"--config={ROOT}/configs/quickstart.py:tiny",
         f"--workdir={workdir}"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if f"process {process.pid}" in line]
    assert len(lines) == 1 and "in use by" in lines[0]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 60


def test_bad_data_is_refused_before_anything_is_written_then_the_fix_runs(tmp_path):
    config = load_config(os.path.join(ROOT, "configs", "fewshot.py"), "tiny")
    config.update_from_flattened_dict({"data.dataset": "omniglot", "data.image_size": 28,
                                       "data.root": str(tmp_path / "no_omniglot")})
    workdir = str(tmp_path / "run")
    with pytest.raises(DataFileError, match="no_omniglot"):
        experiments.run(config, workdir)
    assert not os.path.exists(workdir)
    fixed = load_config(os.path.join(ROOT, "configs", "fewshot.py"), "tiny")
    fixed.method = "proto"
    assert "proto" in experiments.run(fixed, workdir)
    assert os.path.isfile(os.path.join(workdir, "result.json"))


def test_a_finished_run_is_returned_without_its_inputs_or_the_lock(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    summary = experiments.run(_quickstart(), workdir)
    from sdis_tf.experiments import quickstart

    def no_inputs(config):
        raise AssertionError("prepare called for a finished run")

    monkeypatch.setattr(quickstart, "EXPERIMENT",
                        dataclasses.replace(quickstart.EXPERIMENT, prepare=no_inputs))
    process = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert process.stdout.readline().strip() == "locked"
        assert experiments.run(_quickstart(), workdir) == summary
        # another config in the same workdir still goes the normal way, up to the lock
        with pytest.raises(AssertionError, match="prepare called"):
            experiments.run(_quickstart(seed=1), workdir)
    finally:
        process.kill()
        process.wait()
