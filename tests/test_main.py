"""The command line (sdis_tf.cli, behind main.py and python -m sdis_tf) in-process: flags,
exit codes, clear errors (the subprocess run is in tests/experiments/test_quickstart.py)."""

import os

import pytest
from absl import flags

from sdis_tf import cli
from sdis_tf.train import loop

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


@pytest.mark.parametrize("override,message", [
    ("--config.data.rhoo=0.5", 'Did you mean "rho" instead of "rhoo"?'),
    ("--config.data.n_support=many", "many"),
])
def test_bad_override_exits_2_with_one_line(main_module, monkeypatch, capsys, override, message):
    argv = ["main.py", f"--config={CONFIG}:tiny", override, "--workdir=/none"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as info:
        main_module.parse_flags(argv)
    flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("invalid command line:") and message in err


def test_interrupted_run_exits_128_plus_signal(run_main, monkeypatch, tmp_path):
    def interrupted(config, workdir):
        raise loop.Interrupted(15, 7, "ckpt-7")

    monkeypatch.setattr("sdis_tf.experiments.run", interrupted)
    code, _ = run_main(f"--config={CONFIG}:tiny", f"--workdir={tmp_path}")
    assert code == 128 + 15


def test_summary_is_printed(run_main, monkeypatch, tmp_path):
    monkeypatch.setattr("sdis_tf.experiments.run", lambda config, workdir: f"table {config.seed}")
    code, out = run_main(f"--config={CONFIG}:tiny", "--config.seed=3", f"--workdir={tmp_path}")
    assert code == 0 and out.out == "table 3\n"
