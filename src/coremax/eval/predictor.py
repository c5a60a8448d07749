"""The one prediction path: a `Predictor` turns any trained experiment (a fine-tuned MSM regressor in any
finetune.mode, a pretraining's encoder, a classical baseline) into batched predictions, features and bounded
intervals of rows of spectra, for test.py, predict.py, suggest.py and the analysis helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from coremax import models
from coremax.baselines import BASELINE_FILE, load_baseline
from coremax.data.bulk import TARGETS
from coremax.data.dataset import load_info, spectra_array
from coremax.data.window import as_window, data_window
from coremax.engine.inference import predict_rows
from coremax.engine.probe import element_head
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.frozen import check_unchanged
from coremax.io import file_sha256
from coremax.paths import dataset_dir
from coremax.stats.conformal import intervals


@dataclass
class Predictor:
    """What a trained experiment does with rows of a data set or of newly read spectra (a DataFrame as
    `load_split` or `spectra_rows` gives: metadata, the counts as integer columns, the element table)."""
    targets: list[str]
    predict: Callable[[pd.DataFrame], np.ndarray] | None  # rows -> target units (n, T), unbounded; None: pretrain
    embed: Callable[[pd.DataFrame], np.ndarray]     # rows -> features for distribution checks
    contents: tuple = TARGETS                       # targets that are contents in wt%: bounded to 0-100
    features: Callable[[pd.DataFrame], np.ndarray] | None = None  # the model's own description (sample
    # suggestion measures distances in it); None: the same as embed
    runs: tuple = ()  # the tube voltages of each spot it reads (coremax.data.runs); empty: one run

    def __post_init__(self):
        self.features = self.features or self.embed

    def require_targets(self, name: str) -> None:
        if self.predict is None:
            raise UserError(f"The experiment {name!r} is a pretrain experiment; prediction needs a finetune or "
                            "baseline experiment.")

    def bounded(self, rows: pd.DataFrame) -> np.ndarray:
        """Predictions in their bounds: contents in wt% within 0-100, other targets (an isotope ratio) as they
        are; a non-finite prediction is refused rather than clipped into a plausible number."""
        p = np.asarray(self.predict(rows), dtype=np.float64)
        if not np.isfinite(p).all():
            raise UserError(f"The model predicts a non-finite value for {int((~np.isfinite(p)).any(axis=1).sum())} of "
                            f"{len(p)} spectra; it is broken (train it again) or the spectra are damaged.")
        return self.clip(p)

    def interval(self, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds of bounded predictions `p` with conformal half-widths `q` (per target, or per
        row and target), in the targets' bounds."""
        return tuple(self.clip(b) for b in intervals(p, q))

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
    """Any trained experiment of a folder, ready: a fine-tuned regressor or a fitted baseline predicts; a
    pretraining gives its encoder's features only (mean patch token of the last block)."""
    check_trained(exp)
    cfg = exp.config()
    stage = cfg["experiment"]["stage"]
    info = load_info(exp.data_root, cfg["data"]["dataset"])
    # Data sets built before they listed their contents: the default targets are the contents.
    contents = tuple(info.get("contents", TARGETS))
    channels = data_window(cfg["data"], info) if info.get("spectrum_length") else cfg["data"]["channels"]
    if stage == "baseline":
        return baseline_predictor(load_baseline(exp.data_root, exp.checkpoints / BASELINE_FILE), channels, contents,
                                  info.get("runs", ()))
    return network_predictor(models.load(exp.checkpoints / "best-model.pth", device), contents)


def baseline_predictor(model, channels, contents: tuple = TARGETS, runs=()) -> Predictor:
    """The Predictor of a fitted baseline that reads the energy window `channels` (of an experiment or a bundle)."""
    channels = as_window(channels)
    inputs = baseline_inputs(model, channels)
    own = lambda rows: model.feature_space(inputs(rows))  # noqa: E731
    embed = own if getattr(model, "inputs", "spectra") == "elements" \
        else (lambda rows: _log_total_features(channels(spectra_array(rows))))
    return Predictor(list(model.targets), lambda rows: model.predict(inputs(rows)), embed, contents, own,
                     tuple(float(k) for k in runs))


def network_predictor(loaded: models.Loaded, contents: tuple = TARGETS) -> Predictor:
    """The Predictor of a rebuilt network (coremax.models.load or from_tensors): a pretraining's gives features
    only."""
    model, transform, scaler = loaded.model, loaded.transform, loaded.scaler
    runs = tuple(float(k) for k in loaded.state.get("runs_kv", ()))
    if loaded.stage == "pretrain":
        def encode(rows: pd.DataFrame) -> np.ndarray:
            return predict_rows(model, spectra_array(rows), lambda xb: model.encoder(xb)[:, 1:].mean(1), transform,
                                model.encoder.embed_dim)
        return Predictor([], None, encode, contents, runs=runs)
    side = element_head(loaded.state.get("element_head"))  # finetune.elements: the head also reads ratios

    def normalised(rows: pd.DataFrame) -> np.ndarray:
        out = predict_rows(model, spectra_array(rows), model, transform, len(loaded.targets))
        return out + side(rows) if side is not None else out

    return Predictor(loaded.targets, lambda rows: np.asarray(scaler.inverse(normalised(rows))),
                     lambda rows: predict_rows(model, spectra_array(rows), model.features, transform,
                                               model.head.in_features), contents, runs=runs)


def baseline_inputs(model, channels) -> Callable[[pd.DataFrame], object]:
    """rows -> what the baseline reads: the energy window of the counts, or the element table (element
    baselines; a data set of element tables alone has no counts)."""
    if getattr(model, "inputs", "spectra") == "elements":  # files saved before element baselines: spectra
        return lambda rows: model.inputs_of(rows, None)
    return lambda rows: as_window(channels)(spectra_array(rows))


def load_network(exp: Experiment, device: str = "cpu"):
    """(network, input transform from raw counts of the full spectrum, checkpoint state) of a pretrain or
    finetune experiment's best-model.pth: `coremax.models.load`, which needs nothing but the checkpoint."""
    loaded = models.load(exp.checkpoints / "best-model.pth", device)
    return loaded.model, loaded.transform, loaded.state


def _log_total_features(x: np.ndarray) -> np.ndarray:
    """Features of a baseline experiment for distribution checks: log of count shares per channel."""
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1.0) * 1e4)
