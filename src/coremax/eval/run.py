"""Evaluation of an experiment on held-out cores (scripts/test.py) and the predictor behind it and predict.py.

Fine-tuned regressors and classical baselines share one path: a `Predictor` maps raw counts to wt%, and
everything after it (conformal intervals, metrics, figures, pickles) is the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from coremax import logs, models
from coremax.data.bulk import TARGETS
from coremax.data.dataset import load_info, load_split, spectra_array
from coremax.data.transforms import window
from coremax.engine.data import chosen_test_rows, core_label_mask, labelled
from coremax.engine.probe import element_head
from coremax.errors import UserError
from coremax.eval import figures
from coremax.baselines import BASELINE_FILE, load_baseline
from coremax.stats.conformal import conformal_quantile, intervals
from coremax.eval.floor import floor_metrics
from coremax.stats.metrics import FLAG_SCOPES, metrics_table
from coremax.eval.shift import check_rows
from coremax.experiment import Experiment
from coremax.frozen import check_unchanged
from coremax.io import file_sha256
from coremax.paths import check_name, dataset_dir

PRED_BATCH = 256


@dataclass
class Predictor:
    """What a trained experiment does with rows of a data set or of newly read spectra (a DataFrame as
    `load_split` or `spectra_rows` gives: metadata, the counts as integer columns, the element table)."""
    targets: list[str]
    predict: Callable[[pd.DataFrame], np.ndarray]   # rows -> target units (n, T), unbounded
    embed: Callable[[pd.DataFrame], np.ndarray]     # rows -> features for distribution checks
    contents: tuple = TARGETS                       # targets that are contents in wt%: bounded to 0-100

    def bounded(self, rows: pd.DataFrame) -> np.ndarray:
        """Predictions in their bounds: contents in wt% within 0-100, other targets (an isotope ratio) as they
        are; a non-finite prediction is refused rather than clipped into a plausible number."""
        p = np.asarray(self.predict(rows), dtype=np.float64)
        if not np.isfinite(p).all():
            raise UserError(f"The model predicts a non-finite value for {int((~np.isfinite(p)).any(axis=1).sum())} of "
                            f"{len(p)} spectra; it is broken (train it again) or the spectra are damaged.")
        return self.clip(p)

    def clip(self, p: np.ndarray) -> np.ndarray:
        cols = [j for j, t in enumerate(self.targets) if t in self.contents]
        p = np.array(p, dtype=np.float64)
        p[:, cols] = np.clip(p[:, cols], 0.0, 100.0)
        return p


# -- loading a trained experiment ------------------------------------------------------------------------------
def check_trained(exp: Experiment, split: str | None = None, allow_changed_data: bool = False) -> list[str]:
    """Refuse to use an experiment that did not complete, whose model file changed since training, or (for
    `split`) whose data set's files of that split are no longer the ones it was trained beside, unless
    `allow_changed_data`; returns the changed data files (to be recorded with the results)."""
    prov, status = exp.provenance(), exp.status()
    if status != "completed":
        why = "it is recorded as running but its process is gone (killed)" if status == "stale" else \
            f"its status is {status!r}"
        raise UserError(f"The experiment {exp.name!r} did not complete ({why}); resume it (scripts/train.py --name "
                        f"{exp.name} --resume) or train it again first.")
    for name, sha in prov.get("model_sha256", {}).items():
        path = exp.checkpoints / name
        if not path.is_file() or file_sha256(path) != sha:
            raise UserError(f"{path} is not the file {exp.name!r} trained (its sha256 differs from provenance.toml); "
                            "restore it or train the experiment again.")
    check_unchanged(exp)  # config.toml says what the model was trained with, and best-model.pth is of its stage
    recorded = prov.get("dataset", {}).get("files", {})
    if split is not None and recorded:
        dataset = prov["dataset"]["name"]
        folder = dataset_dir(exp.data_root, dataset)
        now = load_info(exp.data_root, dataset).get("files", {})
        # The split scored and the validation split the intervals are calibrated on; the files themselves are
        # hashed, not the list in info.toml (a rebuilt or edited file may keep an old list beside it).
        reads = {split, "val"}
        mine = [f for f in sorted(set(recorded) | set(now)) if f.split(".")[0].split("-")[0] in reads]
        changed = [f for f in mine if recorded.get(f) is None or not (folder / f).is_file()
                   or file_sha256(folder / f) != recorded[f]]
        if changed and not allow_changed_data:
            raise UserError(f"The data set {dataset!r} changed since {exp.name!r} was trained ({changed[0]} differs): "
                            f"its {split} rows may not be the ones held out then; rebuild the data set as it was, "
                            "train the experiment again on this one, or pass --allow-changed-data.")
        return changed
    return []


def load_predictor(exp: Experiment, device: str = "cpu") -> Predictor:
    """A fine-tuned regressor or a fitted baseline of an experiment folder, ready to predict."""
    check_trained(exp)
    cfg = exp.config()
    stage = cfg["experiment"]["stage"]
    channels = cfg["data"]["channels"]
    # Data sets built before they listed their contents: the default targets are the contents.
    contents = tuple(load_info(exp.data_root, cfg["data"]["dataset"]).get("contents", TARGETS))
    if stage == "baseline":
        model = load_baseline(exp.data_root, exp.checkpoints / BASELINE_FILE)
        inputs = baseline_inputs(model, channels)
        embed = (lambda rows: model.feature_space(inputs(rows))) if getattr(model, "inputs", "spectra") == "elements" \
            else (lambda rows: _log_total_features(window(spectra_array(rows), channels)))
        return Predictor(list(model.targets), lambda rows: model.predict(inputs(rows)), embed, contents)
    if stage != "finetune":
        raise UserError(f"The experiment {exp.name!r} is a {stage} experiment; prediction needs a finetune or "
                        "baseline experiment.")
    loaded = models.load(exp.checkpoints / "best-model.pth", device)
    model, transform, scaler = loaded.model, loaded.transform, loaded.scaler

    def run(x: np.ndarray, fn) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(x), PRED_BATCH):
                xb = transform(torch.tensor(x[start:start + PRED_BATCH], dtype=torch.float32, device=device))
                out.append(fn(xb).float().cpu().numpy())
        width = out[0].shape[1] if out else 0
        return np.concatenate(out) if out else np.zeros((0, width))

    side = element_head(loaded.state.get("element_head"))  # finetune.elements: the head also reads ratios

    def normalised(rows: pd.DataFrame) -> np.ndarray:
        out = run(spectra_array(rows), model)
        return out + side(rows) if side is not None else out

    return Predictor(loaded.targets, lambda rows: np.asarray(scaler.inverse(normalised(rows))),
                     lambda rows: run(spectra_array(rows), model.features), contents)


def baseline_inputs(model, channels) -> Callable[[pd.DataFrame], object]:
    """rows -> what the baseline reads: the energy window of the counts, or the element table (element
    baselines; a data set of element tables alone has no counts)."""
    if getattr(model, "inputs", "spectra") == "elements":  # files saved before element baselines: spectra
        return lambda rows: model.inputs_of(rows, None)
    return lambda rows: window(spectra_array(rows), channels)


def load_network(exp: Experiment, device: str = "cpu"):
    """(network, input transform from raw counts of the full spectrum, checkpoint state) of a pretrain or
    finetune experiment's best-model.pth: `coremax.models.load`, which needs nothing but the checkpoint."""
    loaded = models.load(exp.checkpoints / "best-model.pth", device)
    return loaded.model, loaded.transform, loaded.state


def _log_total_features(x: np.ndarray) -> np.ndarray:
    """Features of a baseline experiment for distribution checks: log of count shares per channel."""
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1.0) * 1e4)


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
    lo, hi = (pred.clip(b) for b in intervals(p, q))
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
    x_all = spectra_array(df)
    with torch.no_grad():
        for start in range(0, len(x_all), PRED_BATCH):
            x = transform(torch.tensor(x_all[start:start + PRED_BATCH], device=device))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                _, pred, mask = model(x)
            target = model.target(x)
            err = (pred.float() - target) ** 2
            dev = (target - target.mean(dim=(1, 2), keepdim=True)) ** 2
            m = mask.unsqueeze(-1).expand_as(err)
            sums += [float(err[m.bool()].sum()), float(m.sum()), float(err.sum()), float(err.numel())]
            ss_tot += [float(dev[m.bool()].sum()), float(dev.sum())]
            if shown is None:
                shown = (x[:4].cpu(), model.encoder.unpatchify(pred[:4].float()).cpu(), mask[:4].cpu())
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
