"""Regression metrics against hand-computed values, and split-conformal coverage on synthetic residuals."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from coremax.stats.conformal import conformal_quantile, intervals
from coremax.stats.metrics import coverage
from coremax.stats.metrics import metrics_table, regression_metrics


def test_regression_metrics_by_hand():
    # truth 1, 2, 3, 4 (and a NaN row that must be ignored); errors +1, -1, 0, +2
    m = regression_metrics([1.0, 2.0, np.nan, 3.0, 4.0], [2.0, 1.0, 100.0, 3.0, 6.0])
    assert m["n"] == 4
    assert m["bias"] == pytest.approx(0.5)          # (1 - 1 + 0 + 2) / 4
    assert m["mae"] == pytest.approx(1.0)           # (1 + 1 + 0 + 2) / 4
    assert m["rmse"] == pytest.approx(math.sqrt(1.5))  # (1 + 1 + 0 + 4) / 4
    assert m["r2"] == pytest.approx(1 - 6.0 / 5.0)  # SS_tot of 1..4 around 2.5 is 5


def test_regression_metrics_degenerate_cases_give_nan_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = regression_metrics([np.nan, np.nan], [1.0, 2.0])
        const = regression_metrics([3.0, 3.0, 3.0], [3.0, 4.0, 2.0])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("r2", "rmse", "mae", "bias"))
    assert const["n"] == 3 and math.isnan(const["r2"])
    assert const["rmse"] == pytest.approx(math.sqrt(2 / 3)) and const["bias"] == 0.0


def test_metrics_table_rows_per_target_and_core_with_coverage():
    df = pd.DataFrame({
        "core": ["A", "A", "B", "B"],
        "CaCO3": [10.0, 20.0, 30.0, np.nan],
        "CaCO3_pred": [12.0, 20.0, 27.0, 5.0],
        "CaCO3_lo": [11.0, 15.0, 25.0, 0.0],
        "CaCO3_hi": [13.0, 25.0, 29.0, 10.0],
        "TOC": [1.0, 2.0, 3.0, 4.0],
        "TOC_pred": [1.0, 2.0, 3.0, 5.0],
    })
    t = metrics_table(df, ["CaCO3", "TOC"])
    assert list(t[["target", "scope"]].itertuples(index=False, name=None)) == [
        ("CaCO3", "all"), ("CaCO3", "A"), ("CaCO3", "B"), ("TOC", "all"), ("TOC", "A"), ("TOC", "B")]
    assert {"target", "scope", "n", "r2", "rmse", "mae", "bias", "coverage", "interval_width"} <= set(t.columns)
    ca = t.set_index(["target", "scope"]).loc["CaCO3"]
    assert ca.loc["all", "n"] == 3 and ca.loc["B", "n"] == 1
    assert ca.loc["all", "bias"] == pytest.approx((2 + 0 - 3) / 3)
    assert ca.loc["A", "rmse"] == pytest.approx(math.sqrt(2.0))
    # 10 not in [11, 13]; 20 in [15, 25]; 30 not in [25, 29]; the NaN-truth row does not count
    assert ca.loc["all", "coverage"] == pytest.approx(1 / 3)
    assert ca.loc["all", "interval_width"] == pytest.approx((2 + 10 + 4) / 3)
    assert math.isnan(ca.loc["B", "r2"])  # a single measurement has no spread
    toc = t[t["target"] == "TOC"]
    assert toc["coverage"].isna().all()  # TOC has no interval columns
    assert toc.set_index("scope").loc["A", "r2"] == pytest.approx(1.0)


def test_conformal_quantile_rank_nan_and_small_n():
    r = np.arange(1.0, 20.0)  # 19 residuals: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(r, alpha=0.1) == 18.0
    assert conformal_quantile(np.append(r, [np.nan, np.nan]), alpha=0.1) == 18.0
    assert conformal_quantile(np.arange(1.0, 10.0), alpha=0.1) == 9.0  # n=9: ceil(9.0) = 9, exactly n
    assert conformal_quantile(np.arange(1.0, 9.0), alpha=0.1) == math.inf  # n=8: ceil(8.1) = 9 > n
    assert conformal_quantile([], alpha=0.1) == math.inf


def test_intervals_and_coverage():
    lo, hi = intervals(np.array([1.0, 5.0, 0.0]), 2.0)
    assert lo.tolist() == [-1.0, 3.0, -2.0] and hi.tolist() == [3.0, 7.0, 2.0]
    assert coverage([0.0, 8.0, np.nan], lo, hi) == 0.5  # 0 in [-1, 3], 8 not in [3, 7], NaN ignored
    assert coverage([3.0, 3.0, 1.0], lo, hi) == 1.0   # the bounds themselves count as inside


def _heavy_tailed_run(seed: int, n_cal: int = 2000, n_test: int = 20000) -> float:
    """A regression with Student-t (3 dof) noise; the point predictor is the true mean function."""
    rng = np.random.default_rng(seed)
    x_cal, x_test = rng.uniform(0, 10, n_cal), rng.uniform(0, 10, n_test)
    f = lambda x: 3 * np.sin(x) + x  # noqa: E731
    y_cal = f(x_cal) + rng.standard_t(3, n_cal)
    y_test = f(x_test) + rng.standard_t(3, n_test)
    q = conformal_quantile(np.abs(y_cal - f(x_cal)), alpha=0.1)
    return coverage(y_test, *intervals(f(x_test), q))


def test_conformal_coverage_near_nominal_on_heavy_tails():
    assert abs(_heavy_tailed_run(0) - 0.90) < 0.02
    # the guarantee is >= nominal in expectation; the average over seeds must not fall short
    assert np.mean([_heavy_tailed_run(s) for s in range(1, 9)]) >= 0.895
