"""Sweep algebra for config files, in the style of big_vision's `get_hyper(hyper)`.

A sweep is a list of points; a point is a dict {config field: value}, the
fields dotted as on the command line ("eps", "data.rho"). A config file names
its sweeps in `get_sweep(name, hyper)`, `hyper` being this module:

    def get_sweep(name, hyper):
        if name == "grid":
            return hyper.product([hyper.sweep("method", ("lasso", "ridge")),
                                  hyper.sweep("eps", (0.01, 0.1))])
        raise ValueError(f"unknown sweep {name!r}; allowed: 'grid'")

`product` crosses sweeps (the first one varies slowest), `zipit` pairs them
point by point, `chainit` puts them one after the other, `fixed` is a
one-point sweep.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Sequence

Point = dict[str, Any]

_FIELD = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def sweep(field: str, values: Iterable[Any]) -> list[Point]:
    """[{field: v} for v in values].

    Raises:
      ValueError: `field` is not a dotted name, or `values` is empty.
    """
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise ValueError(f"a sweep's field must be a dotted config field such as 'data.rho'. "
                         f"Received: {field!r}")
    points = [{field: value} for value in values]
    if not points:
        raise ValueError(f"the sweep of {field!r} has no values")
    return points


def fixed(field: str, value: Any) -> list[Point]:
    """The one-point sweep [{field: value}]."""
    return sweep(field, [value])


def _merge(points: Sequence[Point], how: str) -> Point:
    merged: Point = {}
    for point in points:
        shared = sorted(set(merged) & set(point))
        if shared:
            raise ValueError(f"{how} sets the field {shared[0]!r} twice in one point")
        merged.update(point)
    return merged


def product(sweeps: Sequence[list[Point]]) -> list[Point]:
    """Every combination of one point per sweep, merged; the last sweep varies fastest.

    `product([])` is the single empty point [{}] (the config as it is).

    Raises:
      ValueError: two sweeps set the same field.
    """
    return [_merge(combination, "product") for combination in itertools.product(*sweeps)]


def zipit(sweeps: Sequence[list[Point]]) -> list[Point]:
    """The i-th points of all sweeps merged, for each i.

    Raises:
      ValueError: no sweeps, sweeps of different lengths, or two sweeps set the same field.
    """
    lengths = [len(s) for s in sweeps]
    if not lengths or len(set(lengths)) != 1:
        raise ValueError(f"zipit needs one or more sweeps of one length. Received lengths "
                         f"{lengths}")
    return [_merge(points, "zipit") for points in zip(*sweeps)]


def chainit(sweeps: Sequence[list[Point]]) -> list[Point]:
    """The points of every sweep, one sweep after the other."""
    return [point for s in sweeps for point in s]
