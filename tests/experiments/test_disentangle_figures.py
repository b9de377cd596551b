"""Aggregation of disentangle runs: rows, '+ica' rows, the two model-selection rules, outputs."""

import json
import os

import pytest

from sdis_tf.experiments import disentangle_figures as figures


def _write_run(root, name, method, eps, seed, mcc, loss, ica=True):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    config = {"experiment": "disentangle", "method": method, "eps": eps, "seed": seed,
              "data": {"correlation": "harder_gauss", "rho": 0.9, "alpha": 1.0},
              "tasks": {"kind": "bernoulli", "block_size": 1}}
    result = {"eval/mcc": mcc, "eval/r": 0.99, "eval/dci_d": mcc / 2, "eval/dci_c": mcc / 3,
              "eval/loss": loss}
    if ica:
        result.update({"eval/ica_mcc": mcc - 0.1, "eval/ica_r": 0.99, "eval/ica_dci_d": 0.1,
                       "eval/ica_dci_c": 0.1})
    for file, content in (("config.json", config), ("result.json", result)):
        with open(os.path.join(folder, file), "w") as f:
            json.dump(content, f)


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


def test_sweep_commands_cover_the_figure_grid(capsys):
    commands = figures.sweep_commands("fig4", "runs/fig4")
    assert len(commands) == 6 * 2 * len(figures.EPS_GRID) * len(figures.SEEDS)
    assert len(set(c.split("--workdir=")[1] for c in commands)) == len(commands)
    assert ("python main.py --config=configs/disentangle.py --config.method=lasso "
            "--config.eps=0.3 --config.seed=1 --config.data.rho=0.99 "
            "--workdir=runs/fig4/rho0.99/lasso/eps0.3/seed1") in commands
    figures.main(["--commands=fig8", "--config=configs/disentangle.py:cpu", "runs/fig8"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 * 2 * len(figures.EPS_GRID) * len(figures.SEEDS)
    assert all("--config.tasks.kind=block" in line for line in printed)
    figures.main(["--commands=fig10", "--data.path=/data/my files/d.npz",
                  "--data.images_key=x", "runs/d"])
    printed = capsys.readouterr().out.splitlines()
    assert all(" --config.data.path='/data/my files/d.npz' --config.data.images_key=x "
               "--workdir=runs/d/" in line for line in printed), printed[0]
    assert not any("factors_key" in line for line in printed)
    with pytest.raises(ValueError, match="figure"):
        figures.sweep_commands("fig99", "runs")


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
