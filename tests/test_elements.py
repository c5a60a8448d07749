"""Element intensities fitted from spectra (coremax.data.elements), tested against the simulator's truth."""

import numpy as np
import pandas as pd
import pytest

from coremax.data import elements as el
from coremax.data.simulate import plan_archive, simulate_core, simulate_spectra, true_line_counts

MAJORS = ("Al", "Si", "Cl", "K", "Ca", "Fe")


def _fit(sim, spectra=None, **kw):
    x = sim["spectra"][10.0] if spectra is None else spectra
    meta = pd.DataFrame({"core": sim["plan"].core, "scanner": sim["scanner"].head,
                         "live_time_s": sim["scanner"].live_time_s}, index=range(len(x)))
    return el.fit_elements(x, meta, 10.0, **kw)


@pytest.fixture(scope="module")
def fitted():
    """Every scanner head: three labelled cores (heads A-C) and a pool core of head D."""
    plans = [p for i, p in enumerate(plan_archive(0, 12)) if i in (0, 4, 7)] + [plan_archive(1, 12, False)[9]]
    truth, fits = [], []
    for plan in plans:
        sim = simulate_core(plan, spacing_mm=20.0)
        truth.append(true_line_counts(sim["fractions"], 10.0, sim["scanner"], sim["film_um"]))
        fits.append(_fit(sim).assign(true_offset=sim["scanner"].offset_kev, true_gain=sim["scanner"].gain_kev))
    return pd.concat(truth, ignore_index=True), pd.concat(fits, ignore_index=True)


def test_fitted_areas_follow_the_true_line_intensities(fitted):
    truth, fit = fitted
    assert fit["chi2"].median() < 1.6  # the model describes the spectra
    for element in MAJORS:
        assert np.corrcoef(fit[f"{element}_area"], truth[element])[0, 1] >= 0.99, element
    # Ti sits on Ca's tail and beside Ba's L lines: its area is as good as its counting noise allows
    r_ti = np.corrcoef(fit["Ti_area"], truth["Ti"])[0, 1]
    noisy = truth["Ti"] + np.random.default_rng(0).normal(0, 1, len(truth)) * fit["Ti_sd"]
    assert r_ti >= 0.98 and r_ti >= np.corrcoef(noisy, truth["Ti"])[0, 1] - 0.005


def test_the_run_calibration_is_found(fitted):
    _, fit = fitted
    assert np.abs(fit["offset_kev"] - fit["true_offset"]).max() < 0.008
    assert np.abs(fit["gain_kev"] / fit["true_gain"] - 1).max() < 0.002


def test_reported_sd_matches_the_scatter_of_repeated_measurements():
    """One spot measured 300 times: the spread of its fitted areas is the sd each fit reports (within 20 %)."""
    sim = simulate_core(plan_archive(0, 12)[4], spacing_mm=50.0)
    n = 300
    spectra = simulate_spectra(np.repeat(sim["fractions"][3:4], n, axis=0), 10.0, sim["scanner"],
                               np.random.default_rng(5), film_um=np.repeat(sim["film_um"][3:4], n))
    fit = _fit(sim, spectra)
    for element in (*MAJORS, "S", "Ti", "Mn", "coh"):
        ratio = fit[f"{element}_area"].std() / fit[f"{element}_sd"].mean()
        assert 0.8 <= ratio <= 1.2, (element, ratio)


def test_element_table_columns_and_groups():
    sim = simulate_core(plan_archive(0, 12)[0], spacing_mm=100.0)
    fit = _fit(sim)
    names = el.peak_groups(10.0).names
    assert {"Si", "Ca", "Fe", "Ba", "coh"} <= set(names) and "Br" not in names  # Br L sits on Al K at 10 kV
    assert {f"{n}_{k}" for n in names for k in ("area", "sd")} | {"chi2", "throughput_cps", "scatter_area"} \
        <= set(el.element_columns(fit))
    assert (fit["throughput_cps"] * sim["scanner"].live_time_s).round().eq(sim["spectra"][10.0].sum(axis=1)).all()
    assert (fit["Ca_sd"] > 0).all() and np.isfinite(fit.to_numpy(np.float64)).all()
