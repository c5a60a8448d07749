"""How much the lab samples of new cores (data.test_labels) weigh in a closed-form fit, and its hyperparameters: one
rule for the baselines and the ridge head.

A few samples of a new core next to hundreds from other cores can be drowned (weighed like any row) or trusted
(together as much as all other rows); which is right depends on how far that core is from the others, and only
its own samples can tell. So each target takes the candidate (hyperparameters x share) with the lowest sum of two
mean squared errors: of the validation rows, and of the new rows each left out of the fit (each group counts
alike however many rows it has): the validation cores speak for cores like them, the new rows for the new cores
(chosen with the protocol simulated on the validation cores: docs/design-notes.md). The ridge head offers every
strength (one SVD gives them all); a baseline, whose grid would cost minutes of refits, offers per share the grid
point the validation rows choose.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Together, the new cores' samples weigh this share of all other rows (0: like any row).
NEW_CORE_SHARES = (0.0, 1 / 3, 1.0)


def can_choose(new: np.ndarray) -> bool:
    """Leave-one-out needs two new samples and other rows; otherwise every row weighs alike."""
    return int(new.sum()) >= 2 and bool((~new).any())


def share_weights(new: np.ndarray, share: float) -> np.ndarray:
    """Row weights: 1, the new rows together `share` times the number of other rows."""
    return np.where(new, share * (~new).sum() / max(int(new.sum()), 1), 1.0) if share else np.ones(len(new))


def choose_share(new: np.ndarray, y: np.ndarray,
                 fit: Callable[[np.ndarray | None], tuple[list, np.ndarray, Callable[[int], np.ndarray]]]):
    """The candidate with the lowest validation MSE + leave-one-out MSE over the new rows. `fit(w)` (w None: every
    row alike) fits every candidate (hyperparameter setting) under the row weights w and returns (their results,
    each one's validation MSE, predict_without(i): row i predicted by each candidate fitted without it). Returns
    (result, share, leave-one-out RMSE over the new rows); share and RMSE are None when there is nothing to choose
    (fewer than two new rows, or no other rows: the validation rows alone decide)."""
    if not can_choose(new):
        results, val_mse, _ = fit(None)
        return results[int(np.argmin(val_mse))], None, None
    rows, best = np.flatnonzero(new), None
    for share in NEW_CORE_SHARES:
        results, val_mse, predict_without = fit(share_weights(new, share) if share else None)
        loo_mse = np.mean([(np.asarray(predict_without(i), dtype=np.float64) - y[i]) ** 2 for i in rows], axis=0)
        score = val_mse + loo_mse
        k = int(np.argmin(score))
        if best is None or score[k] < best[0]:
            best = (score[k], results[k], share, float(np.sqrt(loo_mse[k])))
    return best[1:]
