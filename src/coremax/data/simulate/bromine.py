"""Bromine bound to marine organic matter (the two-voltage benchmark's `marine_bromine`).

Marine organic matter carries bromine, terrestrial organic matter hardly any, so scanner labs read Br counts
(30 kV) as a marine organic carbon proxy (Ziegler et al. 2008; Br:OC as a source indicator: Mayer et al. 2007).
Here the TOC of the default archive is split into a marine and a terrestrial part, and the marine part carries
Br in a ratio of published order (docs/concepts/synthetic-scanner.md gives the sources) with a site-level and a
spot-level lognormal scatter. The sea-salt Br of the pore water (sediment.SEA_SALT) comes on top.
Every draw comes from a random stream of its own, so the archive's other values are those of the default one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.data.simulate.sediment import smooth_process

BR_PER_MARINE_TOC = 70.0  # ppm Br of the dry sediment per wt% marine organic carbon (7 mg Br per g C)
SITE_SCATTER = 0.25  # lognormal sigma of a site's Br:C ratio (source mix, diagenesis)
SPOT_SCATTER = 0.15  # lognormal sigma from spot to spot (cm-scale heterogeneity of the organic matter)
# Mean share of marine organic carbon in the TOC of each region; it varies down-core by about +-0.1.
MARINE_SHARE = {"north-atlantic": 0.7, "upwelling": 0.9, "southern-ocean": 0.8}


def stream(seed: int) -> np.random.Generator:
    """The random stream of a core's marine bromine, apart from the default archive's draws."""
    return np.random.default_rng([seed, 2])


def marine_split(toc: np.ndarray, depth_mm: np.ndarray, region: str, rng: np.random.Generator) -> pd.DataFrame:
    """TOC_marine (wt%) along a core on the grid `depth_mm`: the marine share of the TOC, varying down-core."""
    share = np.clip(MARINE_SHARE[region] + 0.1 * smooth_process(depth_mm / 10.0, rng), 0.3, 0.98)
    return pd.DataFrame({"TOC_marine": np.asarray(toc) * share})


def organic_bromine(toc_marine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Br_organic_ppm at the scan spots: the site's Br:C ratio times the marine TOC, with lognormal scatter."""
    site = BR_PER_MARINE_TOC * np.exp(rng.normal(0.0, SITE_SCATTER))
    return site * np.asarray(toc_marine) * np.exp(rng.normal(0.0, SPOT_SCATTER, len(toc_marine)))
