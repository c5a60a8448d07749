"""Evaluation of an experiment on held-out cores (scripts/test.py): every trained experiment goes through its
`Predictor` (coremax.eval.predictor), and everything after it (conformal intervals, metrics, figures, pickles) is
the same code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from coremax import logs
from coremax.data.dataset import load_split, spectra_array
from coremax.engine.inference import run_batches
from coremax.engine.labels import chosen_test_rows, core_label_mask, labelled
from coremax.errors import UserError
from coremax.eval import figures
from coremax.eval.floor import floor_metrics
from coremax.eval.predictor import Predictor, check_trained, load_network, load_predictor
from coremax.eval.shift import check_rows
from coremax.experiment import Experiment
from coremax.paths import check_name
from coremax.stats.conformal import conformal_quantile
from coremax.stats.metrics import FLAG_SCOPES, metrics_table


def core_names(df: pd.DataFrame, where: str) -> list[str]:
    """The cores of a table, each checked as a file-name part (they name the profile figures): a data set or
    folder from elsewhere cannot make a write escape the results folder."""
    return [check_name(str(c), f"core name {str(c)[:40]!r} in {where}") for c in df["core"].unique()]


# -- evaluation on a split -----------------------------------------------------------------------------------
def predict_frame(pred: Predictor, df: pd.DataFrame, q: np.ndarray) -> pd.DataFrame:
    """One row per spectrum: core, depth, each target's measurement, prediction (contents within 0-100 wt%) and
    interval."""
    out = df[["core", "depth_mm"]].reset_index(drop=True).copy()
    p = pred.bounded(df)
    lo, hi = pred.interval(p, q)
    for j, t in enumerate(pred.targets):
        out[t] = df[t].to_numpy(np.float64) if t in df.columns else np.nan
        out[f"{t}_pred"] = p[:, j]
        out[f"{t}_lo"] = lo[:, j]
        out[f"{t}_hi"] = hi[:, j]
    return out


def calibrate(pred: Predictor, val_df: pd.DataFrame, interval: float) -> np.ndarray:
    """Split-conformal half-widths per target from the absolute residuals on the validation rows."""
    val_df = labelled(val_df, pred.targets)
    p = pred.bounded(val_df)
    return np.array([conformal_quantile(np.abs(val_df[t].to_numpy(np.float64) - p[:, j]), alpha=1 - interval)
                     for j, t in enumerate(pred.targets)])


def evaluate_experiment(data_root, name: str, split: str = "test", device: str = "cpu",
                        allow_changed_data: bool = False) -> pd.DataFrame:
    """Evaluate an experiment on a split (the held-out test cores by default); writes results/ and logs."""
    if split not in ("test", "val"):
        raise UserError(f"--split {split!r} is not test or val.")
    exp = Experiment.open(data_root, name)
    changed = check_trained(exp, split, allow_changed_data)
    cfg = exp.config()
    stage = cfg["experiment"]["stage"]
    df = load_split(data_root, cfg["data"]["dataset"], split)
    core_names(df, f"the {split} table of the data set {cfg['data']['dataset']!r}")  # before anything is written
    logs.push(exp.log_file, experiment=exp.name)
    log = logs.get_logger()
    try:
        if stage == "pretrain":
            metrics = _test_pretrain(exp, df, split, device, changed)
        else:
            metrics = _test_regression(exp, cfg, df, split, device, changed)
        # eval.* may change after training (coremax.frozen): what this test used is kept with its results
        log.info("test", split=split, rows=len(df), eval=cfg.get("eval", {}), device=device,
                 metrics=metrics.to_dict(orient="records"))
    finally:
        logs.pop()
    return metrics


def _test_regression(exp, cfg, df, split, device, changed) -> pd.DataFrame:
    pred = load_predictor(exp, device)
    pred.require_targets(exp.name)
    val_df = load_split(exp.data_root, cfg["data"]["dataset"], "val")
    q = calibrate(pred, val_df, cfg["eval"]["interval"])
    frame = predict_frame(pred, df, q)
    trained = trained_test_rows(exp.data_root, cfg, df, split)
    frame.loc[trained, pred.targets] = np.nan  # the data.test_labels rows were trained on: no test of anything
    frame["trained_on"] = trained
    flags, cores = check_rows(pred.embed, load_split(exp.data_root, cfg["data"]["dataset"], "train"), val_df, df)
    frame = pd.concat([frame, flags], axis=1)
    metrics = flagged_metrics(frame, pred.targets)
    metrics.insert(0, "split", split)
    metrics["half_width"] = metrics["target"].map(dict(zip(pred.targets, q)))
    metrics["data_changed"] = ", ".join(changed)  # files that differ from training, allowed by the user
    exp.remove_result(f"{split}-floor")  # a floor belongs to the rows it was computed on: none of an older test
    exp.write_result(f"{split}-predictions", frame)
    exp.write_result(f"{split}-metrics", metrics)
    exp.write_result(f"{split}-cores", cores)
    floor = floor_metrics(exp.data_root, cfg["data"]["dataset"], pred.targets, split,
                          exclude=set(df["source_file"][trained]))
    if floor is not None:  # the best any calibration can do on these rows (synthetic archives only)
        exp.write_result(f"{split}-floor", floor)
    overall = metrics[metrics["scope"] == "all"]
    figures.plot_pred_vs_measured(frame, pred.targets, overall, exp.results / f"{split}-pred-vs-measured.png")
    measured = frame.dropna(subset=pred.targets, how="all")
    for core in frame["core"].unique():
        figures.plot_profiles(frame[frame["core"] == core], measured[measured["core"] == core], pred.targets,
                              exp.results / f"{split}-profile-{core}.png", core)
    return metrics


def flagged_metrics(frame: pd.DataFrame, targets) -> pd.DataFrame:
    """metrics_table, plus scopes `flagged spectra` and `unflagged spectra` (coremax.eval.shift's checks): the
    intervals promise their coverage only where no check flags a row, so coverage is reported apart."""
    metrics = metrics_table(frame, targets)
    parts = [metrics]
    for scope, rows in zip(FLAG_SCOPES, (~frame["interval_calibrated"], frame["interval_calibrated"])):
        if rows.any():
            m = metrics_table(frame[rows.to_numpy()], targets, group="")
            parts.append(m.assign(scope=scope))
    return pd.concat(parts, ignore_index=True)


def trained_test_rows(data_root, cfg: dict, df: pd.DataFrame, split: str) -> np.ndarray:
    """The test rows a data.test_labels run trained on (the same rows as prepare_data's); none otherwise."""
    data, seed = cfg["data"], cfg["experiment"]["seed"]
    k = data.get("test_labels", 0) if split == "test" else 0
    chosen = chosen_test_rows(data_root, data.get("test_label_rows", ""), k, seed)
    return core_label_mask(df, data["targets"], k, seed, chosen)


def _test_pretrain(exp, df, split, device, changed) -> pd.DataFrame:
    """Reconstruction error on masked and on all patches, R^2 of the reconstruction, and a figure."""
    model, transform, state = load_network(exp, device)
    sums = np.zeros(4)  # squared error masked, count masked, squared error all, count all
    ss_tot = np.zeros(2)
    shown = None
    gen = torch.Generator(device=device).manual_seed(0)

    def scored(x):  # one batch: its masks drawn from the seeded stream, the sums and the first spectra kept
        nonlocal shown
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            _, pred, mask = model(x)
        target = model.target(x)
        err = (pred.float() - target) ** 2
        dev = (target - target.mean(dim=(1, 2), keepdim=True)) ** 2
        m = mask.unsqueeze(-1).expand_as(err)
        sums[:] += [float(err[m.bool()].sum()), float(m.sum()), float(err.sum()), float(err.numel())]
        ss_tot[:] += [float(dev[m.bool()].sum()), float(dev.sum())]
        if shown is None:
            shown = (x[:4].cpu(), model.encoder.unpatchify(pred[:4].float()).cpu(), mask[:4].cpu())
        return err.new_zeros(len(x), 0)
    run_batches(model, spectra_array(df), scored, transform)
    metrics = pd.DataFrame([{
        "split": split, "n": len(df),
        "mse_masked": sums[0] / max(sums[1], 1), "mse_all": sums[2] / max(sums[3], 1),
        "r2_masked": 1 - sums[0] / max(ss_tot[0], 1e-12), "r2_all": 1 - sums[2] / max(ss_tot[1], 1e-12),
        "data_changed": ", ".join(changed),
    }])
    exp.write_result(f"{split}-metrics", metrics)
    if shown is not None:
        figures.plot_reconstructions(*shown, model.encoder.patch_size, exp.results / f"{split}-reconstructions.png")
    return metrics
