"""Spectra on an energy axis: emission lines (xraylib), channel energies, simple peak areas, a labelled plot.

Prepared data sets do not store an energy calibration. Unless a scanner (whose simulated calibration is known)
or an explicit gain/offset is given, channel i is placed at the nominal `NOMINAL_GAIN_KEV * (i + 0.5)` keV,
i.e. 20 eV per channel and no offset. Real scanner heads differ from that by a few eV per channel, which
shifts lines at 10 keV by about a channel or two: good enough for labelling, not for calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xraylib as xrl

from coremax.plotting import new_figure, save
from coremax.data.runs import kv_tag
from coremax.data.simulate import SCANNERS
from coremax.errors import UserError

NOMINAL_GAIN_KEV = 0.02
NOMINAL_OFFSET_KEV = 0.0
# Elements seen in marine sediment spectra at 10 kV, and Rh from the tube.
MAIN_ELEMENTS = ("Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Mn", "Fe", "Br", "Rb", "Sr", "Zr", "Ba", "Rh")
# xraylib's intensity-weighted family lines (Ka = Ka1 + Ka2, Kb = Kb1 + Kb3 ..., La = La1 + La2).
LINES = {"Ka": xrl.KA_LINE, "Kb": xrl.KB_LINE, "La": xrl.LA_LINE}
EDGES = {"Ka": xrl.K_SHELL, "Kb": xrl.K_SHELL, "La": xrl.L3_SHELL}


def _atomic_number(element: str) -> int:
    try:
        return xrl.SymbolToAtomicNumber(element)
    except ValueError:
        raise UserError(f"{element!r} is not a chemical element symbol (write e.g. 'Ca' or 'Fe').") from None


def emission_lines(elements=MAIN_ELEMENTS, kv: float = 10.0, min_kev: float = 0.9) -> pd.DataFrame:
    """K-alpha, K-beta and L-alpha lines of `elements` that a tube at `kv` can excite (absorption edge below
    kv) and that lie between `min_kev` and kv: DataFrame element, line, energy_kev, sorted by energy."""
    rows = []
    for element in elements:
        z = _atomic_number(element)
        for line, code in LINES.items():
            try:
                edge, energy = xrl.EdgeEnergy(z, EDGES[line]), xrl.LineEnergy(z, code)
            except ValueError:  # the element has no such line (too light)
                continue
            if edge < kv and min_kev <= energy < kv:
                rows.append({"element": element, "line": line, "energy_kev": float(energy)})
    table = pd.DataFrame(rows, columns=["element", "line", "energy_kev"])
    return table.sort_values("energy_kev", ignore_index=True)


def energy_axis(source=None, length: int | None = None, gain_kev: float | None = None,
                offset_kev: float | None = None) -> np.ndarray:
    """Energy in keV of the centre of each channel: offset + gain * (i + 0.5).

    `source` may be a data set's info dict (from `load_info`: gives the length; it holds no calibration, so
    the nominal 0.02 keV/channel with offset 0 is used), a simulated `Scanner`, a scanner description from
    the `scanner` column (matched on the head name) or None. Explicit gain/offset win over everything.
    """
    gain, offset, n = NOMINAL_GAIN_KEV, NOMINAL_OFFSET_KEV, 2048
    if isinstance(source, dict):
        n = int(source.get("spectrum_length", n))
    elif isinstance(source, str):
        match = [s for s in SCANNERS if source.startswith(s.head)]
        if not match:
            raise UserError(f"The scanner {source!r} is not one of the simulated heads, so its calibration is "
                            "unknown; pass gain_kev and offset_kev (or no scanner for the nominal 20 eV/channel).")
        gain, offset = match[0].gain_kev, match[0].offset_kev
    elif source is not None:
        gain, offset = source.gain_kev, source.offset_kev
    gain = gain if gain_kev is None else gain_kev
    offset = offset if offset_kev is None else offset_kev
    n = n if length is None else int(length)
    return offset + gain * (np.arange(n) + 0.5)


def run_kvs(info: dict) -> list[float]:
    """The tube voltages of a data set's runs in stored order (info["runs"]), or its one run's info["kv"]."""
    return [float(k) for k in info.get("runs") or [info["kv"]]]


def run_spectra(info: dict, spectra) -> dict[float, np.ndarray]:
    """A data set's spectra per run, {kV: (n, spectrum_length)}: several runs lie side by side in each row."""
    kvs = run_kvs(info)
    return dict(zip(kvs, np.split(np.atleast_2d(np.asarray(spectra)), len(kvs), axis=1)))


def run_suffix(kv: float, kvs) -> str:
    """The file-name suffix of one run's figure: "-30kV" among several runs, nothing for a data set of one."""
    return f"-{kv_tag(kv)}" if len(kvs) > 1 else ""


def window_energy(window, energy) -> np.ndarray:
    """The energy (keV) of each column a model reads: its window's spans of the axis, run after run."""
    energy = np.asarray(energy, dtype=np.float64)
    return np.concatenate([energy[first:end] for first, end in window.spans])


def peak_areas(spectra, energy, elements=MAIN_ELEMENTS, half_width_kev: float = 0.1, kv: float = 10.0
               ) -> pd.DataFrame:
    """Net counts of each element's K-alpha (L-alpha when a tube at `kv` cannot excite K) per spectrum.

    Counts are summed over channels within +-half_width_kev of the line; the background is the mean count
    per channel in two flanking bands of the same width just below and above the window, times the number of
    window channels. Overlapping neighbours (e.g. K-beta of K under Ca K-alpha) are not separated.
    Returns a DataFrame (n, elements); elements with no line on the axis are left out.
    """
    x = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    energy = np.asarray(energy, dtype=np.float64)
    if x.shape[1] != energy.shape[0]:
        raise UserError(f"The spectra have {x.shape[1]} channels but the energy axis has {energy.shape[0]}; "
                        "build the axis with energy_axis(length=...) for these spectra.")
    lines = emission_lines(elements, kv=min(kv, float(energy[-1])), min_kev=float(energy[0]))
    out = {}
    for element in elements:
        own = lines[lines["element"] == element].set_index("line")["energy_kev"]
        centre = own.get("Ka", own.get("La"))
        if centre is None:
            continue
        window = np.abs(energy - centre) <= half_width_kev
        below = (energy < centre - half_width_kev) & (energy >= centre - 2 * half_width_kev)
        above = (energy > centre + half_width_kev) & (energy <= centre + 2 * half_width_kev)
        sides = [x[:, side].mean(axis=1) for side in (below, above) if side.any()]
        background = np.mean(sides, axis=0) if sides else np.zeros(len(x))
        out[element] = x[:, window].sum(axis=1) - background * window.sum()
    return pd.DataFrame(out)


def label_lines(ax, lines: pd.DataFrame, energy_range=None, fontsize: float = 7.0) -> None:
    """Dashed vertical lines with 'Ca Ka'-style labels along the top of an axes."""
    lo, hi = energy_range if energy_range is not None else ax.get_xlim()
    shown = lines[(lines["energy_kev"] >= lo) & (lines["energy_kev"] <= hi)]
    transform = ax.get_xaxis_transform()
    for k, row in enumerate(shown.itertuples()):
        ax.axvline(row.energy_kev, color="0.6", lw=0.6, ls="--", zorder=0)
        ax.text(row.energy_kev, 0.98 - 0.07 * (k % 3), f"{row.element} {row.line}", transform=transform,
                rotation=90, ha="right", va="top", fontsize=fontsize, color="0.3")


def plot_spectra(spectra, energy, path, labels=None, lines: pd.DataFrame | None = None, kv: float = 10.0,
                 log: bool = True, title: str = "") -> Path:
    """Spectra (n, L) against energy in keV with emission lines labelled (by default the K-alpha and L-alpha
    lines of MAIN_ELEMENTS excited at `kv`); writes a PNG and returns its path."""
    x = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    energy = np.asarray(energy, dtype=np.float64)
    if lines is None:  # K-beta lines would crowd the labels
        lines = emission_lines(kv=kv)
        lines = lines[lines["line"] != "Kb"]
    fig, axes = new_figure(1, 1, 10.0, 4.5)
    ax = axes[0, 0]
    for k, row in enumerate(x):
        ax.plot(energy, np.maximum(row, 0.5) if log else row, lw=0.8,
                label=None if labels is None else str(labels[k]))
    hi = min(float(energy[-1]), kv + 0.5)
    ax.set(xlim=(max(float(energy[0]), 0.5), hi), xlabel="energy (keV)", ylabel="counts", title=title)
    if log:
        ax.set_yscale("log")
    label_lines(ax, lines)
    if labels is not None:
        ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.75))
    return save(fig, path)
