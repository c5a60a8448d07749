"""scripts/test.py, baselines through the experiment folder, predict.py, and the label-budget study."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, train
from coremax.data.dataset import load_split
from coremax.errors import UserError
from coremax.stats.metrics import FLAG_SCOPES
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment


def test_finetune_test_outputs_only_test_cores(data_root, finetuned):
    metrics = evaluate_experiment(data_root, finetuned)
    exp = Experiment.open(data_root, finetuned)
    preds = exp.read_result("test-predictions")
    test_df = load_split(data_root, "synthetic", "test")
    train_cores = set(load_split(data_root, "synthetic", "train")["core"])
    assert set(preds["core"]) == set(test_df["core"]) and not set(preds["core"]) & train_cores
    assert len(preds) == len(test_df)  # every scanned spectrum gets a prediction (the profile line)
    overall = metrics[metrics["scope"] == "all"].set_index("target")
    assert set(overall.index) == {"CaCO3", "TOC"}
    assert overall.loc["CaCO3", "n"] == test_df["CaCO3"].notna().sum()
    for col in ("r2", "rmse", "mae", "bias", "coverage"):
        assert np.isfinite(overall.loc["CaCO3", col])
    assert set(metrics["scope"]) - set(FLAG_SCOPES) == {"all"} | set(test_df["core"])
    assert ((preds["CaCO3_pred"] >= 0) & (preds["CaCO3_pred"] <= 100)).all()
    assert (preds["CaCO3_lo"] <= preds["CaCO3_pred"]).all() and (preds["CaCO3_hi"] >= preds["CaCO3_pred"]).all()
    for f in ["test-pred-vs-measured.png"] + [f"test-profile-{c}.png" for c in test_df["core"].unique()]:
        assert (exp.results / f).stat().st_size > 1000
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    assert any(e["event"] == "test" for e in events)
    again = evaluate_experiment(data_root, finetuned)
    pd.testing.assert_frame_equal(metrics, again)


def test_pretrain_test_reports_reconstruction(data_root, pretrained):
    m = evaluate_experiment(data_root, pretrained).iloc[0]
    assert m["mse_masked"] > 0 and m["mse_all"] > 0 and m["r2_all"] <= 1
    assert (Experiment.open(data_root, pretrained).results / "test-reconstructions.png").is_file()


def test_copied_data_root(tmp_path, data_root, finetuned, pretrained):
    other = tmp_path / "elsewhere"
    shutil.copytree(data_root / "datasets" / "synthetic", other / "datasets" / "synthetic")
    for name in (pretrained, finetuned):
        shutil.copytree(data_root / "experiments" / name, other / "experiments" / name)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "test.py"), "--experiment", finetuned,
                          "--data-root", str(other)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    evaluate_experiment(data_root, finetuned)  # here too: no other test need have run first (pytest -n)
    here = Experiment.open(data_root, finetuned).read_result("test-metrics")
    there = Experiment.open(other, finetuned).read_result("test-metrics")
    pd.testing.assert_frame_equal(here, there)


def test_missing_experiment_is_one_sentence(data_root):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "test.py"), "--experiment", "nope",
                          "--data-root", str(data_root)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: No experiment named 'nope'") and "Traceback" not in out.stderr


@pytest.mark.parametrize("method", ["nmf_svr", "pls"])
def test_baselines_share_the_neural_output_format(data_root, finetuned, method):
    name = f"base-{method}"
    train(data_root, name, "baseline", f'baseline.method="{method}"', "baseline.nmf_svr.n_components=4")
    assert Experiment.open(data_root, name).provenance()["status"] == "completed"
    metrics = evaluate_experiment(data_root, name)
    neural = Experiment.open(data_root, finetuned)
    assert list(metrics.columns) == list(neural.read_result("test-metrics").columns)
    exp = Experiment.open(data_root, name)
    assert list(exp.read_result("test-predictions").columns) == \
        list(neural.read_result("test-predictions").columns)
    assert metrics.set_index(["target", "scope"]).loc[("CaCO3", "all"), "r2"] > 0.5


def test_predict_new_cores_flags_other_kv(tmp_path, data_root, finetuned):
    from coremax.data.spe import read_spe, write_spe

    raw = data_root / "datasets" / "external" / "synthetic" / "raw"
    test_core = load_split(data_root, "synthetic", "test")["core"].iloc[0]
    new = tmp_path / "new"
    files = sorted((raw / test_core).rglob("*.spe"))[:6]
    for f in files:
        dest = new / f.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    # One spectrum re-labelled as measured at 30 kV: it must be flagged, not silently mixed in.
    meta, counts = read_spe(files[0])
    odd = new / test_core / "Run 2 at  30kV" / files[0].name.replace("10kV", "30kV")
    odd.parent.mkdir(parents=True, exist_ok=True)
    write_spe(odd, counts[: meta["spectrum_length"]], {**meta, "kv": 30.0})
    out_csv = tmp_path / "pred.csv"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), "--experiment", finetuned,
                          "--data-root", str(data_root), "--raw", str(new), "--out", str(out_csv)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out_csv)
    assert len(df) == len(files) + 1
    for col in ("core", "depth_mm", "CaCO3_pred", "CaCO3_lo", "CaCO3_hi", "TOC_pred", "flag_kv", "flag_ood"):
        assert col in df.columns
    assert df["flag_kv"].sum() == 1 and bool(df.loc[df["kv"] == 30, "flag_kv"].iloc[0])
    # the lab's element intensities beside the predictions, whatever the model reads
    assert {"Ca_area", "Ca_sd", "Fe_area", "chi2", "throughput_cps"} <= set(df.columns)
    assert (df.loc[df["kv"] == 10, "Ca_area"] > 0).all()
    assert "kV" in res.stderr + res.stdout
    assert (tmp_path / f"pred-profile-{test_core}.png").is_file()


def test_study_refuses_unknown_key(tmp_path):
    from coremax.study import STUDY_DEFAULTS
    from coremax import config as configlib

    f = tmp_path / "s.toml"
    f.write_text("[study]\nbudget = [1]\n")
    with pytest.raises(UserError, match="did you mean study.budgets"):
        configlib.resolve(f, default_file=STUDY_DEFAULTS)


def test_the_study_is_a_sweep_over_methods_budgets_and_seeds():
    from coremax import config as configlib
    from coremax.study import STUDY_DEFAULTS, study_sweep
    from coremax.sweep import runs

    study = configlib.resolve(None, ['study.pretrain="pre"', "study.seeds=[0, 1]", "study.budgets=[10, 0]"],
                              default_file=STUDY_DEFAULTS)["study"]
    sweep = study_sweep(study)
    assert sweep["grid"] == {"data.max_labels": [10, 0]} and sweep["test"] and not sweep["parent"]
    plan = runs(sweep)
    assert len(plan) == 2 * 2 * 4
    names = {r["name"] for r in plan}
    assert len(names) == len(plan) and "label-budget-msm-p01-s1" in names and "label-budget-nmfsvr-p00-s0" in names
    msm = next(r for r in plan if r["name"] == "label-budget-msm-p00-s1")
    assert msm["overrides"]["finetune.from"] == "pre" and msm["overrides"]["experiment.seed"] == 1
    assert msm["overrides"]["data.max_labels"] == 10
    scratch = next(r for r in plan if r["name"] == "label-budget-scratch-p00-s1")
    assert scratch["overrides"]["finetune.from"] == ""
    with pytest.raises(UserError, match="study.methods"):
        study_sweep({**study, "methods": ["magic"]})


def test_label_budget_study_trains_its_pretraining_and_writes_its_table(tmp_path, data_root):
    """One command reproduces the table: the study is a sweep whose parent, the pretraining, is trained from
    study.pretrain_config; its table has every method and budget, per test core too, and the floor."""
    pre_cfg = tmp_path / "pre.toml"
    pre_cfg.write_text('[optim]\nepochs = 1\n[model]\npatch_size = 64\n[runtime]\ndevice = "cpu"\n')
    study = tmp_path / "study.toml"
    study.write_text(f"""[study]
name = "study"
pretrain = "study-pre"
pretrain_config = "{pre_cfg}"
budgets = [20, 0]
seeds = [0]
methods = ["msm", "pls"]
overrides = ["optim.epochs=1", "model.patch_size=64", "optim.batch_size=32", "runtime.log_interval_s=0.0"]
""")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "label_budget.py"), "--config", str(study),
                          "--data-root", str(data_root), "--jobs", "2", "--docs", str(tmp_path / "docs" / "study.md")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    page = (tmp_path / "docs" / "study.md").read_text()  # the study writes its own docs page, dated, with its command
    assert page.startswith("# Label-budget study\n\nMade on ") and f"--config {study}" in page and "at commit " in page
    assert "![label-budget-new-cores](study-new-cores.png)" in page
    assert (tmp_path / "docs" / "study-new-cores.png").is_file()
    assert Experiment.open(data_root, "study-pre").provenance()["status"] == "completed"
    assert Experiment.open(data_root, "study-msm-p00-s0").provenance()["parent"]["experiment"] == "study-pre"
    results = data_root / "experiments" / "study" / "results"
    table = pd.read_csv(results / "label-budget.csv")
    overall = table[(table["scope"] == "all") & (table["method"] != "floor")]
    assert len(overall) == 2 * 2 * 2  # methods x budgets x targets
    assert set(table["scope"]) - {"all"} == set(load_split(data_root, "synthetic", "test")["core"])  # per core too
    n_all = len(load_split(data_root, "synthetic", "train").dropna(subset=["CaCO3", "TOC"], how="all"))
    assert sorted(overall["n_labels"].unique()) == [20, n_all]
    assert (results / "label-budget-new-cores.png").is_file() and (results / "label-budget.pkl").is_file()
    markdown = (results / "label-budget.md").read_text()
    assert markdown in page
    assert "Protocol `new-cores`" in markdown and "| TOC | 20 |" in markdown and "| msm | pls | floor |" in markdown
    floor = table[(table["method"] == "floor") & (table["scope"] == "all")]
    assert set(floor["target"]) == {"CaCO3", "TOC"} and floor["rmse"].notna().all()


def test_test_refuses_a_changed_model_a_rebuilt_data_set_and_an_unfinished_run(tmp_path, data_root, finetuned):
    from coremax.data.dataset import build_dataset, load_info

    root = tmp_path / "root"
    shutil.copytree(data_root / "datasets", root / "datasets")
    shutil.copytree(data_root / "experiments" / finetuned, root / "experiments" / finetuned)
    exp = Experiment.open(root, finetuned)
    assert not evaluate_experiment(root, finetuned).empty
    best = exp.checkpoints / "best-model.pth"
    original = best.read_bytes()
    best.write_bytes(original + b"\0")
    with pytest.raises(UserError, match="not the file"):
        evaluate_experiment(root, finetuned)
    best.write_bytes(original)
    # The data set rebuilt with other test cores: a training core would now be scored as "test".
    source = root / "datasets" / "external" / "synthetic"
    other = sorted(set(load_info(root, "synthetic")["cores"]["train"]))[:1]
    build_dataset(root, "synthetic", raw=source / "raw", bulk=source / "bulk.csv", test_cores=other, overwrite=True)
    with pytest.raises(UserError, match="changed since"):
        evaluate_experiment(root, finetuned)
    allowed = evaluate_experiment(root, finetuned, allow_changed_data=True)  # on request, and recorded
    assert set(allowed["data_changed"]) == {"test-00000.npy, test-elements.parquet, test.parquet"}
    exp.set_status("failed")
    with pytest.raises(UserError, match="did not complete"):
        evaluate_experiment(root, finetuned)
