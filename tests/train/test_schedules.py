"""Learning-rate schedules: constant, cosine to 0, and the config check of the name."""

import math

import numpy as np
import pytest

from sdis_tf import config_schema as cs
from sdis_tf.train import schedules


def test_constant_is_the_learning_rate_at_every_step():
    optimizer = schedules.adam({"learning_rate": 3e-3, "schedule": "constant"}, steps=100)
    assert float(optimizer.learning_rate) == pytest.approx(3e-3)


def test_cosine_follows_the_formula_and_ends_at_zero():
    steps, lr = 1000, 1e-3
    schedule = schedules.learning_rate({"learning_rate": lr, "schedule": "cosine"}, steps)
    at = [0, 250, 500, 999, 1000]
    expected = [lr * (1 + math.cos(math.pi * t / steps)) / 2 for t in at]
    np.testing.assert_allclose([float(schedule(t)) for t in at], expected, rtol=1e-5, atol=1e-10)


def test_an_unknown_schedule_is_named_with_the_allowed_ones():
    problems = cs.check({"optimizer": {"learning_rate": 1e-3, "schedule": "linear"}},
                        {"optimizer": schedules.OPTIMIZER_SCHEMA})
    assert len(problems) == 1
    assert "optimizer.schedule" in problems[0] and "cosine" in problems[0], problems
