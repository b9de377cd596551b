"""Sweeps: the algebra, point names, checks against the config, sweep.json, the local
launcher (a failing point; two points stopped by SIGTERM, finished by a rerun, and a rerun
that starts nothing), the SLURM script and its task runner."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from sdis_tf.sweep import hyper, local, points, slurm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "sweep_config.py")  # quickstart:tiny, sweeps seeds, one_fails
DISENTANGLE = os.path.join(ROOT, "configs", "disentangle.py")


def _sweep_command(workdir, *flags):
    return [sys.executable, "-m", "sdis_tf.sweep", f"--config={TINY}", "--sweep=seeds",
            f"--workdir={workdir}", *flags]


def test_product_zipit_chainit_fixed():
    grid = hyper.product([hyper.sweep("method", ("lasso", "ridge")),
                          hyper.sweep("eps", (0.1, 0.3))])
    assert grid == [{"method": "lasso", "eps": 0.1}, {"method": "lasso", "eps": 0.3},
                    {"method": "ridge", "eps": 0.1}, {"method": "ridge", "eps": 0.3}]
    pairs = hyper.zipit([hyper.sweep("data.rho", (0.0, 0.9)), hyper.sweep("eps", (0.3, 0.1))])
    assert pairs == [{"data.rho": 0.0, "eps": 0.3}, {"data.rho": 0.9, "eps": 0.1}]
    assert len(hyper.product([pairs, hyper.sweep("seed", range(3))])) == 6
    assert hyper.chainit([hyper.fixed("tasks.kind", "laplace"), pairs]) == [
        {"tasks.kind": "laplace"}, *pairs]
    assert hyper.product([]) == [{}]


@pytest.mark.parametrize("build,message", [
    (lambda: hyper.product([hyper.sweep("eps", (1,)), hyper.sweep("eps", (2,))]), "'eps' twice"),
    (lambda: hyper.zipit([hyper.sweep("a", (1, 2)), hyper.sweep("b", (1,))]),
     r"lengths \[2, 1\]"),
    (lambda: hyper.zipit([]), r"lengths \[\]"),
    (lambda: hyper.sweep("data..rho", (1,)), "dotted config field"),
    (lambda: hyper.sweep("seed", ()), "no values"),
])
def test_the_algebra_refuses_ill_formed_sweeps(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_point_names_are_readable_safe_and_distinct():
    assert points.point_name({"method": "lasso", "eps": 0.1, "data.rho": 0.9}) == (
        "method=lasso,eps=0.1,data.rho=0.9")
    assert points.point_name({"model.hidden": (16, 16), "eval.ica": False, "eps": 1e-7}) == (
        "model.hidden=16+16,eval.ica=false,eps=1e-07")
    assert points.point_name({}) == "default"
    spaced = points.point_name({"data.path": "/data/my files/d.npz"})
    assert re.fullmatch(r"data\.path=_data_my_files_d\.npz-[0-9a-f]{8}", spaced)
    assert spaced == points.point_name({"data.path": "/data/my files/d.npz"})
    assert spaced != points.point_name({"data.path": "/data/my_files/d.npz"})
    long = [points.point_name({"data.path": "x" * n}) for n in (300, 301)]
    assert all(len(name) == points.MAX_NAME for name in long) and long[0] != long[1]


def test_points_commands_and_values(tmp_path):
    sweep = points.make_points(TINY, {"train.steps": 3}, [{"seed": 1, "data.rho": 0}],
                               str(tmp_path))
    (point,) = sweep
    assert point.name == "seed=1,data.rho=0.0"  # the value the run gets: a float field
    assert point.overrides == {"seed": 1, "data.rho": 0.0}
    assert point.workdir == os.path.join(str(tmp_path), point.name)
    assert point.command == ("python", "-m", "sdis_tf", f"--config={TINY}",
                             "--config.train.steps=3", "--config.seed=1",
                             "--config.data.rho=0.0", f"--workdir={point.workdir}")
    assert point.argv("/usr/bin/python3")[:3] == ["/usr/bin/python3", "-m", "sdis_tf"]


@pytest.mark.parametrize("base,sweep,message", [
    ({}, [{"data.rhoo": 1}], "--config.data.rhoo=1: config.data.rhoo: no such field; did you "
                             "mean config.data.rho"),
    ({}, [{"seed": "zero"}], "--config.seed=zero: .*int"),
    ({}, [{"data.rho": "0.5"}], "gives 0.5, not '0.5': give config.data.rho a float"),
    ({"seed": 3}, [{"seed": 1}], "--config.seed is set by the sweep"),
    ({}, [{"seed": 1}, {"seed": 1}], "the point seed=1 twice"),
])
def test_points_refuse_bad_input_before_writing(tmp_path, base, sweep, message):
    with pytest.raises(points.SweepError, match=message) as error:
        points.make_points(TINY, base, sweep, str(tmp_path))
    assert "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_load_sweep_names_the_known_sweeps(tmp_path):
    with pytest.raises(points.SweepError,
                       match="unknown sweep 'fig99'; allowed: 'fig4', 'fig4_rho', 'fig8', "
                             "'fig9', 'fig10'"):
        points.load_sweep(DISENTANGLE + ":cpu64", "fig99")
    bare = tmp_path / "bare.py"
    bare.write_text("def get_config(preset=''):\n    return None\n")
    with pytest.raises(points.SweepError, match="defines no sweeps"):
        points.load_sweep(str(bare), "fig4")
    with pytest.raises(points.SweepError, match="does not exist"):
        points.load_sweep(str(tmp_path / "missing.py"), "fig4")


def test_disentangle_sweeps_are_the_paper_figures(tmp_path):
    config = DISENTANGLE + ":cpu64"
    sizes = {"fig4": 6 * 2 * 6 * 3, "fig4_rho": 4 * 2 * 6 * 3, "fig8": 3 * 2 * 6 * 3,
             "fig9": 2 * 6 * 3, "fig10": 2 * 6 * 3}
    sweeps = {name: points.make_points(config, {"data.path": "/data/d.npz"},
                                       points.load_sweep(config, name), str(tmp_path))
              for name in sizes}
    assert {name: len(s) for name, s in sweeps.items()} == sizes
    fig4 = [dict(p.overrides) for p in sweeps["fig4"]]
    paper = {"data.periodic": ()}  # the paper's six continuous latents
    assert {**paper, "data.rho": 0.99, "method": "ridge", "eps": 0.3, "seed": 1} in fig4
    assert {**paper, "data.alpha": 0.5, "method": "lasso", "eps": 0.0, "seed": 2} in fig4
    assert all(p.overrides["data.periodic"] == () for s in sweeps.values() for p in s)
    assert all("--config.data.path=/data/d.npz" in p.command for p in sweeps["fig8"])
    assert {p.overrides["method"] for p in sweeps["fig10"]} == {"outer_lasso", "outer_ridge"}


def test_sweep_json_refuses_another_definition_and_follows_a_move(tmp_path):
    first, moved = str(tmp_path / "a"), str(tmp_path / "b")
    sweep = points.make_points(TINY, {}, [{"seed": 0}, {"seed": 1}], first)
    content = points.record(TINY, "seeds", {}, sweep)
    points.write_record(first, content)
    points.write_record(first, content)  # the same sweep: accepted
    assert points.read_points(first) == sweep
    fewer = points.record(TINY, "seeds", {}, sweep[:1])
    with pytest.raises(points.SweepMismatchError,
                       match="holds another sweep \\(2 points there, 1 now\\); use a new "):
        points.write_record(first, fewer)
    other = points.record(TINY + ":quick", "seeds", {}, sweep)
    with pytest.raises(points.SweepMismatchError, match="config .* there, .*:quick' now"):
        points.write_record(first, other)
    os.rename(first, moved)
    points.write_record(moved, points.record(
        TINY, "seeds", {}, points.make_points(TINY, {}, [{"seed": 0}, {"seed": 1}], moved)))
    assert [p.command[-1] for p in points.read_points(moved)] == [
        f"--workdir={moved}/seed=0", f"--workdir={moved}/seed=1"]


def test_a_failing_point_is_reported_and_the_other_finishes(tmp_path, capsys):
    sweep = points.make_points(TINY, {}, points.load_sweep(TINY, "one_fails"), str(tmp_path))
    outcome = local.run(sweep, parallel=2)
    assert outcome.exit_code == 1
    assert [p.name for p in outcome.finished] == ["seed=2"]
    assert [(p.name, code) for p, code in outcome.failed] == [("seed=-1", 2)]
    err = capsys.readouterr().err
    assert f"point seed=-1 failed (exit 2); last lines of {sweep[1].log}" in err
    assert "config.seed = -1" in err


def test_sigterm_stops_the_sweep_a_rerun_finishes_the_rest_then_starts_nothing(
        tmp_path, monkeypatch):
    first, second = (os.path.join(str(tmp_path), f"seed={s}") for s in (0, 1))
    sweep = subprocess.Popen(_sweep_command(tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(second, points.LOG)):  # seed=0 done, seed=1 started
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "seeds: stopped by SIGTERM, 1 of 2 points finished" in out
    assert not os.path.exists(os.path.join(second, "result.json"))
    stamp = os.stat(os.path.join(first, "result.json")).st_mtime_ns

    recorded = points.read_points(str(tmp_path))  # the rerun, as the command line runs it
    rerun = local.run(recorded, parallel=2)
    assert rerun.exit_code == 0 and [p.name for p in rerun.finished] == ["seed=0", "seed=1"]
    assert os.stat(os.path.join(first, "result.json")).st_mtime_ns == stamp
    for point, attempts in zip(recorded, (1, 2)):
        assert point.finished
        with open(point.log) as f:
            assert f.read().count("==> ") == attempts
        with open(os.path.join(point.workdir, "config.json")) as f:
            assert json.load(f)["seed"] == point.overrides["seed"]

    def no_process(*args, **kwargs):
        raise AssertionError("a finished point was started again")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    again = local.run(recorded, parallel=2)
    assert again.exit_code == 0 and len(again.finished) == 2


def test_slurm_dry_run_prints_one_array_job_of_the_right_size(tmp_path):
    done = subprocess.run(
        _sweep_command(tmp_path, "--launcher=slurm", "--dry_run", "--partition=gpu",
                       "--time=01:00:00", "--cpus_per_task=4", "--gpus=1", "--mem=16G",
                       "--array_parallelism=8", "--sbatch=--account=proj",
                       "--config.train.steps=3"),
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert [line for line in lines if line.startswith("#SBATCH --array")] == [
        "#SBATCH --array=0-1%8"]
    for option in ("--partition=gpu", "--time=01:00:00", "--cpus-per-task=4", "--gres=gpu:1",
                   "--mem=16G", "--account=proj", "--requeue", "--signal=B:USR1@180",
                   f"--output={tmp_path}/slurm/%A_%a.log", f"--chdir={ROOT}"):
        assert f"#SBATCH {option}" in lines
    assert f"exec {sys.executable} -m sdis_tf.sweep.slurm {tmp_path} \"$SLURM_ARRAY_TASK_ID\"" \
        in lines
    assert [line for line in lines if line.startswith("#   ")] == [
        f"#   {s}: python -m sdis_tf --config={TINY} --config.train.steps=3 --config.seed={s} "
        f"--workdir={tmp_path}/seed={s}" for s in (0, 1)]
    assert os.listdir(tmp_path) == []


def test_slurm_script_covers_the_unfinished_points_and_parses(tmp_path):
    assert slurm.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm.array_spec([3]) == "3"
    text = slurm.script(str(tmp_path), [1, 2, 4], slurm.Resources(), "fig4")
    assert "#SBATCH --array=1-2,4" in text.splitlines()
    path = tmp_path / "sweep.sbatch"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_slurm_task_checkpoints_and_requeues_itself_near_the_time_limit(tmp_path,
                                                                       monkeypatch):
    workdir = str(tmp_path / "sweep")
    sweep = points.make_points(TINY, {}, points.load_sweep(TINY, "seeds"), workdir)
    points.write_record(workdir, points.record(TINY, "seeds", {}, sweep))
    calls = tmp_path / "scontrol.txt"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")

    def time_limit_near():  # SLURM's --signal=B:USR1@..., once the run has started
        deadline = time.monotonic() + 60
        while not os.path.exists(sweep[1].log) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=time_limit_near, daemon=True).start()
    code = slurm.run_task(workdir, 1)
    assert code == 128 + signal.SIGTERM
    assert not sweep[1].finished and not os.path.exists(sweep[0].workdir)
    assert calls.read_text().split() == ["requeue", "77_1"]


def test_model_selection_and_sprite_sweeps(tmp_path):
    config = DISENTANGLE + ":cpu64"
    select = points.make_points(config, {}, points.load_sweep(config, "eps_select"),
                                str(tmp_path / "select"))
    assert sorted((p.overrides["eps"], p.overrides["seed"]) for p in select) == [
        (eps, seed) for eps in (0.1, 0.2, 0.3) for seed in range(5)]
    assert all(p.overrides["method"] == "lasso" and "data.periodic" not in p.overrides
               for p in select)                 # the config's own factor roles
    sprites = DISENTANGLE + ":sprites"
    runs = points.make_points(sprites, {}, points.load_sweep(sprites, "sprites"),
                              str(tmp_path / "sprites"))
    assert sorted((p.overrides["method"], p.overrides["seed"]) for p in runs) == [
        (method, seed) for method in ("lasso", "ridge", "supervised") for seed in range(5)]
    seeds = points.make_points(config, {"eps": 0.2}, points.load_sweep(config, "seeds"),
                               str(tmp_path / "seeds"))
    assert [p.overrides for p in seeds] == [{"seed": seed} for seed in range(5)]
    assert all("--config.eps=0.2" in p.command for p in seeds)
