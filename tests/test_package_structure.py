"""The package's module graph: no import cycle (pylint's cyclic-import check) and no module
using another module's private (underscore) names."""

import ast
import os
import subprocess
import sys

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sdis_tf")


def _modules():
    """(dotted name, path) of every module of the package."""
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                yield relative.replace(os.sep, ".").removesuffix(".__init__"), path


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(module: str, tree: ast.AST) -> list[str]:
    """Private names of other sdis_tf modules that `module` imports or reaches as attributes."""
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdis_tf"):
            source = node.module
            if any(_private(part) for part in source.split(".")) and source != module:
                found.append(f"line {node.lineno}: from {source} import ...")
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if _private(alias.name) and target != module:
                    found.append(f"line {node.lineno}: from {source} import {alias.name}")
                aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sdis_tf"):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and _private(node.attr):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    problems = []
    for module, path in _modules():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        problems += [f"{path}: {use}" for use in private_uses(module, tree)]
    assert not problems, "\n".join(problems)


def test_the_private_name_check_finds_what_it_should():
    tree = ast.parse("from sdis_tf.experiments import disentangle\n"
                     "from sdis_tf.solvers import _batch\n"
                     "from sdis_tf.solvers.lasso import _solve\n"
                     "x = disentangle._Experiment()\n")
    assert [use.split(": ")[1] for use in private_uses("sdis_tf.bench", tree)] == [
        "from sdis_tf.solvers import _batch", "from sdis_tf.solvers.lasso import _solve",
        "disentangle._Experiment"]


def test_no_import_cycle():
    done = subprocess.run(
        [sys.executable, "-m", "pylint", "--disable=all", "--enable=cyclic-import",
         "--score=n", PACKAGE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
