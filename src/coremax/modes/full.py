"""finetune.mode = "full": every weight trains (from the pretraining, or from scratch without finetune.from)."""

from coremax.modes.base import Mode
from coremax.modes.registry import register


@register("full")
class Full(Mode):
    pass
