"""The stages behind scripts/train.py: pretrain (MSM), finetune (regressor), baseline (classical), each a Stage
(coremax.stages.base) registered by its module; `run_stage` is the one path every run takes through them.

Each config section is consumed by one function ([data] -> prepare_data, [model] -> build_model, [optim] -> fit,
[runtime] -> setup), which takes its keys' defaults from coremax.config.schema, the one place they are stated.
"""

from __future__ import annotations

from coremax.checks import check_resumable
from coremax.engine.data import prepare_data, setting_spectra
from coremax.engine.runtime import cleanup, seed_everything, setup
from coremax.experiment import Experiment
from coremax.provenance import device_info
from coremax.stages.base import STAGES, Run, Stage, held_out_reads, register
from coremax.stages.pretrain import Pretrain  # the registration order is the order of choices and messages
from coremax.stages.finetune import Finetune
from coremax.stages.baseline import BaselineStage
from coremax.stats.epo import EPO_SPECTRA

__all__ = ["STAGES", "Stage", "register", "run_stage", "history_metrics", "Interrupted",
           "Pretrain", "Finetune", "BaselineStage"]

def history_metrics(stage: str, targets) -> set[str]:
    """The validation metrics a run's history holds (what sweep.metrics may name)."""
    return STAGES[stage].history_metrics(targets)


def run_stage(config: dict, data_root, resume: bool = False, command=None, notes=()) -> Experiment:
    """Train one experiment from a resolved config (a plain dict); returns its folder. `notes`: what resolving
    the config mapped (a renamed key of a frozen config), written to the log."""
    seed = config["experiment"]["seed"]
    stage = STAGES[config["experiment"]["stage"]](config, data_root, resume)
    rt = setup(**config["runtime"])
    exp = None
    try:
        seed_everything(seed)
        # Inputs are checked before the experiment folder exists, so a typo leaves nothing behind.
        data = prepare_data(data_root, stage.name, seed, **config["data"])
        stage.check(data)
        spectra = setting_spectra(data_root, seed, config["data"], EPO_SPECTRA) if stage.reads_settings() else None
        if resume:
            check_resumable(data_root, config)
        exp = _create_on_all_ranks(data_root, config, resume, command, rt, stage.distributed)
        main = rt.main or not stage.distributed
        if main:
            device = {**device_info(str(rt.device)), "world_size": rt.world_size} if stage.distributed else \
                {**device_info("cpu"), "world_size": 1}
            exp.record(device=device, test_cores_read=held_out_reads(stage, data))
        with exp.run(main_process=main) as log:
            for note in notes:
                log.info("config_note", note=note)
            stage.run(Run(exp, data, config, rt, log, spectra, resume))
        return exp
    except KeyboardInterrupt as e:
        if exp is None or isinstance(e, Interrupted):
            raise
        raise Interrupted(exp) from e
    finally:
        cleanup(rt)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run of an experiment (recorded as `interrupted`); says how to resume it."""

    def __init__(self, exp: Experiment):
        root = "" if str(exp.data_root) == "data" else f" --data-root {exp.data_root}"
        super().__init__(f"interrupted; resume with: python scripts/train.py --name {exp.name} --resume{root}")


def _create_on_all_ranks(data_root, config, resume, command, rt, distributed: bool) -> Experiment:
    """Rank 0 makes the folder (and a name when none was given); the other ranks open the same one."""
    if not (distributed and rt.distributed):
        return Experiment.create(data_root, config["experiment"]["name"], config, resume, command)
    import torch.distributed as dist

    holder = [None]
    if rt.main:
        holder[0] = Experiment.create(data_root, config["experiment"]["name"], config, resume, command).name
    dist.broadcast_object_list(holder, src=0)
    return Experiment.open(data_root, holder[0])
