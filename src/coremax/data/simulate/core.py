"""One core: its plan (region, head, length, seed), its composition, spectra at each tube voltage, and its lab
samples. Bulk samples integrate 1-2 cm, sit a few mm off in depth and carry lab error, so even a perfect model
has an error floor of a few wt% CaCO3.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from coremax.data.simulate import bromine
from coremax.data.simulate.physics import ELEMENTS
from coremax.data.simulate.scanner import LABELLED_HEADS, SCANNERS, Scanner, run_scanner
from coremax.data.simulate.sediment import REGIONS, core_composition, dry_fractions, element_fractions
from coremax.data.simulate.spectra import simulate_spectra

POOL_CRUISES = ("MD", "GeoB", "KN")  # pool cores are named apart from the labelled archive's SO/PS/M cores
BULK_ELEMENTS = ("Ca", "Fe", "Si", "K")  # element contents a lab also reports (dry wt%, e.g. ICP-OES)


@dataclass
class CorePlan:
    core: str
    region: str
    scanner: int
    length_mm: float
    seed: int
    head: Scanner | None = None  # a head of one's own (another instrument for shift tests) instead of SCANNERS'
    trace_ppm: bool = False  # Rb and Zr at the ppm REGIONS states (sediment.dry_fractions), not the default's 100x

    @property
    def scanner_head(self) -> Scanner:
        return self.head or SCANNERS[self.scanner]


def plan_archive(seed: int = 0, cores: int = 12, labelled: bool = True) -> list[CorePlan]:
    """Cores of an archive: regions and scanner heads in turn. A labelled archive uses heads A-C and the
    SO/PS/M cruises; an unlabelled pool every head (D only there) and cruises of its own, so no pool core can
    share a name with a labelled one."""
    rng = np.random.default_rng(seed)
    regions = list(REGIONS)
    cruises, heads = (("SO", "PS", "M"), LABELLED_HEADS) if labelled else (POOL_CRUISES, len(SCANNERS))
    plans = []
    for i in range(cores):
        region = regions[i % len(regions)]
        cruise = cruises[(i // len(regions)) % len(cruises)]
        plans.append(CorePlan(f"{cruise}{200 + i}-{10 + i}-1", region, (i // len(regions)) % heads,
                              float(rng.integers(150, 451) * 10), int(rng.integers(0, 2**31 - 1))))
    return plans


def default_test_cores(plans: list[CorePlan]) -> list[str]:
    """Held-out cores: every fourth core (the last one in a small archive). With the default 12 cores that is
    one core of each region, each measured with a different scanner setting, all of which also occur in
    training."""
    chosen = [p.core for i, p in enumerate(plans) if i % 4 == 3]
    return sorted(chosen or ([plans[-1].core] if len(plans) > 1 else []))


def window_mean(fine_values: pd.DataFrame, fine: np.ndarray, centres: np.ndarray, half) -> pd.DataFrame:
    """Mean of each column of a regular fine grid over [centre - half, centre + half] (cumulative sums)."""
    csum = np.vstack([np.zeros(fine_values.shape[1]), np.cumsum(fine_values.to_numpy(), axis=0)])
    lo = np.searchsorted(fine, centres - half, side="left")
    hi = np.maximum(np.searchsorted(fine, centres + half, side="right"), lo + 1)
    hi = np.minimum(hi, len(fine))
    lo = np.minimum(lo, hi - 1)
    return pd.DataFrame((csum[hi] - csum[lo]) / (hi - lo)[:, None], columns=fine_values.columns)


def simulate_core(plan: CorePlan, spacing_mm: float = 10.0, kvs=(10.0,), dense_lab: bool = False,
                  lab_runs: bool = False, marine_bromine: bool = False) -> dict:
    """Spectra, truth and bulk samples of one core. `lab_runs`: the runs at 30 and 50 kV with the lab's filter,
    current and live time (scanner.LAB_RUNS); `marine_bromine`: Br bound to marine organic carbon (bromine.py).
    Runs after the first and the marine bromine draw from random streams of their own, so the first run's
    spectra, the truth and the lab samples do not depend on how many runs there are."""
    rng = np.random.default_rng(plan.seed)
    # The energy calibration drifts a little between cores (measured weeks apart) around the head's setting.
    base = plan.scanner_head
    scanner = replace(base, gain_kev=base.gain_kev * (1 + rng.normal(0, 0.001)),
                      offset_kev=base.offset_kev + rng.normal(0, 0.003))
    fine = np.arange(0.0, plan.length_mm + 1.0, 1.0)  # 1 mm truth grid
    comp_fine = core_composition(fine, plan.region, rng)
    scan_depth = np.arange(spacing_mm / 2, plan.length_mm, spacing_mm)
    # A scan spot sees the slit width (~1 cm) plus cm-scale heterogeneity; the surface is wet and sometimes
    # rough or cracked (a water film of random thickness).
    comp = window_mean(comp_fine, fine, scan_depth, scanner.slit_dc_mm / 2)
    hetero = np.exp(rng.normal(0, 0.03, (len(comp), 1)))
    comp[["CaCO3", "opal"]] = comp[["CaCO3", "opal"]] * hetero
    comp["terrigenous"] = 100 - comp[["CaCO3", "opal", "pyrite", "barite"]].sum(axis=1) - comp["TOC"] * 1.9
    film = np.clip(rng.gamma(2.0, 1.5, len(comp)) + 3.0 * (comp["porosity"].to_numpy() - 0.4), 0, None)
    detrital_ca = rng.uniform(0.7, 1.3)
    if marine_bromine:
        br_rng = bromine.stream(plan.seed)
        marine = bromine.marine_split(comp_fine["TOC"].to_numpy(), fine, plan.region, br_rng)
        comp["TOC_marine"] = window_mean(marine, fine, scan_depth, scanner.slit_dc_mm / 2)["TOC_marine"]
        comp["Br_organic_ppm"] = bromine.organic_bromine(comp["TOC_marine"].to_numpy(), br_rng)
    w = element_fractions(comp, plan.region, detrital_ca, plan.trace_ppm)
    scanners = {kv: run_scanner(scanner, kv, lab_runs) for kv in kvs}
    streams = [np.random.default_rng([plan.seed, 3, run]) for run in range(len(kvs))]
    if marine_bromine or plan.trace_ppm or scanners[kvs[0]] != scanner:
        # The lab samples are drawn after the first run, and numpy's Poisson sampler takes a number of draws that
        # depends on the counts: the default archive's first run is drawn (and dropped) to keep its lab samples.
        plain = comp.drop(columns=["TOC_marine", "Br_organic_ppm"], errors="ignore")
        simulate_spectra(element_fractions(plain, plan.region, detrital_ca), kvs[0], scanner, rng, film_um=film)
    else:
        streams[0] = rng  # the default archive's first run
    spectra = {kv: simulate_spectra(w, kv, scanners[kv], streams[run], film_um=film) for run, kv in enumerate(kvs)}
    truth = pd.DataFrame({"core": plan.core, "depth_mm": scan_depth, "region": plan.region,
                          "scanner": scanner.head, "gain_kev": scanner.gain_kev, "offset_kev": scanner.offset_kev,
                          "water_film_um": film, **{c: comp[c] for c in comp.columns}})
    bulk = bulk_samples(plan, fine, comp_fine, rng, detrital_ca)
    dense = dense_samples(plan, fine, comp_fine, scan_depth, detrital_ca) if dense_lab else None
    return {"plan": plan, "spectra": spectra, "truth": truth, "bulk": bulk, "dense": dense, "scanner": scanner,
            "run_scanners": scanners, "fractions": w, "film_um": film}


def bulk_samples(plan: CorePlan, fine: np.ndarray, comp_fine: pd.DataFrame, rng,
                 detrital_ca: float = 1.0) -> pd.DataFrame:
    """Discrete lab samples every few cm to tens of cm: each integrates 1-2 cm, is registered a few mm off,
    and carries lab error; TOC is not measured on every sample."""
    depths, d = [], rng.uniform(20, 80)
    while d < plan.length_mm - 20:
        depths.append(d)
        d += rng.choice([rng.uniform(20, 60), rng.uniform(60, 200)], p=[0.7, 0.3])
    return lab_values(plan, fine, comp_fine, np.array(depths), rng, detrital_ca)


def dense_samples(plan: CorePlan, fine: np.ndarray, comp_fine: pd.DataFrame, depths: np.ndarray,
                  detrital_ca: float = 1.0) -> pd.DataFrame:
    """A lab sample at every scanned depth (bulk-dense.csv, for sampling studies): the lab of bulk_samples, with
    a random stream of its own so that the default archive's files do not change."""
    # registered within less than half the scan spacing, so that no two samples share a depth
    offset = 0.4 * float(np.diff(depths).min()) if len(depths) > 1 else None
    return lab_values(plan, fine, comp_fine, depths, np.random.default_rng([plan.seed, 1]), detrital_ca, offset)


def lab_values(plan: CorePlan, fine: np.ndarray, comp_fine: pd.DataFrame, mids: np.ndarray, rng,
               detrital_ca: float = 1.0, max_offset_mm: float | None = None) -> pd.DataFrame:
    """The lab's measurement of samples centred at `mids`, each registered a few mm off (at most `max_offset_mm`).
    Element contents (dry wt%, 2 % relative error) come last so that adding them left every other value of the
    archive as it was."""
    n = len(mids)
    true = window_mean(comp_fine, fine, mids, rng.uniform(5, 10, n))
    caco3, toc = true["CaCO3"].to_numpy(), true["TOC"].to_numpy()
    limit = np.inf if max_offset_mm is None else max_offset_mm
    offset = np.clip(rng.normal(0, 3.0, n), -limit, limit)  # drawn before the lab values: the order of draws stays
    samples = pd.DataFrame({
        "core": plan.core,
        "depth_mm": np.round(mids + offset, 1),
        "CaCO3": np.round(np.clip(caco3 + rng.normal(0, 1.0 + 0.02 * caco3), 0, 100), 2),
        "TOC": np.where(rng.random(n) > 0.15, np.round(toc + rng.normal(0, 0.04 + 0.05 * toc), 3), np.nan),
    })
    dry = dry_fractions(true, plan.region, detrital_ca, plan.trace_ppm) * 100
    for element in BULK_ELEMENTS:
        wt = dry[:, ELEMENTS.index(element)]
        samples[f"{element} (wt%)"] = np.round(wt * np.exp(rng.normal(0, 0.02, n)), 3)
    return samples
