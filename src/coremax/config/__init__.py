"""The config hierarchy, and the only place its precedence rule lives.

Lowest to highest: the schema's defaults (coremax.config.schema, the one place a key and its default are stated)
-> default-config.toml (written from the schema) -> the experiment file (--config) -> command-line overrides
(`section.key=value`; `baseline.ratio.pair=...` for a sub-section's key). Every value remembers the level it
came from, so `--print-config` can say why a value is what it is.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable

from coremax.config import schema
from coremax.config.schema import (RENAMED, consumes, defaults, register_choices, section_values, suggest,
                                   with_defaults)
from coremax.config.schema.text import DEFAULT_FILE as DEFAULT_PATH, inline as _toml_value
from coremax.errors import UserError
from coremax.io import read_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["DEFAULT_PATH", "CHOICES", "RENAMED", "Config", "resolve", "parse_override", "parse_overrides",
           "as_overrides", "register_choices", "registries", "defaults", "section_values", "consumes",
           "with_defaults", "schema"]

# Keys whose value is one of a few words fixed by the schema (a registry's keys: registries()).
CHOICES = {full: k.choices for full, k in schema.every_key() if k.choices}



def registries() -> dict[str, tuple]:
    """The keys whose words are a registry's, as registered so far (each registry registers at its import)."""
    return schema.registered()


def signature_defaults(func: Callable) -> dict[str, Any]:
    """Defaults of the keyword-only parameters of `func` (none, for a function the schema fills: `consumes`)."""
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


class Config:
    """Resolved values by section and key, with the level each value came from. A sub-section ([baseline.ratio])
    sits inside its section as TOML nests it; `sections` lists every section by its dotted name."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, Any] = {}  # the same tree as `values`, holding each value's level
        self.sections: list[str] = []
        self.notes: list[str] = []  # what was mapped on the way (renamed keys of a frozen config)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return _table(self.values, section)

    def __contains__(self, section: str) -> bool:
        return section in self.sections

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.values)

    def source(self, section: str, key: str) -> str:
        return _table(self.sources, section)[key]

    def leaves(self, section: str) -> dict[str, Any]:
        """The keys of one section without its sub-sections."""
        return {k: v for k, v in self[section].items() if f"{section}.{k}" not in self.sections}

    def get(self, full: str) -> Any:
        section, key = schema.split(full)
        return self.leaves(section).get(key) if section in self.sections else None

    def describe(self) -> str:
        """The resolved config as TOML, each value followed by the level it came from."""
        import tomli_w

        lines = []
        for section in self.sections:
            keys = self.leaves(section)
            lines.append(f"[{section}]")
            width = max((len(f"{k} = {_toml_value(v)}") for k, v in keys.items()), default=0)
            for key, value in keys.items():
                text = f"{key} = {_toml_value(value)}"
                lines.append(f"{text:<{width}}  # {self.source(section, key)}")
            lines.append("")
        # Fail loudly if a value could not be written back as TOML (the frozen config must round-trip).
        tomli_w.dumps(self.values)
        return "\n".join(lines)

    # -- merging -------------------------------------------------------------------------------------
    def _define(self, section: str, key: str, value: Any, level: str) -> None:
        if section not in self.sections:
            self.sections.append(section)
        _table(self.values, section, create=True)[key] = value
        _table(self.sources, section, create=True)[key] = level

    def _set(self, section: str, key: str, value: Any, level: str, where: str, frozen: bool = False) -> None:
        section, key = self._renamed(section, key, where, frozen)  # every way a value is set: file, text, dict
        full = f"{section}.{key}"
        if section not in self.sections:
            raise UserError(f"Unknown config section [{section}] in {where}{suggest(section, self.sections)}")
        if full in self.sections:
            raise UserError(f"{full} in {where} is a section, [{full}]; set its keys, e.g. {full}."
                            f"{next(iter(self.leaves(full)), 'key')} = ...")
        leaves = self.leaves(section)
        if isinstance(value, dict) and key not in leaves:  # a [section.key] table the schema does not have
            raise UserError(f"Unknown config section [{full}] in {where}{suggest(full, self.sections)}")
        if key not in leaves:
            names = [f"{s}.{k}" for s in self.sections for k in self.leaves(s)]
            raise UserError(f"Unknown config key {full} in {where}{suggest(full, names)}")
        _table(self.values, section)[key] = _check_type(value, leaves[key], full, where)
        _table(self.sources, section)[key] = level

    def merge(self, data: dict, level: str, where: str, define: bool = False, frozen: bool = False) -> None:
        for section, keys in data.items():
            if not isinstance(keys, dict):
                raise UserError(f"{where}: {section!r} must be a [section] table of keys; "
                                "write `section.key = value` pairs under a [section] header.")
            self._merge_section(section, keys, level, where, define, frozen)

    def _merge_section(self, section: str, keys: dict, level, where, define, frozen) -> None:
        known = self.leaves(section) if section in self.sections else {}
        for key, value in keys.items():
            if isinstance(value, dict) and f"{section}.{key}" in self.sections:  # a sub-section: [baseline.ratio]
                self._merge_section(f"{section}.{key}", value, level, where, define, frozen)
            elif define and key not in known:
                self._define(section, key, value, level)
            else:
                self._set(section, key, value, level, where, frozen)

    def _renamed(self, section: str, key: str, where: str, frozen: bool) -> tuple[str, str]:
        new = RENAMED.get(f"{section}.{key}")
        if new is None:
            return section, key
        if not frozen:
            raise UserError(f"Config key {section}.{key} in {where} is now called {new}; rename it.")
        self.notes.append(f"{where}: {section}.{key} read as {new} (renamed)")
        return schema.split(new)

    def check_values(self) -> None:
        """Words against their choices (a registry's once it registered, else the schema's), numbers against the
        schema's ranges."""
        for full, k in schema.every_key():
            value, allowed = self.get(full), schema.choices(full)
            if value is None:
                continue
            where = self.source(*schema.split(full))
            if allowed and value not in allowed:
                raise UserError(f"Config key {full} = {value!r} (from {where}) is not one of "
                                f"{', '.join(allowed)}; pick one of those.")
            if k.range and not k.bounds(value):
                raise UserError(f"Config key {full} = {value!r} (from {where}) is out of range: it must satisfy "
                                f"{k.bounds.rule}.")


def _table(tree: dict, section: str, create: bool = False) -> dict:
    """The table of a dotted section name inside a nested tree."""
    for part in section.split("."):
        tree = tree.setdefault(part, {}) if create else tree[part]
    return tree


def as_overrides(values: dict[str, Any]) -> list[str]:
    """{"section.key": value} as the `section.key=value` arguments of scripts/train.py (how a sweep hands a run's
    values to its process)."""
    return [f"{key}={_toml_value(value)}" for key, value in values.items()]


def parse_overrides(texts: Iterable[str]) -> dict[str, Any]:
    """`section.key=value` texts (a sweep's or study's user-written overrides) as {"section.key": value}."""
    out = {}
    for text in texts:
        section, key, value = parse_override(text)
        out[f"{section}.{key}"] = value
    return out


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(type(value), type(value).__name__)


def _check_type(value: Any, default: Any, full: str, where: str) -> Any:
    """Return `value` converted to the type of `default`, or raise a UserError naming the key."""
    def bad() -> UserError:
        return UserError(f"Config key {full} in {where} must be {_type_name(default)}, got {value!r}; "
                         f"fix its value (e.g. {_toml_value(default)}).")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad()
        if default:
            return [_check_type(v, default[0], full, where) for v in value]
        return value
    if not isinstance(value, type(default)):
        raise bad()
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` with TOML value syntax (the last dotted part is the key: `baseline.ratio.pair=...`);
    a bare word that is not TOML is taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"Cannot read the override {text!r}; write it as section.key=value "
                        "(e.g. optim.epochs=5).")
    name, raw = text.split("=", 1)
    section, key = schema.split(name.strip())
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def resolve(
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    values: dict[str, Any] | None = None,
    function_defaults: dict[str, dict[str, Any]] | None = None,
    default_file: str | Path = DEFAULT_PATH,
    frozen: bool = False,
) -> Config:
    """Merge the levels (the schema's defaults, the default file, the experiment file, command-line overrides:
    `section.key=value` texts, then `values` {"section.key": value}) into one checked Config. The schema is the
    lowest level of the package's default file, and the keys it states are all there are; another default file
    (a sweep's, a study's) states its own keys. `function_defaults`: values below the default file (for another
    default file; callers that still pass coremax.stages.function_defaults() pass empty sections).
    `frozen`: the config file is an experiment's frozen config.toml, whose renamed keys are mapped."""
    cfg = Config()
    package = Path(default_file).resolve() == DEFAULT_PATH.resolve()
    if package:
        for section, keys in schema.SECTIONS.items():
            for key, k in keys.items():
                cfg._define(section, key, copy.deepcopy(k.default), "schema")
    cfg.merge(function_defaults or {}, "function", "the function defaults", define=True)
    cfg.merge(read_toml(default_file), "default-config", str(default_file), define=not package)
    if config_file is not None:
        cfg.merge(read_toml(config_file), "experiment", str(config_file), frozen=frozen)
    for text in overrides:
        section, key, value = parse_override(text)
        cfg._set(section, key, value, "command-line", f"the command-line override {text!r}")
    for full, value in (values or {}).items():
        section, key = schema.split(full)
        cfg._set(section, key, value, "command-line", f"the override {full} = {value!r}")
    cfg.check_values()
    return cfg
