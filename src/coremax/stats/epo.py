"""External parameter orthogonalisation over scanner settings (Roger et al. 2003, calibration transfer in NIR
spectroscopy), one rule for the ridge head and the baselines (`finetune.epo`, `baseline.epo`).

In the labelled archive every region was scanned with its own head, so a calibration cannot tell what a scanner
adds to a spectrum from what a region's sediment does; unlabelled spectra of many cores under every setting can.
A calibration may then also be fitted without the directions along which the settings' mean features differ; plain
or blind is chosen per target on the validation rows, like any hyperparameter.
"""

from __future__ import annotations

import numpy as np

# Unlabelled spectra per scanner setting behind its mean (engine.data.setting_spectra): over three draws, 1,024 gave
# the ridge probe's CaCO3 validation RMSE of all of them (19,146 spectra, 4 settings) to within 2 % (256: up to 16 %
# off), with a fifth of the spectra to embed.
EPO_SPECTRA = 1024


def setting_directions(f: np.ndarray, settings: np.ndarray) -> np.ndarray:
    """(D, k) orthonormal directions along which the mean features of the scanner settings differ, k <= number of
    settings - 1 (none with one setting)."""
    names = np.unique(settings)
    means = np.stack([f[settings == n].mean(0) for n in names]) if len(names) > 1 else np.zeros((1, f.shape[1]))
    u, s, _ = np.linalg.svd((means - means.mean(0)).T, full_matrices=False)
    return u[:, s > s.max(initial=0) * max(means.shape) * np.finfo(float).eps]


def versions(directions: np.ndarray | None) -> list:
    """What a fit offers for each target: the plain features (None), and the blind ones when there is a direction
    to remove."""
    return [None] if directions is None or not directions.shape[1] else [None, directions]


def blind(f: np.ndarray, directions: np.ndarray | None) -> np.ndarray:
    """Features (or weights, one per row) without their part along `directions` (None: as they are)."""
    return f if directions is None else f - (f @ directions) @ directions.T


def mean_spread(change):
    """How far apart the scanner settings' mean changes of prediction lie: `change` (settings, m, targets) holds, for
    m spectra of each setting, a prediction minus that of the head fitted blind (whose settings' means agree); the
    sum over settings and targets of the squared deviation of a setting's mean from the settings' average. Changes,
    not predictions, because a prediction varies with the composition of its core and a few spectra per setting
    would give its mean that noise; the noise of the changes that remains pulls the predictions gently towards the
    blind head's."""
    means = change.mean(1)
    return ((means - means.mean(0)) ** 2).sum()
