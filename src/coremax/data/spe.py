"""Avaatech `.spe` files: one ASCII spectrum per measured spot.

The header is `$KEY:` lines, each followed by its value on the next line(s); keys are found by name because
their positions vary (empty keys may be missing, older heads write a short header). `$DATA:` is followed by
the channel range (`0 2047`) and the counts, any number per line. CRLF line ends and decimal commas occur.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from coremax.errors import UserError
from coremax.io import atomic_path

# Header key -> (metadata name, parser). Values that fail to parse are an error naming the line.
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


def _numbers(text: str) -> list[float]:
    return [float(t.replace(",", ".")) for t in _NUMBER.findall(text)]


def _first(text: str) -> float:
    values = _numbers(text)
    if not values:
        raise ValueError("no number")
    return values[0]


def _date(text: str) -> str:
    text = text.strip()
    for fmt in ("%m-%d-%Y %H:%M:%S", "%m-%d-%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%m-%d-%Y"):
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            pass
    return text  # an unknown date format is kept as written, not refused


def _text(text: str) -> str:
    return text.strip()


FLOAT_KEYS = {
    "ACC_VOLT": "kv", "TUBE_CUR": "current_ma", "Depth": "header_depth", "X_Position": "x_position",
    "Y_Position": "y_position", "Slit_DC": "slit_dc_mm", "Slit_CC": "slit_cc_mm", "TotalCPS": "total_cps",
}
TEXT_KEYS = {
    "SPEC_ID": "spec_id", "SPEC_REM": "spec_rem", "Core_ID": "core_id", "Section_ID": "section_id",
    "Run_ID": "run_id", "Replicate_ID": "replicate_id", "USER_ID": "user_id",
}


def empty_meta() -> dict:
    meta = {name: np.nan for name in FLOAT_KEYS.values()}
    meta.update({name: "" for name in TEXT_KEYS.values()})
    meta.update(date="", live_time_s=np.nan, real_time_s=np.nan, spectrum_length=0, first_channel=0)
    return meta


def parse_spe(text: str, name: str = "<text>", spectrum_length: int = 2048) -> tuple[dict, np.ndarray]:
    """Parse the text of an .spe file into (metadata, counts of length `spectrum_length`)."""
    lines = text.splitlines()
    try:
        data_at = next(i for i, line in enumerate(lines) if line.strip().upper() == "$DATA:")
    except StopIteration:
        raise UserError(f"{name}: no $DATA: line; this is not an Avaatech .spe file.") from None
    meta = empty_meta()
    key, key_line = None, 0
    values: dict[str, tuple[int, list[str]]] = {}
    for i, line in enumerate(lines[:data_at], 1):
        s = line.strip()
        if s.startswith("$") and s.endswith(":"):
            key, key_line = s[1:-1], i
            values[key] = (i, [])
        elif s and key is not None:
            values[key][1].append(s)
        elif s:
            raise UserError(f"{name}, line {i}: text {s[:40]!r} before the first $KEY: line; the header is damaged.")
    for key, (line_no, parts) in values.items():
        text_value = " ".join(parts)
        try:
            if key in FLOAT_KEYS and text_value:
                meta[FLOAT_KEYS[key]] = _first(text_value)
            elif key in TEXT_KEYS:
                meta[TEXT_KEYS[key]] = _text(text_value)
            elif key == "DATE_MEA":
                meta["date"] = _date(text_value)
            elif key == "MEAS_TIM" and text_value:
                times = _numbers(text_value)
                meta["live_time_s"] = times[0]
                meta["real_time_s"] = times[1] if len(times) > 1 else times[0]
        except (ValueError, IndexError):
            raise UserError(f"{name}, line {line_no + 1}: cannot read a number for ${key}: from "
                            f"{text_value[:40]!r}; fix or remove that value.") from None
    counts = _counts(lines, data_at, name)
    meta["spectrum_length"] = len(counts)
    return meta, fit_length(counts, spectrum_length, name)


def _counts(lines: list[str], data_at: int, name: str) -> np.ndarray:
    if data_at + 1 >= len(lines):
        raise UserError(f"{name}, line {data_at + 1}: $DATA: has no channel range after it; the file is truncated.")
    rng = lines[data_at + 1].split()
    try:
        first, last = int(rng[0]), int(rng[1])
    except (ValueError, IndexError):
        raise UserError(f"{name}, line {data_at + 2}: expected the channel range (e.g. '0 2047') after $DATA:, "
                        f"got {lines[data_at + 1][:40]!r}.") from None
    expected = last - first + 1
    block = "\n".join(lines[data_at + 2:]).replace(",", ".")
    tokens = block.split()
    try:
        counts = np.array(tokens, dtype=np.float64)
    except ValueError:
        for j, line in enumerate(lines[data_at + 2:], data_at + 3):
            for tok in line.replace(",", ".").split():
                try:
                    float(tok)
                except ValueError:
                    raise UserError(f"{name}, line {j}: {tok[:20]!r} is not a count; the data block is damaged.") \
                        from None
        raise
    if len(counts) != expected:
        raise UserError(f"{name}, line {data_at + 2}: the channel range says {expected} channels but "
                        f"{len(counts)} counts follow; the file is truncated or damaged.")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise UserError(f"{name}: negative or non-finite counts in the data block; the file is damaged.")
    return counts


def fit_length(counts: np.ndarray, spectrum_length: int, name: str) -> np.ndarray:
    """Zero-pad a shorter spectrum at the high-energy end; refuse a longer one unless its tail is empty."""
    n = len(counts)
    if n < spectrum_length:
        return np.concatenate([counts, np.zeros(spectrum_length - n)])
    if n > spectrum_length:
        if np.any(counts[spectrum_length:] != 0):
            raise UserError(f"{name}: {n} channels with counts beyond channel {spectrum_length - 1}; set "
                            f"--spectrum-length {n} (data.spectrum_length) to keep them.")
        return counts[:spectrum_length]
    return counts


def read_spe(path: str | os.PathLike, spectrum_length: int = 2048) -> tuple[dict, np.ndarray]:
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}); check the file.") from None
    return parse_spe(text, str(path), spectrum_length)


def format_spe(counts: np.ndarray, meta: dict, per_line: int = 8, newline: str = "\r\n") -> str:
    """The text of an .spe file in the full header layout (what the scanner software writes)."""
    c = np.asarray(counts).round().astype(np.int64)

    def num(key, fmt="{:g}"):
        v = meta.get(key, np.nan)
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)

    date = meta.get("date") or "01-01-2000 00:00:00"
    if "T" in date:
        date = datetime.fromisoformat(date).strftime("%m-%d-%Y %H:%M:%S")
    header = [
        ("SPEC_ID", meta.get("spec_id", "")), ("SPEC_REM", meta.get("spec_rem", "")), ("DATE_MEA", date),
        ("MEAS_TIM", f"{num('live_time_s')} {num('real_time_s')}".strip()), ("ACC_VOLT", num("kv")),
        ("TUBE_CUR", num("current_ma")), ("Core_ID", meta.get("core_id", "")),
        ("Section_ID", meta.get("section_id", "")), ("Depth", num("header_depth")), ("Run_ID", meta.get("run_id", "")),
        ("X_Position", num("x_position")), ("Y_Position", num("y_position")),
        ("Replicate_ID", meta.get("replicate_id", "")), ("Slit_DC", num("slit_dc_mm")),
        ("Slit_CC", num("slit_cc_mm")), ("TotalCPS", num("total_cps", "{:.0f}")), ("USER_ID", meta.get("user_id", "")),
    ]
    out = []
    for key, value in header:
        if value != "":  # empty keys are left out, as the scanner does
            out += [f"${key}:", str(value)]
    out += ["$DATA:", f"0 {len(c) - 1}"]
    rows = [" ".join(map(str, c[i:i + per_line])) for i in range(0, len(c), per_line)]
    return newline.join(out + rows) + newline


def write_spe(path: str | os.PathLike, counts: np.ndarray, meta: dict, per_line: int = 8) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(format_spe(counts, meta, per_line).encode("latin-1"))
    return path
