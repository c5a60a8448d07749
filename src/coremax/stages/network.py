"""The stages that train a network (pretrain, finetune): the model built from [model], what every checkpoint
carries to be used without the experiment folder, the task of the stage, and the training loop."""

from __future__ import annotations

from coremax.engine.tasks import TASKS
from coremax.engine.trainer import fit
from coremax.errors import UserError
from coremax.models import build_model
from coremax.stages.base import Run, Stage


class NetworkStage(Stage):
    def check(self, data):
        patch = self.config["model"]["patch_size"]
        for span, width in zip(data.channels.spans, data.channels.widths):
            if patch < 1 or width % patch:
                raise UserError(f"The energy window {list(span)} (data.channels or data.run_channels) is {width} "
                                f"channels wide, which model.patch_size = {patch} does not divide; change either.")

    def outputs(self, run: Run, extra: dict) -> int:
        """How many values the network predicts per spectrum (what else it needs goes into `extra`)."""
        return len(run.data.targets)

    def prepare(self, run: Run, model, task, extra: dict) -> None:
        """What the stage does to the built model and task before training."""

    def train(self, run: Run, task, model, extra: dict) -> None:
        fit(task, model, run.exp, run.rt, run.log, run.config, run.config["experiment"]["seed"], run.resume, extra,
            **run.config["optim"])

    def run(self, run: Run) -> None:
        cfg, data = run.config, run.data
        # Everything needed to use the checkpoint without the experiment folder or the data set.
        window = data.channels
        extra = {"input_length": window.width, "targets": data.targets,
                 **({"window": window.state(), "runs_kv": data.info["runs"]} if window.runs > 1 else {})}
        widths = window.widths if window.runs > 1 else window.width
        model = build_model(self.name, self.outputs(run, extra), widths, **cfg["model"])
        if data.scaler is not None:
            extra["target_scaler"] = data.scaler.state_dict()
        if data.channel_stats is not None:
            extra["channel_stats"] = [s.tolist() for s in data.channel_stats]
        task = TASKS[self.name](data, run.rt)
        self.prepare(run, model, task, extra)
        self.train(run, task, model, extra)
