"""Log-ratios of element intensities, the way scanner labs calibrate: the parts of an element table (every
`<name>_area` column, the scatter parts coh and scatter included) with values below detection replaced.

Intensities carry the measurement's multiplicative effects (water film, surface, tube current, live time, drift),
which scale every part of a spot alike and cancel in ratios. Zeros and values below detection have no logarithm;
they are replaced, never dropped, by one rule (multiplicative replacement, Martin-Fernandez et al. 2003): an area
below its detection limit, 3 x its `_sd` (where the `_sd` is absent or not positive: half the smallest positive
area of that part in the training rows), becomes 0.65 x that limit; an empty cell counts as below it. A part
without one positive training area says nothing, and a part below its limit on most training rows
(MOSTLY_BELOW) is noise in every ratio it enters: both are left out. The log-ratio calibrations
(coremax.baselines.logratio) and the hybrid head of MSM features and ratios (finetune.elements) share this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from coremax.data.elements import element_columns
from coremax.errors import UserError

SIGMAS = 3.0        # detection limit = 3 sd of the net area (the usual 3-sigma limit of XRF)
REPLACE = 0.65      # a value below its limit becomes this share of it (Martin-Fernandez et al. 2003)
MOSTLY_BELOW = 0.5  # a part below its limit on more than this share of the training rows is left out


def element_table(frame, user: str = "") -> pd.DataFrame:
    """The element columns of `frame` (a DataFrame, one row per spectrum), or a UserError when it has none."""
    cols = element_columns(frame) if isinstance(frame, pd.DataFrame) else []
    if not any(c.endswith("_area") for c in cols):
        raise UserError(f"The data set has no element table (no <element>_area columns), which {user or 'this'} "
                        "needs; rebuild the data set with scripts/preprocess.py (it writes one) or use a spectra "
                        "baseline.")
    return frame[cols]


def area_parts(frame, user: str = "") -> list[str]:
    """The intensity parts of an element table: the names of its `<name>_area` columns, in its order."""
    return [c[:-len("_area")] for c in element_table(frame, user).columns if c.endswith("_area")]


def area_matrix(frame, parts: list[str], user: str = "") -> np.ndarray:
    """The `<part>_area` columns of `frame` as floats (rows, parts), refusing a table that lacks a part."""
    table = element_table(frame, user)
    missing = [p for p in parts if f"{p}_area" not in table.columns]
    if missing:
        raise UserError(f"The element table lacks {', '.join(f'{p}_area' for p in missing)}, which {user} was "
                        "fitted on; use a data set with the same fitted elements.")
    return table[[f"{p}_area" for p in parts]].to_numpy(np.float64)


def half_smallest_positive(values: np.ndarray) -> np.ndarray:
    """Per column, half its smallest positive value (NaN where it has none): the limit of a value without sd."""
    v = np.where(np.asarray(values, np.float64) > 0, values, np.inf).min(axis=0)
    return np.where(np.isfinite(v), 0.5 * v, np.nan)


def replace_below(x: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values below their limit (NaN included) -> REPLACE x limit; returns (values, count replaced per column)."""
    below = ~(x >= limit)
    return np.where(below, REPLACE * limit, x), below.sum(axis=0)


def clr(logs: np.ndarray) -> np.ndarray:
    """Centred log-ratios of rows of logarithms: each minus its row mean."""
    return logs - logs.mean(axis=1, keepdims=True)


def replaced_areas(frame, parts: list[str], floor: np.ndarray, user: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The parts' areas (rows, parts) with values below detection replaced, and the count replaced per part."""
    table = element_table(frame, user)
    areas = area_matrix(table, parts, user)
    sd = np.column_stack([table[f"{p}_sd"].to_numpy(np.float64) if f"{p}_sd" in table.columns
                          else np.full(len(table), np.nan) for p in parts]) if parts else np.zeros((len(table), 0))
    return replace_below(areas, np.where(np.isfinite(sd) & (sd > 0), SIGMAS * sd, floor))


def choose_parts(frame, user: str = "") -> tuple[list[str], np.ndarray, dict, list[str]]:
    """(parts, their no-sd limits, training values replaced per part, parts left out) of training rows."""
    parts = area_parts(frame, user)
    floor = half_smallest_positive(area_matrix(frame, parts, user))
    positive = np.isfinite(floor)
    unused = [p for p, ok in zip(parts, positive) if not ok]
    parts, floor = [p for p, ok in zip(parts, positive) if ok], floor[positive]
    _, counts = replaced_areas(frame, parts, floor, user)
    noise = counts > MOSTLY_BELOW * len(frame)
    unused += [p for p, n in zip(parts, noise) if n]
    kept = ~noise
    if kept.sum() < 2:
        raise UserError(f"The element table has {int(kept.sum())} part(s) measured above detection on most training "
                        f"rows; {user or 'a log-ratio'} needs two to form a log-ratio.")
    return [p for p, k in zip(parts, kept) if k], floor[kept], \
        {p: int(c) for p, c, k in zip(parts, counts, kept) if k}, unused


@dataclass
class ElementRatios:
    """Standardised centred log-ratios of the chosen parts: features a linear head reads beside others."""
    parts: list[str] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, frame, user: str = "") -> "ElementRatios":
        parts, floor, _, _ = choose_parts(frame, user)
        out = cls(parts, floor.tolist())
        z = out.raw(frame, user)
        out.mean, out.std = z.mean(0).tolist(), np.maximum(z.std(0), 1e-9).tolist()
        return out

    def raw(self, frame, user: str = "") -> np.ndarray:
        return clr(np.log(replaced_areas(frame, self.parts, np.asarray(self.floor), user)[0]))

    def __call__(self, frame, user: str = "") -> np.ndarray:
        return (self.raw(frame, user) - np.asarray(self.mean)) / np.asarray(self.std)

    def state(self) -> dict:
        return {"parts": list(self.parts), "floor": list(self.floor), "mean": list(self.mean), "std": list(self.std)}
