"""The command line (sdis_tf.cli, behind main.py and python -m sdis_tf) in-process: flags,
exit codes, clear errors (the subprocess run is in tests/experiments/test_quickstart.py)."""

import os
import subprocess
import sys

import pytest
from absl import flags

from sdis_tf import cli
from sdis_tf.data.errors import DataFileError
from sdis_tf.train import loop, rundir
from sdis_tf.train.lock import WorkdirBusyError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")


@pytest.fixture(scope="module")
def main_module():
    return cli


@pytest.fixture
def run_main(main_module, capsys, monkeypatch):
    def run(*args):
        argv = ["main.py", *args]
        monkeypatch.setattr("sys.argv", argv)  # config_flags reads overrides from sys.argv
        flags.FLAGS(argv)
        try:
            code = main_module.main(["main.py"])
        finally:
            flags.FLAGS.unparse_flags()
        return code, capsys.readouterr()
    return run


def test_unknown_experiment_exits_2_listing_the_choices(run_main, tmp_path):
    code, out = run_main(f"--config={CONFIG}:tiny", "--config.experiment=nope",
                         f"--workdir={tmp_path / 'w'}")
    assert code == 2
    assert "config.experiment = 'nope' is not an experiment; allowed: " in out.err
    assert "'quickstart'" in out.err
    assert not (tmp_path / "w").exists()


def test_invalid_value_exits_2_naming_the_field(run_main, tmp_path):
    code, out = run_main(f"--config={CONFIG}:tiny", "--config.data.rho=1.0",
                         f"--workdir={tmp_path / 'w'}")
    assert code == 2
    assert "config.data.rho = 1.0 is out of range; allowed: a finite float in [0, 1)" in out.err


def _parse_error(monkeypatch, capsys, *args) -> str:
    """stderr of cli.parse_flags on `args`, which must exit with status 2."""
    argv = ["main.py", *args, "--workdir=/none"]
    monkeypatch.setattr("sys.argv", argv)
    try:
        with pytest.raises(SystemExit) as info:
            cli.parse_flags(argv)
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize("override,message", [
    ("--config.data.rhoo=0.5", "config.data.rhoo: no such field; did you mean config.data.rho?"),
    ("--config.foo=1", "config.foo: no such field; fields of config: checkpoint_every_steps, "),
    ("--config.data.rho.x=1", "config.data.rho = 0.9 is not a section: it has no field 'x'"),
    ("--config.data.n_support=many", "invalid command line: flag --config.data.n_support=many: "
                                     "invalid literal for int() with base 10: 'many'"),
])
def test_bad_override_exits_2_with_one_line(monkeypatch, capsys, override, message):
    assert _parse_error(monkeypatch, capsys, f"--config={CONFIG}:tiny", override).startswith(
        message)


@pytest.mark.parametrize("overrides", [(), ("--config.seed=1",)])
def test_missing_config_file_exits_2_with_one_line(monkeypatch, capsys, tmp_path, overrides):
    missing = str(tmp_path / "nope.py")
    assert _parse_error(monkeypatch, capsys, f"--config={missing}:tiny", *overrides) == (
        f"config file {missing!r} does not exist")


def test_broken_config_files_are_named_with_the_line(monkeypatch, capsys, tmp_path):
    syntax = tmp_path / "syntax.py"
    syntax.write_text("import ml_collections\n\ndef get_config(preset=''):\n    return (\n")
    assert _parse_error(monkeypatch, capsys, f"--config={syntax}").startswith(
        f"{syntax}:4: syntax error in the config file: ")
    raising = tmp_path / "raising.py"
    raising.write_text("def get_config(preset=''):\n    return {'a': 1}[preset]\n")
    assert _parse_error(monkeypatch, capsys, f"--config={raising}:b") == (
        f"{raising}:2: KeyError in the config file: 'b'")
    with open(CONFIG) as f:
        line = 1 + next(i for i, text in enumerate(f) if "unknown preset" in text)
    assert _parse_error(monkeypatch, capsys, f"--config={CONFIG}:huge").startswith(
        f"{CONFIG}:{line}: ValueError in the config file: unknown preset 'huge'")


def test_missing_config_file_from_the_shell_is_one_line_and_status_2(tmp_path):
    missing = str(tmp_path / "nope.py")
    done = subprocess.run([sys.executable, "-m", "sdis_tf", f"--config={missing}",
                           f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"config file {missing!r} does not exist\n"
    assert not (tmp_path / "w").exists()


def test_interrupted_run_exits_128_plus_signal(run_main, monkeypatch, tmp_path):
    def interrupted(config, workdir):
        raise loop.Interrupted(15, 7, "ckpt-7")

    monkeypatch.setattr("sdis_tf.experiments.run", interrupted)
    code, _ = run_main(f"--config={CONFIG}:tiny", f"--workdir={tmp_path}")
    assert code == 128 + 15


@pytest.mark.parametrize("error,code", [
    (loop.NonFiniteError("non-finite train/loss=nan at step 8 (batch 7); nothing saved after "
                         "it; last good checkpoint: w/checkpoints/ckpt-6"), 3),
    (DataFileError("Omniglot data at 'x': no such file or directory."), 2),
    (rundir.ConfigMismatchError("w holds a run with another config"), 2),
    (WorkdirBusyError("w is in use by process 12 on host h"), 2),
])
def test_run_errors_are_one_line_and_an_exit_status(run_main, monkeypatch, tmp_path, error,
                                                    code):
    def failing(config, workdir):
        raise error

    monkeypatch.setattr("sdis_tf.experiments.run", failing)
    status, out = run_main(f"--config={CONFIG}:tiny", f"--workdir={tmp_path}")
    assert status == code and out.err == f"{error}\n" and out.out == ""


def test_summary_is_printed(run_main, monkeypatch, tmp_path):
    monkeypatch.setattr("sdis_tf.experiments.run", lambda config, workdir: f"table {config.seed}")
    code, out = run_main(f"--config={CONFIG}:tiny", "--config.seed=3", f"--workdir={tmp_path}")
    assert code == 0 and out.out == "table 3\n"
