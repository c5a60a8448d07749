"""Element intensities from spectra: net peak areas, their counting errors and the fit's chi-square per spectrum,
the way a scanner lab's software (Avaatech's bAxil, PyMca) reduces each spectrum before calibrating.

Model of one spectrum (counts per channel): a smooth continuum (cubic B-splines in energy, knots every
`KNOT_KEV`) plus one peak group per element: its K lines (L lines where the K edge lies above the tube voltage)
at xraylib's energies, in xraylib's relative intensities, each a Gaussian of the Si drift detector's width
(electronic noise and Fano statistics) with its Si escape peak 1.74 keV below; plus the tube's Rh lines scattered
by the sample (`coh`; at 10 kV its Compton peak lies 14 eV below and is part of it). With the energy calibration
and the width fixed, the model is linear in the areas, so a whole batch is one weighted least-squares solve.
The calibration (offset, gain, electronic noise) is not in an Avaatech header: it is fitted per run group (the
spectra of one core, run and scanner setting, as a lab calibrates a run) on the group's summed spectrum.

Columns of the element table (one row per spectrum): `<El>_area`, `<El>_sd` (counts: the photopeaks' net area
and its 1 sigma from counting statistics), `coh_area`, `coh_sd`, `scatter_area`, `scatter_sd` (gross counts of
the continuum window SCATTER_WINDOW, a fraction of the tube voltage: scattered bremsstrahlung, mostly Compton),
`chi2` (reduced chi-square of the weighted fit), `throughput_cps` (all counts per live second), and the run
group's fitted `offset_kev`, `gain_kev`, `noise_kev`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import xraylib as xrl
from scipy.interpolate import BSpline
from scipy.optimize import least_squares

from coremax.errors import UserError

FANO, PAIR_EV = 0.115, 3.85            # Si: Fano factor and energy per electron-hole pair (eV)
SI_KA, SI_K_EDGE = 1.74, 1.839         # keV: an escape peak lies SI_KA below its parent, above the Si K edge
# What a marine-sediment configuration reports: K lines where the tube excites them, else L lines (peak_groups).
ELEMENTS = ("Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Ti", "Cr", "Mn", "Fe", "Ni", "Cu", "Zn", "Br", "Rb",
            "Sr", "Zr", "Ba")
K_FAMILY = (xrl.KL3_LINE, xrl.KL2_LINE, xrl.KM3_LINE, xrl.KM2_LINE)
L_FAMILY = (xrl.L3M5_LINE, xrl.L3M4_LINE, xrl.L2M4_LINE, xrl.L3N5_LINE, xrl.L2N4_LINE)
BETA = {xrl.KM3_LINE, xrl.KM2_LINE, xrl.L2M4_LINE, xrl.L3N5_LINE, xrl.L2N4_LINE}
L_MIN_KEV = 2.0                        # L lines are fitted only above this energy (Zr L-alpha 2.04 keV is)
TUBE_ANODE = 45                        # Rh
WINDOW_KEV = 0.9                       # the fit starts here: below it the He path and Be window pass nothing
KNOT_KEV = 0.6                         # continuum flexibility: several peak widths, so peaks are not absorbed
SCATTER_WINDOW = (0.80, 0.95)          # continuum window as fractions of the tube voltage (10 kV: 8-9.5 keV)
MIN_LINE = 0.01                        # lines below 1 % of their group's strongest are left out
NOMINAL = (0.0, 0.020, 0.10)           # offset keV, gain keV/channel, noise FWHM keV: where the search starts
MIN_FIT_CHANNELS = 100                  # channels inside the fit's energy range, well above its parameter count
REFINE_SIGMA = 30.0                    # a run refines a group's beta share when both parts are this well measured
REFINE_BAND = (0.5, 1.5)               # ... and the share stays within this factor of xraylib's
BATCH = 512                            # spectra per solve: bounds the (batch, parameters, channels) product


@dataclass(frozen=True)
class Peaks:
    names: tuple[str, ...]                        # element symbols, then "coh"
    # per name: its lines as (energy keV, relative weight, beta?), weights summing to 1; "beta" marks the lines
    # from outer shells (K-beta, L-beta/gamma), whose share of the group each run refines (refine_ratios)
    lines: tuple[tuple[tuple[float, float, bool], ...], ...]


@lru_cache(maxsize=16)
def peak_groups(kv: float, elements: tuple[str, ...] = ELEMENTS) -> Peaks:
    """The peak group of each element excited at `kv` with a line in the fitted range, and the tube's lines."""
    names, groups = [], []
    for symbol in elements:
        z = xrl.SymbolToAtomicNumber(symbol)
        k_excited = xrl.EdgeEnergy(z, xrl.K_SHELL) < kv
        family = K_FAMILY if k_excited else L_FAMILY
        excite = (xrl.EdgeEnergy(z, xrl.K_SHELL if k_excited else xrl.L3_SHELL) + kv) / 2  # a typical tube photon
        lines = []
        for code in family:
            try:
                lines.append((xrl.LineEnergy(z, code), xrl.CS_FluorLine_Kissel(z, code, excite), code in BETA))
            except ValueError:  # a line this element does not have, or not excited at that energy
                continue
        lines = [line for line in lines if line[1] > 0 and WINDOW_KEV < line[0] < kv]
        # L lines below L_MIN_KEV sit on the K lines of Al-P (Br L-alpha 7 eV from Al K-alpha): those elements
        # are measured by their K lines at a higher voltage, as labs do
        clear = k_excited or (xrl.EdgeEnergy(z, xrl.L3_SHELL) < kv and xrl.LineEnergy(z, xrl.L3M5_LINE) > L_MIN_KEV)
        if lines and clear:
            names.append(symbol)
            groups.append(_normalised(lines))
    tube = [(xrl.LineEnergy(TUBE_ANODE, code), xrl.RadRate(TUBE_ANODE, code), code in BETA) for code in
            ((xrl.L3M5_LINE, xrl.L2M4_LINE, xrl.L3M4_LINE) if kv < xrl.EdgeEnergy(TUBE_ANODE, xrl.K_SHELL)
             else (xrl.KL3_LINE, xrl.KL2_LINE, xrl.KM3_LINE))]
    return Peaks((*names, "coh"), (*groups, _normalised(tube)))


def _normalised(lines) -> tuple[tuple[float, float, bool], ...]:
    top = max(w for _, w, _ in lines)
    kept = [line for line in lines if line[1] >= MIN_LINE * top]
    total = sum(w for _, w, _ in kept)
    return tuple((float(e), float(w / total), bool(b)) for e, w, b in kept)


@lru_cache(maxsize=4096)
def escape_fraction(energy: float) -> float:
    """Share of photons whose Si K-alpha escapes the crystal (Reed's thick-detector estimate), 0 below the edge."""
    if energy <= SI_K_EDGE:
        return 0.0
    ratio = xrl.CS_Total(14, SI_KA) / xrl.CS_Total(14, float(energy))
    jump = 1 - 1 / xrl.JumpFactor(14, xrl.K_SHELL)
    return float(0.5 * xrl.FluorYield(14, xrl.K_SHELL) * jump * (1 - ratio * np.log1p(1 / ratio)))


@lru_cache(maxsize=256)
def _line_arrays(peaks: Peaks, split: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every photopeak and escape peak of every group: (centre keV, width energy keV), and the matrix that sums
    them, weighted, into their group (`split`: into its alpha and beta lines apart, two columns per group)."""
    centre, width, member, weight = [], [], [], []
    for g, group in enumerate(peaks.lines):
        for e, w, beta in group:
            esc = escape_fraction(e)
            column = 2 * g + beta if split else g
            centre += [e, e - SI_KA]
            width += [e, e]                      # an escape peak is as wide as its parent
            member += [column, column]
            weight += [w, w * esc / (1 - esc)]   # the area is the photopeak's: the escape comes on top
    sums = np.zeros((len(member), 2 * len(peaks.lines) if split else len(peaks.lines)))
    sums[np.arange(len(member)), member] = weight
    return np.array(centre), np.array(width), sums


def channel_energy(offset: float, gain: float, n: int) -> np.ndarray:
    return offset + gain * (np.arange(n) + 0.5)


def design(energy: np.ndarray, peaks: Peaks, noise: float, gain: float, kv: float, split: bool = False
           ) -> np.ndarray:
    """(channels, peak groups + continuum splines): counts per channel of a unit photopeak area of each group
    (its escape peaks on top), then the B-spline continuum basis over the fitted range."""
    centre, width, sums = _line_arrays(peaks, split)
    sigma = np.sqrt(noise ** 2 + 2.3548 ** 2 * FANO * PAIR_EV * 1e-3 * width) / 2.3548
    gauss = gain / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((energy[:, None] - centre) / sigma) ** 2)
    return np.hstack([gauss @ sums, continuum_basis(energy, kv)])


def continuum_basis(energy: np.ndarray, kv: float) -> np.ndarray:
    """Cubic B-splines with knots every KNOT_KEV from WINDOW_KEV to the tube voltage."""
    inner = np.linspace(WINDOW_KEV, kv, max(2, int(round((kv - WINDOW_KEV) / KNOT_KEV)) + 1))
    knots = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
    return BSpline.design_matrix(np.clip(energy, inner[0], inner[-1]), knots, 3).toarray()


def fit_range(offset: float, gain: float, n: int, kv: float) -> np.ndarray:
    energy = channel_energy(offset, gain, n)
    return np.flatnonzero((energy > WINDOW_KEV) & (energy < kv))


def fit_calibration(total: np.ndarray, kv: float, peaks: Peaks, start=NOMINAL) -> tuple[float, float, float]:
    """(offset, gain, noise FWHM) of a run from its summed spectrum: a coarse search of the offset, then least
    squares of all three with the areas solved inside (variable projection)."""
    n = len(total)
    rows = fit_range(*start[:2], n, kv)  # the same channels for every trial calibration
    y = total[rows]
    w = 1 / np.sqrt(np.maximum(y, 1.0))

    def residual(theta) -> np.ndarray:
        offset, gain, noise = theta
        a = design(channel_energy(offset, gain, n)[rows], peaks, abs(noise), gain, kv)
        aw = a * w[:, None]
        coef = np.linalg.solve(aw.T @ aw + 1e-9 * np.eye(a.shape[1]), aw.T @ (y * w))  # normal equations: fast
        return (a @ coef - y) * w

    grid = [(o, start[1], start[2]) for o in np.arange(-0.12, 0.121, 0.02)]  # offset first: gain errors are small
    best = min(grid, key=lambda t: float(np.sum(residual(t) ** 2)))
    found = least_squares(residual, best, x_scale=(0.01, 1e-4, 0.01), method="lm")
    offset, gain, noise = found.x
    return float(offset), float(gain), float(abs(noise))


def refine_ratios(total: np.ndarray, kv: float, calibration, peaks: Peaks) -> Peaks:
    """The beta lines' share of each group, fitted on a run's summed spectrum (matrix absorption and the detector
    change it from xraylib's ratio, and a model may lack a line); kept as computed where either part is not
    measured well (below REFINE_SIGMA sds), so weak and absent elements keep xraylib's ratio."""
    offset, gain, noise = calibration
    rows = fit_range(offset, gain, len(total), kv)
    a = design(channel_energy(offset, gain, len(total))[rows], peaks, noise, gain, kv, split=True)
    y = total[rows]
    w = 1 / np.maximum(y, 1.0)
    keep = np.flatnonzero(a.any(axis=0))  # a group without beta lines has an empty column
    normal = (a[:, keep] * w[:, None]).T @ a[:, keep]
    coef, sd = np.zeros(a.shape[1]), np.full(a.shape[1], np.inf)
    cov = np.linalg.inv(normal)
    coef[keep], sd[keep] = cov @ ((y * w) @ a[:, keep]), np.sqrt(np.clip(np.diag(cov), 0, None))
    groups = []
    for g, group in enumerate(peaks.lines):
        alpha, beta = coef[2 * g], coef[2 * g + 1]
        if min(alpha / sd[2 * g], beta / sd[2 * g + 1]) < REFINE_SIGMA:
            groups.append(group)
            continue
        # a column's coefficient is the group's area had all of it the part's lines' shape
        totals = {b: sum(x for _, x, is_beta in group if is_beta == b) for b in (False, True)}
        share = beta * totals[True] / (alpha * totals[False] + beta * totals[True])
        if not REFINE_BAND[0] <= share / totals[True] <= REFINE_BAND[1]:  # an overlap took it, not the element
            groups.append(group)
            continue
        groups.append(tuple((e, x * (share if b else 1 - share) / totals[b], b) for e, x, b in group))
    return Peaks(peaks.names, tuple(groups))


def fit_batch(counts: np.ndarray, kv: float, calibration, peaks: Peaks) -> pd.DataFrame:
    """Areas, sds and reduced chi-square of spectra sharing one calibration: an unweighted solve gives each
    spectrum's model, whose counts (Poisson variances) weigh the final solve; sd from that solve's covariance."""
    offset, gain, noise = calibration
    rows = fit_range(offset, gain, counts.shape[1], kv)
    a = design(channel_energy(offset, gain, counts.shape[1])[rows], peaks, noise, gain, kv)
    y = np.asarray(counts, dtype=np.float64)[:, rows]
    first = y @ np.linalg.pinv(a).T
    w = 1 / np.maximum(first @ a.T, 1.0)
    p = a.shape[1]
    normal = (w @ (a[:, :, None] * a[:, None, :]).reshape(len(rows), p * p)).reshape(-1, p, p)  # one product
    cov = np.linalg.inv(normal)
    coef = np.einsum("npq,nq->np", cov, (y * w) @ a)
    chi2 = ((y - coef @ a.T) ** 2 * w).sum(axis=1) / max(len(rows) - a.shape[1], 1)
    k = len(peaks.names)
    sd = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2)[:, :k], 0, None))
    out = {}
    for j, name in enumerate(peaks.names):
        out[f"{name}_area"], out[f"{name}_sd"] = coef[:, j], sd[:, j]
    out["chi2"] = chi2
    return pd.DataFrame(out)


def fit_elements(counts: np.ndarray, meta: pd.DataFrame, kv: float | None, elements: tuple[str, ...] = ELEMENTS,
                 groups: tuple[str, ...] = ("core", "scanner", "kv")) -> pd.DataFrame:
    """The element table of spectra (counts (n, channels), their metadata rows with live_time_s and the
    `groups` columns): one calibration per run group, fitted on its summed spectrum, then batched solves.
    `kv` None: each group at its rows' tube voltage (meta's kv column)."""
    counts = np.asarray(counts)
    keys = [c for c in groups if c in meta.columns]
    label = meta.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() if keys else np.zeros(len(meta), int)
    parts = []
    for group in pd.unique(label):
        idx = np.flatnonzero(label == group)
        group_kv = float(kv if kv is not None else meta["kv"].iloc[idx[0]])
        peaks = peak_groups(group_kv, tuple(elements))
        if len(fit_range(*NOMINAL[:2], counts.shape[1], group_kv)) < MIN_FIT_CHANNELS:
            raise UserError(f"The spectra have {counts.shape[1]} channels, too few for the element fit (it reads "
                            f"{WINDOW_KEV:g}-{group_kv:g} keV at about {NOMINAL[1] * 1000:g} eV per channel, at least "
                            f"{MIN_FIT_CHANNELS} channels); give the whole spectra of the scanner.")
        total = counts[idx].sum(axis=0, dtype=np.float64)
        calibration = fit_calibration(total, group_kv, peaks)
        refined = refine_ratios(total, group_kv, calibration, peaks)
        for start in range(0, len(idx), BATCH):
            rows = idx[start:start + BATCH]
            table = fit_batch(counts[rows], group_kv, calibration, refined)
            table.index = rows
            table[["offset_kev", "gain_kev", "noise_kev"]] = calibration
            table["scatter_area"], table["scatter_sd"] = _scatter(counts[rows], table, group_kv)
            parts.append(table)
    table = pd.concat(parts).sort_index() if parts else pd.DataFrame(index=pd.RangeIndex(0))
    live = meta["live_time_s"].to_numpy(np.float64) if "live_time_s" in meta.columns else np.ones(len(meta))
    table["throughput_cps"] = counts.sum(axis=1) / live
    table.index = meta.index
    return table


def _scatter(counts: np.ndarray, table: pd.DataFrame, kv: float) -> tuple[np.ndarray, np.ndarray]:
    """Gross counts of each spectrum in the continuum window SCATTER_WINDOW x kv (its run's calibration)."""
    energy = table["offset_kev"].to_numpy()[:, None] + table["gain_kev"].to_numpy()[:, None] * \
        (np.arange(counts.shape[1])[None] + 0.5)
    inside = (energy >= SCATTER_WINDOW[0] * kv) & (energy < SCATTER_WINDOW[1] * kv)
    gross = (counts * inside).sum(axis=1).astype(np.float64)
    return gross, np.sqrt(np.maximum(gross, 1.0))


def spectra_rows(meta: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """Newly read spectra as the rows a Predictor takes (coremax.eval.run): metadata, the counts as integer
    columns and their element table, fitted per run group at each row's tube voltage."""
    meta = meta.reset_index(drop=True)
    return pd.concat([meta, pd.DataFrame(counts, columns=list(range(counts.shape[1]))),
                      fit_elements(counts, meta, kv=None)], axis=1)


RUN_EXTRA = ("chi2", "throughput_cps", "offset_kev", "gain_kev", "noise_kev")  # per run, beside the areas
_RUN_TAG = re.compile(r"_\d+(?:\.\d+)?kV$")  # data sets of several runs name each run's columns: chi2_30kV


def element_columns(frame: pd.DataFrame) -> list[str]:
    """The element-table columns of a frame (areas, sds, chi2, throughput, the run's calibration; each run's
    in a data set of several runs: coremax.data.runs)."""
    return [c for c in frame.columns if isinstance(c, str) and (c.endswith(("_area", "_sd")) or
                                                                 _RUN_TAG.sub("", c) in RUN_EXTRA)]
