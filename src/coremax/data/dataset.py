"""Prepared data sets: `<data-root>/datasets/<name>/{train,val,test}.{parquet,npy}` and `info.toml`.

Per split, one row per spectrum: `<split>.parquet` holds the metadata columns (core, depth_mm, scanner
settings, source file) and the targets (every measured column of the bulk file, e.g. CaCO3, TOC, Fe;
NaN = no bulk sample matched); `<split>-00000.npy`, `<split>-00001.npy`, ... the counts, int32 (rows, channels)
in shards of `shard_rows` rows, memory-mapped when read and read together as one array (`Shards`). Neither format can run code when read (a pickle could), so a
data set copied from another lab is safe to open; `info.toml` lists every file with its sha256.
`load_split` joins both into one DataFrame with the channels as integer-labelled columns 0..L-1, which the
notebooks and evaluation read; training reads the arrays directly (`load_arrays`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.bulk import bulk_targets, labelled_mask
from coremax.data.embedded import default_synthetic
from coremax.data.dataset_write import data_set_folder, elements_of, table_of, write_splits
from coremax.data.shards import COUNT_DTYPE, SHARD_ROWS, Shards, channel_stats
from coremax.data.runs import PAIR_MM
from coremax.data.spots import fit_runs, join_source, runs_record, voltages
from coremax.data.staging import META_COLUMNS, fit_staged, in_memory, stage_folder
from coremax.data.table import read_table
from coremax.data.splits import SPLIT_BY, choose_test_cores, resolve_split_by, split_rows
from coremax.data.rows import check_rows
from coremax.errors import UserError
from coremax.io import read_toml, utc_now
from coremax.paths import check_name, dataset_dir, inside

SPLITS = ("train", "val", "test")
STAGING = ".staging"  # inside the temporary folder: what the data set is built from (coremax.data.staging)
def spectrum_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if isinstance(c, (int, np.integer))]


def spectra_array(df: pd.DataFrame) -> np.ndarray:
    return df[spectrum_columns(df)].to_numpy(np.float32)


def shard_files(folder: Path, split: str) -> list[str]:
    """The .npy shards of a split as info.toml lists them; a data set from before shards has one `<split>.npy`."""
    info = folder / "info.toml"
    listed = read_toml(info).get("shards", {}).get(split) if info.is_file() else None
    return list(listed) if listed else [f"{split}.npy"]


def load_arrays(data_root, name: str, split: str) -> tuple[pd.DataFrame, Shards]:
    """(metadata and targets, counts as int32 (rows, channels): the split's shards memory-mapped, read as one
    array; nothing is loaded until rows are taken) of one split."""
    if split not in SPLITS:
        raise UserError(f"Unknown split {split!r}; use train, val or test.")
    folder = dataset_dir(data_root, name)
    table = folder / f"{split}.parquet"
    if (folder / f"{split}.pkl").is_file() and not table.is_file():
        raise UserError(f"The data set {name!r} is in the old pickle format, which can run code when read; rebuild "
                        f"it with its command from {folder / 'info.toml'} plus --overwrite (scripts/preprocess.py).")
    shards = [inside(data_root, folder / f, "data set file") for f in shard_files(folder, split)]
    if not table.is_file() or not all(s.is_file() for s in shards):
        raise UserError(f"The data set {name!r} has no {split}.parquet or is missing a .npy shard of it under "
                        f"{folder}; build it with scripts/preprocess.py (or check --data-root and data.dataset).")
    inside(data_root, table, "data set file")
    current = table
    elements = folder / f"{split}-elements.parquet"
    try:
        meta = pd.read_parquet(table)
        if elements.is_file():  # data sets built before element tables have none
            current = inside(data_root, elements, "data set file")
            meta = pd.concat([meta, pd.read_parquet(elements).set_index(meta.index)], axis=1)
        arrays = []
        for current in shards:
            arrays.append(np.load(current, mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError) as e:
        raise UserError(f"The data set file {current} cannot be read ({type(e).__name__}); it is damaged: rebuild "
                        "the data set with scripts/preprocess.py.") from None
    if any(a.ndim != 2 or a.dtype != COUNT_DTYPE or a.shape[1] != arrays[0].shape[1] for a in arrays) or \
            sum(len(a) for a in arrays) != len(meta):
        raise UserError(f"The data set {name!r}: the .npy shards of {split} do not hold {len(meta)} rows of int32 "
                        f"counts as {table.name} says; the files do not belong together: rebuild the data set.")
    return meta, Shards(arrays)


def load_split(data_root, name: str, split: str) -> pd.DataFrame:
    """One split as a DataFrame: metadata, targets and the channels as integer columns 0..L-1."""
    meta, x = load_arrays(data_root, name, split)
    return pd.concat([meta, pd.DataFrame(np.array(x), columns=list(range(x.shape[1])))], axis=1)  # an in-memory copy


def load_info(data_root, name: str) -> dict:
    path = dataset_dir(data_root, name) / "info.toml"
    if not path.is_file():
        raise UserError(f"No data set named {name!r} under {Path(data_root) / 'datasets'}; build it with "
                        "scripts/preprocess.py (or check --data-root and data.dataset).")
    return read_toml(path)


def has_spectra(info: dict) -> bool:
    """Whether a data set holds spectra (one built from a lab's element tables alone does not)."""
    return bool(info.get("elements", {}).get("spectra", True))


def element_only_message(dataset: str, what: str) -> str:
    return (f"The data set {dataset!r} holds element tables only (no spectra), which {what} needs; use --stage "
            "baseline with baseline.method = ratio, mlc or lrce (or nmf_svr/pls with baseline.features = "
            "\"elements\"), or build a data set from the spectra.")


def _stats(values: pd.Series) -> dict:
    v = values.dropna()
    if v.empty:
        return {"count": 0}
    return {"count": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=0)), "min": float(v.min()),
            "max": float(v.max())}


def _check_options(name: str, split: float, split_by: str, on_error: str, match_mm: float) -> None:
    """Refuse bad options before any file is read."""
    check_name(name, "dataset")
    if name == "external":
        raise UserError("The data set name 'external' is reserved for raw archives (datasets/external/); "
                        "choose another --name.")
    if not 0.0 < split < 1.0:
        raise UserError(f"--split {split} must lie strictly between 0 and 1 (the fraction of rows for training).")
    if split_by not in SPLIT_BY:
        raise UserError(f"--split-by {split_by!r} is not one of {', '.join(SPLIT_BY)}.")
    if on_error not in ("fail", "skip"):
        raise UserError(f"--on-error {on_error!r} is not fail or skip.")
    if not match_mm >= 0:
        raise UserError(f"--match-mm {match_mm} must be a distance of 0 mm or more.")


def build_dataset(data_root, name: str = "synthetic", raw=None, bulk=None, split: float = 0.8,
                  split_by: str = "auto", test_cores=None, kv=10.0, match_mm: float = 5.0,
                  on_error: str = "fail", overwrite: bool = False, seed: int = 0, spectrum_length: int = 2048,
                  workers: int = 2, shard_rows: int = SHARD_ROWS, command=None, table=None, info_table=None,
                  elements=None, pair_mm: float = PAIR_MM) -> Path:
    """Read raw spectra and bulk targets, hold out test cores, split the rest, write the data set atomically.
    `table` and `info_table` (a compiled spectra table and its info table, CSV or Parquet) replace `raw`: the
    same data set, the same checks (coremax.data.table). Every spectrum is fitted into element intensities
    (coremax.data.elements), written beside the counts as `<split>-elements.parquet`. `elements` (a lab's
    element tables, coremax.data.element_tables) replaces the spectra altogether: a data set of element
    intensities only, for the classical calibrations.

    `kv` = several voltages (e.g. "10,30"): each spot's runs paired by depth within `pair_mm`
    (coremax.data.spots), its spectra side by side and every run's element table, spots missing a run dropped.

    A folder of .spe files streams (coremax.data.staging): read, checked and staged on disk batch by batch, so
    memory does not grow with the archive's counts; the files are those of a build in memory, byte for byte.

    With `raw=None` the synthetic archive under `<data_root>/datasets/external/synthetic/` is used (and
    generated if missing). `bulk` defaults to `bulk.csv` beside the raw folder, test cores to the archive's
    manifest.toml. Returns the data set folder."""
    data_root = Path(data_root)
    _check_options(name, split, split_by, on_error, match_mm)
    kvs = voltages(kv)
    if len(kvs) > 1 and (table is not None or elements is not None):
        raise UserError("Several --kv runs per spot are read from a folder of .spe files (--raw) only; give one "
                        "--kv with --table or --elements.")
    kv, runs = kvs[0], None
    if shard_rows < 1:
        raise UserError(f"--shard-rows {shard_rows} must be at least 1 (rows per .npy shard file).")
    target = dataset_dir(data_root, name)
    if target.exists() and not overwrite:
        raise UserError(f"The data set {name!r} already exists at {target}; pass --overwrite to replace it or "
                        "choose another --name.")
    if (table is None) != (info_table is None) or sum(x is not None for x in (table, raw, elements)) > 1:
        raise UserError("Give one of --raw (a folder of .spe files), --table with --info (a compiled spectra table "
                        "and its info table) or --elements (a lab's element tables), not several.")
    element_files = [Path(f) for f in ([elements] if isinstance(elements, (str, Path)) else elements or [])]
    raw = Path(table) if table is not None else element_files[0] if element_files else Path(raw) \
        if raw is not None else default_synthetic(data_root, name) / "raw"
    # An archive may carry bulk.csv and a manifest.toml (default test cores) beside its raw/ folder.
    manifest = read_toml(raw.parent / "manifest.toml") if (raw.parent / "manifest.toml").is_file() else {}
    if bulk is None and (raw.parent / "bulk.csv").is_file():
        bulk = raw.parent / "bulk.csv"
    with data_set_folder(target) as (tmp, where):
        stage, where[0] = tmp / STAGING, target / STAGING  # removed before the folder is renamed into place
        fitted = None
        if element_files:
            from coremax.data.element_tables import read_element_tables  # deferred: only for lab tables
            meta, fitted, skipped = read_element_tables(element_files, kv)
            # here, not in the reader: a data set's cores name the folders and figures of later stages
            check_rows(meta, lambda i: "The element table {}, row {}".format(*meta["source_file"][i].rsplit("#", 1)))
            source = in_memory(meta, np.zeros((len(meta), 0), COUNT_DTYPE), skipped, 0)
        elif table is not None:
            meta, counts, skipped = read_table(table, info_table, kv, spectrum_length)[:3]
            source = in_memory(meta, counts, skipped, spectrum_length)
        else:
            source = stage_folder(raw, kv if len(kvs) == 1 else None, spectrum_length, on_error, workers, stage)
            if len(kvs) > 1:
                staged, (source, pairs, dropped) = source, join_source(source, kvs, pair_mm)
                runs = (staged, pairs, runs_record(kvs, dropped, pair_mm, len(staged.index)))
        index = source.index
        if bulk is not None:
            targets, unmatched, clipped, contents = bulk_targets(index, bulk, match_mm, META_COLUMNS)
        else:  # an unlabelled pool: no targets at all
            targets, unmatched, clipped, contents = pd.DataFrame(index=index.index), pd.DataFrame(), 0, []
        test_cores = choose_test_cores(test_cores, manifest, index, targets, seed, raw)
        if fitted is None:  # after the checks of the bulk file and the test cores: the fit takes a while
            stage.mkdir(exist_ok=True)
            if runs is None:
                fitted, columns = fit_staged(source.counts, index, kv, stage / "elements.f64")
                elements = elements_of(fitted, columns)
            else:
                elements, columns = fit_runs(*runs[:2], kvs, stage)
        else:
            columns, elements = list(fitted.columns), elements_of(fitted.reset_index(drop=True))
        targets = targets.reset_index(drop=True)
        rows, split_by = _split(index, targets, test_cores, split, split_by, seed)
        info = _info(name, command, data_root, raw, bulk, element_files, manifest, source, columns, kv, split,
                     split_by, seed, rows, index, targets, unmatched, clipped, contents, test_cores)
        info.update(runs[2] if runs is not None else {})
        info["channel_mean"], info["channel_std"] = channel_stats(source.counts, rows["train"])
        write_splits(tmp, target, where, rows, {".parquet": table_of(source.meta, targets),
                                                "-elements.parquet": elements}, source.counts, info, shard_rows)
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _split(index: pd.DataFrame, targets: pd.DataFrame, test_cores: list, split: float, split_by: str,
           seed: int) -> tuple[dict, str]:
    """(ascending rows of train, val and test; the resolved split_by) from the small per-row table alone."""
    is_test = index["core"].isin(test_cores).to_numpy()
    rest_rows = np.flatnonzero(~is_test)
    rest = pd.concat([index.iloc[rest_rows].reset_index(drop=True), targets.iloc[rest_rows].reset_index(drop=True)],
                     axis=1)
    split_by = resolve_split_by(split_by, rest["core"].nunique())
    labelled = labelled_mask(rest, targets.columns) if len(targets.columns) else None
    is_train = split_rows(rest, split, split_by, seed, labelled)
    return {"train": rest_rows[is_train], "val": rest_rows[~is_train], "test": np.flatnonzero(is_test)}, split_by


def _info(name, command, data_root: Path, raw, bulk, element_files, manifest, source, columns, kv, split, split_by,
          seed, rows, index, targets, unmatched, clipped, contents, test_cores) -> dict:
    def shown(path) -> str:  # relative to the data root when inside it
        try:
            return Path(path).resolve().relative_to(data_root.resolve()).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    n = len(index)
    part = {k: targets.iloc[v] for k, v in rows.items()}
    return {
        "name": name, "created_utc": utc_now(),
        "command": " ".join(command) if command else "",
        "source": {"raw": shown(raw), "bulk": shown(bulk) if bulk is not None else "",
                   "files_sha256": source.files_sha256(), "files": n,
                   "synthetic": manifest.get("generator") == "coremax.data.simulate",
                   **({"element_tables": [shown(f) for f in element_files]} if element_files else {})},
        "elements": {"columns": list(columns), "spectra": not element_files,
                     "fitted": "" if element_files else "coremax.data.elements"},
        "kv": float(kv), "spectrum_length": int(source.spectrum_length),
        "original_lengths": source.original_lengths,
        "split": {"fraction": split, "by": split_by, "seed": seed},
        "counts": {"files_read": n, "files_skipped": len(source.skipped), "bulk_unmatched": int(len(unmatched)),
                   "bulk_negative_clipped": clipped,
                   **{f"rows_{k}": int(len(v)) for k, v in rows.items()},
                   **{f"labelled_{k}": int(labelled_mask(v, targets.columns).sum()) for k, v in part.items()}},
        "cores": {k: sorted(index["core"].iloc[v].unique().tolist()) for k, v in rows.items()},
        "test_cores": test_cores,
        "targets": {t: {k: _stats(v[t]) for k, v in part.items()} for t in targets.columns},
        # the targets that are contents in wt% (bounded to 0-100 when predicted); others (ratios) are not
        "contents": contents,
        "live_time_s": _stats(index["live_time_s"]),
        "scanners": sorted(index["scanner"].unique().tolist()),
        "skipped": source.skipped,
        # TOML has no null: a target that was not measured is simply left out of the record.
        "unmatched": [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
                      for r in unmatched.to_dict("records")],
    }
