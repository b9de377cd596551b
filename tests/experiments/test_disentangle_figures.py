"""Aggregation of disentangle runs: rows (from a sweep's directory too), '+ica' rows, the three
model-selection rules, outputs."""

import json
import os

import numpy as np
import pytest

from sdis_tf.experiments import disentangle_figures as figures
from sdis_tf.sweep import points

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs")


def _write_run(root, name, method, eps, seed, mcc, loss, ica=True, rho=0.9, codes=None,
               rows=None, **config_items):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    config = {"experiment": "disentangle", "method": method, "eps": eps, "seed": seed,
              "data": {"correlation": "harder_gauss", "rho": rho, "alpha": 1.0},
              "tasks": {"kind": "bernoulli", "block_size": 1}, **config_items}
    result = {"eval/mcc": mcc, "eval/r": 0.99, "eval/dci_d": mcc / 2, "eval/dci_c": mcc / 3,
              "eval/loss": loss}
    if ica:
        result.update({"eval/ica_mcc": mcc - 0.1, "eval/ica_r": 0.99, "eval/ica_dci_d": 0.1,
                       "eval/ica_dci_c": 0.1})
    for file, content in (("config.json", config), ("result.json", result)):
        with open(os.path.join(folder, file), "w") as f:
            json.dump(content, f)
    if codes is not None:
        rows = np.arange(len(codes)) if rows is None else rows
        np.savez(os.path.join(folder, figures.AGREEMENT_CODES), rows=rows, codes=codes)


def test_rules_pick_per_seed_then_average(tmp_path):
    root = str(tmp_path)
    # seed 0: eps 0.1 has the best MCC, eps 0.01 the lowest validation loss; seed 1 reversed.
    _write_run(root, "a", "lasso", 0.1, 0, mcc=0.9, loss=0.20)
    _write_run(root, "b", "lasso", 0.01, 0, mcc=0.7, loss=0.10)
    _write_run(root, "c", "lasso", 0.1, 1, mcc=0.6, loss=0.10)
    _write_run(root, "d", "lasso", 0.01, 1, mcc=0.8, loss=0.30)
    os.makedirs(os.path.join(root, "unfinished"))  # no result.json: ignored
    rows = figures.collect(root)
    assert len(rows) == 8 and {r["method"] for r in rows} == {"lasso", "lasso+ica"}
    setting = rows[0]["setting"]
    oracle = figures.select(rows, "oracle")[("lasso", setting)]
    assert oracle["eps"] == [0.1, 0.01]
    assert oracle["mcc"][0] == pytest.approx(0.85) and oracle["mcc"][2] == 2
    val = figures.select(rows, "val_loss")[("lasso", setting)]
    assert val["eps"] == [0.01, 0.1]
    assert val["mcc"][0] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="rule"):
        figures.select(rows, "test_mcc")


def test_main_writes_summary_and_figures(tmp_path):
    root = str(tmp_path)
    _write_run(root, "a", "lasso", 0.1, 0, mcc=0.9, loss=0.2)
    _write_run(root, "b", "ridge", 0.1, 0, mcc=0.7, loss=0.1)
    figures.main([root])
    out = os.path.join(root, "figures")
    with open(os.path.join(out, "summary.md")) as f:
        text = f.read()
    assert "rule oracle" in text and "rule val_loss" in text and "ridge+ica" in text
    for name in ("mcc_vs_eps.png", "best_vs_setting.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000


def test_collect_reads_the_point_directories_of_a_sweep(tmp_path):
    root = str(tmp_path)
    config = os.path.join(CONFIGS, "disentangle.py") + ":cpu64"
    sweep = points.make_points(config, {}, points.load_sweep(config, "fig4_rho"), root)
    points.write_record(root, points.record(config, "fig4_rho", {}, sweep))
    for point in sweep:
        values = point.overrides
        _write_run(root, point.name, values["method"], values["eps"], values["seed"],
                   mcc=0.5 + values["eps"] / 4, loss=0.1, rho=values["data.rho"])
    rows = figures.collect(root)
    assert len(rows) == 2 * len(sweep) == 2 * 144  # + the '+ica' rows
    assert {r["path"] for r in rows} == {p.workdir for p in sweep}
    assert sorted({r["setting"][1] for r in rows}) == [0.0, 0.5, 0.9, 0.99]
    oracle = figures.select(rows, "oracle")
    assert len(oracle) == 4 * 4  # (lasso, ridge, lasso+ica, ridge+ica) x 4 rho
    assert all(entry["eps"] == [1.0, 1.0, 1.0] for entry in oracle.values())


def test_main_without_runs_exits_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no finished disentangle runs below"):
        figures.main([str(tmp_path)])


def test_methods_with_different_eps_grids_share_the_x_positions(tmp_path, monkeypatch):
    root = str(tmp_path)
    _write_run(root, "a", "lasso", 0.1, 0, mcc=0.9, loss=0.2, ica=False)
    _write_run(root, "b", "lasso", 0.3, 0, mcc=0.8, loss=0.2, ica=False)
    _write_run(root, "c", "ridge", 0.3, 0, mcc=0.7, loss=0.1, ica=False)
    figures_drawn = []
    monkeypatch.setattr(figures, "save_figure",
                        lambda fig, path: figures_drawn.append(fig) or path)
    figures.plot(figures.collect(root), str(tmp_path / "out"))
    mcc_axis = figures_drawn[0].axes[0]
    lines = {line.get_label(): list(line.get_xdata()) for line in mcc_axis.get_lines()}
    assert lines == {"lasso": [0, 1], "ridge": [1]}
    assert [t.get_text() for t in mcc_axis.get_xticklabels()] == ["0.1", "0.3"]


def _write_factor_run(root, name, method, eps, seed, mcc, roles, **run_items):
    """A run with per-factor scores, as written before eval/mcc_continuous was logged:
    factor i's MCC term is mcc[i] on the grid and mcc[i] - 0.05 on the training
    distribution; the overall MCC their mean."""
    _write_run(root, name, method, eps, seed, mcc=float(np.mean(mcc)), loss=eps, ica=False,
               **run_items)
    path = os.path.join(root, name, "result.json")
    with open(path) as f:
        result = json.load(f)
    result.update(factor_names=list(roles), factor_roles=roles)
    for (factor, role), value in zip(roles.items(), mcc):
        for suffix, shift in (("", 0.0), ("_train", 0.05)):
            result.update({f"eval/mcc{suffix}/{factor}": value - shift,
                           f"eval/r{suffix}/{factor}": 0.9, f"eval/dci_d{suffix}/{factor}": 0.5,
                           f"eval/dci_c{suffix}/{factor}": 0.4,
                           f"eval/codes{suffix}/{factor}": 1.0 + (role == "categorical")})
            if role == "categorical":
                result[f"eval/class_acc{suffix}/{factor}"] = value / 2 - shift
    with open(path, "w") as f:
        json.dump(result, f)


def test_per_factor_tables_and_the_mean_over_continuous_factors(tmp_path):
    root = str(tmp_path)
    roles = {"shape": "categorical", "scale": "continuous", "angle": "periodic:1:1",
             "x": "continuous"}
    # Two seeds; the oracle picks eps 0.1 for seed 0 and eps 0.3 for seed 1.
    _write_factor_run(root, "a", "lasso", 0.1, 0, [0.2, 0.9, 0.3, 0.95], roles)
    _write_factor_run(root, "b", "lasso", 0.3, 0, [0.1, 0.8, 0.2, 0.9], roles)
    _write_factor_run(root, "c", "lasso", 0.1, 1, [0.1, 0.7, 0.1, 0.8], roles)
    _write_factor_run(root, "d", "lasso", 0.3, 1, [0.4, 0.96, 0.2, 0.98], roles)
    rows = figures.collect(root)
    assert [r["mcc_continuous"] for r in rows] == pytest.approx([0.925, 0.75, 0.85, 0.97])
    assert [r["mcc_continuous_train"] for r in rows] == pytest.approx([0.875, 0.7, 0.8, 0.92])
    assert rows[0]["setting"][-1] == "shape:categorical angle:periodic:1:1"
    oracle = figures.select(rows, "oracle")[("lasso", rows[0]["setting"])]
    assert oracle["eps"] == [0.1, 0.3]
    assert oracle["mcc_continuous"] == pytest.approx((0.9475, 0.0225, 2))
    assert list(oracle["factors"]) == ["shape", "scale", "angle", "x"]
    assert oracle["factors"]["shape"]["mcc"] == pytest.approx((0.3, 0.1, 2))
    assert oracle["factors"]["shape"]["class_acc"] == pytest.approx((0.15, 0.05, 2))
    assert oracle["factors"]["scale"]["class_acc"][2] == 0
    assert oracle["factors"]["shape"]["codes"] == pytest.approx((2.0, 0.0, 2))
    # the training distribution's scores of the same runs (the eps the rule chose)
    assert oracle["mcc_continuous_train"] == pytest.approx((0.8975, 0.0225, 2))
    assert oracle["factors_train"]["shape"]["mcc"] == pytest.approx((0.25, 0.1, 2))
    assert oracle["factors_train"]["shape"]["class_acc"] == pytest.approx((0.1, 0.05, 2))
    text = figures.summary_markdown(rows)
    for rule in ("oracle", "val_loss"):
        for points in ("grid", "training distribution"):
            assert f"### Per task factor on the {points}, rule {rule}" in text
    grid, train = text.split("### Per task factor on the training distribution, rule oracle")
    grid = grid.split("### Per task factor on the grid, rule oracle")[1]
    assert ("| lasso | shape | categorical | 2 | 0.300 ± 0.100 | 0.900 ± 0.000 | 0.500 ± 0.000 "
            "| 0.400 ± 0.000 | 0.150 ± 0.050 | 2.000 ± 0.000 |") in grid
    assert "| lasso | mean of the continuous factors | | 2 | 0.948 ± 0.022 | | | | | |" in grid
    assert ("| lasso | shape | categorical | 2 | 0.250 ± 0.100 | 0.900 ± 0.000 | 0.500 ± 0.000 "
            "| 0.400 ± 0.000 | 0.100 ± 0.050 | 2.000 ± 0.000 |") in train
    assert "| lasso | mean of the continuous factors | | 2 | 0.897 ± 0.022 | | | | | |" in train
    # Runs without per-factor scores (or roles) have no per-factor table.
    _write_run(str(tmp_path / "old"), "e", "lasso", 0.1, 0, mcc=0.9, loss=0.2)
    assert "Per task factor" not in figures.summary_markdown(figures.collect(str(tmp_path / "old")))


def test_agreement_rule_picks_the_eps_whose_seeds_agree(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    for seed in range(3):
        # eps 0.1: every seed finds the factors (rescaled, permuted); eps 0.01: a new
        # mixture per seed. The losses favour eps 0.01, the codes eps 0.1.
        copy = z[:, rng.permutation(3)] * rng.uniform(0.5, 2.0, 3)
        mixture = z @ rng.normal(size=(3, 3))
        _write_run(root, f"a{seed}", "lasso", 0.1, seed, mcc=0.9, loss=0.3, codes=copy)
        _write_run(root, f"b{seed}", "lasso", 0.01, seed, mcc=0.6, loss=0.1, codes=mixture)
    _write_run(root, "no_codes", "lasso", 0.3, 0, mcc=0.95, loss=0.5)
    rows = figures.collect(root)
    by_eps = {(r["method"], r["eps"], r["seed"]): r["agreement"] for r in rows}
    assert by_eps[("lasso", 0.1, 0)] == pytest.approx(1.0)
    assert by_eps[("lasso", 0.01, 0)] < 0.95
    assert np.isnan(by_eps[("lasso", 0.3, 0)])                   # no codes.npz
    assert by_eps[("lasso+ica", 0.1, 1)] == by_eps[("lasso", 0.1, 1)]
    setting = rows[0]["setting"]
    assert figures.select(rows, "agreement")[("lasso", setting)]["eps"] == [0.1] * 3
    assert figures.select(rows, "val_loss")[("lasso", setting)]["eps"] == [0.01] * 3
    assert figures.select(rows, "oracle")[("lasso", setting)]["eps"] == [0.3, 0.1, 0.1]
    # One eps for every seed, by the mean agreement of its seeds: seed 2 alone would take
    # eps 0.01 (0.99 > 0.98), but eps 0.1's seeds agree more on average.
    for row in rows:
        if row["seed"] == 2:
            row["agreement"] = {0.1: 0.98, 0.01: 0.99}.get(row["eps"], row["agreement"])
    assert figures.select(rows, "agreement")[("lasso", setting)]["eps"] == [0.1] * 3
    figures.main([root])
    with open(os.path.join(root, "figures", "summary.md")) as f:
        text = f.read()
    assert "rule agreement" in text and "| 1.000 |" in text


def test_agreement_needs_two_seeds_on_the_same_rows(tmp_path):
    root = str(tmp_path)
    codes = np.random.default_rng(1).normal(size=(50, 2))
    _write_run(root, "alone", "lasso", 0.1, 0, mcc=0.9, loss=0.1, codes=codes)
    _write_run(root, "x0", "lasso", 0.2, 0, mcc=0.9, loss=0.1, codes=codes)
    _write_run(root, "x1", "lasso", 0.2, 1, mcc=0.9, loss=0.1, codes=codes,
               rows=np.arange(50) + 7)                            # other rows of the data
    # runs that differ in more than the seed are not compared (here: the schedule) ...
    _write_run(root, "y0", "lasso", 0.3, 0, mcc=0.9, loss=0.1, codes=codes, schedule="cosine")
    _write_run(root, "y1", "lasso", 0.3, 1, mcc=0.9, loss=0.1, codes=codes)
    # ... nor copies of one run, nor codes of another width
    _write_run(root, "copy_a", "ridge", 0.1, 0, mcc=0.9, loss=0.1, codes=codes)
    _write_run(root, "copy_b", "ridge", 0.1, 0, mcc=0.9, loss=0.1, codes=codes)
    _write_run(root, "w0", "ridge", 0.2, 0, mcc=0.9, loss=0.1, codes=codes)
    _write_run(root, "w1", "ridge", 0.2, 1, mcc=0.9, loss=0.1, codes=codes[:, :1])
    rows = figures.collect(root)
    assert all(np.isnan(r["agreement"]) for r in rows)
    assert figures.select(rows, "agreement") == {}


def test_a_stored_mcc_continuous_is_read_and_an_old_result_gets_it_computed():
    roles = {"shape": "categorical", "scale": "continuous", "x": "continuous"}
    old = {"factor_names": list(roles), "factor_roles": roles, "eval/mcc/shape": 0.2,
           "eval/mcc/scale": 0.9, "eval/mcc/x": 0.7, "eval/ica_mcc/x": 0.5}
    assert figures.result_mcc_continuous(old) == pytest.approx(0.8)
    assert figures.result_mcc_continuous(old, "ica_") == pytest.approx(0.5)
    assert np.isnan(figures.result_mcc_continuous(old, suffix="_train"))
    assert figures.result_mcc_continuous({**old, "eval/mcc_continuous": 0.75}) == 0.75


def _drawn_figures(monkeypatch):
    """{file name: matplotlib figure} of the figures `figures.plot` saves."""
    drawn = {}
    monkeypatch.setattr(figures, "save_figure",
                        lambda fig, path: drawn.setdefault(os.path.basename(path), fig) and path)
    return drawn


def test_per_factor_figure_shows_each_rule_methods_factor_terms_and_r(tmp_path, monkeypatch):
    root = str(tmp_path)
    roles = {"shape": "categorical", "scale": "continuous", "angle": "periodic:1:1"}
    codes = np.random.default_rng(0).normal(size=(2, 40, 3))   # for the agreement rule
    for seed, (lasso, ridge) in enumerate((([0.2, 0.9, 0.3], [0.1, 0.8, 0.2]),
                                           ([0.4, 0.7, 0.5], [0.3, 0.6, 0.2]))):
        _write_factor_run(root, f"l{seed}", "lasso", 0.1, seed, lasso, roles,
                          codes=codes[seed])
        _write_factor_run(root, f"r{seed}", "ridge", 0.1, seed, ridge, roles,
                          codes=codes[seed])
    drawn = _drawn_figures(monkeypatch)
    paths = figures.plot(figures.collect(root), str(tmp_path / "out"))
    assert [os.path.basename(p) for p in paths] == ["mcc_vs_eps.png", "best_vs_setting.png",
                                                    "per_factor.png"]
    axes = np.reshape(drawn["per_factor.png"].axes[:6], (3, 2))   # (rule, [MCC term, R])
    for rule, (mcc_axis, r_axis) in zip(figures.RULES, axes):
        bars = {container.get_label(): container for container in mcc_axis.containers
                if hasattr(container, "patches")}
        assert f"rule {rule}" in mcc_axis.get_title()
        assert [t.get_text() for t in mcc_axis.get_xticklabels()] == [
            "shape\n(class acc)", "scale", "angle"]
        assert [t.get_text() for t in r_axis.get_xticklabels()] == ["shape", "scale", "angle"]
        # mean over the seeds: shape's class acc (mcc / 2), the others' MCC terms
        heights = {m: [p.get_height() for p in c.patches] for m, c in bars.items()}
        assert heights["lasso"] == pytest.approx([0.15, 0.8, 0.4])
        assert heights["ridge"] == pytest.approx([0.1, 0.7, 0.2])
        r_heights = [p.get_height() for c in r_axis.containers if hasattr(c, "patches")
                     for p in c.patches]
        assert r_heights == pytest.approx([0.9] * 6)


def test_per_factor_figure_is_listed_only_for_runs_with_per_factor_scores(tmp_path):
    root = str(tmp_path / "old")
    _write_run(root, "a", "lasso", 0.1, 0, mcc=0.9, loss=0.2)
    assert "per_factor.png" not in figures.report(root)
    root = str(tmp_path / "new")
    _write_factor_run(root, "a", "lasso", 0.1, 0, [0.2, 0.9], {"shape": "categorical",
                                                               "x": "continuous"})
    printed = figures.report(root).splitlines()
    path = os.path.join(root, "figures", "per_factor.png")
    assert path in printed and os.path.getsize(path) > 1000


def test_best_vs_setting_keeps_settings_that_differ_beyond_rho_and_alpha_apart(
        tmp_path, monkeypatch):
    root = str(tmp_path)
    # same rho and alpha; other task weights, other factor roles
    _write_run(root, "a", "lasso", 0.1, 0, mcc=0.9, loss=0.2, ica=False)
    _write_run(root, "b", "lasso", 0.1, 0, mcc=0.8, loss=0.2, ica=False,
               tasks={"kind": "laplace", "block_size": 1})
    _write_factor_run(root, "c", "lasso", 0.1, 0, [0.2, 0.9],
                      {"shape": "categorical", "x": "continuous"})
    drawn = _drawn_figures(monkeypatch)
    rows = figures.collect(root)
    figures.plot(rows, str(tmp_path / "out"))
    figure = drawn["best_vs_setting.png"]
    figure.canvas.draw()
    assert len({r["setting"] for r in rows}) == 3
    for ax in figure.axes[:4]:          # the oracle and val_loss rows (no codes: no agreement)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(set(labels)) == 3, labels
        assert sum("w=laplace" in t for t in labels) == sum("shape:categorical" in t
                                                            for t in labels) == 1, labels
