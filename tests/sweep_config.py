"""Config file of tests/test_sweep.py: the quickstart's tiny preset and small sweeps of it."""

import os

from sdis_tf.config_files import load_config

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs", "quickstart.py")


def get_config(preset: str = "tiny"):
    """configs/quickstart.py with `preset` (default "tiny": a run of a few seconds)."""
    return load_config(QUICKSTART, preset)


def get_sweep(name: str, hyper) -> list[dict]:
    """"seeds": seeds 0 and 1; "one_fails": seed 2 and seed -1 (refused by the schema)."""
    sweeps = {"seeds": hyper.sweep("seed", (0, 1)), "one_fails": hyper.sweep("seed", (2, -1))}
    if name not in sweeps:
        raise ValueError(f"unknown sweep {name!r}; allowed: {', '.join(map(repr, sweeps))}")
    return sweeps[name]
