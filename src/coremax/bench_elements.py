"""The element fit (coremax.data.elements) measured: against the simulator's truth on the embedded archive, and
its speed (scripts/bench_data.py --elements prints both; bench_data's pool run prints the speed at scale)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from coremax.data.elements import fit_elements
from coremax.data.simulate import (plan_archive, simulate_core, simulate_spectra, true_line_counts)

REPEATS = 300  # noisy measurements of one spot that the reported sd is compared with


def element_fit_seconds(meta: pd.DataFrame, counts: np.ndarray) -> tuple[float, int]:
    """Seconds to fit every spectrum (one calibration per run group, then batched solves) and the groups."""
    t0 = time.perf_counter()
    fit_elements(counts, meta, 10.0)
    return time.perf_counter() - t0, int(meta.groupby(["core", "scanner"]).ngroups)


def _meta(sim: dict, n: int) -> pd.DataFrame:
    return pd.DataFrame({"core": sim["plan"].core, "scanner": sim["scanner"].head,
                         "live_time_s": sim["scanner"].live_time_s}, index=range(n))


def against_truth(seed: int = 0, cores: int = 12, spacing_mm: float = 10.0, show=print) -> pd.DataFrame:
    """Per element: correlation of the fitted areas with the true photopeak counts over the archive's spectra
    (the embedded archive: seed 0, 12 cores, 1 cm), the fitted/true scale, and the spread of the areas of one spot
    measured REPEATS times over the sd each fit reports; plus spectra/s of the fit."""
    truth, fits, seconds = [], [], 0.0
    for plan in plan_archive(seed, cores):
        sim = simulate_core(plan, spacing_mm)  # the archive's own spectra, draw for draw
        x = sim["spectra"][10.0]
        t0 = time.perf_counter()
        fits.append(fit_elements(x, _meta(sim, len(x)), 10.0))
        seconds += time.perf_counter() - t0
        truth.append(true_line_counts(sim["fractions"], 10.0, sim["scanner"], sim["film_um"]))
    truth, fit = pd.concat(truth, ignore_index=True), pd.concat(fits, ignore_index=True)
    spot = simulate_core(plan_archive(seed, cores)[4], 50.0)
    repeated = simulate_spectra(np.repeat(spot["fractions"][3:4], REPEATS, axis=0), 10.0, spot["scanner"],
                                np.random.default_rng(5), film_um=np.repeat(spot["film_um"][3:4], REPEATS))
    again = fit_elements(repeated, _meta(spot, REPEATS), 10.0)
    rows = [{"element": e, "r": np.corrcoef(fit[f"{e}_area"], truth[e])[0, 1],
             "fitted/true": float(np.median(fit[f"{e}_area"] / truth[e].clip(lower=1e-9))),
             "true median counts": float(truth[e].median()),
             "scatter/sd (one spot)": again[f"{e}_area"].std() / again[f"{e}_sd"].mean()}
            for e in truth.columns if f"{e}_area" in fit.columns]
    table = pd.DataFrame(rows)
    show(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    show(f"{len(fit)} spectra of {cores} cores, reduced chi2 median {fit['chi2'].median():.2f}, "
         f"fit {len(fit) / seconds:.0f} spectra/s (one calibration per core)")
    return table
