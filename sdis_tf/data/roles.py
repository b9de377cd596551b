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
multiple of pi: "6.283185", "2pi", "pi"); the item "auto" stands for the
defaults of the data's layout (`LAYOUT_DEFAULTS`: dSprites' shape categorical
and orientation periodic over 2 pi, 3D Shapes' three hues periodic over 1, the
sprite world's shape categorical and orientation periodic over 1), applied to
the task factors the data has; explicit items override them.
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

PERIODIC_FORMAT = ('"name:period[:symmetry]" with period > 0 (a number or "<number>pi") '
                   'and symmetry an int >= 1, e.g. "orientation:2pi", "angle:360:4"')
_PERIODIC = re.compile(r"([^:\s]+):([0-9.eE+-]*)(pi)?(?::(\d+))?")


def parse_periodic(text: str) -> tuple[str, float, int]:
    """'orientation:2pi:4' -> ('orientation', 2 pi, 4); the symmetry defaults to 1.

    Raises:
      ValueError: `text` is not "name:period[:symmetry]" (the message says what is allowed).
    """
    match = _PERIODIC.fullmatch(text) if isinstance(text, str) else None
    if match is None or not (match[2] or match[3]):
        raise ValueError(f"{text!r} is not {PERIODIC_FORMAT}")
    name, number, pi, symmetry = match.groups()
    try:
        period = float(number) if number else 1.0
    except ValueError:
        raise ValueError(f"{text!r} is not {PERIODIC_FORMAT}") from None
    period *= np.pi if pi else 1.0
    symmetry = int(symmetry) if symmetry else 1
    if not np.isfinite(period) or period <= 0 or symmetry < 1:
        raise ValueError(f"{text!r} is not {PERIODIC_FORMAT}")
    return name, period, symmetry


@dataclasses.dataclass(frozen=True)
class FactorRole:
    """One task factor: its column in the factor table, its kind and its latent columns.

    Attributes:
      name: the factor's name.
      column: its column in the source's factor table [N, K].
      kind: "continuous", "categorical" or "periodic".
      period, symmetry: periodic only (module docstring).
      classes: categorical only: the sorted class values (>= 2).
    """

    name: str
    column: int
    kind: str = "continuous"
    period: float = 0.0
    symmetry: int = 1
    classes: tuple = ()

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
            return tuple(f"{self.name}={value:g}" for value in self.classes[1:])
        return (self.name,)

    def describe(self) -> str:
        """One phrase: 'shape categorical (3 classes: 1, 2, 3; 2 latents)', ..."""
        if self.kind == "periodic":
            return (f"{self.name} periodic (period {self.period:g}, symmetry {self.symmetry}: "
                    f"cos, sin)")
        if self.kind == "categorical":
            values = ", ".join(f"{value:g}" for value in self.classes)
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
        """One line: the task factors with their kinds, then the nuisances."""
        text = "task factors: " + "; ".join(role.describe() for role in self.task)
        text += f" -> {self.num_latents} latents"
        return text + "; nuisance factors: " + (", ".join(self.nuisances) or "none")


class RolesError(ValueError):
    """Role declarations that do not fit the data; `problems` holds one line each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def resolve_roles(factor_names: Sequence[str], grid: Sequence[np.ndarray],
                  layout: str = "plain", *, factors: Sequence[str] = (),
                  categorical: Sequence[str] = (AUTO,),
                  periodic: Sequence[str] = (AUTO,)) -> Roles:
    """The roles of a source's factors from their declarations (module docstring).

    Args:
      factor_names: the K factor names.
      grid: K sorted arrays, the distinct values of each factor (the classes of a
        categorical factor; the values a periodic factor must spread on its circle).
      layout: the data's layout, for "auto" (`LAYOUT_DEFAULTS`; others have none).
      factors: the task factors' names; () = every factor.
      categorical: names of categorical factors, or "auto".
      periodic: "name:period[:symmetry]" strings, or "auto".

    Raises:
      RolesError: one line per problem, each starting with the argument it is about
        (`factors`, `categorical` or `periodic`): a name that is not a factor or not
        a task factor, a factor declared both categorical and periodic, a malformed
        periodic item, or a period that puts every value on one line through the
        circle's centre (a constant cos or sin latent).
    """
    factor_names, problems = tuple(factor_names), []
    listing = ", ".join(factor_names)

    def check_names(argument, given, names, allowed):
        for name in names:
            if name not in factor_names:
                problems.append(f"{argument} = {tuple(given)!r}: {name!r} is not a factor of the "
                                f"data (factors: {listing})")
            elif name not in allowed:
                problems.append(f"{argument} = {tuple(given)!r}: {name!r} is a nuisance factor "
                                f"(not in factors = {tuple(factors)!r}); roles are for task "
                                "factors")

    check_names("factors", factors, factors, factor_names)
    task_names = tuple(n for n in factor_names if not factors or n in factors)
    defaults = LAYOUT_DEFAULTS.get(layout, {"categorical": (), "periodic": ()})
    kinds: dict[str, tuple] = {}
    if AUTO in periodic:
        for name, period, symmetry in map(parse_periodic, defaults["periodic"]):
            kinds[name] = ("periodic", period, symmetry)
    if AUTO in categorical:
        kinds.update({name: ("categorical",) for name in defaults["categorical"]})
    kinds = {name: kind for name, kind in kinds.items() if name in task_names}
    explicit_categorical = [name for name in categorical if name != AUTO]
    explicit_periodic = []
    for item in periodic:
        if item == AUTO:
            continue
        try:
            explicit_periodic.append(parse_periodic(item))
        except ValueError as error:
            problems.append(f"periodic = {tuple(periodic)!r}: item {error}")
    check_names("categorical", categorical, explicit_categorical, task_names)
    check_names("periodic", periodic, [p[0] for p in explicit_periodic], task_names)
    for name in set(explicit_categorical) & {p[0] for p in explicit_periodic}:
        problems.append(f"categorical = {tuple(categorical)!r}, periodic = {tuple(periodic)!r}: "
                        f"{name!r} is declared both categorical and periodic")
    kinds.update({name: ("categorical",) for name in explicit_categorical})
    kinds.update({name: ("periodic", period, symmetry)
                  for name, period, symmetry in explicit_periodic})
    task = []
    for column, name in enumerate(factor_names):
        if name not in task_names:
            continue
        kind = kinds.get(name, ("continuous",))
        values = np.asarray(grid[column], np.float64)
        if kind[0] == "categorical":
            task.append(FactorRole(name, column, "categorical", classes=tuple(values.tolist())))
        elif kind[0] == "periodic":
            role = FactorRole(name, column, "periodic", period=kind[1], symmetry=kind[2])
            if np.any(np.ptp(role.encode(values), axis=0) < 1e-9):
                problems.append(
                    f"periodic = {tuple(periodic)!r}: period {kind[1]:g} with symmetry "
                    f"{kind[2]} puts the values of {name!r} on at most two opposite points "
                    "of the circle (a constant cos or sin latent); give its true period or "
                    "declare it continuous")
            task.append(role)
        else:
            task.append(FactorRole(name, column))
    if problems:
        raise RolesError(problems)
    return Roles(factor_names, tuple(task))
