"""Reliability II: runs that would silently lose their model, and raw folders mixing labelled and unlabelled cores."""

import shutil

import pandas as pd
import pytest

from conftest import train
from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.engine import trainer
from coremax.errors import UserError
from coremax.paths import experiment_dir


def _bulk_of(source, tmp_path, cores):
    bulk = pd.read_csv(source / "bulk.csv")
    path = tmp_path / "bulk.csv"
    bulk[bulk["core"].isin(cores)].to_csv(path, index=False)
    return path


def test_validation_cores_are_drawn_among_labelled_cores(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    info = load_info(data_root, "synthetic")
    test_cores = info["cores"]["test"]
    others = sorted(set(info["cores"]["train"]) | set(info["cores"]["val"]))
    labelled = others[:2]
    for seed in range(4):  # whatever the draw, the validation core has lab samples
        build_dataset(tmp_path, f"mixed{seed}", raw=source / "raw", bulk=_bulk_of(source, tmp_path, test_cores + labelled),
                      split=0.5, seed=seed, test_cores=test_cores)
        val = load_split(tmp_path, f"mixed{seed}", "val")
        assert set(val["core"]) <= set(labelled) and val["CaCO3"].notna().any()
        train_cores = set(load_split(tmp_path, f"mixed{seed}", "train")["core"])
        assert set(others) - set(labelled) <= train_cores  # unlabelled cores stay in training
    with pytest.raises(UserError, match="Only 1 non-test core"):
        build_dataset(tmp_path, "one", raw=source / "raw", bulk=_bulk_of(source, tmp_path, test_cores + others[:1]),
                      split=0.8, test_cores=test_cores)
    assert not (tmp_path / "datasets" / "one").exists()


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
    original = trainer.FinetuneTask.validate

    def nan_score(self, model, val, batch_size):
        return {**original(self, model, val, batch_size), "val_nrmse": float("nan")}

    monkeypatch.setattr(trainer.FinetuneTask, "validate", nan_score)
    with pytest.raises(UserError, match="val_nrmse is nan at epoch 1"):
        train(tmp_path, "nanval", "finetune", "optim.epochs=1")


def test_best_model_is_written_before_last(tmp_path, data_root, monkeypatch):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    order = []
    save = trainer.ckpt.save
    monkeypatch.setattr(trainer.ckpt, "save", lambda path, state: (order.append(path.name), save(path, state))[1])
    train(tmp_path, "order", "finetune", "optim.epochs=1")
    assert order == ["best-model.pth", "last.pth"]
