"""vsc: a spike-and-slab latent for MSM pretraining (Variational Sparse Coding, Tonolini et al., UAI 2019,
PMLR 115, 2020).

The mean of the encoded visible patch tokens is mapped to a code of `dim` dimensions, each active with
probability gamma (the spike) and then Gaussian N(mu, sigma^2) (the slab). The prior has spike probability
alpha and a N(0, 1) slab, so the KL term switches off every dimension the reconstruction does not need. The
sampled code reaches the decoder as one extra token; the layers live outside `encoder.*`, so fine-tuning
(load_encoder) never sees them."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from coremax.config.ranges import RANGES, in_range
from coremax.errors import UserError
from coremax.models.vitx import init_weights

LATENTS = ("plain", "vsc")
# Binary Concrete temperature of the relaxed spike in training: lower is closer to the 0/1 spike of the
# model but gives noisier gradients.
TEMPERATURE = 0.5
EPS = 1e-6  # keeps log(gamma) and log(1 - gamma) finite


def spike_slab_kl(mu: torch.Tensor, logvar: torch.Tensor, gamma: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(q || p) of a spike-and-slab posterior (mu, logvar, gamma: (B, J)) against the prior (spike alpha,
    slab N(0, 1)), summed over the J dimensions and averaged over the batch (Tonolini et al.):
    sum_j gamma_j KL(N(mu_j, sigma_j^2) || N(0, 1)) + gamma_j log(gamma_j / alpha)
    + (1 - gamma_j) log((1 - gamma_j) / (1 - alpha))."""
    gamma = gamma.clamp(EPS, 1 - EPS)
    slab = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)
    spike = gamma * torch.log(gamma / alpha) + (1 - gamma) * torch.log((1 - gamma) / (1 - alpha))
    return (gamma * slab + spike).sum(-1).mean()


class SpikeSlab(nn.Module):
    """Encoded tokens (B, 1 + N', D) -> (the code's decoder token (B, 1, decoder_dim), KL). `beta` weighs the
    KL in the MSM loss."""

    def __init__(self, embed_dim: int, decoder_dim: int, dim: int, beta: float, alpha: float):
        super().__init__()
        for key, value in (("model.vsc_dim", dim), ("model.vsc_beta", beta), ("model.vsc_alpha", alpha)):
            if not in_range(key, value):
                raise UserError(f"{key} = {value!r} is out of range: it must satisfy {RANGES[key][0]}.")
        self.dim, self.beta, self.alpha = dim, beta, alpha
        self.mu = nn.Linear(embed_dim, dim)
        self.logvar = nn.Linear(embed_dim, dim)
        self.spike = nn.Linear(embed_dim, dim)  # logits of gamma
        self.to_decoder = nn.Linear(dim, decoder_dim)
        self.apply(init_weights)

    def posterior(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, logvar, spike logits), each (B, dim), of the mean patch token (the class token left out)."""
        pooled = tokens[:, 1:].mean(dim=1)
        return self.mu(pooled), self.logvar(pooled), self.spike(pooled)

    def sample(self, mu, logvar, logits, generator=None) -> torch.Tensor:
        """Training: spike * (mu + sigma * eps), the spike relaxed (binary Concrete) so gradients reach its
        logits. Eval: the posterior mean gamma * mu, deterministic."""
        if not self.training:
            return torch.sigmoid(logits) * mu
        eps = torch.randn(mu.shape, device=mu.device, generator=generator)
        u = torch.rand(mu.shape, device=mu.device, generator=generator).clamp(EPS, 1 - EPS)
        spike = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / TEMPERATURE)
        return spike * (mu + torch.exp(0.5 * logvar) * eps)

    def forward(self, tokens: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, logits = self.posterior(tokens)
        # In float32 under autocast, like the reconstruction loss.
        kl = spike_slab_kl(mu.float(), logvar.float(), torch.sigmoid(logits.float()), self.alpha)
        z = self.sample(mu.float(), logvar.float(), logits.float(), generator)
        return self.to_decoder(z)[:, None], kl


def latent_code(latent: str, dim: int, beta: float, alpha: float) -> Callable[[int, int], SpikeSlab] | None:
    """The [model] latent keys -> what MaX builds its code layers with, given (embed_dim, decoder_dim); None for
    the plain autoencoder."""
    if latent not in LATENTS:
        raise UserError(f"model.latent = {latent!r} is not known; use \"plain\" or \"vsc\".")
    return None if latent == "plain" else partial(SpikeSlab, dim=dim, beta=beta, alpha=alpha)
