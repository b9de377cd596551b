"""Test set-up: quiet TF logs, two logical CPUs for MirroredStrategy tests, and the local
copies of real data sets (`real_data`)."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sdis_tf.train.distribute import split_cpu  # noqa: E402

split_cpu(2)

REAL_DATA_ENV = "SDIS_TF_TEST_DATA"


@pytest.fixture(scope="session")
def real_data() -> pathlib.Path:
    """The folder of local real-data copies, `$SDIS_TF_TEST_DATA` (e.g. holding
    `omniglot/images_background.npz`, `omniglot/all_runs.zip`); unset: the test is skipped."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        pytest.skip(f"{REAL_DATA_ENV} is not set (the folder of the local real-data copies)")
    root = pathlib.Path(value).expanduser().resolve()
    if not root.is_dir():
        pytest.fail(f"{REAL_DATA_ENV}={value!r} is not a directory", pytrace=False)
    return root
