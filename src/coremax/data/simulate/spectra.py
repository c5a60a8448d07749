"""From a sample's element fractions to detected counts per channel.

Tube spectrum (through its filter) -> first-order K and L fluorescence in a thick sample with matrix absorption
+ Rayleigh and Compton scatter of the tube spectrum -> a wet surface water film, He path and Be window -> Si
drift detector efficiency, Fano-limited Gaussian peaks and Si escape peaks -> channels (gain ~20 eV, offset) ->
Poisson counts at the live time and tube current.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from coremax.data.elements import FANO, PAIR_EV
from coremax.data.simulate.physics import ELEMENTS, SIN_IN, SIN_OUT, detector_efficiency, physics, tube_spectrum
from coremax.data.simulate.scanner import Scanner

ESCAPE_SHARE = 0.012  # Si K-alpha escape peak share just above the Si K edge
CHUNK = 256  # spectra simulated at once


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
    excitation = tube_spectrum(float(kv), scanner.filter)[None] * t_in  # (n, E)
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
