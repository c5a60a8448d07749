"""Split-conformal prediction intervals: a symmetric half-width from absolute residuals on calibration rows.

With n exchangeable calibration residuals, the ceil((n+1)(1-alpha))-th smallest one bounds a new residual
with probability >= 1 - alpha (Vovk et al.; Lei et al. 2018), whatever the noise distribution.
"""

from __future__ import annotations

import math

import numpy as np


def conformal_quantile(residuals_abs, alpha: float = 0.1) -> float:
    """Half-width q such that |y - pred| <= q holds with probability >= 1 - alpha on new rows.

    NaN residuals (rows without a measurement) are ignored; inf when there are too few rows for the level.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    r = np.asarray(residuals_abs, dtype=np.float64).ravel()
    r = np.sort(np.abs(r[~np.isnan(r)]))
    n = r.size
    # tiny tolerance: (n+1)(1-alpha) is often an integer up to float rounding (e.g. 9 * 0.9 * 10 / 10)
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if n == 0 or k > n:
        return math.inf
    return float(r[k - 1])


def intervals(pred, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric interval [pred - q, pred + q]."""
    pred = np.asarray(pred, dtype=np.float64)
    return pred - q, pred + q
