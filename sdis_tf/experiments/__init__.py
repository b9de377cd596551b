"""Experiments: one module per experiment, dispatched on `config.experiment`.

An experiment module `sdis_tf/experiments/<name>.py` defines
- `SCHEMA`: the schema of its config (see `sdis_tf.config_schema`),
- `CONSTRAINTS`: cross-field checks (a tuple of functions, may be empty),
- `run(config, workdir) -> str | None`: trains and evaluates into `workdir`,
  returning a short text summary (printed by main.py) or None.
`run(config, workdir)` below validates the config against the schema before
any work, then calls the module's `run`.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from sdis_tf import config_schema


def available() -> list[str]:
    """Names of the experiment modules (those defining `run` and `SCHEMA`)."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "run") and hasattr(module, "SCHEMA"):
            names.append(info.name)
    return sorted(names)


def get(name: str) -> ModuleType:
    """The experiment module `name`; unknown names raise a ConfigError listing the choices."""
    if isinstance(name, str) and name.isidentifier() and not name.startswith("_"):
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
        else:
            if hasattr(module, "run") and hasattr(module, "SCHEMA"):
                return module
    raise config_schema.ConfigError(
        f"invalid config:\n  config.experiment = {name!r} is not an experiment; allowed: "
                     + ", ".join(repr(n) for n in available()))


def run(config, workdir: str):
    """Validates `config` against its experiment's schema, then runs it in `workdir`."""
    if "experiment" not in config:
        raise config_schema.ConfigError(
            "invalid config:\n  config.experiment: missing; allowed: one of "
            + ", ".join(repr(n) for n in available()))
    module = get(config.experiment if hasattr(config, "experiment") else config["experiment"])
    config_schema.validate(config, module.SCHEMA, getattr(module, "CONSTRAINTS", ()))
    return module.run(config, workdir)
