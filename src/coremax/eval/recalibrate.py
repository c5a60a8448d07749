"""Recalibrate a newly scanned core with a few of its own lab samples, as labs do for a new instrument or core.

Per core and target, a correction of the model's predictions is fitted on the core's samples: an offset (lab -
prediction, averaged) plus a slope of the residuals shrunk toward none (`fit_correction`). How much it is shrunk
is chosen on the validation cores, by the study's new-cores-labels question: with k samples of a core drawn at
random, which correction predicts the core's other samples best. The interval is centred on the corrected prediction; its half-width
is the conformal quantile of the leave-one-out residuals of the core's samples (the largest of them when there
are too few samples for the level) and never narrower than the validation rows' half-width. The samples used
are marked: predictions at their depths are fitted, not independent skill.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.data.bulk import match_bulk
from coremax.errors import UserError
from coremax.stats.conformal import conformal_quantile

# The correction family: lab - prediction = a + c (prediction - its mean over the samples), the slope c that of
# least squares shrunk by 1 / (1 + lambda): lambda = 0 is a straight line through the samples, inf an offset. A
# line through 5 samples is noisy, so lambda is chosen on the validation cores.
SHRINKAGE = (0.0, 1.0, 4.0, float("inf"))
VALIDATION_DRAWS = 20  # random k-sample draws per validation core when choosing the correction


def describe(shrinkage: float) -> str:
    return "offset" if np.isinf(shrinkage) else f"line, slope shrunk by 1/(1+{shrinkage:g})"


def fit_correction(pred: np.ndarray, lab: np.ndarray, shrinkage: float) -> tuple[float, float]:
    """(a, b) of lab ~ a + b * pred; the slope of the residuals needs 3 samples and a spread of predictions."""
    pred, resid = np.asarray(pred, np.float64), np.asarray(lab, np.float64) - pred
    c, centre = 0.0, float(np.mean(pred))
    sxx = float(np.sum((pred - centre) ** 2))
    if np.isfinite(shrinkage) and len(pred) >= 3 and sxx > 1e-12:
        c = float(np.sum((pred - centre) * (resid - resid.mean()))) / (sxx * (1.0 + shrinkage))
    return float(resid.mean() - c * centre), 1.0 + c


def loo_residuals(pred: np.ndarray, lab: np.ndarray, shrinkage: float) -> np.ndarray:
    """Each sample's residual under the correction fitted on the others (NaN for a single sample)."""
    out = np.full(len(pred), np.nan)
    for i in range(len(pred) if len(pred) > 1 else 0):
        rest = np.arange(len(pred)) != i
        a, b = fit_correction(pred[rest], lab[rest], shrinkage)
        out[i] = lab[i] - (a + b * pred[i])
    return out


def choose_correction(pred: np.ndarray, lab: np.ndarray, cores: np.ndarray, k: int = 5, seed: int = 0
                      ) -> tuple[float, dict]:
    """The shrinkage with the lowest RMSE on the validation cores' other samples after fitting on k of them;
    returns it and the RMSE of each. An offset when no validation core has k + 2 samples."""
    rng = np.random.default_rng(seed)
    errors = {s: [] for s in SHRINKAGE}
    for core in np.unique(cores):
        idx = np.flatnonzero((cores == core) & np.isfinite(lab))
        if len(idx) < k + 2:
            continue
        for _ in range(VALIDATION_DRAWS):
            chosen = rng.permutation(idx)
            fit, rest = chosen[:k], chosen[k:]
            for s in SHRINKAGE:
                a, b = fit_correction(pred[fit], lab[fit], s)
                errors[s].append(np.mean((lab[rest] - a - b * pred[rest]) ** 2))
    rmse = {s: float(np.sqrt(np.mean(e))) if e else np.nan for s, e in errors.items()}
    best = min(SHRINKAGE[::-1], key=lambda s: rmse[s] if np.isfinite(rmse[s]) else np.inf)  # ties: the offset
    return best, rmse


def recalibrate(table: pd.DataFrame, bulk: pd.DataFrame, targets, half: np.ndarray, methods: dict,
                alpha: float, match_mm: float = 5.0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Correct `table` (predict.py's: core, depth_mm, <t>_pred/_lo/_hi per target, interval_calibrated) on the
    lab samples of `bulk` that match its spectra; `half` the validation half-width per target, `methods` the
    shrinkage of the correction per target. Adds `<t>_lab` (the matched lab value), `<t>_recalibrated` and
    `used_for_recalibration`. Returns the table, one row per (core, target) recalibrated, and the samples that
    matched no spectrum (with the reason)."""
    lab, unmatched, _ = match_bulk(table[["core", "depth_mm"]], bulk, match_mm)
    usable = [t for t in targets if t in lab.columns and lab[t].notna().any()]
    if not usable:
        raise UserError(f"None of the {len(bulk)} lab samples of --bulk matched a predicted spectrum within "
                        f"{match_mm:g} mm with a value of {', '.join(targets)}; check the core names and depths.")
    table = table.copy()
    table["used_for_recalibration"] = lab[usable].notna().any(axis=1).to_numpy()
    report = []
    for t in usable:
        j = list(targets).index(t)
        table[f"{t}_lab"] = lab[t].to_numpy()
        table[f"{t}_recalibrated"] = False
        for core, rows in table.groupby("core", sort=False).indices.items():
            given = rows[np.isfinite(table[f"{t}_lab"].to_numpy()[rows])]
            if len(given) == 0:
                continue
            p, y = table[f"{t}_pred"].to_numpy()[given], table[f"{t}_lab"].to_numpy()[given]
            a, b = fit_correction(p, y, methods[t])
            loo = loo_residuals(p, y, methods[t])
            q = conformal_quantile(np.abs(loo), alpha) if len(given) > 1 else np.inf
            if not np.isfinite(q):  # too few samples for the level: the largest leave-one-out residual
                q = float(np.nanmax(np.abs(loo))) if len(given) > 1 else 0.0
            q = max(q, float(half[j]))
            corrected = a + b * table[f"{t}_pred"].to_numpy()[rows]
            at = table.index[rows]
            table.loc[at, f"{t}_pred"], table.loc[at, f"{t}_recalibrated"] = corrected, True
            table.loc[at, f"{t}_lo"], table.loc[at, f"{t}_hi"] = corrected - q, corrected + q
            report.append({"core": core, "target": t, "samples": len(given), "method": describe(methods[t]),
                           "offset": a, "slope": b, "bias_before": float(np.mean(y - p)),
                           "loo_rmse": float(np.sqrt(np.nanmean(loo ** 2))) if len(given) > 1 else np.nan,
                           "half_width": q, "unmatched_samples": int((unmatched["core"] == core).sum())})
    # a row's intervals are calibrated again when every target of it was recalibrated on its core's samples
    done = table[[f"{t}_recalibrated" for t in targets if f"{t}_recalibrated" in table.columns]].all(axis=1)
    table.loc[done & (len(usable) == len(targets)), "interval_calibrated"] = True
    return table, pd.DataFrame(report), unmatched


RECAL_SAMPLES = 5  # lab samples per core the correction is chosen for on the validation cores


def correction_methods(pred, val: pd.DataFrame) -> dict[str, float]:
    """Per target, the shrinkage of the recalibration chosen on the validation cores (choose_correction), for
    predict.py --bulk."""
    p = pred.bounded(val)
    return {t: choose_correction(p[:, j], val[t].to_numpy(np.float64), val["core"].astype(str).to_numpy(),
                                 RECAL_SAMPLES)[0] for j, t in enumerate(pred.targets) if t in val.columns}
