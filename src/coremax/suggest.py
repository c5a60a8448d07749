"""Which depths of newly scanned cores to send to the lab (scripts/suggest.py): the features and intervals of
the spectra from an experiment or a model bundle, the choice of coremax.eval.selection, the table and the
figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from coremax.bundle import load_bundle
from coremax.data.dataset import load_info, load_split
from coremax.data.elements import spectra_rows
from coremax.data.raw import read_folder
from coremax.data.runs import scanned_rows
from coremax.engine.labels import labelled
from coremax.errors import UserError
from coremax.eval.figures import plot_suggestions
from coremax.eval.shift import RowChecks, check_rows, shift_warnings
from coremax.eval.predictor import Predictor, load_predictor
from coremax.eval.run import core_names
from coremax.eval.selection import METHODS, MIN_GAP_MM, choose, feature_space
from coremax.eval.widths import WidthCalibration
from coremax.experiment import Experiment
from coremax.io import atomic_path

__all__ = ["METHODS", "MIN_GAP_MM", "Source", "bundle_source", "choose", "experiment_source", "experiment_space",
           "interval_widths", "read_sampled", "suggest_raw"]


# -- what the suggestion reads of an experiment or a bundle -----------------------------------------------------
@dataclass
class Source:
    """The model and what it was trained on, as far as suggest needs them: `widths` gives the normalised
    conformal calibration (lazily: it embeds the training rows of an experiment), `checks(rows, e_rows)` the
    scanner / distance / core-shift flags, None where the source cannot make them."""
    name: str
    pred: Predictor
    kv: float
    lengths: list
    spectrum_length: int
    widths: Callable[[], WidthCalibration] | None
    checks: Callable | None

    @property
    def predicts(self) -> bool:
        return self.pred.predict is not None


def experiment_source(data_root, name: str, device: str = "cpu") -> Source:
    exp = Experiment.open(data_root, name)
    pred = load_predictor(exp, device)
    cfg = exp.config()
    dataset = cfg["data"]["dataset"]
    info = load_info(data_root, dataset)
    split = lambda s: load_split(data_root, dataset, s)  # noqa: E731
    widths = lambda: WidthCalibration.fit(pred, split("train"), split("val"), cfg["eval"]["interval"])  # noqa: E731
    checks = lambda rows, e: check_rows(pred.embed, split("train"), labelled(split("val"), pred.targets),  # noqa
                                        rows, e_rows=e)
    return Source(repr(name), pred, float(info["kv"]), list(info["original_lengths"]),
                  cfg["data"]["spectrum_length"], widths if pred.predict else None, checks if pred.predict else None)


def bundle_source(path, device: str = "cpu") -> Source:
    """A bundle (checked on load) carries the widths' calibration and what the shift checks compare with."""
    b = load_bundle(path, device, features_only=True)
    length = b.config["data"]["spectrum_length"]
    checks = None
    if b.reference is not None:
        fitted = RowChecks.fit(*b.reference)
        checks = lambda rows, e: fitted(rows, b.predictor.embed(rows) if e is None else e)  # noqa: E731
    return Source(Path(path).name, b.predictor, float(b.dataset["kv"]),
                  list(b.dataset.get("original_lengths", [length])), length,
                  (lambda: b.widths) if b.widths is not None else None, checks)


def experiment_space(exp, device: str = "cpu"):
    """(features(rows) -> (n, d), predictor or None) of an experiment: a pretraining's encoder (mean patch
    token of its last block), a fine-tuned regressor's pooled embedding, or a baseline's own features (rows: a
    DataFrame as `spectra_rows` gives)."""
    pred = load_predictor(exp, device)
    return pred.features, (pred if pred.predict is not None else None)


def interval_widths(exp, pred, rows: pd.DataFrame, e_new: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions (n, T), half-widths (n, T), width score (n,)) of `rows` with normalised split-conformal
    intervals at the experiment's eval.interval (coremax.eval.widths). `e_new`: `pred.embed(rows)` when the
    caller has it already."""
    dataset = exp.config()["data"]["dataset"]
    calib = WidthCalibration.fit(pred, load_split(exp.data_root, dataset, "train"),
                                 load_split(exp.data_root, dataset, "val"), exp.config()["eval"]["interval"])
    half, score = calib.half_widths(pred.embed(rows) if e_new is None else e_new)
    return pred.bounded(rows), half, score


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


def suggest_raw(data_root, name: str | None, raw, out, n: int = 10, method: str = "typical", per_core: bool = False,
                min_gap_mm: float = MIN_GAP_MM, exclude=None, cores=None, seed: int = 0, device: str = "cpu",
                on_error: str = "skip", model=None) -> tuple[pd.DataFrame, list[str]]:
    """Suggest depths of the cores under `raw` to sample with the experiment `name` or the bundle `model`
    (coremax.bundle: no data set needed); writes the table to `out` and `suggest-<core>.png` beside it. Returns
    the table and notes for the user."""
    if n < 1:
        raise UserError(f"--n {n} must be at least 1.")
    if min_gap_mm < 0 or not np.isfinite(min_gap_mm):
        raise UserError(f"--min-gap-mm {min_gap_mm} must be a number >= 0.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"Cannot write {out}: its folder is not writable; choose another --out.")
    src = bundle_source(model, device) if model is not None else experiment_source(data_root, name, device)
    pred = src.pred if src.predicts else None
    features_of = src.pred.features
    sampled = read_sampled(exclude) if exclude else None
    meta, counts, skipped = read_folder(raw, kv=None, spectrum_length=src.spectrum_length, on_error=on_error)
    core_names(meta, f"the folder {raw}")  # they name the figures
    if cores:
        missing = sorted(set(cores) - set(meta["core"].astype(str)))
        if missing:
            raise UserError(f"The core {missing[0]!r} has no spectra under {raw}; check --cores against the folder "
                            f"(it holds {', '.join(sorted(meta['core'].astype(str).unique()))}).")
        keep = meta["core"].astype(str).isin(cores).to_numpy()
        meta, counts = meta[keep].reset_index(drop=True), counts[keep]
    runs, rows = src.pred.runs or (src.kv,), None
    if len(runs) > 1:  # one row per spot, its runs side by side (a spot lacking a run is left out)
        rows, _ = scanned_rows(meta, counts, runs, src.name)
        meta = rows
    off_kv = ~np.isclose(meta["kv"].astype(float), src.kv)
    off_len = ~meta["spectrum_length"].isin(src.lengths)
    for bad, what in ((off_kv, f"were measured at {meta['kv'][off_kv].iloc[0] if off_kv.any() else 0:g} kV, "
                               f"not at the {src.kv:g} kV of {src.name}'s data"),
                      (off_len, f"have another channel count than {src.name}'s data")):
        if bad.any():
            raise UserError(f"{int(bad.sum())} spectra under {raw} (e.g. {meta['source_file'][bad].iloc[0]}) {what}; "
                            "suggest from spectra measured like the training data (choose the run folder).")
    per = meta.groupby("core").size()
    if n > (per.min() if per_core else len(meta)):
        where = f"core {per.idxmin()} has {per.min()}" if per_core else f"the cores read have {len(meta)}"
        raise UserError(f"--n {n} is more than the spectra available ({where}); ask for fewer.")
    width, p, half, features = None, None, None, None
    rows = spectra_rows(meta, counts) if rows is None else rows
    if method != "regular" or pred is None:
        features = features_of(rows)
    # A fine-tune's feature space is its predictor's embedding: the spectra are embedded once.
    e_rows = features if pred is not None and features_of is pred.embed else None
    if pred is not None:
        e_rows = pred.embed(rows) if e_rows is None else e_rows
        p = pred.bounded(rows)
        half, width = src.widths().half_widths(e_rows)
    chosen = choose(meta, features, n, method, seed, min_gap_mm, sampled, width, per_core=per_core)
    table = chosen[OUT_COLUMNS].copy()
    notes = []
    if pred is not None:
        for j, t in enumerate(pred.targets):
            table[f"{t}_pred"], table[f"{t}_half_width"] = p[chosen["row"], j], half[chosen["row"], j]
        if src.checks is not None:  # another scanner or a shifted core: its half-widths are not calibrated
            flags, shifted = src.checks(rows, e_rows)
            for col in ("flag_scanner", "flag_core_shift", "interval_calibrated"):
                table[col] = flags[col].to_numpy()[chosen["row"]]
            notes += shift_warnings(flags, shifted)
        else:
            notes.append(f"note: {src.name} holds no training spectra, so the scanner, out-of-distribution and "
                         "core-shift checks were skipped; the half-widths assume spectra like the training data.")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    profile = meta[["core", "depth_mm"]].copy()
    if pred is not None:
        lo, hi = pred.interval(p, half)
        for j, t in enumerate(pred.targets):
            profile[f"{t}_pred"], profile[f"{t}_lo"], profile[f"{t}_hi"] = p[:, j], lo[:, j], hi[:, j]
        shown = list(pred.targets)
    else:
        profile["PC1_pred"] = feature_space(features_of(rows) if features is None else features)[:, 0]
        shown = ["PC1"]
    for core in table["core"].unique():
        plot_suggestions(profile[profile["core"] == core], table[table["core"] == core], shown,
                         out.with_name(f"suggest-{core}.png"), core,
                         None if sampled is None else sampled[sampled["core"] == core])
    if skipped:
        notes.append(f"note: {len(skipped)} files could not be read and were skipped (first: {skipped[0]['file']}).")
    return table, notes
