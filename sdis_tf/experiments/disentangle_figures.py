"""Aggregates finished disentangle runs into the paper's tables and figures (Figs. 4, 6, 8-10, 15).

    python -m sdis_tf.sweep --config=configs/disentangle.py:cpu64 --sweep=fig4 --workdir=runs/fig4
    python -m sdis_tf.experiments.disentangle_figures runs/fig4 --out=runs/fig4/figures

The figures' sweeps are named in configs/disentangle.py (`get_sweep`: fig4,
fig4_rho, fig8, fig9, fig10); `python -m sdis_tf.sweep ... --dry_run` prints
their commands.

Every folder below the root that holds a finished run (result.json +
config.json of experiment "disentangle") is one row: its method, eps, setting
(correlation, rho, alpha, task weight kind, block size, factor roles other
than continuous task factors) and seed, the final scores and each task
factor's scores on the grid and on the training distribution
(eval/<score>/<factor>, eval/<score>_train/<factor>, with its role;
`mcc_continuous` is the mean of the continuous factors' MCC terms,
`disentangle_eval.mcc_continuous`, computed from the per-factor terms for runs
written before it was logged). A run with ICA scores also yields a
"<method>+ica" row (e.g. inner-Ridge + ICA from a `ridge` run; grid scores only).

Three model-selection rules, side by side, pick one eps per (method, setting,
seed), then average over seeds (mean and standard deviation):
- "oracle" (the paper's): the eps with the best grid MCC. It looks at the
  true factors, so it is an upper bound, not a usable procedure.
- "val_loss": the eps with the lowest validation outer loss (eval/loss,
  held-out query samples of held-out tasks). It never looks at the factors;
  it favours small penalties, since the penalty biases the predictions.
- "agreement": one eps per (method, setting), for every seed: the eps with the
  highest mean agreement over its seeds, a model's agreement being how well its
  codes agree with those of the other seeds' models at the same eps
  (`metrics.code_agreement`: median MCC between codes on the same rows of the
  data set, each run's codes.npz). Pooled over seeds because a per-seed choice
  follows one seed's noise: on the renderer with the hues periodic it picked an
  eps whose seeds all fail the same way for two seeds of five. It
  never looks at the factors and costs no training beyond the sweep's seeds
  (>= 2 per eps; the runs compared are those whose configs differ only in the
  seed); a run without codes.npz (eval.agreement_points = 0) has no agreement
  and the rule leaves it out. A "+ica" row takes its run's value: the rule
  ranks the trained encoder, whose raw codes ICA then unmixes.
Outputs: summary.md (tables, each saying which rule it uses; for runs that have
per-factor scores, per-factor tables on the grid and on the training
distribution), mcc_vs_eps.png (MCC and R against eps per setting, mean over
seeds), best_vs_setting.png (best MCC and DCI per setting, every rule) and, for
runs with per-factor scores, per_factor.png (one row of panels per setting and
rule: each task factor's grid MCC term and R per method, mean ± std over seeds;
a categorical factor's first bar is its class accuracy, labelled so).
"""

from __future__ import annotations

import argparse
import collections
import os
import textwrap

import numpy as np
from absl import logging

from sdis_tf import metrics
from sdis_tf.experiments import disentangle_eval
from sdis_tf.train.rundir import (RESUMABLE_KEYS, atomic_write, config_differences,
                                  finished_runs, save_figure)

SCORES = ("mcc", "r", "dci_d", "dci_c")
FACTOR_SCORES = SCORES + ("class_acc", "codes")
"""Per task factor (class_acc: categorical factors only; codes: the codes it owns,
`disentangle_eval.scores`)."""
POINT_SETS = {"": "grid", "_train": "training distribution"}
"""Suffix of a point set's keys (eval/<score><suffix>/<factor>): its name."""
RULES = ("oracle", "val_loss", "agreement")
RULE_TITLES = {
    "oracle": "oracle: best eps per seed by grid MCC (the paper's rule; looks at the true "
              "factors)",
    "val_loss": "val_loss: eps with the lowest validation outer loss (no true factors)",
    "agreement": "agreement: the eps whose seeds' codes agree best, mean over its seeds of "
                 "each model's median MCC with the others (one eps per setting; no true "
                 "factors)",
}
AGREEMENT_CODES = "codes.npz"
"""A run's codes of the agreement rows (written by `disentangle.DisentangleRun`)."""


def _factor_scores(result: dict, prefix: str, suffix: str = "") -> dict:
    """{factor: {score: value}} of a result's eval/<prefix><score><suffix>/<factor> keys,
    the factors in the run's order (`factor_names`)."""
    scores = {name: {} for name in result.get("factor_names", ())}
    for score in FACTOR_SCORES:
        head = f"eval/{prefix}{score}{suffix}/"
        for key, value in result.items():
            if key.startswith(head):
                scores.setdefault(key[len(head):], {})[score] = float(value)
    return {name: values for name, values in scores.items() if values}


def result_mcc_continuous(result: dict, prefix: str = "", suffix: str = "") -> float:
    """eval/<prefix>mcc_continuous<suffix> of a run's result; for a result written before
    that key, `disentangle_eval.mcc_continuous` of its per-factor MCC terms and roles."""
    key = f"eval/{prefix}mcc_continuous{suffix}"
    if key in result:
        return float(result[key])
    terms = {name: values["mcc"]
             for name, values in _factor_scores(result, prefix, suffix).items()
             if "mcc" in values}
    return disentangle_eval.mcc_continuous(terms, result.get("factor_roles", {}))


def _roles_text(roles: dict) -> str:
    """The roles other than 'continuous', as 'shape:categorical orientation:periodic:1:1'."""
    return " ".join(f"{name}:{role}" for name, role in roles.items() if role != "continuous")


def collect(root: str) -> list[dict]:
    """One row per finished run below `root` (plus '+ica' rows), sorted."""
    runs = finished_runs(root, "disentangle")
    agreement = code_agreements(runs)
    rows = []
    for folder, config, result in runs:
        data, tasks = config["data"], config["tasks"]
        roles = result.get("factor_roles", {})
        base = {"method": config["method"], "eps": config["eps"], "seed": config["seed"],
                "setting": (data["correlation"], data["rho"], data["alpha"], tasks["kind"],
                            tasks["block_size"], _roles_text(roles)),
                "roles": roles, "loss": float(result["eval/loss"]), "path": folder,
                "agreement": agreement.get(folder, float("nan"))}
        for method, prefix in ((base["method"], ""), (base["method"] + "+ica", "ica_")):
            if f"eval/{prefix}mcc" not in result:
                continue
            rows.append({**base, "method": method,
                         **{s: float(result[f"eval/{prefix}{s}"]) for s in SCORES},
                         **{f"factors{suffix}": _factor_scores(result, prefix, suffix)
                            for suffix in POINT_SETS},
                         **{f"mcc_continuous{suffix}": result_mcc_continuous(result, prefix,
                                                                             suffix)
                            for suffix in POINT_SETS}})
    return sorted(rows, key=lambda r: (r["setting"], r["method"], r["eps"], r["seed"]))


def code_agreements(runs: list[tuple[str, dict, dict]]) -> dict[str, float]:
    """{run directory: agreement} of the runs (`finished_runs`) with codes.npz:
    `metrics.code_agreement` among the runs whose configs differ only in the seed (and
    the keys a rerun may change, `rundir.RESUMABLE_KEYS`). A group with one run, a seed
    twice, or codes of other rows or widths gets no value (and a warning)."""
    groups: list[tuple[dict, list]] = []  # (first config, [(folder, seed, codes path)])
    for folder, config, _ in runs:
        path = os.path.join(folder, AGREEMENT_CODES)
        if not os.path.isfile(path):
            continue
        member = (folder, config["seed"], path)
        for first, members in groups:
            if not config_differences(first, config, ignore=RESUMABLE_KEYS | {"seed"}):
                members.append(member)
                break
        else:
            groups.append((config, [member]))
    values = {}
    for _, members in groups:
        seeds = [seed for _, seed, _ in members]
        if len(set(seeds)) < len(seeds):
            logging.warning("code agreement: seeds %s repeated among runs of one config (%s); "
                            "not scored", seeds, ", ".join(f for f, _, _ in members))
            continue
        if len(members) < 2:
            continue
        loaded = []
        for _, _, path in members:
            with np.load(path) as saved:
                loaded.append((saved["rows"], saved["codes"]))
        if any(not np.array_equal(rows, loaded[0][0]) or codes.shape != loaded[0][1].shape
               for rows, codes in loaded):
            logging.warning("code agreement: the codes of %s cover other rows or widths; "
                            "not scored", ", ".join(path for _, _, path in members))
            continue
        scores = metrics.code_agreement(np.stack([codes for _, codes in loaded]))
        values.update({folder: float(v) for (folder, _, _), v in zip(members, scores)})
    return values


def select(rows: list[dict], rule: str) -> dict:
    """{(method, setting): {score: (mean, std, n_seeds), "eps": [chosen eps per seed],
    "mcc_continuous": (mean, std, n_seeds), "factors": {factor: {score: (mean, std,
    n_seeds)}}, "mcc_continuous_train", "factors_train" (the same on the training
    distribution), "roles": {factor: role}}} (NaN scores left out of the per-factor means)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}. Received: {rule!r}")
    by_seed = collections.defaultdict(list)
    for row in rows:
        by_seed[(row["method"], row["setting"], row["seed"])].append(row)
    chosen = collections.defaultdict(list)
    key = {"oracle": "mcc", "val_loss": "loss", "agreement": "agreement"}[rule]
    pooled = collections.defaultdict(list)     # agreement: mean over the seeds of an eps
    for row in rows:
        if np.isfinite(row["agreement"]):
            pooled[(row["method"], row["setting"], row["eps"])].append(row["agreement"])
    pooled_agreement = lambda r: float(np.mean(pooled[(r["method"], r["setting"], r["eps"])]))
    for (method, setting, _), candidates in sorted(by_seed.items()):
        # each rule reads its own score only (val_loss and agreement never the factors)
        scored = [r for r in candidates if np.isfinite(r[key])]
        if not scored:
            if rule == "agreement":
                continue          # no codes to compare: the rule has no choice to make
            scored = candidates
        best = {"oracle": lambda: max(scored, key=lambda r: r["mcc"]),
                "val_loss": lambda: min(scored, key=lambda r: r["loss"]),
                "agreement": lambda: max(scored, key=pooled_agreement)}[rule]()
        chosen[(method, setting)].append(best)
    summary = {}
    for key, best in chosen.items():
        entry = {s: (float(np.mean([b[s] for b in best])), float(np.std([b[s] for b in best])),
                     len(best)) for s in SCORES}
        entry["eps"] = [b["eps"] for b in best]
        for suffix in POINT_SETS:
            factors = [b[f"factors{suffix}"] for b in best]
            entry[f"mcc_continuous{suffix}"] = _mean_std([b[f"mcc_continuous{suffix}"]
                                                          for b in best])
            names = dict.fromkeys(name for scores in factors for name in scores)
            entry[f"factors{suffix}"] = {
                name: {score: _mean_std([scores.get(name, {}).get(score) for scores in factors])
                       for score in FACTOR_SCORES} for name in names}
        entry["roles"] = best[0]["roles"]
        summary[key] = entry
    return summary


def _mean_std(values: list) -> tuple[float, float, int]:
    """(mean, std, count) of the finite values (NaN, NaN, 0 without any)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    return float(np.mean(finite)), float(np.std(finite)), len(finite)


def _setting_text(setting) -> str:
    correlation, rho, alpha, kind, block, roles = setting
    text = f"{correlation} rho={rho:g} alpha={alpha:g} w={kind}"
    return text + (f" block={block}" if kind == "block" else "") + (f" {roles}" if roles else "")


def _cell(statistics: tuple) -> str:
    """'mean ± std' of (mean, std, count), '' when count is 0."""
    mean, std, count = statistics
    return f"{mean:.3f} ± {std:.3f}" if count else ""


def _factor_lines(summary: dict, suffix: str) -> list[str]:
    """The per-factor table of `select`'s summary on the point set of `suffix` (a key of
    POINT_SETS; empty if no run has per-factor scores there)."""
    lines = ["| setting | method | factor | role | seeds | MCC term | R | DCI-D | DCI-C | "
             "class acc | codes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, setting), entry in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        text = f"| {_setting_text(setting)} | {method}"
        factors, continuous = entry[f"factors{suffix}"], entry[f"mcc_continuous{suffix}"]
        for name, scores in factors.items():
            lines.append(f"{text} | {name} | {entry['roles'].get(name, 'continuous')} | "
                         f"{scores['mcc'][2]} | "
                         + " | ".join(_cell(scores[s]) for s in FACTOR_SCORES) + " |")
        if factors and continuous[2]:
            lines.append(f"{text} | mean of the continuous factors | | "
                         f"{continuous[2]} | {_cell(continuous)} | | | | | |")
    return lines if len(lines) > 2 else []


def summary_markdown(rows: list[dict]) -> str:
    """Markdown: per-eps table (mean over seeds) and the best-eps table under each rule."""
    lines = ["# Disentanglement runs", "", "## Every eps (mean over seeds)", "",
             "| setting | method | eps | seeds | MCC | R | DCI-D | DCI-C | val loss | "
             "agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["setting"], row["method"], row["eps"])].append(row)
    for (setting, method, eps), group in sorted(groups.items()):
        means = [np.mean([g[s] for g in group]) for s in SCORES + ("loss",)]
        agreement = _mean_std([g["agreement"] for g in group])
        lines.append(f"| {_setting_text(setting)} | {method} | {eps:g} | {len(group)} | "
                     + " | ".join(f"{m:.3f}" for m in means[:4]) + f" | {means[4]:.4f} | "
                     + (f"{agreement[0]:.3f}" if agreement[2] else "") + " |")
    for rule in RULES:
        lines += ["", f"## Best eps per seed, rule {RULE_TITLES[rule]}", "",
                  "| setting | method | seeds | chosen eps | MCC | R | DCI-D | DCI-C |",
                  "|---|---|---|---|---|---|---|---|"]
        summary = select(rows, rule)
        for (method, setting), entry in sorted(summary.items(),
                                               key=lambda kv: (kv[0][1], kv[0][0])):
            scores = " | ".join(f"{entry[s][0]:.3f} ± {entry[s][1]:.3f}" for s in SCORES)
            lines.append(f"| {_setting_text(setting)} | {method} | {entry['mcc'][2]} | "
                         f"{', '.join(f'{e:g}' for e in entry['eps'])} | {scores} |")
        for suffix, points in POINT_SETS.items():
            factor_lines = _factor_lines(summary, suffix)
            if factor_lines:
                lines += ["", f"### Per task factor on the {points}, rule {rule} (the eps "
                          "chosen above; MCC term: the factor's matched correlation, mean over "
                          "its latent columns; class acc: chance-corrected LDA accuracy, "
                          "categorical factors; codes: how many codes have one of its "
                          "latent columns as their most correlated)", ""]
                lines += factor_lines
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: str) -> list[str]:
    """Writes mcc_vs_eps.png, best_vs_setting.png and, when some run has per-factor scores,
    per_factor.png into `out`; returns their paths."""
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

    fig, axes = plt.subplots(len(RULES), 2, figsize=(max(9.0, 2.6 * len(settings)),
                                                     3.6 * len(RULES)), squeeze=False)
    for row_index, rule in enumerate(RULES):
        chosen = select(rows, rule)
        for method in methods:
            items = sorted((s, e) for (m, s), e in chosen.items() if m == method)
            if not items:
                continue
            # the whole setting (distinct settings, distinct labels), a few words a line
            x = [textwrap.fill(_setting_text(s), 24, break_long_words=False,
                               break_on_hyphens=False) for s, _ in items]
            axes[row_index, 0].errorbar(x, [e["mcc"][0] for _, e in items],
                                        [e["mcc"][1] for _, e in items], marker="o", label=method)
            axes[row_index, 1].plot(x, [e["dci_d"][0] for _, e in items], marker="o",
                                    label=method)
        axes[row_index, 0].set_ylabel(f"best MCC ({rule})")
        axes[row_index, 1].set_ylabel(f"DCI-D ({rule})")
        for ax in axes[row_index]:
            ax.tick_params(axis="x", labelsize=6)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, os.path.join(out, "best_vs_setting.png")))
    figure = _per_factor_figure(rows, methods)
    if figure is not None:
        paths.append(save_figure(figure, os.path.join(out, "per_factor.png")))
    return paths


def _per_factor_figure(rows: list[dict], methods: list[str]):
    """per_factor.png's figure (module docstring): one row of panels per (setting, rule)
    with per-factor scores, the grid MCC term (a categorical factor: its class accuracy)
    on the left and R on the right, one bar per method (mean ± std over seeds); None if no
    run has per-factor scores."""
    from matplotlib import pyplot as plt

    groups = collections.defaultdict(dict)   # (setting, rule index): {method: select's entry}
    for rule_index, rule in enumerate(RULES):
        for (method, setting), entry in select(rows, rule).items():
            if entry["factors"]:
                groups[(setting, rule_index)][method] = entry
    if not groups:
        return None
    num_factors = max(len(entry["factors"]) for entries in groups.values()
                      for entry in entries.values())
    fig, axes = plt.subplots(len(groups), 2, figsize=(max(8.0, 2.4 * num_factors),
                                                      2.8 * len(groups)), squeeze=False)
    for row_index, ((setting, rule_index), entries) in enumerate(sorted(groups.items())):
        rule = RULES[rule_index]
        names = list(dict.fromkeys(name for entry in entries.values()
                                   for name in entry["factors"]))
        categorical = {name for entry in entries.values()
                       for name, role in entry["roles"].items() if role == "categorical"}
        shown = ([("class_acc" if name in categorical else "mcc") for name in names],
                 ["r"] * len(names))              # the scores of the left and right panels
        width = 0.8 / len(entries)
        for position, method in enumerate(m for m in methods if m in entries):
            factors = entries[method]["factors"]
            x = np.arange(len(names)) + (position - (len(entries) - 1) / 2) * width
            for column, scores in enumerate(shown):
                statistics = [factors.get(name, {}).get(score, (np.nan, np.nan, 0))
                              for name, score in zip(names, scores)]
                axes[row_index, column].bar(
                    x, [mean for mean, _, _ in statistics], width,
                    yerr=[std for _, std, _ in statistics], capsize=2, label=method,
                    color=plt.cm.tab10(methods.index(method) % 10))
        for ax, label, ticks in (
                (axes[row_index, 0], "grid MCC term",
                 [f"{name}\n(class acc)" if name in categorical else name for name in names]),
                (axes[row_index, 1], "grid R", names)):
            ax.set_xticks(range(len(names)), ticks, fontsize=7)
            ax.set_ylim(0.0, 1.05)
            ax.set_ylabel(f"{label}\n({rule})", fontsize=8)
            ax.set_title(f"{_setting_text(setting)}, rule {rule}", fontsize=7)
        axes[row_index, 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def report(root: str, out: str | None = None) -> str:
    """Writes summary.md, mcc_vs_eps.png, best_vs_setting.png and (runs with per-factor
    scores) per_factor.png of the runs below `root` into `out` (default ROOT/figures);
    returns their paths, one per line.

    Raises:
      FileNotFoundError: no finished disentangle run below `root`.
    """
    rows = collect(root)
    if not rows:
        raise FileNotFoundError(f"no finished disentangle runs below {root}")
    out = out or os.path.join(root, "figures")
    summary = os.path.join(out, "summary.md")
    atomic_write(summary, summary_markdown(rows))
    return "\n".join(plot(rows, out) + [summary])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding the run directories (e.g. a sweep's)")
    parser.add_argument("--out", default=None, help="output folder (default: ROOT/figures)")
    args = parser.parse_args(argv)
    try:
        print(report(args.root, args.out))
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
