"""Are these spectra from the data a model was trained on? Three checks, cheapest first:

- `ScannerCheck`: the scanner's settings as read (head, current, live time, filter: the data set's `scanner`
  column; the channel count) and its energy calibration as fitted (offset, gain, electronic noise of the element
  fit, coremax.data.elements) against those of the training rows. Another instrument differs in these before it
  differs in anything a model reads, and a scale-free model input hides most of it.
- `Distance`: each spectrum's standardised embedding distance from the training rows (per spectrum).
- `CoreShift`: a whole core against the training rows, a kernel two-sample statistic (MMD, Gretton et al. 2012)
  on the embedding. Every new core differs from the training cores a little (another site, another sequence),
  so the statistic's null is how far each training core lies from the others (leave one core out), not
  exchangeable rows: its p-value is read from a normal fitted to those per-core statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CALIBRATION = ("offset_kev", "gain_kev", "noise_kev")
# Fitted calibrations of one head drift between cores (weeks apart) and carry fit error: a value is seen when it
# lies within 4 sd of the training run groups of its setting, and never closer than these floors (the embedded
# archive: offsets within 0.012 keV, gains within 0.35 %, noise within 0.003 keV of their head's training cores).
CALIBRATION_FLOOR = {"offset_kev": 0.015, "gain_kev": 0.005, "noise_kev": 0.006}  # gain: relative
SHIFT_ALPHA = 0.01      # a core whose shift p-value is below this is flagged
SHIFT_REFERENCE_ROWS = 300  # rows of each training core that describe it (kernel matrices stay small)


@dataclass
class ScannerCheck:
    """The settings (scanner string, channel count) and fitted calibrations seen in training."""
    settings: set
    lengths: set
    calibration: pd.DataFrame  # per setting: mean and tolerance of each calibration column

    @classmethod
    def fit(cls, train: pd.DataFrame) -> "ScannerCheck":
        cols = [c for c in CALIBRATION if c in train.columns]
        settings = set(train["scanner"].astype(str)) if "scanner" in train.columns else set()
        rows = []
        if cols and settings:
            # one value per run group (a core's run): the calibration is fitted per group, not per spectrum
            groups = train.groupby(["scanner", "core"])[cols].mean()
            for setting, g in groups.groupby(level=0):
                row = {"scanner": setting}
                for c in cols:
                    mean = float(g[c].mean())
                    floor = CALIBRATION_FLOOR[c] * (abs(mean) if c == "gain_kev" else 1.0)
                    row[c], row[f"{c}_tol"] = mean, max(4 * float(g[c].std(ddof=0)), floor)
                rows.append(row)
        lengths = set(train["spectrum_length"]) if "spectrum_length" in train.columns else set()
        return cls(settings, lengths, pd.DataFrame(rows))

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row: flag_scanner and the reason (empty when seen)."""
        reason = pd.Series("", index=rows.index, dtype=object)
        if self.lengths and "spectrum_length" in rows.columns:
            off = ~rows["spectrum_length"].isin(self.lengths)
            reason[off] = "channel count never seen in training"
        if self.settings and "scanner" in rows.columns:
            setting = rows["scanner"].astype(str)
            unseen = ~setting.isin(self.settings) & (reason == "")
            reason[unseen] = "scanner settings never seen in training (" + setting[unseen] + ")"
            reason = reason.where(reason != "", self._calibration(rows, setting))
        return pd.DataFrame({"flag_scanner": reason != "", "scanner_reason": reason})

    def _calibration(self, rows: pd.DataFrame, setting: pd.Series) -> pd.Series:
        out = pd.Series("", index=rows.index, dtype=object)
        if self.calibration.empty:
            return out
        ref = self.calibration.set_index("scanner").reindex(setting.to_numpy())
        for c in CALIBRATION:
            if c not in rows.columns or c not in ref.columns:
                continue
            x = rows[c].to_numpy(np.float64)
            far = np.abs(x - ref[c].to_numpy()) > ref[f"{c}_tol"].to_numpy()
            far &= (out == "").to_numpy() & np.isfinite(x)
            out[far] = [f"fitted {c.replace('_kev', '')} {v:.4g} keV, training {m:.4g} keV for this setting"
                        for v, m in zip(x[far], ref[c].to_numpy()[far])]
        return out


@dataclass
class Distance:
    """Standardised distance of embeddings from the training rows; threshold = a percentile on val rows."""
    mean: np.ndarray
    std: np.ndarray
    threshold: float

    @classmethod
    def fit(cls, train_emb: np.ndarray, val_emb: np.ndarray, percentile: float = 99.0) -> "Distance":
        d = cls(train_emb.mean(0), train_emb.std(0) + 1e-6, np.inf)
        d.threshold = float(np.percentile(d(val_emb), percentile)) if len(val_emb) else np.inf
        return d

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        return np.sqrt((((emb - self.mean) / self.std) ** 2).mean(axis=1))


@dataclass
class CoreShift:
    """MMD of a core's embeddings from the training rows, with a p-value against the training cores' own."""
    reference: np.ndarray      # standardised embeddings of the training rows
    mean: np.ndarray
    std: np.ndarray
    bandwidth: float
    reference_kernel_mean: float
    null: tuple[float, float]  # mean and sd of the MMD^2 of each training core against the others

    @classmethod
    def fit(cls, emb: np.ndarray, cores: np.ndarray, seed: int = 0) -> "CoreShift | None":
        """None when the training rows hold fewer than 3 cores (no null to speak of)."""
        cores = np.asarray(cores)
        if len(np.unique(cores)) < 3:
            return None
        mean, std = emb.mean(0), emb.std(0) + 1e-6
        z = (emb - mean) / std
        d2 = _sq_distances(z, z)
        bandwidth = float(np.median(d2[d2 > 0])) if (d2 > 0).any() else 1.0  # the median heuristic
        k = np.exp(-d2 / bandwidth)
        null = []
        for c in np.unique(cores):
            x, y = cores == c, cores != c
            null.append(_within(k[np.ix_(x, x)]) + k[np.ix_(y, y)].mean() - 2 * k[np.ix_(x, y)].mean())
        return cls(z, mean, std, bandwidth, float(k.mean()), (float(np.mean(null)), float(np.std(null, ddof=1))))

    def test(self, emb: np.ndarray, seed: int = 0) -> tuple[float, float]:
        """(MMD^2, p-value) of one core's embeddings, Gaussian kernel; the core's own pairs without the diagonal
        (a short core is not pushed away by it); the p-value from a normal fitted to the training cores' values."""
        z = (emb - self.mean) / self.std
        z = z[np.random.default_rng(seed).permutation(len(z))[:SHIFT_REFERENCE_ROWS]]
        if len(z) < 2:
            return np.nan, np.nan
        kxx = _within(np.exp(-_sq_distances(z, z) / self.bandwidth))
        kxy = np.exp(-_sq_distances(z, self.reference) / self.bandwidth).mean()
        mmd2 = float(kxx + self.reference_kernel_mean - 2 * kxy)
        mu, sd = self.null
        return mmd2, float(stats.norm.sf((mmd2 - mu) / max(sd, 1e-12)))


def _within(k: np.ndarray) -> float:
    """Mean kernel value over the distinct pairs of one sample (the diagonal, 1, left out)."""
    n = len(k)
    return float((k.sum() - np.trace(k)) / max(n * (n - 1), 1))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b, without an (n, m, d) intermediate."""
    d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def reference_rows(train: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """At most SHIFT_REFERENCE_ROWS rows of each training core: what the checks compare with."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(idx)[:SHIFT_REFERENCE_ROWS] for idx in train.groupby("core", sort=False).indices.values()]
    return train.iloc[np.sort(np.concatenate(keep))]


REFERENCE_COLUMNS = ("core", "scanner", "spectrum_length", *CALIBRATION)  # of the reference rows, for ScannerCheck


def check_reference(embed, train: pd.DataFrame, val: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """What the checks compare with, and all a model bundle keeps of its training rows for them: (embeddings of
    the reference rows (reference_rows), those rows' core, scanner, channel count and fitted calibration, the
    validation rows' embeddings)."""
    train = reference_rows(train)
    # C order whatever the embedding gives: the checks then sum the same way here and after a bundle's round trip
    return np.ascontiguousarray(embed(train)), \
        train[[c for c in REFERENCE_COLUMNS if c in train.columns]].reset_index(drop=True), \
        np.ascontiguousarray(embed(val))


@dataclass
class RowChecks:
    """The three checks, fitted once on the reference (check_reference): `checks(rows, e_rows)` gives (per row:
    flag_scanner, scanner_reason, ood_distance, flag_ood, core_shift_p, flag_core_shift, interval_calibrated;
    per core: core_report). A row's interval is calibrated when none of its checks flags it: the validation rows
    the intervals come from say nothing about another scanner or a shifted core."""
    scanner: ScannerCheck
    distance: Distance
    shift: CoreShift | None

    @classmethod
    def fit(cls, e_train: np.ndarray, train: pd.DataFrame, e_val: np.ndarray, percentile: float = 99.0
            ) -> "RowChecks":
        return cls(ScannerCheck.fit(train), Distance.fit(e_train, e_val, percentile),
                   CoreShift.fit(e_train, train["core"].astype(str).to_numpy()))

    def __call__(self, rows: pd.DataFrame, e_rows: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        flags = self.scanner(rows).reset_index(drop=True)
        flags["ood_distance"] = self.distance(e_rows)
        flags["flag_ood"] = flags["ood_distance"] > self.distance.threshold
        cores = core_report(rows.reset_index(drop=True), flags, e_rows, self.shift)
        per_core = cores.set_index("core")
        core_of = rows["core"].to_numpy()
        flags["core_shift_p"] = per_core["shift_p"].reindex(core_of).to_numpy()
        flags["flag_core_shift"] = per_core["flag_core_shift"].reindex(core_of).to_numpy().astype(bool)
        flags["interval_calibrated"] = ~(flags["flag_scanner"] | flags["flag_ood"] | flags["flag_core_shift"])
        return flags, cores


def check_rows(embed, train: pd.DataFrame, val: pd.DataFrame, rows: pd.DataFrame, percentile: float = 99.0,
               e_rows: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The three checks of `rows` against the training rows, with `embed` (rows -> features, the predictor's);
    `e_rows`: the caller's embeddings of the rows, when it has them already (RowChecks)."""
    checks = RowChecks.fit(*check_reference(embed, train, val), percentile)
    return checks(rows, embed(rows) if e_rows is None else e_rows)


def flag_counts(flags: pd.DataFrame) -> dict:
    """What the warnings say of per-row flags: spectra, those flagged by scanner and by distance, the first
    scanner reason; counts of parts add up (predict_archive keeps these per core, not the rows)."""
    scanner = flags["flag_scanner"].to_numpy(bool)
    return {"spectra": len(flags), "flag_scanner": int(scanner.sum()), "flag_ood": int(flags["flag_ood"].sum()),
            "scanner_reason": str(flags["scanner_reason"][scanner].iloc[0]) if scanner.any() else ""}


def shift_warnings(flags: pd.DataFrame | dict, cores: pd.DataFrame, percentile: float = 99.0) -> list[str]:
    """One line per finding, naming the cores, the check and what to do; `flags` the per-row flags or their
    flag_counts."""
    c = flag_counts(flags) if isinstance(flags, pd.DataFrame) else flags
    out, n = [], c["spectra"]
    todo = ("measure a few lab samples of the core and pass them with --bulk (scripts/predict.py), which "
            "recalibrates the core on them")
    if c["flag_scanner"]:
        named = ", ".join(cores.loc[cores["flag_scanner_share"] > 0, "core"].astype(str)[:5])
        out.append(f"warning: {c['flag_scanner']} of {n} spectra (cores {named}) come from a scanner the model was "
                   f"not trained on (first: {c['scanner_reason']}); their intervals are not calibrated: {todo}.")
    if c["flag_ood"]:
        out.append(f"warning: {c['flag_ood']} of {n} spectra lie outside the training distribution "
                   f"(embedding distance above the {percentile:g}th percentile of the validation rows); treat "
                   "their predictions with care.")
    for r in cores[cores["flag_core_shift"].astype(bool)].itertuples():
        out.append(f"warning: core {r.core} as a whole differs from the training cores (MMD two-sample test on "
                   f"the model's features, p = {r.shift_p:.2g}, more than any training core differs from the "
                   f"others); its intervals are not calibrated: {todo}.")
    return out


def core_report(rows: pd.DataFrame, flags: pd.DataFrame, emb: np.ndarray, shift: CoreShift | None) -> pd.DataFrame:
    """One row per core: spectra, flagged shares, the shift test and whether the core is flagged."""
    out = []
    for core, idx in rows.groupby("core", sort=False).indices.items():
        mmd2, p = shift.test(emb[idx]) if shift is not None else (np.nan, np.nan)
        f = flags.iloc[idx]
        out.append({"core": core, "spectra": len(idx), "flag_scanner_share": float(f["flag_scanner"].mean()),
                    "flag_ood_share": float(f["flag_ood"].mean()), "shift_mmd2": mmd2, "shift_p": p,
                    "flag_core_shift": bool(p < SHIFT_ALPHA)})
    return pd.DataFrame(out)
