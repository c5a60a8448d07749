"""A physics-based synthetic XRF core scanner that writes genuine Avaatech .spe files and bulk tables.

By concern: physics.py (xraylib cross sections, the tube spectrum and its filter, detector efficiency),
scanner.py (scanner heads and the run settings at each tube voltage), sediment.py (composition and element
fractions), bromine.py (Br bound to marine organic carbon, for the two-voltage benchmark), spectra.py (element
fractions -> counts per channel), core.py (one core: plan, spectra, truth, lab samples) and archive.py (the
folders, files and manifest; the named benchmarks). Scanner settings (head, current, live time, resolution,
calibration) differ between cruises, and the calibration drifts slightly from core to core.
docs/concepts/synthetic-scanner.md says what is modelled and what is not.
"""

from coremax.data.simulate.archive import BENCHMARKS, file_name, section_label, simulate_archive
from coremax.data.simulate.core import (BULK_ELEMENTS, POOL_CRUISES, CorePlan, bulk_samples, default_test_cores,
                                        dense_samples, lab_values, plan_archive, simulate_core, window_mean)
from coremax.data.simulate.physics import (ELEMENTS, FILTERS, FLUORESCING, K_LINES, L_EMITTERS, L_LINES, MOLAR, Z,
                                           detector_efficiency, filter_transmission, line_table, physics,
                                           tube_spectrum)
from coremax.data.simulate.scanner import LAB_RUNS, LABELLED_HEADS, SCANNERS, RunSetting, Scanner, run_scanner
from coremax.data.simulate.sediment import (OXIDES, REGIONS, SEA_SALT, core_composition, dry_fractions,
                                            element_fractions, smooth_process)
from coremax.data.simulate.spectra import (CHUNK, ESCAPE_SHARE, channel_energies, detected_photons, escape_share,
                                           response, simulate_spectra, true_line_counts)

__all__ = ["BENCHMARKS", "BULK_ELEMENTS", "CHUNK", "ELEMENTS", "ESCAPE_SHARE", "FILTERS", "FLUORESCING", "K_LINES",
           "LABELLED_HEADS", "LAB_RUNS", "L_EMITTERS", "L_LINES", "MOLAR", "OXIDES", "POOL_CRUISES", "REGIONS",
           "SCANNERS", "SEA_SALT", "Z", "CorePlan", "RunSetting", "Scanner", "bulk_samples", "channel_energies",
           "core_composition", "default_test_cores", "dense_samples", "detected_photons", "detector_efficiency",
           "dry_fractions", "element_fractions", "escape_share", "file_name", "filter_transmission", "lab_values",
           "line_table", "physics", "plan_archive", "response", "run_scanner", "section_label", "simulate_archive",
           "simulate_core", "simulate_spectra", "smooth_process", "true_line_counts", "tube_spectrum",
           "window_mean"]
