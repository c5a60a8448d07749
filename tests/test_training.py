"""Training stages end to end on the small synthetic data set (CPU, tiny models)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, history, train
from coremax import checkpoint as ckpt
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.io import file_sha256
from coremax.models import build_model, load_encoder


def test_pretraining_loss_falls_and_outputs_exist(data_root, pretrained):
    h = history(data_root, pretrained)
    assert list(h["epoch"]) == [1, 2, 3]
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    exp = Experiment.open(data_root, pretrained)
    assert exp.provenance()["status"] == "completed"
    for f in ("best-model.pth", "last.pth"):
        assert (exp.checkpoints / f).is_file()
    state = ckpt.load(exp.checkpoints / "last.pth")
    assert {"model", "optimizer", "scaler", "epoch", "step", "rng", "config"} <= state.keys()
    assert state["epoch"] == 3 and state["config"]["experiment"]["name"] == pretrained
    best = ckpt.load(exp.checkpoints / "best-model.pth")  # the model to use: no optimizer moments
    assert best["optimizer"] == {} and best["model"].keys() == state["model"].keys()
    assert (exp.checkpoints / "best-model.pth").stat().st_size < 0.5 * (exp.checkpoints / "last.pth").stat().st_size
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert all(e["spectra_per_s"] > 0 for e in events if e["event"] == "epoch")  # throughput logged per epoch


def test_finetune_starts_from_the_pretrained_encoder(data_root, pretrained, finetuned):
    exp = Experiment.open(data_root, finetuned)
    prov = exp.provenance()
    best = data_root / "experiments" / pretrained / "checkpoints" / "best-model.pth"
    assert prov["parent"]["experiment"] == pretrained
    assert prov["parent"]["sha256"] == file_sha256(best)
    assert prov["parent"]["checkpoint"] == f"experiments/{pretrained}/checkpoints/best-model.pth"
    assert "val_nrmse" in history(data_root, finetuned).columns
    # Loading alone (before any training) copies the encoder exactly.
    state = ckpt.load(best)
    model = build_model("finetune", 2, size="tiny", patch_size=64)
    report = load_encoder(model, state["model"])
    assert report["missing"] == [] and report["unexpected"] == []
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, state["model"][f"encoder.{k}"]), k


@pytest.mark.parametrize("override", ["model.patch_size=32", 'model.size="small"'])
def test_shape_mismatch_is_refused_before_anything_exists(data_root, pretrained, override):
    with pytest.raises(UserError, match="must be the parent.s"):
        train(data_root, "ft-bad", "finetune", "optim.epochs=1", override, f'finetune.from="{pretrained}"')
    assert not (data_root / "experiments" / "ft-bad").exists()


def test_a_permission_error_is_one_sentence(data_root, monkeypatch, capsys):
    """A read-only data root (not reproducible as root, so simulated): one sentence, exit status 2."""
    from coremax.experiment import Experiment as Exp
    from coremax.cli import train_main

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", "/data/experiments/x")

    monkeypatch.setattr(Exp, "create", classmethod(refuse))
    with pytest.raises(SystemExit) as e:
        train_main(["--stage", "baseline", "--name", "x", "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cannot be written or read" in err and "Traceback" not in err


def test_missing_parent_is_a_clear_error(data_root):
    with pytest.raises(UserError, match="finetune.from"):
        train(data_root, "ft-none", "finetune", "optim.epochs=1", 'finetune.from="nope"')
    assert not (data_root / "experiments" / "ft-none").exists()


def test_linear_probe_freezes_the_encoder_and_max_labels(data_root, pretrained):
    train(data_root, "probe", "finetune", "optim.epochs=2", 'finetune.mode="linear_probe"', "data.max_labels=40",
          "runtime.save_every=1", f'finetune.from="{pretrained}"')
    exp = Experiment.open(data_root, "probe")
    before = ckpt.load(data_root / "experiments" / pretrained / "checkpoints" / "best-model.pth")["model"]
    after = ckpt.load(exp.checkpoints / "last.pth")["model"]
    for k, v in after.items():
        if k.startswith("encoder."):
            assert torch.equal(v, before[k]), k
    assert (exp.checkpoints / "checkpoint-epoch-1.pth").is_file()
    assert (exp.checkpoints / "checkpoint-epoch-2.pth").is_file()
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    assert next(e for e in events if e["event"] == "training")["rows"] == 40


def test_frozen_config_repeats_the_run_exactly_on_cpu(data_root):
    from coremax.cli import train_main

    train(data_root, "rep-a", "finetune", "optim.epochs=2", "data.max_labels=60")
    frozen = data_root / "experiments" / "rep-a" / "config.toml"
    train_main(["--config", str(frozen), "--name", "rep-b", "--data-root", str(data_root)])
    timing = ["seconds", "spectra_per_s", "mfu"]  # measured, so never equal
    pd.testing.assert_frame_equal(history(data_root, "rep-a").drop(columns=timing),
                                  history(data_root, "rep-b").drop(columns=timing))


def test_missing_dataset_and_bad_target_leave_nothing(data_root):
    with pytest.raises(UserError, match="preprocess"):
        train(data_root, "no-data", "pretrain", 'data.dataset="absent"')
    with pytest.raises(UserError, match="data.targets"):
        train(data_root, "bad-target", "finetune", 'data.targets=["Sr"]')
    assert not (data_root / "experiments" / "no-data").exists()
    assert not (data_root / "experiments" / "bad-target").exists()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_match_one_process_with_the_same_global_batch(data_root):
    """Two torchrun agents as two nodes of one process each (rendezvous on 127.0.0.1), batch 16 per process,
    against one process with batch 32: the same rows per step, so the same loss trajectory."""
    same = ["optim.epochs=2", "model.patch_size=64", 'runtime.device="cpu"', "runtime.log_interval_s=0.0",
            'data.targets=["CaCO3"]', "data.max_labels=64", "model.drop_path=0.0", "--stage", "finetune",
            "--data-root", str(data_root)]
    train_py = str(ROOT / "scripts" / "train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_port()
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                                "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", train_py,
                                "--name", "two-nodes", "optim.batch_size=16", *same],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outs = [a.communicate(timeout=300) for a in agents]
    assert all(a.returncode == 0 for a in agents), outs[0][1][-2000:] + outs[1][1][-2000:]
    single = subprocess.run([sys.executable, train_py, "--name", "one-process", "optim.batch_size=32", *same],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    two, one = history(data_root, "two-nodes"), history(data_root, "one-process")
    for column in ("train_loss", "val_loss", "val_rmse_CaCO3"):
        np.testing.assert_allclose(two[column], one[column], rtol=1e-4)
    exp = Experiment.open(data_root, "two-nodes")
    assert exp.provenance()["device"]["world_size"] == 2
    assert sorted(p.name for p in exp.checkpoints.iterdir()) == ["best-model.pth", "last.pth"]  # rank 0 only
    assert sum(o[0].count("experiment written to") for o in outs) == 1


def test_relative_data_root(tmp_path, data_root, pretrained, monkeypatch):
    """The default --data-root is the relative path `data`: paths must resolve against it, not twice."""
    import shutil

    shutil.copytree(data_root / "datasets" / "synthetic", tmp_path / "data" / "datasets" / "synthetic")
    shutil.copytree(data_root / "experiments" / pretrained, tmp_path / "data" / "experiments" / pretrained)
    monkeypatch.chdir(tmp_path)
    train("data", "rel", "finetune", "optim.epochs=1", "data.max_labels=20", f'finetune.from="{pretrained}"')
    prov = Experiment.open("data", "rel").provenance()
    assert prov["status"] == "completed"
    assert prov["parent"]["checkpoint"] == f"experiments/{pretrained}/checkpoints/best-model.pth"


def test_finetune_from_a_baseline_or_a_failed_run_is_refused_before_anything_exists(data_root):
    from coremax.paths import experiment_dir

    train(data_root, "a-pls", "baseline", 'baseline.method="pls"')
    with pytest.raises(UserError, match="completed pretrain"):
        train(data_root, "from-pls", "finetune", 'finetune.from="a-pls"')
    assert not experiment_dir(data_root, "from-pls").exists()


def test_a_three_target_model_trains_and_is_scored_on_each(data_root):
    from coremax.eval.run import evaluate_experiment

    exp = train(data_root, "three", "finetune", "optim.epochs=2", 'data.targets=["CaCO3", "TOC", "Fe"]')
    metrics = evaluate_experiment(data_root, "three", "test")
    overall = metrics[metrics["scope"] == "all"].set_index("target")
    assert list(overall.index) == ["CaCO3", "TOC", "Fe"] and overall["n"].gt(0).all()
    from coremax import models

    assert models.load(exp.checkpoints / "best-model.pth").targets == ["CaCO3", "TOC", "Fe"]
    train(data_root, "three-pls", "baseline", 'baseline.method="pls"', 'data.targets=["Fe", "K"]')
    assert set(evaluate_experiment(data_root, "three-pls", "test")["target"]) == {"Fe", "K"}


def test_square_root_targets_train_save_and_predict_in_wt_percent(data_root, pretrained):
    """data.target_transform = "sqrt": the contents are fitted as roots (the Fe counts are not a content: as they
    are), the checkpoint says so, and test.py scores predictions squared back to wt%, by full fine-tuning and
    by the closed-form head alike."""
    from coremax import models
    from coremax.data.dataset import load_split
    from coremax.eval.predictor import load_predictor
    from coremax.eval.run import evaluate_experiment

    for name, mode in (("root-ft", "full"), ("root-probe", "ridge")):
        exp = train(data_root, name, "finetune", "optim.epochs=2", f'finetune.from="{pretrained}"',
                    f'finetune.mode="{mode}"', 'data.target_transform="sqrt"', 'data.targets=["CaCO3", "TOC", "Fe"]')
        loaded = models.load(exp.checkpoints / "best-model.pth")
        assert loaded.scaler.root.tolist() == [True, True, False]
        assert 0 < loaded.scaler.mean[0] <= 10  # the mean root of contents of at most 100 wt%
        pred = load_predictor(exp).predict(load_split(data_root, "synthetic", "val"))
        assert (pred[:, :2] >= 0).all()  # a square: never a negative content
        metrics = evaluate_experiment(data_root, name, "test")
        assert metrics[metrics["scope"] == "all"]["rmse"].notna().all()


def test_provenance_holds_device_and_packages_and_tensorboard_scalars(data_root, pretrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp = Experiment.open(data_root, pretrained)
    prov = exp.provenance()
    assert prov["device"]["type"] == "cpu" and prov["device"]["cpu"] and prov["device"]["world_size"] == 1
    freeze = (exp.path / prov["packages"][0]).read_text().splitlines()
    assert any(line.startswith("torch==") for line in freeze) and freeze == sorted(freeze, key=str.lower)
    tb = train(data_root, "tb", "finetune", "optim.epochs=2", "data.max_labels=40", "runtime.tensorboard=true")
    events = EventAccumulator(str(tb.path / "tensorboard")).Reload()
    val = [e.value for e in events.Scalars("val_rmse_CaCO3")]
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    assert val == pytest.approx(tb.read_result("history")["val_rmse_CaCO3"].tolist())
