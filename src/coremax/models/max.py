"""max: Masked Autoencoder for XRF spectra (Masked Spectrum Modelling).

Random patches are hidden; the vitx encoder sees only the visible ones; a light decoder with mask tokens
predicts the channels of every patch; the loss is taken on the masked patches (or all). With a spike-and-slab
code (models/vsc.py) the decoder also reads the sampled code of the whole spectrum and the loss adds its KL."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from coremax.config.ranges import RANGES, in_range
from coremax.errors import UserError
from coremax.models.vitx import Block, VitX, init_weights, run_embedding, run_positions
from coremax.models.vsc import SpikeSlab


def check_ratio(mask_ratio: float) -> None:
    if not in_range("model.mask_ratio", mask_ratio):
        raise UserError(f"model.mask_ratio = {mask_ratio} must satisfy {RANGES['model.mask_ratio'][0]}; "
                        "set it to e.g. 0.4.")


class MaX(nn.Module):
    """Masked spectrum modelling; `encoder` is a VitX whose weights a Regressor takes over (load_encoder)."""

    def __init__(self, input_channels: int = 2048, patch_size: int = 16, embed_dim: int = 192, depth: int = 6,
                 num_heads: int = 3, decoder_dim: int = 128, decoder_depth: int = 2, decoder_heads: int = 4,
                 mlp_ratio: float = 4.0, mask_ratio: float = 0.4, loss_on: str = "masked",
                 norm_pix_loss: bool = False, drop_path: float = 0.0,
                 code: Callable[[int, int], SpikeSlab] | None = None, aux_dim: int = 0, aux_weight: float = 0.0,
                 run_tokens: str = "concatenated"):
        super().__init__()
        if loss_on not in ("masked", "all"):
            raise UserError(f"model.loss_on = {loss_on!r} is not known; use \"masked\" or \"all\".")
        check_ratio(mask_ratio)
        self.mask_ratio, self.loss_on, self.norm_pix_loss = mask_ratio, loss_on, norm_pix_loss
        self.encoder = VitX(input_channels, patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path, run_tokens)
        runs = self.encoder.run_patches
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", run_positions(runs, decoder_dim, run_tokens)[None], persistent=True)
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        # `code` (embed_dim, decoder_dim) -> the spike-and-slab layers (vsc.latent_code), built last and only when
        # asked: the plain model keeps its parameters, state_dict keys and random draws.
        self.code = code(embed_dim, decoder_dim) if code is not None else None
        # model.aux_elements: the mean visible token also predicts the spectrum's element log-ratios (built after
        # everything else, so that a model without it keeps its parameters and draws)
        self.aux = nn.Linear(embed_dim, aux_dim) if aux_dim and aux_weight > 0 else None
        self.aux_weight = float(aux_weight)
        if self.aux is not None:
            self.aux.apply(init_weights)
        # several runs: the decoder's mask tokens say which run they stand in for (built last, as above)
        self.decoder_run_embed = run_embedding(runs, decoder_dim, run_tokens)

    def random_masking(self, batch: int, mask_ratio: float, device, generator=None):
        """Per-sample random subset of patches to keep: (ids_keep, ids_restore, mask with 1 = hidden)."""
        n = self.encoder.num_patches
        keep = round(n * (1 - mask_ratio))
        noise = torch.rand(batch, n, device=device, generator=generator)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        mask = torch.ones(batch, n, device=device)
        mask[:, :keep] = 0
        return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder learns to output, per patch: the channels, optionally normalised per patch."""
        t = self.encoder.patchify(x)
        if self.norm_pix_loss:
            t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        return t

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None, generator=None, aux_target=None):
        """Returns (loss, prediction (B, N, P), mask (B, N) with 1 = masked)."""
        out = self.terms(x, mask_ratio, generator, aux_target)
        return out["loss"], out["pred"], out["mask"]

    def terms(self, x: torch.Tensor, mask_ratio: float | None = None, generator=None, aux_target=None) -> dict:
        """The forward pass with its loss apart: loss (what training minimises) = recon (the reconstruction error)
        + code.beta * kl (the spike-and-slab KL; 0 without a code) + aux_weight * the error of the element
        log-ratios predicted from the mean visible token (`aux_target`, with model.aux_elements), pred, mask."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        check_ratio(ratio)
        tokens = self.encoder.embed(x)
        ids_keep, ids_restore, mask = self.random_masking(x.shape[0], ratio, x.device, generator)
        visible = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        latent = self.encoder.encode(visible)
        code, kl = (None, None) if self.code is None else self.code(latent, generator)
        pred = self.decode(latent, ids_restore, code)
        recon = self.loss(x, pred, mask)
        if self.aux is not None and aux_target is not None:
            recon = recon + self.aux_weight * ((self.aux(latent[:, 1:].mean(1)).float() - aux_target) ** 2).mean()
        if kl is None:
            return {"loss": recon, "recon": recon, "kl": torch.zeros_like(recon), "pred": pred, "mask": mask}
        return {"loss": recon + self.code.beta * kl, "recon": recon, "kl": kl, "pred": pred, "mask": mask}

    def sparse_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The spike-and-slab posterior of whole spectra (no patch hidden): (mu, logvar, gamma), each (B, vsc_dim)."""
        if self.code is None:
            raise UserError("This MSM model has no sparse code (model.latent = \"plain\"); pretrain with "
                            "model.latent = \"vsc\".")
        mu, logvar, logits = self.code.posterior(self.encoder(x))
        return mu, logvar, torch.sigmoid(logits)

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor, code: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Encoded visible tokens (B, 1 + N', D) -> predicted channels of every patch (B, N, P). `code`: the
        spike-and-slab code's decoder token (B, 1, decoder_dim), put first, without a position."""
        y = self.decoder_embed(latent)
        b, n = ids_restore.shape
        fill = self.mask_token.expand(b, n + 1 - y.shape[1], -1)
        patches = torch.cat([y[:, 1:], fill], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, y.shape[-1]))
        if self.decoder_run_embed is not None:
            patches = self.decoder_run_embed(patches)
        y = torch.cat([y[:, :1], patches], dim=1) + self.decoder_pos_embed
        if code is not None:
            y = torch.cat([code.to(y.dtype), y], dim=1)
        for block in self.decoder_blocks:
            y = block(y)
        return self.decoder_pred(self.decoder_norm(y))[:, y.shape[1] - n:]

    def loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches (or all). In float32 under autocast."""
        per_patch = ((pred.float() - self.target(x).float()) ** 2).mean(-1)
        if self.loss_on == "all":
            return per_patch.mean()
        # mask_ratio 0 hides nothing: fall back to all patches. torch.where, not `if`, keeps the GPU unsynced.
        hidden = mask.sum()
        return torch.where(hidden > 0, (per_patch * mask).sum() / hidden.clamp(min=1), per_patch.mean())
