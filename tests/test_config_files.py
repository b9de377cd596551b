"""config_files.load_config: a config file's get_config(preset), clear errors otherwise."""

import os

import pytest

from sdis_tf.config_files import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loads_a_preset_like_main_py():
    config = load_config(os.path.join(ROOT, "configs", "disentangle.py"), "tiny")
    assert config.experiment == "disentangle"
    assert config.train.steps < load_config(os.path.join(ROOT, "configs", "disentangle.py"),
                                            "cpu").train.steps


def test_missing_file_and_missing_get_config_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_config(str(tmp_path / "nowhere.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(AttributeError, match="empty.py.*get_config"):
        load_config(str(empty))
