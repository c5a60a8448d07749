"""Spectra stored as row shards: `.npy` files of a fixed number of rows (int32 counts), memory-mapped and read
together like one (rows, channels) array, so a pool of 10^6 spectra is never loaded whole; their per-channel
statistics are accumulated the same way, a shard's worth of rows at a time."""

from __future__ import annotations

import numpy as np
import torch

SHARD_ROWS = 65_536  # rows per shard file: 512 MiB of int32 counts at 2,048 channels


class Shards:
    """Row-wise concatenation of memory-mapped 2-D arrays with an optional column window. Indexing by rows
    (an index array, a boolean mask or a slice) returns an in-memory array of just those rows; `x[..., a:b]`
    narrows the window without reading anything."""

    def __init__(self, arrays: list, columns: slice = slice(None)):
        if not arrays:
            raise ValueError("Shards needs at least one array")
        self.arrays, self.columns = list(arrays), columns
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.dtype = self.arrays[0].dtype
        self.width = len(range(*columns.indices(self.arrays[0].shape[1])))

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
            start, stop, _ = self.columns.indices(self.arrays[0].shape[1])
            a, b, _ = cols.indices(self.width)
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
        arrays = []
        for p in parts:
            arrays += [a[:, p.columns] for a in p.arrays]  # a memmap sliced by columns stays a memmap view
        return Shards(arrays)


def channel_stats(counts: np.ndarray, rows: np.ndarray, chunk: int = SHARD_ROWS) -> tuple[list, list]:
    """Per-channel mean and standard deviation of the given rows, accumulated chunk by chunk in float64."""
    if not len(rows):
        return [], []
    total, squares = np.zeros(counts.shape[1]), np.zeros(counts.shape[1])
    for start in range(0, len(rows), chunk):
        c = counts[rows[start:start + chunk]].astype(np.float64)
        total += c.sum(axis=0)
        squares += (c * c).sum(axis=0)
    mean = total / len(rows)
    return mean.tolist(), np.sqrt(np.clip(squares / len(rows) - mean * mean, 0, None)).tolist()
