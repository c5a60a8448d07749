"""Regression metrics on wt% predictions: overall and per core, with interval coverage when present."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["target", "scope", "n", "r2", "rmse", "mae", "bias"]


# Scopes of a metrics table beside "all" and the cores: the rows no shift check flags and the others
# (coremax.eval.shift); a table's readers that list its cores leave these out.
FLAG_SCOPES = ("flagged spectra", "unflagged spectra")


def rmse(y_true, y_pred) -> float:
    """Root mean squared error over the pairs whose truth is not NaN (NaN when there are none)."""
    return regression_metrics(y_true, y_pred)["rmse"]


def regression_metrics(y_true, y_pred) -> dict:
    """n, R^2, RMSE, MAE and bias (mean of pred - true) over the pairs whose truth is not NaN.

    R^2 is NaN when there are no pairs or the truth is constant (it is undefined there, not -inf).
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    keep = ~np.isnan(y_true)
    t, p = y_true[keep], y_pred[keep]
    n = int(t.size)
    if n == 0:
        return {"n": 0, "r2": np.nan, "rmse": np.nan, "mae": np.nan, "bias": np.nan}
    err = p - t
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "n": n,
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan,
        "rmse": float(np.sqrt(ss_res / n)),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
    }


def coverage(y, lo, hi) -> float:
    """Fraction of the non-NaN `y` inside [lo, hi], bounds included (NaN when there are none)."""
    y = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(y)
    if not keep.any():
        return np.nan
    inside = (y >= np.asarray(lo, dtype=np.float64)) & (y <= np.asarray(hi, dtype=np.float64))
    return float(np.mean(inside[keep]))


def _interval_stats(y_true, lo, hi) -> dict:
    """Coverage of [lo, hi] and the mean interval width over the rows with a truth."""
    keep = ~np.isnan(np.asarray(y_true, dtype=np.float64))
    width = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    return {"coverage": coverage(y_true, lo, hi),
            "interval_width": float(np.mean(width[keep])) if keep.any() else np.nan}


def metrics_table(df: pd.DataFrame, targets, pred_suffix: str = "_pred", group: str = "core") -> pd.DataFrame:
    """One row per (target, scope): scope "all" for every row of `df`, then one per value of `df[group]`.

    Columns target, scope, n, r2, rmse, mae, bias, plus coverage and interval_width for a target whose
    `<t>_lo` and `<t>_hi` columns exist.
    """
    scopes = [("all", df)]
    if group in df.columns:
        scopes += [(str(name), part) for name, part in df.groupby(group, sort=True)]
    rows = []
    for t in targets:
        has_interval = f"{t}_lo" in df.columns and f"{t}_hi" in df.columns
        for scope, part in scopes:
            row = {"target": t, "scope": scope, **regression_metrics(part[t], part[f"{t}{pred_suffix}"])}
            if has_interval:
                row.update(_interval_stats(part[t], part[f"{t}_lo"], part[f"{t}_hi"]))
            rows.append(row)
    out = pd.DataFrame(rows)
    return out if rows else pd.DataFrame(columns=COLUMNS)
