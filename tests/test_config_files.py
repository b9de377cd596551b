"""config_files.load_config: a config file's get_config(preset), clear errors otherwise."""

import os

import pytest

from sdis_tf.config_files import load_config, unknown_field

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


def test_unknown_field_names_the_closest_existing_fields():
    config = load_config(os.path.join(ROOT, "configs", "quickstart.py"), "tiny")
    assert unknown_field(config, "data.rho") is None
    assert unknown_field(config, "data.rhoo") == (
        "config.data.rhoo: no such field; did you mean config.data.rho?")
    assert unknown_field(config, "trian.steps") == (
        "config.trian: no such field; did you mean config.train?")
    assert unknown_field(config, "xyz").startswith(
        "config.xyz: no such field; fields of config: checkpoint_every_steps, data, ")
    assert unknown_field(config, "seed.x") == (
        "config.seed = 0 is not a section: it has no field 'x'")
