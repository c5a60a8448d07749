"""Modes that fit a head on the frozen features first: linear_probe (head by SGD), ridge (the closed-form head
is the model), lp_ft (the closed-form head, then full fine-tuning: Kumar et al. 2022)."""

from coremax.errors import UserError
from coremax.modes.base import Mode, freeze_encoder
from coremax.modes.registry import register


@register("linear_probe")
class LinearProbe(Mode):
    def adapt(self, model, fine):
        freeze_encoder(model)


@register("ridge")
class Ridge(Mode):
    head_first, steps = True, False
    options = frozenset({"epo", "elements"})

    def adapt(self, model, fine):
        freeze_encoder(model)


@register("lp_ft")
class LinearProbeThenFineTune(Mode):
    head_first = True
    options = frozenset({"epo", "epo_penalty"})

    def check(self, fine):
        if fine["epo_penalty"] and not fine["epo"]:
            raise UserError("finetune.epo_penalty keeps a ridge head fitted blind to the scanner blind while it is "
                            "fine-tuned; it needs finetune.epo = true, or set it to 0.")
