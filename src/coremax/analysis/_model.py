"""Running a trained model for analysis without disturbing it."""

from contextlib import contextmanager

import torch


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
