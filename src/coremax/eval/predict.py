"""Apply a fine-tuned (or baseline) experiment to newly scanned cores: profiles with intervals and warnings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.dataset import load_info, load_split
from coremax.data.elements import element_columns, spectra_rows
from coremax.data.raw import read_folder
from coremax.bundle import load_bundle
from coremax.errors import UserError
from coremax.eval import figures
from coremax.data.bulk import read_bulk
from coremax.eval.recalibrate import correction_methods, recalibrate
from coremax.eval.predictor import check_trained, load_predictor
from coremax.eval.run import calibrate, core_names, predict_frame
from coremax.eval.shift import check_rows, shift_warnings
from coremax.experiment import Experiment
from coremax.io import atomic_path


def cores_file(out: Path) -> Path:
    """The per-core table beside the predictions."""
    return out.with_name(f"{out.stem}-cores.csv")


def clip_table(pred, table: pd.DataFrame) -> pd.DataFrame:
    """Predictions and bounds back within the predictor's bounds (Predictor.clip) after a correction."""
    for suffix in ("_pred", "_lo", "_hi"):
        cols = [f"{t}{suffix}" for t in pred.targets]
        table[cols] = pred.clip(table[cols].to_numpy(np.float64))
    return table


def predict_raw(data_root, name: str | None, raw, out, device: str = "cpu", on_error: str = "skip",
                percentile: float = 99.0, allow_changed_data: bool = False, bulk=None, match_mm: float = 5.0,
                model=None) -> tuple[pd.DataFrame, list[str]]:
    """Predict every spectrum under `raw` (all runs) with the experiment `name`, or with the bundle `model`
    (coremax.bundle: no data set needed); returns the table and the warnings it raised. The table also holds
    each spectrum's element intensities (coremax.data.elements), whatever the model reads, and the
    distribution checks; `<out>-cores.csv` one row per core (checks, and the recalibration on the lab samples
    of `bulk` when given: coremax.eval.recalibrate)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):  # say so before the work, not after it
        raise UserError(f"Cannot write {out}: its folder is not writable; choose another --out.")
    if model is not None:  # a bundle carries its calibration and the recalibration chosen on its validation cores
        b = load_bundle(model, device)
        pred, q, cfg, kv, changed, train, val = b.predictor, b.half_widths, b.config, b.dataset["kv"], [], None, None
        corrections = lambda: b.corrections  # noqa: E731
    else:
        exp = Experiment.open(data_root, name)
        # The intervals are calibrated on the validation rows: they must be the ones of training.
        changed = check_trained(exp, "val", allow_changed_data)
        cfg = exp.config()
        dataset = cfg["data"]["dataset"]
        kv = load_info(data_root, dataset)["kv"]
        pred = load_predictor(exp, device)
        pred.require_targets(name)
        val = load_split(data_root, dataset, "val")
        q = calibrate(pred, val, cfg["eval"]["interval"])
        train = load_split(data_root, dataset, "train")
        corrections = lambda: correction_methods(pred, val)  # noqa: E731
    lab = read_bulk(bulk) if bulk is not None else None  # a bad table is refused before the work
    meta, counts, skipped = read_folder(raw, kv=None, spectrum_length=cfg["data"]["spectrum_length"],
                                        on_error=on_error)
    core_names(meta, f"the folder {raw}")  # they name the profile figures
    df = spectra_rows(meta, counts)
    table = predict_frame(pred, df, q).drop(columns=[t for t in pred.targets])
    for col in ("kv", "live_time_s", "spectrum_length", "scanner", "source_file"):
        table[col] = meta[col].to_numpy()

    # Distribution checks: another tube voltage; another scanner, spectra far from the training ones, a shifted
    # core (coremax.eval.shift).
    table["flag_kv"] = ~np.isclose(table["kv"].astype(float), kv)
    warnings = []
    if train is not None:
        flags, cores = check_rows(pred.embed, train, val, df, percentile)
    else:  # a bundle holds no training rows: the scanner, distance and core-shift checks cannot be made
        flags = pd.DataFrame({"interval_calibrated": np.ones(len(df), dtype=bool)})
        cores = df.groupby("core", sort=False).size().rename("spectra").reset_index()
        warnings.append(f"warning: {Path(model).name} holds no training spectra, so the scanner, out-of-distribution "
                        "and core-shift checks were skipped; only the tube voltage is checked, and the intervals "
                        "are calibrated only for spectra like the training ones.")
    table = pd.concat([table, flags], axis=1)
    table["interval_calibrated"] &= ~table["flag_kv"]
    if table["flag_kv"].any():
        warnings.append(f"warning: {int(table['flag_kv'].sum())} of {len(table)} spectra were measured at another "
                        f"tube voltage than the training data ({kv:g} kV); treat their predictions with care.")
    warnings += shift_warnings(flags, cores, percentile) if train is not None else []
    if lab is not None:
        table, recal, unmatched = recalibrate(table, lab, pred.targets, q, corrections(),
                                   1 - cfg["eval"]["interval"], match_mm)
        table = clip_table(pred, table)
        cores = cores.merge(recal, on="core", how="left")
        warnings += [f"note: core {r.core} {r.target} recalibrated on {r.samples} lab samples ({r.method}: "
                     f"bias before {r.bias_before:+.2f}, leave-one-out RMSE {r.loo_rmse:.2f}); predictions at "
                     "those depths are fitted, not independent skill." for r in recal.itertuples()]
        if len(unmatched):
            first = unmatched.iloc[0]
            warnings.append(f"warning: {len(unmatched)} of the {len(lab)} lab samples of {bulk} matched no spectrum "
                            f"(first: core {first['core']} at {first['depth_mm']:g} mm: {first['reason']}); "
                            "they were not used.")
    if changed:
        warnings.append(f"warning: the data set changed since training ({', '.join(changed)}); the intervals are "
                        "calibrated on validation rows the experiment may not have held out.")
    if skipped:
        warnings.append(f"warning: {len(skipped)} files could not be read and were skipped "
                        f"(first: {skipped[0]['file']}: {skipped[0]['reason']}).")
    table = pd.concat([table, df[element_columns(df)]], axis=1)  # the lab's intensities beside the predictions
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(cores_file(out)) as tmp:
        cores.to_csv(tmp, index=False)
    # the lab samples a core was recalibrated on are drawn as the measurements
    measured = table.rename(columns={f"{t}_lab": t for t in pred.targets})
    measured = measured[["core", "depth_mm", *[t for t in pred.targets if t in measured.columns]]]
    for core in table["core"].unique():
        figures.plot_profiles(table[table["core"] == core], measured[measured["core"] == core], pred.targets,
                              out.with_name(f"{out.stem}-profile-{core}.png"), core)
    return table, warnings
