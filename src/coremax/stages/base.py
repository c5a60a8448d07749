"""What a training stage is (experiment.stage): the keys it checks before anything is created, the validation
metrics its history holds, and its run inside the experiment folder. coremax.stages.run_stage asks a stage these
questions and never tests its name: a new stage is one subclass registered with `@register("<name>")`."""

from __future__ import annotations

from dataclasses import dataclass

from coremax.config import register_choices
from coremax.engine.data import Prepared
from coremax.engine.runtime import Runtime
from coremax.experiment import Experiment
from coremax.registry import registrar


@dataclass
class Run:
    """What one training run hands its stage: the folder, the prepared rows, the resolved config (a plain dict),
    the runtime, the log, and the scanner settings' unlabelled spectra (finetune.epo, baseline.epo) or None."""
    exp: Experiment
    data: Prepared
    config: dict
    rt: Runtime
    log: object
    spectra: object = None
    resume: bool = False


class Stage:
    name = ""
    section = ""  # the config section of its own keys read directly ([finetune], [baseline]), if any
    distributed = True  # runs on every rank of a torchrun job (a baseline fits in one process)

    def __init__(self, config: dict, data_root, resume: bool):
        self.config, self.data_root, self.resume = config, data_root, resume

    @staticmethod
    def history_metrics(targets) -> set[str]:
        """The validation metrics a run's history holds (what sweep.metrics may name)."""
        return {f"val_rmse_{t}" for t in targets}

    def check(self, data: Prepared) -> None:
        """Refuse what cannot run, before the experiment folder exists (a typo leaves nothing behind)."""

    def reads_settings(self) -> bool:
        """Whether the run needs the scanner settings' unlabelled spectra (stats.epo)."""
        return False

    def reads_test_spectra(self) -> bool:
        """Whether data.test_spectra reaches this stage's unsupervised steps (pretraining, a baseline's features)."""
        return True

    reads_labels = True  # labelled rows join training, the data.test_labels rows among them

    def run(self, run: Run) -> None:
        raise NotImplementedError


STAGES: dict[str, type[Stage]] = {}
register = registrar(STAGES)
register_choices("experiment.stage", STAGES)


def held_out_reads(stage: Stage, data: Prepared) -> dict:
    """What a run read of the test cores, for provenance.toml: their spectra (data.test_spectra, unsupervised
    steps only) and the source files of the labelled rows that joined training (data.test_labels)."""
    spectra = stage.config["data"]["test_spectra"] and stage.reads_test_spectra()
    rows = data.train.frame
    picked = rows[data.new_core_rows()] if stage.reads_labels else rows.iloc[:0]
    return {"spectra_of": sorted(set(data.info.get("cores", {}).get("test", []))) if spectra else [],
            "labels": sorted(picked["source_file"].astype(str))}
