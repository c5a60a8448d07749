"""Resuming a training run (--resume): the same result as an uninterrupted run, refusals that change nothing, a
NaN loss that stops with its checkpoint kept."""

import math

import numpy as np
import pytest

from conftest import history, interrupted, interrupted_then_resumed, train
from coremax.data.dataset import load_split
from coremax import checkpoint as ckpt
from coremax.engine import tasks, trainer
from coremax.errors import UserError
from coremax.experiment import Experiment


def test_resume_equals_an_uninterrupted_run(data_root, monkeypatch):
    args = ("optim.epochs=3", "optim.blr=1e-3", "experiment.seed=3")
    train(data_root, "whole", "pretrain", *args)
    interrupted_then_resumed(data_root, "cut", "pretrain", *args, monkeypatch=monkeypatch)
    a, b = history(data_root, "whole"), history(data_root, "cut")
    assert list(b["epoch"]) == [1, 2, 3]
    np.testing.assert_array_equal(a["train_loss"].to_numpy(), b["train_loss"].to_numpy())
    np.testing.assert_array_equal(a["val_loss"].to_numpy(), b["val_loss"].to_numpy())
    prov = Experiment.open(data_root, "cut").provenance()
    assert prov["status"] == "completed" and len(prov["resumed_utc"]) == 1


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(data_root, monkeypatch):
    original = tasks.PretrainTask.loss
    calls = {"n": 0}
    steps_per_epoch = math.ceil(len(load_split(data_root, "synthetic", "train")) / 32)

    def nan_later(self, model, x, y):
        calls["n"] += 1
        loss = original(self, model, x, y)
        return loss * float("nan") if calls["n"] > steps_per_epoch + 1 else loss

    monkeypatch.setattr(tasks.PretrainTask, "loss", nan_later)
    with pytest.raises(trainer.TrainingDiverged, match=rf"epoch 2, step {steps_per_epoch + 2}"):
        train(data_root, "nan", "pretrain", "optim.epochs=3")
    exp = Experiment.open(data_root, "nan")
    assert exp.provenance()["status"] == "failed"
    assert ckpt.load(exp.checkpoints / "last.pth")["epoch"] == 1


def test_a_refused_resume_changes_nothing(data_root, pretrained):
    exp = Experiment.open(data_root, pretrained)
    before = (exp.config_file.read_bytes(), exp.provenance_file.read_bytes())
    with pytest.raises(UserError, match="model.size would change"):
        train(data_root, pretrained, "pretrain", "optim.epochs=3", "optim.blr=1e-3", 'model.size="small"',
              resume=True)
    assert (exp.config_file.read_bytes(), exp.provenance_file.read_bytes()) == before


def test_resume_without_last_checkpoint_or_with_a_damaged_one_is_refused(data_root, tmp_path):
    import shutil

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    train(tmp_path, "short", "pretrain", "optim.epochs=1")
    exp = Experiment.open(tmp_path, "short")
    last = exp.checkpoints / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    before = exp.provenance_file.read_bytes()
    with pytest.raises(UserError, match="cannot be read safely"):
        train(tmp_path, "short", "pretrain", "optim.epochs=1", resume=True)
    last.unlink()
    with pytest.raises(UserError, match="Nothing to resume"):
        train(tmp_path, "short", "pretrain", "optim.epochs=1", resume=True)
    assert exp.provenance_file.read_bytes() == before


def test_resumed_finetune_needs_no_parent_and_keeps_its_command(data_root, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    train(tmp_path, "p", "pretrain", "optim.epochs=1")
    interrupted(tmp_path, "f", "finetune", "optim.epochs=2", 'finetune.from="p"', monkeypatch=monkeypatch, at=2)
    shutil.rmtree(tmp_path / "experiments" / "p")
    train(tmp_path, "f", "finetune", "optim.epochs=2", 'finetune.from="p"', resume=True)
    prov = Experiment.open(tmp_path, "f").provenance()
    assert prov["status"] == "completed" and prov["command"] == "pytest f" and len(prov["resume_commands"]) == 1
    assert list(history(tmp_path, "f")["epoch"]) == [1, 2]


def test_resume_accepts_a_key_added_after_the_run_froze(data_root, tmp_path, monkeypatch):
    """A run frozen before a config key existed resumes at that key's default (which keeps the old behaviour)."""
    import shutil

    from coremax.io import read_toml, write_toml

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    interrupted(tmp_path, "old", "pretrain", "optim.epochs=2", monkeypatch=monkeypatch, at=2)
    exp = Experiment.open(tmp_path, "old")
    frozen = read_toml(exp.config_file)
    del frozen["model"]["head_layers"], frozen["data"]["test_labels"]
    write_toml(exp.config_file, frozen)
    train(tmp_path, "old", "pretrain", "optim.epochs=2", resume=True)
    assert list(history(tmp_path, "old")["epoch"]) == [1, 2]
