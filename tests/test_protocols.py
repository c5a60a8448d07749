"""The study's protocols and what each may read of the test cores (the closed-form heads: test_ridge_heads.py).

- new-cores-spectra: pretraining and the baselines' unsupervised steps read the test cores' spectra and never
  their labels (proved by scrambling every test label: the trained weights do not change).
- new-cores-labels: exactly k labelled rows per test core join training, the same for every method of a seed,
  and the test metrics and the floor leave those rows out.
"""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import train
from coremax import checkpoint as ckpt
from coremax.data.dataset import load_split
from coremax.engine.data import prepare_data
from coremax.engine.labels import core_label_mask
from coremax.baselines import BASELINE_FILE, load_baseline
from coremax.stats.weighting import NEW_CORE_SHARES
from coremax.baselines.pls import Pls
from coremax.eval.floor import floor_metrics
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment


def _scrambled_labels_copy(data_root, tmp_path):
    """A copy of the data root whose test split has every target replaced by nonsense."""
    root = tmp_path / "root"
    shutil.copytree(data_root / "datasets", root / "datasets")
    table = root / "datasets" / "synthetic" / "test.parquet"
    meta = pd.read_parquet(table)
    for t in ("CaCO3", "TOC", "Ca", "Fe", "Si", "K"):
        if t in meta.columns:
            meta[t] = np.random.default_rng(1).uniform(0, 100, len(meta))
    meta.to_parquet(table)
    return root


def _weights(root, name, file="best-model.pth"):
    return ckpt.load(Experiment.open(root, name).checkpoints / file)["model"]


def test_transductive_pretraining_reads_test_spectra_never_labels(tmp_path, data_root):
    test_rows = len(load_split(data_root, "synthetic", "test"))
    plain = prepare_data(data_root, "pretrain", 0, channels=(0, 512))
    with_test = prepare_data(data_root, "pretrain", 0, channels=(0, 512), test_spectra=True)
    assert len(with_test.train) == len(plain.train) + test_rows
    assert not {"CaCO3", "TOC"} & set(with_test.train.frame.columns)  # the labels were dropped on reading
    scrambled = _scrambled_labels_copy(data_root, tmp_path)
    for root in (data_root, scrambled):
        train(root, "tpre", "pretrain", "optim.epochs=1", "data.test_spectra=true")
    a, b = _weights(data_root, "tpre"), _weights(scrambled, "tpre")
    assert all(torch.equal(a[k], b[k]) for k in a)
    read = Experiment.open(data_root, "tpre").provenance()["test_cores_read"]
    assert read["spectra_of"] == sorted(set(load_split(data_root, "synthetic", "test")["core"]))
    assert read["labels"] == []


@pytest.mark.parametrize("method", ["nmf_svr", "pls"])
def test_transductive_baselines_fit_features_on_test_spectra_without_labels(tmp_path, data_root, method):
    from coremax.baselines import BASELINE_FILE, load_baseline

    scrambled = _scrambled_labels_copy(data_root, tmp_path)
    x_test = load_split(data_root, "synthetic", "test")[list(range(2048))].to_numpy(np.float32)
    preds = []
    for root in (data_root, scrambled):
        exp = train(root, f"tb-{method}", "baseline", f'baseline.method="{method}"', "data.test_spectra=true")
        preds.append(load_baseline(root, exp.checkpoints / BASELINE_FILE).predict(x_test))
    assert np.array_equal(preds[0], preds[1])
    plain = train(data_root, f"pb-{method}", "baseline", f'baseline.method="{method}"')
    # The feature map did change: it was fitted on more spectra.
    assert not np.array_equal(load_baseline(data_root, plain.checkpoints / BASELINE_FILE).predict(x_test), preds[0])


def test_test_label_rows_are_k_per_core_and_seeded():
    meta = pd.DataFrame({"core": ["a"] * 6 + ["b"] * 4, "CaCO3": [1, np.nan, 3, 4, 5, 6, 7, np.nan, 9, 10.0],
                         "TOC": [np.nan] * 10})
    m = core_label_mask(meta, ["CaCO3", "TOC"], 2, seed=3)
    assert m.sum() == 4 and m[:6].sum() == 2 and m[6:].sum() == 2 and meta["CaCO3"][m].notna().all()
    assert np.array_equal(m, core_label_mask(meta, ["CaCO3", "TOC"], 2, seed=3))
    assert core_label_mask(meta, ["CaCO3", "TOC"], 0, seed=3).sum() == 0
    assert core_label_mask(meta, ["CaCO3", "TOC"], 9, seed=3).sum() == 8  # a core with fewer: all of its rows


def test_new_core_labels_join_training_and_leave_the_test_metrics(data_root, pretrained):
    test = load_split(data_root, "synthetic", "test")
    targets = ["CaCO3", "TOC"]
    exp = train(data_root, "tl-probe", "finetune", f'finetune.from="{pretrained}"', 'finetune.mode="ridge"',
                "data.test_labels=2", "experiment.seed=4")
    picked = core_label_mask(test, targets, 2, seed=4)
    read = exp.provenance()["test_cores_read"]
    assert read["labels"] == sorted(test["source_file"][picked]) and read["spectra_of"] == []
    head = [json.loads(line) for line in exp.log_file.read_text().splitlines() if '"ridge_head"' in line][0]
    assert all(head[t]["new_core_share"] in NEW_CORE_SHARES for t in targets)  # the baselines' rule, logged
    seen, real_fit = [], Pls.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(args[6])
        return real_fit(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Pls, "fit", recording_fit)
        base = train(data_root, "tl-pls", "baseline", 'baseline.method="pls"', "data.test_labels=2",
                     "experiment.seed=4")
    # the baseline knows which rows are the new cores' samples and chose, per target, how much they weigh
    assert seen[0].dtype == bool and seen[0].sum() == picked.sum()
    chosen = load_baseline(data_root, base.checkpoints / BASELINE_FILE).selected_params()
    assert all(chosen[t]["new_core_share"] in NEW_CORE_SHARES and np.isfinite(chosen[t]["new_core_loo_rmse"])
               for t in targets)
    assert base.provenance()["test_cores_read"]["labels"] == read["labels"]  # every method: the same rows
    metrics = evaluate_experiment(data_root, "tl-probe")
    overall = metrics[metrics["scope"] == "all"].set_index("target")
    for t in targets:
        assert overall.loc[t, "n"] == test[t].notna().sum() - test[t][picked].notna().sum()
    floor = floor_metrics(data_root, "synthetic", targets, exclude=set(test["source_file"][picked]))
    if floor is not None:
        assert (floor[floor["scope"] == "all"].set_index("target")["n"] == overall["n"]).all()
    frame = exp.read_result("test-predictions")
    assert frame["trained_on"].sum() == picked.sum() and frame.loc[frame["trained_on"], targets].isna().all().all()


def test_each_protocol_is_a_sweep_that_says_what_it_reads():
    from coremax import config as configlib
    from coremax.errors import UserError
    from coremax.study import STUDY_DEFAULTS, run_study, study_sweep
    from coremax.sweep import runs

    study = configlib.resolve(None, ['study.pretrain="pre"', 'study.pretrain_config="configs/cpu-pretrain.toml"',
                                     "study.seeds=[0]", "study.budgets=[10]", "study.test_labels=[5, 10]",
                                     'study.methods=["msm-probe", "scratch", "nmf_svr"]',
                                     'study.method_overrides={msm-probe = ["model.head_layers=6"]}'],
                              default_file=STUDY_DEFAULTS)["study"]
    plain = study_sweep(study, "new-cores")
    assert plain["parent"]["name"] == "pre" and "data.test_spectra" not in plain["parent"]["overrides"]
    spectra = study_sweep(study, "new-cores-spectra")
    assert spectra["name"] == "label-budget-spectra" and spectra["parent"]["name"] == "pre-spectra"
    assert spectra["parent"]["overrides"]["data.test_spectra"] is True
    by_name = {r["variant"]: r for r in runs(spectra)}
    assert by_name["nmf_svr"]["overrides"]["data.test_spectra"] is True
    assert by_name["msm-probe"]["overrides"]["finetune.from"] == "pre-spectra"
    assert by_name["msm-probe"]["overrides"]["finetune.mode"] == "ridge"
    assert by_name["msm-probe"]["overrides"]["model.head_layers"] == 6
    # a pretrained run may read the test spectra its pretraining read (finetune.epo); scratch reads none
    assert by_name["msm-probe"]["overrides"]["data.test_spectra"] is True
    assert "data.test_spectra" not in by_name["scratch"]["overrides"]
    assert "model.head_layers" not in by_name["scratch"]["overrides"]
    assert by_name["scratch"]["overrides"]["finetune.from"] == ""
    labels = study_sweep(study, "new-cores-labels")
    assert labels["grid"] == {"data.test_labels": [5, 10], "data.test_label_rows": [""]}  # random depths
    assert labels["overrides"]["data.max_labels"] == 0
    assert labels["parent"]["name"] == "pre-spectra" and len(runs(labels)) == 3 * 2
    both = {**study, "protocol": ["new-cores-spectra", "new-cores"]}  # scratch reads no spectra: it trains once
    assert "scratch" not in study_sweep(both, "new-cores-spectra")["variants"]
    assert "scratch" in study_sweep(both, "new-cores")["variants"] and "scratch" in spectra["variants"]
    with pytest.raises(UserError, match="study.protocol"):
        run_study("unused", {**study, "protocol": ["new-cores", "old-cores"]})
    with pytest.raises(UserError, match="study.method_overrides"):
        study_sweep({**study, "method_overrides": {"msm": ["model.head_layers=6"]}})


def test_the_labels_table_gives_r2_per_core_at_every_k_and_marks_a_core_with_nothing_left():
    from coremax.study import markdown_table

    rows = []
    for k, seed, core, target in itertools.product((5, 20), (0, 1), ("a", "b"), ("CaCO3", "TOC")):
        for method in ("msm", "pls", "floor"):
            gone = core == "b" and k == 20  # core b has at most 20 lab samples: none left to score
            r2 = np.nan if gone else 0.5 + 0.01 * k + (method == "pls") * 0.1
            rows.append({"protocol": "new-cores-labels", "budget": 0, "seed": seed, "k_per_core": k,
                         "selection": "random", "n_labels": 300, "method": method, "scope": core, "target": target,
                         "n_test": 0 if gone else 9, "r2": r2, "rmse": np.nan if gone else 1.0})
        if core == "a":  # the overall rows
            rows += [{**r, "scope": "all"} for r in rows[-3:]]
    md = markdown_table(pd.DataFrame(rows), "new-cores-labels")
    assert "R² per test core with each k per test core" in md and "| target | core | k | msm | pls |" in md
    assert "| TOC | a | 5 | 0.550 | 0.650 |" in md and "| CaCO3 | a | 20 | 0.700 | 0.800 |" in md  # every k
    assert "| CaCO3 | b | 20 | – | – |" in md and "nan" not in md and "no lab sample of that core left" in md


def test_the_standing_table_sets_the_best_msm_method_against_the_best_classical_one():
    from coremax.study_tables import method_family, standing_table

    assert [method_family(m) for m in ("msm-probe-elements", "scratch", "mlc", "pls-elements", "floor")] == \
        ["msm", "", "classical", "classical", ""]
    rmse = {("msm", 10): 6.0, ("msm-probe", 10): 5.5, ("scratch", 10): 1.0, ("mlc", 10): 5.8, ("pls", 10): 7.0,
            ("msm", 0): 4.0, ("msm-probe", 0): 4.4, ("scratch", 0): 1.0, ("mlc", 0): 3.9, ("pls", 0): 3.95}
    rows = [{"protocol": "new-cores", "seed": seed, "n_labels": n or 301, "method": m, "scope": "all",
             "target": "TOC", "r2": 0.5, "rmse": v + 0.1 * seed} for (m, n), v in rmse.items() for seed in (0, 1)]
    md = standing_table(pd.DataFrame(rows), "new-cores")
    assert "| TOC | 10 | msm-probe 5.55 | mlc 5.85 | MSM |" in md  # scratch (1.0) is neither family
    assert "| TOC | 301 | msm 4.05 | mlc 3.95 | classical |" in md
    assert standing_table(pd.DataFrame([r for r in rows if r["method"] != "mlc" and r["method"] != "pls"])) == ""


def test_a_study_without_the_new_cores_protocol_writes_its_own_table(data_root):
    from coremax import config as configlib
    from coremax.study import STUDY_DEFAULTS, run_study

    study = configlib.resolve(None, ['study.name="only-spectra"', 'study.protocol=["new-cores-spectra"]',
                                     'study.methods=["pls"]', "study.budgets=[20]", "study.seeds=[0]"],
                              default_file=STUDY_DEFAULTS)["study"]
    summary = run_study(data_root, study, log=lambda *a: None)
    assert set(summary["protocol"]) == {"new-cores-spectra"}
    exp = Experiment.open(data_root, "only-spectra")
    assert exp.status() == "completed" and "Protocol `new-cores-spectra`" in (exp.results / "label-budget.md").read_text()
    assert Experiment.open(data_root, "only-spectra-spectra-pls-p00-s0").config()["data"]["test_spectra"]


def test_the_spectra_protocol_reuses_the_scratch_runs_of_new_cores(data_root):
    from conftest import FAST
    from coremax import config as configlib
    from coremax.study import STUDY_DEFAULTS, run_study

    study = configlib.resolve(None, ['study.name="shared"', 'study.protocol=["new-cores-spectra", "new-cores"]',
                                     'study.methods=["scratch"]', "study.budgets=[20]", "study.seeds=[0]"],
                              default_file=STUDY_DEFAULTS)["study"]
    study["overrides"] = FAST + ["optim.epochs=1"]
    summary = run_study(data_root, study, log=lambda *a: None)
    rows = summary[summary["method"] == "scratch"]
    assert set(rows["protocol"]) == {"new-cores", "new-cores-spectra"} and set(rows["experiment"]) == {
        "shared-scratch-p00-s0"}  # one run, in both tables
    assert Experiment.state(data_root, "shared-spectra-scratch-p00-s0") == "absent"
    spectra, plain = (rows[rows["protocol"] == p].set_index(["scope", "target"])["rmse"]
                      for p in ("new-cores-spectra", "new-cores"))
    assert spectra.equals(plain)
