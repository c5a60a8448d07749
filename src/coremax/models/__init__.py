"""Models by name: max_<size> (MSM autoencoder) and the regressor, both on the one vitx encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from coremax import checkpoint as ckpt
from coremax.config import consumes, register_choices
from coremax.data.transforms import TargetScaler, make_transform
from coremax.data.window import Window
from coremax.errors import UserError
from coremax.models import peft
from coremax.models.max import MaX
from coremax.models.regressor import Regressor, masked_mse
from coremax.models.vitx import RUN_TOKENS, VitX, load_encoder
from coremax.models.vsc import latent_code

SIZES = {
    "tiny": {"embed_dim": 192, "depth": 6, "num_heads": 3, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "decoder_dim": 256, "decoder_depth": 4,
              "decoder_heads": 8},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "decoder_dim": 512, "decoder_depth": 8,
             "decoder_heads": 16},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "decoder_dim": 512, "decoder_depth": 8,
              "decoder_heads": 16},
}
register_choices("model.size", SIZES)  # the words of model.size are these, whatever is added later
register_choices("model.run_tokens", dict.fromkeys(RUN_TOKENS))
ENCODER_KEYS = ("embed_dim", "depth", "num_heads")


def _size(size: str) -> dict:
    if size not in SIZES:
        raise UserError(f"model.size = {size!r} is not known; use one of {', '.join(SIZES)}.")
    return SIZES[size]


@consumes("model")  # the keys a caller leaves out come at the schema's defaults
def build_model(stage: str, num_targets: int = 0, input_channels: int = 2048, *, size: str, patch_size: int,
                mask_ratio: float, loss_on: str, norm_pix_loss: bool, global_pool: bool, drop_path: float,
                head_layers: int, latent: str, vsc_dim: int, vsc_beta: float, vsc_alpha: float,
                aux_elements: float, run_tokens: str) -> nn.Module:
    """Consumes the [model] section: the MSM autoencoder for pretraining (with a spike-and-slab code when
    latent = "vsc"; with `aux_elements` > 0 its mean visible token also predicts `num_targets` element
    log-ratios), the regressor otherwise."""
    dims = _size(size)
    if stage == "pretrain":
        return MaX(input_channels, patch_size, **dims, mask_ratio=mask_ratio, loss_on=loss_on,
                   norm_pix_loss=norm_pix_loss, drop_path=drop_path,
                   code=latent_code(latent, vsc_dim, vsc_beta, vsc_alpha), aux_dim=num_targets,
                   aux_weight=aux_elements, run_tokens=run_tokens)
    return Regressor(num_targets, input_channels, patch_size, **{k: dims[k] for k in ENCODER_KEYS},
                     global_pool=global_pool, drop_path=drop_path, head_layers=head_layers, run_tokens=run_tokens)


def _block_flops(tokens: int, dim: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one transformer block on `tokens` tokens: qkv, projection and MLP matmuls
    (2 FLOPs per multiply-add) plus the two attention matmuls."""
    linear = 2 * tokens * dim * (3 * dim + dim + 2 * int(dim * mlp_ratio))
    return linear + 2 * 2 * tokens * tokens * dim


def train_flops_per_spectrum(model: nn.Module) -> float:
    """Training FLOPs per spectrum (forward + backward = 3 x forward) from the model's shapes, as in the MFU
    of the PaLM paper: matmuls only; norms, softmax and the loss are left out."""
    enc = model.encoder
    n, d, p = enc.num_patches, enc.embed_dim, enc.patch_size
    ratio = enc.blocks[0].mlp[0].out_features / d
    if isinstance(model, MaX):
        visible = round(n * (1 - model.mask_ratio))
        dd = model.decoder_embed.out_features
        extra = 0 if model.code is None else 1  # the decoder token of the sparse code (its small layers left out)
        forward = (2 * n * p * d + enc.depth * _block_flops(visible + 1, d, ratio)  # the encoder sees visible patches
                   + 2 * (visible + 1) * d * dd + len(model.decoder_blocks) * _block_flops(n + 1 + extra, dd, ratio)
                   + 2 * n * dd * p)
    else:
        forward = 2 * n * p * d + enc.depth * _block_flops(n + 1, d, ratio) + 2 * model.head.in_features * \
            model.head.out_features
    return 3.0 * forward


@dataclass
class Loaded:
    """A ready network and what it takes to use it, from a checkpoint alone."""
    model: nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]  # raw counts of the full spectrum -> the model's input
    targets: list[str]
    scaler: TargetScaler | None
    stage: str
    state: dict


def load(path, device: str = "cpu") -> Loaded:
    """Rebuild the network of a checkpoint (pretrain or finetune) in eval mode with its input transform (energy
    window, transform and its statistics) and target scaler; used by fine-tuning, test.py, predict.py and the
    notebooks. Needs nothing but the file."""
    state = ckpt.load(path, map_location=device)

    def weights(model):
        if state.get("peft"):  # adapter weights only: the base checkpoint's encoder under them
            peft.rebuild(model, state, Path(path))
        else:
            model.load_state_dict(state["model"])
    return rebuild(state, weights, f"The checkpoint {Path(path)}", device)


def from_tensors(state: dict, tensors: dict, where: str, device: str = "cpu") -> Loaded:
    """The network of a checkpoint's non-tensor `state` and all its weights `tensors` (a model bundle's: a PEFT
    model's adapters are attached empty first, then every weight, its base's included, is loaded)."""
    def weights(model):
        if state.get("peft"):
            fine = state["config"]["finetune"]
            peft.attach(model, fine["mode"], fine["lora_rank"], fine["lora_alpha"], fine["adapter_dim"])
        model.load_state_dict(tensors)
    return rebuild(state, weights, where, device)


def rebuild(state: dict, weights: Callable[[nn.Module], None], where: str, device: str = "cpu") -> Loaded:
    """The ready network of a checkpoint's `state`, its weights filled by `weights(model)`; `where` names the
    source in the refusal."""
    cfg = state.get("config", {})
    try:
        stage, data = state["stage"], cfg["data"]
        window = Window.from_state(state.get("window"), data)  # several runs per spot, or data.channels
        widths = window.widths if window.runs > 1 else state.get("input_length", window.width)
        aux = state.get("aux_elements")  # a pretraining taught the element log-ratios: their parts
        model = build_model(stage, len(aux["parts"] if aux else state.get("targets", [])), widths, **cfg["model"])
        weights(model)
    except (KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{where} does not describe its model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:80]}); it was not written by this version of CoreMAX.") from None
    model.to(device).eval()
    stats = [torch.tensor(s, device=device) for s in state["channel_stats"]] if state.get("channel_stats") else ()
    base = make_transform(data["transform"], *stats, window=window)
    scaler = TargetScaler.from_state(state["target_scaler"]) if state.get("target_scaler") else None
    return Loaded(model, lambda x: base(window(x)), list(state.get("targets", [])), scaler, stage, state)


__all__ = ["SIZES", "Loaded", "MaX", "Regressor", "VitX", "build_model", "train_flops_per_spectrum",
           "from_tensors", "load", "load_encoder", "rebuild", "masked_mse"]
