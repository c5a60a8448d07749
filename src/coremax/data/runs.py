"""Several runs of one spot: a core scanned at 10 kV (Al to Fe) and again at 30 kV (Br, Rb, Sr, Zr, Ba), each
run in its own folder (`<core>/Run 1 at 10kV/`, `<core>/Run 2 at 30kV/`). A spot is one depth of one core with a
spectrum of every run; its runs are paired here by depth.

Pairing: per core, a spectrum of the first (lowest-kV) run and one of another run are the same spot when each is
the other's nearest in depth and they lie within the tolerance. Nearest to each other but farther apart than
the tolerance means the runs' positions disagree (a misconfigured run, a wrong section start): refused, since
no pairing could be trusted. A spectrum that is nobody's nearest partner is a spot some run skipped (a crack, a
run stopped early): such spots are dropped, counted and listed; a model of several runs needs every run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.data.elements import fit_elements, spectra_rows
from coremax.data.raw import run_kv
from coremax.errors import UserError

PER_RUN = ("source_file", "live_time_s", "current_ma")  # a later run's own settings, beside the first run's
PAIR_MM = 1.0  # default tolerance: a scanner repeats its positions within a fraction of a millimetre


def kv_tag(kv: float) -> str:
    """A run's name in column names: `10kV`, `30kV`, `12.5kV`."""
    return f"{float(kv):g}kV"


def check_run_folders(meta: pd.DataFrame) -> None:
    """A run folder named for one voltage holding a spectrum whose header says another cannot be placed in
    either run: refused with the file named."""
    folder = meta["run_folder"].map(run_kv).astype(float)
    off = folder.notna() & ~np.isclose(folder.fillna(0), meta["kv"].astype(float))
    if off.any():
        i = np.flatnonzero(off.to_numpy())[0]
        raise UserError(f"{meta['source_file'].iloc[i]}: its run folder says {folder.iloc[i]:g} kV but its header "
                        f"says {float(meta['kv'].iloc[i]):g} kV; move the file into its run's folder or fix the "
                        "header.")


def pair_runs(meta: pd.DataFrame, kvs, tolerance_mm: float = PAIR_MM) -> tuple[np.ndarray, pd.DataFrame]:
    """(rows (spots, runs): the row of `meta` of each run of each spot, in core and depth order of the first
    run; incomplete: one row per dropped spectrum with core, depth_mm, kv, source_file and the runs it lacks)."""
    kvs = [float(k) for k in kvs]
    missing = [k for k in kvs if not np.isclose(meta["kv"].astype(float), k).any()]
    if missing:
        raise UserError(f"No spectrum of a {missing[0]:g} kV run was found, but the data set is to hold the runs "
                        f"{', '.join(map(kv_tag, kvs))}; check --raw and --kv.")
    spots, dropped = [], []  # dropped: (row of meta, the runs its spot lacks)
    for core, group in meta.groupby("core", sort=False):
        by_run = [group[np.isclose(group["kv"].astype(float), k)].sort_values("depth_mm", kind="stable")
                  for k in kvs]
        first, depth = by_run[0], by_run[0]["depth_mm"].to_numpy(float)
        partners, lacks = [first.index.to_numpy()], [[] for _ in range(len(first))]
        for k, run in zip(kvs[1:], by_run[1:]):
            near, mutual = _mutual_nearest(depth, run["depth_mm"].to_numpy(float))
            gap = np.where(mutual, np.abs(depth - run["depth_mm"].to_numpy(float)[near]) if len(run) else 0, 0)
            if (gap > tolerance_mm).any():
                j = int(np.argmax(gap))
                raise UserError(f"Core {core}: the {kv_tag(kvs[0])} spectrum at {depth[j]:g} mm and the "
                                f"{kv_tag(k)} one at {run['depth_mm'].iloc[near[j]]:g} mm are each other's nearest "
                                f"but {gap[j]:g} mm apart, beyond the pairing tolerance of {tolerance_mm:g} mm; "
                                "check the runs' section starts and positions or raise --pair-mm.")
            partners.append(np.where(mutual, run.index.to_numpy()[near] if len(run) else -1, -1))
            for j in np.flatnonzero(~mutual):
                lacks[j].append(kv_tag(k))
            taken = set(partners[-1][mutual].tolist())
            dropped += [(i, kv_tag(kvs[0])) for i in run.index if i not in taken]  # a spectrum of no spot
        complete = np.array([not x for x in lacks], bool)
        spots.append(np.column_stack(partners)[complete])
        dropped += [(i, ", ".join(x)) for i, x in zip(first.index, lacks) if x]
    rows = np.concatenate(spots) if spots else np.zeros((0, len(kvs)), int)
    return rows, _incomplete(meta, dropped)


def _mutual_nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted depths a and b: each a's nearest b, and whether that b's nearest a is it again."""
    if not len(b):
        return np.zeros(len(a), int), np.zeros(len(a), bool)
    near_b, near_a = _nearest(a, b), _nearest(b, a)
    return near_b, near_a[near_b] == np.arange(len(a))


def _nearest(x: np.ndarray, sorted_y: np.ndarray) -> np.ndarray:
    """Index of the nearest value of sorted_y for each x (the lower one on a tie)."""
    hi = np.clip(np.searchsorted(sorted_y, x), 1, len(sorted_y) - 1) if len(sorted_y) > 1 else np.zeros(len(x), int)
    lo = np.maximum(hi - 1, 0)
    return np.where(np.abs(sorted_y[hi] - x) < np.abs(x - sorted_y[lo]), hi, lo)


def _incomplete(meta: pd.DataFrame, dropped: list) -> pd.DataFrame:
    """The dropped spectra (their `row` label in meta, core, depth_mm, kv, source_file where known) with the runs
    their spot lacks."""
    cols = [c for c in ("core", "depth_mm", "kv", "source_file") if c in meta.columns]
    out = meta.loc[[i for i, _ in dropped], cols].reset_index(drop=True) if dropped else pd.DataFrame(columns=cols)
    out.insert(0, "row", [i for i, _ in dropped])
    out["lacks"] = [x for _, x in dropped]
    return out


def tag_columns(table: pd.DataFrame, kv: float) -> pd.DataFrame:
    """One run's element table named for its run: `Ca_area` -> `Ca_30kV_area`, `chi2` -> `chi2_30kV`, so
    that every run's intensities are parts of the log-ratio calibrations side by side."""
    tag = kv_tag(kv)

    def name(c: str) -> str:
        for suffix in ("_area", "_sd"):
            if c.endswith(suffix):
                return f"{c[:-len(suffix)]}_{tag}{suffix}"
        return f"{c}_{tag}"
    return table.rename(columns=name)


def join_runs(meta: pd.DataFrame, counts, rows: np.ndarray, kvs) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The spots of `rows` (pair_runs) as one row each: (metadata: the first run's, with each later run's file,
    live time and current beside it; counts (spots, runs x channels), run after run; the element table, each
    run fitted at its own voltage and its columns tagged)."""
    first = meta.iloc[rows[:, 0]].reset_index(drop=True)
    tables = []
    for r, kv in enumerate(kvs):
        run_meta = meta.iloc[rows[:, r]].reset_index(drop=True)
        if r:
            for col in PER_RUN:
                first[f"{col}_{kv_tag(kv)}"] = run_meta[col].to_numpy()
        tables.append(tag_columns(fit_elements(counts[rows[:, r]], run_meta, float(kv)), kv))
    joined = np.concatenate([counts[rows[:, r]] for r in range(len(kvs))], axis=1)
    return first, joined, pd.concat(tables, axis=1)


def spot_rows(meta: pd.DataFrame, counts, kvs, tolerance_mm: float = PAIR_MM) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Newly read spectra of several runs as the rows a Predictor of those runs takes (the counts as integer
    columns, run after run, and every run's element table), and the spectra dropped for lack of a run."""
    check_run_folders(meta)
    rows, dropped = pair_runs(meta, kvs, tolerance_mm)
    first, joined, table = join_runs(meta, counts, rows, kvs)
    return pd.concat([first, pd.DataFrame(joined, columns=list(range(joined.shape[1]))), table], axis=1), dropped


def scanned_rows(meta: pd.DataFrame, counts, runs, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Newly read spectra as the rows of a model of `runs` (its voltages per spot; empty: one run) named `what`:
    one row per spectrum for a one-run model (a spectrum of another voltage is kept, for its caller to flag),
    one per spot for a model of several runs; and the spectra left out for lack of a run. A folder without any
    run the model reads is refused."""
    have = sorted({float(k) for k in meta["kv"].astype(float).round(6)})
    lacking = [k for k in runs if not np.isclose(have, k).any()]
    if lacking:
        raise UserError(f"{what} reads the {', '.join(map(kv_tag, runs))} runs of each spot, but the folder holds no "
                        f"{kv_tag(lacking[0])} spectra (only {', '.join(map(kv_tag, have))}); scan that run too or use "
                        "a model of the runs it has.")
    if len(runs) > 1:
        return spot_rows(meta, counts, runs)
    return spectra_rows(meta, counts), pd.DataFrame(columns=["row", "core", "depth_mm", "kv", "lacks"])
