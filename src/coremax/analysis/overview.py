"""Data set overview figures: target histograms per split and down-core profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from coremax.plotting import new_figure, save
from coremax.errors import UserError


def plot_target_histograms(splits: dict, targets, path, bins: int = 20) -> Path:
    """Histogram of each target (one panel each), one outline per split ({split: DataFrame}); the legend
    gives the number of labelled rows. Writes a PNG."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    fig, axes = new_figure(1, len(targets), 4.5, 3.5)
    for ax, t in zip(axes[0], targets):
        values = {s: df[t].dropna().to_numpy(float) for s, df in splits.items() if t in df.columns}
        both = np.concatenate(list(values.values())) if values else np.zeros(0)
        edges = np.histogram_bin_edges(both if both.size else [0.0, 1.0], bins=bins)
        for split, v in values.items():
            ax.hist(v, bins=edges, histtype="step", lw=1.5, label=f"{split} (n={len(v)})")
        ax.set(xlabel=f"{t} (wt%)", ylabel="spectra", title=t)
        ax.legend(fontsize=7)
    return save(fig, path)


def plot_downcore(frame: pd.DataFrame, columns, path, cores=None, depth: str = "depth_mm") -> Path:
    """Down-core profiles: one row of panels per core, one panel per column (e.g. CaCO3, TOC, Ca, Fe), depth
    increasing downwards; labelled targets (sparse) as points, dense columns as lines. Writes a PNG."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in [depth, "core", *columns] if c not in frame.columns]
    if missing:
        raise UserError(f"The frame has no column {missing[0]!r}; add it (e.g. peak areas) before plotting.")
    cores = list(pd.unique(frame["core"])) if cores is None else list(cores)
    fig, axes = new_figure(len(cores), len(columns), 2.4, 3.2)
    for r, core in enumerate(cores):
        rows = frame[frame["core"] == core].sort_values(depth)
        for c, col in enumerate(columns):
            ax = axes[r, c]
            v = rows[[depth, col]].dropna()
            sparse = len(v) < 0.5 * len(rows)
            ax.plot(v[col], v[depth] / 10.0, marker="o" if sparse else None, ms=3, lw=0.5 if sparse else 0.8)
            ax.invert_yaxis()
            ax.set(xlabel=col, title=f"{core}" if c == 0 else "")
            if c == 0:
                ax.set_ylabel("depth (cm)")
            ax.grid(alpha=0.3)
    return save(fig, path)
