"""experiment.stage = "pretrain": masked spectrum modelling (MSM), optionally taught the element log-ratios."""

from __future__ import annotations

import numpy as np
import torch

from coremax.data.ratios import ElementRatios
from coremax.engine.data import Prepared
from coremax.stages.base import Run, register
from coremax.stages.network import NetworkStage


@register("pretrain")
class Pretrain(NetworkStage):
    reads_labels = False

    @staticmethod
    def history_metrics(targets):
        return {"val_loss"}

    def outputs(self, run: Run, extra: dict) -> int:
        # model.aux_elements: pretraining also predicts the element log-ratios (the spectra's own targets)
        if not run.config["model"]["aux_elements"]:
            return len(run.data.targets)
        aux = element_targets(run.data)
        extra["aux_elements"] = aux.state()
        return len(aux.parts)


def element_targets(data: Prepared) -> ElementRatios:
    """model.aux_elements: each pretraining row's standardised element log-ratios as its target (train and
    validation rows, the parts and moments from the training rows), and the ratios that make them."""
    ratios = ElementRatios.fit(data.train.frame, "model.aux_elements")
    for part in (data.train, data.val):
        part.y = torch.from_numpy(ratios(part.frame, "model.aux_elements").astype(np.float32))
    return ratios
