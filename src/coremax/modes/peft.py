"""Parameter-efficient modes (models.peft): LoRA updates or adapters on a frozen pretrained encoder; a checkpoint
keeps only the trained weights and names its base."""

from coremax.models import peft
from coremax.modes.base import Mode
from coremax.modes.registry import register


class ParameterEfficient(Mode):
    pretrained_only = saves_trained_only = True

    def adapt(self, model, fine):
        peft.attach(model, self.name, fine["lora_rank"], fine["lora_alpha"], fine["adapter_dim"])


@register("lora")
class Lora(ParameterEfficient):
    pass


@register("adapter")
class Adapters(ParameterEfficient):
    pass
