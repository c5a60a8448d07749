"""Parameter-efficient fine-tuning (finetune.mode "lora" or "adapter").

The pretrained encoder stays frozen; LoRA (Hu et al. 2021) adds a trainable low-rank update to each linear layer
of the encoder's blocks, adapters (Houlsby et al. 2019) add a trainable bottleneck after each block. Both start
as the identity (the update's up-projection is zero), so the first step sees the pretrained encoder. Only the new
weights and the head train, and a checkpoint keeps only those, with the path and sha256 of the base checkpoint
whose encoder they adapt: `rebuild` puts the two together again (models.load and --resume)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from coremax import checkpoint as ckpt
from coremax.errors import UserError
from coremax.io import file_sha256
from coremax.models.vitx import load_encoder
from coremax.paths import inside

class LoRALinear(nn.Linear):
    """A linear layer whose pretrained weight and bias (the same Parameters, frozen) get a trainable update
    (alpha / rank) B A. Its state-dict keys are the wrapped layer's plus lora_a and lora_b, so the base weights
    load into it unchanged."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weights are the base's, nothing new to allocate
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_a = nn.Parameter(base.weight.new_empty(rank, base.in_features))
        self.lora_b = nn.Parameter(base.weight.new_zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


class Adapter(nn.Module):
    """x + up(GELU(down(x))), a bottleneck of `dim` features after a block."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.down, self.up = nn.Linear(width, dim), nn.Linear(dim, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))


def add_lora(model: nn.Module, lora_rank: int, lora_alpha: float, **_) -> None:
    """Every linear layer of each block: attention qkv and projection, both MLP layers."""
    for block in model.encoder.blocks:
        block.attn.qkv = LoRALinear(block.attn.qkv, lora_rank, lora_alpha)
        block.attn.proj = LoRALinear(block.attn.proj, lora_rank, lora_alpha)
        block.mlp[0] = LoRALinear(block.mlp[0], lora_rank, lora_alpha)
        block.mlp[2] = LoRALinear(block.mlp[2], lora_rank, lora_alpha)


def add_adapters(model: nn.Module, adapter_dim: int, **_) -> None:
    for block in model.encoder.blocks:
        block.adapter = Adapter(model.encoder.embed_dim, adapter_dim).to(block.norm1.weight.device)


# What each kind adds to a frozen encoder (the finetune.mode that uses it, coremax.modes, names it; a checkpoint
# records it, so models.load rebuilds the same model).
KINDS = {"lora": add_lora, "adapter": add_adapters}


def attach(model: nn.Module, kind: str, lora_rank: int = 8, lora_alpha: float = 16.0, adapter_dim: int = 32) -> int:
    """Freeze the encoder of a Regressor and add the trainable weights of `kind` (KINDS); the head (and fc_norm)
    keep training. Returns the number of trainable parameters. The model remembers which state-dict keys a
    checkpoint must keep (`saved_weights`)."""
    if kind not in KINDS:
        raise UserError(f"finetune.mode = {kind!r} is not a parameter-efficient mode; use one of {tuple(KINDS)}.")
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    KINDS[kind](model, lora_rank=lora_rank, lora_alpha=lora_alpha, adapter_dim=adapter_dim)
    model.peft_keys = {name for name, p in model.named_parameters() if p.requires_grad}
    model.peft_mode = kind
    return trainable_params(model)


def trainable_params(model: nn.Module) -> int:
    """How many parameter values an optimizer step changes."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def saved_weights(model: nn.Module) -> dict:
    """What a checkpoint keeps of the model: every tensor, or with PEFT only the trained ones."""
    state = model.state_dict()
    keys = getattr(model, "peft_keys", None)
    return state if keys is None else {k: v for k, v in state.items() if k in keys}


def load_weights(model: nn.Module, weights: dict) -> None:
    """The inverse of saved_weights: a PEFT model takes exactly its trained tensors, any other model all."""
    keys = getattr(model, "peft_keys", None)
    if keys is None:
        model.load_state_dict(weights)
        return
    if set(weights) != keys:
        raise UserError(f"The checkpoint's weights are not those of this {model.peft_mode!r} model "
                        f"({len(set(weights) ^ keys)} keys differ); it was written with other finetune settings.")
    model.load_state_dict(weights, strict=False)


def base_record(base: Path, checkpoints: Path) -> dict:
    """How a PEFT checkpoint names its base: the path relative to its own folder (so the data root can move as
    a whole) and the sha256 of the file."""
    return {"base": Path(os.path.relpath(base, checkpoints)).as_posix(), "base_sha256": file_sha256(base)}


def base_path(record: dict, checkpoint: Path) -> Path:
    """The base checkpoint a PEFT checkpoint names, checked: under the same data root and exactly the file it
    was trained on."""
    folder = Path(checkpoint).resolve().parent
    root = folder.parents[2] if len(folder.parents) > 2 else folder  # <root>/experiments/<name>/checkpoints
    path = inside(root, folder / record["base"], f"base checkpoint named by {checkpoint}")
    if not path.is_file():
        raise UserError(f"{checkpoint} holds only adapter weights; its base checkpoint {record['base']} (relative to "
                        f"its folder) is missing: restore that experiment beside it.")
    if file_sha256(path) != record["base_sha256"]:
        raise UserError(f"The base checkpoint {path} of {checkpoint} is not the file its adapters were trained on "
                        "(sha256 differs); restore the original base experiment.")
    return path


def attach_to_base(model: nn.Module, state: dict, checkpoint: Path) -> None:
    """Give a freshly built Regressor the frozen encoder of a PEFT checkpoint's base and the (untrained) PEFT
    weights its frozen config asks for: the model a resumed run continues."""
    fine = state["config"]["finetune"]
    load_encoder(model, ckpt.load(base_path(state["peft"], checkpoint))["model"])
    attach(model, fine["mode"], fine["lora_rank"], fine["lora_alpha"], fine["adapter_dim"])


def rebuild(model: nn.Module, state: dict, checkpoint: Path) -> None:
    """The full model of a PEFT checkpoint: its base's encoder, then the checkpoint's own weights."""
    attach_to_base(model, state, checkpoint)
    load_weights(model, state["model"])
