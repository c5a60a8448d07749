"""The log-ratio calibration equation (LRCE: Weltje & Tjallingii 2008, EPSL 274) for element contents.

For each element target `X (wt%)` whose element X is a part of the element table: ln(W_j / W_ref) =
a_j ln(I_j / I_ref) + b_j, fitted by least squares on the training rows where both contents are measured. The
composition is closed by the remainder R = 100 - sum of the element targets (organic matter, water, C, O and the
light elements the scanner does not see). R emits no line of its own, but the light matrix scatters the tube's
radiation (the more of it, the more scatter per unit of fluorescence), so its intensity in the equation is the
scatter part: `coh_area` (tube line scatter), else `scatter_area`. The back-transform W_ref = 100 / (1 + sum_j
exp(y_j) + exp(y_R)), W_j = W_ref exp(y_j) gives closed, non-negative contents.

The reference element (baseline.lrce.reference; "" = each element target tried) is the one whose equations give the
lowest mean validation RMSE (wt%) over the targets. A missing content enters a row's remainder as its training
median (as in mlc). The new cores' rows (new_rows) weigh like any row here: a shared reference ties the equations
together, so a per-equation share (stats.weighting) would not give one model.
"""

from __future__ import annotations

import numpy as np

from coremax.baselines.base import register
from coremax.baselines.logratio import LogRatioBaseline, element_of
from coremax.errors import UserError
from coremax.stats.metrics import rmse

SCATTER_PARTS = ("coh", "scatter")  # the remainder's intensity, in order of preference


def _line(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of t on s by least squares."""
    coef = np.linalg.lstsq(np.column_stack([s, np.ones(len(s))]), t, rcond=None)[0]
    return float(coef[0]), float(coef[1])


@register("lrce")
class Lrce(LogRatioBaseline):
    """ln(W_j/W_ref) = a_j ln(I_j/I_ref) + b_j per element target, closed by the remainder via the scatter."""

    config_keys = ("reference",)

    def __init__(self, reference: str):
        super().__init__()
        self.reference = str(reference).strip()

    def fit(self, X_train, Y_train, X_val, Y_val, targets, X_unlabelled=None, new_rows=None, settings=None,
            contents=None) -> "Lrce":
        """See LogRatioBaseline (X_unlabelled, settings and new_rows are not used)."""
        Y_train, Y_val = self._start(X_train, Y_train, X_val, Y_val, targets)
        self.elements = [element_of(t) for t in self.targets]
        for t, el in zip(self.targets, self.elements):
            if el not in self.parts:
                raise UserError(f"The target {t!r} is not an element content with an intensity part (parts: "
                                f"{', '.join(self.parts)}); lrce calibrates element contents such as Ca (wt%); "
                                "use mlc or ratio for CaCO3 and TOC.")
        self._composition(Y_train, contents)
        self.scatter = next((p for p in SCATTER_PARTS if p in self.parts), "")
        if not self.scatter:
            raise UserError("The element table has no scatter part (coh_area or scatter_area with a positive area), "
                            "which lrce needs for the remainder of the composition; rebuild the data set with "
                            "scripts/preprocess.py or use mlc.")
        if self.reference and self.reference not in self.elements:
            raise UserError(f"baseline.lrce.reference = {self.reference!r} is not one of the element targets "
                            f"({', '.join(self.elements)}); name one of those, or leave it empty to choose.")
        for j, t in enumerate(self.targets):
            self._rows(t, int((~np.isnan(Y_train[:, j])).sum()), int((~np.isnan(Y_val[:, j])).sum()))
        l_tr, l_va = self._logs(X_train), self._logs(X_val)
        best = None
        for ref in [self.reference] if self.reference else self.elements:
            equations = self._equations(l_tr, Y_train, ref)
            pred = self._closed(l_va, ref, equations)
            scores = [rmse(Y_val[va, j], pred[va, j]) for j in range(len(self.targets))
                      for va in [~np.isnan(Y_val[:, j])]]
            if best is None or np.mean(scores) < np.mean(best[2]):
                best = (ref, equations, scores)
        self.ref, self.equations, scores = best
        self.models = [self.equations]  # what "fitted" means to the shared checks
        self.selected = {}
        for j, (t, el) in enumerate(zip(self.targets, self.elements)):
            a, b = self.equations.get(el, (None, None))
            self.selected[t] = {"reference": self.ref, **({"slope": a, "intercept": b} if el != self.ref else {
                "remainder_part": self.scatter, "remainder_slope": self.equations["_rest"][0],
                "remainder_intercept": self.equations["_rest"][1]}), "val_rmse": scores[j],
                **self._part_record([el, self.ref, self.scatter])}
        return self

    def _equations(self, logs: np.ndarray, Y: np.ndarray, ref: str) -> dict:
        """{element: (a, b)} for every element but the reference, and "_rest": (a, b) of the remainder."""
        k = self.elements.index(ref)
        parts = {p: i for i, p in enumerate(self.parts)}
        logw, rest = self._logratios(Y)
        out = {}
        for j, el in enumerate(self.elements):
            if el != ref:
                rows = ~np.isnan(logw[:, j]) & ~np.isnan(logw[:, k])
                out[el] = _line(logs[rows, parts[el]] - logs[rows, parts[ref]], logw[rows, j] - logw[rows, k])
        rows = ~np.isnan(logw[:, k])
        out["_rest"] = _line(logs[rows, parts[self.scatter]] - logs[rows, parts[ref]], rest[rows] - logw[rows, k])
        return out

    def _closed(self, logs: np.ndarray, ref: str, equations: dict) -> np.ndarray:
        """Contents (rows, targets) in wt%, closed with the remainder, from the log intensities."""
        parts = {p: i for i, p in enumerate(self.parts)}
        y = {el: a * (logs[:, parts[el]] - logs[:, parts[ref]]) + b for el, (a, b) in equations.items()
             if el != "_rest"}
        a, b = equations["_rest"]
        y["_rest"] = a * (logs[:, parts[self.scatter]] - logs[:, parts[ref]]) + b
        y[ref] = np.zeros(len(logs))
        # W_ref = 100 / (1 + sum exp(y)): written with exp(y - top) so that no term overflows
        top = np.maximum.reduce([v for v in y.values()])
        total = sum(np.exp(v - top) for v in y.values())
        return np.column_stack([100.0 * np.exp(y[el] - top) / total for el in self.elements])

    def predict(self, X, remainder: bool = False) -> np.ndarray:
        """Element contents in wt% (rows, targets), closed; `remainder=True` adds the remainder as a last column."""
        if not self.models:
            raise UserError(f"The {self.method} baseline has not been fitted; run the baseline stage first.")
        parts = self._closed(self._logs(X), self.ref, self.equations)
        return np.column_stack([parts, 100.0 - parts.sum(axis=1)]) if remainder else parts
