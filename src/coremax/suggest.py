"""Which depths to send to the lab: n depths of newly scanned cores whose lab values would calibrate them best.

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

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from coremax.data.dataset import load_info, load_split, spectra_array
from coremax.data.raw import read_folder
from coremax.data.transforms import window
from coremax.engine.data import labelled
from coremax.errors import UserError
from coremax.eval.baselines import BASELINE_FILE, load_baseline
from coremax.eval.conformal import conformal_quantile
from coremax.eval.figures import plot_suggestions
from coremax.eval.predict import MAX_REFERENCE_ROWS
from coremax.eval.run import Distance, check_trained, core_names, load_network, load_predictor
from coremax.experiment import Experiment
from coremax.io import atomic_path

METHODS = ("typical", "diverse", "uncertain", "regular")
MAX_COMPONENTS = 16     # principal components of the features that the distances are measured in
TYPICAL_NEIGHBOURS = 20  # neighbours over which a spectrum's typicality (density) is measured
MIN_CLUSTER = 5          # smaller clusters are outliers, not a kind of sediment: typical skips them


# -- the choice ------------------------------------------------------------------------------------------------
def choose(frame: pd.DataFrame, features: np.ndarray | None, n: int, method: str, seed: int = 0,
           min_gap_mm: float = 20.0, sampled: pd.DataFrame | None = None, width: np.ndarray | None = None,
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
    space = None if method == "regular" else _space(features)
    picked = []
    for rows in groups:
        want = n
        if strict and ok[rows].sum() < want:
            where = f"core {frame['core'].iloc[rows[0]]}" if per_core else "the cores read"
            raise UserError(f"Only {int(ok[rows].sum())} depths of {where} can be chosen (spectra not already "
                            f"sampled, at least --min-gap-mm {min_gap_mm:g} from sampled depths) but --n is {n}; "
                            "ask for fewer or lower --min-gap-mm.")
        chooser = {"typical": _typical, "diverse": _diverse, "uncertain": _uncertain, "regular": _regular}[method]
        picked += chooser(frame, rows, ok, want, space, width, seed, min_gap_mm, blocked)
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


def _space(features: np.ndarray | None) -> np.ndarray:
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


# -- features of an experiment ---------------------------------------------------------------------------------
def experiment_space(exp, device: str = "cpu"):
    """(features(counts) -> (n, d), predictor or None) of an experiment: a pretraining's encoder (mean patch
    token of its last block), a fine-tuned regressor's pooled embedding, or a baseline's own features."""

    check_trained(exp)
    stage = exp.config()["experiment"]["stage"]
    if stage == "baseline":
        model = load_baseline(exp.data_root, exp.checkpoints / BASELINE_FILE)
        channels = exp.config()["data"]["channels"]
        return (lambda x: model.feature_space(window(np.asarray(x, np.float64), channels))), load_predictor(exp)
    if stage == "finetune":
        pred = load_predictor(exp, device)
        return pred.embed, pred
    model, transform, _ = load_network(exp, device)

    def encode(x: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(x), 256):
                xb = transform(torch.tensor(np.asarray(x[start:start + 256], np.float32), device=device))
                out.append(model.encoder(xb)[:, 1:].mean(1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.encoder.embed_dim))
    return encode, None


def interval_widths(exp, pred, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions (n, T), half-widths (n, T), width score (n,)) with normalised split-conformal intervals at
    the experiment's eval.interval: each validation residual divided by that row's embedding distance from the
    training rows, its conformal quantile times each new spectrum's distance. The score is the half-width
    relative to its mean, averaged over targets (what `uncertain` ranks)."""
    q_level = exp.config()["eval"]["interval"]

    dataset = exp.config()["data"]["dataset"]
    train = load_split(exp.data_root, dataset, "train")
    train = train.sample(min(len(train), MAX_REFERENCE_ROWS), random_state=0)
    val = labelled(load_split(exp.data_root, dataset, "val"), pred.targets)
    x_val = spectra_array(val)
    dist = Distance.fit(pred.embed(spectra_array(train)), pred.embed(x_val))
    s_val, s_new = dist(pred.embed(x_val)) + 1e-6, dist(pred.embed(counts)) + 1e-6
    p_val = pred.bounded(x_val)
    q = np.array([conformal_quantile(np.abs(val[t].to_numpy(np.float64) - p_val[:, j]) / s_val, 1 - q_level)
                  for j, t in enumerate(pred.targets)])
    half = s_new[:, None] * q[None]
    return pred.bounded(counts), half, (half / np.maximum(half.mean(0), 1e-12)).mean(1)


# -- the command ------------------------------------------------------------------------------------------------
OUT_COLUMNS = ["core", "depth_mm", "section", "position_mm", "source_file", "rank", "method", "reason",
               "cluster_size", "distance", "interval_width"]


def read_sampled(path) -> pd.DataFrame:
    """--exclude: a CSV of depths already sampled, with columns core and depth_mm (or mid_depth_mm)."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise UserError(f"The --exclude file {path} cannot be read as CSV ({str(e).splitlines()[0]}); fix it.") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    depth = cols.get("depth_mm", cols.get("mid_depth_mm"))
    if "core" not in cols or depth is None:
        raise UserError(f"The --exclude file {path} needs columns core and depth_mm (or mid_depth_mm); it has "
                        f"{[str(c) for c in df.columns]}.")
    out = pd.DataFrame({"core": df[cols["core"]].astype(str).str.strip(),
                        "depth_mm": pd.to_numeric(df[depth], errors="coerce")})
    if not np.isfinite(out["depth_mm"]).all():
        row = int(np.flatnonzero(~np.isfinite(out["depth_mm"]))[0]) + 2
        raise UserError(f"The --exclude file {path}, line {row}: the depth is not a number; fix it.")
    return out


def suggest_raw(data_root, name: str, raw, out, n: int = 10, method: str = "typical", per_core: bool = False,
                min_gap_mm: float = 20.0, exclude=None, cores=None, seed: int = 0, device: str = "cpu",
                on_error: str = "skip") -> tuple[pd.DataFrame, list[str]]:
    """Suggest depths of the cores under `raw` to sample; writes the table to `out` and `suggest-<core>.png`
    beside it. Returns the table and notes for the user."""


    if n < 1:
        raise UserError(f"--n {n} must be at least 1.")
    if min_gap_mm < 0 or not np.isfinite(min_gap_mm):
        raise UserError(f"--min-gap-mm {min_gap_mm} must be a number >= 0.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"Cannot write {out}: its folder is not writable; choose another --out.")
    exp = Experiment.open(data_root, name)
    features_of, pred = experiment_space(exp, device)
    cfg = exp.config()
    info = load_info(data_root, cfg["data"]["dataset"])
    sampled = read_sampled(exclude) if exclude else None
    meta, counts, skipped = read_folder(raw, kv=None, spectrum_length=cfg["data"]["spectrum_length"],
                                        on_error=on_error)
    core_names(meta, f"the folder {raw}")  # they name the figures
    if cores:
        missing = sorted(set(cores) - set(meta["core"].astype(str)))
        if missing:
            raise UserError(f"The core {missing[0]!r} has no spectra under {raw}; check --cores against the folder "
                            f"(it holds {', '.join(sorted(meta['core'].astype(str).unique()))}).")
        keep = meta["core"].astype(str).isin(cores).to_numpy()
        meta, counts = meta[keep].reset_index(drop=True), counts[keep]
    off_kv = ~np.isclose(meta["kv"].astype(float), float(info["kv"]))
    off_len = ~meta["spectrum_length"].isin(info["original_lengths"])
    for bad, what in ((off_kv, f"were measured at {meta['kv'][off_kv].iloc[0] if off_kv.any() else 0:g} kV, "
                               f"not at the {info['kv']:g} kV of {name!r}'s data"),
                      (off_len, "have another channel count than the experiment's data")):
        if bad.any():
            raise UserError(f"{int(bad.sum())} spectra under {raw} (e.g. {meta['source_file'][bad].iloc[0]}) {what}; "
                            "suggest from spectra measured like the training data (choose the run folder).")
    per = meta.groupby("core").size()
    if n > (per.min() if per_core else len(meta)):
        where = f"core {per.idxmin()} has {per.min()}" if per_core else f"the cores read have {len(meta)}"
        raise UserError(f"--n {n} is more than the spectra available ({where}); ask for fewer.")
    width, p, half = None, None, None
    if pred is not None:
        p, half, width = interval_widths(exp, pred, counts)
    features = features_of(counts) if method != "regular" or pred is None else None
    chosen = choose(meta, features, n, method, seed, min_gap_mm, sampled, width, per_core=per_core)
    table = chosen[OUT_COLUMNS].copy()
    if pred is not None:
        for j, t in enumerate(pred.targets):
            table[f"{t}_pred"], table[f"{t}_half_width"] = p[chosen["row"], j], half[chosen["row"], j]
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    profile = meta[["core", "depth_mm"]].copy()
    if pred is not None:
        for j, t in enumerate(pred.targets):
            profile[f"{t}_pred"], profile[f"{t}_lo"], profile[f"{t}_hi"] = \
                p[:, j], pred.clip(p - half)[:, j], pred.clip(p + half)[:, j]
        shown = list(pred.targets)
    else:
        profile["PC1_pred"] = _space(features_of(counts) if features is None else features)[:, 0]
        shown = ["PC1"]
    for core in table["core"].unique():
        plot_suggestions(profile[profile["core"] == core], table[table["core"] == core], shown,
                         out.with_name(f"suggest-{core}.png"), core,
                         None if sampled is None else sampled[sampled["core"] == core])
    notes = [f"note: {len(skipped)} files could not be read and were skipped (first: {skipped[0]['file']})."] \
        if skipped else []
    return table, notes
