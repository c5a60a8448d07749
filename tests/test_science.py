"""The science issue's guarantees: the unlabelled pool never holds a test core and pretraining reads it; the
energy window is the same in every stage and a parent with another window is refused; validation by core;
the floor; the calibration-jitter augmentation and the added transforms."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import resolved, train
from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.data.splits import resolve_split_by
from coremax.data.simulate import LABELLED_HEADS, SCANNERS, plan_archive, simulate_archive
from coremax.data.transforms import (centred_log_ratio, jitter_absorption, jitter_calibration, make_transform,
                                     sqrt_normalize)
from coremax.engine.data import prepare_data
from coremax.errors import UserError
from coremax.eval.floor import floor_metrics
from coremax.analysis import saliency
from coremax.eval.run import evaluate_experiment, load_network, load_predictor
from coremax.experiment import Experiment
from coremax.paths import experiment_dir
from coremax.stages import run_stage

WINDOW = "data.channels=[0, 512]"


@pytest.fixture(scope="module")
def pool(data_root):
    """A small unlabelled pool beside the session's labelled set (same physics, every head)."""
    source = data_root / "datasets" / "external" / "pool"
    if not (data_root / "datasets" / "pool" / "info.toml").is_file():
        simulate_archive(source, seed=5, cores=5, spacing_mm=40.0, labelled=False, workers=1)
        build_dataset(data_root, "pool", raw=source / "raw", split=0.8, seed=0)
    return "pool"


def test_pool_archive_is_unlabelled_has_its_own_cores_and_a_new_head(tmp_path):
    labelled_cores = {p.core for p in plan_archive(0, 60)}
    pool_plans = plan_archive(1, 52, labelled=False)
    assert not labelled_cores & {p.core for p in pool_plans}  # cores are named apart, whatever the sizes
    assert {p.scanner for p in pool_plans} == set(range(len(SCANNERS)))
    assert {p.scanner for p in plan_archive(0, 12)} == set(range(LABELLED_HEADS)) and LABELLED_HEADS < len(SCANNERS)
    m = simulate_archive(tmp_path / "p", seed=2, cores=4, spacing_mm=100.0, labelled=False, workers=1)
    assert not (tmp_path / "p" / "bulk.csv").exists() and m["test_cores"] == [] and m["bulk_samples"] == 0
    assert (tmp_path / "p" / "truth.csv").is_file() and m["spectra"] > 0


def test_pretraining_reads_the_pool_and_never_a_test_core(data_root, pool):
    info = load_info(data_root, "synthetic")
    data = prepare_data(data_root, "pretrain", 0, pool=[pool])
    own = len(load_split(data_root, "synthetic", "train")) + len(load_split(data_root, "pool", "train"))
    assert len(data.train) == own
    seen = set(data.train.frame["core"]) | set(data.val.frame["core"])
    assert set(load_info(data_root, pool)["cores"]["train"]) <= seen
    assert not seen & set(info["test_cores"])
    # Fine-tuning ignores the pool: it has no labels.
    assert len(prepare_data(data_root, "finetune", 0, pool=[pool]).train) == \
        load_split(data_root, "synthetic", "train")[["CaCO3", "TOC"]].notna().any(axis=1).sum()


def test_a_pool_holding_a_test_core_is_refused(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    # The labelled archive itself, without bulk, as a "pool": it holds the test cores.
    build_dataset(tmp_path, "synthetic", raw=source / "raw", bulk=source / "bulk.csv", split=0.8)
    build_dataset(tmp_path, "leaky", raw=source / "raw", split=0.8)
    with pytest.raises(UserError, match="test core"):
        prepare_data(tmp_path, "pretrain", 0, pool=["leaky"])
    with pytest.raises(UserError, match="itself"):
        prepare_data(tmp_path, "pretrain", 0, pool=["synthetic"])


def test_core_split_keeps_cores_whole_and_every_head_in_training(tmp_path):
    source = tmp_path / "arch"
    simulate_archive(source, seed=3, cores=12, spacing_mm=150.0, workers=1)
    build_dataset(tmp_path, "d", raw=source / "raw", bulk=source / "bulk.csv", split=0.75)
    info = load_info(tmp_path, "d")
    assert info["split"]["by"] == "core"  # auto, with 9 non-test cores
    train, val = load_split(tmp_path, "d", "train"), load_split(tmp_path, "d", "val")
    assert not set(train["core"]) & set(val["core"]) and len(set(val["core"])) >= 2
    assert set(val["scanner"]) <= set(train["scanner"])  # no head is only in validation
    assert resolve_split_by("auto", 3) == "row" and resolve_split_by("section", 30) == "section"


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


def test_floor_on_a_hand_made_archive(tmp_path):
    root = tmp_path
    raw = root / "arch" / "raw"
    raw.mkdir(parents=True)
    files = [f"C{i}/Run 1 at  10kV/f{j}.spe" for i in range(2) for j in range(3)]
    pd.DataFrame({"source_file": files, "CaCO3": [10.0, 20, 30, 40, 50, 60], "TOC": [1.0] * 6}).to_csv(
        root / "arch" / "truth.csv", index=False)
    test = pd.DataFrame({"core": ["C0"] * 3 + ["C1"] * 3, "source_file": files,
                         "CaCO3": [12.0, np.nan, 30, 37, 50, 60], "TOC": [np.nan] * 6})
    (root / "datasets" / "h").mkdir(parents=True)
    test.to_parquet(root / "datasets" / "h" / "test.parquet")
    np.save(root / "datasets" / "h" / "test.npy", np.zeros((6, 4), np.int32))
    (root / "datasets" / "h" / "info.toml").write_text('[source]\nraw = "arch/raw"\n')
    floor = floor_metrics(root, "h", ["CaCO3"]).set_index("scope")
    # Errors 2, 0, -3, 0, 0 on the measured rows: RMSE sqrt(13/5); per core C0: sqrt(4/2).
    assert floor.loc["all", "n"] == 5 and floor.loc["all", "rmse"] == pytest.approx(np.sqrt(13 / 5))
    assert floor.loc["C0", "rmse"] == pytest.approx(np.sqrt(2.0)) and floor.loc["C1", "n"] == 3
    (root / "arch" / "truth.csv").unlink()
    assert floor_metrics(root, "h", ["CaCO3"]) is None


def test_calibration_jitter_moves_peaks_and_keeps_counts():
    x = torch.zeros(64, 512)
    x[:, 200] = 1000.0
    x[:, 300] = 500.0
    assert torch.equal(jitter_calibration(x, 0.0, 0.0, 0.0), x)
    g = torch.Generator().manual_seed(0)
    y = jitter_calibration(x, 0.01, 2.0, 1.5, generator=g)
    assert y.shape == x.shape and (y >= 0).all()
    assert torch.allclose(y.sum(1), x.sum(1), rtol=0.02)  # counts are moved, not made
    peak = y.argmax(dim=1).float()
    assert peak.std() > 0.5 and (peak - 200).abs().max() < 15  # the peak moved a few channels, differently per row
    shifted = jitter_calibration(x[:1], 0.0, 1e-9, 0.0)
    assert torch.allclose(shifted, x[:1], atol=1e-3)


def test_clr_and_sqrt_transforms():
    x = torch.tensor([[0.0, 9.0, 99.0, 999.0]])
    clr = centred_log_ratio(x)
    assert torch.allclose(clr.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(centred_log_ratio(x * 1.0), make_transform("clr")(x))
    assert torch.allclose(sqrt_normalize(4 * x), sqrt_normalize(x), atol=1e-5)  # scale-free
    assert torch.allclose(sqrt_normalize(x).std(), torch.tensor(1.0), atol=1e-4)


def test_absorption_jitter_tilts_the_light_element_end():
    x = torch.full((256, 512), 100.0)
    y = jitter_absorption(x, 0.6, generator=torch.Generator().manual_seed(0))
    low, high = y[:, 87] / x[:, 87], y[:, 400] / x[:, 400]   # Si K-alpha vs 8 keV
    assert (low.min() < 0.7) and (low.max() > 1.4) and torch.allclose(high, torch.ones_like(high), atol=0.02)
    assert torch.equal(jitter_absorption(x, 0.0), x)


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
