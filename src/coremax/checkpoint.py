"""Checkpoints: written atomically, read with weights_only=True (a checkpoint can never run code)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from coremax.errors import UserError
from coremax.io import atomic_path


def save(path: str | os.PathLike, state: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # a file object: a full disk is an OSError (a path gives a cryptic RuntimeError)
    return path


def load(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint's state; with `mmap` its tensors stay on disk until used (to read its record cheaply)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The checkpoint {str(path)!r} does not exist; check the experiment name or path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, foreign or pickled-code files all end here
        raise UserError(f"The checkpoint {str(path)!r} cannot be read safely ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); re-create it or point to another one.") \
            from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
