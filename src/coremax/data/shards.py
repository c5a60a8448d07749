"""Spectra stored as row shards: `.npy` files of a fixed number of rows (int32 counts), memory-mapped and read
together like one (rows, channels) array, so a pool of 10^6 spectra is never loaded whole; their per-channel
statistics are accumulated the same way, a shard's worth of rows at a time."""

from __future__ import annotations

import numpy as np
import torch

SHARD_ROWS = 65_536  # rows per shard file: 512 MiB of int32 counts at 2,048 channels
BLOCK_ROWS = 4_096   # rows read or written at once when preprocessing streams: 32 MiB of int32 counts
COUNT_DTYPE = np.int32  # counts are whole numbers below 2**31 (the .spe reader refuses anything else)


class Shards:
    """Row-wise concatenation of memory-mapped 2-D arrays with an optional column window. Indexing by rows
    (an index array, a boolean mask or a slice) returns an in-memory array of just those rows; `x[..., a:b]`
    narrows the window without reading anything. The window is a slice, or the column indices of several runs'
    windows side by side (`pick`, coremax.data.window)."""

    def __init__(self, arrays: list, columns: slice | np.ndarray = slice(None)):
        if not arrays:
            raise ValueError("Shards needs at least one array")
        self.arrays, self.columns = list(arrays), columns
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.dtype = self.arrays[0].dtype
        self.width = len(range(*columns.indices(self.arrays[0].shape[1]))) if isinstance(columns, slice) \
            else len(columns)

    def pick(self, columns: np.ndarray) -> "Shards":
        """The window's columns at the given positions, in their order, without reading anything."""
        return Shards(self.arrays, np.arange(self.arrays[0].shape[1])[self.columns][np.asarray(columns)])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.offsets[-1]), self.width

    ndim = 2

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shard_sizes(self) -> list[int]:
        return [len(a) for a in self.arrays]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if rows is Ellipsis or (isinstance(rows, slice) and rows == slice(None)):
            if not isinstance(cols, slice) or cols.step not in (None, 1):
                raise IndexError("Shards take a contiguous column window")
            a, b, _ = cols.indices(self.width)
            if not isinstance(self.columns, slice):
                return Shards(self.arrays, self.columns[a:b])
            start, stop, _ = self.columns.indices(self.arrays[0].shape[1])
            return Shards(self.arrays, slice(start + a, start + b))
        if cols != slice(None):
            return self[rows][:, cols]
        return self.take(rows)

    def take(self, rows) -> np.ndarray:
        """The given rows (in that order) of the window, read shard by shard."""
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        out = np.empty((len(rows), self.width), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            local = rows[at] - self.offsets[s]
            order = np.argsort(local, kind="stable")  # ascending reads are kind to the page cache
            out[at[order]] = self.arrays[s][local[order]][:, self.columns]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate([a[:, self.columns] for a in self.arrays])
        return whole if dtype is None else whole.astype(dtype)

    @staticmethod
    def concat(parts: list) -> "Shards":
        """Several Shards (each already windowed alike) as one."""
        if not isinstance(parts[0].columns, slice):  # the windows of several runs: the same columns of each
            return Shards([a for p in parts for a in p.arrays], parts[0].columns)
        arrays = []
        for p in parts:
            arrays += [a[:, p.columns] for a in p.arrays]  # a memmap sliced by columns stays a memmap view
        return Shards(arrays)


def channel_stats(counts, rows: np.ndarray, chunk: int = SHARD_ROWS, block: int | None = None) -> tuple[list, list]:
    """Per-channel mean and standard deviation of the given rows of `counts` (an array or anything indexed by
    rows alike, e.g. a staged file), in float64: sums of `chunk` rows added up, each read `block` (BLOCK_ROWS)
    rows at a time into one buffer. A chunk's running sum rides along as the buffer's first row, so every float
    is added in the order one sum over the whole chunk adds it (numpy sums the rows of axis 0 one after
    another): the figures do not depend on `block`, which only bounds the memory."""
    if not len(rows):
        return [], []
    block = min(block or BLOCK_ROWS, chunk, len(rows))
    total, squares = np.zeros(counts.shape[1]), np.zeros(counts.shape[1])
    buf = np.empty((block + 1, counts.shape[1]))
    for start in range(0, len(rows), chunk):
        part_sum = part_squares = None
        for at in range(start, min(start + chunk, len(rows)), block):
            part = rows[at:min(at + block, start + chunk, len(rows))]
            buf[1:len(part) + 1] = counts[part]
            part_sum = _carried(buf, len(part), part_sum)
            np.multiply(buf[1:len(part) + 1], buf[1:len(part) + 1], out=buf[1:len(part) + 1])
            part_squares = _carried(buf, len(part), part_squares)
        total += part_sum
        squares += part_squares
    mean = total / len(rows)
    return mean.tolist(), np.sqrt(np.clip(squares / len(rows) - mean * mean, 0, None)).tolist()


def _carried(buf: np.ndarray, n: int, running: np.ndarray | None) -> np.ndarray:
    """The sum of `running` and then the n rows after buf's first, row after row."""
    if running is None:
        return buf[1:n + 1].sum(axis=0)
    buf[0] = running
    return buf[:n + 1].sum(axis=0)
