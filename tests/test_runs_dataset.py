"""A data set of two runs per spot (10 and 30 kV), from a small two-voltage archive: runs paired and joined,
spots missing a run counted, bad runs refused with nothing written, and MSM trained and tested on both runs."""

import shutil

import numpy as np
import pandas as pd
import pytest

from coremax import checkpoint
from coremax.cli import evaluate_main, predict_main, preprocess_main, suggest_main, train_main
from coremax.data.dataset import build_dataset, load_arrays, load_info, load_split
from coremax.data.simulate import simulate_archive
from coremax.errors import UserError
from coremax.paths import dataset_dir
from coremax.suggest import suggest_raw

RUNS = 'data.run_channels=[[0, 512], [0, 1536]]'


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-runs")
    simulate_archive(root / "datasets" / "external" / "synthetic-2kv", seed=0, cores=3, spacing_mm=50.0, workers=1,
                     benchmark="synthetic-2kv")
    return root


@pytest.fixture(scope="module")
def two_runs(archive):
    preprocess_main(["--data-root", str(archive), "--name", "synthetic-2kv", "--workers", "1", "--quiet"])
    return archive


def test_the_embedded_two_voltage_data_set_holds_both_runs_side_by_side(two_runs):
    info = load_info(two_runs, "synthetic-2kv")
    assert info["runs"] == [10.0, 30.0] and info["kv"] == 10.0 and info["runs_dropped"]["spectra"] == 0
    assert info["spectra_read"] == 2 * info["counts"]["files_read"]
    meta, x = load_arrays(two_runs, "synthetic-2kv", "train")
    assert x.shape[1] == 2 * 2048 and len(info["channel_mean"]) == 2 * 2048
    df = load_split(two_runs, "synthetic-2kv", "train")
    assert df["source_file_30kV"].str.contains("30kV").all() and (df["live_time_s_30kV"] == 20).all()
    assert {"Ca_10kV_area", "Sr_30kV_area", "Br_30kV_area", "chi2_30kV"} <= set(df.columns)
    # the 30 kV half of a row is that spot's 30 kV spectrum: far more counts above 10 keV (channel 500)
    assert np.asarray(x[:, 2048 + 600:2048 + 1500]).sum() > 20 * np.asarray(x[:, 600:1500]).sum()


def _copy(archive, tmp_path):
    shutil.copytree(archive / "datasets" / "external" / "synthetic-2kv", tmp_path / "a")
    return tmp_path / "a" / "raw"


def test_a_spot_missing_a_run_is_dropped_and_counted(archive, tmp_path):
    raw = _copy(archive, tmp_path)
    lost = sorted(raw.glob("*/Run 2*/*.spe"))[3]
    lost.unlink()
    build_dataset(tmp_path, "two", raw=raw, kv="10,30", workers=1)
    dropped = load_info(tmp_path, "two")["runs_dropped"]
    assert dropped["spectra"] == 1 and dropped["first"][0]["lacks"] == "30kV"
    assert dropped["first"][0]["source_file"].startswith(lost.parent.parent.name)


def test_runs_whose_depths_disagree_are_refused_and_nothing_is_written(archive, tmp_path):
    raw = _copy(archive, tmp_path)
    for f in sorted(raw.glob("*/Run 2*/*.spe")):  # the 30 kV run 3 mm further down than the 10 kV one
        head, pos, rest = f.name.partition("mm")[0].rpartition(" ")[0], f.name.partition("mm")[0].rsplit(" ", 1)[1], \
            f.name.partition("mm")[2]
        f.rename(f.with_name(f"{head} {float(pos) + 3:g}mm{rest}"))
    with pytest.raises(UserError, match=r"each other's nearest but 3 mm apart, beyond the pairing tolerance"):
        build_dataset(tmp_path, "two", raw=raw, kv="10,30", workers=1)
    assert not dataset_dir(tmp_path, "two").exists() and not list((tmp_path / "datasets").glob("*two*"))


def test_a_file_in_the_run_folder_of_another_voltage_is_refused(archive, tmp_path):
    raw = _copy(archive, tmp_path)
    moved = sorted(raw.glob("*/Run 1*/*.spe"))[0]
    shutil.move(moved, next(moved.parent.parent.glob("Run 2*")) / moved.name)
    with pytest.raises(UserError, match="its run folder says 30 kV but its header says 10 kV"):
        build_dataset(tmp_path, "two", raw=raw, kv="10,30", workers=1)
    assert not dataset_dir(tmp_path, "two").exists()


@pytest.fixture(scope="module")
def trained(two_runs):
    """A two-run pretraining p2 and its fine-tune f2, tested (built by whichever worker needs them first)."""
    common = ["--data-root", str(two_runs), "--quiet", 'data.dataset="synthetic-2kv"', RUNS, "optim.epochs=2"]
    train_main(["--config", "configs/smoke-pretrain.toml", "--stage", "pretrain", "--name", "p2", *common])
    train_main(["--config", "configs/smoke-finetune.toml", "--stage", "finetune", "--name", "f2", *common,
                'finetune.from="p2"'])
    evaluate_main(["--data-root", str(two_runs), "--experiment", "f2", "--quiet"])
    return two_runs


def test_msm_pretrains_fine_tunes_and_tests_on_both_runs(trained):
    state = checkpoint.load(trained / "experiments" / "f2" / "checkpoints" / "best-model.pth")
    assert state["window"] == {"spans": [[0, 512], [0, 1536]], "length": 2048} and state["runs_kv"] == [10.0, 30.0]
    # the default reading: the two windows as one spectrum, positions running on (32 + 96 patches), no run embedding
    assert state["config"]["model"]["run_tokens"] == "concatenated" and state["model"]["encoder.pos_embed"].shape == \
        (1, 1 + 128, 192) and not any("run_embed" in k for k in state["model"])
    pre = checkpoint.load(trained / "experiments" / "p2" / "checkpoints" / "best-model.pth")["model"]
    assert pre["decoder_pos_embed"].shape == (1, 1 + 128, 128) and not any("run_embed" in k for k in pre)
    assert (trained / "experiments" / "f2" / "results" / "test-metrics.pkl").is_file()


def test_suggest_reads_each_spots_runs_for_a_two_run_model(trained, tmp_path):
    two_runs = trained
    raw = two_runs / "datasets" / "external" / "synthetic-2kv" / "raw"
    suggest_main(["--data-root", str(two_runs), "--experiment", "f2", "--raw", str(raw), "--out",
                  str(tmp_path / "s.csv"), "--n", "4", "--quiet"])
    chosen = pd.read_csv(tmp_path / "s.csv")
    assert len(chosen) == 4 and chosen["core"].isin([p.name for p in raw.iterdir()]).all()
    only_10 = tmp_path / "only10"
    shutil.copytree(raw, only_10, ignore=shutil.ignore_patterns("Run 2*"))
    with pytest.raises(UserError, match="reads the 10kV, 30kV runs of each spot, but the folder holds no 30kV"):
        suggest_raw(two_runs, "f2", only_10, tmp_path / "t.csv", 2)
    assert not (tmp_path / "t.csv").exists()


def test_predict_reads_each_spots_runs_and_refuses_a_folder_without_the_models_voltage(trained, tmp_path, capsys):
    two_runs = trained
    raw = two_runs / "datasets" / "external" / "synthetic-2kv" / "raw"
    predict_main(["--data-root", str(two_runs), "--experiment", "f2", "--raw", str(raw), "--out",
                  str(tmp_path / "p.parquet"), "--quiet"])
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert len(table) == sum(1 for _ in raw.glob("*/Run 1*/*.spe"))  # one row per spot, not per spectrum
    assert {"CaCO3_pred", "Sr_30kV_area", "Ca_10kV_area"} <= set(table.columns)
    only_30 = tmp_path / "only30"
    shutil.copytree(raw, only_30, ignore=shutil.ignore_patterns("Run 1*"))
    with pytest.raises(SystemExit):
        predict_main(["--data-root", str(two_runs), "--experiment", "f2", "--raw", str(only_30), "--out",
                      str(tmp_path / "q.parquet"), "--quiet"])
    assert "holds no 10kV spectra" in capsys.readouterr().err and not (tmp_path / "q.parquet").exists()


@pytest.mark.parametrize("mode", ["lora", "lp_ft"])
def test_peft_and_lp_ft_fine_tune_and_test_on_both_runs(trained, mode):
    two_runs = trained
    name = f"f2-{mode}"
    train_main(["--config", "configs/smoke-finetune.toml", "--stage", "finetune", "--name", name, "--data-root",
                str(two_runs), "--quiet", 'data.dataset="synthetic-2kv"', RUNS, "optim.epochs=1",
                'finetune.from="p2"', f'finetune.mode="{mode}"'])
    evaluate_main(["--data-root", str(two_runs), "--experiment", name, "--quiet"])
    assert (two_runs / "experiments" / name / "results").is_dir()


@pytest.mark.parametrize("notebook, figures", [
    ("data-overview", ["datasets/synthetic-2kv/figures/spectra-10kV.png",
                       "datasets/synthetic-2kv/figures/spectra-30kV.png", "datasets/synthetic-2kv/figures/downcore.png"]),
    ("saliency", [f"experiments/f2/results/{f}-{kv}.png" for f in ("relevance", "saliency-integrated_gradients")
                  for kv in ("10kV", "30kV")]),
    ("latent", ["experiments/p2/results/latent-pca.png"]),
])
def test_the_notebooks_read_two_run_data_and_models(trained, notebook, figures, monkeypatch):
    from test_notebooks import ANALYSIS, QUICK, execute

    for var, value in {"COREMAX_DATA_ROOT": str(trained), "COREMAX_DATASET": "synthetic-2kv",
                       "COREMAX_PRETRAIN": "p2", "COREMAX_FINETUNE": "f2", **QUICK}.items():
        monkeypatch.setenv(var, value)
    execute(ANALYSIS / f"{notebook}.ipynb")
    for figure in figures:
        assert (trained / figure).read_bytes()[:4] == b"\x89PNG", f"{notebook} did not write {figure}"
