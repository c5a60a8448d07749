"""Bulk lab measurements (CaCO3, TOC wt% and any other measured column) joined to the spectrum of the same core nearest in depth."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.rows import check_rows
from coremax.errors import UserError

TARGETS = ("CaCO3", "TOC")  # the default targets, recognised whatever their case or unit suffix
_DEPTH = ("depth_mm", "mid_depth_mm")
_UNIT = re.compile(r"[\s_]*(\(.*\)|\[.*\]|%|wt%|wt)$", flags=re.IGNORECASE)


def _canonical(column: str) -> tuple[str, bool]:
    """`CaCO3%`, `Fe (wt%)`, `toc_wt%`, `grain size (um)` -> (the target name, whether it is a content in wt%)."""
    raw = column.strip()
    base = _UNIT.sub("", raw).strip(" _%") or raw
    for t in TARGETS:
        if base.lower() == t.lower():
            return t, True
    return base, "%" in raw[len(base):]


def _numbers(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column.astype(str).str.replace(",", ".", regex=False).replace({"nan": None, "": None}),
                         errors="coerce")


def labelled_mask(df: pd.DataFrame, targets) -> np.ndarray:
    """The one answer to "is this row labelled?": at least one of `targets` is measured (not NaN)."""
    return df[list(targets)].notna().any(axis=1).to_numpy() if len(targets) else np.zeros(len(df), bool)


def read_bulk(path: str | os.PathLike) -> pd.DataFrame:
    """Columns core, depth_mm and every numeric column as a target (NaN = not measured). Contents in wt% (CaCO3,
    TOC and columns whose header says %) are checked to lie in 0-100; `attrs["contents"]` names them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The bulk file {str(path)!r} does not exist; pass --bulk with a CSV of core, depth_mm, "
                        "CaCO3, TOC (and any other measured column).")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise UserError(f"The bulk file {path} cannot be read as CSV ({str(e).splitlines()[0]}); fix it.") from None
    rename, contents, header = {}, [], [str(c) for c in df.columns]
    for c in df.columns:
        c_str = str(c)
        if c_str.strip().lower() in _DEPTH:
            rename[c] = "depth_mm"
        elif c_str.strip().lower() == "core":
            rename[c] = "core"
        else:
            name, content = _canonical(c_str)
            filled = df[c].notna() & (df[c].astype(str).str.strip() != "")
            # A text column (sample ids, comments) is not a target; a numeric one with a typo is refused below.
            if name not in TARGETS and (not filled.any() or _numbers(df[c])[filled].notna().mean() < 0.5):
                continue
            if name in rename.values():
                raise UserError(f"The bulk file {path} has two columns for {name!r}; keep one.")
            rename[c] = name
            contents += [name] if content else []
    df = df[list(rename)].rename(columns=rename)
    missing = [c for c in ("core", "depth_mm") if c not in df.columns]
    targets = [c for c in df.columns if c not in ("core", "depth_mm")]
    if missing or not targets:
        raise UserError(f"The bulk file {path} needs columns core, depth_mm (or mid_depth_mm) and at least one "
                        f"measured column (CaCO3, TOC, ...); it has {header}.")
    out = df[["core", "depth_mm", *targets]].copy()
    out["core"] = out["core"].astype(str).str.strip()
    for c in ["depth_mm", *targets]:
        values = _numbers(out[c])
        bad = values.isna() & out[c].notna() & (out[c].astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise UserError(f"The bulk file {path}, line {row}: {c} = {out[c].iloc[row - 2]!r} is not a number; "
                            "fix it or leave the cell empty.")
        # inf passes to_numeric; a content above 100 wt% is a typo or a unit slip, never a measurement.
        absurd = np.isinf(values) | ((values > 100) if c in contents else False)
        if absurd.any():
            row = int(np.flatnonzero(absurd.to_numpy())[0]) + 2
            raise UserError(f"The bulk file {path}, line {row}: {c} = {out[c].iloc[row - 2]!r} is not a possible "
                            f"{'content in wt% (0-100)' if c in contents else 'value'}; fix it or leave the cell empty.")
        out[c] = values
    if out["depth_mm"].isna().any():
        row = int(np.flatnonzero(out["depth_mm"].isna().to_numpy())[0]) + 2
        raise UserError(f"The bulk file {path}, line {row}: depth_mm is empty; every sample needs its depth.")
    check_rows(out, lambda i: f"The bulk file {path}, line {i + 2}")
    # The same sample listed twice: identical rows are merged, conflicting ones refused by name.
    same = out.duplicated(["core", "depth_mm"], keep=False)
    if same.any():
        for (core, depth), group in out[same].groupby(["core", "depth_mm"]):
            if len(group[targets].drop_duplicates()) > 1:
                lines = ", ".join(str(i + 2) for i in group.index[:3])
                raise UserError(f"The bulk file {path} lists core {core} at {depth:g} mm twice with different values "
                                f"(lines {lines}); keep the right one.")
        out = out.drop_duplicates(["core", "depth_mm", *targets])
    out.attrs["contents"] = contents
    return out


def match_bulk(meta: pd.DataFrame, bulk: pd.DataFrame, tolerance_mm: float = 5.0):
    """Join each bulk sample to the spectrum of its core nearest in composite depth within the tolerance.

    Returns (targets per spectrum row (NaN where none), unmatched samples, number of negative values clipped).
    When two samples pick the same spectrum, the nearer one wins and the other is reported unmatched."""
    targets = [c for c in bulk.columns if c not in ("core", "depth_mm")]
    # Slightly negative contents (below detection) become 0; other targets (isotopes, ...) may be negative.
    contents = [c for c in bulk.attrs.get("contents", TARGETS) if c in targets]
    # A row without any value measures nothing: it must not take a spectrum from a real sample nearby.
    bulk = bulk[labelled_mask(bulk, targets)].copy()
    out = pd.DataFrame(np.nan, index=meta.index, columns=targets)
    clipped = int((bulk[contents] < 0).sum().sum())
    bulk[contents] = bulk[contents].clip(lower=0)
    unmatched, best = [], {}
    for core, samples in bulk.groupby("core", sort=False):
        rows = meta.index[meta["core"] == core]
        if len(rows) == 0:
            unmatched += [{**s, "reason": "no spectra of this core"} for s in samples.to_dict("records")]
            continue
        depths = meta.loc[rows, "depth_mm"].to_numpy()
        order = np.argsort(depths)
        d_sorted = depths[order]
        for s in samples.to_dict("records"):
            i = np.searchsorted(d_sorted, s["depth_mm"])
            cand = [j for j in (i - 1, i) if 0 <= j < len(d_sorted)]
            j = min(cand, key=lambda k: abs(d_sorted[k] - s["depth_mm"]))
            dist = abs(d_sorted[j] - s["depth_mm"])
            if dist > tolerance_mm:
                unmatched.append({**s, "reason": f"nearest spectrum {dist:.1f} mm away"})
                continue
            row = rows[order[j]]
            if row in best and best[row][0] <= dist:
                unmatched.append({**s, "reason": "another sample is nearer to the same spectrum"})
                continue
            if row in best:
                unmatched.append({**best[row][1], "reason": "another sample is nearer to the same spectrum"})
            best[row] = (dist, s)
    for row, (_, s) in best.items():
        for t in targets:
            out.at[row, t] = s[t]
    return out, pd.DataFrame(unmatched, columns=["core", "depth_mm", *targets, "reason"]), clipped


def bulk_targets(meta: pd.DataFrame, path, tolerance_mm: float, reserved=()):
    """read_bulk and match_bulk for a data set: (targets per spectrum row, unmatched samples, values clipped, the
    targets that are contents in wt%). Refused: a column named like a spectrum metadata column (`reserved`), and a
    bulk file none of whose samples matched a spectrum, whatever the split: a labelled data set without one label
    means wrong core names, depths in another unit or too tight a --match-mm, never an unlabelled pool."""
    measured = read_bulk(path)
    clash = [c for c in measured.columns if c in reserved and c not in ("core", "depth_mm")]
    if clash:
        raise UserError(f"The bulk file {path} has a column {clash[0]!r}, which is the name of a spectrum "
                        "metadata column; rename it in the bulk file.")
    targets, unmatched, clipped = match_bulk(meta, measured, tolerance_mm)
    if not labelled_mask(targets, targets.columns).any():
        if unmatched.empty:
            raise UserError(f"The bulk file {path} has no measured value in any row; fill it in or leave out --bulk.")
        first = unmatched.iloc[0]
        raise UserError(f"None of the {len(unmatched)} samples of the bulk file {path} matched a spectrum within "
                        f"--match-mm {tolerance_mm:g} mm (e.g. core {first['core']} at {first['depth_mm']:g} mm: "
                        f"{first['reason']}); check that its core names and depths in mm are those of the spectra, "
                        "or raise --match-mm.")
    return targets, unmatched, clipped, [c for c in measured.attrs.get("contents", TARGETS) if c in targets.columns]
