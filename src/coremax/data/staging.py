"""Preprocessing in bounded memory: what a data set is built from waits on disk, in the temporary folder the data
set is written in, never whole in memory (docs/design-notes.md, "Preprocessing streams").

A folder of .spe files is read batch by batch (coremax.data.raw.read_batches); each batch is checked, its counts
appended to one staged file of int32 rows (RowFile) and its metadata rows to an Arrow file (FrameFiles), and only
the few columns that choosing the test cores, the split and the element fit's run groups need stay in memory
(`Source.index`). The element fit then reads each run group's rows back (fit_staged) and the splits are written
from the staged files in blocks (coremax.data.dataset_write). Everything staged is removed before the data set's
folder is renamed into place, and with it on any failure.
"""

from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from coremax.data.raw import check_kv, find_runs, no_files, none_read, read_batches, run_files
from coremax.data.shards import COUNT_DTYPE, SHARD_ROWS

META_COLUMNS = ["core", "depth_mm", "section", "section_start_mm", "position_mm", "kv", "current_ma",
                "live_time_s", "real_time_s", "filter", "scanner", "total_cps", "spectrum_length", "slit_dc_mm",
                "slit_cc_mm", "date", "source_file"]
# What stays in memory per row: the test cores, the split and the element fit's run groups read these. The
# repeated texts are categories (a code per row); the core stays text, the split's keys are made from it.
INDEX_COLUMNS = ["core", "depth_mm", "section", "scanner", "kv", "live_time_s"]
CATEGORIES = ("section", "scanner")


class RowFile:
    """A 2-D array of fixed width and dtype on disk, in files of SHARD_ROWS rows (no file larger than a shard, so
    a file-size limit that the data set passes, staging passes too): rows appended in order (or, made `rows`
    long, put at given rows), read back by row index. Each read or put maps a file for that call only, so the
    process holds no more of it than the rows asked for."""

    def __init__(self, path, width: int, dtype, rows: int = 0):
        self.path, self.width, self.dtype, self.rows = Path(path), int(width), np.dtype(dtype), 0
        self.segment = SHARD_ROWS
        for start in range(0, rows, self.segment):  # preallocated: reads as zeros until put
            with open(self._file(start // self.segment), "wb") as f:
                f.truncate(min(self.segment, rows - start) * self.width * self.dtype.itemsize)
        self.rows = int(rows)

    def _file(self, k: int) -> Path:
        return self.path.with_name(f"{self.path.name}-{k:05d}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.width

    def __len__(self) -> int:
        return self.rows

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, self.dtype)
        if array.ndim != 2 or array.shape[1] != self.width:
            raise ValueError(f"{self.path}: rows of width {self.width} expected, got {array.shape}")
        done = 0
        while done < len(array):
            k, at = divmod(self.rows, self.segment)
            part = array[done:done + self.segment - at]
            with open(self._file(k), "ab") as f:
                f.write(part.reshape(-1).view(np.uint8))
            self.rows, done = self.rows + len(part), done + len(part)

    def _mapped(self, rows: np.ndarray, mode: str):
        """(file's map, the positions in `rows` it holds, their rows in it) for each file holding any."""
        segment = rows // self.segment
        for k in np.unique(segment):
            at = np.flatnonzero(segment == k)
            n = min(self.segment, self.rows - k * self.segment)
            yield np.memmap(self._file(int(k)), self.dtype, mode, shape=(n, self.width)), at, rows[at] - k * self.segment

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(self.rows)[rows] if isinstance(rows, slice) else np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.width), self.dtype)
        if len(rows) and self.width:
            for mapped, at, local in self._mapped(rows, "r"):
                out[at] = mapped[local]
                del mapped
        return out

    def put(self, rows: np.ndarray, values: np.ndarray) -> None:
        if len(rows) and self.width:
            for mapped, at, local in self._mapped(np.asarray(rows, np.int64), "r+"):
                mapped[local] = values[at]
                mapped.flush()
                del mapped


class FrameFiles:
    """Tables appended batch by batch, one Arrow (Feather) file each, read back by row index in the dtypes they
    were written with."""

    def __init__(self, folder: Path):
        self.folder, self.offsets = Path(folder), [0]
        self.folder.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def append(self, frame: pd.DataFrame) -> None:
        frame.reset_index(drop=True).to_feather(self.folder / f"{len(self):06d}.arrow")
        self.offsets.append(self.offsets[-1] + len(frame))

    def batch(self, k: int, columns=None) -> pd.DataFrame:
        return pd.read_feather(self.folder / f"{k:06d}.arrow", columns=columns)

    def take(self, rows: np.ndarray, columns=None) -> pd.DataFrame:
        """The given rows (ascending), reading only the batches that hold any of them."""
        rows = np.asarray(rows, np.int64)
        bounds = np.searchsorted(rows, self.offsets)
        parts = [self.batch(k, columns).iloc[rows[a:b] - self.offsets[k]]
                 for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
        return pd.concat(parts or [self.batch(0, columns).iloc[:0]], ignore_index=True)

    def files_sha256(self) -> str:
        """files_sha256 of every staged row's (source_file, sha256), as if sorted whole. The rows of one folder
        (`<core>/<run>/`) come one after another, in name order: sorting the folders is sorting the rows, so the
        hash reads one folder's rows at a time."""
        blocks: dict[str, list] = {}  # folder -> [(batch, start, stop), ...]
        for k in range(len(self)):
            parts = self.batch(k, ["source_file"])["source_file"].str.rpartition("/")
            folder = (parts[0] + parts[1]).to_numpy(object)  # the name up to its last "/"
            edges = [0, *np.flatnonzero(folder[1:] != folder[:-1]) + 1, len(folder)]
            for a, b in zip(edges[:-1], edges[1:]):
                blocks.setdefault(folder[a], []).append((k, a, b))
        keys = sorted(blocks)
        if any(b.startswith(a) for a, b in zip(keys[:-1], keys[1:])):  # nested folders: their rows interleave
            both = pd.concat([self.batch(k, ["source_file", "sha256"]) for k in range(len(self))])
            return files_sha256(both["source_file"], both["sha256"])
        h, cached, first = hashlib.sha256(), (None, None), True
        for key in keys:
            lines = []
            for k, a, b in blocks[key]:
                if cached[0] != k:
                    cached = (k, self.batch(k, ["source_file", "sha256"]))
                part = cached[1].iloc[a:b]
                lines += zip(part["source_file"], part["sha256"])
            h.update(("" if first else "\n").encode() + "\n".join(f"{f} {s}" for f, s in sorted(lines)).encode())
            first = False
        return h.hexdigest()


def files_sha256(source_file, sha256) -> str:
    """One hash of every file read: its name and content hash, sorted by name."""
    return hashlib.sha256("\n".join(f"{f} {h}" for f, h in sorted(zip(source_file, sha256))).encode()).hexdigest()


@dataclass
class Source:
    """The spectra a data set is built from: `index` (INDEX_COLUMNS or more, in memory), `counts` (rows,
    channels) (an array or a RowFile), `meta(rows)` (META_COLUMNS of the given ascending rows) and the hash of
    the files read."""
    index: pd.DataFrame
    counts: object
    meta: Callable[[np.ndarray], pd.DataFrame]
    files_sha256: Callable[[], str]
    skipped: list
    spectrum_length: int
    original_lengths: list


def in_memory(meta: pd.DataFrame, counts: np.ndarray, skipped: list, spectrum_length: int) -> Source:
    """A source read whole (a compiled table, a lab's element tables): the same interface, nothing staged."""
    for col in META_COLUMNS:
        if col not in meta.columns:
            meta[col] = np.nan
    table = meta[META_COLUMNS].reset_index(drop=True)
    return Source(meta.reset_index(drop=True), counts, lambda rows: table.iloc[rows].reset_index(drop=True),
                  lambda: files_sha256(meta["source_file"], meta["sha256"]), skipped, spectrum_length,
                  sorted(int(v) for v in meta["spectrum_length"].unique()))


def stage_folder(raw, kv: float | None, spectrum_length: int, on_error: str, workers: int, folder: Path) -> Source:
    """Read a raw folder of .spe files batch by batch into `folder`: counts, metadata rows, the index."""
    root, runs = find_runs(raw, kv)
    folder.mkdir(parents=True, exist_ok=True)
    counts, frames = RowFile(folder / "counts.i32", spectrum_length, COUNT_DTYPE), FrameFiles(folder / "meta")
    index, skipped, lengths, found = [], [], set(), [0]

    def counted():
        for f in run_files(runs):
            found[0] += 1
            yield f

    with closing(read_batches(root, counted(), spectrum_length, on_error, workers)) as batches:
        for meta, c, s in batches:
            skipped += s
            if meta is None:
                continue
            if kv is not None:  # one batch at a time: a file of another kV stops the reading at its batch
                check_kv(meta, kv, root)
            counts.append(c)
            frames.append(meta[[*META_COLUMNS, "sha256"]])
            index.append(meta[INDEX_COLUMNS])
            lengths.update(int(v) for v in meta["spectrum_length"].unique())
    if not found[0]:
        raise no_files(root, kv)
    if not index:
        raise none_read(root, found[0])
    columns = {c: union_categoricals([pd.Categorical(p[c]) for p in index]) if c in CATEGORIES else
               pd.concat([p[c] for p in index], ignore_index=True) for c in INDEX_COLUMNS}
    return Source(pd.DataFrame(columns), counts, lambda rows: frames.take(rows, META_COLUMNS), frames.files_sha256,
                  skipped, spectrum_length, sorted(lengths))


def fit_staged(counts, index: pd.DataFrame, kv: float, path: Path) -> tuple[RowFile, list[str]]:
    """The element table of every row (coremax.data.elements.fit_elements), fitted run group by run group and
    staged in a float64 file: a group's rows are the rows one fit of the whole set gives that group (its
    calibration is fitted on the same summed spectrum, its solves batch the same rows), so the intensities are
    the ones of one fit over everything."""
    from coremax.data.elements import fit_elements  # deferred: xraylib and scipy, only to build a data set

    keys = [c for c in ("core", "scanner", "kv") if c in index.columns]
    label = index.groupby(keys, sort=False, dropna=False, observed=True).ngroup().to_numpy()
    order = np.argsort(label, kind="stable")  # each group's rows ascending, as fit_elements takes them
    edges = [0, *np.flatnonzero(np.diff(label[order])) + 1, len(order)]
    out, columns = None, None
    for a, b in zip(edges[:-1], edges[1:]):
        rows = order[a:b]
        table = fit_elements(counts[rows], index.iloc[rows], kv)
        if out is None:
            columns = list(table.columns)
            out = RowFile(path, len(columns), np.float64, rows=len(index))
        if list(table.columns) != columns:
            raise ValueError(f"the element fit gave the run groups different columns ({columns} and {list(table.columns)})")
        out.put(rows, table.to_numpy(np.float64))
    return out, columns
