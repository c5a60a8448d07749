"""Training runs that would lose their model: no labelled validation rows, a NaN validation score, and the order
best-model.pth and last.pth are written in."""

import shutil

import pandas as pd
import pytest

from conftest import train
from coremax.engine import tasks, trainer
from coremax.errors import UserError
from coremax.paths import experiment_dir


def test_a_finetune_without_labelled_validation_rows_is_refused_before_any_folder(tmp_path, data_root):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    table = tmp_path / "datasets" / "synthetic" / "val.parquet"
    meta = pd.read_parquet(table)
    for t in ("CaCO3", "TOC", "Ca", "Fe", "Si", "K"):
        if t in meta.columns:
            meta[t] = float("nan")
    meta.to_parquet(table)
    with pytest.raises(UserError, match="no validation rows with any of"):
        train(tmp_path, "noval", "finetune", "optim.epochs=1")
    assert not experiment_dir(tmp_path, "noval").exists()



def test_a_nan_validation_score_stops_the_run_naming_the_epoch(tmp_path, data_root, monkeypatch):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    original = tasks.FinetuneTask.validate

    def nan_score(self, model, val, batch_size):
        return {**original(self, model, val, batch_size), "val_nrmse": float("nan")}

    monkeypatch.setattr(tasks.FinetuneTask, "validate", nan_score)
    with pytest.raises(UserError, match="val_nrmse is nan at epoch 1"):
        train(tmp_path, "nanval", "finetune", "optim.epochs=1")



def test_best_model_is_written_before_last(tmp_path, data_root, monkeypatch):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    order = []
    save = trainer.ckpt.save
    monkeypatch.setattr(trainer.ckpt, "save", lambda path, state: (order.append(path.name), save(path, state))[1])
    train(tmp_path, "order", "finetune", "optim.epochs=1")
    assert order == ["best-model.pth", "last.pth"]
