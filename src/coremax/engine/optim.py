"""AdamW parameter groups: no weight decay on biases, norms, tokens and position embeddings; optional
layer-wise learning-rate decay over the encoder (the head learns fastest, the patch embedding slowest)."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "pos_embed", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """0 = embeddings and tokens, i + 1 = encoder block i, depth + 1 = everything after the encoder."""
    if name.startswith(("encoder.cls_token", "encoder.pos_embed", "encoder.patch_embed")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 no_weight_decay: tuple = ()) -> list[dict]:
    """AdamW groups keyed by (layer id, decay or not); `no_weight_decay` holds full or last-part names.
    Each group carries `lr_scale` (set_lr multiplies by it), `layer_id` and the parameter `names`."""
    depth = model.encoder.depth
    extra = set(no_weight_decay)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        no_decay = p.ndim == 1 or leaf == "bias" or leaf in NO_DECAY_NAMES or bool({name, leaf} & extra)
        lid = layer_id(name, depth) if layer_decay < 1.0 else depth + 1
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 1.0,
                    betas: tuple = (0.9, 0.95), fused: bool = False) -> torch.optim.AdamW:
    """AdamW over `param_groups`; `fused` (CUDA only) updates every parameter in one kernel."""
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
