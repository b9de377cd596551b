"""Factor roles: which factors the tasks use, and how each enters the latents z.

A source of labelled images has K factors (the columns of its factor table).
Each factor is a task factor or a nuisance:

- task factors (`factors=`; default: every factor) are in the latents z, the
  tasks and the metrics; p_{alpha,rho} is a distribution over their values;
- nuisance factors (every other factor) vary freely in the images and are
  nowhere else: given the task factors' values, a nuisance takes each of the
  values present in the data with equal probability (`latents.make_task_latents`).

A task factor is of one kind, which fixes its latent columns (`FactorRole.encode`):

    continuous   1 column   its value (jittered, then standardised), the paper's case
    categorical  C - 1      C classes (its distinct values, sorted): the indicators
                 columns    1[class = c] of classes 2..C. The one-hot vector's C
                            columns sum to 1, so once centred one of them is redundant
                            and the latents' covariance would be singular (Theorem 3.1
                            needs it invertible, Assumption 3.3); dropping the first
                            class keeps the same linear span. Tasks are linear in the
                            indicators: y gets one weight per class, relative to class 1.
    periodic     2 columns  cos(theta), sin(theta) with theta = 2 pi s v / P for a
                            period P and a symmetry order s >= 1 (the images repeat
                            after P / s: s = 4 for a square's orientation in radians,
                            P = 2 pi), so values P / s apart have the same latents.

Every latent column is then standardised (zero mean, unit variance over the
distinct task-factor combinations). Theorem 3.1 covers the latents as columns:
each column is one "factor" of the theory, identifiable up to permutation and
scaling when the tasks' supports vary enough over the columns.

Declarations (`resolve_roles`): `categorical` is a tuple of factor names and
`periodic` a tuple of "name:period[:symmetry]" strings (period a number or a
multiple of pi: "6.283185", "2pi", "pi"), read from the right: the name is
everything before the last one or two numeric fields, so it may hold spaces or
':' (`parse_periodic`). The item "auto" stands for the defaults of the data's
layout (`LAYOUT_DEFAULTS`: dSprites' shape categorical and orientation periodic
over 2 pi, 3D Shapes' three hues periodic over 1, the sprite world's shape
categorical and orientation periodic over 1), applied to the task factors the
data has; explicit items override them, and the roles line (`Roles.describe`)
names the factors whose roles are a layout's defaults.

A period must fit the factor's values (`periodic_fit`): the values go round the
circle at most once (max - min <= P); the symmetry, a property of the images, is
not checked. The share of the circle the values cover is in the roles line: a
small one often means a period in other units than the values (the sprite
world's orientation, 0..0.9 of a turn, declared over 2 pi covers 16%).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

KINDS = ("continuous", "categorical", "periodic")
AUTO = "auto"
LAYOUT_DEFAULTS = {
    "dsprites": {"categorical": ("shape",), "periodic": ("orientation:2pi",)},
    "shapes3d": {"categorical": (),
                 "periodic": ("floor_hue:1", "wall_hue:1", "object_hue:1")},
    "sprites": {"categorical": ("shape",), "periodic": ("orientation:1",)},
}
"""The roles "auto" stands for, by layout (`factors.FactorDataset.layout`; the 3D Shapes
renderer and TFDS directory are "shapes3d", the sprite world "sprites")."""

LAYOUT_TITLES = {"dsprites": "dSprites", "shapes3d": "3D Shapes", "sprites": "sprite world"}
"""How the roles line and the problems name a layout whose defaults "auto" applied."""

PERIODIC_FORMAT = ('"name:period[:symmetry]" with period > 0 (a number or "<number>pi") '
                   'and symmetry an int >= 1, e.g. "orientation:2pi", "angle:360:4"; the name '
                   "is everything before the last one or two numeric fields")
_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)?(pi)?")


class PeriodicFormatError(ValueError):
    """A periodic declaration that is not "name:period[:symmetry]"; `reason` says why."""

    def __init__(self, text, reason: str):
        self.reason = reason
        super().__init__(f"{text!r}: {reason}; allowed: {PERIODIC_FORMAT}")


def _number(field: str) -> float | None:
    """'360' -> 360.0, '2pi' -> 2 pi, 'pi' -> pi, ' -1 ' -> -1.0; None if not a number."""
    match = _NUMBER.fullmatch(field.strip())
    if match is None or not (match[1] or match[2]):
        return None
    return float(match[1] or 1.0) * (np.pi if match[2] else 1.0)


def parse_periodic(text: str) -> tuple[str, float, int]:
    """'orientation:2pi:4' -> ('orientation', 2 pi, 4); 'joint 2:360' -> ('joint 2', 360.0, 1).

    Read from the right: the last ':'-separated field is the period, or the symmetry
    when the field before it is a number too; the name is everything before (it may
    hold spaces and ':': 'a:b:2pi:4' -> ('a:b', 2 pi, 4); a name that itself ends in
    ':<number>' needs its symmetry written, 'v:2:360:1'). The symmetry defaults to 1.

    Raises:
      PeriodicFormatError: `text` is not "name:period[:symmetry]"; the message says
        which part is wrong and what is allowed.
    """
    if not isinstance(text, str):
        raise PeriodicFormatError(text, f"of type {type(text).__name__}, not a string")
    fields = text.split(":")
    if len(fields) < 2:
        raise PeriodicFormatError(text, "no ':period' after the name")
    with_symmetry = len(fields) > 2 and None not in map(_number, fields[-2:])
    name = ":".join(fields[:-2] if with_symmetry else fields[:-1])
    period_field = fields[-2] if with_symmetry else fields[-1]
    period = _number(period_field)
    if period is None:
        raise PeriodicFormatError(text, f"{period_field!r} after the last ':' is not a number")
    if not name:
        raise PeriodicFormatError(text, f"no factor name before ':{period_field}'")
    if not (np.isfinite(period) and period > 0):
        raise PeriodicFormatError(text, f"period {period_field.strip()} is not a finite "
                                  "number > 0")
    symmetry = fields[-1].strip() if with_symmetry else "1"
    if not (symmetry.isdecimal() and int(symmetry) >= 1):
        raise PeriodicFormatError(text, f"symmetry {symmetry} is not an int >= 1")
    return name, period, int(symmetry)


_SLACK = 1e-3
"""Relative slack of the fit checks: a period typed to three decimals (6.283) still fits."""


def periodic_fit(name: str, values: np.ndarray, period: float,
                 symmetry: int) -> tuple[float, str | None]:
    """How the distinct values of a factor lie on the circle of (period P, symmetry s).

    With span = max - min, h the smallest step between the values and the turn
    T = P / s (theta = 2 pi s v / P goes once round the circle per turn):

        coverage = min(1, (span + h) / T), the share of the circle the values cover
                   (each standing for one step): a small one often means a period in
                   other units than the values.

    Refused (the problem, one phrase naming the factor and what is allowed): span > P
    (with `_SLACK` relative slack), the values wrap round the circle more than once (a
    grid may end at P - h, as the hues 0, 0.1, ..., 0.9 over 1, or at P, as dSprites'
    orientation over 2 pi). The symmetry is a property of the images (a square looks the
    same a quarter turn on), which the values cannot refute: it is not checked.

    Returns:
      (coverage, problem or None).
    """
    values = np.unique(np.asarray(values, np.float64))
    if values.size < 2:
        return 0.0, None
    span, step = values[-1] - values[0], np.diff(values).min()
    coverage = min(1.0, float(span + step) / (period / symmetry))
    if span > period * (1 + _SLACK):
        return coverage, (
            f"the values of {name!r} span {span:g} (from {values[0]:g} to {values[-1]:g}), "
            f"{span / period:.3g} periods of {period:g}: they would wrap round the circle "
            f"more than once; allowed: a period of at least {span:g} in the values' units "
            "(360 for degrees, 2pi for radians, 1 for fractions of a turn)")
    return coverage, None


def _labels(values: Sequence[float]) -> list[str]:
    """Distinct labels of distinct class values: `:g` ('2', '0.5'), or every value's repr
    when two `:g` labels would be the same (1.0 and 1.000001: '1.0', '1.000001')."""
    labels = [f"{value:g}" for value in values]
    return labels if len(set(labels)) == len(labels) else [repr(float(v)) for v in values]


@dataclasses.dataclass(frozen=True)
class FactorRole:
    """One task factor: its column in the factor table, its kind and its latent columns.

    Attributes:
      name: the factor's name.
      column: its column in the source's factor table [N, K].
      kind: "continuous", "categorical" or "periodic".
      period, symmetry: periodic only (module docstring).
      classes: categorical only: the sorted class values (>= 2).
      coverage: periodic only: the share of its circle the factor's values cover
        (`periodic_fit`); None when not measured.
      layout: the layout whose defaults ("auto") gave the role (`LAYOUT_DEFAULTS`);
        "" for a declared or continuous one.
    """

    name: str
    column: int
    kind: str = "continuous"
    period: float = 0.0
    symmetry: int = 1
    classes: tuple = ()
    coverage: float | None = None
    layout: str = ""

    @property
    def width(self) -> int:
        """Number of latent columns: 1, 2 (periodic) or C - 1 (categorical)."""
        return {"continuous": 1, "periodic": 2}.get(self.kind, len(self.classes) - 1)

    @property
    def latent_names(self) -> tuple[str, ...]:
        """Names of the latent columns: 'scale'; 'angle.cos', 'angle.sin'; 'shape=2', ..."""
        if self.kind == "periodic":
            return f"{self.name}.cos", f"{self.name}.sin"
        if self.kind == "categorical":
            return tuple(f"{self.name}={label}" for label in _labels(self.classes)[1:])
        return (self.name,)

    def describe(self) -> str:
        """One phrase: 'shape categorical (3 classes: 1, 2, 3; 2 latents)', 'hue periodic
        (period 1, symmetry 1: cos, sin; values cover 100% of the circle)', ..."""
        if self.kind == "periodic":
            covered = ("" if self.coverage is None
                       else f"; values cover {self.coverage:.0%} of the circle")
            return (f"{self.name} periodic (period {self.period:g}, symmetry {self.symmetry}: "
                    f"cos, sin{covered})")
        if self.kind == "categorical":
            values = ", ".join(_labels(self.classes))
            return f"{self.name} categorical ({len(self.classes)} classes: {values}; " \
                   f"{self.width} latents)"
        return f"{self.name} continuous"

    @property
    def spec(self) -> str:
        """The role as a short string: 'continuous', 'categorical', 'periodic:6.28319:1'."""
        if self.kind == "periodic":
            return f"periodic:{self.period:g}:{self.symmetry}"
        return self.kind

    def angle(self, values: np.ndarray) -> np.ndarray:
        """theta = 2 pi s v / P of periodic values v."""
        return 2.0 * np.pi * self.symmetry * np.asarray(values, np.float64) / self.period

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Latent columns `[N, width]` (unstandardised) of the factor's values `[N]`.

        continuous: v; periodic: (cos theta, sin theta); categorical: the indicators of
        classes 2..C (values must be class values).
        """
        values = np.asarray(values, np.float64)
        if self.kind == "periodic":
            theta = self.angle(values)
            return np.stack([np.cos(theta), np.sin(theta)], axis=-1)
        if self.kind == "categorical":
            index = self.class_index(values)
            return (index[:, None] == np.arange(1, len(self.classes))).astype(np.float64)
        return values[:, None]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Values `[N]` of latent columns `[N, width]` (the inverse of `encode`).

        Periodic values come back in [0, P / s) (v modulo P / s); categorical ones as
        the class whose indicator is largest (class 1 when none exceeds 1/2).
        """
        latents = np.asarray(latents, np.float64)
        if self.kind == "periodic":
            span = self.period / self.symmetry
            value = np.mod(np.arctan2(latents[:, 1], latents[:, 0]) * span / (2.0 * np.pi), span)
            return np.where(value < span, value, 0.0)   # a tiny negative angle rounds to span
        if self.kind == "categorical":
            scores = np.concatenate([np.full((len(latents), 1), 0.5), latents], axis=1)
            return np.asarray(self.classes)[np.argmax(scores, axis=1)]
        return latents[:, 0]

    def class_index(self, values: np.ndarray) -> np.ndarray:
        """Index `[N]` int64 of each value among the classes (categorical)."""
        classes = np.asarray(self.classes)
        index = np.clip(np.searchsorted(classes, values), 0, len(classes) - 1)
        if not np.all(classes[index] == values):
            raise ValueError(f"factor {self.name!r}: values outside its classes {self.classes}")
        return index


@dataclasses.dataclass(frozen=True)
class Roles:
    """The roles of a source's K factors.

    Attributes:
      factor_names: the K factor names, in the factor table's column order.
      task: the task factors' roles, in column order.
    """

    factor_names: tuple[str, ...]
    task: tuple[FactorRole, ...]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(role.name for role in self.task)

    @property
    def task_columns(self) -> tuple[int, ...]:
        """Columns of the task factors in the factor table."""
        return tuple(role.column for role in self.task)

    @property
    def nuisances(self) -> tuple[str, ...]:
        return tuple(name for name in self.factor_names if name not in self.task_names)

    @property
    def num_latents(self) -> int:
        """d: the number of latent columns (the encoder's m when model.num_latents = 0)."""
        return sum(role.width for role in self.task)

    @property
    def latent_names(self) -> tuple[str, ...]:
        return tuple(name for role in self.task for name in role.latent_names)

    @property
    def latent_factor(self) -> np.ndarray:
        """`[d]` int: the task factor (index into `task`) of each latent column."""
        return np.repeat(np.arange(len(self.task)), [role.width for role in self.task])

    def as_dict(self) -> dict:
        """{factor name: 'continuous' | 'categorical' | 'periodic:P:s' | 'nuisance'}."""
        specs = {role.name: role.spec for role in self.task}
        return {name: specs.get(name, "nuisance") for name in self.factor_names}

    def describe(self) -> str:
        """One line: the task factors with their kinds, the nuisances, then the factors
        whose roles are a layout's defaults ('; auto (3D Shapes layout): floor_hue, ...')."""
        text = "task factors: " + "; ".join(role.describe() for role in self.task)
        text += f" -> {self.num_latents} latents"
        text += "; nuisance factors: " + (", ".join(self.nuisances) or "none")
        for layout in dict.fromkeys(role.layout for role in self.task if role.layout):
            names = ", ".join(role.name for role in self.task if role.layout == layout)
            text += f"; auto ({LAYOUT_TITLES[layout]} layout): {names}"
        return text


class RolesError(ValueError):
    """Role declarations that do not fit the data, one line each.

    Each problem names the declarations at fault with their values, then what is wrong:
    `lines(prefix)` writes their names with a prefix ("config.data.categorical = ...,
    config.data.periodic = ...: ..."), `problems` (and the message) without.
    """

    def __init__(self, problems: Sequence[tuple[tuple[tuple[str, tuple], ...], str]]):
        """`problems`: (((argument, its value), ...), what is wrong) each."""
        self._problems = tuple(problems)
        self.problems = self.lines()
        super().__init__("\n".join(self.problems))

    def lines(self, prefix: str = "") -> list[str]:
        """One line per problem, each declaration named `prefix` + its argument."""
        return [", ".join(f"{prefix}{argument} = {value!r}" for argument, value in fields)
                + f": {text}" for fields, text in self._problems]


def resolve_roles(factor_names: Sequence[str], grid: Sequence[np.ndarray],
                  layout: str = "plain", *, factors: Sequence[str] = (),
                  categorical: Sequence[str] = (AUTO,), periodic: Sequence[str] = (AUTO,),
                  dropped: Sequence[str] = ()) -> Roles:
    """The roles of a source's factors from their declarations (module docstring).

    Args:
      factor_names: the K factor names, distinct and non-empty.
      grid: K sorted arrays, the distinct values of each factor (the classes of a
        categorical factor; the values a periodic factor must spread on its circle).
      layout: the data's layout, for "auto" (`LAYOUT_DEFAULTS`; others have none).
      factors: the task factors' names; () = every factor.
      categorical: names of categorical factors, or "auto".
      periodic: "name:period[:symmetry]" strings, or "auto".
      dropped: the constant factors dropped at load (`factors.FactorDataset.dropped`):
        a declaration naming one says so.

    Raises:
      ValueError: factor names that are empty or repeated.
      RolesError: one line per problem, each starting with the arguments it is about
        (`factors`, `categorical`, `periodic`): a name that is not a factor or not a
        task factor, a factor declared twice or both categorical and periodic, a
        malformed periodic item, a period the values wrap more than once
        (`periodic_fit`), or one that puts every value on one line through the
        circle's centre (a constant cos or sin latent). A problem with a layout's
        default names the layout.
    """
    factor_names = tuple(factor_names)
    if "" in factor_names or len(set(factor_names)) < len(factor_names):
        raise ValueError(f"factor names must be distinct and non-empty; got {factor_names}")
    declared = {"factors": tuple(factors), "categorical": tuple(categorical),
                "periodic": tuple(periodic)}
    problems, listing = [], ", ".join(factor_names)

    def report(text, *arguments):
        problems.append((tuple((a, declared[a]) for a in arguments), text))

    def check_names(argument, names, allowed):
        for name in names:
            if name not in factor_names:
                why = "dropped at load: constant; " if name in dropped else ""
                report(f"{name!r} is not a factor of the data ({why}factors: {listing})",
                       argument)
            elif name not in allowed:
                report(f"{name!r} is a nuisance factor (not in factors = "
                       f"{declared['factors']!r}); roles are for task factors", argument)

    check_names("factors", factors, factor_names)
    task_names = tuple(n for n in factor_names if not factors or n in factors)
    defaults = LAYOUT_DEFAULTS.get(layout, {"categorical": (), "periodic": ()})
    kinds: dict[str, dict] = {}     # name -> its FactorRole's kind, period, symmetry, layout
    items: dict[str, str] = {}      # periodic name -> its declaration, as problems name it
    if AUTO in periodic:
        for item in defaults["periodic"]:
            name, period, symmetry = parse_periodic(item)
            kinds[name] = {"kind": "periodic", "period": period, "symmetry": symmetry,
                           "layout": layout}
            items[name] = f"the {LAYOUT_TITLES[layout]} layout's default {item!r} (auto)"
    if AUTO in categorical:
        kinds.update({name: {"kind": "categorical", "layout": layout}
                      for name in defaults["categorical"]})
    kinds = {name: kind for name, kind in kinds.items() if name in task_names}
    explicit_categorical = [name for name in categorical if name != AUTO]
    explicit_periodic = []
    for item in periodic:
        if item == AUTO:
            continue
        try:
            explicit_periodic.append((item, *parse_periodic(item)))
        except PeriodicFormatError as error:
            report(f"item {error}", "periodic")
    periodic_names = [name for _, name, _, _ in explicit_periodic]
    check_names("categorical", explicit_categorical, task_names)
    check_names("periodic", dict.fromkeys(periodic_names), task_names)
    for name in dict.fromkeys(n for n in periodic_names if periodic_names.count(n) > 1):
        twice = ", ".join(repr(item) for item, n, _, _ in explicit_periodic if n == name)
        report(f"{name!r} is declared more than once ({twice}); give it one period",
               "periodic")
    for name in dict.fromkeys(n for n in explicit_categorical if n in periodic_names):
        report(f"{name!r} is declared both categorical and periodic", "categorical",
               "periodic")
    kinds.update({name: {"kind": "categorical"} for name in explicit_categorical})
    for item, name, period, symmetry in explicit_periodic:
        kinds[name] = {"kind": "periodic", "period": period, "symmetry": symmetry}
        items[name] = f"item {item!r}"
    task = []
    for column, name in enumerate(factor_names):
        if name not in task_names:
            continue
        kind = kinds.get(name, {"kind": "continuous"})
        values = np.asarray(grid[column], np.float64)
        if kind["kind"] == "categorical":
            task.append(FactorRole(name, column, classes=tuple(values.tolist()), **kind))
        elif kind["kind"] == "periodic":
            coverage, problem = periodic_fit(name, values, kind["period"], kind["symmetry"])
            role = FactorRole(name, column, coverage=coverage, **kind)
            if problem is None and np.any(np.ptp(role.encode(values), axis=0) < 1e-9):
                problem = (f"period {role.period:g} with symmetry {role.symmetry} puts the "
                           f"values of {name!r} on at most two opposite points of the circle "
                           "(a constant cos or sin latent); give its true period or declare "
                           "it continuous")
            if problem is not None:
                report(f"{items[name]}: {problem}", "periodic")
            task.append(role)
        else:
            task.append(FactorRole(name, column))
    if problems:
        raise RolesError(problems)
    return Roles(factor_names, tuple(task))
