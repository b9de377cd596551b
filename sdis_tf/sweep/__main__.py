"""python -m sdis_tf.sweep --config=FILE[:preset] --sweep=NAME --workdir=DIR (sdis_tf.sweep.cli)."""

from sdis_tf.sweep import cli

if __name__ == "__main__":
    cli.run()
