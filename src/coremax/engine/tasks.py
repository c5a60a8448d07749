"""What a training stage optimises and scores: a Task gives the loss of a batch, the validation metrics that pick
best-model.pth, and the outputs of a model on clean inputs; the loop in coremax.engine.trainer owns the rest."""

from __future__ import annotations

import numpy as np
import torch

from coremax.data.transforms import jitter_absorption, jitter_calibration, poisson_resample
from coremax.engine.data import ArrayData, Prepared
from coremax.engine.inference import predict_rows
from coremax.engine.runtime import Runtime
from coremax.models.regressor import masked_mse
from coremax.stats.epo import mean_spread
from coremax.stats.metrics import rmse

VAL_SEED = 12345  # fixed masks for pretraining validation, so epochs are compared on the same task


class Task:
    """What differs between stages. `score` is the validation metric that picks best-model.pth."""
    stage = ""
    score = "val_loss"
    layer_decay = False
    side = None  # rows' frame -> an addition to the normalised output (the element head of finetune.elements)

    def __init__(self, data: Prepared, rt: Runtime):
        self.data, self.rt = data, rt
        self.transform = data.transform(rt.device)

    def inputs(self, x: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        if train and self.data.absorption:
            x = self.data.channels.map_runs(x, lambda part, first: jitter_absorption(
                part, self.data.absorption, first, generator=generator))
        if train and any(self.data.jitter):  # each run's spectrum drifts on its own axis
            x = self.data.channels.per_run(lambda part: jitter_calibration(part, *self.data.jitter,
                                                                           generator=generator))(x)
        if train and self.data.augment:  # counting noise last, on the jittered expected spectrum
            x = poisson_resample(x, self.data.augment_min_fraction, generator=generator)
        return self.transform(x)

    def outputs(self, model, rows: ArrayData, batch_size: int | None = None, features: bool = False) -> torch.Tensor:
        """What `model` gives (its pooled embeddings with `features`) for the clean inputs of `rows`, on the CPU."""
        width = model.head.in_features if features else len(self.data.targets)
        out = torch.from_numpy(predict_rows(model, rows, model.features if features else model,
                                            lambda x: self.inputs(x, train=False), width, batch_size))
        if self.side is not None and not features:  # finetune.elements: the element head's part of the output
            out = out + torch.from_numpy(self.side(rows.frame)).float()
        return out

    def loss(self, model, x, y) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model, val: ArrayData, batch_size: int) -> dict:
        raise NotImplementedError


class PretrainTask(Task):
    stage = "pretrain"

    def loss(self, model, x, y):
        return model(x, aux_target=y)[0]  # y: the element log-ratios of model.aux_elements, else None

    @torch.no_grad()
    def validate(self, model, val, batch_size):
        total, count = torch.zeros((), device=self.rt.device), 0
        with torch.random.fork_rng(devices=[self.rt.device] if self.rt.device.type == "cuda" else []):
            torch.manual_seed(VAL_SEED)
            for idx in val.batches(batch_size):
                x = self.inputs(val.get(idx).to(self.rt.device), train=False)
                y = val.y[idx].to(self.rt.device) if val.y is not None else None
                with self.rt.autocast():
                    total += model(x, aux_target=y)[0].float() * len(idx)
                count += len(idx)
        return {"val_loss": float(total) / max(count, 1)}


class FinetuneTask(Task):
    stage = "finetune"
    score = "val_nrmse"
    layer_decay = True
    SETTING_DRAW = 16  # spectra per scanner setting drawn for each step's penalty (finetune.epo_penalty)

    def __init__(self, data: Prepared, rt: Runtime):
        super().__init__(data, rt)
        self.blind = None

    def keep_blind(self, spectra: ArrayData, start: torch.Tensor, targets: list[int], weight: float) -> None:
        """Add to every step's loss `weight` x the spread of the scanner settings' mean predictions of `targets`
        (`stats.epo.mean_spread` of their change from `start`, the blind head's predictions of the unlabelled
        `spectra`), so that fine-tuning keeps a head fitted blind to the scanner blind (finetune.epo_penalty)."""
        settings = spectra.frame["scanner"].to_numpy(str)
        groups = [torch.from_numpy(np.flatnonzero(settings == s)) for s in np.unique(settings)]
        if targets and weight > 0 and len(groups) > 1:
            self.blind = (spectra, start[:, targets].to(self.rt.device), groups, targets, weight)

    def loss(self, model, x, y):
        if self.blind is None:
            return masked_mse(model(x).float(), y)
        spectra, start, groups, targets, weight = self.blind
        # a draw per setting (the global stream, seeded per epoch: a resumed run repeats it), clean inputs, in the
        # step's one forward pass
        idx = torch.stack([g[torch.randint(len(g), (self.SETTING_DRAW,))] for g in groups]).flatten()
        pred = model(torch.cat([x, self.inputs(spectra.get(idx).to(x.device), train=False).to(x.dtype)])).float()
        change = pred[len(x):, targets] - start[idx.to(start.device)]
        return masked_mse(pred[:len(x)], y) + weight * mean_spread(change.view(len(groups), self.SETTING_DRAW, -1))

    @torch.no_grad()
    def validate(self, model, val, batch_size):
        pred = self.outputs(model, val, batch_size)
        out = {"val_loss": float(masked_mse(pred, val.y))}
        # Normalised RMSE per target, averaged: comparable across targets of different units.
        nrmse = []
        pred_wt = self.data.scaler.inverse(pred.numpy())
        true_wt = self.data.scaler.inverse(val.y.cpu().numpy())
        for j, t in enumerate(self.data.targets):
            out[f"val_rmse_{t}"] = rmse(true_wt[:, j], pred_wt[:, j])
            nrmse.append(out[f"val_rmse_{t}"] / self.data.scaler.unit_std[j])
        out["val_nrmse"] = float(np.nanmean(nrmse))
        return out


TASKS = {"pretrain": PretrainTask, "finetune": FinetuneTask}
