"""A raw archive folder `<raw>/<core>/<run folder>/*.spe` -> one metadata table and one counts array."""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.spe import parse_spe, read_bytes
from coremax.errors import UserError
from coremax.paths import check_name

# <core>_<section start> <pos>mm  <live>s  <kV>kV <current>uA <filter>.spe
FILE_NAME = re.compile(
    r"^(?P<core>.+?)_(?P<section>\d{3,6})\s+(?P<pos>\d+(?:[.,]\d+)?)mm\s+(?P<live>\d+(?:[.,]\d+)?)s\s+"
    r"(?P<kv>\d+(?:[.,]\d+)?)kV\s+(?P<current>\d+(?:[.,]\d+)?)uA\s*(?P<filter>.*?)\.spe$", re.IGNORECASE)
RUN_FOLDER = re.compile(r"(\d+(?:[.,]\d+)?)\s*kV", re.IGNORECASE)


def _f(text: str) -> float:
    return float(text.replace(",", "."))


def parse_file_name(name: str) -> dict:
    """Core, section, depth and run settings from an Avaatech file name. The section start is in cm when it
    has 3-4 digits and in mm when it has 5-6; composite depth = section start (mm) + position (mm)."""
    m = FILE_NAME.match(name)
    if not m:
        raise UserError(f"{name}: the file name does not follow '<core>_<section> <pos>mm  <live>s  <kV>kV "
                        "<current>uA <filter>.spe'; rename it or leave it out.")
    # The core names the folders and figures of every later stage: a name they would refuse is refused here.
    check_name(m["core"], "core", name)
    section = m["section"]
    start_mm = int(section) * (10 if len(section) <= 4 else 1)
    pos = _f(m["pos"])
    return {"core": m["core"], "section": section, "section_start_mm": float(start_mm), "position_mm": pos,
            "depth_mm": start_mm + pos, "name_live_time_s": _f(m["live"]), "name_kv": _f(m["kv"]),
            "name_current_ua": _f(m["current"]), "filter": m["filter"].strip() or "No-Filter"}


def run_kv(folder_name: str) -> float | None:
    m = RUN_FOLDER.search(folder_name)
    return _f(m.group(1)) if m else None


def _spe_files(folder: Path) -> list[Path]:
    """The .spe entries of one folder in name order (a folder named like one is a read error of that file)."""
    try:
        return [f for f in sorted(folder.iterdir()) if f.suffix.lower() == ".spe"]
    except OSError:  # an unreadable folder holds nothing to read, as glob would have it
        return []


def _folders(parent: Path) -> list[Path]:
    try:
        return [p for p in sorted(parent.iterdir()) if p.is_dir()]
    except OSError:
        return []


def find_runs(raw: str | os.PathLike, kv: float | None) -> tuple[Path, list[Path]]:
    """(root, run folders): the run folders at `kv` (all when None) in path order, and the folder the files'
    names are relative to. `raw` holds <core>/<run>/*.spe, or is one core's folder of <run>/*.spe (its parent is
    then the root), or one run folder. A run folder without a kV in its name is read too; the kV in each file's
    header then decides (see read_folder). Only folders are listed here, never the files: an archive of 10^7
    files is walked one run folder at a time (run_files)."""
    raw = Path(raw)
    if not raw.is_dir():
        raise UserError(f"The raw folder {str(raw)!r} does not exist; pass --raw with a folder of <core>/<run>/*.spe.")
    runs = [run for core in _folders(raw) for run in _folders(core)]
    if not any(_spe_files(run) for run in runs):  # stops at the first run folder with a file
        if any(_spe_files(run) for run in _folders(raw)):  # --raw <raw>/<core>: a single core's run folders
            raw, runs = raw.parent, _folders(raw)
        elif _spe_files(raw):  # --raw <raw>/<core>/<run>: a single run folder
            raw, runs = raw.parent.parent, [raw]
    folder_kv = [run_kv(run.name) for run in runs]
    return raw, [run for run, v in zip(runs, folder_kv) if kv is None or v is None or abs(v - kv) < 1e-6]


def run_files(runs: list[Path]):
    """The .spe files of the run folders, one after another: sorted(<root>/*/*/*) file by file."""
    for run in runs:
        yield from _spe_files(run)


def find_files(raw: str | os.PathLike, kv: float | None) -> tuple[Path, list[Path]]:
    """(root, files): every selected .spe file (find_runs), sorted for a stable order."""
    root, runs = find_runs(raw, kv)
    return root, list(run_files(runs))


# (header key, metadata name, file-name field, factor from header to name units, unit, what)
_NAMED = (("MEAS_TIM", "live_time_s", "name_live_time_s", 1.0, "s", "live time"),
          ("ACC_VOLT", "kv", "name_kv", 1.0, "kV", "tube voltage"),
          ("TUBE_CUR", "current_ma", "name_current_ua", 1000.0, "uA", "tube current"))


def check_header(meta: dict, info: dict, name: str) -> None:
    """The scanner writes the run's settings into both the header and the file name; when they disagree one of
    them is wrong and nobody can tell which, so the file is a read error (1 % allows the name's rounding)."""
    for key, field, named, factor, unit, what in _NAMED:
        header = meta.get(field, np.nan) * factor
        if np.isfinite(header) and not np.isclose(header, info[named], rtol=0.01, atol=0.0):
            raise UserError(f"{name}: the header says a {what} of {header:g} {unit} (${key}:) but the file name "
                            f"says {info[named]:g} {unit}; fix the one that is wrong or leave the file out.")


def _read_chunk(args) -> list:
    files, root, spectrum_length, on_error = args
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        try:
            info = parse_file_name(f.name)
            data = read_bytes(f)
            meta, counts = parse_spe(data, str(f), spectrum_length)
            check_header(meta, info, str(f))
            meta["sha256"] = hashlib.sha256(data).hexdigest()
            out.append((rel, {**info, **meta}, counts.astype(np.int32), None))  # whole counts below 2**31, exact
        except UserError as e:
            if on_error == "fail":
                raise
            out.append((rel, None, None, str(e)))
    return out


BATCH_FILES = 4096  # files per batch that preprocessing reads, checks and stages at once: ~32 MiB of counts


def read_batches(root: Path, files, spectrum_length: int = 2048, on_error: str = "fail", workers: int = 2,
                 batch_files: int | None = None):
    """Read `files` (an iterable, consumed lazily) `batch_files` at a time: yields (metadata table of the batch's
    readable files, their counts (rows, L) int32, skipped files) per batch (BATCH_FILES), rows in file order, with the kV, live
    time and current completed from the file name and the scanner label set (a batch of only skipped files: no
    table, no counts). Files are parsed in a process pool in chunks (both cores), each whole file at once; the pool
    starts with the first batch of over 200 files."""
    pool, files, batch_files = None, iter(files), batch_files or BATCH_FILES
    try:
        while batch := list(islice(files, batch_files)):
            if pool is None and workers > 1 and len(batch) > 200:
                pool = ProcessPoolExecutor(workers)
            chunk = max(1, min(500, len(batch) // (4 * max(workers, 1)) + 1))
            jobs = [(batch[i:i + chunk], root, spectrum_length, on_error) for i in range(0, len(batch), chunk)]
            yield _collect(pool.map(_read_chunk, jobs) if pool else map(_read_chunk, jobs), len(batch), spectrum_length)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _collect(parts, n: int, spectrum_length: int) -> tuple[pd.DataFrame | None, np.ndarray, list[dict]]:
    """One batch's chunks as they arrive: spectra straight into one array (rows of skipped files are never
    touched, so they take no memory), metadata as one table."""
    counts = np.empty((n, spectrum_length), np.int32)
    rows, skipped = [], []
    for part in parts:
        for rel, meta, c, error in part:
            if error is not None:
                skipped.append({"file": rel, "reason": error})
                continue
            counts[len(rows)] = c
            rows.append({**meta, "source_file": rel, "run_folder": Path(rel).parent.name})
    if not rows:
        return None, counts[:0], skipped
    meta = pd.DataFrame(rows)
    meta["kv"] = meta["kv"].fillna(meta["name_kv"])
    meta["live_time_s"] = meta["live_time_s"].fillna(meta["name_live_time_s"])
    meta["current_ma"] = meta["current_ma"].fillna(meta["name_current_ua"] / 1000)
    meta["scanner"] = scanner_label(meta)
    return meta, counts[:len(rows)], skipped


def no_files(root: Path, kv: float | None) -> UserError:
    return UserError(f"No .spe files{'' if kv is None else f' of a {kv:g} kV run'} under {root}; check --raw "
                     "and --kv (run folders are named like 'Run 1 at  10kV').")


def none_read(root: Path, files: int) -> UserError:
    return UserError(f"None of the {files} .spe files under {root} could be read; see the skipped list.")


def read_folder(raw: str | os.PathLike, kv: float | None = 10.0, spectrum_length: int = 2048,
                on_error: str = "fail", workers: int = 2) -> tuple[pd.DataFrame, np.ndarray, list[dict]]:
    """Read every selected .spe file into (metadata table, counts (n, L) int32, exact, skipped files).

    `kv` selects the run folders of that tube voltage and refuses files whose header says another one; None
    reads every run. Batches (read_batches) go straight into one array: no second copy of the counts.
    Preprocessing streams the same batches to disk instead (coremax.data.staging)."""
    if on_error not in ("fail", "skip"):
        raise UserError(f"--on-error {on_error!r} is not fail or skip.")
    root, files = find_files(raw, kv)
    if not files:
        raise no_files(root, kv)
    counts = np.empty((len(files), spectrum_length), np.int32)
    metas, skipped, n = [], [], 0
    for meta, c, s in read_batches(root, files, spectrum_length, on_error, workers):
        skipped += s
        if meta is not None:
            counts[n:n + len(c)] = c
            metas.append(meta)
            n += len(c)
    if not metas:
        raise none_read(root, len(files))
    meta = pd.concat(metas, ignore_index=True)
    if kv is not None:  # None reads every run (predict.py flags spectra of another kV instead)
        check_kv(meta, kv, root)
    return meta, counts[:n], skipped


def check_kv(meta: pd.DataFrame, kv: float, root: Path) -> None:
    """One data set holds one tube voltage: refuse files whose header (or name) says another kV."""
    off = meta[(meta["kv"] - kv).abs() > 1e-6]
    if len(off):
        kvs = ", ".join(f"{v:g}" for v in sorted({kv, *off["kv"].round(3)}))
        raise UserError(f"The selected files under {root} mix {kvs} kV (e.g. {off['source_file'].iloc[0]!r} says "
                        f"{off['kv'].iloc[0]:g} kV); one data set holds one kV: sort the files into their run "
                        "folders or choose --kv.")


def scanner_label(meta: pd.DataFrame) -> pd.Series:
    """The scanner setting of each row (head, current, live time, filter, slit): a real domain shift."""
    head = meta["spec_rem"].replace("", "unknown-head")
    return (head + " | " + meta["current_ma"].map("{:g} mA".format) + " | " + meta["live_time_s"].map("{:g} s".format)
            + " | " + meta["filter"] + " | slit " + meta["slit_cc_mm"].map("{:g}".format))
