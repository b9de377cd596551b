"""Config files as code: load `configs/<name>.py` and call its `get_config(preset)`.

The same files `python main.py --config=configs/X.py:preset` reads (through
ml_collections' config_flags), loaded from a path: for notebooks, scripts, tests
and for config files built on other config files. Config files are plain
modules, not a package, so they are loaded by path.
"""

import importlib.util
import os


def load_config(path: str, preset: str = ""):
    """`get_config(preset)` of the config file at `path` (a ConfigDict).

    Raises:
      FileNotFoundError: `path` does not exist.
      AttributeError: the file defines no `get_config`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    name = "sdis_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path!r} defines no get_config(preset)")
    return module.get_config(preset)
