"""What an experiment may change after it froze: the few keys that say how it runs, never what it is.

config.toml is frozen when a run starts and provenance.toml records the same config (`trained_config`), so a
test, a prediction or a resume can tell an edited key from the one the model was trained with. The lists below
are the only keys that may differ; docs/experiment-folder.md says the same to users.
"""

from __future__ import annotations

from coremax import checkpoint as ckpt
from coremax.config import RENAMED
from coremax.errors import UserError

# How a run is executed (device, threads, precision, logging) and the folder's name: a resume may set these.
RESUME_MAY_CHANGE = ("runtime", "experiment.name")
# A test also chooses the coverage of its intervals (recorded with its results); everything else is the model's.
TEST_MAY_CHANGE = (*RESUME_MAY_CHANGE, "eval")

STAGE_WORDS = {"pretrain": "a pretraining checkpoint", "finetune": "a fine-tuned model"}


def _keys(config: dict, prefix: str = "") -> dict:
    """{"section.key": value} of a config, sub-sections' keys three-part ("baseline.ratio.pair")."""
    out = {}
    for name, value in config.items():
        if isinstance(value, dict):
            out.update(_keys(value, f"{prefix}{name}."))
        elif prefix:
            out[f"{prefix}{name}"] = value
    return out


def config_change(frozen: dict, config: dict, may_change=()) -> tuple[str, object, object] | None:
    """The first key whose value differs between an experiment's frozen config and `config`, as (key, frozen
    value, new value), or None. A key the frozen config holds under an old name is compared by its new one
    (configlib.RENAMED). Not compared: keys that one side lacks (added after the run froze: their defaults keep
    the old behaviour) and the sections (sub-sections) or keys in `may_change`."""
    then = {RENAMED.get(k, k): v for k, v in _keys(frozen).items()}
    for key, value in _keys(config).items():
        if key not in then or any(key == m or key.startswith(f"{m}.") for m in may_change):
            continue
        if then[key] != value:
            return key, then[key], value
    return None


def _model_state(exp) -> dict | None:
    """best-model.pth of a network experiment, its tensors memory-mapped (only its record is read), or None."""
    path = exp.checkpoints / "best-model.pth"
    return ckpt.load(path, mmap=True) if path.is_file() else None


def check_unchanged(exp, may_change=TEST_MAY_CHANGE) -> None:
    """Refuse an experiment whose config.toml no longer says what its model was trained with (a key outside
    `may_change` edited since), or whose best-model.pth is a checkpoint of another stage. The record is
    provenance.toml's `trained_config`; experiments from before it existed fall back on the config their
    checkpoint carries, and a baseline without either is not compared."""
    config = exp.config()
    state = _model_state(exp)
    stage = config.get("experiment", {}).get("stage", "")
    if state is not None and state.get("stage") and stage in STAGE_WORDS and state["stage"] != stage:
        raise UserError(f"{exp.relpath(exp.checkpoints / 'best-model.pth')} of {exp.name!r} is "
                        f"{STAGE_WORDS.get(state['stage'], 'a ' + state['stage'] + ' checkpoint')}, not "
                        f"{STAGE_WORDS[stage]}; restore the model this {stage} experiment trained, or train it again.")
    trained = exp.provenance().get("trained_config") or (state or {}).get("config")
    change = config_change(trained, config, may_change) if trained else None
    if change:
        key, then, now = change
        raise UserError(f"{exp.relpath(exp.config_file)} sets {key} = {now!r}, but {exp.name!r} was trained with "
                        f"{key} = {then!r} (provenance.toml) and only {', '.join(may_change)} may change after "
                        f"training; restore {then!r} in config.toml, or train a new experiment with {now!r}.")

