"""Apply a fine-tuned (or baseline) experiment to newly scanned cores: profiles with intervals and warnings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.data.dataset import load_info, load_split
from coremax.data.elements import element_columns, spectra_rows
from coremax.data.raw import read_folder
from coremax.errors import UserError
from coremax.eval import figures
from coremax.eval.run import Distance, calibrate, check_trained, core_names, load_predictor, predict_frame
from coremax.experiment import Experiment
from coremax.io import atomic_path

MAX_REFERENCE_ROWS = 2000  # training rows used to describe the training distribution


def predict_raw(data_root, name: str, raw, out, device: str = "cpu", on_error: str = "skip",
                percentile: float = 99.0, allow_changed_data: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Predict every spectrum under `raw` (all runs); returns the table and the warnings it raised. The table
    also holds each spectrum's element intensities (coremax.data.elements), whatever the model reads."""
    exp = Experiment.open(data_root, name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):  # say so before the work, not after it
        raise UserError(f"Cannot write {out}: its folder is not writable; choose another --out.")
    # The intervals are calibrated on the validation rows: they must be the ones of training.
    changed = check_trained(exp, "val", allow_changed_data)
    cfg = exp.config()
    dataset = cfg["data"]["dataset"]
    info = load_info(data_root, dataset)
    pred = load_predictor(exp, device)
    meta, counts, skipped = read_folder(raw, kv=None, spectrum_length=cfg["data"]["spectrum_length"],
                                        on_error=on_error)
    core_names(meta, f"the folder {raw}")  # they name the profile figures
    df = spectra_rows(meta, counts)
    val = load_split(data_root, dataset, "val")
    q = calibrate(pred, val, cfg["eval"]["interval"])
    table = predict_frame(pred, df, q).drop(columns=[t for t in pred.targets])
    for col in ("kv", "live_time_s", "spectrum_length", "scanner", "source_file"):
        table[col] = meta[col].to_numpy()

    # Distribution checks: scanner settings that differ from the training data, and spectra far from it.
    live = info["live_time_s"]
    table["flag_kv"] = ~np.isclose(table["kv"].astype(float), info["kv"])
    table["flag_channels"] = ~table["spectrum_length"].isin(info["original_lengths"])
    table["flag_live_time"] = (table["live_time_s"] < live["min"] - 1e-9) | (table["live_time_s"] > live["max"] + 1e-9)
    train = load_split(data_root, dataset, "train")
    train = train.sample(min(len(train), MAX_REFERENCE_ROWS), random_state=0)
    dist = Distance.fit(pred.embed(train), pred.embed(val), percentile)
    table["ood_distance"] = dist(pred.embed(df))
    table["flag_ood"] = table["ood_distance"] > dist.threshold
    warnings = []
    for flag, what in (("flag_kv", f"were measured at another tube voltage than the training data ({info['kv']:g} kV)"),
                       ("flag_channels", "have another channel count than the training data"),
                       ("flag_live_time", f"have a live time outside the training range ({live['min']:g}-"
                                          f"{live['max']:g} s)"),
                       ("flag_ood", f"lie outside the training distribution (embedding distance above the "
                                    f"{percentile:g}th percentile of the validation rows)")):
        n = int(table[flag].sum())
        if n:
            warnings.append(f"warning: {n} of {len(table)} spectra {what}; treat their predictions with care.")
    if changed:
        warnings.append(f"warning: the data set changed since training ({', '.join(changed)}); the intervals are "
                        "calibrated on validation rows the experiment may not have held out.")
    if skipped:
        warnings.append(f"warning: {len(skipped)} files could not be read and were skipped "
                        f"(first: {skipped[0]['file']}: {skipped[0]['reason']}).")
    table = pd.concat([table, df[element_columns(df)]], axis=1)  # the lab's intensities beside the predictions
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    for core in table["core"].unique():
        figures.plot_profiles(table[table["core"] == core], pd.DataFrame(), pred.targets,
                              out.with_name(f"{out.stem}-profile-{core}.png"), core)
    return table, warnings
