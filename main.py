"""Runs one experiment from a checkout: python main.py --config=configs/<name>.py[:preset] --workdir=DIR.

The same command as `python -m sdis_tf` (sdis_tf.cli, which documents the flags
and exit codes).
"""

from sdis_tf import cli

main = cli.main

if __name__ == "__main__":
    cli.run()
