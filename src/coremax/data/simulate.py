"""A physics-based synthetic XRF core scanner that writes genuine Avaatech .spe files and bulk tables.

Sediment: CaCO3 (with Sr), biogenic opal, terrigenous clay/silt (regional composition, detrital Ca), organic
matter (TOC, seen by XRF only through the matrix and, site by site differently, through carbonate dilution,
pyrite S and barite Ba), and pore water with sea salt. Down-core: cycles plus red noise, regional regimes.
Spectra: Rh tube (Kramers continuum through a Be window plus Rh L and K lines) -> first-order K and L
fluorescence in a thick sample with matrix absorption (xraylib cross sections) + Rayleigh and Compton scatter
of the tube spectrum -> a wet surface water film, He path and Be window -> Si drift detector efficiency,
Fano-limited Gaussian peaks and Si escape peaks -> channels (gain ~20 eV, offset) -> Poisson counts at the
live time and tube current. Scanner settings (head, current, live time, resolution, calibration) differ
between cruises, and the calibration drifts slightly from core to core. Bulk samples integrate 1-2 cm, sit
a few mm off in depth and carry lab error, so even a perfect model has an error floor of a few wt% CaCO3.
Everything is vectorised over the spectra of a core: xraylib is called once per element, line and energy.

Layout written by simulate_archive (and scripts/simulate.py): `<out>/raw/<core>/Run 1 at  10kV/*.spe`,
`<out>/bulk.csv` beside raw/, `<out>/truth.csv` (never read by training) and `<out>/manifest.toml`
(settings and the default held-out `test_cores`).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xraylib as xrl
from scipy.signal import lfilter

from coremax.data.elements import FANO, PAIR_EV
from coremax.data.spe import format_spe
from coremax.errors import UserError
from coremax.io import folder_in_place, write_toml

ELEMENTS = ["H", "C", "N", "O", "Na", "Mg", "Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Mn", "Fe", "Br", "Rb", "Sr",
            "Zr", "Ba"]
Z = {e: xrl.SymbolToAtomicNumber(e) for e in ELEMENTS}
K_LINES = {"Ka1": xrl.KL3_LINE, "Ka2": xrl.KL2_LINE, "Kb1": xrl.KM3_LINE}
L_LINES = {"La1": xrl.L3M5_LINE, "Lb1": xrl.L2M4_LINE}
FLUORESCING = ["Na", "Mg", "Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Mn", "Fe", "Br", "Rb", "Sr", "Zr", "Ba"]
L_EMITTERS = ["Br", "Rb", "Sr", "Zr", "Ba"]
SIN_IN = SIN_OUT = np.sin(np.radians(45.0))
SCATTER_ANGLE = np.radians(90.0)
SEA_SALT = {"Cl": 19.35, "Na": 10.77, "S": 0.905, "Mg": 1.29, "K": 0.399, "Ca": 0.41, "Br": 0.067}  # g per kg water
MOLAR = {e: xrl.AtomicWeight(Z[e]) for e in ELEMENTS}


# -- scanner ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scanner:
    """One scanner setting, as used on one cruise."""
    head: str
    current_ua: float
    live_time_s: float
    gain_kev: float          # energy per channel
    offset_kev: float        # energy of channel 0
    noise_fwhm_kev: float    # electronic noise part of the resolution
    be_window_um: float      # detector window
    sensitivity: float       # geometry and detector solid angle, relative
    slit_cc_mm: float = 12.0
    slit_dc_mm: float = 10.0
    filter: str = "No-Filter"
    section_in_mm: bool = False  # file names give the section start in mm (6 digits) instead of cm


SCANNERS = (
    Scanner("Avaatech head A (2008)", 1000.0, 10.0, 0.0200, -0.010, 0.110, 25.0, 1.00),
    Scanner("Avaatech head B (2014)", 600.0, 20.0, 0.0199, 0.005, 0.085, 12.5, 1.25),
    Scanner("Avaatech head C (2019)", 150.0, 10.0, 0.0201, -0.020, 0.070, 8.0, 1.60, section_in_mm=True),
    # Scanned only in unlabelled archives: a head no labelled core has, as in real archives of old cruises.
    Scanner("Avaatech head D (2011)", 800.0, 15.0, 0.0202, 0.000, 0.095, 15.0, 1.10),
)
LABELLED_HEADS = 3  # the labelled archive uses heads A-C; unlabelled pools use all of them
POOL_CRUISES = ("MD", "GeoB", "KN")  # pool cores are named apart from the labelled archive's SO/PS/M cores
ESCAPE_SHARE = 0.012  # Si K-alpha escape peak share just above the Si K edge
CHUNK = 256  # spectra simulated at once


def line_table(kv: float) -> pd.DataFrame:
    """Every K and L line excitable at `kv` of the fluorescing elements: element, line, energy, edge."""
    rows = []
    for e in FLUORESCING:
        for family, lines, shell in (("K", K_LINES, xrl.K_SHELL), ("L", L_LINES, xrl.L3_SHELL)):
            if family == "L" and e not in L_EMITTERS:
                continue
            try:
                edge = xrl.EdgeEnergy(Z[e], shell)
            except ValueError:
                continue
            if edge >= kv:
                continue
            for name, code in lines.items():
                try:
                    rows.append({"element": e, "line": name, "code": code, "energy": xrl.LineEnergy(Z[e], code),
                                 "edge": edge})
                except ValueError:
                    pass
    return pd.DataFrame(rows)


@lru_cache(maxsize=8)
def physics(kv: float, de: float = 0.05):
    """Cross-section tables on the excitation energy grid for one tube voltage (cached per process)."""
    energies = np.arange(1.0 + de / 2, kv, de)
    mu = np.array([[xrl.CS_Total(Z[e], E) for E in energies] for e in ELEMENTS])  # cm2/g, (elements, E)
    rayl = np.array([[xrl.CS_Rayl(Z[e], E) for E in energies] for e in ELEMENTS])
    compt = np.array([[xrl.CS_Compt(Z[e], E) for E in energies] for e in ELEMENTS])
    # Tube: Kramers continuum (E0 - E)/E through 125 um Be, plus Rh L lines and, above 23.2 keV, Rh K lines.
    be = np.exp(-np.array([xrl.CS_Total(4, E) for E in energies]) * 1.848 * 0.0125)
    tube = np.clip(kv - energies, 0, None) / energies * be * de
    rh_lines = [(xrl.LineEnergy(45, xrl.L3M5_LINE), 0.02 * kv), (xrl.LineEnergy(45, xrl.L2M4_LINE), 0.008 * kv)]
    if kv > xrl.EdgeEnergy(45, xrl.K_SHELL):
        over = (kv / xrl.EdgeEnergy(45, xrl.K_SHELL) - 1) ** 1.6
        rh_lines += [(xrl.LineEnergy(45, xrl.KL3_LINE), 1.2 * over), (xrl.LineEnergy(45, xrl.KM3_LINE), 0.25 * over)]
    for energy, weight in rh_lines:
        tube[np.argmin(abs(energies - energy))] += weight * np.interp(energy, energies, be)
    lines = line_table(kv)
    tau = np.zeros((len(lines), len(energies)))  # fluorescence line cross sections, cm2/g
    mu_line = np.zeros((len(lines), len(ELEMENTS)))  # attenuation of each line's photons by each element
    for i, row in enumerate(lines.itertuples()):
        for j, E in enumerate(energies):
            if E > row.edge:
                try:
                    tau[i, j] = xrl.CS_FluorLine_Kissel(Z[row.element], row.code, E)
                except ValueError:
                    pass
        mu_line[i] = [xrl.CS_Total(Z[e], row.energy) for e in ELEMENTS]
    compton_e = energies / (1 + energies / 511.0 * (1 - np.cos(SCATTER_ANGLE)))
    mu_compton = np.array([[xrl.CS_Total(Z[e], E) for E in compton_e] for e in ELEMENTS])
    water = {"H": 2 * 1.008 / 18.015, "O": 15.999 / 18.015}
    mu_water = np.array([sum(w * xrl.CS_Total(Z[e], E) for e, w in water.items()) for E in energies])
    return dict(energies=energies, mu=mu, rayl=rayl, compt=compt, tube=tube, lines=lines, tau=tau,
                mu_line=mu_line, compton_e=compton_e, mu_compton=mu_compton, mu_water=mu_water,
                mu_water_line=np.array([sum(w * xrl.CS_Total(Z[e], E) for e, w in water.items())
                                        for E in lines["energy"]]),
                mu_water_compton=np.array([sum(w * xrl.CS_Total(Z[e], E) for e, w in water.items())
                                           for E in compton_e]))


def detector_efficiency(energy: np.ndarray, be_um: float) -> np.ndarray:
    """Be window, 1 cm He path and a 450 um Si drift detector crystal."""
    e = np.atleast_1d(energy)
    be = np.exp(-np.array([xrl.CS_Total(4, x) for x in e]) * 1.848 * be_um * 1e-4)
    he = np.exp(-np.array([xrl.CS_Total(2, x) for x in e]) * 1.66e-4 * 1.0)
    si = 1 - np.exp(-np.array([xrl.CS_Total(14, x) for x in e]) * 2.33 * 0.045)
    return be * he * si


# -- sediment ---------------------------------------------------------------------------------------------------
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


def dry_fractions(comp: pd.DataFrame, region: str, detrital_ca_scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Mass fractions of ELEMENTS in the dry sediment (rows), from its composition (wt%)."""
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
    oxide_total = sum(r[k] for k in OXIDES) + (r["Rb"] + r["Zr"]) * 100
    for oxide, (element, n_el, n_o) in OXIDES.items():
        share = r[oxide] / oxide_total * (detrital_ca_scale if element == "Ca" else 1.0)
        mw = n_el * MOLAR[element] + n_o * MOLAR["O"]
        add(element, terr * share * n_el * MOLAR[element] / mw)
        add("O", terr * share * n_o * MOLAR["O"] / mw)
    for trace in ("Rb", "Zr"):
        add(trace, terr * r[trace] * 100 / oxide_total)
    return dry / dry.sum(axis=1, keepdims=True)


def element_fractions(comp: pd.DataFrame, region: str, detrital_ca_scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Mass fractions of ELEMENTS in the wet sample (rows), from dry composition (wt%) and porosity."""
    ix = {e: i for i, e in enumerate(ELEMENTS)}
    dry = dry_fractions(comp, region, detrital_ca_scale)
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


# -- spectra ----------------------------------------------------------------------------------------------------
def simulate_spectra(w: np.ndarray, kv: float, scanner: Scanner, rng: np.random.Generator, film_um=None,
                     live_time_s: float | None = None, n_channels: int = 2048, poisson: bool = True) -> np.ndarray:
    """Counts (n, n_channels) for wet-sample element fractions `w` (n, elements) at tube voltage `kv`."""
    n = w.shape[0]
    if n > CHUNK:  # bound the (spectra, lines, energies) arrays for long, densely scanned cores
        film = np.zeros(n) if film_um is None else np.asarray(film_um, dtype=np.float64)
        return np.concatenate([simulate_spectra(w[i:i + CHUNK], kv, scanner, rng, film[i:i + CHUNK], live_time_s,
                                                n_channels, poisson) for i in range(0, n, CHUNK)])
    lines, rayl, compt = detected_photons(w, kv, scanner, film_um, live_time_s)
    # Nothing lies above the tube voltage: only the channels below it (plus a peak width) are computed.
    used = min(n_channels, int(np.ceil((kv + 1.0 - scanner.offset_kev) / scanner.gain_kev)))
    expected = lines @ response(kv, "lines", scanner, used)
    expected += rayl @ response(kv, "energies", scanner, used)
    expected += compt @ response(kv, "compton_e", scanner, used)
    # Pile-up and incomplete charge collection: a weak flat shelf below each spectrum's total.
    expected += 2e-5 * expected.sum(axis=1, keepdims=True) / used * (channel_energies(scanner, used) < kv)[None]
    expected = np.clip(expected, 0, None)
    out = np.zeros((n, n_channels))
    out[:, :used] = rng.poisson(expected) if poisson else expected
    return out


def detected_photons(w: np.ndarray, kv: float, scanner: Scanner, film_um=None, live_time_s: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected detected photons before the detector's response: per fluorescence line of physics(kv)["lines"]
    (n, lines), and the Rayleigh and Compton scatter of the tube spectrum per energy bin (n, E)."""
    n = w.shape[0]
    ph = physics(float(kv))
    live = scanner.live_time_s if live_time_s is None else live_time_s
    film = np.zeros(n) if film_um is None else np.asarray(film_um, dtype=np.float64)
    mu_in = w @ ph["mu"]  # (n, E)
    lines = ph["lines"]
    mu_out_lines = w @ ph["mu_line"].T  # (n, lines)
    # Thin water film on the wet surface: absorbs low-energy photons on the way in and out.
    film_cm = film[:, None] * 1e-4
    t_in = np.exp(-ph["mu_water"][None] * film_cm / SIN_IN)
    excitation = ph["tube"][None] * t_in  # (n, E)
    # First-order fluorescence of each line in a thick sample.
    el_index = np.array([ELEMENTS.index(e) for e in lines["element"]])
    denom = mu_in[:, None, :] / SIN_IN + mu_out_lines[:, :, None] / SIN_OUT  # (n, lines, E)
    fluor = w[:, el_index] * np.einsum("ne,le,nle->nl", excitation, ph["tau"], 1.0 / denom)
    fluor *= np.exp(-ph["mu_water_line"][None] * film_cm / SIN_OUT)
    # Scatter of the tube spectrum: Rayleigh at E, Compton at the shifted energy (90 degrees).
    rayl = (w @ ph["rayl"]) * excitation / (mu_in / SIN_IN + mu_in / SIN_OUT)
    rayl *= np.exp(-ph["mu_water"][None] * film_cm / SIN_OUT)
    mu_c = w @ ph["mu_compton"]
    compt = (w @ ph["compt"]) * excitation / (mu_in / SIN_IN + mu_c / SIN_OUT)
    compt *= np.exp(-ph["mu_water_compton"][None] * film_cm / SIN_OUT)
    scale = 2.6e5 * scanner.sensitivity * scanner.current_ua / 1000.0 * live
    eff_lines = detector_efficiency(lines["energy"].to_numpy(), scanner.be_window_um)
    eff_e = detector_efficiency(ph["energies"], scanner.be_window_um)
    eff_c = detector_efficiency(ph["compton_e"], scanner.be_window_um)
    return fluor * eff_lines[None] * scale, rayl * eff_e[None] * scale * 4.0, compt * eff_c[None] * scale * 4.0


def true_line_counts(w: np.ndarray, kv: float, scanner: Scanner, film_um=None) -> pd.DataFrame:
    """Each element's expected photopeak counts before counting noise (its lines summed, escape peaks not
    counted): the truth an element fit is tested against. Columns: the fluorescing elements excited at `kv`."""
    lines = physics(float(kv))["lines"]
    energy = lines["energy"].to_numpy()
    counts = detected_photons(w, kv, scanner, film_um)[0] * (1 - escape_share(energy))[None]
    return pd.DataFrame(counts, columns=lines["element"].to_numpy()).T.groupby(level=0, sort=False).sum().T


def escape_share(energies: np.ndarray) -> np.ndarray:
    """Share of photons of each energy that lands in the Si escape peak 1.74 keV below (none below the Si K edge)."""
    return np.where(energies > 1.839, ESCAPE_SHARE * np.exp(-(energies - 1.839) / 6.0), 0.0)


def channel_energies(scanner: Scanner, n_channels: int = 2048) -> np.ndarray:
    """Energy calibration: the centre of each channel, keV."""
    return scanner.offset_kev + scanner.gain_kev * (np.arange(n_channels) + 0.5)


@lru_cache(maxsize=64)
def response(kv: float, source: str, scanner: Scanner, n_channels: int = 2048) -> np.ndarray:
    """Detector response (photon energies of `source` in physics(kv), channels): Gaussian peaks with
    Fano-limited width, plus the Si K-alpha escape peak 1.74 keV below for photons above the Si K edge."""
    ph = physics(float(kv))
    energies = ph["lines"]["energy"].to_numpy() if source == "lines" else ph[source]
    channels = channel_energies(scanner, n_channels)
    fwhm = np.sqrt(scanner.noise_fwhm_kev ** 2 + 2.3548 ** 2 * FANO * PAIR_EV * 1e-3 * energies)
    sigma = fwhm / 2.3548
    escape = escape_share(energies)
    out = np.zeros((len(energies), n_channels))
    for centre, frac in ((energies, 1 - escape), (energies - 1.74, escape)):
        out += frac[:, None] * scanner.gain_kev / (np.sqrt(2 * np.pi) * sigma[:, None]) * \
            np.exp(-0.5 * ((channels[None] - centre[:, None]) / sigma[:, None]) ** 2)
    return out


# -- archive ----------------------------------------------------------------------------------------------------
@dataclass
class CorePlan:
    core: str
    region: str
    scanner: int
    length_mm: float
    seed: int
    head: Scanner | None = None  # a head of one's own (another instrument for shift tests) instead of SCANNERS'

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


def simulate_core(plan: CorePlan, spacing_mm: float = 10.0, kvs=(10.0,), dense_lab: bool = False) -> dict:
    """Spectra, truth and bulk samples of one core."""
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
    w = element_fractions(comp, plan.region, detrital_ca)
    spectra = {}
    for kv in kvs:
        spectra[kv] = simulate_spectra(w, kv, scanner, rng, film_um=film)
    truth = pd.DataFrame({"core": plan.core, "depth_mm": scan_depth, "region": plan.region,
                          "scanner": scanner.head, "gain_kev": scanner.gain_kev, "offset_kev": scanner.offset_kev,
                          "water_film_um": film, **{c: comp[c] for c in comp.columns}})
    bulk = bulk_samples(plan, fine, comp_fine, rng, detrital_ca)
    dense = dense_samples(plan, fine, comp_fine, scan_depth, detrital_ca) if dense_lab else None
    return {"plan": plan, "spectra": spectra, "truth": truth, "bulk": bulk, "dense": dense, "scanner": scanner,
            "fractions": w, "film_um": film}


BULK_ELEMENTS = ("Ca", "Fe", "Si", "K")  # element contents a lab also reports (dry wt%, e.g. ICP-OES)


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
    dry = dry_fractions(true, plan.region, detrital_ca) * 100
    for element in BULK_ELEMENTS:
        wt = dry[:, ELEMENTS.index(element)]
        samples[f"{element} (wt%)"] = np.round(wt * np.exp(rng.normal(0, 0.02, n)), 3)
    return samples


def section_label(start_mm: int, scanner: Scanner) -> str:
    """Section start as labs write it in file names: 4-digit cm, or 6-digit mm on some cruises."""
    return f"{start_mm:06d}" if scanner.section_in_mm else f"{start_mm // 10:04d}"


def file_name(core: str, section: str, pos_mm: float, scanner: Scanner, kv: float) -> str:
    return (f"{core}_{section} {pos_mm:6.1f}mm  {scanner.live_time_s:g}s  {kv:g}kV "
            f"{scanner.current_ua:g}uA {scanner.filter}.spe")


def _write_core(args) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    plan, out, spacing_mm, kvs, section_mm, dense_lab = args
    sim = simulate_core(plan, spacing_mm, kvs, dense_lab)
    scanner = sim["scanner"]
    truth = sim["truth"]
    files = []
    for run, kv in enumerate(kvs, 1):
        folder = out / "raw" / plan.core / f"Run {run} at  {kv:g}kV"
        folder.mkdir(parents=True, exist_ok=True)
        for i, depth in enumerate(truth["depth_mm"]):
            start_mm = int(depth // section_mm * section_mm)
            section, pos = section_label(start_mm, scanner), depth - start_mm
            counts = sim["spectra"][kv][i]
            meta = {"spec_id": f"{plan.core} {depth:.0f}", "spec_rem": scanner.head,
                    "date": f"0{1 + plan.scanner}-15-20{10 + plan.scanner * 4} 12:00:00",
                    "live_time_s": scanner.live_time_s, "real_time_s": round(scanner.live_time_s * 1.08, 2),
                    "kv": kv, "current_ma": scanner.current_ua / 1000, "core_id": plan.core,
                    "section_id": section, "header_depth": round(depth, 1), "run_id": str(run),
                    "x_position": round(pos, 1), "y_position": 0.0, "replicate_id": "1",
                    "slit_dc_mm": scanner.slit_dc_mm, "slit_cc_mm": scanner.slit_cc_mm,
                    "total_cps": counts.sum() / scanner.live_time_s, "user_id": "coremax-simulator"}
            name = file_name(plan.core, section, pos, scanner, kv)
            (folder / name).write_bytes(format_spe(counts, meta).encode("utf-8"))
            if run == 1:
                files.append(f"{plan.core}/{folder.name}/{name}")
    truth["source_file"] = files
    return truth, sim["bulk"], sim["dense"]


def simulate_archive(out: str | os.PathLike, seed: int = 0, cores: int = 12, spacing_mm: float = 10.0,
                     kvs=(10.0,), workers: int = 2, section_mm: float = 1500.0, overwrite: bool = False,
                     labelled: bool = True, dense_lab: bool = False, head: Scanner | None = None) -> dict:
    """Write `<out>/raw/<core>/Run 1 at  10kV/*.spe`, `<out>/bulk.csv` (beside raw/), `<out>/truth.csv` (true
    composition of every spectrum, for tests and analysis only) and `<out>/manifest.toml` (settings and the
    default held-out `test_cores`). The archive is built in a temporary folder and renamed into place.
    `labelled=False` writes an unlabelled pool ("forgotten spectra"): same physics, every scanner head, cores
    named apart, no bulk.csv and no test cores. `dense_lab` also writes `<out>/bulk-dense.csv`, a lab sample at
    every scanned depth, so that a sampling study can "send" any depth to the lab, and `<out>/bulk-newcores-dense.csv`,
    the lab table of that study: bulk.csv's samples of the other cores and a sample at every depth of the test
    cores; the other files stay as they are without it. `head` scans every core with that scanner instead of the
    archive's heads (another instrument: the shift checks' tests)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"The folder {out} already exists; pass --overwrite to replace it or choose another --out.")
    if cores < 1 or spacing_mm <= 0:
        raise UserError(f"--cores {cores} and --spacing-mm {spacing_mm} must be positive.")
    plans = [replace(p, head=head) for p in plan_archive(seed, cores, labelled)]
    with folder_in_place(out) as tmp:
        jobs = [(p, tmp, spacing_mm, tuple(float(k) for k in kvs), section_mm, dense_lab and labelled) for p in plans]
        if workers > 1 and len(plans) > 1:
            with ProcessPoolExecutor(min(workers, len(plans))) as pool:
                parts = list(pool.map(_write_core, jobs))
        else:
            parts = [_write_core(j) for j in jobs]
        truth = pd.concat([t for t, _, _ in parts], ignore_index=True)
        bulk = pd.concat([b for _, b, _ in parts], ignore_index=True)
        truth.to_csv(tmp / "truth.csv", index=False)
        if labelled:
            bulk.to_csv(tmp / "bulk.csv", index=False)
        test_cores = default_test_cores(plans) if labelled else []
        if labelled and dense_lab:
            dense = pd.concat([d for _, _, d in parts], ignore_index=True)
            dense.to_csv(tmp / "bulk-dense.csv", index=False)
            pd.concat([bulk[~bulk["core"].isin(test_cores)], dense[dense["core"].isin(test_cores)]],
                      ignore_index=True).to_csv(tmp / "bulk-newcores-dense.csv", index=False)
        manifest = {"generator": "coremax.data.simulate", "seed": seed, "cores": cores, "spacing_mm": spacing_mm,
                    "kv": [float(k) for k in kvs], "spectra": len(truth), "labelled": labelled,
                    "bulk_samples": len(bulk) if labelled else 0,
                    "test_cores": test_cores,
                    "core_regions": {p.core: p.region for p in plans},
                    "core_scanners": {p.core: p.scanner_head.head for p in plans},
                    "scanners": {s.head: {k: v for k, v in asdict(s).items() if k != "head"}
                                 for s in {p.scanner_head: None for p in plans}}}
        write_toml(tmp / "manifest.toml", manifest)
    return manifest
