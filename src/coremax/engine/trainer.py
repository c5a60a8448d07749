"""One training loop for both stages. A Task says what a stage's loss and validation are; the loop owns
the rest: lr schedule, accumulation, clipping, mixed precision, DDP, checkpoints, resume, history."""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from coremax.data.transforms import jitter_absorption, jitter_calibration, poisson_resample
from coremax import checkpoint as ckpt
from coremax.engine.data import ArrayData, Prepared
from coremax.engine.optim import build_optimizer
from coremax.engine.runtime import Runtime, all_reduce_sum
from coremax.engine.schedule import lr_at, scaled_lr, set_lr
from coremax.errors import UserError
from coremax.models.regressor import masked_mse
from coremax.progress import Progress

VAL_SEED = 12345  # fixed masks for pretraining validation, so epochs are compared on the same task


class TrainingDiverged(UserError):
    pass


class Task:
    """What differs between stages. `score` is the validation metric that picks best-model.pth."""
    stage = ""
    score = "val_loss"
    layer_decay = False

    def __init__(self, data: Prepared, rt: Runtime):
        self.data, self.rt = data, rt
        self.transform = data.transform(rt.device)

    def inputs(self, x: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        if train and self.data.absorption:
            x = jitter_absorption(x, self.data.absorption, self.data.channels[0], generator=generator)
        if train and any(self.data.jitter):
            x = jitter_calibration(x, *self.data.jitter, generator=generator)
        if train and self.data.augment:  # counting noise last, on the jittered expected spectrum
            x = poisson_resample(x, self.data.augment_min_fraction, generator=generator)
        return self.transform(x)

    def loss(self, model, x, y) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model, val: ArrayData, batch_size: int) -> dict:
        raise NotImplementedError


class PretrainTask(Task):
    stage = "pretrain"

    def loss(self, model, x, y):
        return model(x)[0]

    @torch.no_grad()
    def validate(self, model, val, batch_size):
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=[self.rt.device] if self.rt.device.type == "cuda" else []):
            torch.manual_seed(VAL_SEED)
            for idx in val.batches(batch_size):
                x = self.inputs(val.x[idx].to(self.rt.device), train=False)
                with self.rt.autocast():
                    loss = model(x)[0]
                total += float(loss) * len(idx)
                count += len(idx)
        return {"val_loss": total / max(count, 1)}


class FinetuneTask(Task):
    stage = "finetune"
    score = "val_nrmse"
    layer_decay = True

    def loss(self, model, x, y):
        return masked_mse(model(x).float(), y)

    @torch.no_grad()
    def validate(self, model, val, batch_size):
        preds = [model(self.inputs(val.x[idx].to(self.rt.device), train=False)).float().cpu()
                 for idx in val.batches(batch_size)]
        pred = torch.cat(preds) if preds else torch.zeros(0, len(self.data.targets))
        out = {"val_loss": float(masked_mse(pred, val.y))}
        # Normalised RMSE per target, averaged: comparable across targets of different units.
        nrmse = []
        pred_wt = self.data.scaler.inverse(pred.numpy())
        true_wt = self.data.scaler.inverse(val.y.numpy())
        for j, t in enumerate(self.data.targets):
            ok = ~np.isnan(true_wt[:, j])
            err = pred_wt[ok, j] - true_wt[ok, j]
            rmse = float(np.sqrt(np.mean(err ** 2))) if ok.any() else float("nan")
            out[f"val_rmse_{t}"] = rmse
            nrmse.append(rmse / self.data.scaler.std[j])
        out["val_nrmse"] = float(np.nanmean(nrmse))
        return out


TASKS = {"pretrain": PretrainTask, "finetune": FinetuneTask}


def fit(task: Task, model: torch.nn.Module, exp, rt: Runtime, log, config: dict, seed: int,
        resume: bool = False, extra_state: dict | None = None, *, batch_size: int = 64, epochs: int = 20,
        blr: float = 1.5e-4, lr_scaling: str = "none", min_lr: float = 1e-6, warmup_epochs: float = 2.0,
        weight_decay: float = 0.05, clip_grad: float = 1.0, layer_decay: float = 0.75,
        accum_iter: int = 1) -> pd.DataFrame:
    """Consumes the [optim] section; returns the history (one row per epoch)."""
    if batch_size < 1 or epochs < 1 or accum_iter < 1:
        raise UserError("optim.batch_size, optim.epochs and optim.accum_iter must all be at least 1.")
    data = task.data
    lr = scaled_lr(blr, batch_size * accum_iter * rt.world_size, lr_scaling)
    model.to(rt.device)
    optimizer = build_optimizer(model, lr, weight_decay=weight_decay,
                                layer_decay=layer_decay if task.layer_decay else 1.0)
    history: list[dict] = []
    start_epoch, step, best = 0, 0, math.inf
    last = exp.checkpoints / "last.pth"
    if resume and last.is_file():
        state = ckpt.load(last, map_location=rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if rt.scaler is not None and state.get("scaler"):
            rt.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        start_epoch, step, best, history = state["epoch"], state["step"], state["best"], list(state["history"])
        log.info("resumed", epoch=start_epoch, step=step, checkpoint=exp.relpath(last))

    net = torch.compile(model) if rt.compile else model
    if rt.distributed:
        net = DistributedDataParallel(net, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    steps_per_epoch = data.train.num_batches(batch_size, rt.world_size)
    log.info("training", stage=task.stage, rows=len(data.train), val_rows=len(data.val), lr=lr,
             epochs=epochs, steps_per_epoch=steps_per_epoch, runtime=rt.describe())

    for epoch in range(start_epoch, epochs):
        started = time.monotonic()
        # Every epoch draws from streams seeded by (seed, epoch): a resumed run repeats the same epochs.
        torch.manual_seed(seed * 100_003 + epoch * 101 + rt.rank)
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        augment_gen = torch.Generator(device=rt.device).manual_seed(seed + epoch + 7_919 * rt.rank)
        net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        with Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", log, rt.log_interval_s,
                      enabled=rt.main) as bar:
            for i, idx in enumerate(data.train.batches(batch_size, order, rt.rank, rt.world_size)):
                if i % accum_iter == 0:
                    set_lr(optimizer, lr_at(epoch + i / steps_per_epoch, lr, min_lr, warmup_epochs, epochs))
                x = data.train.x[idx]
                if rt.pin_mem:  # page-locked batch: the copy to the GPU below runs asynchronously
                    x = x.pin_memory()
                x = task.inputs(x.to(rt.device, non_blocking=True), True, augment_gen)
                y = data.train.y[idx].to(rt.device) if data.train.y is not None else None
                boundary = (i + 1) % accum_iter == 0 or i + 1 == steps_per_epoch
                sync = rt.distributed and not boundary
                with net.no_sync() if sync else contextlib.nullcontext(), rt.autocast():
                    loss = task.loss(net, x, y)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"The loss became {value} at epoch {epoch + 1}, step {step + 1}; the last good "
                            f"checkpoint is {exp.relpath(last) if last.exists() else '(none yet)'}; lower "
                            "optim.blr or set optim.clip_grad.")
                    scaled = loss / accum_iter
                    (rt.scaler.scale(scaled) if rt.scaler else scaled).backward()
                if boundary:
                    _step(optimizer, model, rt, clip_grad)
                    step += 1
                loss_sum += torch.tensor([value * len(idx), len(idx)], dtype=torch.float64)
                bar.update(loss=value)
        loss_sum = all_reduce_sum(loss_sum, rt)
        net.eval()
        val = task.validate(model, data.val, batch_size)
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": float(loss_sum[0] / loss_sum[1]), **val,
               "seconds": round(time.monotonic() - started, 3)}
        history.append(row)
        improved = row[task.score] < best
        best = min(best, row[task.score])
        log.info("epoch", **row, best=improved)
        if rt.main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": {"kind": "warmup_cosine", "lr": lr, "min_lr": min_lr,
                                   "warmup_epochs": warmup_epochs, "epochs": epochs},
                     "scaler": rt.scaler.state_dict() if rt.scaler else {}, "epoch": epoch + 1, "step": step,
                     "rng": ckpt.rng_state(), "config": config, "best": best, "history": history,
                     "stage": task.stage, **(extra_state or {})}
            ckpt.save(last, state)
            if improved:
                ckpt.save(exp.checkpoints / "best-model.pth", state)
            if rt.save_every and (epoch + 1) % rt.save_every == 0:
                ckpt.save(exp.checkpoints / f"checkpoint-epoch-{epoch + 1}.pth", state)
            exp.write_result("history", pd.DataFrame(history))
    return pd.DataFrame(history)


def _step(optimizer, model, rt: Runtime, clip_grad: float) -> None:
    if rt.scaler is not None:
        rt.scaler.unscale_(optimizer)
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if rt.scaler is not None:
        rt.scaler.step(optimizer)
        rt.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)

