"""Learning rate: linear warm-up per iteration, then a half-cycle cosine down to min_lr."""

from __future__ import annotations

import math

from coremax.errors import UserError


# Warm-up takes at most this share of a run, so a run shortened to fit a budget (the demo's one pretraining
# epoch) still ends its cosine at min_lr instead of stopping half warmed-up at the peak.
MAX_WARMUP_SHARE = 0.25


def lr_at(epoch: float, base_lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Learning rate at a fractional epoch."""
    warmup_epochs = min(warmup_epochs, MAX_WARMUP_SHARE * epochs)
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    progress = min((epoch - warmup_epochs) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def scaled_lr(blr: float, effective_batch: int, scaling: str = "none") -> float:
    if scaling == "none":
        return blr
    if scaling == "linear":
        return blr * effective_batch / 256
    raise UserError(f"optim.lr_scaling = {scaling!r} is not none or linear.")
