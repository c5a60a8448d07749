"""The one way CoreMAX runs a network over many spectra (training-time evaluation, test, predict, suggest, the
analysis helpers): batches of rows, the module in evaluation mode (its own mode again afterwards), on its own
device, without gradients unless asked, outputs back on the CPU as NumPy arrays."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

# Spectra per forward pass. On a CPU, batches of 64 predict an archive at least as fast as batches of 256 with a
# quarter of the activations (a tiny encoder on 2,048 channels: ~160 MB against ~440; docs/results/benchmarks.md);
# a GPU wants the larger batches.
PRED_BATCH = {"cpu": 64, "cuda": 256}


def pred_batch(device) -> int:
    """The forward batch of `device` (a torch.device or its name): PRED_BATCH's, the GPU's for any accelerator."""
    kind = torch.device(device).type
    return PRED_BATCH.get(kind, PRED_BATCH["cuda"])


@contextmanager
def evaluating(module: torch.nn.Module):
    """Eval mode inside the block and the module's own mode again after it; yields the module's device."""
    param = next(module.parameters(), None)
    was_training = module.training
    module.eval()
    try:
        yield param.device if param is not None else torch.device("cpu")
    finally:
        module.train(was_training)


def _rows(x, start: int, stop: int, device) -> torch.Tensor:
    """Rows start:stop of raw counts as float32 on `device`: an ArrayData (in memory or streamed shards), a
    tensor, or any array NumPy reads (memory-mapped .npy included)."""
    if hasattr(x, "get"):
        return x.get(torch.arange(start, stop, device=getattr(x.x, "device", None))).to(device)
    if isinstance(x, torch.Tensor):
        return x[start:stop].to(device, torch.float32)
    return torch.tensor(np.asarray(x[start:stop]), dtype=torch.float32, device=device)  # a copy: memmaps are read-only


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).cpu().numpy()


def run_batches(module: torch.nn.Module, x, fn: Callable | None = None, transform: Callable | None = None,
                batch_size: int | None = None, grad: bool = False) -> list[tuple[np.ndarray, ...]]:
    """fn(transform(batch)) (default: module(...)) over batches of the rows of `x` (default size: the module's
    device's, pred_batch): per batch, the tensor or tuple of tensors fn returns, as float32 arrays. `grad`:
    gradients stay on (relevance maps need them)."""
    fn = module if fn is None else fn
    out = []
    with evaluating(module) as device, torch.set_grad_enabled(grad):
        batch_size = batch_size or pred_batch(device)
        for start in range(0, len(x), batch_size):
            xb = _rows(x, start, min(start + batch_size, len(x)), device)
            result = fn(transform(xb) if transform is not None else xb)
            out.append(tuple(_numpy(r) for r in (result if isinstance(result, tuple) else (result,))))
    return out


def predict_rows(module: torch.nn.Module, x, fn: Callable | None = None, transform: Callable | None = None,
                 width: int = 0, batch_size: int | None = None) -> np.ndarray:
    """One output per row (n, width) of fn(transform(batch)) over `x`, concatenated; (0, width) for no rows."""
    parts = run_batches(module, x, fn, transform, batch_size)
    return np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, width), dtype=np.float32)
