"""Scanner heads (one per cruise) and the run settings a lab uses at each tube voltage."""

from __future__ import annotations

from dataclasses import dataclass, replace


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
    filter: str = "No-Filter"  # primary-beam filter, a name of physics.FILTERS
    section_in_mm: bool = False  # file names give the section start in mm (6 digits) instead of cm


SCANNERS = (
    Scanner("Avaatech head A (2008)", 1000.0, 10.0, 0.0200, -0.010, 0.110, 25.0, 1.00),
    Scanner("Avaatech head B (2014)", 600.0, 20.0, 0.0199, 0.005, 0.085, 12.5, 1.25),
    Scanner("Avaatech head C (2019)", 150.0, 10.0, 0.0201, -0.020, 0.070, 8.0, 1.60, section_in_mm=True),
    # Scanned only in unlabelled archives: a head no labelled core has, as in real archives of old cruises.
    Scanner("Avaatech head D (2011)", 800.0, 15.0, 0.0202, 0.000, 0.095, 15.0, 1.10),
)
LABELLED_HEADS = 3  # the labelled archive uses heads A-C; unlabelled pools use all of them


@dataclass(frozen=True)
class RunSetting:
    """The tube current, live time and filter of the runs at one tube voltage (the head's own at 10 kV)."""
    current_ua: float
    live_time_s: float
    filter: str


# The heavy-element runs as Avaatech labs set them (docs/concepts/synthetic-scanner.md gives the sources): a
# filter against the low-energy continuum, more current to make up for what it absorbs, and a longer count.
LAB_RUNS = {30.0: RunSetting(1500.0, 20.0, "Pd-thick"), 50.0: RunSetting(1000.0, 20.0, "Cu")}


def run_scanner(scanner: Scanner, kv: float, lab_runs: bool) -> Scanner:
    """The scanner as set for the run at `kv`: with `lab_runs`, LAB_RUNS' current, live time and filter; else
    (and at voltages LAB_RUNS does not name) the head's own, as every run of the default archive."""
    setting = LAB_RUNS.get(float(kv)) if lab_runs else None
    if setting is None:
        return scanner
    return replace(scanner, current_ua=setting.current_ua, live_time_s=setting.live_time_s, filter=setting.filter)
