"""What the rows are: a table, a sequence (``[T, C]``) or an image (``[H, W, C]``), from ``data.layout``
and ``data.shape`` or inferred from the column names.

Inference (``data.layout = "auto"``, no ``data.shape``), in this order:

1. Names with two numbers that fill a grid in row-major order (``pixel_0_0 .. pixel_7_7``,
   ``r0c0 ..``): an image of that grid.
2. Names that are one shared prefix plus consecutive numbers from 0 or 1 in column order
   (``t0 .. t149``, ``px0 .. px783``, or unnamed columns ``0 .. 783``), at least
   `MIN_SEQUENCE` of them: an image when their count is a square of side >= `MIN_SIDE` and the
   prefix does not name time (`TIME_PREFIXES`); else a sequence of that length, one channel.
3. Anything else: a table.

A sequence with several channels, or an image that is not square, needs ``data.shape`` (a
``[T, C]`` row holds its values time-major: ``t0c0, t0c1, .., t1c0 ..``). An explicit shape or
layout that does not fit the columns is an `InputError` naming the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from tasks.errors import InputError

MIN_SEQUENCE = 8
MIN_SIDE = 8
TIME_PREFIXES = {"t", "ts", "time", "step", "timestep", "s", "sample", "lag", "day", "hour", "minute", "sec", "frame"}

_ONE = re.compile(r"^(.*?)(\d+)$")
_TWO = re.compile(r"^(\D*?)(\d+)\D+(\d+)$")


@dataclass(frozen=True)
class Layout:
    """The rows' layout.

    Attributes:
        kind: ``table``, ``sequence`` or ``image``.
        shape: ``[d]`` for a table, ``[T, C]`` for a sequence, ``[H, W, C]`` for an image.
        reason: one line saying why (shown in the log and the report).
    """

    kind: str
    shape: list[int]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None, n_features: int) -> Layout:
        """The layout stored in a table's ``meta.json`` (a table of ``n_features`` when none is)."""
        if not obj:
            return cls("table", [n_features], "no layout recorded")
        return cls(str(obj["kind"]), [int(v) for v in obj["shape"]], str(obj.get("reason", "")))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Layout:
        """The layout of a table artifact, from its ``meta.json``."""
        return cls.from_json(meta.get("layout"), len(meta["feature_names"]))


def _prefix_key(prefix: str) -> str:
    return prefix.lower().strip("_-. ")


def _numbered(names: list[str]) -> tuple[str, list[int]] | None:
    """``(prefix, indices)`` when every name is one shared prefix plus a number."""
    matches = [_ONE.match(n) for n in names]
    if not all(matches):
        return None
    prefixes = {m[1] for m in matches}
    if len(prefixes) != 1:
        return None
    return prefixes.pop(), [int(m[2]) for m in matches]


def _grid(names: list[str]) -> tuple[int, int] | None:
    """``(rows, cols)`` when the names hold two numbers filling a grid in row-major order."""
    matches = [_TWO.match(n) for n in names]
    if not all(matches) or len({m[1] for m in matches}) != 1:
        return None
    pairs = [(int(m[2]), int(m[3])) for m in matches]
    r0, c0 = pairs[0]
    rows = max(p[0] for p in pairs) - r0 + 1
    cols = max(p[1] for p in pairs) - c0 + 1
    if rows < 2 or cols < 2 or rows * cols != len(pairs):
        return None
    expected = [(r0 + i // cols, c0 + i % cols) for i in range(len(pairs))]
    return (rows, cols) if pairs == expected else None


def infer_layout(names: list[str]) -> Layout:
    """The layout the column names suggest (rules in the module docstring)."""
    d = len(names)
    grid = _grid(names)
    if grid is not None:
        return Layout("image", [grid[0], grid[1], 1],
                      f"columns {names[0]} .. {names[-1]} are the cells of a {grid[0]}x{grid[1]} grid")
    numbered = _numbered(names)
    if numbered is None:
        return Layout("table", [d], "column names are not one prefix with consecutive numbers")
    prefix, idx = numbered
    if idx not in (list(range(d)), list(range(1, d + 1))):
        return Layout("table", [d], f"columns {prefix}N are not numbered consecutively in column order")
    span = f"{names[0]} .. {names[-1]}"
    if d < MIN_SEQUENCE:
        return Layout("table", [d], f"only {d} numbered columns ({span}); a sequence needs {MIN_SEQUENCE}")
    side = math.isqrt(d)
    if side * side == d and side >= MIN_SIDE and _prefix_key(prefix) not in TIME_PREFIXES:
        return Layout("image", [side, side, 1], f"{d} numbered columns ({span}) make a {side}x{side} square")
    why = f" (prefix {prefix!r} names time)" if side * side == d and side >= MIN_SIDE else ""
    return Layout("sequence", [d, 1], f"{d} consecutively numbered columns ({span}){why}")


def resolve_layout(names: list[str], layout: str = "auto", shape: list[int] | None = None) -> Layout:
    """The layout of data with these columns, from ``data.layout`` and ``data.shape`` or inferred.

    Raises:
        InputError: a shape whose size is not the number of columns, or a shape or layout that
            cannot hold them (naming ``data.shape`` or ``data.layout``).
    """
    d = len(names)
    if shape is not None:
        size = math.prod(shape)
        if size != d:
            raise InputError(f"data.shape {list(shape)} holds {size} values but the data has {d} feature columns")
        if layout == "table" and len(shape) != 1:
            raise InputError(f"data.shape {list(shape)}: data.layout = 'table' takes [{d}] or no shape")
        if layout == "auto" and len(shape) == 2:
            raise InputError(f"data.shape {list(shape)}: say data.layout = 'image' ([H, W]) or 'sequence' ([T, C])")
        kind = layout if layout != "auto" else ("sequence" if len(shape) == 1 else "image")
        if kind == "image":
            if len(shape) not in (2, 3):
                raise InputError(f"data.shape {list(shape)}: an image is [height, width] or [height, width, channels]")
            full = [*shape, 1] if len(shape) == 2 else list(shape)
        elif kind == "sequence":
            if len(shape) not in (1, 2):
                raise InputError(f"data.shape {list(shape)}: a sequence is [length] or [length, channels]")
            full = [shape[0], 1] if len(shape) == 1 else list(shape)
        else:
            full = [d]
        return Layout(kind, [int(v) for v in full], f"data.shape {list(shape)} as given")
    if layout == "auto":
        return infer_layout(names)
    if layout == "table":
        return Layout("table", [d], "data.layout = 'table' as given")
    if layout == "sequence":
        return Layout("sequence", [d, 1], "data.layout = 'sequence' as given: one channel")
    side = math.isqrt(d)
    if side * side == d:
        return Layout("image", [side, side, 1], f"data.layout = 'image' as given: {d} columns make a {side}x{side} square")
    grid = _grid(names)
    if grid is not None:
        return Layout("image", [grid[0], grid[1], 1], "data.layout = 'image' as given; columns number a grid")
    raise InputError(f"data.layout = 'image': {d} feature columns are not a square; set data.shape, e.g. [H, W]")
