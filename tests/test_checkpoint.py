"""Checkpoints: one best-model.pth alone rebuilds a ready model, and a damaged one is refused."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import train
from coremax.data.dataset import load_split
from coremax.errors import UserError
from coremax.eval.predictor import load_predictor
from coremax.experiment import Experiment

WINDOW = "data.channels=[0, 512]"


def test_a_checkpoint_alone_rebuilds_a_ready_model(tmp_path, data_root):
    """No experiment folder, no data set: the checkpoint carries model arguments, window, transform with its
    statistics, targets and their scaler."""
    import shutil

    from coremax import models

    name = train(data_root, "self-desc", "finetune", WINDOW, 'data.transform="normalize"', "optim.epochs=1").name
    exp = Experiment.open(data_root, name)
    copy = tmp_path / "alone.pth"
    shutil.copy(exp.checkpoints / "best-model.pth", copy)
    loaded = models.load(copy)
    assert loaded.stage == "finetune" and loaded.targets == ["CaCO3", "TOC"] and loaded.scaler is not None
    x = load_split(data_root, "synthetic", "test")[list(range(2048))].to_numpy(np.float32)[:8]
    with torch.no_grad():
        wt = loaded.scaler.inverse(loaded.model(loaded.transform(torch.tensor(x))).numpy())
    rows = pd.DataFrame(x, columns=list(range(2048)))
    np.testing.assert_allclose(np.clip(wt, 0, 100), np.clip(load_predictor(exp).predict(rows), 0, 100), rtol=1e-5)
    copy.write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read safely"):
        models.load(copy)
