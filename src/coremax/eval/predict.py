"""Apply a fine-tuned (or baseline) experiment, or a model bundle, to newly scanned cores: profiles with intervals
and warnings, one core at a time (coremax.eval.predict_archive streams the cores and resumes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from coremax.bundle import load_bundle
from coremax.data.bulk import match_bulk
from coremax.data.dataset import load_info, load_split
from coremax.data.elements import element_columns
from coremax.data.raw import read_folder
from coremax.data.runs import scanned_rows
from coremax.errors import UserError
from coremax.eval import figures
from coremax.eval.predictor import Predictor, check_trained, load_predictor
from coremax.eval.recalibrate import correction_methods, recalibrate
from coremax.eval.run import calibrate, core_names, predict_frame
from coremax.eval.shift import RowChecks, check_reference, flag_counts
from coremax.experiment import Experiment
from coremax.io import file_sha256


@dataclass
class Model:
    """What predicting a core needs, set up once: the predictor, its interval half-widths and data's voltage,
    the distribution checks (None: a bundle written before bundles carried their reference), the recalibration and who it is."""
    pred: Predictor
    q: np.ndarray
    config: dict
    kv: float
    identity: str                                   # the experiment's model hash or the bundle's: resume key
    checks: Callable | None                         # rows -> (flags, cores) (coremax.eval.shift)
    corrections: Callable[[], dict]
    changed: list = field(default_factory=list)     # data files changed since training
    name: str = ""


def open_model(data_root, name: str | None, model, device: str = "cpu", percentile: float = 99.0,
               allow_changed_data: bool = False) -> Model:
    """The experiment `name` or the bundle `model`, ready to predict."""
    if model is not None:  # a bundle carries its calibration and the recalibration chosen on its validation cores
        b = load_bundle(model, device)
        checks = _checks(b.predictor, RowChecks.fit(*b.reference, percentile)) if b.reference else None
        return Model(b.predictor, b.half_widths, b.config, b.dataset["kv"], file_sha256(model), checks,
                     lambda: b.corrections, name=Path(model).name)
    exp = Experiment.open(data_root, name)
    changed = check_trained(exp, "val", allow_changed_data)  # the intervals come from the validation rows
    cfg = exp.config()
    dataset = cfg["data"]["dataset"]
    pred = load_predictor(exp, device)
    pred.require_targets(name)
    val = load_split(data_root, dataset, "val")
    q = calibrate(pred, val, cfg["eval"]["interval"])
    train = load_split(data_root, dataset, "train")
    identity = " ".join(f"{k}={v}" for k, v in sorted(exp.provenance().get("model_sha256", {}).items()))
    checks = RowChecks.fit(*check_reference(pred.embed, train, val), percentile)  # once, not per core
    return Model(pred, q, cfg, load_info(data_root, dataset)["kv"], f"{name}: {identity}",
                 _checks(pred, checks), lambda: correction_methods(pred, val), changed, repr(name))


def _checks(pred: Predictor, checks: RowChecks) -> Callable:
    return lambda rows: checks(rows, pred.embed(rows))


def predict_core(m: Model, folder: Path, out: Path, on_error: str, lab: pd.DataFrame | None, match_mm: float
                 ) -> tuple[pd.DataFrame | None, pd.DataFrame, dict]:
    """(the table of one core's spectra: predictions, intervals, checks, element intensities; its row(s) of the
    per-core table; what its warnings count) for the core folder `folder`, its profile figure written. `lab`:
    the lab table of --bulk, whole (the samples of this folder's cores are taken from it). A folder none of whose
    files can be read gives no table (with --on-error skip; the run goes on with the other cores)."""
    try:
        meta, counts, skipped = read_folder(folder, kv=None, spectrum_length=m.config["data"]["spectrum_length"],
                                            on_error=on_error)
    except UserError as e:
        if on_error == "fail":
            raise
        return None, pd.DataFrame(), {"spectra": 0, "flag_kv": 0, "flag_scanner": 0, "flag_ood": 0,
                                      "scanner_reason": "", "skipped": [{"file": str(folder), "reason": str(e)}],
                                      "dropped": 0, "recalibrated": [], "unmatched": []}
    core_names(meta, f"the folder {folder}")  # they name the profile figures
    df, dropped = scanned_rows(meta, counts, m.pred.runs or (m.kv,), m.name)
    table = predict_frame(m.pred, df, m.q).drop(columns=list(m.pred.targets))
    for col in ("kv", "live_time_s", "spectrum_length", "scanner", "source_file"):
        table[col] = df[col].to_numpy()
    table["flag_kv"] = ~np.isclose(table["kv"].astype(float), m.kv)  # another tube voltage than training's
    if m.checks is not None:
        flags, cores = m.checks(df)
    else:  # a bundle holds no training rows: the scanner, distance and core-shift checks cannot be made
        flags = pd.DataFrame({"interval_calibrated": np.ones(len(df), dtype=bool)})
        cores = df.groupby("core", sort=False).size().rename("spectra").reset_index()
    table = pd.concat([table, flags], axis=1)
    table["interval_calibrated"] &= ~table["flag_kv"]
    counts_of = {**(flag_counts(flags) if m.checks is not None else {"spectra": len(table)}),
                 "flag_kv": int(table["flag_kv"].sum()), "skipped": skipped, "dropped": int(len(dropped)),
                 "recalibrated": [], "unmatched": []}
    if lab is not None:  # the samples of the cores its files name (a folder need not be named like its core)
        lab = lab[lab["core"].astype(str).isin(set(df["core"].astype(str)))]
    if lab is not None and len(lab):
        table, recal, unmatched = _recalibrate(m, table, lab, match_mm)
        counts_of["unmatched"] = unmatched.to_dict("records")
        if recal is not None:
            for suffix in ("_pred", "_lo", "_hi"):  # back within the predictor's bounds after the correction
                cols = [f"{t}{suffix}" for t in m.pred.targets]
                table[cols] = m.pred.clip(table[cols].to_numpy(np.float64))
            cores = cores.merge(recal, on="core", how="left")
            counts_of["recalibrated"] = recal.to_dict("records")
    table = pd.concat([table, df[element_columns(df)]], axis=1)  # the lab's intensities beside the predictions
    measured = table.rename(columns={f"{t}_lab": t for t in m.pred.targets})  # lab samples drawn as measured
    measured = measured[["core", "depth_mm", *[t for t in m.pred.targets if t in measured.columns]]]
    for core in table["core"].unique():
        figures.plot_profiles(table[table["core"] == core], measured[measured["core"] == core], m.pred.targets,
                              out.with_name(f"{out.stem}-profile-{core}.png"), core)
    return table, cores, counts_of


def _recalibrate(m: Model, table: pd.DataFrame, lab: pd.DataFrame, match_mm: float):
    """recalibrate's (table, per-core rows, unmatched samples); a core none of whose samples lies near a
    spectrum keeps its predictions (None), its samples reported unmatched with the others' at the end."""
    try:
        return recalibrate(table, lab, m.pred.targets, m.q, m.corrections(), 1 - m.config["eval"]["interval"],
                           match_mm)
    except UserError:
        return table, None, match_bulk(table[["core", "depth_mm"]], lab, match_mm)[1]
