"""Model bundles: one `.coremax` file that carries a trained experiment to a machine with neither its data set
nor its folder (`scripts/archive.py bundle`, `scripts/predict.py --model`).

The file is a zip, not a tar: a zip's central directory lets the loader read a named member without walking
(or extracting) the others, each member carries a CRC that catches truncation, and nothing is ever written to
disk on load, so no member name can escape anywhere. Every member is data, never code: network weights as
safetensors (or a baseline's skops file, read with the trusted types only), JSON, TOML, CSV and Markdown.
MANIFEST.json lists each member's sha256 and size; a member missing, extra or differing refuses the file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coremax import models
from coremax.baselines import BASELINE_FILE, Baseline
from coremax.data.bulk import TARGETS
from coremax.data.dataset import load_info, load_split
from coremax.errors import UserError
from coremax.eval.card import model_card
from coremax.eval.recalibrate import correction_methods
from coremax.data.window import data_window
from coremax.eval.predictor import Predictor, baseline_predictor, check_trained, load_predictor, network_predictor
from coremax.eval.run import calibrate
from coremax.eval.shift import check_reference
from coremax.eval.widths import WidthCalibration
from coremax.experiment import Experiment
from coremax.io import atomic_path, parse_toml, utc_now

FORMAT = "coremax-bundle/1"
MANIFEST = "MANIFEST.json"
WEIGHTS = "weights.safetensors"
WIDTHS = "widths.json"  # suggest.py's normalised conformal widths (coremax.eval.widths)
# What the scanner, distance and core-shift checks compare new spectra with (coremax.eval.shift.check_reference):
# embeddings of a few hundred training rows per core and of the validation rows, and those rows' settings.
CHECKS, CHECK_ROWS = "checks.safetensors", "checks.csv"
# What models.load needs besides the tensors: everything else of a checkpoint (optimizer, EPO start, the PEFT
# base's path) belongs to training, not to using the model.
STATE_KEYS = ("stage", "config", "input_length", "targets", "target_scaler", "channel_stats", "element_head",
              "aux_elements", "peft", "window", "runs_kv")
MAX_MEMBER = 8 << 30  # a member claiming more is refused before it is read (a zip bomb, not a model)


@dataclass
class Bundle:
    """A loaded bundle: the predictor, the conformal half-widths per target at `config.eval.interval`, the frozen
    config, the data set's record (name, kv, contents, scanners, files' sha256) and the recalibration chosen per
    target on the validation cores (for predict.py --bulk)."""
    predictor: Predictor
    half_widths: np.ndarray
    config: dict
    dataset: dict
    corrections: dict
    path: Path
    widths: WidthCalibration | None = None  # suggest.py's per-spectrum interval widths (None: a pretraining's)
    reference: tuple | None = None  # what the distribution checks compare with (shift.check_reference)


def _plain(v):
    """Checkpoint values as JSON: tensors and arrays as (nested) lists, numpy scalars as numbers."""
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON")


def _json(data) -> bytes:
    return json.dumps(data, indent=1, default=_plain).encode()


def write_bundle(data_root, name: str, out) -> Path:
    """Bundle the completed fine-tune, baseline or pretrain experiment `name` into the new file `out` (a
    pretraining's bundle carries its encoder: it predicts nothing, it features suggest.py and finetune.from)."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists already; choose another --out (a bundle is never overwritten).")
    exp = Experiment.open(data_root, name)
    cfg = exp.config()
    check_trained(exp, "val")  # completed, its model files and the validation rows of the intervals unchanged
    dataset = cfg["data"]["dataset"]
    info, prov = load_info(data_root, dataset), exp.provenance()
    pred = load_predictor(exp)
    val = load_split(data_root, dataset, "val")
    predicts = pred.predict is not None
    q = calibrate(pred, val, cfg["eval"]["interval"]) if predicts else np.zeros(0)
    members = {"config.toml": exp.config_file.read_bytes(), "provenance.toml": exp.provenance_file.read_bytes()}
    if cfg["experiment"]["stage"] == "baseline":
        members[BASELINE_FILE] = (exp.checkpoints / BASELINE_FILE).read_bytes()
    else:
        from safetensors.torch import save
        loaded = models.load(exp.checkpoints / "best-model.pth")
        # all the weights, a PEFT model's base encoder included: the bundle needs no base checkpoint
        members[WEIGHTS] = save({k: v.detach().contiguous() for k, v in loaded.model.state_dict().items()})
        members["state.json"] = _json({k: loaded.state[k] for k in STATE_KEYS if k in loaded.state})
    record = {"name": dataset, "kv": info["kv"], "spectrum_length": info["spectrum_length"],
              "original_lengths": info.get("original_lengths", [info["spectrum_length"]]),
              **({"runs": info["runs"]} if info.get("runs") else {}),  # several tube voltages per spot
              "contents": list(info.get("contents", TARGETS)), "scanners": info.get("scanners", []),
              "cores": info.get("cores", {}), "files_sha256": prov.get("dataset", {}).get("files", {})}
    members["dataset.json"] = _json(record)
    members["calibration.json"] = _json({"interval": cfg["eval"]["interval"], "targets": pred.targets,
                                         "half_widths": [float(v) for v in q],
                                         # an infinite shrinkage (an offset) as "inf": JSON has no infinity
                                         "corrections": {t: v if np.isfinite(v) else "inf" for t, v in
                                                         (correction_methods(pred, val) if predicts else {}).items()}})
    if predicts:
        train = load_split(data_root, dataset, "train")
        members[WIDTHS] = _json(WidthCalibration.fit(pred, train, val, cfg["eval"]["interval"]).to_json())
        members[CHECKS], members[CHECK_ROWS] = _checks(pred, train, val)
    tables = {}
    for split in ("test", "val"):
        for kind in ("metrics", "floor"):
            if exp.has_result(f"{split}-{kind}"):
                tables[f"{split}-{kind}"] = exp.read_result(f"{split}-{kind}")
    for key, table in tables.items():
        members[f"{key}.csv"] = table.to_csv(index=False).encode()
    members["MODEL.md"] = model_card(name, cfg, pred.targets, record, q, tables).encode()
    manifest = {"format": FORMAT, "experiment": name, "created_utc": utc_now(),
                "files": {m: hashlib.sha256(b).hexdigest() for m, b in members.items()},
                "sizes": {m: len(b) for m, b in members.items()}}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, _json(manifest))
        for m, b in members.items():
            z.writestr(m, b)
    return out


def read_members(path) -> dict[str, bytes]:
    """Every member of the bundle `path`, checked against its manifest; a damaged, tampered or foreign file is
    refused in one sentence."""
    path = Path(path)
    bad = f"The bundle {path} is damaged or was changed"
    if not path.is_file():
        raise UserError(f"The bundle {path} does not exist; check --model.")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if MANIFEST not in names:
                raise UserError(f"{path} is not a CoreMAX model bundle (it has no {MANIFEST}); write one with "
                                "scripts/archive.py bundle.")
            manifest = json.loads(z.read(MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise UserError(f"{path} is not a bundle of this version of CoreMAX (format "
                                f"{str(manifest.get('format') if isinstance(manifest, dict) else None)!r}).")
            files, sizes = manifest.get("files", {}), manifest.get("sizes", {})
            if any("/" in n or "\\" in n or n.startswith(".") for n in names):  # a bundle is flat: nothing to escape
                raise UserError(f"{bad}: it names a member outside its top level; it was not written by CoreMAX.")
            if sorted(names) != sorted([MANIFEST, *files]) or len(set(names)) != len(names):
                raise UserError(f"{bad}: its members are not the ones its manifest lists; ask for a fresh copy.")
            members = {}
            for info in z.infolist():
                if info.filename == MANIFEST:
                    continue
                if info.file_size != sizes.get(info.filename) or info.file_size > MAX_MEMBER:
                    raise UserError(f"{bad}: {info.filename} is not the size its manifest lists; ask for a fresh "
                                    "copy.")
                data = z.read(info)
                if hashlib.sha256(data).hexdigest() != files[info.filename]:
                    raise UserError(f"{bad}: {info.filename} differs from its sha256 in the manifest; ask for a "
                                    "fresh copy.")
                members[info.filename] = data
    except UserError:
        raise
    except Exception as e:  # truncated, a flipped byte in the zip's own records, not a zip at all
        raise UserError(f"{bad} or is no bundle: it cannot be read as one ({type(e).__name__}); ask for a fresh "
                        "copy.") from None
    return members


def load_bundle(path, device: str = "cpu", features_only: bool = False) -> Bundle:
    """The predictor and calibration of a bundle, checked; nothing of it is unpickled or runs code. A
    pretraining's bundle predicts nothing: refused unless `features_only` (suggest.py's features)."""
    members = read_members(path)
    where = f"The bundle {Path(path)}"
    try:
        config = parse_toml(members["config.toml"].decode(), str(path))
        dataset = json.loads(members["dataset.json"])
        calib = json.loads(members["calibration.json"])
        contents = tuple(dataset["contents"])
        if BASELINE_FILE in members:
            model = Baseline.from_bytes(members[BASELINE_FILE], where)
            pred = baseline_predictor(model, data_window(config["data"], dataset) if dataset["spectrum_length"]
                                      else config["data"]["channels"], contents, dataset.get("runs", ()))
        else:
            from safetensors.torch import load
            state = json.loads(members["state.json"])
            pred = network_predictor(models.from_tensors(state, load(members[WEIGHTS]), where, device), contents)
        if pred.predict is None and not features_only:
            raise UserError(f"{where} holds a pretrain experiment's encoder, which predicts nothing; predict with a "
                            "bundle of a finetune or baseline experiment (or fine-tune this one: finetune.from).")
        q = np.asarray(calib["half_widths"], dtype=np.float64)
        if list(calib["targets"]) != list(pred.targets):
            raise UserError(f"{where} calibrates other targets than its model predicts; it was not written by "
                            "scripts/archive.py bundle.")
        corrections = {t: float(v) for t, v in calib["corrections"].items()}
        widths = WidthCalibration.from_json(json.loads(members[WIDTHS])) if WIDTHS in members else None
        reference = _reference(members) if CHECKS in members else None
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:  # hashes match, contents do not: foreign
        raise UserError(f"{where} lacks what a bundle holds ({type(e).__name__}: {str(e)[:60]}); write it again "
                        "with scripts/archive.py bundle.") from None
    return Bundle(pred, q, config, dataset, corrections, Path(path), widths, reference)


def network_state(path) -> tuple[dict, dict]:
    """(checkpoint-like state with all the weights under "model", record for provenance) of a network bundle,
    checked: what finetune.from = "<file>.coremax" continues from. A baseline's bundle has no encoder, and a
    PEFT model's weights sit on a base encoder that a fine-tune would have to merge: both refused."""
    where = f"finetune.from = {str(path)!r}"
    if not Path(path).is_file():
        raise UserError(f"{where} names no file (a bundle's path is taken as given, or relative to the working "
                        "directory); check the path.")
    members = read_members(path)
    if WEIGHTS not in members:
        raise UserError(f"{where} is a bundle of a classical baseline, which has no encoder to fine-tune; name a "
                        "bundle of a pretrain or finetune experiment.")
    try:
        from safetensors.torch import load
        state = json.loads(members["state.json"])
        tensors = load(members[WEIGHTS])
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{where} lacks what a bundle holds ({type(e).__name__}); write it again with "
                        "scripts/archive.py bundle.") from None
    if state.get("peft"):
        raise UserError(f"{where} is a {state['config']['finetune']['mode']} model; continue from the pretrain "
                        "(or full fine-tune) it was made from, or bundle that.")
    state["model"] = tensors
    record = {"bundle": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
              "experiment": state.get("config", {}).get("experiment", {}).get("name", ""),
              "stage": state.get("stage", "")}
    return state, record


def _checks(pred: Predictor, train, val) -> tuple[bytes, bytes]:
    """The members the distribution checks need: the reference and validation embeddings (safetensors, their
    own dtype, so the checks are those of the experiment bit for bit) and the reference rows' settings (CSV)."""
    import torch
    from safetensors.torch import save

    e_train, rows, e_val = check_reference(pred.embed, train, val)
    tensors = {"reference": torch.from_numpy(np.ascontiguousarray(e_train)),
               "validation": torch.from_numpy(np.ascontiguousarray(e_val))}
    return save(tensors), rows.to_csv(index=False).encode()


def _reference(members: dict) -> tuple:
    import io

    import pandas as pd
    from safetensors.torch import load

    tensors = load(members[CHECKS])
    rows = pd.read_csv(io.BytesIO(members[CHECK_ROWS]), dtype={"core": str, "scanner": str}, keep_default_na=False)
    # fresh (aligned) copies: numpy's sums take other SIMD paths over unaligned buffers, the last bit differs
    return tensors["reference"].numpy().copy(), rows, tensors["validation"].numpy().copy()
