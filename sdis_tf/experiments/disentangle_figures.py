"""Aggregates finished disentangle runs into the paper's tables and figures (Figs. 4, 6, 8-10, 15).

    python -m sdis_tf.experiments.disentangle_figures runs/fig4 --out=runs/fig4/figures

Every folder below the root that holds a finished run (result.json +
config.json of experiment "disentangle") is one row: its method, eps, setting
(correlation, rho, alpha, task weight kind, block size) and seed, and the
final scores. A run with ICA scores also yields a "<method>+ica" row (e.g.
inner-Ridge + ICA from a `ridge` run).

Two model-selection rules, side by side, pick one eps per (method, setting,
seed), then average over seeds (mean and standard deviation):
- "oracle" (the paper's): the eps with the best grid MCC. It looks at the
  true factors, so it is an upper bound, not a usable procedure.
- "val_loss": the eps with the lowest validation outer loss (eval/loss,
  held-out query samples of held-out tasks). It never looks at the factors;
  it favours small penalties, since the penalty biases the predictions.
Outputs: summary.md (tables, each saying which rule it uses), mcc_vs_eps.png
(MCC and R against eps per setting, mean over seeds), best_vs_setting.png
(best MCC and DCI against rho / alpha, both rules).

The sweeps behind each figure (`SWEEPS`) print as one main.py command per run:

    python -m sdis_tf.experiments.disentangle_figures --commands=fig4 runs/fig4 > fig4.sh
    python -m sdis_tf.experiments.disentangle_figures --commands=fig4 \
        --data.path=dsprites.npz runs/dsprites_fig4 > fig4_dsprites.sh
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex

import numpy as np

from sdis_tf.train.rundir import save_figure

SCORES = ("mcc", "r", "dci_d", "dci_c")
RULES = ("oracle", "val_loss")
EPS_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
# figure -> (methods, list of settings as {config override: value}); eps over EPS_GRID, SEEDS.
SWEEPS = {
    "fig4": (("lasso", "ridge"),
             [{"data.rho": rho} for rho in (0.0, 0.5, 0.9, 0.99)]
             + [{"data.alpha": alpha} for alpha in (0.0, 0.5)]),
    "fig8": (("lasso", "ridge"),
             [{"tasks.kind": "block", "tasks.block_size": b} for b in (2, 3, 6)]),
    "fig9": (("lasso", "ridge"), [{"tasks.kind": "laplace"}]),
    "fig10": (("outer_lasso", "outer_ridge"), [{}]),
}


def sweep_commands(figure: str, root: str, config: str = "configs/disentangle.py",
                   data: dict | None = None) -> list[str]:
    """One `python main.py ...` command per run of `figure`'s sweep, workdirs under `root`.

    Fig. 4 / 6 / 15 share the fig4 runs (+ ICA from the ridge runs); Fig. 10 = fig10.
    `data` ({"path": FILE, "images_key": ..., ...}) adds --config.data.<key>=<value>
    to every command (a labelled-factor file instead of the renderer); empty values
    are left out.
    """
    if figure not in SWEEPS:
        raise ValueError(f"figure must be one of {sorted(SWEEPS)}. Received: {figure!r}")
    methods, settings = SWEEPS[figure]
    data_flags = "".join(f" --config.data.{key}={shlex.quote(str(value))}"
                         for key, value in (data or {}).items() if value != "")
    commands = []
    for setting in settings:
        name = "_".join(f"{k.split('.')[-1]}{v}" for k, v in setting.items()) or "default"
        for method in methods:
            for eps in EPS_GRID:
                for seed in SEEDS:
                    overrides = {"method": method, "eps": eps, "seed": seed, **setting}
                    flags = " ".join(f"--config.{k}={v}" for k, v in overrides.items())
                    workdir = os.path.join(root, name, method, f"eps{eps:g}", f"seed{seed}")
                    commands.append(f"python main.py --config={config} {flags}{data_flags} "
                                    f"--workdir={shlex.quote(workdir)}")
    return commands


def collect(root: str) -> list[dict]:
    """One row per finished run below `root` (plus '+ica' rows), sorted."""
    rows = []
    for folder, _, files in os.walk(root):
        if "result.json" not in files or "config.json" not in files:
            continue
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        if config.get("experiment") != "disentangle":
            continue
        with open(os.path.join(folder, "result.json")) as f:
            result = json.load(f)
        data, tasks = config["data"], config["tasks"]
        base = {"method": config["method"], "eps": config["eps"], "seed": config["seed"],
                "setting": (data["correlation"], data["rho"], data["alpha"], tasks["kind"],
                            tasks["block_size"]),
                "loss": float(result["eval/loss"]), "path": folder}
        rows.append({**base, **{s: float(result[f"eval/{s}"]) for s in SCORES}})
        if "eval/ica_mcc" in result:
            rows.append({**base, "method": base["method"] + "+ica",
                         **{s: float(result[f"eval/ica_{s}"]) for s in SCORES}})
    return sorted(rows, key=lambda r: (r["setting"], r["method"], r["eps"], r["seed"]))


def select(rows: list[dict], rule: str) -> dict:
    """{(method, setting): {score: (mean, std, n_seeds), "eps": [chosen eps per seed]}}."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}. Received: {rule!r}")
    by_seed = collections.defaultdict(list)
    for row in rows:
        by_seed[(row["method"], row["setting"], row["seed"])].append(row)
    chosen = collections.defaultdict(list)
    for (method, setting, _), candidates in sorted(by_seed.items()):
        finite = [r for r in candidates if np.isfinite(r["mcc"])] or candidates
        best = (max(finite, key=lambda r: r["mcc"]) if rule == "oracle"
                else min(finite, key=lambda r: r["loss"]))
        chosen[(method, setting)].append(best)
    summary = {}
    for key, best in chosen.items():
        entry = {s: (float(np.mean([b[s] for b in best])), float(np.std([b[s] for b in best])),
                     len(best)) for s in SCORES}
        entry["eps"] = [b["eps"] for b in best]
        summary[key] = entry
    return summary


def _setting_text(setting) -> str:
    correlation, rho, alpha, kind, block = setting
    text = f"{correlation} rho={rho:g} alpha={alpha:g} w={kind}"
    return text + (f" block={block}" if kind == "block" else "")


def summary_markdown(rows: list[dict]) -> str:
    """Markdown: per-eps table (mean over seeds) and the best-eps table under each rule."""
    lines = ["# Disentanglement runs", "", "## Every eps (mean over seeds)", "",
             "| setting | method | eps | seeds | MCC | R | DCI-D | DCI-C | val loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["setting"], row["method"], row["eps"])].append(row)
    for (setting, method, eps), group in sorted(groups.items()):
        means = [np.mean([g[s] for g in group]) for s in SCORES + ("loss",)]
        lines.append(f"| {_setting_text(setting)} | {method} | {eps:g} | {len(group)} | "
                     + " | ".join(f"{m:.3f}" for m in means[:4]) + f" | {means[4]:.4f} |")
    for rule in RULES:
        title = ("oracle: best eps per seed by grid MCC (the paper's rule; looks at the true "
                 "factors)" if rule == "oracle" else
                 "val_loss: eps with the lowest validation outer loss (no true factors)")
        lines += ["", f"## Best eps per seed, rule {title}", "",
                  "| setting | method | seeds | chosen eps | MCC | R | DCI-D | DCI-C |",
                  "|---|---|---|---|---|---|---|---|"]
        for (method, setting), entry in sorted(select(rows, rule).items(),
                                               key=lambda kv: (kv[0][1], kv[0][0])):
            scores = " | ".join(f"{entry[s][0]:.3f} ± {entry[s][1]:.3f}" for s in SCORES)
            lines.append(f"| {_setting_text(setting)} | {method} | {entry['mcc'][2]} | "
                         f"{', '.join(f'{e:g}' for e in entry['eps'])} | {scores} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: str) -> list[str]:
    """Writes mcc_vs_eps.png and best_vs_setting.png into `out`; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    os.makedirs(out, exist_ok=True)
    settings = sorted({r["setting"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(2, len(settings), figsize=(4 * len(settings), 6.4), squeeze=False)
    for column, setting in enumerate(settings):
        # one evenly spaced position per eps of the setting, shared by its methods
        grid = sorted({r["eps"] for r in rows if r["setting"] == setting})
        for method in methods:
            points = collections.defaultdict(list)
            for r in rows:
                if r["setting"] == setting and r["method"] == method:
                    points[r["eps"]].append(r)
            if not points:
                continue
            eps = sorted(points)
            x = [grid.index(e) for e in eps]
            for row_index, score in enumerate(("mcc", "r")):
                axes[row_index, column].plot(
                    x, [np.mean([p[score] for p in points[e]]) for e in eps], marker="o",
                    label=method)
        for row_index in range(2):
            axes[row_index, column].set_xticks(range(len(grid)), [f"{e:g}" for e in grid])
        axes[0, column].set_title(_setting_text(setting), fontsize=8)
        axes[0, column].set_ylabel("MCC")
        axes[1, column].set_ylabel("R")
        axes[1, column].set_xlabel("lambda / lambda_max")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    paths = [save_figure(fig, os.path.join(out, "mcc_vs_eps.png"))]

    fig, axes = plt.subplots(len(RULES), 2, figsize=(9, 3.4 * len(RULES)), squeeze=False)
    for row_index, rule in enumerate(RULES):
        chosen = select(rows, rule)
        for method in methods:
            items = sorted((s, e) for (m, s), e in chosen.items() if m == method)
            if not items:
                continue
            x = [f"rho={s[1]:g} a={s[2]:g}" for s, _ in items]
            axes[row_index, 0].errorbar(x, [e["mcc"][0] for _, e in items],
                                        [e["mcc"][1] for _, e in items], marker="o", label=method)
            axes[row_index, 1].plot(x, [e["dci_d"][0] for _, e in items], marker="o",
                                    label=method)
        axes[row_index, 0].set_ylabel(f"best MCC ({rule})")
        axes[row_index, 1].set_ylabel(f"DCI-D ({rule})")
        for ax in axes[row_index]:
            ax.tick_params(axis="x", labelsize=7, rotation=30)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, os.path.join(out, "best_vs_setting.png")))
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding the run directories")
    parser.add_argument("--out", default=None, help="output folder (default: ROOT/figures)")
    parser.add_argument("--commands", choices=sorted(SWEEPS), default=None,
                        help="print the run commands of this figure's sweep instead")
    parser.add_argument("--config", default="configs/disentangle.py",
                        help="config (with preset) used by --commands")
    for key in ("path", "images_key", "factors_key", "image_size"):
        parser.add_argument(f"--data.{key}", dest=key, default="",
                            help=f"--commands: set config.data.{key} in every command")
    args = parser.parse_args(argv)
    if args.commands:
        data = {key: getattr(args, key) for key in ("path", "images_key", "factors_key",
                                                    "image_size")}
        print("\n".join(sweep_commands(args.commands, args.root, args.config, data)))
        return
    rows = collect(args.root)
    if not rows:
        raise SystemExit(f"no finished disentangle runs below {args.root}")
    out = args.out or os.path.join(args.root, "figures")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(rows))
    for path in plot(rows, out) + [os.path.join(out, "summary.md")]:
        print(path)


if __name__ == "__main__":
    main()
