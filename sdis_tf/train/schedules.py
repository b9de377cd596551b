"""Learning-rate schedules the Adam-trained experiments share (quickstart, disentangle).

`config.optimizer = {learning_rate, schedule}`: "constant" keeps `learning_rate`
for the whole run (the paper's Adam 1e-3); "cosine" decays it as
lr_t = learning_rate * (1 + cos(pi * t / steps)) / 2, reaching 0 at the last step.
"""

from __future__ import annotations

import keras

from sdis_tf import config_schema as cs

SCHEDULES = ("constant", "cosine")

# The schema entry of `config.optimizer` for the experiments that use `adam`.
OPTIMIZER_SCHEMA = {"learning_rate": cs.POSITIVE, "schedule": cs.Choice(*SCHEDULES)}


def learning_rate(optimizer: dict, steps: int):
    """The learning rate (a float or a Keras schedule) of `config.optimizer` over `steps`."""
    if optimizer["schedule"] == "constant":
        return optimizer["learning_rate"]
    return keras.optimizers.schedules.CosineDecay(optimizer["learning_rate"], steps)


def adam(optimizer: dict, steps: int) -> keras.optimizers.Adam:
    """Adam with the learning rate of `config.optimizer` over a run of `steps` steps."""
    return keras.optimizers.Adam(learning_rate(optimizer, steps))
