"""Cross sections, the tube spectrum (with its filter) and the detector's efficiency, from xraylib.

Everything is tabulated once per tube voltage on an excitation energy grid and cached per process, so that a
core's spectra are vectorised: xraylib is called once per element, line and energy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import xraylib as xrl

from coremax.errors import UserError

ELEMENTS = ["H", "C", "N", "O", "Na", "Mg", "Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Mn", "Fe", "Br", "Rb", "Sr",
            "Zr", "Ba"]
Z = {e: xrl.SymbolToAtomicNumber(e) for e in ELEMENTS}
K_LINES = {"Ka1": xrl.KL3_LINE, "Ka2": xrl.KL2_LINE, "Kb1": xrl.KM3_LINE}
L_LINES = {"La1": xrl.L3M5_LINE, "Lb1": xrl.L2M4_LINE}
FLUORESCING = ["Na", "Mg", "Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Mn", "Fe", "Br", "Rb", "Sr", "Zr", "Ba"]
L_EMITTERS = ["Br", "Rb", "Sr", "Zr", "Ba"]
SIN_IN = SIN_OUT = np.sin(np.radians(45.0))
SCATTER_ANGLE = np.radians(90.0)
MOLAR = {e: xrl.AtomicWeight(Z[e]) for e in ELEMENTS}
# Primary-beam filters by the name the scanner writes into the file name: (element, thickness in um). Avaatech
# does not publish its filters' thicknesses; these are assumptions of the usual order (docs/concepts/
# synthetic-scanner.md). A Pd filter passes the Rh K lines (20.2 keV, below the Pd K edge at 24.35 keV) and
# removes the low-energy continuum that buries Br-Zr at 30 kV; Cu does the same for Ba at 50 kV.
FILTERS = {"No-Filter": None, "Pd-thick": ("Pd", 100.0), "Cu": ("Cu", 100.0)}


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


def filter_transmission(energies: np.ndarray, name: str) -> np.ndarray | None:
    """Share of the tube's photons of each energy that passes the primary-beam filter `name` (None: no filter)."""
    if name not in FILTERS:
        raise UserError(f"The tube filter {name!r} is unknown to the simulator; use one of {', '.join(FILTERS)}.")
    if FILTERS[name] is None:
        return None
    element, um = FILTERS[name]
    z = xrl.SymbolToAtomicNumber(element)
    density = xrl.ElementDensity(z)  # g/cm3
    return np.exp(-np.array([xrl.CS_Total(z, E) for E in np.atleast_1d(energies)]) * density * um * 1e-4)


@lru_cache(maxsize=16)
def tube_spectrum(kv: float, filter_name: str = "No-Filter") -> np.ndarray:
    """The tube's photons per energy bin of physics(kv) that reach the sample: through the filter, if any (the
    unfiltered spectrum is physics' own array, untouched)."""
    ph = physics(float(kv))
    passed = filter_transmission(ph["energies"], filter_name)
    return ph["tube"] if passed is None else ph["tube"] * passed


def detector_efficiency(energy: np.ndarray, be_um: float) -> np.ndarray:
    """Be window, 1 cm He path and a 450 um Si drift detector crystal."""
    e = np.atleast_1d(energy)
    be = np.exp(-np.array([xrl.CS_Total(4, x) for x in e]) * 1.848 * be_um * 1e-4)
    he = np.exp(-np.array([xrl.CS_Total(2, x) for x in e]) * 1.66e-4 * 1.0)
    si = 1 - np.exp(-np.array([xrl.CS_Total(14, x) for x in e]) * 2.33 * 0.045)
    return be * he * si
