"""The energy window (data.channels): applied in every stage, refused when bad or when the parent's differs."""

import numpy as np
import pandas as pd
import pytest

from conftest import resolved, train
from coremax.analysis import saliency
from coremax.data.dataset import load_split
from coremax.engine.data import prepare_data
from coremax.errors import UserError
from coremax.eval.predictor import load_network, load_predictor
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.paths import experiment_dir
from coremax.stages import run_stage

WINDOW = "data.channels=[0, 512]"


def test_window_is_applied_in_every_stage(data_root, pool):
    assert prepare_data(data_root, "pretrain", 0, channels=[0, 512], pool=[pool]).train.x.shape[1] == 512
    assert prepare_data(data_root, "finetune", 0, channels=[64, 576]).train.x.shape[1] == 512
    pre = train(data_root, "win-pre", "pretrain", WINDOW, "optim.epochs=1", f'data.pool=["{pool}"]').name
    ft = train(data_root, "win-ft", "finetune", WINDOW, "optim.epochs=1", f'finetune.from="{pre}"').name
    base = train(data_root, "win-pls", "baseline", WINDOW, 'baseline.method="pls"').name
    prov = Experiment.open(data_root, pre).provenance()
    assert set(prov["pool"]) == {pool} and len(prov["pool"][pool]) == 64  # the pool's info.toml hash
    assert prov["device"]["type"] == "cpu" and prov["device"]["world_size"] == 1
    test = load_split(data_root, "synthetic", "test")
    x = test[list(range(2048))].to_numpy(np.float32)
    for name in (ft, base):
        pred = load_predictor(Experiment.open(data_root, name))
        # Channels outside the window change nothing: the predictor reads the experiment's own window.
        changed = x.copy()
        changed[:, 600:] = 1e6
        rows = [pd.DataFrame(v, columns=list(range(2048))) for v in
                (x, changed, x + np.r_[np.zeros(100), np.full(412, 50.0), np.zeros(1536)])]
        assert np.allclose(pred.predict(rows[0]), pred.predict(rows[1]))
        assert not np.allclose(pred.predict(rows[0]), pred.predict(rows[2]))
    for name in (pre, ft, base):
        assert not evaluate_experiment(data_root, name).empty
    # The notebooks' path: a windowed network takes full spectra, and nothing outside the window matters.
    model, transform, _ = load_network(Experiment.open(data_root, ft))
    attribution = saliency(model, transform, x[:2], 0, method="input_x_gradient")
    assert attribution.shape == (2, 2048) and np.abs(attribution[:, :512]).sum() > 0
    assert not attribution[:, 512:].any()


def test_parent_with_another_window_is_refused_before_anything_exists(data_root):
    pre = train(data_root, "win-pre2", "pretrain", WINDOW, "optim.epochs=1").name
    cfg = resolved('experiment.stage="finetune"', 'experiment.name="win-bad"', f'finetune.from="{pre}"',
                   "data.channels=[0, 1024]")
    with pytest.raises(UserError, match=r"data.channels = \[0, 512\]"):
        run_stage(cfg, data_root)
    assert not experiment_dir(data_root, "win-bad").exists()


@pytest.mark.parametrize("window", ["[0, 3000]", "[512, 0]", "[0]", "[0, 500]"])
def test_bad_window_is_refused_before_anything_exists(data_root, window):
    cfg = resolved('experiment.stage="pretrain"', 'experiment.name="win-typo"', f"data.channels={window}")
    with pytest.raises(UserError, match="channels|divisible"):
        run_stage(cfg, data_root)
    assert not experiment_dir(data_root, "win-typo").exists()
