"""Which channels drive a fine-tuned regressor's prediction: gradient attributions over raw counts.

The gradient is taken through the input transform, so attributions are per raw-count channel and in the
units of the model output (normalised targets, of their square roots with data.target_transform = "sqrt";
multiply by the target scaler's std for wt% or root wt%).

Note for scale-invariant transforms (instance_normalize, the default): the prediction does not change when a
spectrum is multiplied by a constant, so input x gradient attributions of one spectrum sum to zero (Euler's
theorem), and integrated gradients from an all-zero or flat baseline miss the jump at the origin. The
default baseline here is therefore a reference *shape*: the mean of the given spectra rescaled to each
spectrum's total counts, and attributions explain f(x) - f(reference with the same counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from coremax.engine.inference import run_batches
from coremax.plotting import new_figure, save
from coremax.analysis.spectra import emission_lines, label_lines, run_suffix
from coremax.errors import UserError

METHODS = ("input_x_gradient", "integrated_gradients")


def attention_relevance(model, transform, x, target_index: int = 0, batch_size: int = 64) -> np.ndarray:
    """Relevance (n, W) of output `target_index` over the W channels the model reads (its energy window), by the
    gradient-weighted attention rollout of Chefer et al. (2021, "Transformer Interpretability Beyond Attention
    Visualization", in its generic form): R = I, then for every block R <- R + mean_heads[(dA * A)+] R, with A the
    attention weights and dA the gradient of the output with respect to them; the relevance of the patches is the
    row of the token the head reads (the class token, or the mean of the patch tokens with global pooling), spread
    over each patch's channels."""
    encoder = model.encoder
    attentions = [block.attn for block in encoder.blocks]
    x_np = np.atleast_2d(np.asarray(x, dtype=np.float32))

    def relevance(xb):
        y = model(transform(xb))[:, target_index].sum()
        grads = torch.autograd.grad(y, [a.weights for a in attentions])
        n = attentions[0].weights.shape[-1]
        rel = torch.eye(n, device=xb.device).expand(len(xb), n, n)
        for a, g in zip(attentions, grads):
            cam = (g * a.weights).clamp(min=0).mean(dim=1)
            rel = rel + cam @ rel
        pooled = getattr(model, "global_pool", False)
        patches = rel[:, 1:, 1:].mean(dim=1) if pooled else rel[:, 0, 1:]
        return patches.repeat_interleave(encoder.patch_size, dim=1)
    try:
        for a in attentions:
            a.keep_weights = True
        out = [p[0].astype(np.float64) for p in run_batches(model, x_np, relevance, batch_size=batch_size, grad=True)]
    finally:
        for a in attentions:
            a.keep_weights, a.weights = False, None
    return np.concatenate(out) if out else np.zeros((0, encoder.input_channels))


def _gradient(model, transform, x: torch.Tensor, target_index: int) -> torch.Tensor:
    """d model(transform(x))[:, target] / dx, summed over the batch (rows are independent in eval mode)."""
    x = x.detach().requires_grad_(True)
    out = model(transform(x))[:, target_index]
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad


def reference_baseline(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per spectrum, a reference spectrum shape (default: the mean of x) scaled to that spectrum's counts."""
    x = np.asarray(x, dtype=np.float64)
    ref = x.mean(axis=0) if reference is None else np.asarray(reference, dtype=np.float64)
    total = ref.sum()
    if total <= 0:
        raise UserError("The reference spectrum for the saliency baseline has no counts; pass spectra with counts.")
    return x.sum(axis=1, keepdims=True) * (ref / total)[None, :]


def saliency(model, transform, x, target_index: int = 0, method: str = "input_x_gradient", steps: int = 32,
             baseline=None, batch_size: int = 128) -> np.ndarray:
    """Attribution (n, L) of output `target_index` of `model(transform(x))` over the raw-count channels of x.

    input_x_gradient: x * df/dx. integrated_gradients: (x - b) times the mean gradient at `steps` midpoints of
    the straight path from the baseline b to x; its attributions of a spectrum add up to about
    f(x) - f(b) (completeness). `baseline`: None (the mean shape of x at each spectrum's total counts, see
    the module note), an (L,) reference shape rescaled the same way, or a (1, L) or (n, L) array used as it
    is (np.zeros((1, L)) for the textbook zero baseline).
    """
    if method not in METHODS:
        raise UserError(f"Unknown saliency method {method!r}; use one of {', '.join(METHODS)}.")
    if steps < 1:
        raise UserError(f"steps = {steps} must be at least 1.")
    x_np = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if method == "integrated_gradients":
        if baseline is None or np.ndim(baseline) == 1:
            b_np = reference_baseline(x_np, baseline)
        else:
            b_np = np.broadcast_to(np.asarray(baseline, dtype=np.float64), x_np.shape)
    width = x_np.shape[1]

    def attribution(rows):  # a batch of spectra, beside their baselines for integrated gradients
        xb = rows[:, :width]
        if method == "input_x_gradient":
            return xb * _gradient(model, transform, xb, target_index)
        bb = rows[:, width:]
        alphas = (torch.arange(steps, dtype=torch.float32, device=xb.device) + 0.5) / steps
        per = max(1, batch_size // len(xb))  # path points per forward pass, all spectra of the batch
        total = torch.zeros_like(xb, dtype=torch.float64)
        for a in alphas.split(per):
            points = bb[None] + a[:, None, None] * (xb - bb)[None]            # (m, b, L)
            grad = _gradient(model, transform, points.reshape(-1, width), target_index)
            total += grad.reshape(points.shape).double().sum(dim=0)
        return (xb - bb).double() * total / steps
    rows = x_np if method == "input_x_gradient" else np.hstack([x_np, b_np])
    out = [p[0].astype(np.float64) for p in run_batches(model, rows, attribution, batch_size=batch_size, grad=True)]
    return np.concatenate(out) if out else np.zeros_like(x_np)


def plot_saliency(attributions: dict, energy, path, lines: pd.DataFrame | None = None, kv: float = 10.0,
                  mean_spectrum=None, title: str = "") -> Path:
    """Mean attribution per channel against energy, one panel per target ({target: (n, L) array}), with
    emission lines labelled and, if given, the mean spectrum drawn faintly on a second axis. Writes a PNG."""
    energy = np.asarray(energy, dtype=np.float64)
    if lines is None:
        lines = emission_lines(kv=kv)
        lines = lines[lines["line"] != "Kb"]
    fig, axes = new_figure(len(attributions), 1, 10.0, 3.2, sharex=True)
    hi = min(float(energy[-1]), kv + 0.5)
    for ax, (target, a) in zip(axes[:, 0], attributions.items()):
        mean = np.atleast_2d(a).mean(axis=0)
        if mean_spectrum is not None:
            twin = ax.twinx()
            twin.fill_between(energy, np.asarray(mean_spectrum, dtype=float), color="0.85", lw=0, zorder=0)
            twin.set_yscale("log")
            twin.set_ylim(bottom=1.0)
            twin.set_ylabel("mean counts", color="0.5")
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.plot(energy, mean, lw=0.9, color="C3")
        ax.set(xlim=(max(float(energy[0]), 0.5), hi), ylabel=f"attribution ({target})",
               title=f"{title} {target}".strip())
        label_lines(ax, lines)
    axes[-1, 0].set_xlabel("energy (keV)")
    return save(fig, path)


def plot_run_saliency(attributions: dict, energy, path, window, kvs, mean_spectrum=None, **kw) -> list[Path]:
    """plot_saliency of attributions over a model's window (n, window.width): one figure per run
    (`<path stem>-30kV.png`), each with its part, its energy window and its voltage's lines; a model of one run
    gets one figure at `path`."""
    path, energy, out, start = Path(path), np.asarray(energy, dtype=np.float64), [], 0
    for (first, end), kv in zip(window.spans, kvs):
        cols = slice(start, start + end - first)
        part = {t: np.atleast_2d(a)[:, cols] for t, a in attributions.items()}
        mean = None if mean_spectrum is None else np.asarray(mean_spectrum, dtype=float)[cols]
        named = path.with_name(f"{path.stem}{run_suffix(kv, kvs)}{path.suffix}")
        out.append(plot_saliency(part, energy[first:end], named, kv=float(kv), mean_spectrum=mean, **kw))
        start = cols.stop
    return out
