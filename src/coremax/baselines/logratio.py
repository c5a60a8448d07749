"""What the scanner labs' calibrations (`ratio`, `mlc`, `lrce`) share: the element table's parts as log-ratios
(coremax.data.ratios: which parts, values below detection replaced) and the lab contents as a composition closed
by the remainder to 100 wt%. Lab contents (wt%, given without sd) follow the replacement rule with half their
smallest positive training value as the limit, and so does the remainder.
"""

from __future__ import annotations

import re

import numpy as np

from coremax.baselines.base import Baseline
from coremax.data.ratios import REPLACE, choose_parts, clr, half_smallest_positive, replaced_areas
from coremax.data.bulk import TARGETS
from coremax.errors import UserError

_UNIT = re.compile(r"[\s_]*(\(.*\)|\[.*\]|%|wt%|wt)$", flags=re.IGNORECASE)


def default_contents(targets) -> list[str]:
    """The targets taken as contents in wt% when the stage names none: CaCO3, TOC and any `<name> (wt%)`."""
    return [t for t in targets if t in TARGETS or str(t).endswith("(wt%)")]


def element_of(target: str) -> str:
    """`Ca (wt%)`, `Ca_wt%`, `Ca` -> `Ca`: the part an element content would be calibrated against."""
    return _UNIT.sub("", str(target).strip()).strip(" _%") or str(target)


def logit(y: np.ndarray) -> np.ndarray:
    """ln(y / (100 - y)) of contents in wt%, y clipped to [0.01, 99.99] so that 0 and 100 stay finite."""
    y = np.clip(y, 0.01, 99.99)
    return np.log(y / (100.0 - y))


def closed(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Additive log-ratios against the remainder (n, k) -> (parts (n, k), remainder (n,)) in wt%, summing to 100:
    x_j = 100 exp(z_j) / (1 + sum_k exp(z_k)), computed without overflow."""
    top = np.maximum(z.max(axis=1, keepdims=True), 0.0)
    e, rest = np.exp(z - top), np.exp(-top)
    total = rest + e.sum(axis=1, keepdims=True)
    return 100.0 * e / total, 100.0 * rest[:, 0] / total[:, 0]


class LogRatioBaseline(Baseline):
    """What the log-ratio calibrations share: the element table as input, its parts with zeros replaced, and the
    lab contents as a composition closed by the remainder to 100 wt%. Not a method itself (not registered).

    `fit` takes the harness's arguments; X_unlabelled is not used and baseline.epo is refused (`reads_settings`):
    a log-ratio of two net peak areas has no feature map to fit and no scanner direction to leave out."""

    inputs = "elements"
    reads_settings = False

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.floor = np.zeros(0)                 # per part: the limit where an area has no sd
        self.replaced: dict[str, int] = {}       # per part: training areas replaced
        self.unused: list[str] = []

    # -- intensities --------------------------------------------------------------------------------------
    def _start(self, X_train, Y_train, X_val, Y_val, targets) -> tuple[np.ndarray, np.ndarray]:
        """Targets and Y checked, the parts and their limits taken from the training rows; returns (Y_train, Y_val)."""
        self.targets = [str(t) for t in targets]
        Y_train = np.asarray(Y_train, dtype=np.float64).reshape(len(X_train), -1)
        Y_val = np.asarray(Y_val, dtype=np.float64).reshape(len(X_val), -1)
        if Y_train.shape[1] != len(self.targets) or Y_val.shape[1] != len(self.targets):
            raise ValueError(f"Y has {Y_train.shape[1]}/{Y_val.shape[1]} columns for {len(self.targets)} targets")
        self.parts, self.floor, self.replaced, self.unused = choose_parts(X_train, f"the {self.method} baseline")
        return Y_train, Y_val

    def _replaced(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The parts' areas (rows, parts) with values below detection replaced, and the count per part."""
        return replaced_areas(X, self.parts, self.floor, f"the {self.method} baseline")

    def _logs(self, X) -> np.ndarray:
        if not self.parts:
            raise UserError(f"The {self.method} baseline has not been fitted; run the baseline stage first.")
        return np.log(self._replaced(X)[0])

    def feature_space(self, X) -> np.ndarray:
        """The centred log-ratios of the parts: distances between spots free of multiplicative effects."""
        return clr(self._logs(X))

    def _part_record(self, parts=None) -> dict:
        """selected_params entries on the intensities: replaced training values per part, parts left out."""
        out = {f"replaced_{p}": self.replaced[p] for p in (self.parts if parts is None else parts)}
        return {**out, **({"unused_parts": ", ".join(self.unused)} if self.unused else {})}

    # -- contents -------------------------------------------------------------------------------------------
    def _composition(self, Y_train: np.ndarray, contents) -> None:
        """Checks that the targets form one composition and keeps what `_logratios` needs: each part's training
        median (it stands in for a part not measured on a row when that row's remainder is formed) and the limits
        of the parts and of the remainder."""
        contents = default_contents(self.targets) if contents is None else [str(c) for c in contents]
        other = [t for t in self.targets if t not in contents]
        if other:
            raise UserError(f"The {self.method} baseline calibrates contents in wt%, and {other[0]!r} is not one "
                            "of the data set's contents; leave it out of data.targets or use pls or nmf_svr for it.")
        for j, t in enumerate(self.targets):
            if not (Y_train[:, j] > 0).any():
                raise UserError(f"The target {t!r} has no positive value in the training rows; the {self.method} "
                                "baseline needs measured contents to form its log-ratios.")
        total = np.nansum(Y_train, axis=1)
        if (total > 100.0 + 1e-9).any():
            raise UserError(f"The targets {', '.join(self.targets)} add up to more than 100 wt% on "
                            f"{int((total > 100.0 + 1e-9).sum())} training rows (up to {total.max():.1f}), so they "
                            "overlap (as CaCO3 and Ca do) and form no composition; calibrate them in separate runs.")
        self.medians = np.nanmedian(Y_train, axis=0)
        self.limits = half_smallest_positive(Y_train)
        self.rest_limit = float(half_smallest_positive(100.0 - self._filled(Y_train).sum(axis=1)[:, None])[0])
        if not np.isfinite(self.rest_limit):
            raise UserError(f"The targets {', '.join(self.targets)} add up to 100 wt% on every training row, so "
                            f"the remainder that closes the composition is never seen; the {self.method} baseline "
                            "needs samples holding something else.")

    def _filled(self, Y: np.ndarray) -> np.ndarray:
        """Contents with a missing value set to the part's training median and values below detection replaced."""
        filled = np.where(np.isnan(Y), self.medians, Y)
        return np.where(filled < self.limits, REPLACE * self.limits, filled)

    def _logratios(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ln of each part (NaN where not measured), ln of the remainder) of contents in wt%."""
        filled = self._filled(Y)
        rest = 100.0 - filled.sum(axis=1)
        rest = np.where(rest < self.rest_limit, REPLACE * self.rest_limit, rest)
        return np.where(np.isnan(Y), np.nan, np.log(filled)), np.log(rest)

    @staticmethod
    def _rows(t: str, n_train: int, n_val: int) -> None:
        if n_train < 3 or n_val < 1:
            raise UserError(f"The target {t!r} has {n_train} measured train rows and {n_val} measured validation "
                            "rows; the baseline needs at least 3 and 1, so add labelled cores to the data set.")
