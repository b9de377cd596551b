"""python -m sdis_tf --config=configs/<name>.py[:preset] --workdir=DIR (see sdis_tf.cli)."""

from sdis_tf import cli

if __name__ == "__main__":
    cli.run()
