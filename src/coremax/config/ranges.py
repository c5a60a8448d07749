"""The range of each numeric config key as the constructors checking one read it (`in_range`, and the rule in
RANGES for their message). The ranges themselves are stated with their keys in coremax.config.schema."""

from __future__ import annotations

from coremax.config import schema
from coremax.errors import UserError

RANGES = {full: (bounds.rule, bounds) for full, bounds in schema.ranges().items()}


def in_range(full: str, value) -> bool:
    """Whether `value` lies in the range of config key `full` (a finite number inside it)."""
    return schema.key(full).bounds(value)


def check_range(full: str, value) -> None:
    """Refuse a value of config key `full` out of its range, in the words of the config check."""
    if not in_range(full, value):
        raise UserError(f"{full} = {value!r} is out of range: it must satisfy {RANGES[full][0]}.")
