"""Declarative config schemas: types, ranges and choices, checked before any work.

An experiment module declares `SCHEMA`, a nested dict mirroring its config
(`configs/<name>.py`), whose leaves are field specs:

    SCHEMA = {
        "seed": Int(min=0),
        "data": {"rho": Float(min=0.0, max=1.0, max_open=True), "path": Text()},
        "methods": Tuple(Choice("lasso", "ridge"), unique=True),
    }

`validate(config, SCHEMA)` walks both trees and raises one `ConfigError`
whose message has one line per problem, each naming the field
(`config.data.rho`) and what is allowed. Problems found: unknown keys (with
the closest known ones: `did_you_mean`), missing keys, wrong types, values
out of range, values not among the choices, bad tuples, wrong strings.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import math
from typing import Any, Callable, Iterable, Mapping


class ConfigError(ValueError):
    """An invalid config; the message lists every problem, one per line."""


class Spec(abc.ABC):
    """A leaf of a schema: `problem(value)` returns None or what is wrong."""

    @abc.abstractmethod
    def problem(self, value: Any) -> str | None:
        """None if `value` is allowed, else the end of an error sentence."""

    @abc.abstractmethod
    def allowed(self) -> str:
        """Human-readable description of the allowed values."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    """An integer (bool rejected) in [min, max]."""

    min: int | None = None
    max: int | None = None

    def allowed(self) -> str:
        lo = "-inf" if self.min is None else str(self.min)
        hi = "inf" if self.max is None else str(self.max)
        return f"an int in [{lo}, {hi}]"

    def problem(self, value):
        if not _is_int(value):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max):
            return f"is out of range; allowed: {self.allowed()}"
        return None


@dataclasses.dataclass(frozen=True)
class Float(Spec):
    """A finite real number (ints accepted, bool rejected) in a range.

    `min_open` / `max_open` make the bound strict: `Float(0, 1, max_open=True)`
    is [0, 1).
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def allowed(self) -> str:
        lo = "(-inf" if self.min is None else ("(" if self.min_open else "[") + f"{self.min:g}"
        hi = "inf)" if self.max is None else f"{self.max:g}" + (")" if self.max_open else "]")
        return f"a finite float in {lo}, {hi}"

    def problem(self, value):
        if not (_is_int(value) or isinstance(value, float)):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        if not math.isfinite(value):
            return f"is not finite; allowed: {self.allowed()}"
        too_low = self.min is not None and (
            value <= self.min if self.min_open else value < self.min)
        too_high = self.max is not None and (
            value >= self.max if self.max_open else value > self.max)
        if too_low or too_high:
            return f"is out of range; allowed: {self.allowed()}"
        return None


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
    """True or False."""

    def allowed(self) -> str:
        return "a bool (True or False)"

    def problem(self, value):
        if not isinstance(value, bool):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        return None


@dataclasses.dataclass(frozen=True)
class Text(Spec):
    """A string (a path, a key name); `nonempty=True` rejects "" (else "" means unused)."""

    nonempty: bool = False

    def allowed(self) -> str:
        return "a non-empty string" if self.nonempty else "a string ('' when unused)"

    def problem(self, value):
        if not isinstance(value, str):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        if self.nonempty and not value:
            return f"is empty; allowed: {self.allowed()}"
        return None


class Choice(Spec):
    """One of a fixed set of strings."""

    def __init__(self, *choices: str):
        self.choices = tuple(choices)

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def problem(self, value):
        if not isinstance(value, str):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        if value not in self.choices:
            return f"is not allowed; allowed: {self.allowed()}"
        return None


@dataclasses.dataclass(frozen=True)
class Tuple(Spec):
    """A tuple (or list) of at least `min_len` items, each matching `item`."""

    item: Spec
    min_len: int = 1
    unique: bool = False

    def allowed(self) -> str:
        extra = ", no duplicates" if self.unique else ""
        return f"a tuple of >= {self.min_len} items, each {self.item.allowed()}{extra}"

    def problem(self, value):
        if not isinstance(value, (tuple, list)):
            return f"has type {type(value).__name__}; allowed: {self.allowed()}"
        if len(value) < self.min_len:
            return f"has {len(value)} items; allowed: {self.allowed()}"
        for i, item in enumerate(value):
            item_problem = self.item.problem(item)
            if item_problem:
                return f"item {i} ({item!r}) {item_problem}"
        if self.unique and len(set(value)) != len(value):
            return f"has duplicates; allowed: {self.allowed()}"
        return None


def did_you_mean(path: str, key: str, keys: Iterable[str]) -> str:
    """'did you mean config.data.rho? ' for a mistyped `key` of section `path` ("did you
    mean 'rho'? " for path ""), or ''.

    Names up to 3 of `keys` (difflib similarity ratio >= 0.6), the closest first.
    """
    near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
    names = [f"{path}.{k}" if path else repr(k) for k in near]
    return f"did you mean {' or '.join(names)}? " if near else ""


def _walk(config: Mapping, schema: Mapping, path: str, problems: list) -> None:
    for key in sorted(set(config) - set(schema)):
        problems.append(f"{path}.{key}: unknown key; {did_you_mean(path, key, schema)}"
                        f"allowed keys in {path}: " + ", ".join(sorted(schema)))
    for key, spec in schema.items():
        name = f"{path}.{key}"
        if key not in config:
            allowed = "a section" if isinstance(spec, Mapping) else spec.allowed()
            problems.append(f"{name}: missing; allowed: {allowed}")
            continue
        value = config[key]
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                problems.append(f"{name} = {value!r}: must be a section with keys "
                                + ", ".join(sorted(spec)))
            else:
                _walk(value, spec, name, problems)
            continue
        problem = spec.problem(value)
        if problem:
            problems.append(f"{name} = {value!r} {problem}")


Constraint = Callable[[dict], Iterable[str]]
"""A cross-field rule: takes the config as a plain dict, yields problems."""


def check(config: Any, schema: Mapping, constraints: Iterable[Constraint] = ()) -> list[str]:
    """Returns the problems of `config` (a ConfigDict or dict) against `schema`.

    Cross-field `constraints` run only when every field is individually valid,
    so they may assume types and ranges.
    """
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    problems: list[str] = []
    _walk(as_dict, schema, "config", problems)
    if not problems:
        for constraint in constraints:
            problems.extend(constraint(as_dict))
    return problems


def validate(config: Any, schema: Mapping, constraints: Iterable[Constraint] = ()) -> None:
    """Raises `ConfigError` listing every problem of `config` against `schema`."""
    problems = check(config, schema, constraints)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


CORRELATION = Float(min=0.0, max=1.0, max_open=True)
"""A latent correlation rho in [0, 1)."""

NONNEGATIVE = Float(min=0.0)
"""A non-negative float (regularisation strengths, noise levels)."""

POSITIVE = Float(min=0.0, min_open=True)
"""A strictly positive float (learning rates, tolerances)."""

COUNT = Int(min=1)
"""A strictly positive int (sizes, steps)."""
