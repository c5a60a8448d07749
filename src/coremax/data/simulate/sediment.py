"""The sediment: regional composition, down-core series, and element mass fractions of the dry and wet sample.

CaCO3 (with Sr), biogenic opal, terrigenous clay/silt (regional composition, detrital Ca), organic matter (TOC,
seen by XRF only through the matrix and, site by site differently, through carbonate dilution, pyrite S and
barite Ba; with `marine_bromine`, also through the bromine of its marine part, bromine.py), and pore water with
sea salt. Down-core: cycles plus red noise, regional regimes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from coremax.data.simulate.physics import ELEMENTS, MOLAR

SEA_SALT = {"Cl": 19.35, "Na": 10.77, "S": 0.905, "Mg": 1.29, "K": 0.399, "Ca": 0.41, "Br": 0.067}  # g per kg water


REGIONS = {
    # terrigenous oxide wt% (sums to ~100 with the LOI-free remainder) and regime of the biogenic fractions
    "north-atlantic": dict(SiO2=60, Al2O3=15, K2O=3.2, TiO2=0.8, Fe2O3=6.5, MgO=2.5, Na2O=2.2, MnO=0.10, CaO=3.0,
                           Rb=130e-4, Zr=180e-4, caco3=(55, 25), toc=(0.35, 0.15), opal=(3, 2)),
    "upwelling": dict(SiO2=58, Al2O3=16, K2O=2.6, TiO2=0.9, Fe2O3=7.5, MgO=3.0, Na2O=2.6, MnO=0.06, CaO=4.0,
                      Rb=100e-4, Zr=150e-4, caco3=(30, 20), toc=(1.4, 0.5), opal=(12, 6)),
    "southern-ocean": dict(SiO2=64, Al2O3=14, K2O=2.3, TiO2=0.7, Fe2O3=5.5, MgO=2.2, Na2O=3.0, MnO=0.08, CaO=2.0,
                           Rb=90e-4, Zr=220e-4, caco3=(20, 18), toc=(0.5, 0.25), opal=(25, 12)),
}
OXIDES = {"SiO2": ("Si", 1, 2), "Al2O3": ("Al", 2, 3), "K2O": ("K", 2, 1), "TiO2": ("Ti", 1, 2),
          "Fe2O3": ("Fe", 2, 3), "MgO": ("Mg", 1, 1), "Na2O": ("Na", 2, 1), "MnO": ("Mn", 1, 1), "CaO": ("Ca", 1, 1)}


def smooth_process(depth_cm: np.ndarray, rng: np.random.Generator, periods=(20.0, 120.0), n_cycles: int = 3,
                   ar: float = 0.97) -> np.ndarray:
    """Zero-mean, unit-scale down-core signal: a few cycles (orbital-like) plus red (AR(1)) noise."""
    x = np.zeros_like(depth_cm, dtype=np.float64)
    for _ in range(n_cycles):
        period = rng.uniform(*periods)
        x += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * depth_cm / period + rng.uniform(0, 2 * np.pi))
    red = lfilter([1.0], [1.0, -ar], rng.normal(0, np.sqrt(1 - ar ** 2), len(x)))  # AR(1) recursion
    x = x / (np.std(x) + 1e-9) + 0.7 * red
    return x / (np.std(x) + 1e-9)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def core_composition(depth_mm: np.ndarray, region: str, rng: np.random.Generator) -> pd.DataFrame:
    """True dry-sediment composition (wt%) and porosity along a core at 1 mm resolution of `depth_mm`.

    TOC is made visible only indirectly, and differently at each site, as in nature: productivity raises TOC
    and opal and, by a site-specific amount, dilutes carbonate; preservation (redox, invisible to XRF) adds
    its own signal; pyrite and barite follow TOC with site-specific ratios."""
    r = REGIONS[region]
    d = depth_mm / 10.0
    carb_signal = smooth_process(d, rng)
    caco3 = np.clip(r["caco3"][0] * rng.uniform(0.8, 1.2) + r["caco3"][1] * carb_signal, 0.5, 90.0)
    anti = rng.uniform(-0.1, 0.7)  # how strongly productivity opposes carbonate at this site
    prod = _unit(np.sqrt(1 - anti ** 2) * smooth_process(d, rng) - anti * carb_signal)
    preservation = smooth_process(d, rng)
    toc_mean = r["toc"][0] * np.exp(rng.normal(0, 0.3))
    toc = np.clip(toc_mean * np.exp(r["toc"][1] / r["toc"][0] * (0.6 * prod + 0.8 * preservation)), 0.05, 6.0)
    opal_coupling = rng.uniform(0.2, 0.8)
    opal = np.clip(r["opal"][0] + r["opal"][1] * (opal_coupling * prod + (1 - opal_coupling)
                                                   * smooth_process(d, rng)), 0.0, 60.0)
    pyrite = np.clip(rng.uniform(0.15, 0.9) * toc * np.exp(0.3 * smooth_process(d, rng)), 0.0, None)  # wt% FeS2
    barite = np.clip(0.03 + rng.uniform(0.02, 0.12) * toc * np.exp(0.3 * smooth_process(d, rng)), 0.0, None)
    organic = toc * 1.9  # organic matter from organic carbon
    total_bio = caco3 + opal + organic + pyrite + barite
    caco3 = caco3 - np.clip(total_bio - 97.0, 0, None)  # leave at least 3 % terrigenous
    porosity = np.clip(0.72 - 0.08 * d / 100.0 + 0.04 * smooth_process(d, rng) + 0.002 * opal, 0.4, 0.8)
    return pd.DataFrame({"CaCO3": caco3, "TOC": toc, "opal": opal, "pyrite": pyrite, "barite": barite,
                         "terrigenous": 100 - (caco3 + opal + organic + pyrite + barite), "porosity": porosity})


def dry_fractions(comp: pd.DataFrame, region: str, detrital_ca_scale: np.ndarray | float = 1.0,
                  trace_ppm: bool = False) -> np.ndarray:
    """Mass fractions of ELEMENTS in the dry sediment (rows), from its composition (wt%) and, where `comp` has
    the column Br_organic_ppm (bromine.py), the bromine its organic matter carries. The default archive holds
    100 times the Rb and Zr that REGIONS states (about 0.3-0.5 wt% where clays carry 100-200 ppm), kept so that
    its files stay as they are; `trace_ppm` gives the stated contents (the two-voltage benchmark, whose 30 kV
    run is where Rb and Zr show)."""
    trace_units = 1.0 if trace_ppm else 100.0
    r = REGIONS[region]
    n = len(comp)
    dry = np.zeros((n, len(ELEMENTS)))
    ix = {e: i for i, e in enumerate(ELEMENTS)}

    def add(element, wt):
        dry[:, ix[element]] += wt / 100.0

    c = comp["CaCO3"].to_numpy()
    add("Ca", c * MOLAR["Ca"] / 100.09)
    add("C", c * MOLAR["C"] / 100.09)
    add("O", c * 3 * MOLAR["O"] / 100.09)
    add("Sr", c * 1.5e-3)  # biogenic calcite carries ~1500 ppm Sr
    o = comp["opal"].to_numpy()  # SiO2 . 0.4 H2O
    add("Si", o * MOLAR["Si"] / 67.3)
    add("O", o * (2.4 * MOLAR["O"]) / 67.3)
    add("H", o * 0.8 * MOLAR["H"] / 67.3)
    om = comp["TOC"].to_numpy() * 1.9  # CH2O-like organic matter with a little N
    add("C", om * 0.53)
    add("O", om * 0.37)
    add("H", om * 0.07)
    add("N", om * 0.03)
    py = comp["pyrite"].to_numpy()
    add("Fe", py * MOLAR["Fe"] / 119.98)
    add("S", py * 2 * MOLAR["S"] / 119.98)
    ba = comp["barite"].to_numpy()
    add("Ba", ba * MOLAR["Ba"] / 233.39)
    add("S", ba * MOLAR["S"] / 233.39)
    add("O", ba * 4 * MOLAR["O"] / 233.39)
    terr = comp["terrigenous"].to_numpy()
    oxide_total = sum(r[k] for k in OXIDES) + (r["Rb"] + r["Zr"]) * trace_units
    for oxide, (element, n_el, n_o) in OXIDES.items():
        share = r[oxide] / oxide_total * (detrital_ca_scale if element == "Ca" else 1.0)
        mw = n_el * MOLAR[element] + n_o * MOLAR["O"]
        add(element, terr * share * n_el * MOLAR[element] / mw)
        add("O", terr * share * n_o * MOLAR["O"] / mw)
    for trace in ("Rb", "Zr"):
        add(trace, terr * r[trace] * trace_units / oxide_total)
    if "Br_organic_ppm" in comp:
        add("Br", comp["Br_organic_ppm"].to_numpy() * 1e-4)
    return dry / dry.sum(axis=1, keepdims=True)


def element_fractions(comp: pd.DataFrame, region: str, detrital_ca_scale: np.ndarray | float = 1.0,
                      trace_ppm: bool = False) -> np.ndarray:
    """Mass fractions of ELEMENTS in the wet sample (rows), from dry composition (wt%) and porosity."""
    ix = {e: i for i, e in enumerate(ELEMENTS)}
    dry = dry_fractions(comp, region, detrital_ca_scale, trace_ppm)
    # Pore water: porosity (volume) -> water mass fraction, with sea salt.
    phi = comp["porosity"].to_numpy()
    water_mass = phi * 1.025 / (phi * 1.025 + (1 - phi) * 2.6)
    water = np.zeros(len(ELEMENTS))
    salt = sum(SEA_SALT.values()) / 1000
    water[ix["H"]] = (1 - salt) * 2 * MOLAR["H"] / 18.015
    water[ix["O"]] = (1 - salt) * MOLAR["O"] / 18.015
    for e, g in SEA_SALT.items():
        water[ix[e]] += g / 1000
    return dry * (1 - water_mass)[:, None] + water[None, :] * water_mass[:, None]
