"""vitx: a Vision-Transformer encoder for 1-D spectra. The one encoder used by MSM pretraining and regression."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coremax.errors import UserError


def sincos_positions(num: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 1-D sine-cosine position embedding, (1 + num, dim) with a zero row for the class token."""
    if dim % 2:
        raise ValueError("embedding dim must be even for sine-cosine positions")
    pos = torch.arange(num, dtype=torch.float64)[:, None]
    freq = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = pos * freq[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()
    return torch.cat([torch.zeros(1, dim), emb]) if cls_token else emb


RUN_TOKENS = ("embedding", "concatenated")  # how the tokens of several runs tell their run (model.run_tokens)


def run_positions(run_patches: tuple[int, ...], dim: int, run_tokens: str = "concatenated") -> torch.Tensor:
    """Positions of the tokens of several runs joined, (1 + sum, dim). "embedding": each run's patches counted
    from 0 (a position says where in its own window a patch lies; the run embedding says which run).
    "concatenated": the windows as one long spectrum, positions running on across runs, no run embedding. One
    run: sincos_positions either way."""
    if run_tokens not in RUN_TOKENS:
        raise UserError(f"model.run_tokens = {run_tokens!r} is not known; use one of {', '.join(RUN_TOKENS)}.")
    if run_tokens == "concatenated":
        return sincos_positions(sum(run_patches), dim)
    return torch.cat([torch.zeros(1, dim)] + [sincos_positions(n, dim, cls_token=False) for n in run_patches])


def run_embedding(run_patches: tuple[int, ...], dim: int, run_tokens: str) -> nn.Module | None:
    """The learned run embedding of a model of several runs read as "embedding"; None otherwise."""
    return RunEmbedding(run_patches, dim) if len(run_patches) > 1 and run_tokens == "embedding" else None


class RunEmbedding(nn.Module):
    """A learned vector per run added to its tokens, so attention can tell a 10 kV patch from a 30 kV one at
    the same position. Built only for models of several runs: a one-run model has no such weights."""

    def __init__(self, run_patches: tuple[int, ...], dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(len(run_patches), dim))
        nn.init.normal_(self.weight, std=0.02)
        index = torch.cat([torch.full((n,), r) for r, n in enumerate(run_patches)])
        self.register_buffer("index", index, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.weight[self.index]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise UserError(f"embedding dim {dim} is not divisible by {heads} heads; pick a listed model.size.")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.keep_weights = False  # relevance maps: keep the attention weights (on a GPU: the explicit softmax, slower)
        self.weights = None

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # The explicit softmax on the CPU: SDPA's CPU kernel is slow backwards at these short sequences (a CPU
        # recipe fine-tuning step 28 % faster on one thread without it: docs/results/benchmarks.md); GPUs keep SDPA.
        if self.keep_weights or x.device.type == "cpu":
            weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            self.weights = weights if self.keep_weights else None
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)
        self.adapter = nn.Identity()  # finetune.mode = "adapter" puts a trainable bottleneck here (models.peft)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self.adapter(x + self.drop_path(self.mlp(self.norm2(x))))


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VitX(nn.Module):
    """Patch embedding of a (B, L) spectrum, class token, fixed positions, transformer blocks, final norm."""

    def __init__(self, input_channels: int | tuple[int, ...] = 2048, patch_size: int = 16, embed_dim: int = 192,
                 depth: int = 6, num_heads: int = 3, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 run_tokens: str = "concatenated"):
        """`input_channels`: the window's width, or the widths of the runs of a spot (their windows joined, read
        as `run_tokens` says: run_positions)."""
        super().__init__()
        widths = (input_channels,) if isinstance(input_channels, int) else tuple(int(w) for w in input_channels)
        for w in widths:
            if patch_size < 1 or w % patch_size:
                raise UserError(f"The model input of {w} channels (the data.channels window) is not divisible "
                                f"by model.patch_size = {patch_size}; choose a patch size that divides it.")
        self.input_channels, self.patch_size = sum(widths), patch_size
        self.run_patches = tuple(w // patch_size for w in widths)
        self.num_patches = sum(self.run_patches)
        self.embed_dim, self.depth = embed_dim, depth
        self.patch_embed = nn.Linear(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", run_positions(self.run_patches, embed_dim, run_tokens)[None],
                             persistent=True)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_weights)
        nn.init.normal_(self.cls_token, std=0.02)
        # last: a one-run model keeps its parameters, state_dict keys and random draws
        self.run_embed = run_embedding(self.run_patches, embed_dim, run_tokens) or nn.Identity()

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N, P)."""
        return x.reshape(x.shape[0], self.num_patches, self.patch_size)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """(B, N, P) -> (B, L)."""
        return p.reshape(p.shape[0], -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with their positions, (B, N, D)."""
        return self.run_embed(self.patch_embed(self.patchify(x)) + self.pos_embed[:, 1:])

    def encode(self, tokens: torch.Tensor, last: int = 0) -> torch.Tensor | list[torch.Tensor]:
        """Prepend the class token, run the blocks, normalise: (B, N', D) -> (B, 1 + N', D). With `last` = k > 0,
        the outputs of the last k blocks instead, (B, 1 + N', D) each, the final one normalised."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.depth - i <= last:
                outs.append(x)
        if not last:
            return self.norm(x)
        return outs[:-1] + [self.norm(outs[-1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(x))


def load_encoder(model: nn.Module, state_dict: dict) -> dict:
    """Copy the `encoder.*` weights of a MaX or Regressor state dict into `model.encoder`.
    Reports missing and unexpected encoder keys; refuses any shape mismatch."""
    prefix = "encoder."
    source = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not source:
        raise UserError("The checkpoint's model state has no encoder.* weights; point the fine-tuning at a "
                        "checkpoint of a MaX pretrain or regressor experiment.")
    own = model.encoder.state_dict()
    for key, value in source.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(f"The checkpoint's encoder.{key} has shape {tuple(value.shape)} but this model's has "
                            f"{tuple(own[key].shape)}; use the same model.size, model.patch_size and "
                            "data.spectrum_length as the pretrain experiment.")
    result = model.encoder.load_state_dict(source, strict=False)
    return {"missing": [prefix + k for k in result.missing_keys],
            "unexpected": [prefix + k for k in result.unexpected_keys]}
