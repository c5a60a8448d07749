"""Element tables, as scanner labs keep their records: one row per spot and run with per element the net peak
area and its error, the fit's chi-square, the throughput and the tube's scatter. Read from a bAxil/WinAxil batch
export, an ITRAX Q-Spec result.txt or CoreMAX's own layout into (metadata, elements) frames with the columns of
the element fit (coremax.data.elements), and written in the bAxil layout. docs/element-tables.md lists the layouts
and column names (see coremax.data.lab_columns for the rules).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.lab_columns import (META, TEXT_FIELDS, Z, baxil_line, element_groups, norm, parse_name,
                                         scanner_labels, spectrum_field)
from coremax.data.raw import read_folder
from coremax.errors import UserError
from coremax.io import atomic_path

# The spectra data sets' metadata columns, as coremax.data.dataset.META_COLUMNS (not imported: dataset reads
# element tables through this module; tests/test_element_tables.py checks the two lists agree).
META_COLUMNS = ["core", "depth_mm", "section", "section_start_mm", "position_mm", "kv", "current_ma",
                "live_time_s", "real_time_s", "filter", "scanner", "total_cps", "spectrum_length", "slit_dc_mm",
                "slit_cc_mm", "date", "source_file"]
LAYOUTS = ("baxil", "coremax")
TAIL = ["coh_area", "coh_sd", "scatter_area", "scatter_sd", "chi2", "throughput_cps"]
LOOKED_FOR = ("`<El> Area`, `<El>-Ka Area`, `<El>_Area` or `<El>_area` (bAxil, WinAxil, CoreMAX), or columns named by "
              "an element symbol alone beside `position (mm)` (ITRAX result.txt)")


def _text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"The element table {str(path)!r} does not exist; pass a CSV, TSV or TXT file.")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Windows exports


def _find_header(lines: list[str], path: Path) -> tuple[int, str]:
    """(index of the column row, separator): the first line that splits into 2+ fields like the line below it
    (the lines above it, as in ITRAX result.txt, are skipped)."""
    for i, line in enumerate(lines[:50]):
        sep = max(("\t", ";", ","), key=line.count)  # ties: tab, then semicolon
        n = line.count(sep)
        if n and (i + 1 == len(lines) or lines[i + 1].count(sep) == n):
            return i, sep
    raise UserError(f"The element table {path} has no row of column names separated by tabs, semicolons or commas "
                    "in its first 50 lines; export it as CSV or TSV.")


def _numbers(df: pd.DataFrame, col: str, path: Path, comma: bool) -> pd.Series:
    raw = df[col].astype(str).str.strip()
    values = pd.to_numeric(raw.str.replace(",", ".", regex=False) if comma else raw, errors="coerce")
    bad = values.isna() & raw.ne("") & raw.str.lower().ne("nan")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"The element table {path}, row {row + 1}, column {col!r}: {raw.iloc[row]!r} is not a "
                        "number; fix the table or re-export it.")
    return values.astype(float)


def _read_one(path: Path, label: str, kv, core) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    lines = _text(path).splitlines()
    start, sep = _find_header(lines, path)
    try:
        df = pd.read_csv(io.StringIO("\n".join(lines[start:])), sep=sep, dtype=str, keep_default_na=False,
                         skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"The element table {path} cannot be read as a table ({str(e).splitlines()[0][:80]}); "
                        "fix or re-export it.") from None
    df.columns = [str(c).strip().strip('"').strip() for c in df.columns]
    df = df.loc[:, [not c.startswith("Unnamed:") or df[c].str.strip().ne("").any() for c in df.columns]]
    comma, norms, lower = sep != ",", [norm(c) for c in df.columns], {c.lower() for c in df.columns}
    itrax = "position (mm)" in lower or {"validity", "mse"} <= lower  # Q-Spec's names
    groups = element_groups(df.columns, plain=itrax)
    if not any(k in Z for k in groups):
        groups = element_groups(df.columns, plain=True)
        itrax = itrax or any(k in Z for k in groups)
    if not any(k in Z for k in groups):
        raise UserError(f"No element columns found in {path}: looked for {LOOKED_FOR}; its columns are "
                        f"{list(df.columns)[:12]}.")
    if not len(df):
        raise UserError(f"The element table {path} has column names but no rows; export it again.")
    fields, ranks = {}, {}
    for c, n in zip(df.columns, norms):
        if n in META and META[n][2] < ranks.get(META[n][0], 99):
            name, factor, ranks[META[n][0]] = META[n]
            fields[name] = (df[c].str.strip().replace("", np.nan) if name in TEXT_FIELDS
                            else _numbers(df, c, path, comma) * factor)
    nan = pd.Series(np.nan, index=df.index)
    get = lambda name: fields.get(name, nan)  # noqa: E731
    parsed = pd.DataFrame(list(get("name").map(lambda t: parse_name(t) if isinstance(t, str) else {})),
                          index=df.index).reindex(columns=["core", "depth_mm", "position_mm", "section",
                                                           "section_start_mm", "kv", "live_time_s", "current_ma",
                                                           "filter", "date", "slit_dc_mm", "slit_cc_mm"])
    sample = get("sample")
    sample_depth = pd.to_numeric(sample.str.replace(",", ".") if comma else sample, errors="coerce") \
        if sample.notna().any() else nan
    numeric_sample = sample.notna().any() and sample_depth[sample.notna()].notna().all()
    meta = pd.DataFrame(index=df.index)
    meta["core"] = get("core").combine_first(nan if numeric_sample else sample).combine_first(parsed["core"])
    meta["core"] = meta["core"].astype(object)
    if core is not None:
        meta["core"] = meta["core"].fillna(str(core))
    if itrax:  # the file's name, less a trailing `result(s)`; result.txt alone: its folder's name
        stem = path.stem.rstrip(" _-")
        base = stem[:-len("results")] if stem.lower().endswith("results") else \
            stem[:-len("result")] if stem.lower().endswith("result") else stem
        meta["core"] = meta["core"].fillna(base.rstrip(" _-") or path.resolve().parent.name)
    position = get("position_mm").combine_first(parsed["position_mm"])
    start_mm = get("section_start_mm").combine_first(parsed["section_start_mm"])
    meta["depth_mm"] = get("depth_mm").combine_first(parsed["depth_mm"]).combine_first(
        sample_depth if numeric_sample else nan).combine_first(position + start_mm.fillna(0.0))
    meta["section"] = get("section").combine_first(parsed["section"]).astype(object).fillna("")
    meta["position_mm"] = position.combine_first(meta["depth_mm"])
    meta["section_start_mm"] = start_mm.combine_first(meta["depth_mm"] - meta["position_mm"])
    for name in ("kv", "live_time_s", "real_time_s", "current_ma", "slit_dc_mm", "slit_cc_mm"):
        meta[name] = get(name).combine_first(parsed[name] if name in parsed else nan)
    if kv is not None:
        meta["kv"] = meta["kv"].fillna(float(kv))
    meta["filter"] = get("filter").combine_first(parsed["filter"]).astype(object).fillna("" if itrax else "No-Filter")
    meta["date"] = get("date").combine_first(parsed["date"]).astype(object).fillna("")
    rows = pd.Series(np.arange(1, len(df) + 1), index=df.index)
    skipped = [{"file": f"{label}#{r}", "reason": "validity 0: Q-Spec could not fit this spot"}
               for r in rows[get("validity").eq(0)]]
    keep = get("validity").ne(0)
    if kv is not None:
        off = keep & meta["kv"].notna() & ~np.isclose(meta["kv"].astype(float), float(kv))
        if off.any():
            kvs = ", ".join(f"{v:g}" for v in sorted(meta["kv"][off].unique()))
            skipped.append({"file": label, "rows": int(off.sum()),
                            "reason": f"{int(off.sum())} rows at {kvs} kV dropped (reading the {float(kv):g} kV run)"})
        keep &= ~off
    for what, column in (("no core name (looked for a core or sample column, a bAxil Spectrum field or an "
                          "Avaatech file name); add a core column" + (" or pass --core" if itrax else ""), "core"),
                         ("no depth (looked for a depth column in mm or cm, an Avaatech file name with section and "
                          "position, a numeric Sample column and a position column); add a depth_mm column",
                          "depth_mm")):
        missing = keep & meta[column].isna()
        if missing.any():
            raise UserError(f"The element table {path}, row {rows[missing].iloc[0]}: {what}.")
    elements = pd.DataFrame(index=df.index)
    live = meta["live_time_s"]
    for key, parts in sorted(groups.items(), key=lambda kv_: kv_[0] not in Z):  # elements first, then scatter
        col = parts.get("area", parts.get("cps"))
        area = _numbers(df, col, path, comma) * (1.0 if "area" in parts else live)
        bad = keep & ~np.isfinite(area)
        if bad.any():
            raise UserError(f"The element table {path}, row {rows[bad].iloc[0]}, column {col!r}: the area is empty or "
                            "not finite; give every spot a number (0 or less for an absent element) or leave the "
                            "element out.")
        sd = (_numbers(df, parts["sd"], path, comma) if "sd" in parts else
              _numbers(df, parts["cps_sd"], path, comma) * live if "cps_sd" in parts and "area" not in parts else nan)
        elements[f"{key}_area"] = area
        elements[f"{key}_sd"] = sd.combine_first(np.sqrt(area.clip(lower=1.0)))  # counting statistics
    per_line = [_numbers(df, p["chi2"], path, comma) for k, p in groups.items() if "chi2" in p]
    elements["chi2"] = get("chi2").combine_first(pd.concat(per_line, axis=1).median(axis=1) if per_line else nan)
    elements["throughput_cps"] = get("throughput_cps")
    elements = elements.reindex(columns=[c for c in elements.columns if c not in TAIL] + TAIL)
    meta["total_cps"] = elements["throughput_cps"]
    meta["scanner"] = get("scanner").combine_first(scanner_labels(meta, "ITRAX" if itrax else "unknown-head"))
    meta["spectrum_length"] = 0
    meta["source_file"] = [f"{label}#{r}" for r in rows]
    meta["sha256"] = [hashlib.sha256("\x1f".join(r).encode()).hexdigest() for r in df.itertuples(index=False)]
    return meta[keep].reindex(columns=META_COLUMNS + ["sha256"]), elements[keep], skipped


def read_element_tables(paths, kv: float | None = None,
                        core: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """(metadata (META_COLUMNS + sha256), elements (`<El>_area`, `<El>_sd`, coh/scatter, chi2, throughput_cps),
    skipped [{file, reason}]) of one or several element tables, rows aligned. `kv`: keep only that run (rows of
    another voltage are dropped and counted in `skipped`; rows that do not say take it). `core`: the core of rows
    whose table names none (ITRAX: else the file name)."""
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not paths:
        raise UserError("No element table given; pass one or more CSV, TSV or TXT files.")
    names = [p.name for p in paths]
    metas, elements, skipped = [], [], []
    for p in paths:
        m, e, s = _read_one(p, p.name if names.count(p.name) == 1 else str(p), kv, core)
        metas.append(m)
        elements.append(e)
        skipped.extend(s)
    meta, el = pd.concat(metas, ignore_index=True), pd.concat(elements, ignore_index=True)
    el = el.reindex(columns=[c for c in el.columns if c not in TAIL] + TAIL)
    if not len(meta):
        raise UserError(f"No rows left in {', '.join(map(str, paths))}" + (f" at {kv:g} kV" if kv is not None else "")
                        + "; check --kv and the skipped list.")
    key = pd.DataFrame({"c": meta["core"], "d": meta["depth_mm"].round(6), "k": meta["kv"].fillna(-1).round(6)})
    dup = key.duplicated(keep=False)
    if dup.any():
        first = key[dup].iloc[0]
        same = meta["source_file"][(key == first).all(axis=1)].tolist()
        raise UserError(f"The element tables list core {first.c} at {first.d:g} mm" +
                        (f", {first.k:g} kV," if first.k >= 0 else "") + f" more than once ({same[0]} and {same[1]}); "
                        "remove the repeated row (several runs per spot at one voltage are not supported).")
    return meta, el, skipped


def write_element_table(meta: pd.DataFrame, elements: pd.DataFrame, path, layout: str = "baxil") -> Path:
    """Write rows of (metadata, elements) as an element table, atomically: `baxil` (bAxil's batch CSV: Spectrum,
    Sample = depth (mm), Live time, Throughput, per line `<El>-Ka Chi2/Area/AreaStd/cps/cpsStd`, Rh scatter as
    `Rh-La-Coh`/`Rh-La-Inc`, or `Rh-Ka-...` at 23.2 kV and more) or `coremax` (the metadata and element columns
    as they are). read_element_tables reads both back to the same numbers."""
    if layout not in LAYOUTS:
        raise UserError(f"Unknown element table layout {layout!r}; use {' or '.join(LAYOUTS)}.")
    m, e = meta.reset_index(drop=True), elements.reset_index(drop=True)
    els = [c[:-5] for c in e.columns if c.endswith("_area") and c[:-5] in Z]
    if len(m) != len(e) or not els or not {"core", "depth_mm"} <= set(m.columns):
        raise UserError(f"Cannot write {path}: it takes a metadata table with core and depth_mm and an element table "
                        "of as many rows with <El>_area columns.")
    if layout == "coremax":
        table = pd.concat([m[[c for c in META_COLUMNS + ["sha256"] if c in m.columns]], e], axis=1)
    else:
        n, live = len(m), pd.to_numeric(m.get("live_time_s", pd.Series(np.nan, index=m.index)), errors="coerce")
        col = lambda c: e[c] if c in e.columns else pd.Series(np.nan, index=e.index)  # noqa: E731
        out = {"Spectrum": [spectrum_field(r) for r in m.to_dict("records")], "Sample": m["depth_mm"],
               "User": [""] * n, "Live time": live, "Real time": m.get("real_time_s", np.nan),
               "Excitation": ["XRay Tube Generator"] * n, "Throughput": col("throughput_cps")}
        rh = "Rh-Ka" if pd.to_numeric(m.get("kv", pd.Series([0.0])), errors="coerce").max() >= 23.2 else "Rh-La"
        names = [(f"{el}-{baxil_line(el)}", el) for el in els] + [(f"{rh}-Coh", "coh"), (f"{rh}-Inc", "scatter")]
        for name, key in names:
            if f"{key}_area" in e.columns:
                area, sd = col(f"{key}_area"), col(f"{key}_sd")
                out.update({f"{name} Chi2": col("chi2"), f"{name} Area": area, f"{name} AreaStd": sd,
                            f"{name} cps": area / live, f"{name} cpsStd": sd / live})
        table = pd.DataFrame(out)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def write_archive_elements(out, kvs=(10.0,), workers: int = 2, spectrum_length: int = 2048) -> tuple[Path, int]:
    """Fit every spectrum of a simulated archive (`<out>/raw`) into element intensities and write
    `<out>/elements.csv` in the bAxil layout: (its path, rows). Nothing is written when the fit fails."""
    try:
        from coremax.data.elements import fit_elements  # deferred: the spectrum fit, only for --elements
    except ImportError as e:
        raise UserError(f"The element fit (coremax.data.elements.fit_elements) cannot be loaded ({e}); the archive "
                        f"at {out} is written, elements.csv is not.") from None
    metas, fits = [], []
    for kv in kvs:
        meta, counts, _ = read_folder(Path(out) / "raw", kv, spectrum_length, "fail", workers)
        try:
            fit = fit_elements(counts, meta, kv)
        except (UserError, ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
            raise UserError(f"The element fit failed on the {kv:g} kV spectra of {out} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); the archive is written, elements.csv is "
                            "not.") from None
        areas = [c for c in getattr(fit, "columns", []) if str(c).endswith("_area") and str(c)[:-5] in Z]
        if not isinstance(fit, pd.DataFrame) or not fit.index.equals(meta.index) or not areas or \
                not np.isfinite(fit[areas].to_numpy(float)).all():
            raise UserError(f"The element fit of the {kv:g} kV spectra of {out} did not return one row of finite "
                            "<El>_area columns per spectrum; the archive is written, elements.csv is not.")
        metas.append(meta)
        fits.append(fit)
    meta, fit = pd.concat(metas, ignore_index=True), pd.concat(fits, ignore_index=True)
    return write_element_table(meta, fit, Path(out) / "elements.csv", "baxil"), len(meta)
