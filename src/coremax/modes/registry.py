"""The registry of fine-tuning modes: `@register("<name>")` on a Mode subclass makes it a finetune.mode."""

from __future__ import annotations

from coremax.config import register_choices
from coremax.errors import UserError
from coremax.modes.base import OPTIONS, Mode
from coremax.registry import registrar

MODES: dict[str, type[Mode]] = {}
register = registrar(MODES)
register_choices("finetune.mode", MODES)  # the config's choices are this table, as it fills


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise UserError(f"finetune.mode = {name!r} is not known; use one of {', '.join(MODES)}.")
    return MODES[name]()


def check_keys(mode: Mode, fine: dict, from_parent: bool) -> None:
    """The [finetune] keys this mode cannot honour, refused naming the modes that can."""
    if mode.pretrained_only and not from_parent:
        raise UserError(f"finetune.mode = {mode.name!r} adapts a pretrained encoder and keeps it frozen; set "
                        "finetune.from to a pretrain experiment (or use mode \"full\" to train from scratch).")
    for key, what in OPTIONS.items():
        if fine[key] and key not in mode.options:
            readers = " or ".join(f'"{n}"' for n, m in MODES.items() if key in m.options)
            raise UserError(f"finetune.{key} {what}, which finetune.mode = {mode.name!r} does not do; use mode "
                            f"{readers}, or set finetune.{key} = {'0' if key == 'epo_penalty' else 'false'}.")
    mode.check(fine)
