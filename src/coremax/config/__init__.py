"""The config hierarchy, and the only place its precedence rule lives.

Lowest to highest: keyword defaults of the functions that consume a section -> default-config.toml ->
the experiment file (--config) -> command-line overrides (`section.key=value`). Every value remembers the
level it came from, so `--print-config` can say why a value is what it is.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from coremax.config.ranges import RANGES, in_range
from coremax.errors import UserError
from coremax.io import read_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

DEFAULT_PATH = Path(__file__).with_name("default-config.toml")

# Keys whose value is one of a few words: checked when the config is resolved, before anything runs. Transforms,
# model sizes and baselines register where they are defined (registries() reads them).
CHOICES = {
    "experiment.stage": ("pretrain", "finetune", "baseline"),
    "model.loss_on": ("masked", "all"),
    "model.latent": ("plain", "vsc"),
    "optim.lr_scaling": ("none", "linear"),
    "runtime.amp": ("auto", "bf16", "fp16", "off"),
    "data.target_transform": ("none", "sqrt"),
    "baseline.features": ("spectra", "elements"),
}


# Keys that were renamed: a frozen config of an older experiment is read with the new name (a note says so);
# anywhere else the old name is refused with the new one.
RENAMED = {"runtime.num_workers": "runtime.threads"}


def registries() -> dict[str, tuple]:
    """The keys whose words are a registry: each transform, model size and baseline registers itself."""
    from coremax.baselines import METHODS  # deferred: registries import torch and scikit-learn, needed only here
    from coremax.data.transforms import TRANSFORMS  # deferred: as above
    from coremax.models import SIZES  # deferred: as above
    from coremax.modes import MODES  # deferred: as above

    return {"data.transform": tuple(TRANSFORMS), "model.size": tuple(SIZES), "baseline.method": tuple(METHODS),
            "finetune.mode": tuple(MODES)}

def signature_defaults(func: Callable) -> dict[str, Any]:
    """Defaults of the keyword-only parameters of `func`: the lowest level of the hierarchy for the section
    it consumes (its other parameters are not config)."""
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


class Config:
    """Resolved values by section and key, with the level each value came from."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []  # what was mapped on the way (renamed keys of a frozen config)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def __contains__(self, section: str) -> bool:
        return section in self.values

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.values)

    def source(self, section: str, key: str) -> str:
        return self.sources[section][key]

    def describe(self) -> str:
        """The resolved config as TOML, each value followed by the level it came from."""
        import tomli_w

        lines = []
        for section, keys in self.values.items():
            lines.append(f"[{section}]")
            width = max((len(f"{k} = {_toml_value(v)}") for k, v in keys.items()), default=0)
            for key, value in keys.items():
                text = f"{key} = {_toml_value(value)}"
                lines.append(f"{text:<{width}}  # {self.sources[section][key]}")
            lines.append("")
        # Fail loudly if a value could not be written back as TOML (the frozen config must round-trip).
        tomli_w.dumps(self.values)
        return "\n".join(lines)

    # -- merging -------------------------------------------------------------------------------------
    def _define(self, section: str, key: str, value: Any, level: str) -> None:
        self.values.setdefault(section, {})[key] = value
        self.sources.setdefault(section, {})[key] = level

    def _set(self, section: str, key: str, value: Any, level: str, where: str, frozen: bool = False) -> None:
        section, key = self._renamed(section, key, where, frozen)  # every way a value is set: file, text, dict
        if section not in self.values:
            raise UserError(f"Unknown config section [{section}] in {where}{_suggest(section, self.values)}")
        if key not in self.values[section]:
            full = f"{section}.{key}"
            names = [f"{s}.{k}" for s, keys in self.values.items() for k in keys]
            raise UserError(f"Unknown config key {full} in {where}{_suggest(full, names)}")
        value = _check_type(value, self.values[section][key], f"{section}.{key}", where)
        self.values[section][key] = value
        self.sources[section][key] = level

    def merge(self, data: dict, level: str, where: str, define: bool = False, frozen: bool = False) -> None:
        for section, keys in data.items():
            if not isinstance(keys, dict):
                raise UserError(f"{where}: {section!r} must be a [section] table of keys; "
                                "write `section.key = value` pairs under a [section] header.")
            for key, value in keys.items():
                known = key in self.values.get(section, {})
                if define and not known:
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
        return tuple(new.split("."))

    def check_values(self) -> None:
        """Words against their choices, numbers against RANGES."""
        for full, allowed in {**CHOICES, **registries()}.items():
            section, key = full.split(".")
            value = self.values.get(section, {}).get(key)
            if value is not None and value not in allowed:
                where = self.sources[section][key]
                raise UserError(f"Config key {full} = {value!r} (from {where}) is not one of "
                                f"{', '.join(allowed)}; pick one of those.")
        for full, (rule, ok) in RANGES.items():
            section, key = full.split(".")
            value = self.values.get(section, {}).get(key)
            if value is not None and not in_range(full, value):
                raise UserError(f"Config key {full} = {value!r} (from {self.sources[section][key]}) is out of range: "
                                f"it must satisfy {rule}.")


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).strip()[len("v = "):]


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


def reference_table(default_file: str | Path = DEFAULT_PATH) -> str:
    """The README's table of every key, made from default-config.toml (its value as written and its comment), so
    a key is written once with its comment: `python -c "import coremax.config as c; print(c.reference_table())"`
    prints it, and tests/test_config.py fails when the README's copy differs."""
    rows, section = ["| key | default | meaning |", "|---|---|---|"], ""
    for line in Path(default_file).read_text().splitlines():
        head = re.match(r"^\[(\w+)\]", line)
        entry = re.match(r"^(\w+) = (.*?)\s+# (.*)$", line)
        if head:
            section = head.group(1)
        elif entry:
            key, value, comment = entry.groups()
            rows.append(f"| `{section}.{key}` | `{value}` | {comment.replace('|', '/')} |")
    return "\n".join(rows)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else "; check the spelling against default-config.toml."


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
    """`section.key=value` with TOML value syntax; a bare word that is not TOML is taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"Cannot read the override {text!r}; write it as section.key=value "
                        "(e.g. optim.epochs=5).")
    name, raw = text.split("=", 1)
    section, _, key = name.strip().partition(".")
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
    """Merge the four levels (function defaults, the default file, the experiment file, command-line
    overrides: `section.key=value` texts, then `values` {"section.key": value}) into one checked Config.
    `frozen`: the config file is an experiment's frozen config.toml, whose renamed keys are mapped."""
    cfg = Config()
    for section, keys in (function_defaults or {}).items():
        for key, value in keys.items():
            cfg._define(section, key, value, "function")
    # The default file defines the schema: it may add keys no function declares, never drop any.
    cfg.merge(read_toml(default_file), "default-config", str(default_file), define=True)
    if config_file is not None:
        cfg.merge(read_toml(config_file), "experiment", str(config_file), frozen=frozen)
    for text in overrides:
        section, key, value = parse_override(text)
        cfg._set(section, key, value, "command-line", f"the command-line override {text!r}")
    for full, value in (values or {}).items():
        section, _, key = full.partition(".")
        cfg._set(section, key, value, "command-line", f"the override {full} = {value!r}")
    cfg.check_values()
    return cfg
