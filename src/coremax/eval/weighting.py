"""How much the lab samples of new cores (data.test_labels) weigh in a closed-form fit: one rule for the
baselines and the ridge head.

A few samples of a new core next to hundreds from other cores can be drowned (weighed like any row) or trusted
(together as much as all other rows); which is right depends on how far that core is from the others, and only
its own samples can tell. So each target takes the share whose leave-one-out error over those samples is lowest
(chosen with the protocol simulated on the validation cores: see the README).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# Together, the new cores' samples weigh this share of all other rows (0: like any row).
NEW_CORE_SHARES = (0.0, 1 / 3, 1.0)


def can_choose(new: np.ndarray) -> bool:
    """Leave-one-out needs two new samples and other rows; otherwise every row weighs alike."""
    return int(new.sum()) >= 2 and bool((~new).any())


def share_weights(new: np.ndarray, share: float) -> np.ndarray:
    """Row weights: 1, the new rows together `share` times the number of other rows."""
    return np.where(new, share * (~new).sum() / max(int(new.sum()), 1), 1.0) if share else np.ones(len(new))


def leave_one_out_rmse(new: np.ndarray, y: np.ndarray, predict_without: Callable[[int], float]) -> float:
    """RMSE over the new rows, each predicted by `predict_without(i)`: a model fitted without row i."""
    errors = [predict_without(i) - y[i] for i in np.flatnonzero(new)]
    return float(np.sqrt(np.mean(np.square(errors))))


def choose_share(new: np.ndarray, y: np.ndarray, fit: Callable[[np.ndarray | None], tuple[Any, Callable[[int], float]]]):
    """Fit under each share's row weights and keep the fit whose leave-one-out RMSE over the new rows is lowest.
    `fit(w)` (w None: every row alike) returns (its result, predict_without(i)). Returns (result, share, that
    RMSE); share and RMSE are None when there is nothing to choose (fewer than two new rows, or no other rows)."""
    if not can_choose(new):
        return fit(None)[0], None, None
    fits = []
    for share in NEW_CORE_SHARES:
        result, predict_without = fit(share_weights(new, share) if share else None)
        fits.append((leave_one_out_rmse(new, y, predict_without), share, result))
    loo, share, result = min(fits, key=lambda c: c[0])
    return result, share, loo
