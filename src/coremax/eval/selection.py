"""Which depths to send to the lab (scripts/suggest.py, the study's new-cores-labels protocol): the methods.

Every method ranks the candidate spectra in a feature space of an experiment (the encoder's mean patch token of
a pretrain or finetune experiment, a baseline's own features: NMF components or PLS scores), standardised and
reduced to its leading principal components over the spectra read:
- `typical`: k-means with k = n clusters; from each cluster, largest first, its most typical spectrum (the
  highest density among its nearest neighbours, as TypiClust, Hacohen et al. 2022, which beats uncertainty
  sampling at tiny budgets); clusters of a few outliers are skipped.
- `diverse`: Kennard-Stone: the spectrum farthest from the mean, then always the one farthest from those chosen.
- `uncertain`: the widest prediction intervals. Split-conformal intervals have one width for every spectrum, so
  the width is scaled by each spectrum's distance from the training rows in the model's embedding (normalised
  conformal, Lei et al. 2018): widest = least like anything the model was calibrated on.
- `regular`: even spacing in depth, the usual hand practice, as the reference.
Chosen depths keep a minimum spacing (a lab sample integrates 1-2 cm) from each other and from depths already
sampled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from coremax.errors import UserError

MAX_COMPONENTS = 16     # principal components of the features that the distances are measured in
TYPICAL_NEIGHBOURS = 20  # neighbours over which a spectrum's typicality (density) is measured
MIN_GAP_MM = 20.0        # default least distance between sampled depths: a lab sample integrates 1-2 cm
MIN_CLUSTER = 5          # smaller clusters are outliers, not a kind of sediment: typical skips them


# -- the choice ------------------------------------------------------------------------------------------------
def choose(frame: pd.DataFrame, features: np.ndarray | None, n: int, method: str, seed: int = 0,
           min_gap_mm: float = MIN_GAP_MM, sampled: pd.DataFrame | None = None, width: np.ndarray | None = None,
           candidates: np.ndarray | None = None, per_core: bool = False, strict: bool = True) -> pd.DataFrame:
    """Rows of `frame` (core, depth_mm, one per spectrum) to sample: n over all cores, or n per core with
    `per_core`. `features` (rows, d) place the spectra (not needed by `regular`); `width` (rows,) is each
    spectrum's interval width (`uncertain` only); `candidates` (bool, rows) limits which spectra may be chosen
    (e.g. those with a lab sample), while every spectrum still shapes the clusters; `sampled` holds core,
    depth_mm already sampled. Returns the chosen rows of `frame` with rank, reason and the score behind it.
    Fewer than n possible choices is an error when `strict`, else as many as there are."""
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}.")
    if method == "uncertain" and width is None:
        raise UserError("--method uncertain needs prediction intervals: pass a fine-tuned or baseline experiment.")
    frame = frame.reset_index(drop=True)
    ok = np.ones(len(frame), bool) if candidates is None else np.asarray(candidates, bool).copy()
    blocked = _sampled_depths(frame, sampled)
    ok &= ~np.array([_too_close(c, d, blocked, min_gap_mm) for c, d in zip(frame["core"], frame["depth_mm"])],
                    dtype=bool)
    groups = [np.flatnonzero(frame["core"].to_numpy() == c) for c in frame["core"].unique()] if per_core \
        else [np.arange(len(frame))]
    space = None if method == "regular" else feature_space(features)
    picked = []
    for rows in groups:
        want = n
        if strict and ok[rows].sum() < want:
            where = f"core {frame['core'].iloc[rows[0]]}" if per_core else "the cores read"
            raise UserError(f"Only {int(ok[rows].sum())} depths of {where} can be chosen (spectra not already "
                            f"sampled, at least --min-gap-mm {min_gap_mm:g} from sampled depths) but --n is {n}; "
                            "ask for fewer or lower --min-gap-mm.")
        picked += CHOOSERS[method](frame, rows, ok, want, space, width, seed, min_gap_mm, blocked)
    if strict and len(picked) < n * len(groups):
        raise UserError(f"The spacing rule (--min-gap-mm {min_gap_mm:g}) leaves only {len(picked)} of the "
                        f"{n * len(groups)} depths asked for; ask for fewer or lower --min-gap-mm.")
    out = frame.iloc[[p[0] for p in picked]].copy()
    out["row"] = [p[0] for p in picked]  # position in `frame`
    out["method"] = method
    out["rank"] = np.arange(1, len(out) + 1) if not per_core else out.groupby("core").cumcount().to_numpy() + 1
    for key in ("reason", "cluster_size", "distance", "interval_width"):
        out[key] = [p[1].get(key, np.nan if key != "reason" else "") for p in picked]
    return out.reset_index(drop=True)


def _sampled_depths(frame: pd.DataFrame, sampled: pd.DataFrame | None) -> dict[str, list[float]]:
    blocked = {str(c): [] for c in frame["core"].unique()}
    if sampled is not None:
        for c, d in zip(sampled["core"].astype(str), sampled["depth_mm"].astype(float)):
            if c in blocked:
                blocked[c].append(d)
    return blocked


def _too_close(core, depth: float, blocked: dict, gap: float) -> bool:
    return any(abs(depth - d) < gap for d in blocked.get(str(core), ()))


def feature_space(features: np.ndarray | None) -> np.ndarray:
    """Standardised features reduced to their leading principal components (distances dominated by the main
    directions of variation, not by many noisy ones)."""
    if features is None:
        raise UserError("This method needs features of the spectra; pass an experiment.")
    f = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    k = min(MAX_COMPONENTS, f.shape[0], f.shape[1])
    return PCA(k, random_state=0).fit_transform(f) if k < f.shape[1] else f


class _Greedy:
    """Chosen rows so far and the spacing rule between them."""

    def __init__(self, frame, ok, gap, blocked):
        self.cores, self.depths = frame["core"].astype(str).to_numpy(), frame["depth_mm"].to_numpy(float)
        self.ok, self.gap = ok, gap
        self.taken = {c: list(v) for c, v in blocked.items()}
        self.rows: list[tuple[int, dict]] = []

    def allowed(self, i: int) -> bool:
        return bool(self.ok[i]) and not _too_close(self.cores[i], self.depths[i], self.taken, self.gap)

    def take(self, i: int, why: dict) -> None:
        self.taken.setdefault(self.cores[i], []).append(self.depths[i])
        self.rows.append((int(i), why))


def _typical(frame, rows, ok, n, space, width, seed, gap, blocked):
    g = _Greedy(frame, ok, gap, blocked)
    x = space[rows]
    k = min(n, len(rows))
    labels = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
    # typicality: inverse mean distance to the nearest neighbours among all spectra read
    m = min(TYPICAL_NEIGHBOURS, len(rows) - 1)
    near = NearestNeighbors(n_neighbors=m + 1).fit(x).kneighbors(x)[0][:, 1:] if m else np.zeros((len(rows), 1))
    typ = 1.0 / (near.mean(1) + 1e-9)
    sizes = np.bincount(labels, minlength=k)
    for c in np.argsort(-sizes, kind="stable"):
        if sizes[c] < min(MIN_CLUSTER, len(rows) / k):
            continue
        for j in np.flatnonzero(labels == c)[np.argsort(-typ[labels == c], kind="stable")]:
            if g.allowed(rows[j]):
                g.take(rows[j], {"reason": f"most typical of a cluster of {sizes[c]} spectra",
                                 "cluster_size": int(sizes[c]), "distance": float(1 / typ[j])})
                break
    for j in np.argsort(-typ, kind="stable"):  # clusters left without an allowed spectrum: next most typical
        if len(g.rows) >= n:
            break
        if g.allowed(rows[j]):
            g.take(rows[j], {"reason": "next most typical spectrum (its cluster had no free depth)",
                             "cluster_size": int(sizes[labels[j]]), "distance": float(1 / typ[j])})
    return g.rows[:n]


def _diverse(frame, rows, ok, n, space, width, seed, gap, blocked):
    g = _Greedy(frame, ok, gap, blocked)
    x = space[rows]
    nearest = np.sqrt(((x - x.mean(0)) ** 2).sum(1))  # first the spectrum farthest from the mean
    first = True
    while len(g.rows) < n:
        free = [j for j in np.argsort(-nearest, kind="stable") if g.allowed(rows[j])]
        if not free:
            break
        j = free[0]
        g.take(rows[j], {"reason": "farthest from the mean spectrum" if first else
                         "farthest from the depths chosen before", "distance": float(nearest[j])})
        first = False
        nearest = np.minimum(nearest if len(g.rows) > 1 else np.inf, np.sqrt(((x - x[j]) ** 2).sum(1)))
    return g.rows


def _uncertain(frame, rows, ok, n, space, width, seed, gap, blocked):
    g = _Greedy(frame, ok, gap, blocked)
    for j in np.argsort(-np.asarray(width)[rows], kind="stable"):
        if len(g.rows) >= n:
            break
        if g.allowed(rows[j]):
            g.take(rows[j], {"reason": f"interval {width[rows[j]]:.2f} x the mean width",
                             "interval_width": float(width[rows[j]])})
    return g.rows


def _regular(frame, rows, ok, n, space, width, seed, gap, blocked):
    """n depths as evenly spread as the spacing allows: over all cores, shares in proportion to their spectra."""
    g = _Greedy(frame, ok, gap, blocked)
    cores = frame["core"].to_numpy()[rows]
    names, counts = np.unique(cores, return_counts=True)
    share = np.floor(counts / counts.sum() * n).astype(int)
    for i in np.argsort(-(counts / counts.sum() * n - share), kind="stable")[:n - share.sum()]:
        share[i] += 1  # largest remainders
    for core, m in zip(names, share):
        mine = rows[cores == core]
        depth = frame["depth_mm"].to_numpy(float)[mine]
        lo, hi = depth.min(), depth.max()
        step = (hi - lo) / max(m, 1)
        for t in lo + step * (np.arange(m) + 0.5):
            order = np.argsort(np.abs(depth - t), kind="stable")
            free = [j for j in order if g.allowed(mine[j])]
            if free:
                g.take(mine[free[0]], {"reason": f"regular spacing of {step:.0f} mm (aimed at {t:.0f} mm)",
                                       "distance": float(abs(depth[free[0]] - t))})
    return g.rows


CHOOSERS = {"typical": _typical, "diverse": _diverse, "uncertain": _uncertain, "regular": _regular}
METHODS = tuple(CHOOSERS)  # --method, study.suggest
