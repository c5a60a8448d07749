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

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.bulk import bulk_targets, labelled_mask
from coremax.data.shards import SHARD_ROWS, Shards, channel_stats
from coremax.data.table import read_table
from coremax.data.splits import SPLIT_BY, choose_test_cores, resolve_split_by, split_rows
from coremax.data.raw import read_folder
from coremax.data.rows import check_rows
from coremax.errors import UserError
from coremax.io import (file_sha256, folder_in_place, os_error_hint, os_error_reason, read_toml, save_npy,
                        utc_now, write_toml)
from coremax.paths import check_name, dataset_dir, inside

SPLITS = ("train", "val", "test")
COUNT_DTYPE = np.int32  # counts are whole numbers below 2**31 (the .spe reader refuses anything else)
META_COLUMNS = ["core", "depth_mm", "section", "section_start_mm", "position_mm", "kv", "current_ma",
                "live_time_s", "real_time_s", "filter", "scanner", "total_cps", "spectrum_length", "slit_dc_mm",
                "slit_cc_mm", "date", "source_file"]
SYNTHETIC = Path("datasets") / "external" / "synthetic"
# The embedded data sets built when preprocess gets no --raw: the labelled archive (seed 0, 12 cores) and
# the unlabelled pool of forgotten spectra that pretraining reads beside it (another seed, every head).
EMBEDDED = {"synthetic": {}, "synthetic-pool": {"seed": 1, "cores": 52, "labelled": False}}


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


def default_synthetic(data_root, name: str = "synthetic", **simulator) -> Path:
    """An embedded archive (`name` in EMBEDDED): generate the synthetic raw archive under the data root if it
    is not there (`simulator` overrides simulate_archive's settings, e.g. a small archive in tests)."""
    from coremax.data.simulate import simulate_archive  # deferred: the physics (xraylib, scipy), only to generate

    if name not in EMBEDDED:
        raise UserError(f"Without --raw the data set name must be one of the embedded ones ({', '.join(EMBEDDED)}); "
                        f"got {name!r}. Pass --raw for your own spectra.")
    simulator = {**EMBEDDED[name], **simulator}
    source = Path(data_root) / SYNTHETIC.parent / name
    if not (source / "manifest.toml").is_file():
        if source.exists():
            raise UserError(f"The folder {source} exists but has no manifest.toml, so it is not a complete synthetic "
                            "archive; remove it (or pass --raw) and run again.")
        print(f"generating the synthetic XRF archive in {source} ...", file=sys.stderr)
        simulate_archive(source, **simulator)
    return source


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
                  split_by: str = "auto", test_cores=None, kv: float = 10.0, match_mm: float = 5.0,
                  on_error: str = "fail", overwrite: bool = False, seed: int = 0, spectrum_length: int = 2048,
                  workers: int = 2, shard_rows: int = SHARD_ROWS, command=None, table=None, info_table=None,
                  elements=None) -> Path:
    """Read raw spectra and bulk targets, hold out test cores, split the rest, write the data set atomically.
    `table` and `info_table` (a compiled spectra table and its info table, CSV or Parquet) replace `raw`: the
    same data set, the same checks (coremax.data.table). Every spectrum is fitted into element intensities
    (coremax.data.elements), written beside the counts as `<split>-elements.parquet`. `elements` (a lab's
    element tables, coremax.data.element_tables) replaces the spectra altogether: a data set of element
    intensities only, for the classical calibrations.

    With `raw=None` the synthetic archive under `<data_root>/datasets/external/synthetic/` is used (and
    generated if missing). `bulk` defaults to `bulk.csv` beside the raw folder, test cores to the archive's
    manifest.toml. Returns the data set folder."""
    data_root = Path(data_root)
    _check_options(name, split, split_by, on_error, match_mm)
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
    if element_files:
        from coremax.data.element_tables import read_element_tables  # deferred: only for lab tables
        meta, fitted, skipped = read_element_tables(element_files, kv)
        # here, not in the reader: a data set's cores name the folders and figures of later stages
        check_rows(meta, lambda i: "The element table {}, row {}".format(*meta["source_file"][i].rsplit("#", 1)))
        counts, spectrum_length = np.zeros((len(meta), 0), COUNT_DTYPE), 0
    else:
        meta, counts, skipped = read_table(table, info_table, kv, spectrum_length)[:3] if table is not None \
            else read_folder(raw, kv, spectrum_length, on_error, workers)
    if bulk is not None:
        targets, unmatched, clipped, contents = bulk_targets(meta, bulk, match_mm, META_COLUMNS)
    else:  # an unlabelled pool: no targets at all
        targets, unmatched, clipped, contents = pd.DataFrame(index=meta.index), pd.DataFrame(), 0, []
    test_cores = choose_test_cores(test_cores, manifest, meta, targets, seed, raw)
    if not element_files:  # after the checks of the bulk file and the test cores: the fit takes a while
        from coremax.data.elements import fit_elements  # deferred: xraylib and scipy, only to build a data set
        fitted = fit_elements(counts, meta, kv)
    for col in META_COLUMNS:
        if col not in meta.columns:
            meta[col] = np.nan
    # The counts stay one array, indexed per split when written: never copied into the table or per split.
    table = pd.concat([meta[META_COLUMNS].reset_index(drop=True), targets.reset_index(drop=True)], axis=1)
    fitted = fitted.reset_index(drop=True)
    is_test = table["core"].isin(test_cores).to_numpy()
    rest_rows = np.flatnonzero(~is_test)
    rest = table.iloc[rest_rows].reset_index(drop=True)
    split_by = resolve_split_by(split_by, rest["core"].nunique())
    labelled = labelled_mask(rest, targets.columns) if len(targets.columns) else None
    is_train = split_rows(rest, split, split_by, seed, labelled)
    rows = {"train": rest_rows[is_train], "val": rest_rows[~is_train], "test": np.flatnonzero(is_test)}
    parts = {k: table.iloc[v].reset_index(drop=True) for k, v in rows.items()}
    element_parts = {k: fitted.iloc[v].reset_index(drop=True) for k, v in rows.items()}

    def shown(path) -> str:  # relative to the data root when inside it
        try:
            return Path(path).resolve().relative_to(data_root.resolve()).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    files_sha256 = hashlib.sha256("\n".join(f"{f} {h}" for f, h in
                                            sorted(zip(meta["source_file"], meta["sha256"]))).encode()).hexdigest()
    channel_mean, channel_std = channel_stats(counts, rows["train"])
    info = {
        "name": name, "created_utc": utc_now(),
        "command": " ".join(command) if command else "",
        "source": {"raw": shown(raw), "bulk": shown(bulk) if bulk is not None else "", "files_sha256": files_sha256,
                   "files": int(len(meta)), "synthetic": manifest.get("generator") == "coremax.data.simulate",
                   **({"element_tables": [shown(f) for f in element_files]} if element_files else {})},
        "elements": {"columns": [c for c in fitted.columns], "spectra": not element_files,
                     "fitted": "" if element_files else "coremax.data.elements"},
        "kv": float(kv), "spectrum_length": int(spectrum_length),
        "original_lengths": sorted(int(v) for v in meta["spectrum_length"].unique()),
        "split": {"fraction": split, "by": split_by, "seed": seed},
        "counts": {"files_read": int(len(meta)), "files_skipped": len(skipped), "bulk_unmatched": int(len(unmatched)),
                   "bulk_negative_clipped": clipped,
                   **{f"rows_{k}": int(len(v)) for k, v in parts.items()},
                   **{f"labelled_{k}": int(labelled_mask(v, targets.columns).sum()) for k, v in parts.items()}},
        "cores": {k: sorted(v["core"].unique().tolist()) for k, v in parts.items()},
        "test_cores": test_cores,
        "targets": {t: {k: _stats(v[t]) for k, v in parts.items()} for t in targets.columns},
        # the targets that are contents in wt% (bounded to 0-100 when predicted); others (ratios) are not
        "contents": contents,
        "live_time_s": _stats(meta["live_time_s"]),
        "scanners": sorted(meta["scanner"].unique().tolist()),
        "skipped": skipped,
        # TOML has no null: a target that was not measured is simply left out of the record.
        "unmatched": [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
                      for r in unmatched.to_dict("records")],
        "channel_mean": channel_mean,
        "channel_std": channel_std,
    }
    _write_atomically(target, parts, counts, rows, info, shard_rows, element_parts)
    return target


def _write_atomically(target: Path, parts: dict, counts: np.ndarray, rows: dict, info: dict,
                      shard_rows: int, element_parts: dict) -> None:
    """Every file into a temporary folder renamed into place (folder_in_place): a failed write leaves nothing.
    The system's refusal (a full disk, a file-size limit) is said with the file it stopped at."""
    current = target
    try:
        with folder_in_place(target) as tmp:
            files, shards = {}, {}
            for split, df in parts.items():
                for file, frame in ((f"{split}.parquet", df), (f"{split}-elements.parquet", element_parts[split])):
                    current = target / file
                    frame.to_parquet(tmp / file, index=False)
                    files[file] = file_sha256(tmp / file)
                idx = rows[split]
                shards[split] = []
                for k, start in enumerate(range(0, max(len(idx), 1), shard_rows)):  # an empty split: one empty shard
                    name = f"{split}-{k:05d}.npy"
                    current = target / name
                    save_npy(tmp / name, counts[idx[start:start + shard_rows]].astype(COUNT_DTYPE))
                    files[name] = file_sha256(tmp / name)
                    shards[split].append(name)
            current = target / "info.toml"
            write_toml(tmp / "info.toml", {**info, "shard_rows": shard_rows, "shards": shards, "files": files})
    except OSError as e:
        raise UserError(f"Writing the data set stopped at {current} ({os_error_reason(e)}), so none of it was kept; "
                        f"{os_error_hint(e)}.") from None
