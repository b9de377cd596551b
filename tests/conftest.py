"""Test session set-up: quiet TF logs, two logical CPUs for MirroredStrategy tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sdis_tf.train.distribute import split_cpu  # noqa: E402

split_cpu(2)
