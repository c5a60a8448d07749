"""A data set of several runs per spot, built from the staged spectra of every run (coremax.data.staging): the
runs paired into spots (coremax.data.runs), and a Source whose rows are spots, its counts each spot's runs side
by side, (spots, runs x channels), read from the staged files on demand (nothing joined in memory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.runs import PAIR_MM, PER_RUN, check_run_folders, kv_tag, pair_runs, tag_columns
from coremax.data.staging import Source, fit_staged
from coremax.errors import UserError

LISTED = 100  # dropped spectra named in info.toml (all are counted)


def voltages(kv) -> list[float]:
    """--kv as a list: `10`, `10.0`, `"10,30"`, [10, 30] (ascending, each once)."""
    try:
        values = [float(k) for k in (str(kv).split(",") if isinstance(kv, (str, int, float)) else kv)]
    except ValueError:
        raise UserError(f"--kv {kv!r} must be a tube voltage or comma-separated voltages, e.g. 10 or 10,30.") from None
    if not values or len(set(values)) != len(values) or not all(v > 0 for v in values):
        raise UserError(f"--kv {kv!r} must list each run's tube voltage once, each above 0 kV, e.g. 10,30.")
    return sorted(values)


class RunCounts:
    """Each spot's counts, its runs side by side: one RunRows view per run, joined."""

    def __init__(self, counts, rows: np.ndarray):
        self.runs = [RunRows(counts, rows[:, r]) for r in range(rows.shape[1])]
        self.shape = (len(rows), counts.shape[1] * rows.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        return np.concatenate([run[idx] for run in self.runs], axis=1)


class RunRows:
    """The rows `pick` of counts, indexed from 0 (one run's spectra of every spot)."""

    def __init__(self, counts, pick: np.ndarray):
        self.counts, self.pick, self.shape = counts, pick, (len(pick), counts.shape[1])

    def __getitem__(self, idx) -> np.ndarray:
        return self.counts[self.pick[idx]]


def _take(meta, rows: np.ndarray) -> pd.DataFrame:
    """meta(rows) for rows in any order (the staged tables are read in ascending rows)."""
    order = np.argsort(rows, kind="stable")
    frame = meta(rows[order])
    return frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def join_source(source: Source, kvs: list[float], tolerance_mm: float = PAIR_MM, block: int = 65_536
                ) -> tuple[Source, np.ndarray, pd.DataFrame]:
    """(the spots as a Source, rows (spots, runs) of `source`, the spectra dropped for lack of a run), after
    refusing a run folder whose voltage its files' headers contradict. Spectra of runs not in `kvs` join no
    spot and are not listed."""
    n = len(source.index)
    for start in range(0, n, block):  # the folder names are read a block at a time
        part = source.meta(np.arange(start, min(start + block, n)))
        check_run_folders(part.assign(run_folder=part["source_file"].map(lambda f: Path(f).parent.name)))
    index = source.index.assign(kv=source.index["kv"].astype(float))
    rows, dropped = pair_runs(index, kvs, tolerance_mm)
    if not len(rows):
        raise UserError(f"No spot has a spectrum of every run ({', '.join(map(kv_tag, kvs))}); check --kv and "
                        "that each core was scanned at every voltage.")
    if len(dropped):
        dropped["source_file"] = _take(source.meta, dropped.pop("row").to_numpy())["source_file"].to_numpy()

    def meta(spots: np.ndarray) -> pd.DataFrame:
        first = _take(source.meta, rows[spots, 0])
        for r, kv in enumerate(kvs[1:], start=1):
            later = _take(source.meta, rows[spots, r])
            for col in PER_RUN:
                first[f"{col}_{kv_tag(kv)}"] = later[col].to_numpy()
        return first

    spots = replace(source, index=source.index.iloc[rows[:, 0]].reset_index(drop=True),
                    counts=RunCounts(source.counts, rows), meta=meta)
    return spots, rows, dropped


def fit_runs(source: Source, rows: np.ndarray, kvs: list[float], stage: Path):
    """Every run's element table at its own voltage (staging.fit_staged on that run's rows), its columns named
    for the run (`Ca_30kV_area`); returns (frame_of(spot rows), columns), like dataset_write.elements_of."""
    fitted = []
    for r, kv in enumerate(kvs):
        one = RunRows(source.counts, rows[:, r])
        table, columns = fit_staged(one, source.index.iloc[rows[:, r]].reset_index(drop=True), kv,
                                    stage / f"elements-{kv_tag(kv)}.f64")
        fitted.append((table, list(tag_columns(pd.DataFrame(columns=columns), kv).columns)))
    columns = [c for _, cols in fitted for c in cols]
    return (lambda spots: pd.concat([pd.DataFrame(t[spots], columns=cols, copy=False) for t, cols in fitted],
                                    axis=1)), columns


def runs_record(kvs: list[float], dropped: pd.DataFrame, tolerance_mm: float, read: int) -> dict:
    """What info.toml says of the runs: their voltages, the pairing tolerance, the spectra read (of every run)
    and those dropped for lack of a run (counted, the first LISTED named)."""
    listed = dropped.head(LISTED).assign(depth_mm=lambda d: d["depth_mm"].astype(float),
                                         kv=lambda d: d["kv"].astype(float))
    return {"runs": [float(k) for k in kvs], "pair_mm": float(tolerance_mm), "spectra_read": int(read),
            "runs_dropped": {"spectra": int(len(dropped)), "first": listed.to_dict("records")}}
