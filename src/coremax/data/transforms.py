"""Spectrum transforms (batched, on tensors of raw counts), count augmentation, and target scaling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from coremax.errors import UserError


def instance_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per spectrum: zero mean, unit standard deviation (removes live time and tube current scaling)."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True)
    return (x - mean) / (std + eps)


def log_transform(x: torch.Tensor) -> torch.Tensor:
    """log(1 + counts); negative values (background-subtracted spectra) are clipped to 0 instead of NaN."""
    return torch.log1p(x.clamp(min=0))


def channel_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per channel with the training split's statistics (stored with the data set)."""
    return (x - mean) / (std + eps)


def make_transform(name: str, channel_mean: torch.Tensor | None = None,
                   channel_std: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "instance_normalize":
        return instance_normalize
    if name == "log":
        return log_transform
    if name == "none":
        return lambda x: x
    if name == "normalize":
        if channel_mean is None or channel_std is None:
            raise UserError("data.transform = \"normalize\" needs the training split's channel statistics; "
                            "re-run scripts/preprocess.py to store them in info.toml.")
        return lambda x: channel_normalize(x, channel_mean, channel_std)
    raise UserError(f"data.transform = {name!r} is not known; use instance_normalize, log, normalize or none.")


def poisson_resample(counts: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulate a shorter live time: keep each count with probability f (binomial thinning of a Poisson
    spectrum is Poisson at f times the rate), f uniform in [fraction, 1] per spectrum. The result is
    rescaled by 1/f so the expected spectrum, and so the intensity scale the model sees, is unchanged and
    only the counting noise grows; the alternative (no rescaling) would also teach the model live time."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"data.augment_min_fraction = {fraction} must be in (0, 1]; set it to e.g. 0.5.")
    f = fraction + (1 - fraction) * torch.rand(counts.shape[0], 1, device=counts.device, generator=generator)
    counts = counts.clamp(min=0).round()
    kept = torch.binomial(counts, f.expand_as(counts), generator=generator)
    return kept / f


class TargetScaler:
    """Per-target standardisation with NaN-aware statistics of the training rows."""

    def __init__(self, mean=None, std=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, y: np.ndarray) -> TargetScaler:
        y = np.asarray(y, dtype=np.float64)
        counts = (~np.isnan(y)).sum(axis=0)
        self.mean = np.where(counts > 0, np.nansum(y, axis=0) / np.maximum(counts, 1), 0.0)
        var = np.nansum((y - self.mean) ** 2, axis=0) / np.maximum(counts, 1)
        self.std = np.where(var > 0, np.sqrt(var), 1.0)
        return self

    def _cast(self, v, like):
        return torch.as_tensor(v, dtype=like.dtype, device=like.device) if isinstance(like, torch.Tensor) else v

    def transform(self, y):
        return (y - self._cast(self.mean, y)) / self._cast(self.std, y)

    def inverse(self, y):
        return y * self._cast(self.std, y) + self._cast(self.mean, y)

    def state_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_state(cls, state: dict) -> TargetScaler:
        return cls(state["mean"], state["std"])
