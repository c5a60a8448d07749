"""Using a model bundle without its experiment: suggest.py --model chooses what --experiment chooses, a pretraining
bundles (an encoder to share), and finetune.from = "<file>.coremax" continues from a bundle's weights."""

import hashlib
import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import train
from test_bundles import in_process, new_cores, refused  # noqa: F401 (new_cores: a fixture)
from coremax import checkpoint as ckpt
from coremax.bundle import write_bundle
from coremax.data.dataset import load_split
from coremax.experiment import Experiment
from coremax.eval.predictor import load_predictor
from coremax.suggest import METHODS


@pytest.fixture(scope="module")
def shared(data_root, pretrained, finetuned, tmp_path_factory):
    """Bundles of the session's pretraining and fine-tune, written in process: {name: path}."""
    folder = tmp_path_factory.mktemp("shared")
    return {name: write_bundle(data_root, name, folder / f"{name}.coremax") for name in (pretrained, finetuned)}


def _suggest(capsys, monkeypatch, where, *args):
    monkeypatch.chdir(where)
    res = in_process("suggest", *args, "--n", 6, "--min-gap-mm", 0, capsys=capsys)
    assert res.returncode == 0, res.stderr
    return res.stderr


@pytest.mark.parametrize("which, methods", [("finetuned", METHODS), ("pretrained", ("typical", "diverse"))])
def test_suggest_from_a_bundle_in_a_bare_folder_chooses_what_its_experiment_chooses(
        which, methods, request, data_root, shared, new_cores, tmp_path, capsys, monkeypatch):
    name = request.getfixturevalue(which)
    bare = tmp_path / "bare"  # no data root: the bundle alone
    bare.mkdir()
    shutil.copy(shared[name], bare / "m.coremax")
    for method in methods:
        _suggest(capsys, monkeypatch, tmp_path, "--experiment", name, "--data-root", data_root, "--raw", new_cores,
                 "--method", method, "--out", tmp_path / f"exp-{method}.csv")
        note = _suggest(capsys, monkeypatch, bare, "--model", "m.coremax", "--raw", new_cores, "--method", method,
                        "--out", f"m-{method}.csv")
        a, b = pd.read_csv(tmp_path / f"exp-{method}.csv"), pd.read_csv(bare / f"m-{method}.csv")
        shared_cols = [c for c in a.columns if c in b.columns]
        assert len(b) == 6 and {"core", "depth_mm", "rank", "reason", "distance"} <= set(shared_cols)
        pd.testing.assert_frame_equal(a[shared_cols], b[shared_cols], check_exact=True)  # bitwise, on CPU
        if which == "finetuned":
            assert {"CaCO3_pred", "CaCO3_half_width"} <= set(shared_cols), method
            assert "checks were skipped" not in note  # the bundle carries what the shift checks compare with
    assert not (bare / "data").exists() and (bare / f"suggest-{a['core'].iloc[0]}.png").is_file()


def test_a_pretraining_bundles_and_predicts_nothing(data_root, pretrained, shared, new_cores, tmp_path, capsys):
    with zipfile.ZipFile(shared[pretrained]) as z:
        card, members = z.read("MODEL.md").decode(), set(z.namelist())
        calib = json.loads(z.read("calibration.json"))
    assert "weights.safetensors" in members and "widths.json" not in members and calib["targets"] == []
    assert "predicts nothing" in card and "finetune.from" in card
    err = refused(in_process("predict", "--model", shared[pretrained], "--raw", new_cores, "--out",
                             tmp_path / "p.csv", capsys=capsys))
    assert "pretrain" in err and not list(tmp_path.glob("p*"))
    err = refused(in_process("suggest", "--model", shared[pretrained], "--raw", new_cores, "--method", "uncertain",
                             "--out", tmp_path / "s.csv", capsys=capsys))
    assert "uncertain" in err


def _encoder(path):
    return {k: v for k, v in ckpt.load(path)["model"].items() if k.startswith("encoder.")}


def test_finetune_from_a_bundle_starts_from_its_weights_and_records_it(data_root, pretrained, shared):
    common = ('finetune.mode="ridge"', "optim.epochs=1")
    # the bundle fixes the encoder's shapes: its model.size replaces this run's
    train(data_root, "from-bundle", "finetune", *common, f'finetune.from="{shared[pretrained]}"', 'model.size="small"')
    train(data_root, "from-exp", "finetune", *common, f'finetune.from="{pretrained}"')
    exp = Experiment.open(data_root, "from-bundle")
    assert exp.config()["model"]["size"] == Experiment.open(data_root, pretrained).config()["model"]["size"]
    mine, theirs = _encoder(exp.checkpoints / "best-model.pth"), _encoder(Experiment.open(
        data_root, pretrained).checkpoints / "best-model.pth")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)  # frozen: as loaded
    rows = load_split(data_root, "synthetic", "val")
    a, b = (load_predictor(Experiment.open(data_root, n)).bounded(rows) for n in ("from-bundle", "from-exp"))
    assert np.array_equal(a, b)  # the same parent weights, the same closed-form head
    parent = exp.provenance()["parent"]
    assert parent["sha256"] == hashlib.sha256(shared[pretrained].read_bytes()).hexdigest()
    assert parent["experiment"] == pretrained and parent["bundle"] == str(shared[pretrained])


def test_a_peft_finetune_from_a_bundle_names_its_weights_as_base(data_root, pretrained, shared):
    train(data_root, "lora-from-bundle", "finetune", 'finetune.mode="lora"', "optim.epochs=1",
          f'finetune.from="{shared[pretrained]}"')
    exp = Experiment.open(data_root, "lora-from-bundle")
    assert (exp.checkpoints / "parent.pth").is_file()
    base = _encoder(exp.checkpoints / "parent.pth")
    assert all(torch.equal(base[k], v) for k, v in _encoder(
        Experiment.open(data_root, pretrained).checkpoints / "best-model.pth").items())
    rows = load_split(data_root, "synthetic", "val")
    assert np.isfinite(load_predictor(exp).bounded(rows)).all()


def test_a_tampered_baseline_or_missing_bundle_as_parent_is_refused_in_one_sentence(data_root, shared, pretrained,
                                                                                     tmp_path, capsys):
    data = bytearray(shared[pretrained].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.coremax"
    tampered.write_bytes(bytes(data))
    pls = tmp_path / "pls.coremax"
    train(data_root, "use-pls", "baseline", 'baseline.method="pls"')
    write_bundle(data_root, "use-pls", pls)
    for i, (path, words) in enumerate(((tampered, "damaged or was changed"), (pls, "baseline"),
                                       (tmp_path / "none.coremax", "names no file"))):
        err = refused(in_process("train", "--stage", "finetune", "--data-root", data_root,
                                 "--name", f"refused-{i}", 'finetune.mode="ridge"', f'finetune.from="{path}"',
                                 'runtime.device="cpu"', capsys=capsys))
        assert words in err and str(path.name) in err, err
        assert not (data_root / "experiments" / f"refused-{i}").exists()
