"""Every config file's presets load and pass their experiment's schema and constraints."""

import os
import re

import pytest

from sdis_tf import config_schema, experiments
from sdis_tf.config_files import load_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
PRESETS = {"quickstart.py": ("",), "synthetic_regression.py": ("",),
           "disentangle.py": ("", "cpu", "cpu64", "sprites", "tiny"), "fewshot.py": ("", "cpu", "quick", "tiny"),
           "fewshot_omniglot.py": ("", "quick", "wide")}


def test_every_config_file_is_listed():
    assert sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py")) == sorted(PRESETS)


@pytest.mark.parametrize("name,preset", [(n, p) for n, ps in PRESETS.items() for p in ps])
def test_preset_validates(name, preset, monkeypatch):
    config = load_config(os.path.join(CONFIGS, name), preset)
    if (name, preset) == ("fewshot.py", ""):
        config.data.root = "/data/miniImageNet"  # as its docstring's command sets it
    if config.get("data", {}).get("dataset") == "omniglot":
        # data paths are checked against the disk; the Omniglot folder may be absent here
        monkeypatch.setattr(os.path, "isfile", lambda path: True)
    module = experiments.get(config.experiment)
    config_schema.validate(config, module.SCHEMA, getattr(module, "CONSTRAINTS", ()))


def test_unknown_presets_are_refused_with_the_allowed_ones():
    for name, presets in PRESETS.items():
        if presets == ("",):
            continue
        with pytest.raises(ValueError, match=re.escape(repr(presets[1]))):
            load_config(os.path.join(CONFIGS, name), "nonexistent")
