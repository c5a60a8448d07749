"""Compiled spectra tables (as the published data come): one row per spectrum with its channel counts, and an
info table (core, depth, ...) -> the same metadata table and counts array as a folder of .spe files.

The channel columns are found by name (every column named by an integer, optionally after a common prefix such as
`ch` or `channel_`: `0, 1, ...`, `ch0001`, ...) or else by position (every numeric column that is not a metadata
column). The two tables are joined on `source_file` or `spectrum_id` when both have it, else row by row.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.raw import scanner_label
from coremax.data.rows import check_rows
from coremax.errors import UserError

INFO_DEFAULTS = {"section": "", "live_time_s": np.nan, "real_time_s": np.nan, "current_ma": np.nan,
                 "filter": "No-Filter", "spec_rem": "", "slit_cc_mm": np.nan, "slit_dc_mm": np.nan, "date": "",
                 "total_cps": np.nan}
KEYS = ("source_file", "spectrum_id")


def line_of(path, i: int) -> str:
    """Where row i (from 0) of a table is: its line in a CSV (after the header line), its row in Parquet."""
    return f"row {i + 1}" if Path(path).suffix.lower() in (".parquet", ".pq") else f"line {i + 2}"


def read_any(path, what: str) -> pd.DataFrame:
    """A CSV or Parquet table, refused in one sentence when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The {what} {str(path)!r} does not exist; pass a CSV or Parquet file.")
    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as e:  # a damaged or foreign file, whatever the parser says
        raise UserError(f"The {what} {path} cannot be read as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}); fix or re-export it.") from None


def channel_columns(df: pd.DataFrame, info_columns) -> tuple[list, str]:
    """(the channel columns in channel order, "name" or "position")."""
    named = {}
    for c in df.columns:
        m = re.fullmatch(r"\D*?(\d+)", str(c).strip())
        if m and not str(c).strip().lower().startswith(("depth", "section", "position", "spectrum")):
            named[int(m.group(1))] = c
    if len(named) >= 2 and sorted(named) == list(range(min(named), min(named) + len(named))):
        return [named[i] for i in sorted(named)], "name"
    skip = {str(c).lower() for c in info_columns} | set(KEYS) | {"core", "depth_mm"}
    numeric = [c for c in df.columns if str(c).lower() not in skip and pd.api.types.is_numeric_dtype(df[c])]
    return numeric, "position"


def read_table(table, info, kv: float | None = 10.0, spectrum_length: int = 2048) -> tuple[pd.DataFrame, np.ndarray, list, str]:
    """(metadata table, counts (n, spectrum_length) int32, skipped (always empty), how the channels were found)."""
    # Row numbers from 0 in file order: the errors below name the line (a Parquet index of labels is not one).
    spectra, meta = (read_any(f, what).reset_index(drop=True) for f, what in ((table, "spectra table"),
                                                                             (info, "info table")))
    meta.columns = [str(c).strip() for c in meta.columns]
    missing = [c for c in ("core", "depth_mm") if c not in meta.columns]
    if missing:
        raise UserError(f"The info table {info} needs columns core and depth_mm; it has {list(meta.columns)[:12]}.")
    key = next((k for k in KEYS if k in meta.columns and k in spectra.columns), None)
    if key is not None:
        if meta[key].duplicated().any() or spectra[key].duplicated().any():
            raise UserError(f"The column {key} repeats a value in the info or the spectra table; each spectrum needs "
                            "its own.")
        order = pd.Index(spectra[key].astype(str)).get_indexer(meta[key].astype(str))
        if (order < 0).any():
            raise UserError(f"The spectra table {table} has no row for {key} = {meta[key][order < 0].iloc[0]!r} "
                            "of the info table; export both tables from the same spectra.")
        spectra = spectra.iloc[order]  # keeps the spectra table's own row numbers (its index) for errors
    elif len(spectra) != len(meta):
        raise UserError(f"The spectra table {table} has {len(spectra)} rows and the info table {info} {len(meta)}; "
                        "give both a source_file (or spectrum_id) column, or the same rows in the same order.")
    columns, how = channel_columns(spectra, meta.columns)
    if not columns:
        raise UserError(f"No channel columns found in {table}; name them 0, 1, ... (or ch0000, ...) or make them "
                        "the numeric columns.")
    if len(columns) > spectrum_length:
        raise UserError(f"The spectra in {table} have {len(columns)} channels, more than --spectrum-length "
                        f"{spectrum_length}; pass --spectrum-length {len(columns)}.")
    cells = spectra[columns]
    # A text cell ('abc', '1,5') becomes NaN here and is refused below, quoted as written.
    values = cells.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values >= 2**31)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        row = rows[np.argmin(spectra.index[rows])]  # the first bad row of the file, whatever the join's order
        col = int(np.flatnonzero(bad[row])[0])
        cell = cells.iat[row, col]
        cell = "an empty cell" if pd.isna(cell) else repr(cell.item() if hasattr(cell, "item") else cell)
        raise UserError(f"The spectra table {table}, {line_of(table, int(spectra.index[row]))}, column "
                        f"{columns[col]!r}: {cell} is not a count (a whole number from 0 to 2**31); fix that cell or "
                        "re-export the table.")
    counts = np.zeros((len(values), spectrum_length), np.int32)
    counts[:, :len(columns)] = values.astype(np.int32)
    out = meta.copy()
    out["core"] = out["core"].astype(str).str.strip()
    out["depth_mm"] = pd.to_numeric(out["depth_mm"], errors="coerce")
    if not np.isfinite(out["depth_mm"]).all():
        row = int(np.flatnonzero(~np.isfinite(out["depth_mm"].to_numpy()))[0])
        raise UserError(f"The info table {info}, {line_of(info, row)}: depth_mm is not a number; every spectrum "
                        "needs its depth.")
    check_rows(out, lambda i: f"The info table {info}, {line_of(info, i)}")
    for col, default in INFO_DEFAULTS.items():
        if col not in out.columns:
            out[col] = default
    out["kv"] = pd.to_numeric(out["kv"], errors="coerce").fillna(kv) if "kv" in out.columns else kv
    out["section_start_mm"] = out.get("section_start_mm", 0.0)
    out["position_mm"] = out.get("position_mm", out["depth_mm"])
    out["spectrum_length"] = len(columns)
    if "source_file" not in out.columns:
        out["source_file"] = [f"{Path(table).name}#{i + 1}" for i in range(len(out))]
    out["source_file"] = out["source_file"].astype(str)
    out["sha256"] = [hashlib.sha256(row.tobytes()).hexdigest() for row in counts]
    if "scanner" not in out.columns:
        out["scanner"] = scanner_label(out.assign(spec_rem=out["spec_rem"].fillna("").astype(str)))
    if kv is not None:
        off = np.flatnonzero(~np.isclose(out["kv"].astype(float), kv))
        if len(off):
            raise UserError(f"The info table {info}, {line_of(info, int(off[0]))}: kv is {out['kv'].iloc[off[0]]:g}, "
                            f"not the {kv:g} kV of this data set (one data set holds one tube voltage); leave out "
                            "the rows of other runs or choose --kv.")
    return out.reset_index(drop=True), counts, [], how
