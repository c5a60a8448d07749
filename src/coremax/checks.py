"""What a stage checks before anything is created: keys that do not go together, inputs a method cannot read,
a resume that would change what an experiment is, a parent checkpoint that does not fit (coremax.stages)."""

from __future__ import annotations

from pathlib import Path

from coremax import checkpoint as ckpt
from coremax.data.dataset import element_only_message, has_spectra
from coremax.engine.data import Prepared
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.frozen import RESUME_MAY_CHANGE, check_unchanged, config_change
from coremax.paths import experiment_dir


def check_stage_keys(config: dict, data: Prepared, mode: str) -> None:
    """Keys that do not go together for this stage and mode, and a baseline that cannot read the data set."""
    stage = config["experiment"]["stage"]
    epo = stage in ("finetune", "baseline") and config[stage]["epo"]
    if stage == "baseline":
        from coremax.baselines import METHODS  # deferred: scikit-learn, only for baselines
        check_baseline_inputs(config, data)
        if epo and not METHODS[config["baseline"]["method"]].reads_settings:
            raise UserError(f"baseline.epo removes scanner directions from a baseline's features, which the "
                            f"{config['baseline']['method']} calibration's log-ratios have none of; set "
                            "baseline.epo = false.")
        return
    if stage != "finetune":
        return
    if epo and mode not in ("ridge", "lp_ft"):
        raise UserError(f"finetune.epo removes scanner directions from the ridge head, which finetune.mode = "
                        f"{mode!r} has none of; use mode \"ridge\" or \"lp_ft\", or set finetune.epo = false.")
    if config["finetune"]["elements"] and mode != "ridge":
        raise UserError(f"finetune.elements adds the element log-ratios to the closed-form head, which "
                        f"finetune.mode = {mode!r} does not fit; use mode \"ridge\" or set finetune.elements = "
                        "false.")
    if config["finetune"]["epo_penalty"] and not (epo and mode == "lp_ft"):
        raise UserError("finetune.epo_penalty keeps a ridge head fitted blind to the scanner blind while it is "
                        "fine-tuned; it needs finetune.mode = \"lp_ft\" and finetune.epo = true, or set it to 0.")


def check_baseline_inputs(config: dict, data: Prepared) -> None:
    """A baseline on spectra refuses a data set of element tables alone, before its folder exists."""
    from coremax.baselines import make_baseline  # deferred: scikit-learn, only for baselines

    b = config["baseline"]
    if make_baseline(b["method"], b).inputs == "spectra" and not has_spectra(data.info):
        raise UserError(element_only_message(config["data"]["dataset"], f"the {b['method']} baseline on spectra"))


def check_resumable(data_root, config: dict) -> None:
    """--resume touches nothing unless it can continue: the experiment exists, its last.pth reads, and the
    overrides change only how it runs (or how long), never what it is."""
    name = config["experiment"]["name"]
    if not name or not (experiment_dir(data_root, name) / "config.toml").is_file():
        raise UserError(f"Cannot resume {name!r}: there is no experiment of that name under "
                        f"{Path(data_root) / 'experiments'}; drop --resume to start it, or check --name.")
    exp = Experiment.open(data_root, name)
    check_unchanged(exp, RESUME_MAY_CHANGE)  # config.toml itself edited since the run froze
    change = config_change(exp.config(), config, RESUME_MAY_CHANGE)
    if change:  # more epochs would restart the schedule under checkpoints of the old one: a new experiment
        raise UserError(f"--resume continues {name!r} exactly as it froze, but {change[0]} would change from "
                        f"{change[1]!r} to {change[2]!r}; drop that override (resume takes the frozen config), or "
                        f"to train longer or otherwise start a new experiment with --name <new name> (and "
                        f"finetune.from = \"{name}\" to start from its weights).")
    last = exp.checkpoints / "last.pth"
    if config["experiment"]["stage"] != "baseline":
        if not last.is_file():
            raise UserError(f"Nothing to resume: {name!r} has no checkpoints/last.pth (it stopped before its first "
                            "epoch ended); delete its folder and start it again without --resume.")
        ckpt.load(last)  # a truncated or foreign file is refused here, before config or status change


def check_parent(path: Path, config: dict) -> dict:
    """The parent checkpoint's state, read once, after checking that it has this run's energy window (another
    window means other channels under the same position embeddings) and encoder shapes: refused before
    anything is created."""
    if not path.is_file():
        raise UserError(f"finetune.from points at {path}, which does not exist; the parent has no checkpoint.")
    state = ckpt.load(path)
    if state.get("peft"):
        raise UserError(f"finetune.from points at {path}, which holds only {state['config']['finetune']['mode']} "
                        "weights; start from the pretrain experiment it adapts.")
    parent = state.get("config", {})
    parent_data = parent.get("data", {})
    theirs = list(parent_data.get("channels", [0, parent_data.get("spectrum_length", 2048)]))
    ours = list(config["data"]["channels"])
    if theirs != ours:
        raise UserError(f"The parent checkpoint {Path(path).name} of finetune.from was pretrained on the energy window "
                        f"data.channels = {theirs}, this run asks for {ours}; set data.channels = {theirs}.")
    for key in ("size", "patch_size"):  # the encoder's shapes: checked here, before any folder exists
        if key in parent.get("model", {}) and parent["model"][key] != config["model"][key]:
            raise UserError(f"The parent of finetune.from has model.{key} = {parent['model'][key]!r}, this run asks "
                            f"for {config['model'][key]!r}; the encoder's shapes must match: set model.{key} = "
                            f"{parent['model'][key]!r}.")
    return state
