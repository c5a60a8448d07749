"""The shape of one config key: its default (which is also its type), its one-line meaning, and the range or the
words it must keep to. sections.py holds the table of every key; this file holds the shapes only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*(.*)$")
_SET = re.compile(r"^\{([^}]*)\}\s*(.*)$")


def _number(token: str) -> float:
    """A bound as written: 1, 0.1, inf or 2**32 (a power stays readable in the rule)."""
    if "**" in token:
        base, power = token.split("**")
        return int(base) ** int(power)
    return float(token) if any(c in token for c in ".ein") else int(token)


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take, written as an interval ("[0, 1)", inf for no bound, then an optional
    unit: "[0, 20] channels") or as a set ("{1, 2}"). `rule` is how messages and the reference state it."""

    text: str
    low: float = field(init=False, default=-math.inf)
    high: float = field(init=False, default=math.inf)
    only: tuple = field(init=False, default=())
    closed: tuple = field(init=False, default=(True, True))  # whether each end is in the range
    rule: str = field(init=False, default="")

    def __post_init__(self) -> None:
        interval, allowed = _INTERVAL.match(self.text), _SET.match(self.text)
        if allowed:
            tokens, unit = [t.strip() for t in allowed.group(1).split(",")], allowed.group(2)
            self._put(only=tuple(_number(t) for t in tokens), rule=f"x = {' or '.join(tokens)}", unit=unit)
            return
        if not interval:
            raise ValueError(f"cannot read the range {self.text!r}; write it as [low, high) or {{1, 2}}")
        opening, low, high, closing, unit = interval.groups()
        lo, hi = ("<=" if opening == "[" else "<"), ("<=" if closing == "]" else "<")
        if high == "inf":
            rule = f"x {'>=' if lo == '<=' else '>'} {low}"
        elif low == "-inf":
            rule = f"x {hi} {high}"
        else:
            rule = f"{low} {lo} x {hi} {high}"
        self._put(low=_number(low), high=_number(high), rule=rule, unit=unit,
                  closed=(opening == "[", closing == "]"))

    def _put(self, rule: str, unit: str, closed=(True, True), **bounds) -> None:
        for name, value in {**bounds, "closed": closed, "rule": f"{rule} {unit}".strip()}.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def __call__(self, x) -> bool:
        if not math.isfinite(x):
            return False
        if self.only:
            return x in self.only
        low_ok = x >= self.low if self.closed[0] else x > self.low
        high_ok = x <= self.high if self.closed[1] else x < self.high
        return low_ok and high_ok


@dataclass(frozen=True)
class Key:
    """One config key. `range`: a numeric key's Range text; `choices`: the words of a word key fixed here;
    `registry`: the module whose registry fills the words of a key (config.register_choices at its import)."""

    default: Any
    meaning: str
    range: str = ""
    choices: tuple[str, ...] = ()
    registry: str = ""

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def bounds(self) -> Range | None:
        return Range(self.range) if self.range else None

    @property
    def type_name(self) -> str:
        """The type as the reference states it (a list's items typed by its default's first item)."""
        names = {bool: "true/false", int: "integer", float: "number", str: "string"}
        if isinstance(self.default, list):
            return f"list of {names[type(self.default[0])]}s" if self.default else "list"
        return names.get(self.type, self.type.__name__)
