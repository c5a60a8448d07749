"""The scalable data layout: counts in .npy row shards read as one array, streamed when over the memory budget."""

import json

import numpy as np
import pandas as pd
import torch

from conftest import train
from coremax.data.dataset import build_dataset, load_arrays, load_info, load_split
from coremax.data.shards import Shards
from coremax.engine.data import prepare_data
from coremax.experiment import Experiment


def test_a_sharded_data_set_loads_to_exactly_the_same_tensors(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    build_dataset(tmp_path, "sharded", raw=source / "raw", bulk=source / "bulk.csv", split=0.8, seed=0,
                  shard_rows=50)
    info = load_info(tmp_path, "sharded")
    rows = info["counts"]["rows_train"]
    assert len(info["shards"]["train"]) == -(-rows // 50) > 1
    assert all(name in info["files"] for names in info["shards"].values() for name in names)  # each with sha256
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(load_split(tmp_path, "sharded", split), load_split(data_root, "synthetic", split))
    for stage in ("pretrain", "finetune"):
        a = prepare_data(tmp_path, stage, 0, dataset="sharded", channels=[0, 512])
        b = prepare_data(data_root, stage, 0, dataset="synthetic", channels=[0, 512])
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    # Rows taken across shard borders, in any order, are the rows of one array.
    _, x = load_arrays(tmp_path, "sharded", "train")
    whole = np.asarray(x)
    idx = np.array([rows - 1, 0, 49, 50, 51, 120])
    np.testing.assert_array_equal(x.take(idx), whole[idx])
    np.testing.assert_array_equal(np.asarray(x[..., 10:20]), whole[:, 10:20])


def test_a_set_over_the_memory_budget_streams_shard_by_shard(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    build_dataset(data_root, "sharded-stream", raw=source / "raw", bulk=source / "bulk.csv", split=0.8, seed=0,
                  shard_rows=64)
    data = prepare_data(data_root, "pretrain", 0, dataset="sharded-stream", max_memory_gb=1e-6)
    assert data.train.streamed and isinstance(data.train.x, Shards)
    order = torch.cat(list(data.train.batches(32, torch.Generator().manual_seed(0))))
    assert sorted(order.tolist()) == list(range(len(data.train)))  # every row once per epoch
    # Shard by shard: the first 64 rows of the epoch all come from one shard.
    assert len({i // 64 for i in order[:64].tolist()}) == 1
    shares = [torch.cat(list(data.train.batches(32, torch.Generator().manual_seed(0), r, 2))) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) and not set(shares[0][:64].tolist()) & set(shares[1][:64].tolist())
    exp = train(data_root, "streamed", "pretrain", 'data.dataset="sharded-stream"', "data.max_memory_gb=1e-6",
                "optim.epochs=1")
    history = Experiment.open(data_root, "streamed").read_result("history")
    assert len(history) == 1 and np.isfinite(history["train_loss"]).all()
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    assert next(e for e in events if e["event"] == "training")["streamed"] is True
