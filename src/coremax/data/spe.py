"""Avaatech `.spe` files: one ASCII spectrum per measured spot.

The header is `$KEY:` lines, each followed by its value on the next line(s); keys are found by name (case
does not matter) because their positions vary: empty keys may be missing, older heads write a short header,
unknown keys are ignored. `$DATA:` is followed by the channel range (`0 2047`) and the counts, any number per
line. CRLF line ends and decimal commas occur. The counts are parsed in one numpy call; only a block that the
fast path refuses (decimal counts, damage) is walked line by line, to read it or to name the bad line.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from coremax.errors import UserError
from coremax.io import atomic_path

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")
_KEY = re.compile(r"^\$([A-Za-z0-9_]+):(.*)$")
_DATA = re.compile(rb"^[ \t]*\$DATA:[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)

# Header key (upper case) -> metadata name.
FLOAT_KEYS = {
    "ACC_VOLT": "kv", "TUBE_CUR": "current_ma", "DEPTH": "header_depth", "X_POSITION": "x_position",
    "Y_POSITION": "y_position", "SLIT_DC": "slit_dc_mm", "SLIT_CC": "slit_cc_mm", "TOTALCPS": "total_cps",
}
TEXT_KEYS = {
    "SPEC_ID": "spec_id", "SPEC_REM": "spec_rem", "CORE_ID": "core_id", "SECTION_ID": "section_id",
    "RUN_ID": "run_id", "REPLICATE_ID": "replicate_id", "USER_ID": "user_id",
}
DATE_FORMATS = ("%m-%d-%Y %H:%M:%S", "%m-%d-%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S",
                "%Y-%m-%d %H:%M:%S", "%m-%d-%Y")


def _numbers(text: str) -> list[float]:
    return [float(t.replace(",", ".")) for t in _NUMBER.findall(text)]


def _date(text: str) -> str:
    text = text.strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            pass
    return text  # an unknown date format is kept as written, not refused


def empty_meta() -> dict:
    meta = {name: np.nan for name in FLOAT_KEYS.values()}
    meta.update({name: "" for name in TEXT_KEYS.values()})
    meta.update(date="", live_time_s=np.nan, real_time_s=np.nan, spectrum_length=0)
    return meta


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _typed(key: str, line_no: int, text: str, name: str) -> dict:
    """The metadata one header value gives ({} for keys that are not read)."""
    if key in TEXT_KEYS:
        return {TEXT_KEYS[key]: text}
    if key == "DATE_MEA":
        return {"date": _date(text)}
    if not text or not (key in FLOAT_KEYS or key == "MEAS_TIM"):
        return {}
    numbers = _numbers(text)
    if not numbers or not all(math.isfinite(v) for v in numbers):  # 1e999 reads as inf
        raise UserError(f"{name}, line {line_no}: cannot read a number for ${key}: from {text[:40]!r} (it must "
                        "be finite); fix or remove that value.")
    if key == "MEAS_TIM":  # live time, then real time
        return {"live_time_s": numbers[0], "real_time_s": numbers[-1]}
    return {FLOAT_KEYS[key]: numbers[0]}


def parse_header(lines: list[str], name: str) -> dict:
    """Typed metadata from the header lines (everything before `$DATA:`). A key given twice must say the same:
    which of two live times or voltages is right cannot be told, so the file is refused, not read as either."""
    values: dict[str, list[tuple[int, list[str]]]] = {}  # KEY -> [(line number of its value, value lines), ...]
    key = None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        m = _KEY.match(s)
        if m:
            key = m[1].upper()
            values.setdefault(key, []).append((i if m[2].strip() else i + 1, [m[2].strip()] if m[2].strip() else []))
        elif s and key is None:
            raise UserError(f"{name}, line {i}: text {s[:40]!r} before the first $KEY: line; the header is damaged.")
        elif s:
            values[key][-1][1].append(s)
    meta = empty_meta()
    for key, given in values.items():
        (line_no, parts), rest = given[0], given[1:]
        first = _typed(key, line_no, " ".join(parts), name)
        for again, more in rest:
            if _typed(key, again, " ".join(more), name) != first:
                raise UserError(f"{name}, line {again}: ${key}: is given twice with different values "
                                f"({' '.join(parts)[:40]!r} at line {line_no}, {' '.join(more)[:40]!r} at line "
                                f"{again}); keep the right one and remove the other.")
        meta.update(first)
    return meta


MAX_COUNT = 2**31 - 1


def _counts_slow(block: bytes, first_line: int, name: str) -> np.ndarray:
    """Line-by-line reading of a block the fast path refused: decimal (comma) counts, or damage to report."""
    out = []
    for j, line in enumerate(_decode(block).splitlines(), first_line):
        for tok in line.split():
            try:
                out.append(float(tok.replace(",", ".")))
            except ValueError:
                raise UserError(f"{name}, line {j}: {tok[:20]!r} is not a count; the data block is damaged.") \
                    from None
    return np.array(out, dtype=np.float64)


def parse_spe(content: bytes | str, name: str = "<text>", spectrum_length: int = 2048) -> tuple[dict, np.ndarray]:
    """Parse the content of an .spe file into (metadata, counts of length `spectrum_length`).

    `meta["spectrum_length"]` keeps the length written in the file."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    m = _DATA.search(content)
    if m is None:
        raise UserError(f"{name}: no $DATA: line; this is not an Avaatech .spe file (or it is truncated).")
    header = _decode(content[:m.start()]).splitlines()
    meta = parse_header(header, name)
    data_line = len(header) + 1  # line number of $DATA:
    rest = content[m.end():].lstrip(b"\r\n")
    range_text, _, block = rest.partition(b"\n")
    rng = range_text.split()
    try:
        first, last = int(rng[0]), int(rng[1])
    except (ValueError, IndexError):
        raise UserError(f"{name}, line {data_line + 1}: expected the channel range (e.g. '0 2047') after $DATA:, "
                        f"got {_decode(range_text).strip()[:40]!r}.") from None
    expected = last - first + 1
    if first < 0 or expected < 1:
        raise UserError(f"{name}, line {data_line + 1}: the channel range {first} {last} after $DATA: holds no "
                        "channels; the file is damaged.")
    if expected < spectrum_length // 4:  # other scanner series write 1024 of 2048; a few counts are damage
        raise UserError(f"{name}, line {data_line + 1}: the spectrum has only {expected} channels, far fewer than "
                        f"the {spectrum_length} expected; the file is damaged or from another instrument.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # older numpy warns instead of raising on unparsed text
            counts = np.fromstring(block, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        counts = None
    if counts is None or len(counts) != expected:
        counts = _counts_slow(block, data_line + 2, name)
    if len(counts) != expected:
        raise UserError(f"{name}, line {data_line + 1}: the channel range says {expected} channels but "
                        f"{len(counts)} counts follow; the file is truncated or damaged.")
    # A count is a whole number a 32-bit detector register can hold; anything else (2.5, 1e39, inf) is damage.
    wrong = (counts < 0) | ~np.isfinite(counts) | (counts > MAX_COUNT) | (counts != np.round(counts))
    if np.any(wrong):
        bad = int(np.flatnonzero(wrong)[0])
        raise UserError(f"{name}: channel {first + bad} holds {counts[bad]}, not a count; the data block is damaged.")
    if first:  # the range says where the counts start: channels below it were not written, so they hold none
        counts = np.concatenate([np.zeros(first, dtype=counts.dtype), counts])
    meta["spectrum_length"] = int(last + 1)
    return meta, fit_length(counts, spectrum_length, name)


def fit_length(counts: np.ndarray, spectrum_length: int, name: str) -> np.ndarray:
    """Zero-pad a shorter spectrum at the high-energy end; refuse a longer one unless its tail is empty."""
    n = len(counts)
    if n < spectrum_length:
        return np.concatenate([counts, np.zeros(spectrum_length - n, dtype=counts.dtype)])
    if n > spectrum_length and np.any(counts[spectrum_length:] != 0):
        raise UserError(f"{name}: {n} channels with counts beyond channel {spectrum_length - 1}; set "
                        f"--spectrum-length {n} (data.spectrum_length) to keep them.")
    return counts[:spectrum_length]


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of one .spe file; a file that cannot be read (a folder named like one, no permission) is a
    read error of that file, which --on-error can skip, not a fault of the data root."""
    path = Path(path)
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not an .spe file; move it out of the run folder or rename it.") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or type(e).__name__}); check the file.") from None


def read_spe(path: str | os.PathLike, spectrum_length: int = 2048) -> tuple[dict, np.ndarray]:
    return parse_spe(read_bytes(path), str(path), spectrum_length)


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
    full = len(c) - len(c) % per_line
    row = " ".join(["%d"] * per_line)
    rows = [row % tuple(r) for r in c[:full].reshape(-1, per_line).tolist()]
    if full < len(c):
        rows.append(" ".join(map(str, c[full:].tolist())))
    return newline.join(out + rows) + newline


def write_spe(path: str | os.PathLike, counts: np.ndarray, meta: dict, per_line: int = 8) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(format_spe(counts, meta, per_line).encode("utf-8"))
    return path
