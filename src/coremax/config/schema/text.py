"""The two texts written from the schema: default-config.toml (the hierarchy's "default-config" level, read back
like any config file) and docs/reference/config.md. Tests fail when a committed copy differs from these."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from coremax.config.schema.base import Key
from coremax.config.schema.sections import HEADER, SECTIONS

DEFAULT_FILE = Path(__file__).parents[1] / "default-config.toml"
REFERENCE_FILE = Path(__file__).parents[4] / "docs" / "reference" / "config.md"  # in a source checkout
COMMENT_AT = 32  # the column a key's comment starts at (the longest default line fills it)


def inline(value: Any) -> str:
    """A value as one line of TOML: lists and tables inline, small floats as 1.5e-4 rather than 0.00015."""
    import tomli_w

    if isinstance(value, float) and value and math.isfinite(value) and abs(value) < 1e-3:
        digits = next(n for n in range(17) if float(f"{value:.{n}e}") == value)  # the shortest exact one
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{tomli_w.dumps({k: 0})[:-5]} = {inline(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value})[4:-1]


def default_text() -> str:
    """default-config.toml: its header, then each section's keys at their defaults, each with its meaning."""
    lines = [HEADER]
    for section, keys in SECTIONS.items():
        lines += ["", f"[{section}]"]
        lines += [f"{f'{name} = {inline(k.default)}':<{COMMENT_AT}} # {k.meaning}" for name, k in keys.items()]
    return "\n".join(lines) + "\n"


def _words(full: str, k: Key) -> str:
    """The reference's range / choices column."""
    if k.range:
        return k.bounds.rule
    words = ", ".join(k.choices)
    if k.registry:
        return f"registered in `{k.registry}`" + (f" ({words})" if words else "")
    return words


def reference_page() -> str:
    """docs/reference/config.md: every key with its default, type, range or words, and meaning, by section."""
    lines = ["# Config reference", "",
             "<!-- Written by `python -m coremax.config.schema --write` from src/coremax/config/schema/sections.py; "
             "tests/test_config.py fails when this page differs. -->", "",
             "Every key of an experiment's config. Lowest to highest, a value comes from: the schema's default "
             "(below) < `src/coremax/config/default-config.toml` (the same values, written from the schema) < the "
             "experiment file (`--config`) < command-line overrides (`section.key=value`; "
             "`baseline.ratio.pair=\"Ca/Ti\"` for a sub-section's key). `scripts/train.py --print-config` shows the "
             "resolved values and the level each came from. Unknown keys, wrong types, values out of range and "
             "words not among the choices are refused before anything runs."]
    for section, keys in SECTIONS.items():
        lines += ["", f"## [{section}]", "", "| key | default | type | range / choices | meaning |",
                  "|---|---|---|---|---|"]
        for name, k in keys.items():
            full = f"{section}.{name}"
            text = [re.sub(r"<(?=[A-Za-z/])", "&lt;", c) for c in (k.type_name, _words(full, k), k.meaning)]
            cells = [f"`{full}`", f"`{inline(k.default)}`", *text]  # "<data-root>" is no HTML tag
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(default_file: Path = DEFAULT_FILE, reference_file: Path = REFERENCE_FILE) -> list[Path]:
    """Write both texts (after a change to the schema); returns the files written."""
    reference_file.parent.mkdir(parents=True, exist_ok=True)
    default_file.write_text(default_text())
    reference_file.write_text(reference_page())
    return [default_file, reference_file]
