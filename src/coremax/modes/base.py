"""What a fine-tuning mode is (finetune.mode): how the regressor built on a pretrained (or random) encoder is
trained, what is frozen, what a checkpoint keeps, and which optional [finetune] keys the mode reads.

The finetune stage (coremax.stages.finetune) asks a mode these questions and never tests its name: a new mode is
one subclass in a module of this package, registered with `@register("<name>")` (coremax.modes)."""

from __future__ import annotations

from torch import nn

# The optional [finetune] keys a mode may read, each with what it does (the sentence that refuses it elsewhere).
OPTIONS = {
    "epo": "removes scanner directions from the closed-form ridge head",
    "elements": "adds the element log-ratios to the closed-form ridge head",
    "epo_penalty": "keeps a ridge head fitted blind to the scanner blind while it is fine-tuned",
}


class Mode:
    name = ""
    pretrained_only = False  # adapts a pretrained encoder that stays frozen: finetune.from must name one
    head_first = False  # the closed-form ridge head (engine.probe) is fitted on the encoder as it is, first
    steps = True  # gradient steps follow (False: the closed-form head is the model, saved untrained)
    saves_trained_only = False  # checkpoints keep only the trained weights and name the base they adapt
    options: frozenset = frozenset()  # the keys of OPTIONS this mode reads

    def adapt(self, model: nn.Module, fine: dict) -> None:
        """What the mode does to a freshly built regressor (its encoder already loaded) before training."""

    def check(self, fine: dict) -> None:
        """Keys that contradict each other within this mode (the keys of other modes are checked by
        coremax.modes.check_keys)."""


def freeze_encoder(model: nn.Module) -> None:
    for p in model.encoder.parameters():
        p.requires_grad_(False)
