"""Element tables in data sets: written beside the spectra by preprocess, a data set of a lab's element tables
alone (scripts/preprocess.py --elements) for the log-ratio calibrations, refused by the stages that need spectra."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, train
from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.errors import UserError
from coremax.eval.run import evaluate_experiment


def test_preprocess_writes_the_element_table_beside_the_spectra(data_root):
    info = load_info(data_root, "synthetic")
    assert info["elements"]["spectra"] and "train-elements.parquet" in info["files"]
    train_df = load_split(data_root, "synthetic", "train")
    assert {"Ca_area", "Ca_sd", "Ti_area", "coh_area", "scatter_area", "chi2", "throughput_cps"} <= set(train_df.columns)
    # the fitted Ca follows the lab's Ca content (the simulator's bulk table reports it)
    measured = train_df.dropna(subset=["Ca"])
    assert np.corrcoef(np.log(measured["Ca_area"] / measured["Fe_area"]), np.log(measured["Ca"]))[0, 1] > 0.8


@pytest.fixture(scope="module")
def element_root(tmp_path_factory):
    """A data root whose data set 'lab' is built from the simulator's element table in the bAxil layout."""
    from coremax.data.element_tables import write_archive_elements
    from coremax.data.simulate import simulate_archive

    root = tmp_path_factory.mktemp("elements")
    source = root / "datasets" / "external" / "lab"
    simulate_archive(source, seed=2, cores=5, spacing_mm=20.0)
    table, _ = write_archive_elements(source)
    build_dataset(root, "lab", elements=[table], seed=0)
    return root


def test_a_data_set_of_element_tables_serves_the_log_ratio_calibrations(element_root):
    info = load_info(element_root, "lab")
    assert not info["elements"]["spectra"] and info["source"]["element_tables"]
    assert load_split(element_root, "lab", "test")["CaCO3"].notna().sum() > 5  # bulk.csv beside it was joined
    for method in ("mlc", "ratio"):
        train(element_root, f"lab-{method}", "baseline", 'data.dataset="lab"', f'baseline.method="{method}"')
        metrics = evaluate_experiment(element_root, f"lab-{method}")
        overall = metrics[metrics["scope"] == "all"].set_index("target")
        assert overall.loc["CaCO3", "r2"] > 0.5, method  # a calibration, not noise
    train(element_root, "lab-pls", "baseline", 'data.dataset="lab"', 'baseline.method="pls"',
          'baseline.features="elements"')
    assert np.isfinite(evaluate_experiment(element_root, "lab-pls")["rmse"]).all()


@pytest.mark.parametrize("stage, extra", [("pretrain", []), ("finetune", []),
                                          ("baseline", ['baseline.method="pls"'])])
def test_stages_that_need_spectra_refuse_an_element_only_data_set(element_root, stage, extra):
    with pytest.raises(UserError, match="element tables only"):
        train(element_root, f"lab-{stage}", stage, 'data.dataset="lab"', *extra)
    assert not (element_root / "experiments" / f"lab-{stage}").exists()


def test_preprocess_elements_from_the_command_line(element_root, tmp_path):
    table = element_root / "datasets" / "external" / "lab" / "elements.csv"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess.py"), "--data-root", str(tmp_path),
                          "--elements", str(table), "--name", "cli"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert load_info(tmp_path, "cli")["counts"]["labelled_test"] > 0
    both = subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess.py"), "--data-root", str(tmp_path),
                           "--elements", str(table), "--raw", str(table.parent / "raw"), "--name", "x"],
                          capture_output=True, text=True, timeout=300)
    assert both.returncode == 2 and "not several" in both.stderr and "Traceback" not in both.stderr


def test_the_hybrid_head_reads_msm_features_and_element_ratios(data_root, pretrained):
    """finetune.elements: one ridge head on the embedding and the element log-ratios; test.py and the Predictor
    add the ratios' part, and a mode that trains by gradient refuses it."""
    from coremax import checkpoint as ckpt
    from coremax.eval.predictor import load_predictor
    from coremax.experiment import Experiment

    common = ('finetune.mode="ridge"', f'finetune.from="{pretrained}"', "finetune.epo=true")
    train(data_root, "probe-plain", "finetune", *common)
    train(data_root, "probe-hybrid", "finetune", *common, "finetune.elements=true")
    state = ckpt.load(Experiment.open(data_root, "probe-hybrid").checkpoints / "best-model.pth")
    head = state["element_head"]
    assert "Ca" in head["parts"] and len(head["weight"]) == 2 and len(head["weight"][0]) == len(head["parts"])
    rows = load_split(data_root, "synthetic", "val")
    plain, hybrid = (load_predictor(Experiment.open(data_root, n)).bounded(rows) for n in ("probe-plain",
                                                                                         "probe-hybrid"))
    if np.abs(np.asarray(head["weight"])).sum() > 0:
        assert not np.allclose(plain, hybrid)
    else:
        np.testing.assert_allclose(plain, hybrid)
    history = Experiment.open(data_root, "probe-hybrid").read_result("history")
    val = rows.dropna(subset=["CaCO3"])
    p = load_predictor(Experiment.open(data_root, "probe-hybrid")).predict(val)
    # the logged validation RMSE is the hybrid's own (the ratios' part included)
    assert abs(history["val_rmse_CaCO3"].iloc[0] - np.sqrt(np.mean((p[:, 0] - val["CaCO3"]) ** 2))) < 1e-3
    assert np.isfinite(evaluate_experiment(data_root, "probe-hybrid")["rmse"]).all()
    with pytest.raises(UserError, match="finetune.elements"):
        train(data_root, "full-hybrid", "finetune", f'finetune.from="{pretrained}"', "finetune.elements=true")


def test_pretraining_can_be_taught_the_element_ratios(data_root):
    """model.aux_elements: the mean visible token also predicts the element log-ratios; the checkpoint keeps
    their parts, rebuilds alone, and a fine-tune starts from its encoder."""
    from coremax import checkpoint as ckpt
    from coremax import models
    from coremax.experiment import Experiment

    plain = train(data_root, "aux0", "pretrain", "optim.epochs=1")
    taught = train(data_root, "aux1", "pretrain", "optim.epochs=1", "model.aux_elements=1.0")
    state = ckpt.load(taught.checkpoints / "best-model.pth")
    assert "Ca" in state["aux_elements"]["parts"] and "aux_elements" not in ckpt.load(plain.checkpoints /
                                                                                       "best-model.pth")
    loaded = models.load(taught.checkpoints / "best-model.pth")
    assert loaded.model.aux.out_features == len(state["aux_elements"]["parts"])
    # the same draws, plus the ratios' error: the taught run's loss is the larger one
    a, b = (e.read_result("history")["train_loss"].iloc[0] for e in (plain, taught))
    assert b > a
    ft = train(data_root, "aux-ft", "finetune", 'finetune.mode="ridge"', 'finetune.from="aux1"')
    assert Experiment.open(data_root, ft.name).status() == "completed"
