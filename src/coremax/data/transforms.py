"""Spectrum transforms (batched, on tensors of raw counts), count augmentation, and target scaling."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from coremax.config import register_choices
from coremax.config.ranges import RANGES, in_range
from coremax.errors import UserError
from coremax.registry import registrar


TRANSFORMS: dict[str, Callable] = {}  # data.transform -> function of raw counts: filled by @register below
register_choices("data.transform", TRANSFORMS)  # the live table: what registers later is a word too


# `@register("<name>")` makes a function of a batch of raw counts a `data.transform` (config choice and
# checkpoints); one that takes `mean` and `std` is given the training split's channel statistics.
register = registrar(TRANSFORMS)


@register("instance_normalize")
def instance_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per spectrum: zero mean, unit standard deviation (removes live time and tube current scaling)."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True)
    return (x - mean) / (std + eps)


@register("clr")
def centred_log_ratio(x: torch.Tensor) -> torch.Tensor:
    """log(1 + counts) minus its per-spectrum mean: the calibration field's log-ratio transform. Removes the
    live-time and current scale like instance_normalize, but lets weak peaks weigh as much as strong ones."""
    logs = torch.log1p(x.clamp(min=0))
    return logs - logs.mean(dim=-1, keepdim=True)


@register("sqrt")
def sqrt_normalize(x: torch.Tensor) -> torch.Tensor:
    """Square root of counts (variance-stabilising for Poisson noise), then per-spectrum normalisation."""
    return instance_normalize(torch.sqrt(x.clamp(min=0)))


@register("log")
def log_transform(x: torch.Tensor) -> torch.Tensor:
    """log(1 + counts); negative values (background-subtracted spectra) are clipped to 0 instead of NaN."""
    return torch.log1p(x.clamp(min=0))


@register("normalize")
def channel_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per channel with the training split's statistics (stored with the data set)."""
    return (x - mean) / (std + eps)


@register("none")
def raw_counts(x: torch.Tensor) -> torch.Tensor:
    return x


def needs_statistics(name: str) -> bool:
    """Whether the transform reads the training split's channel statistics (they come with the data set)."""
    return name in TRANSFORMS and "mean" in inspect.signature(TRANSFORMS[name]).parameters


def make_transform(name: str, channel_mean: torch.Tensor | None = None, channel_std: torch.Tensor | None = None,
                   window=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The transform of windowed counts; with the `window` (coremax.data.window) of several runs, a
    per-spectrum transform is applied to each run apart (a 30 kV spectrum has its own scale)."""
    if name not in TRANSFORMS:
        raise UserError(f"data.transform = {name!r} is not known; use one of {', '.join(TRANSFORMS)}.")
    fn = TRANSFORMS[name]
    if not needs_statistics(name):  # per channel with statistics: no run is mixed anyway
        return fn if window is None else window.per_run(fn)
    if channel_mean is None or channel_std is None:
        raise UserError(f"data.transform = {name!r} needs the training split's channel statistics; "
                        "re-run scripts/preprocess.py to store them in info.toml.")
    return lambda x: fn(x, channel_mean, channel_std)


def poisson_resample(counts: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulate a shorter live time: keep each count with probability f (binomial thinning of a Poisson
    spectrum is Poisson at f times the rate), f uniform in [fraction, 1] per spectrum. The result is
    rescaled by 1/f so the expected spectrum, and so the intensity scale the model sees, is unchanged and
    only the counting noise grows; the alternative (no rescaling) would also teach the model live time."""
    if not in_range("data.augment_min_fraction", fraction):
        raise UserError(f"data.augment_min_fraction = {fraction} must satisfy "
                        f"{RANGES['data.augment_min_fraction'][0]}; set it to e.g. 0.5.")
    f = fraction + (1 - fraction) * torch.rand(counts.shape[0], 1, device=counts.device, generator=generator)
    counts = counts.clamp(min=0).round()
    kept = torch.binomial(counts, f.expand_as(counts), generator=generator)
    return kept / f


def jitter_calibration(x: torch.Tensor, gain: float, offset: float, width: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulate another scanner head or a drifted calibration: resample every spectrum on a channel axis
    stretched by (1 + N(0, gain)) and shifted by N(0, offset) channels (linear interpolation, counts per channel
    rescaled so the total is kept), then broaden its peaks with a Gaussian of sigma U(0, width) channels. These
    are exactly the differences between heads and cores that move peaks across patch borders."""
    n, length = x.shape
    dev = x.device
    pos = torch.arange(length, device=dev, dtype=x.dtype)
    stretch = 1 + gain * torch.randn(n, 1, device=dev, generator=generator, dtype=x.dtype)
    shift = offset * torch.randn(n, 1, device=dev, generator=generator, dtype=x.dtype)
    src = ((pos[None] - shift) / stretch).clamp(0, length - 1)   # where each new channel reads the old axis
    lo = src.floor().long().clamp(max=length - 2)
    frac = src - lo
    out = (x.gather(1, lo) * (1 - frac) + x.gather(1, lo + 1) * frac) / stretch
    if width > 0:
        half = max(1, int(3 * width + 0.5))
        k = torch.arange(-half, half + 1, device=dev, dtype=x.dtype)
        sigma = width * torch.rand(n, 1, device=dev, generator=generator, dtype=x.dtype) + 1e-3
        kernel = torch.exp(-0.5 * (k[None] / sigma) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        padded = torch.nn.functional.pad(out[None], (half, half), mode="replicate")[0]
        # One kernel per spectrum: a grouped convolution with the batch as channels.
        out = torch.nn.functional.conv1d(padded[None], kernel[:, None], groups=n)[0]
    return out


NOMINAL_KEV_PER_CHANNEL = 0.02  # Avaatech heads are calibrated near 20 eV per channel
SI_KA_KEV = 1.74


def jitter_absorption(x: torch.Tensor, strength: float, first_channel: int = 0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulate another water film or detector window: multiply each spectrum by exp(-t (E_Si / E)^3), t
    uniform in [-strength, strength]. Photoabsorption falls as E^-3, so this tilts the light-element end
    (Al, Si, S) against the rest, which is how heads with 8-25 um Be windows and wet surfaces differ."""
    n, length = x.shape
    t = (2 * torch.rand(n, 1, device=x.device, generator=generator, dtype=x.dtype) - 1) * strength
    energy = (first_channel + torch.arange(length, device=x.device, dtype=x.dtype) + 0.5) * NOMINAL_KEV_PER_CHANNEL
    ratio = (SI_KA_KEV / energy.clamp(min=0.8)) ** 3  # below ~0.8 keV the detector sees nothing anyway
    return x * torch.exp(-t * ratio[None])


class TargetScaler:
    """Per-target standardisation with NaN-aware statistics of the training rows; the targets flagged in `root`
    (contents in wt%, data.target_transform = "sqrt") are standardised as square roots and squared back, so a
    fit in normalised units weighs an error at 5 wt% more than the same error at 60 wt%, as counting statistics
    do. `fit` also keeps `unit_std`: each target's spread in its own units (errors comparable across targets)."""

    def __init__(self, mean=None, std=None, root=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.root = None if root is None else np.asarray(root, dtype=bool)  # None: no target rooted
        self.unit_std = None

    def _on_roots(self, y, f):
        """`f` of the clipped-at-zero values in the rooted targets' columns of y (numpy or torch), others as is."""
        if self.root is None or not self.root.any():
            return y
        if isinstance(y, torch.Tensor):
            return torch.where(self._cast(self.root, y).bool(), f(y.clamp(min=0)), y)
        return np.where(self.root, f(np.clip(y, 0, None)), y)

    def fit(self, y: np.ndarray) -> TargetScaler:
        y = np.asarray(y, dtype=np.float64)
        _, self.unit_std = _nan_moments(y)
        self.mean, self.std = _nan_moments(self._on_roots(y, lambda v: v ** 0.5))
        return self

    def _cast(self, v, like):
        return torch.as_tensor(v, dtype=like.dtype, device=like.device) if isinstance(like, torch.Tensor) else v

    def transform(self, y):
        return (self._on_roots(y, lambda v: v ** 0.5) - self._cast(self.mean, y)) / self._cast(self.std, y)

    def inverse(self, y):
        return self._on_roots(y * self._cast(self.std, y) + self._cast(self.mean, y), lambda v: v ** 2)

    def state_dict(self) -> dict:
        root = np.zeros(len(self.mean), dtype=bool) if self.root is None else self.root
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "root": [bool(v) for v in root]}

    @classmethod
    def from_state(cls, state: dict) -> TargetScaler:
        return cls(state["mean"], state["std"], state.get("root"))  # checkpoints before the root: none rooted


def _nan_moments(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation over the measured (non-NaN) values: mean 0 where nothing is
    measured, standard deviation 1 where it is 0 or undefined."""
    counts = (~np.isnan(y)).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(y, axis=0) / np.maximum(counts, 1), 0.0)
    var = np.nansum((y - mean) ** 2, axis=0) / np.maximum(counts, 1)
    return mean, np.where(var > 0, np.sqrt(var), 1.0)
