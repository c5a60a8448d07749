"""The regressor: the vitx encoder (same class as in MSM pretraining) with a head per target."""

from __future__ import annotations

import torch
from torch import nn

from coremax.errors import UserError
from coremax.models.vitx import VitX, init_weights


class Regressor(nn.Module):
    def __init__(self, num_targets: int, input_channels: int = 2048, patch_size: int = 16, embed_dim: int = 192,
                 depth: int = 6, num_heads: int = 3, mlp_ratio: float = 4.0, global_pool: bool = True,
                 drop_path: float = 0.0, head_layers: int = 1, run_tokens: str = "concatenated"):
        super().__init__()
        if not 1 <= head_layers <= depth or (head_layers > 1 and not global_pool):
            raise UserError(f"model.head_layers = {head_layers} must be between 1 and the encoder's depth {depth}, "
                            "and above 1 only with model.global_pool = true.")
        self.global_pool, self.head_layers = global_pool, head_layers
        self.encoder = VitX(input_channels, patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path, run_tokens)
        # The mean of normalised tokens is not itself normalised: fc_norm puts it back on the head's scale.
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool else nn.Identity()
        self.head = nn.Linear(embed_dim * head_layers, num_targets)
        self.fc_norm.apply(init_weights)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding the head reads, (B, D x head_layers): the mean patch token of each of the last
        head_layers blocks (the middle blocks of an MSM encoder carry the element lines most linearly), or the
        class token."""
        if not self.global_pool:
            return self.encoder(x)[:, 0]
        outs = self.encoder.encode(self.encoder.embed(x), last=self.head_layers)
        return self.fc_norm(torch.stack([h[:, 1:].mean(dim=1) for h in outs], dim=1)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the measured entries only: a NaN target (not measured) adds no loss and no
    gradient. All-NaN batches give a zero that still carries a graph."""
    measured = ~torch.isnan(target)
    diff = torch.where(measured, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff ** 2).sum() / measured.sum().clamp(min=1)
