"""One training loop for both stages. A Task says what a stage's loss and validation are; the loop owns
the rest: lr schedule, accumulation, clipping, mixed precision, DDP, checkpoints, resume, history."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from coremax import checkpoint as ckpt
from coremax.config import consumes
from coremax.engine.data import Prepared
from coremax.engine.optim import build_optimizer
from coremax.engine.runtime import Runtime, all_reduce_sum, peak_flops
from coremax.engine.schedule import lr_at, scaled_lr, set_lr
from coremax.engine.tasks import Task
from coremax.errors import UserError
from coremax.models import train_flops_per_spectrum
from coremax.models.peft import load_weights, saved_weights
from coremax import logs
from coremax.logs import Scalars
from coremax.progress import Progress

CHECK_EVERY = 50  # GPU steps between read-backs of the loss (a non-finite loss is caught at the next one)


class TrainingDiverged(UserError):
    pass


@dataclass
class Schedule:
    """How a run's steps are laid out: the [optim] values the epoch loop needs."""
    lr: float
    min_lr: float
    warmup_epochs: float
    epochs: int
    batch_size: int
    accum_iter: int
    clip_grad: float
    steps_per_epoch: int


@consumes("optim")  # the keys a caller leaves out come at the schema's defaults
def fit(task: Task, model: torch.nn.Module, exp, rt: Runtime, log, config: dict, seed: int,
        resume: bool = False, extra_state: dict | None = None, *, batch_size: int, epochs: int, blr: float,
        lr_scaling: str, min_lr: float, warmup_epochs: float, weight_decay: float, clip_grad: float,
        layer_decay: float, accum_iter: int) -> pd.DataFrame:
    """Consumes the [optim] section; returns the history (one row per epoch)."""
    if batch_size < 1 or epochs < 1 or accum_iter < 1:
        raise UserError("optim.batch_size, optim.epochs and optim.accum_iter must all be at least 1.")
    data = task.data
    sched = Schedule(scaled_lr(blr, batch_size * accum_iter * rt.world_size, lr_scaling), min_lr, warmup_epochs,
                     epochs, batch_size, accum_iter, clip_grad, data.train.num_batches(batch_size, rt.world_size))
    model.to(rt.device)
    on_device = place_on_device(data, rt)
    optimizer = build_optimizer(model, sched.lr, weight_decay=weight_decay,
                                layer_decay=layer_decay if task.layer_decay else 1.0, fused=rt.device.type == "cuda")
    last = exp.checkpoints / "last.pth"
    start_epoch, step, best, history = _resume(last, model, optimizer, rt, exp, log) if resume and last.is_file() \
        else (0, 0, math.inf, [])
    net = torch.compile(model) if rt.compile else model
    if rt.distributed:
        net = DistributedDataParallel(net, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    flops = train_flops_per_spectrum(model)
    peak = peak_flops(rt)
    log.info("training", stage=task.stage, rows=len(data.train), val_rows=len(data.val), lr=sched.lr,
             epochs=epochs, steps_per_epoch=sched.steps_per_epoch, runtime=rt.describe(), data_on_device=on_device,
             streamed=data.train.streamed,
             gflops_per_spectrum=round(flops / 1e9, 4), peak_tflops=round(peak / 1e12, 1) if peak else None)
    scalars = Scalars(exp.path / "tensorboard" if rt.tensorboard and rt.main else None)
    for epoch in range(start_epoch, epochs):
        started = time.monotonic()
        train_loss, step, seen = train_epoch(task, net, model, optimizer, rt, sched, epoch, step, seed, log,
                                              exp.relpath(last) if last.exists() else "(none yet)")
        train_s = time.monotonic() - started
        net.eval()
        val = task.validate(model, data.val, batch_size)
        # Throughput of the training steps over all processes; MFU against the device's bf16 peak.
        speed = seen / train_s
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
               **val, "seconds": round(time.monotonic() - started, 3), "spectra_per_s": round(speed, 1),
               "mfu": round(flops * speed / (peak * rt.world_size), 4) if peak else float("nan")}
        if not math.isfinite(row[task.score]):  # NaN < best is never true: the run would end without a best model
            raise UserError(f"The validation score {task.score} is {row[task.score]} at epoch {epoch + 1}: the "
                            "validation rows give no finite score (no measured targets there?); the last good "
                            "checkpoint stays. Check the data set's validation split.")
        history.append(row)
        improved = row[task.score] < best
        best = min(best, row[task.score])
        log.info("epoch", **row, best=improved)
        scalars.write(row, epoch + 1)
        if rt.main:
            state = {"model": saved_weights(model), "optimizer": optimizer.state_dict(),
                     "scaler": rt.scaler.state_dict() if rt.scaler else {}, "epoch": epoch + 1, "step": step,
                     "rng": ckpt.rng_state(), "config": config, "best": best, "history": history,
                     "stage": task.stage, **(extra_state or {})}
            _save_checkpoints(exp, state, improved, rt.save_every)
    scalars.close()
    return pd.DataFrame(history)


def save_untrained(task: Task, model: torch.nn.Module, exp, rt: Runtime, log, config: dict,
                   extra_state: dict | None = None) -> pd.DataFrame:
    """A model that needs no gradient step (a closed-form head on a frozen encoder): validated once and saved
    as the one epoch of its run, so test.py, predict.py, sweeps and the study read it like any fine-tune."""
    started = time.monotonic()
    val = task.validate(model.to(rt.device).eval(), task.data.val, 256)
    row = {"epoch": 1, "step": 0, "lr": 0.0, "train_loss": float("nan"), **val,
           "seconds": round(time.monotonic() - started, 3), "spectra_per_s": float("nan"), "mfu": float("nan")}
    log.info("epoch", **row, best=True)
    if rt.main:
        _save_checkpoints(exp, {"model": saved_weights(model), "optimizer": {}, "scaler": {}, "epoch": 1, "step": 0,
                                "rng": ckpt.rng_state(), "config": config, "best": row[task.score],
                                "history": [row], "stage": task.stage, **(extra_state or {})}, True, 0)
    return pd.DataFrame([row])


def place_on_device(data: Prepared, rt: Runtime) -> bool:
    """With runtime.data_on_device, move the train and val spectra to the GPU once when they take at most a
    quarter of its free memory; the steps then slice batches there instead of copying each one."""
    if not rt.data_on_device:
        return False
    free, _ = torch.cuda.mem_get_info(rt.device)
    if data.train.nbytes + data.val.nbytes > free / 4:
        return False
    data.train, data.val = data.train.to(rt.device), data.val.to(rt.device)
    return True


def _resume(last, model, optimizer, rt: Runtime, exp, log) -> tuple[int, int, float, list]:
    """Weights, optimizer, loss scaler and random streams from last.pth: (epoch, step, best score, history)."""
    state = ckpt.load(last, map_location=rt.device)
    load_weights(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if rt.scaler is not None and state.get("scaler"):
        rt.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    log.info("resumed", epoch=state["epoch"], step=state["step"], checkpoint=exp.relpath(last))
    return state["epoch"], state["step"], state["best"], list(state["history"])


def train_epoch(task: Task, net, model, optimizer, rt: Runtime, sched: Schedule, epoch: int, step: int,
                 seed: int, log, last_good: str) -> tuple[float, int, int]:
    """One pass over the training rows: (mean loss per spectrum over all processes, optimizer steps so far,
    spectra seen by all processes). The loss stays on the device and is read back only every `check`
    steps (every step on the CPU, where reading it costs nothing), so a GPU never waits on the host."""
    data = task.data
    # Every epoch draws from streams seeded by (seed, epoch): a resumed run repeats the same epochs.
    torch.manual_seed(seed * 100_003 + epoch * 101 + rt.rank)
    order = torch.Generator().manual_seed(seed * 100_003 + epoch)
    augment_gen = torch.Generator(device=rt.device).manual_seed(seed + epoch + 7_919 * rt.rank)
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float32, device=rt.device)
    seen, checked, check = 0, step + 1, 1 if rt.device.type == "cpu" else CHECK_EVERY
    n = sched.steps_per_epoch
    with Progress(n, f"epoch {epoch + 1}/{sched.epochs}", log, rt.log_interval_s,
                  enabled=rt.main and not logs.console_quiet()) as bar:
        for i, idx in enumerate(data.train.batches(sched.batch_size, order, rt.rank, rt.world_size)):
            if i % sched.accum_iter == 0:
                set_lr(optimizer, lr_at(epoch + i / n, sched.lr, sched.min_lr, sched.warmup_epochs, sched.epochs))
            x = data.train.get(idx)
            if rt.pin_mem and x.device.type == "cpu":  # page-locked batch: the copy below runs asynchronously
                x = x.pin_memory()
            x = task.inputs(x.to(rt.device, non_blocking=True), True, augment_gen)
            y = data.train.y[idx].to(rt.device, non_blocking=True) if data.train.y is not None else None
            boundary = (i + 1) % sched.accum_iter == 0 or i + 1 == n
            with net.no_sync() if rt.distributed and not boundary else contextlib.nullcontext(), rt.autocast():
                loss = task.loss(net, x, y)
                loss_sum += loss.detach().float() * len(idx)
                seen += len(idx)
                if (i + 1) % check == 0 or i + 1 == n:
                    mean = float(loss_sum) / seen  # the one read-back to the host
                    if not math.isfinite(mean):
                        where = f"step {step + 1}" if check == 1 else f"between steps {checked} and {step + 1}"
                        raise TrainingDiverged(
                            f"The loss became {mean} at epoch {epoch + 1}, {where}; the last good checkpoint is "
                            f"{last_good}; lower optim.blr or set optim.clip_grad.")
                    checked = step + 2
                    bar.update(i + 1 - bar.count, loss=mean)
                scaled = loss / sched.accum_iter
                (rt.scaler.scale(scaled) if rt.scaler else scaled).backward()
            if boundary:
                _step(optimizer, model, rt, sched.clip_grad)
                step += 1
    total = all_reduce_sum(torch.stack([loss_sum.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                        device=rt.device)]), rt)
    return float(total[0] / total[1]), step, int(total[1])


def _save_checkpoints(exp, state: dict, improved: bool, save_every: int) -> None:
    """best-model.pth when the score improved, then last.pth (so a kill between the two never leaves last.pth's
    recorded best ahead of the best file), checkpoint-epoch-N.pth every N; then the history table. Only
    last.pth resumes, so best-model.pth leaves out the optimizer's moments (two thirds of a full checkpoint)."""
    if improved:
        ckpt.save(exp.checkpoints / "best-model.pth", {**state, "optimizer": {}, "scaler": {}})
    ckpt.save(exp.checkpoints / "last.pth", state)
    if save_every and state["epoch"] % save_every == 0:
        ckpt.save(exp.checkpoints / f"checkpoint-epoch-{state['epoch']}.pth", state)
    exp.write_result("history", pd.DataFrame(state["history"]))


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

