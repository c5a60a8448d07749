"""The config hierarchy, and the only place its precedence rule lives.

Lowest to highest: keyword defaults of the functions that consume a section -> default-config.toml ->
the experiment file (--config) -> command-line overrides (`section.key=value`). Every value remembers the
level it came from, so `--print-config` can say why a value is what it is.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from coremax.errors import UserError
from coremax.io import read_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

DEFAULT_PATH = Path(__file__).with_name("default-config.toml")

# Keys whose value is one of a few words: checked when the config is resolved, before anything runs.
CHOICES = {
    "experiment.stage": ("pretrain", "finetune", "baseline"),
    "data.transform": ("instance_normalize", "clr", "sqrt", "log", "normalize", "none"),
    "model.size": ("tiny", "small", "base", "large"),
    "model.loss_on": ("masked", "all"),
    "optim.lr_scaling": ("none", "linear"),
    "runtime.amp": ("auto", "bf16", "fp16", "off"),
    "finetune.mode": ("full", "linear_probe", "ridge", "lp_ft"),
    "baseline.method": ("nmf_svr", "pls"),
}

# Numeric keys and the range they must lie in: checked with the choices, before any folder exists.
RANGES = {
    "experiment.seed": ("0 <= x < 2**32", lambda x: 0 <= x < 2**32),  # what NumPy and torch seeding both take
    "data.max_memory_gb": ("x > 0", lambda x: x > 0),
    "data.spectrum_length": ("x >= 1", lambda x: x >= 1),
    "data.max_labels": ("x >= 0", lambda x: x >= 0),
    "data.test_labels": ("x >= 0", lambda x: x >= 0),
    "data.augment_min_fraction": ("0 < x <= 1", lambda x: 0 < x <= 1),
    "data.jitter_gain": ("0 <= x <= 0.1", lambda x: 0 <= x <= 0.1),
    "data.jitter_offset": ("0 <= x <= 20 channels", lambda x: 0 <= x <= 20),
    "data.jitter_width": ("0 <= x <= 20 channels", lambda x: 0 <= x <= 20),
    "data.jitter_absorption": ("0 <= x <= 5", lambda x: 0 <= x <= 5),
    "model.patch_size": ("x >= 1", lambda x: x >= 1),
    "model.head_layers": ("x >= 1", lambda x: x >= 1),
    "model.mask_ratio": ("0 < x < 1", lambda x: 0 < x < 1),
    "model.drop_path": ("0 <= x < 1", lambda x: 0 <= x < 1),
    "optim.batch_size": ("x >= 1", lambda x: x >= 1),
    "optim.epochs": ("x >= 1", lambda x: x >= 1),
    "optim.blr": ("x > 0", lambda x: x > 0),
    "optim.min_lr": ("x >= 0", lambda x: x >= 0),
    "optim.warmup_epochs": ("x >= 0", lambda x: x >= 0),
    "optim.weight_decay": ("x >= 0", lambda x: x >= 0),
    "optim.clip_grad": ("x >= 0", lambda x: x >= 0),
    "optim.layer_decay": ("0 < x <= 1", lambda x: 0 < x <= 1),
    "optim.accum_iter": ("x >= 1", lambda x: x >= 1),
    "runtime.num_workers": ("x >= 0", lambda x: x >= 0),
    "runtime.save_every": ("x >= 0", lambda x: x >= 0),
    "runtime.log_interval_s": ("x >= 0", lambda x: x >= 0),
    "baseline.n_components": ("x >= 1", lambda x: x >= 1),
    "eval.interval": ("0 < x < 1", lambda x: 0 < x < 1),
}


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

    def _set(self, section: str, key: str, value: Any, level: str, where: str) -> None:
        if section not in self.values:
            raise UserError(f"Unknown config section [{section}] in {where}{_suggest(section, self.values)}")
        if key not in self.values[section]:
            full = f"{section}.{key}"
            names = [f"{s}.{k}" for s, keys in self.values.items() for k in keys]
            raise UserError(f"Unknown config key {full} in {where}{_suggest(full, names)}")
        value = _check_type(value, self.values[section][key], f"{section}.{key}", where)
        self.values[section][key] = value
        self.sources[section][key] = level

    def merge(self, data: dict, level: str, where: str, define: bool = False) -> None:
        for section, keys in data.items():
            if not isinstance(keys, dict):
                raise UserError(f"{where}: {section!r} must be a [section] table of keys; "
                                "write `section.key = value` pairs under a [section] header.")
            for key, value in keys.items():
                known = key in self.values.get(section, {})
                if define and not known:
                    self._define(section, key, value, level)
                else:
                    self._set(section, key, value, level, where)

    def check_choices(self) -> None:
        for full, allowed in CHOICES.items():
            section, key = full.split(".")
            value = self.values.get(section, {}).get(key)
            if value is not None and value not in allowed:
                where = self.sources[section][key]
                raise UserError(f"Config key {full} = {value!r} (from {where}) is not one of "
                                f"{', '.join(allowed)}; pick one of those.")
        for full, (rule, ok) in RANGES.items():
            section, key = full.split(".")
            value = self.values.get(section, {}).get(key)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise UserError(f"Config key {full} = {value!r} (from {self.sources[section][key]}) is out of range: "
                                f"it must satisfy {rule}.")


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).strip()[len("v = "):]


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
    function_defaults: dict[str, dict[str, Any]] | None = None,
    default_file: str | Path = DEFAULT_PATH,
) -> Config:
    """Merge the four levels (function defaults, the default file, the experiment file, command-line
    overrides) into one checked Config."""
    cfg = Config()
    for section, keys in (function_defaults or {}).items():
        for key, value in keys.items():
            cfg._define(section, key, value, "function")
    # The default file defines the schema: it may add keys no function declares, never drop any.
    cfg.merge(read_toml(default_file), "default-config", str(default_file), define=True)
    if config_file is not None:
        cfg.merge(read_toml(config_file), "experiment", str(config_file))
    for text in overrides:
        section, key, value = parse_override(text)
        cfg._set(section, key, value, "command-line", f"the command-line override {text!r}")
    cfg.check_choices()
    return cfg
