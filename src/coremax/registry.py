"""The one shape of CoreMAX's registries (fine-tuning modes, stages, baselines, transforms): a dict of name ->
class or function, filled by a decorator where each is defined, so a new one needs no other line."""

from __future__ import annotations

from typing import Callable


def registrar(table: dict, attribute: str | None = "name") -> Callable[[str], Callable]:
    """`register = registrar(TABLE)`; then `@register("x")` puts the decorated class (or function) into TABLE
    under "x" and, for a class, sets its `attribute` to "x" (None: sets nothing)."""
    def register(name: str):
        def add(obj):
            if attribute is not None and isinstance(obj, type):
                setattr(obj, attribute, name)
            table[name] = obj
            return obj
        return add
    return register
