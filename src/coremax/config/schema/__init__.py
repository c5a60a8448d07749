"""The config schema: every section and key of the experiment config (sections.py, the one place a default is
stated), how a function consuming a section gets the keys its caller left out (`consumes`, `section_values`),
and the words of the keys a registry fills (`register_choices`, called by each registry at its own import, so
this package imports nothing above it). `python -m coremax.config.schema` prints default-config.toml."""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from typing import Any, Callable, Iterable

from coremax.config.schema.base import Key, Range
from coremax.config.schema.sections import HEADER, RENAMED, SECTIONS
from coremax.errors import UserError

__all__ = ["Key", "Range", "HEADER", "SECTIONS", "RENAMED", "key", "every_key", "choices", "ranges",
           "register_choices", "registered", "defaults", "section_values", "consumes", "with_defaults", "suggest"]

_REGISTERED: dict[str, dict] = {}  # "section.key" -> a registry's live table (its keys are the words)


def register_choices(full: str, table: dict) -> None:
    """Make the keys of a registry's table the words of config key `full`. The table itself is kept, so what
    registers later (a test's toy transform) is a word too, and what is removed is not."""
    _REGISTERED[full] = table


def registered() -> dict[str, tuple]:
    """The registry keys registered so far and their words now."""
    return {full: tuple(table) for full, table in _REGISTERED.items()}


def split(full: str) -> tuple[str, str]:
    """"baseline.ratio.pair" -> ("baseline.ratio", "pair"): the last part is the key, the rest its section."""
    section, _, name = full.rpartition(".")
    return section, name


def key(full: str) -> Key:
    section, name = split(full)
    return SECTIONS[section][name]


def choices(full: str) -> tuple:
    """The words config key `full` may take: its registry's, once registered, else those the schema fixes."""
    return tuple(_REGISTERED[full]) if full in _REGISTERED else key(full).choices


def every_key() -> Iterable[tuple[str, Key]]:
    for section, keys in SECTIONS.items():
        for name, k in keys.items():
            yield f"{section}.{name}", k


def ranges() -> dict[str, Range]:
    return {full: k.bounds for full, k in every_key() if k.range}


def defaults(section: str = "") -> dict[str, Any]:
    """The schema's defaults (fresh copies), nested as TOML reads them ([baseline.ratio] inside [baseline]): of
    every section, or of one section with its sub-sections."""
    out: dict[str, Any] = {}
    for name, keys in SECTIONS.items():
        table = out
        for part in name.split("."):
            table = table.setdefault(part, {})
        table.update({k: copy.deepcopy(v.default) for k, v in keys.items()})
    for part in section.split(".") if section else ():
        out = out[part]
    return out


def suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else "; check the spelling against default-config.toml."


def section_values(section: str, keys: dict, where: str = "") -> dict[str, Any]:
    """`keys` of one section, those left out (and whole sub-sections) at the schema's defaults. A key the
    section does not have is refused by name (`where`: who was given it)."""
    full = defaults(section)
    for name in keys:
        if name in full:
            continue
        old = f"{section}.{name}"
        hint = f"; it is now called {RENAMED[old]}" if old in RENAMED else \
            suggest(old, (f"{section}.{k}" for k in full))
        raise UserError(f"{old}{where} is not a key of [{section}]{hint}")
    for name, value in keys.items():
        sub = f"{section}.{name}"
        full[name] = section_values(sub, value, where) if sub in SECTIONS and isinstance(value, dict) else value
    return full


def _call(body: Callable, args: tuple, values: dict) -> Any:
    """`body(*args, **values)`, passing only the values it names unless it takes **keys."""
    params = inspect.signature(body).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        values = {k: v for k, v in values.items() if k in params}
    return body(*args, **values)


def consumes(section: str) -> Callable[[Callable], Callable]:
    """Decorator of the function consuming config section `section`: whatever keys its caller gives, it gets
    every key it names (or, taking **keys, every key of the section), those left out at the schema's defaults,
    so its signature states none. A key the section does not have is refused by name."""
    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def call(*args, **keys):
            body = call.__wrapped__  # looked up at each call, so a test can put a spy in its place
            params = inspect.signature(body).parameters
            plain = {k: keys.pop(k) for k in list(keys)  # build_model(..., input_channels=256) is no [model] key
                     if k in params and params[k].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
            return _call(body, args, {**plain, **section_values(section, keys, f" (given to {func.__name__})")})
        return call
    return wrap


def with_defaults(func: Callable, values: Callable[[], dict]) -> Callable:
    """`func` with each parameter its caller left out, and that `values()` (asked at each call) holds, filled
    from it: a baseline's constructor called without its [baseline] keys gets the schema's."""
    @functools.wraps(func)
    def call(*args, **keys):
        signature = inspect.signature(func)
        given = signature.bind_partial(*args, **keys).arguments  # a wrong keyword fails here, as without us
        return func(*args, **keys, **{k: v for k, v in values().items()
                                      if k in signature.parameters and k not in given})
    return call
