"""Experiments: one module per experiment, dispatched on `config.experiment`.

An experiment module `sdis_tf/experiments/<name>.py` defines `EXPERIMENT`, a
`sdis_tf.train.harness.Experiment` (its config schema and constraints, and how to
prepare, build and summarise one run); `run(config, workdir)` below runs the
experiment `config.experiment` names through the harness.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from sdis_tf import config_schema
from sdis_tf.train import harness


def available() -> list[str]:
    """Names of the experiment modules (those defining `EXPERIMENT`)."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "EXPERIMENT", None), harness.Experiment):
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
            if isinstance(getattr(module, "EXPERIMENT", None), harness.Experiment):
                return module
    raise config_schema.ConfigError(
        f"invalid config:\n  config.experiment = {name!r} is not an experiment; allowed: "
                     + ", ".join(repr(n) for n in available()))


def run(config, workdir: str) -> str:
    """Runs `config` in `workdir` (sdis_tf.train.harness.run); returns the run's summary."""
    if "experiment" not in config:
        raise config_schema.ConfigError(
            "invalid config:\n  config.experiment: missing; allowed: one of "
            + ", ".join(repr(n) for n in available()))
    module = get(config.experiment if hasattr(config, "experiment") else config["experiment"])
    return harness.run(module.EXPERIMENT, config, workdir)
