"""Writing a data set's files from its source in blocks: each split's Parquet tables in row groups and its .npy
shards a block of rows at a time, so no split is ever whole in memory. The files are those a write of each split
whole gives, byte for byte (`to_parquet(..., row_group_size=ROW_GROUP)`), and a shard's bytes do not depend on
how its rows arrive."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coremax.data import shards
from coremax.errors import UserError
from coremax.io import file_sha256, folder_in_place, os_error_hint, os_error_reason, save_npy_blocks, write_toml

# Rows per Parquet row group, and so per block in memory: an element table's row is ~0.5 kB, so pyarrow's own
# default (1,048,576 rows) held ~1.2 GB while writing 10^6 spectra. A split of fewer rows is one row group either
# way: the files of the embedded data set are the ones the default wrote.
ROW_GROUP = 64 * 1024


@contextmanager
def data_set_folder(target: Path):
    """(the temporary folder, [the file being written]): renamed onto `target` on success (folder_in_place), so a
    failure anywhere leaves nothing. The system's refusal (a full disk, a file-size limit) is said with the file
    it stopped at."""
    where = [target]
    try:
        with folder_in_place(target) as tmp:
            yield tmp, where
    except OSError as e:
        raise UserError(f"Writing the data set stopped at {where[0]} ({os_error_reason(e)}), so none of it was kept; "
                        f"{os_error_hint(e)}.") from None


def write_parquet(path: Path, rows: np.ndarray, frame_of) -> None:
    """`frame_of(rows)` (a DataFrame) for the given rows, ROW_GROUP rows at a time, as one Parquet file."""
    writer = None
    try:
        for start in range(0, max(len(rows), 1), ROW_GROUP):  # an empty split: one empty table, as to_parquet
            frame = frame_of(rows[start:start + ROW_GROUP])
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def write_shards(folder: Path, target: Path, where: list, split: str, counts, rows: np.ndarray,
                 shard_rows: int) -> list[str]:
    """The counts of `rows` as `<split>-00000.npy`, ... of `shard_rows` rows each (an empty split: one empty
    shard), read BLOCK_ROWS rows at a time."""
    names = []
    for k, start in enumerate(range(0, max(len(rows), 1), shard_rows)):
        part = rows[start:start + shard_rows]
        names.append(f"{split}-{k:05d}.npy")
        where[0] = target / names[-1]
        block = shards.BLOCK_ROWS
        save_npy_blocks(folder / names[-1], (len(part), counts.shape[1]), shards.COUNT_DTYPE,
                        (counts[part[a:a + block]] for a in range(0, len(part), block)))
    return names


def write_splits(tmp: Path, target: Path, where: list, rows: dict, tables: dict, counts, info: dict,
                 shard_rows: int) -> None:
    """Every split's files (`tables`: file suffix -> frame_of(rows)), then info.toml listing each with its
    sha256; `where[0]` names the file being written."""
    files, shards = {}, {}
    for split, idx in rows.items():
        for suffix, frame_of in tables.items():
            name = f"{split}{suffix}"
            where[0] = target / name
            write_parquet(tmp / name, idx, frame_of)
            files[name] = file_sha256(tmp / name)
        shards[split] = write_shards(tmp, target, where, split, counts, idx, shard_rows)
        files.update({name: file_sha256(tmp / name) for name in shards[split]})
    where[0] = target / "info.toml"
    write_toml(tmp / "info.toml", {**info, "shard_rows": shard_rows, "shards": shards, "files": files})


def table_of(meta, targets: pd.DataFrame):
    """frame_of for `<split>.parquet`: the metadata columns, then the targets."""
    return lambda rows: pd.concat([meta(rows), targets.iloc[rows].reset_index(drop=True)], axis=1)


def elements_of(elements, columns: list | None = None):
    """frame_of for `<split>-elements.parquet`, from a staged float64 file with its `columns` or a table."""
    if columns is None:
        return lambda rows: elements.iloc[rows].reset_index(drop=True)
    return lambda rows: pd.DataFrame(elements[rows], columns=columns, copy=False)
