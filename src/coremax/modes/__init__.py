"""Fine-tuning modes (finetune.mode) as objects: each module of this package defines Mode subclasses and
registers them (`@register`); every module here is imported below, so the config's choices, the finetune stage,
the study and the benchmarks know a new mode without another line."""

from __future__ import annotations

import importlib
import pkgutil

from coremax.modes.base import Mode
from coremax.modes.registry import MODES, check_keys, get_mode, register

__all__ = ["MODES", "Mode", "check_keys", "get_mode", "register"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")  # each registers its modes
