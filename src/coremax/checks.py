"""What a stage checks before anything is created beyond its own keys (coremax.stages): a resume that would
change what an experiment is, a parent checkpoint that does not fit."""

from __future__ import annotations

from pathlib import Path

from coremax import checkpoint as ckpt
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.frozen import RESUME_MAY_CHANGE, check_unchanged, config_change
from coremax.paths import experiment_dir


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


# The model keys that fix an encoder's weights and their meaning: a fine-tune takes them from its parent.
ENCODER_MODEL_KEYS = ("size", "patch_size", "run_tokens")


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
    return check_parent_state(state, config, f"The parent checkpoint {Path(path).name} of finetune.from")


def check_parent_state(state: dict, config: dict, what: str) -> dict:
    """The energy window and encoder shapes of a parent's `state` (a checkpoint's, or a bundle's) against this
    run's; `what` names the parent in the refusal."""
    parent = state.get("config", {})
    parent_data = parent.get("data", {})
    theirs = list(parent_data.get("channels", [0, parent_data.get("spectrum_length", 2048)]))
    ours = list(config["data"]["channels"])
    if theirs != ours:
        raise UserError(f"{what} was pretrained on the energy window data.channels = {theirs}, this run asks for "
                        f"{ours}; set data.channels = {theirs}.")
    for key in ENCODER_MODEL_KEYS:  # checked here, before any folder exists
        if key in parent.get("model", {}) and parent["model"][key] != config["model"][key]:
            raise UserError(f"{what} has model.{key} = {parent['model'][key]!r}, this run asks "
                            f"for {config['model'][key]!r}; the encoder must be the parent's: set model.{key} = "
                            f"{parent['model'][key]!r}.")
    return state
