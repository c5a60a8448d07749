"""The stages behind scripts/train.py: pretrain (MSM), finetune (regressor), baseline (classical).

Each config section is consumed by one function whose keyword defaults are the lowest level of the
config hierarchy: [data] -> prepare_data, [model] -> build_model, [optim] -> fit, [runtime] -> setup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from coremax import config as configlib
from coremax import checkpoint as ckpt
from coremax.checks import check_parent, check_resumable, check_stage_keys
from coremax.data.bulk import TARGETS
from coremax.data.ratios import ElementRatios
from coremax.engine.data import Prepared, input_length, prepare_data, setting_spectra
from coremax.engine.runtime import cleanup, seed_everything, setup
from coremax.engine.probe import element_head, fit_ridge_head
from coremax.engine.trainer import TASKS, fit, save_untrained
from coremax.errors import UserError
from coremax.stats.epo import EPO_SPECTRA
from coremax.stats.metrics import rmse
from coremax.experiment import Experiment
from coremax.io import file_sha256
from coremax.models import build_model, load_encoder, peft
from coremax.paths import experiment_dir, inside
from coremax.provenance import device_info


# [experiment], [finetune], [baseline] and [eval] are read directly, so their lowest level is the default file.
SECTION_FUNCTIONS = {"data": prepare_data, "model": build_model, "optim": fit, "runtime": setup}


def function_defaults() -> dict:
    out = {}
    for section, func in SECTION_FUNCTIONS.items():
        # TOML has no tuples.
        out[section] = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in configlib.signature_defaults(func).items()}
    return out


def history_metrics(stage: str, targets) -> set[str]:
    """The validation metrics a run's history holds (what sweep.metrics may name)."""
    per_target = {f"val_rmse_{t}" for t in targets}
    return {"pretrain": {"val_loss"}, "finetune": {"val_loss", "val_nrmse"} | per_target,
            "baseline": per_target}[stage]


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


def run_stage(config: dict, data_root, resume: bool = False, command=None, notes=()) -> Experiment:
    """Train one experiment from a resolved config (a plain dict); returns its folder. `notes`: what resolving
    the config mapped (a renamed key of a frozen config), written to the log."""
    stage = config["experiment"]["stage"]
    seed = config["experiment"]["seed"]
    rt = setup(**config["runtime"])
    exp = None
    try:
        seed_everything(seed)
        # Inputs are checked before the experiment folder exists, so a typo leaves nothing behind.
        data = prepare_data(data_root, stage, seed, **config["data"])
        mode = config["finetune"]["mode"] if stage == "finetune" else "full"
        epo = stage in ("finetune", "baseline") and config[stage]["epo"]
        penalty = config["finetune"]["epo_penalty"] if stage == "finetune" else 0.0
        check_stage_keys(config, data, mode)
        # the scanner settings' unlabelled spectra (stats.epo); a resumed fine-tune keeps the head it fitted (and
        # needs them again only for the penalty), a resumed baseline is fitted again
        spectra = setting_spectra(data_root, seed, config["data"], EPO_SPECTRA) \
            if epo and (stage == "baseline" or not resume or penalty) else None
        if resume:
            check_resumable(data_root, config)
        # A resumed fine-tune continues from its own last.pth, which holds every weight: the parent may be gone.
        parent = resolve_parent(data_root, config["finetune"]["from"]) \
            if stage == "finetune" and config["finetune"]["from"] and not resume else None
        if parent is not None:
            parent_state = check_parent(parent[0], config)
        if mode in peft.MODES and parent is None and not resume:
            raise UserError(f"finetune.mode = {mode!r} adapts a pretrained encoder and keeps it frozen; set finetune.from "
                            "to a pretrain experiment (or use mode \"full\" to train from scratch).")
        if stage != "baseline":
            width, patch = input_length(config["data"]), config["model"]["patch_size"]
            if patch < 1 or width % patch:
                raise UserError(f"The energy window data.channels = {config['data']['channels']} is {width} channels "
                                f"wide, which model.patch_size = {patch} does not divide; change either.")
        if stage == "baseline":
            exp = Experiment.create(data_root, config["experiment"]["name"], config, resume, command)
            exp.record(device={**device_info("cpu"), "world_size": 1}, test_cores_read=test_reads(data, config))
            with exp.run() as log:
                for note in notes:
                    log.info("config_note", note=note)
                run_baseline(exp, data, config, log, spectra)
            return exp
        exp = _create_on_all_ranks(data_root, config, resume, command, rt)
        if rt.main:
            exp.record(device={**device_info(str(rt.device)), "world_size": rt.world_size},
                       test_cores_read=test_reads(data, config))
        with exp.run(main_process=rt.main) as log:
            for note in notes:
                log.info("config_note", note=note)
            # model.aux_elements: pretraining also predicts the element log-ratios (the spectra's own targets)
            aux = element_targets(data) if stage == "pretrain" and config["model"]["aux_elements"] else None
            model = build_model(stage, len(aux.parts) if aux else len(data.targets), input_length(config["data"]),
                                **config["model"])
            # Everything needed to use the checkpoint without the experiment folder or the data set.
            extra = {"input_length": input_length(config["data"]), "targets": data.targets,
                     **({"aux_elements": aux.state()} if aux else {})}
            if data.scaler is not None:
                extra["target_scaler"] = data.scaler.state_dict()
            if data.channel_stats is not None:
                extra["channel_stats"] = [s.tolist() for s in data.channel_stats]
            if parent is not None:
                _init_from_parent(model, parent, parent_state, exp, log, rt.main)
            if mode in peft.MODES:
                extra["peft"] = _attach_peft(model, config["finetune"], parent, exp, resume, log)
            task = TASKS[stage](data, rt)
            if mode in ("ridge", "lp_ft") and not resume:  # a closed-form head on the encoder as it is
                chosen, head = fit_ridge_head(task, model.to(rt.device), spectra, config["finetune"]["elements"])
                log.info("ridge_head", **chosen)
                if head is not None:  # finetune.elements: the element log-ratios' part of the head
                    extra["element_head"], task.side = head, element_head(head)
                if penalty:  # the targets whose head was chosen blind, and its predictions of the settings' spectra
                    extra["epo_blind"] = [t for t in data.targets if chosen[t].get("epo")]
                    extra["epo_start"] = task.outputs(model, spectra)
            if penalty:
                if resume:  # what the head fitted at the start said, from last.pth
                    state = ckpt.load(exp.checkpoints / "last.pth")
                    extra.update(epo_blind=state["epo_blind"], epo_start=state["epo_start"])
                task.keep_blind(spectra, extra["epo_start"], [data.targets.index(t) for t in extra["epo_blind"]],
                                penalty)
            if mode in ("linear_probe", "ridge"):
                for p in model.encoder.parameters():
                    p.requires_grad_(False)
            if mode == "ridge":
                save_untrained(task, model, exp, rt, log, config, extra)
            else:
                fit(task, model, exp, rt, log, config, seed, resume, extra, **config["optim"])
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


def element_targets(data: Prepared) -> ElementRatios:
    """model.aux_elements: each pretraining row's standardised element log-ratios as its target (train and
    validation rows, the parts and moments from the training rows), and the ratios that make them."""
    ratios = ElementRatios.fit(data.train.frame, "model.aux_elements")
    for part in (data.train, data.val):
        part.y = torch.from_numpy(ratios(part.frame, "model.aux_elements").astype(np.float32))
    return ratios


def _attach_peft(model, fine: dict, parent, exp: Experiment, resume: bool, log) -> dict:
    """LoRA or adapters on the parent's frozen encoder (a resumed run: on the base its last.pth names); returns
    the base's record that every checkpoint of the run carries."""
    if resume:
        last = exp.checkpoints / "last.pth"
        state = ckpt.load(last)
        peft.attach_to_base(model, state, last)
        record = state["peft"]
    else:
        peft.attach(model, fine["mode"], fine["lora_rank"], fine["lora_alpha"], fine["adapter_dim"])
        record = peft.base_record(parent[0], exp.checkpoints)
    log.info("peft", mode=fine["mode"], trainable_params=peft.trainable_params(model),
             total_params=sum(p.numel() for p in model.parameters()), base=record["base"])
    return record


def test_reads(data: Prepared, config: dict) -> dict:
    """What a run read of the test cores, for provenance.toml: their spectra (data.test_spectra, unsupervised
    steps only: pretraining, a baseline's features, finetune.epo's setting means) and the source files of the
    labelled rows that joined training (data.test_labels)."""
    stage = config["experiment"]["stage"]
    spectra = config["data"]["test_spectra"] and (stage in ("pretrain", "baseline") or
                                                  (stage == "finetune" and config["finetune"]["epo"]))
    rows = data.train.frame
    picked = rows[data.new_core_rows()] if stage != "pretrain" else rows.iloc[:0]
    return {"spectra_of": sorted(set(data.info.get("cores", {}).get("test", []))) if spectra else [],
            "labels": sorted(picked["source_file"].astype(str))}


def run_baseline(exp: Experiment, data: Prepared, config: dict, log, spectra=None) -> None:
    """Fit a classical baseline on the labelled train rows; its hyperparameters are chosen on val rows (and, with
    the scanner settings' `spectra`, whether it is blind to them: baseline.epo)."""
    from coremax.baselines import BASELINE_FILE, make_baseline  # deferred: scikit-learn, only for baselines

    b = config["baseline"]
    model = make_baseline(b["method"], b)  # each method takes the [baseline] keys it declares

    def inputs(part):  # the counts or the element table of a split, whichever the method reads
        return model.inputs_of(part.frame, np.asarray(part.x, dtype=np.float32) if model.inputs == "spectra" else None)
    x_tr, x_va = inputs(data.train), inputs(data.val)
    y_tr = data.train.frame[data.targets].to_numpy(np.float64)
    y_va = data.val.frame[data.targets].to_numpy(np.float64)
    x_un = None if data.unlabelled is None else inputs(data.unlabelled)
    log.info("baseline_fit", method=b["method"], inputs=model.inputs, rows=len(x_tr), val_rows=len(x_va),
             unlabelled_rows=0 if x_un is None else len(x_un))
    settings = None if spectra is None else (inputs(spectra), spectra.frame["scanner"].to_numpy(str))
    model.fit(x_tr, y_tr, x_va, y_va, data.targets, x_un, data.new_core_rows(), settings,
              contents=data.info.get("contents", list(TARGETS)))
    model.save(exp.checkpoints / BASELINE_FILE)
    pred = model.predict(x_va)
    row = {"epoch": 1, **{f"val_rmse_{t}": rmse(y_va[:, j], pred[:, j])
                          for j, t in enumerate(data.targets)}}
    exp.write_result("history", pd.DataFrame([row]))
    log.info("baseline_done", selected=model.selected_params(), **row)


def _create_on_all_ranks(data_root, config, resume, command, rt) -> Experiment:
    """Rank 0 makes the folder (and a name when none was given); the other ranks open the same one."""
    if not rt.distributed:
        return Experiment.create(data_root, config["experiment"]["name"], config, resume, command)
    import torch.distributed as dist

    holder = [None]
    if rt.main:
        holder[0] = Experiment.create(data_root, config["experiment"]["name"], config, resume, command).name
    dist.broadcast_object_list(holder, src=0)
    return Experiment.open(data_root, holder[0])


def _init_from_parent(model, parent: tuple[Path, str], state: dict, exp: Experiment, log, main: bool) -> None:
    path, name = parent
    report = load_encoder(model, state["model"])
    log.info("encoder_loaded", checkpoint=exp.relpath(path), missing=report["missing"],
             unexpected=report["unexpected"])
    parent_transform = state.get("config", {}).get("data", {}).get("transform")
    if parent_transform and parent_transform != exp.config()["data"]["transform"]:
        log.warning("transform_differs", parent=parent_transform, this=exp.config()["data"]["transform"])
    if main:
        exp.record(parent={"experiment": name, "checkpoint": exp.relpath(path), "sha256": file_sha256(path)})
