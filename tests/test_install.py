"""sdis_tf as a user installs it: the sdist, the wheel built from it (no dependency downloaded),
`pip install --target` into a fresh directory, then runs from another directory with only that
directory and the dependencies on the path (not the checkout): the C++ op compiles from the
shipped sources into a fresh cache and a Lasso solve uses it, and `python -m sdis_tf` runs a
config file to the end. Slow: one compile of the op (~15-90 s) and a tiny training run.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What the package must carry to build its op: custom_ops/'s sources and build script.
SHIPPED_OPS = sorted(p.name for p in (ROOT / "custom_ops").iterdir()
                     if p.suffix in (".cc", ".h") or p.name == "build.py")
DEPENDENCIES = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
# Without the site hooks: no editable install of the checkout, only PYTHONPATH (the installed
# wheel, then the dependencies).
ISOLATED = "-S"

SOLVE = """
import json, sys
import numpy as np
import sdis_tf
from sdis_tf.solvers import lasso, lasso_lambda_max, lasso_op
from sdis_tf.solvers.lasso import resolve_backend

rng = np.random.default_rng(0)
X, Y = rng.standard_normal((4, 30, 20)), rng.standard_normal((4, 30))
lam = 0.2 * lasso_lambda_max(X, Y).numpy()
available, backend = lasso_op.op_available(), resolve_backend()
op = lasso(X, Y, lam, tol=1e-12, max_epochs=100_000)
xla = lasso(X, Y, lam, tol=1e-12, max_epochs=100_000, backend="xla")
json.dump({"package": sdis_tf.__file__, "op_available": available, "backend": backend,
           "converged": bool(np.all(op.converged)),
           "max_difference_to_xla": float(np.max(np.abs(op.W - xla.W)))}, sys.stdout)
"""


def _run(python_args, cwd, env=None, timeout=900):
    result = subprocess.run([sys.executable, *python_args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{python_args}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site directory holding the installed wheel, environment that runs from it)."""
    tmp = tmp_path_factory.mktemp("install")
    # The sdist, through setuptools' build backend (what `python -m build` calls), then the
    # wheel from the sdist, as pip builds a downloaded sdist: both must carry the sources.
    _run(["-c", "import sys; from setuptools import build_meta; "
                "build_meta.build_sdist(sys.argv[1])", str(tmp / "dist")], cwd=ROOT)
    [sdist] = (tmp / "dist").glob("sdis_tf-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    _assert_ships_ops(names, f"{sdist.name[:-len('.tar.gz')]}/sdis_tf/custom_ops/")
    pip = ["-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(tmp / "wheel"), str(sdist)], cwd=tmp)
    [wheel] = (tmp / "wheel").glob("sdis_tf-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        _assert_ships_ops(archive.namelist(), "sdis_tf/custom_ops/")
    site = tmp / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], cwd=tmp)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *DEPENDENCIES]),
           "SDIS_TF_CACHE": str(tmp / "cache")}     # empty: the op compiles from the wheel
    return site, env


def _assert_ships_ops(names, folder):
    missing = [name for name in SHIPPED_OPS if folder + name not in names]
    assert not missing, f"not shipped in {folder}: {missing}"


def test_installed_wheel_solves_a_lasso_with_the_op(installed, tmp_path):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler: the installed package uses its XLA solvers")
    site, env = installed
    result = _run([ISOLATED, "-c", SOLVE], cwd=tmp_path, env=env)
    report = json.loads(result.stdout)
    assert Path(report["package"]).is_relative_to(site), report["package"]
    assert report["op_available"] and report["backend"] == "op", result.stderr[-3000:]
    assert report["converged"] and report["max_difference_to_xla"] < 1e-8, report
    assert "compiling the C++ ops" in result.stderr
    assert list(Path(env["SDIS_TF_CACHE"], "ops").glob("sdis_ops-*.so"))


def test_installed_wheel_runs_a_config_file_to_the_end(installed, tmp_path):
    _, env = installed
    shutil.copy(ROOT / "configs" / "quickstart.py", tmp_path / "my_config.py")
    result = _run([ISOLATED, "-m", "sdis_tf", "--config=my_config.py:tiny", "--workdir=run"],
                  cwd=tmp_path, env=env)
    assert [line.split()[0] for line in result.stdout.strip().splitlines()[1:]] == ["lasso"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())
