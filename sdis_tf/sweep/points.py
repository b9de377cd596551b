"""The points of a sweep: their overrides, directory names and commands; sweep.json.

A sweep named NAME of a config file is `get_sweep(NAME, hyper)` of that file
(`sdis_tf.sweep.hyper`): a list of override dicts. Point i runs

    python -m sdis_tf --config=FILE[:preset] [--config.<field>=<value> of the command line]
        --config.<field>=<value> ... --workdir=WORKDIR/<name>

where <name> spells its overrides, e.g. `method=lasso,eps=0.1,data.rho=0.9`
(`point_name`). Every field and value is checked against the config the way the
run will parse it (ml_collections' config flags) before anything is written.

    WORKDIR/
      sweep.json     the config, the sweep's name, the command-line overrides and
                     every point (name, overrides, command); a rerun must match it
      <name>/        one run directory per point (sdis_tf.train.rundir), plus
        sweep.log    the run's output, appended on every attempt
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import operator
import os
import re
import shlex
from typing import Any, Mapping, Sequence

from absl import flags
from ml_collections import config_flags

from sdis_tf import config_files
from sdis_tf.sweep import hyper
from sdis_tf.train.rundir import RESULT, atomic_write

RECORD = "sweep.json"
LOG = "sweep.log"
MAX_NAME = 96
"""Longest directory name; a longer one is cut and ends with a hash of the overrides."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


class SweepError(ValueError):
    """Bad sweep input (one line); nothing was written."""


class SweepMismatchError(SweepError):
    """The workdir holds another sweep."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep.

    Attributes:
      name: its directory name below the sweep's workdir (`point_name`).
      overrides: {config field: value}, the values as the run parses them.
      workdir: its run directory.
      command: its command line, "python" first.
    """

    name: str
    overrides: Mapping[str, Any]
    workdir: str
    command: tuple[str, ...]

    def argv(self, python: str) -> list[str]:
        """The command with the interpreter `python`."""
        return [python, *self.command[1:]]

    @property
    def log(self) -> str:
        return os.path.join(self.workdir, LOG)

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.workdir, RESULT))


def flag_text(value: Any) -> str:
    """The text of `--config.<field>=<text>` that ml_collections parses back to `value`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return repr(value)


def _name_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_name_text(v) for v in value)
    return flag_text(value)


def point_name(overrides: Mapping[str, Any]) -> str:
    """A readable, filesystem-safe directory name: `field=value,...` in the overrides' order.

    Characters other than letters, digits and `._+-` in a value become `_`; a name
    so changed, or longer than MAX_NAME, is cut to fit and ends with `-` and 8 hex
    digits of a hash of the overrides, so distinct points get distinct names. No
    overrides: "default".
    """
    if not overrides:
        return "default"
    texts = {field: _name_text(value) for field, value in overrides.items()}
    name = ",".join(f"{field}={_UNSAFE.sub('_', text)}" for field, text in texts.items())
    if len(name) <= MAX_NAME and not any(_UNSAFE.search(t) for t in texts.values()):
        return name
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=repr).encode())
    return f"{name[:MAX_NAME - 9]}-{digest.hexdigest()[:8]}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_sweep(config_arg: str, name: str) -> list[dict]:
    """`get_sweep(name, hyper)` of the config file of `config_arg` ("FILE[:preset]").

    Raises:
      SweepError: no such file, no `get_sweep`, an unknown name (the config file's
        message lists the known ones), or no points.
    """
    path = config_arg.split(":", 1)[0]
    try:
        module = config_files.load_module(path)
    except FileNotFoundError as error:
        raise SweepError(str(error)) from None
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"config file {path!r} defines no sweeps (a function "
                         "get_sweep(name, hyper); docs/sweeps.md)")
    try:
        points = module.get_sweep(name, hyper)
    except ValueError as error:
        raise SweepError(f"{path}: {_one_line(error)}") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SweepError(f"{path}: get_sweep({name!r}) must return a list of dicts "
                         f"(sdis_tf.sweep.hyper). Received: {type(points).__name__}")
    if not points:
        raise SweepError(f"{path}: the sweep {name!r} has no points")
    return points


def _parse(config_arg: str, override_args: Sequence[str]):
    """The config the run gets from `--config=config_arg override_args...`."""
    argv = ["sdis_tf", f"--config={config_arg}", *override_args]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
    values(argv)
    return holder.value


def _checked_value(config_arg: str, base_args: Sequence[str], field: str, value: Any) -> Any:
    """The value the run gets for `--config.field=flag_text(value)`, checked to equal `value`."""
    flag = f"--config.{field}={flag_text(value)}"
    try:
        parsed = functools.reduce(operator.getitem, field.split("."),
                                  _parse(config_arg, [*base_args, flag]))
    except (AttributeError, KeyError) as error:
        path, _, preset = config_arg.partition(":")
        problem = config_files.unknown_field(config_files.load_config(path, preset), field)
        raise SweepError(f"{flag}: {problem or _one_line(error)}") from None
    except (flags.Error, TypeError, ValueError) as error:
        raise SweepError(f"{flag}: {_one_line(error)}") from None
    if parsed != value:
        raise SweepError(f"{flag} gives {parsed!r}, not {value!r}: give config.{field} "
                         f"a {type(parsed).__name__}")
    return parsed


def make_points(config_arg: str, base_overrides: Mapping[str, Any], sweep: Sequence[dict],
                workdir: str) -> list[Point]:
    """The points of `sweep`, checked against the config (see the module docstring).

    Args:
      config_arg: "FILE[:preset]".
      base_overrides: {field: value} given on the sweep's command line, passed to every point.
      sweep: the override dicts (`load_sweep`).
      workdir: the sweep's directory.
    Raises:
      SweepError: a field the config lacks, a value its type refuses, a swept field
        also set on the command line, or two points with one name.
    """
    base_args = [f"--config.{field}={flag_text(v)}" for field, v in base_overrides.items()]
    parsed: dict[tuple[str, str, str], Any] = {}
    points, names = [], {}
    for overrides in sweep:
        for field, value in overrides.items():
            if field in base_overrides:
                raise SweepError(f"--config.{field} is set by the sweep; drop it from the "
                                 "command line")
            key = (field, flag_text(value), type(value).__name__)
            if key not in parsed:
                parsed[key] = _checked_value(config_arg, base_args, field, value)
        values = {field: parsed[(field, flag_text(v), type(v).__name__)]
                  for field, v in overrides.items()}
        name = point_name(values)
        if name in names:
            raise SweepError(f"the sweep has the point {name} twice ({names[name]} and "
                             f"{values})")
        names[name] = values
        point_dir = os.path.join(os.path.abspath(workdir), name)
        path, _, preset = config_arg.partition(":")
        command = ("python", "-m", "sdis_tf",
                   f"--config={os.path.abspath(path)}" + (f":{preset}" if preset else ""),
                   *base_args, *(f"--config.{f}={flag_text(v)}" for f, v in values.items()),
                   f"--workdir={point_dir}")
        points.append(Point(name, values, point_dir, command))
    return points


def record(config_arg: str, sweep_name: str, base_overrides: Mapping[str, Any],
           points: Sequence[Point]) -> dict:
    """The content of sweep.json (JSON types)."""
    return json.loads(json.dumps({
        "config": os.path.normpath(config_arg), "sweep": sweep_name,
        "overrides": dict(base_overrides),
        "points": [{"name": p.name, "overrides": dict(p.overrides),
                    "command": shlex.join(p.command)} for p in points]}))


def _definition(content: dict) -> dict:
    """sweep.json without the commands (which spell absolute paths)."""
    points = [{k: v for k, v in p.items() if k != "command"} for p in content["points"]]
    return {**content, "points": points}


def _first_difference(old: dict, new: dict) -> str:
    for key in ("config", "sweep", "overrides"):
        if old[key] != new[key]:
            return f"{key} {old[key]!r} there, {new[key]!r} now"
    if len(old["points"]) != len(new["points"]):
        return f"{len(old['points'])} points there, {len(new['points'])} now"
    for i, (a, b) in enumerate(zip(old["points"], new["points"])):
        if a != b:
            return f"point {i} {a['name']} there, {b['name']} now"
    return "nothing"


def write_record(workdir: str, content: dict) -> None:
    """Writes WORKDIR/sweep.json, or checks that the sweep it holds is `content`.

    A sweep directory moved elsewhere gets its commands rewritten.

    Raises:
      SweepMismatchError: sweep.json holds another config, sweep, command-line
        overrides or list of points.
    """
    path = os.path.join(workdir, RECORD)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if _definition(old) != _definition(content):
            raise SweepMismatchError(
                f"{workdir} holds another sweep ({_first_difference(old, content)}); use a "
                "new --workdir or the same sweep")
        if old == content:
            return
    atomic_write(path, json.dumps(content, indent=2) + "\n")


def read_points(workdir: str) -> list[Point]:
    """The points recorded in WORKDIR/sweep.json."""
    with open(os.path.join(workdir, RECORD)) as f:
        content = json.load(f)
    return [Point(p["name"], p["overrides"], os.path.join(os.path.abspath(workdir), p["name"]),
                  tuple(shlex.split(p["command"]))) for p in content["points"]]
