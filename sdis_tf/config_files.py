"""Config files as code: load `configs/<name>.py` and call its `get_config(preset)`.

The same files `python main.py --config=configs/<name>.py:preset` reads (through
ml_collections' config_flags), loaded from a path: for notebooks, scripts, tests
and for config files built on other config files. Config files are plain
modules, not a package, so they are loaded by path. `unknown_field` checks a
dotted field name (a command-line override) against a loaded config.
"""

import importlib.util
import os

from sdis_tf import config_schema


def load_module(path: str):
    """The config file at `path` as a module (its `get_config`, `get_sweep`, ...).

    Raises:
      FileNotFoundError: `path` does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    name = "sdis_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str, preset: str = ""):
    """`get_config(preset)` of the config file at `path` (a ConfigDict).

    Raises:
      FileNotFoundError: `path` does not exist.
      AttributeError: the file defines no `get_config`.
    """
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path!r} defines no get_config(preset)")
    return module.get_config(preset)


def unknown_field(config, field: str) -> str | None:
    """None if the ConfigDict `config` has the dotted `field` ('data.rho'), else one line
    naming the first missing part and the closest existing fields:

        config.data.rhoo: no such field; did you mean config.data.rho?
    """
    node, path = config, "config"
    for key in field.split("."):
        if not hasattr(node, "keys"):
            return f"{path} = {node!r} is not a section: it has no field {key!r}"
        if key not in node:
            hint = config_schema.did_you_mean(path, key, node.keys())
            listing = f"fields of {path}: " + ", ".join(sorted(node.keys()))
            return f"{path}.{key}: no such field; {hint or listing}".rstrip()
        node, path = node[key], f"{path}.{key}"
    return None
