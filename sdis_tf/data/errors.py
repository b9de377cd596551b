"""The one exception every data reader raises for a missing or unusable file.

Each reader subclasses `DataFileError` (Omniglot, few-shot pickles, labelled-factor
files, 3D Shapes) with its own wording; a run turns any of them into one line and
exit status 2 before anything is written (sdis_tf.train.harness).
"""


class DataFileError(ValueError):
    """Data at `path` is missing or unusable; the message says what is wrong and how to fix it."""
