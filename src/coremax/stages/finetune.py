"""experiment.stage = "finetune": a regressor on the pretrained (or a random) encoder, trained as its
finetune.mode (coremax.modes) says: this stage asks the mode, it never tests the mode's name."""

from __future__ import annotations

from pathlib import Path

from coremax import checkpoint as ckpt
from coremax.bundle import network_state
from coremax.checks import ENCODER_MODEL_KEYS, check_parent, check_parent_state
from coremax.engine.probe import element_head, fit_ridge_head
from coremax.engine.trainer import save_untrained
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.io import file_sha256
from coremax.models import load_encoder, peft
from coremax.modes import check_keys, get_mode
from coremax.paths import experiment_dir, inside
from coremax.stages.base import Run, register
from coremax.stages.network import NetworkStage


BUNDLE_SUFFIX = ".coremax"  # finetune.from naming a model bundle file (a path as given, or relative to the cwd)
PARENT_FILE = "parent.pth"  # a bundle parent's weights as the base checkpoint of a PEFT fine-tune


@register("finetune")
class Finetune(NetworkStage):
    section = "finetune"

    def __init__(self, config, data_root, resume):
        super().__init__(config, data_root, resume)
        self.fine = config["finetune"]
        self.mode = get_mode(self.fine["mode"])
        self.parent = self.parent_state = self.bundle = None  # bundle: the record of a .coremax parent

    @staticmethod
    def history_metrics(targets):
        return {"val_loss", "val_nrmse"} | {f"val_rmse_{t}" for t in targets}

    def reads_settings(self):
        # a resumed fine-tune keeps the head it fitted (and needs the spectra again only for the penalty)
        return self.fine["epo"] and (not self.resume or bool(self.fine["epo_penalty"]))

    def reads_test_spectra(self):
        return self.fine["epo"]  # the settings' means may include the test cores' spectra

    def check(self, data):
        check_keys(self.mode, self.fine, from_parent=bool(self.fine["from"]) or self.resume)
        # A resumed fine-tune continues from its own last.pth, which holds every weight: the parent may be gone.
        if self.fine["from"] and not self.resume:
            if self.fine["from"].endswith(BUNDLE_SUFFIX):
                self.parent_state, self.bundle = bundle_parent(self.fine["from"], self.config)
            else:
                self.parent = resolve_parent(self.data_root, self.fine["from"])
                self.parent_state = check_parent(self.parent[0], self.config)
        super().check(data)

    def prepare(self, run: Run, model, task, extra: dict) -> None:
        fine, rt, log = self.fine, run.rt, run.log
        if self.bundle is not None and self.mode.saves_trained_only:
            # PEFT checkpoints name a base checkpoint file: the bundle's weights become one in this experiment
            self.parent = (ckpt.save(run.exp.checkpoints / PARENT_FILE, self.parent_state), "")
        if self.parent_state is not None:
            _init_from_parent(model, self.parent, self.parent_state, run.exp, log, rt.main, self.bundle)
        if self.mode.saves_trained_only:
            extra["peft"] = self._attach_peft(model, run)
        else:
            self.mode.adapt(model, fine)
        penalty = fine["epo_penalty"]
        if self.mode.head_first and not run.resume:  # a closed-form head on the encoder as it is
            chosen, head = fit_ridge_head(task, model.to(rt.device), run.spectra, fine["elements"])
            log.info("ridge_head", **chosen)
            if head is not None:  # finetune.elements: the element log-ratios' part of the head
                extra["element_head"], task.side = head, element_head(head)
            if penalty:  # the targets whose head was chosen blind, and its predictions of the settings' spectra
                extra["epo_blind"] = [t for t in run.data.targets if chosen[t].get("epo")]
                extra["epo_start"] = task.outputs(model, run.spectra)
        if penalty:
            if run.resume:  # what the head fitted at the start said, from last.pth
                state = ckpt.load(run.exp.checkpoints / "last.pth")
                extra.update(epo_blind=state["epo_blind"], epo_start=state["epo_start"])
            task.keep_blind(run.spectra, extra["epo_start"],
                            [run.data.targets.index(t) for t in extra["epo_blind"]], penalty)

    def train(self, run: Run, task, model, extra: dict) -> None:
        if self.mode.steps:
            super().train(run, task, model, extra)
        else:
            save_untrained(task, model, run.exp, run.rt, run.log, run.config, extra)

    def _attach_peft(self, model, run: Run) -> dict:
        """The mode's trained weights on the parent's frozen encoder (a resumed run: on the base its last.pth
        names); returns the base's record that every checkpoint of the run carries."""
        if run.resume:
            last = run.exp.checkpoints / "last.pth"
            state = ckpt.load(last)
            peft.attach_to_base(model, state, last)
            record = state["peft"]
        else:
            self.mode.adapt(model, self.fine)
            record = peft.base_record(self.parent[0], run.exp.checkpoints)
        run.log.info("peft", mode=self.mode.name, trainable_params=peft.trainable_params(model),
                     total_params=sum(p.numel() for p in model.parameters()), base=record["base"])
        return record


def resolve_parent(data_root, source: str) -> tuple[Path, str]:
    """finetune.from: a pretrain experiment's name (its best-model.pth) or a checkpoint path under the root."""
    candidate = experiment_dir(data_root, source) if "/" not in source and ".." not in source else None
    if candidate is not None and candidate.is_dir():
        parent = Experiment.open(data_root, source)
        stage, status = parent.config()["experiment"]["stage"], parent.status()
        if stage == "baseline" or status != "completed":
            raise UserError(f"finetune.from = {source!r} is a {status} {stage} experiment; name a completed "
                            "pretrain (or finetune) experiment.")
        return candidate / "checkpoints" / "best-model.pth", source
    path = inside(data_root, source, "finetune.from checkpoint")
    if not path.is_file():
        raise UserError(f"finetune.from = {source!r} is neither an experiment under "
                        f"{Path(data_root) / 'experiments'} nor a checkpoint file; give a pretrain experiment name.")
    return path, ""


def bundle_parent(source: str, config: dict) -> tuple[dict, dict]:
    """finetune.from = a model bundle (coremax.bundle, checked on load): its state and record. The bundle fixes
    the encoder, so its model.size, model.patch_size and model.run_tokens replace this run's (frozen as such)."""
    state, record = network_state(Path(source))
    theirs = state.get("config", {}).get("model", {})
    for key in ENCODER_MODEL_KEYS:
        if key in theirs:
            config["model"][key] = theirs[key]
    return check_parent_state(state, config, f"The bundle {Path(source).name} of finetune.from"), record


def _init_from_parent(model, parent: tuple[Path, str] | None, state: dict, exp: Experiment, log, main: bool,
                      bundle: dict | None = None) -> None:
    """The encoder of the parent (a checkpoint, or a bundle's weights in `state`), logged and recorded."""
    path, name = parent or (None, "")
    report = load_encoder(model, state["model"])
    log.info("encoder_loaded", checkpoint=exp.relpath(path) if path else bundle["bundle"],
             missing=report["missing"], unexpected=report["unexpected"])
    parent_transform = state.get("config", {}).get("data", {}).get("transform")
    if parent_transform and parent_transform != exp.config()["data"]["transform"]:
        log.warning("transform_differs", parent=parent_transform, this=exp.config()["data"]["transform"])
    if main and bundle is not None:  # the bundle's own hash: the file a colleague can compare with theirs
        exp.record(parent={**bundle, **({"checkpoint": exp.relpath(path)} if path else {})})
    elif main:
        exp.record(parent={"experiment": name, "checkpoint": exp.relpath(path), "sha256": file_sha256(path)})
