"""Sweeps: named lists of config overrides; each point is one run in its own directory.

    python -m sdis_tf.sweep --config=configs/disentangle.py:cpu64 --sweep=fig4 \
        --workdir=runs/fig4 [--launcher=local|slurm] [--parallel=N] [--dry_run]

- `hyper`: the sweep algebra config files use (sweep, fixed, product, zipit, chainit).
- `points`: a sweep's points, their directory names and commands; sweep.json.
- `local`: runs the points on this machine, N at a time.
- `slurm`: one SLURM job array, and the runner of its tasks.
- `cli`: the command line.
"""
