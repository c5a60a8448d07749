"""The study's protocols and what each may read of the test cores, and the closed-form head on a frozen encoder.

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

from conftest import interrupted_then_resumed, resolved, train
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


def test_ridge_head_keeps_the_encoder_and_fits_the_head_in_closed_form(data_root, pretrained):
    exp = train(data_root, "ridge1", "finetune", f'finetune.from="{pretrained}"', 'finetune.mode="ridge"',
                "data.max_labels=20")
    state = ckpt.load(exp.checkpoints / "best-model.pth")
    parent = _weights(data_root, pretrained)
    enc = {k: v for k, v in state["model"].items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, parent[k]) for k, v in enc.items())  # bit-identical encoder
    assert state["model"]["head.weight"].abs().sum() > 0
    history = exp.read_result("history")
    assert len(history) == 1 and np.isfinite(history["val_nrmse"].iloc[0])
    assert exp.provenance()["status"] == "completed"
    assert not evaluate_experiment(data_root, "ridge1").empty
    # LP-FT starts full fine-tuning from that head: the encoder moves.
    lpft = train(data_root, "lpft1", "finetune", f'finetune.from="{pretrained}"', 'finetune.mode="lp_ft"',
                 "data.max_labels=20", "optim.epochs=2")
    moved = ckpt.load(lpft.checkpoints / "last.pth")["model"]
    assert any(not torch.equal(moved[k], parent[k]) for k in enc)


def test_ridge_path_matches_the_normal_equations():
    from coremax.engine.probe import ridge_path

    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(30, 5)), rng.normal(size=30)
    ws, bs = ridge_path(f, y, np.array([0.1]))
    fc = f - f.mean(0)
    scale = (np.linalg.svd(fc, compute_uv=False) ** 2).sum() / 5
    w = np.linalg.solve(fc.T @ fc + 0.1 * scale * np.eye(5), fc.T @ (y - y.mean()))
    assert np.allclose(ws[0], w) and np.isclose(bs[0], y.mean() - f.mean(0) @ w)


def test_the_ridge_heads_leave_one_out_equals_refitting_without_the_row():
    from coremax.engine.probe import ALPHAS, ridge_path

    rng = np.random.default_rng(2)
    for n, d in [(40, 10), (30, 60)]:  # more rows than features, and fewer (the fit nearly interpolates)
        f = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        y, w = f @ rng.normal(size=d) + rng.normal(size=n), np.r_[np.ones(n - 5), np.full(5, 7.0)]
        _, _, loo = ridge_path(f, y, ALPHAS, w, loo=True)
        mu = w @ f / w.sum()
        penalty = ALPHAS * (np.linalg.svd((f - mu) * np.sqrt(w)[:, None], compute_uv=False) ** 2).sum() / d
        for i in (0, n - 1):  # a row of weight 1 and one of weight 7, left out; the others keep their weights
            keep = np.arange(n) != i
            fk, yk, wk = f[keep], y[keep], w[keep]
            mk, yb = wk @ fk / wk.sum(), wk @ yk / wk.sum()
            for k, lam in enumerate(penalty):
                beta = np.linalg.solve((fk - mk).T @ ((fk - mk) * wk[:, None]) + lam * np.eye(d),
                                       (fk - mk).T @ (wk * (yk - yb)))
                assert np.isclose(loo[i, k], yb + (f[i] - mk) @ beta, rtol=1e-6, atol=1e-6)


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


def test_weighted_ridge_equals_repeated_rows_and_the_head_weighs_new_core_samples_as_leave_one_out_says():
    from coremax.engine.probe import fit_ridge, ridge_path
    from coremax.stats.weighting import share_weights

    rng = np.random.default_rng(1)
    f, y = rng.normal(size=(12, 4)), rng.normal(size=12)
    w = np.array([1.0] * 10 + [3.0, 3.0])
    ws, bs = ridge_path(f, y, np.array([0.0]), w)
    rep = np.r_[np.arange(12), [10, 10, 11, 11]]
    wr, br = ridge_path(f[rep], y[rep], np.array([0.0]))
    assert np.allclose(ws, wr) and np.allclose(bs, br)
    new = np.array([False] * 8 + [True] * 2)
    assert np.array_equal(share_weights(new, 1.0), [1.0] * 8 + [4.0, 4.0])
    assert np.array_equal(share_weights(new, 0.0), np.ones(10))
    # 200 rows of other cores and 10 of a new one whose values sit 3 units higher (a shift its features do not
    # show): leave-one-out weighs them and the head then fits them; without new rows nothing is chosen
    f, f_va = rng.normal(size=(210, 6)), rng.normal(size=(50, 6))
    beta = rng.normal(size=6)
    y, y_va = f @ beta + rng.normal(0, 0.3, 210), f_va @ beta + rng.normal(0, 0.3, 50)
    new = np.arange(210) >= 200
    y[new] += 3.0
    plain_w, plain_b, plain = fit_ridge(f, y, f_va, y_va, np.zeros(210, bool))
    weight, bias, chosen = fit_ridge(f, y, f_va, y_va, new)
    assert "new_core_share" not in plain and chosen["new_core_share"] > 0 and np.isfinite(chosen["new_core_loo_nrmse"])
    gap = lambda wt, b: np.abs(f[new] @ wt + b - y[new]).mean()
    assert gap(weight, bias) < 0.7 * gap(plain_w, plain_b)


def test_the_scanner_blind_head_ignores_the_shift_a_new_scanner_brings():
    from coremax.engine.probe import fit_ridge, setting_directions

    rng = np.random.default_rng(1)
    mix, beta = rng.normal(size=(3, 8)), np.array([2.0, -1.0, 0.5])
    # what each of two scanner settings adds to every embedding: the second looks partly like more of the first
    # component of the composition
    shift = np.stack([np.zeros(8), mix[0] + rng.normal(0, 1.0, 8)])

    def rows(n, setting):  # n spectra of random compositions z under one setting, and their target
        z = rng.normal(size=(n, 3))
        return z @ mix + shift[setting] + rng.normal(0, 0.05, (n, 8)), z @ beta
    (f, y), (f_va, y_va) = rows(120, 0), rows(60, 1)  # labelled cores from one scanner, validation from the other
    (u0, _), (u1, _) = rows(500, 0), rows(500, 1)  # unlabelled spectra of many cores under each
    blind = setting_directions(np.r_[u0, u1], np.array(["A"] * 500 + ["B"] * 500))
    assert blind.shape == (8, 1) and np.isclose(abs(blind[:, 0] @ shift[1]) / np.linalg.norm(shift[1]), 1, atol=0.01)
    assert setting_directions(u0, np.array(["A"] * 500)).shape == (8, 0)  # one setting: nothing to remove
    plain_w, plain_b, plain = fit_ridge(f, y, f_va, y_va, np.zeros(120, bool))
    weight, bias, chosen = fit_ridge(f, y, f_va, y_va, np.zeros(120, bool), blind)
    assert "epo" not in plain and chosen["epo"] is True
    assert np.allclose(weight @ blind, 0, atol=1e-9)  # so the raw embeddings give the blind head's predictions
    err = lambda wt, b: np.sqrt(np.mean((f_va @ wt + b - y_va) ** 2))
    assert err(weight, bias) < 0.2 * err(plain_w, plain_b)


def test_a_baseline_blind_to_the_scanner_is_chosen_when_the_validation_rows_prefer_it_and_survives_its_file(tmp_path):
    rng = np.random.default_rng(1)
    mix, beta = rng.normal(size=(3, 8)), np.array([2.0, -1.0, 0.5])
    shift = np.stack([np.zeros(8), mix[0] + rng.normal(0, 1.0, 8)])

    def rows(n, setting):  # counts whose log1p is composition + the setting's shift (what PLS reads)
        z = rng.normal(size=(n, 3))
        return np.expm1(5 + z @ mix + shift[setting] + rng.normal(0, 0.05, (n, 8))), (z @ beta)[:, None]
    (x, y), (x_va, y_va) = rows(120, 0), rows(60, 1)  # labelled cores from one scanner, validation from the other
    (u0, _), (u1, _) = rows(500, 0), rows(500, 1)
    plain = Pls().fit(x, y, x_va, y_va, ["CaCO3"])
    model = Pls().fit(x, y, x_va, y_va, ["CaCO3"], settings=(np.r_[u0, u1], ["A"] * 500 + ["B"] * 500))
    assert "epo" not in plain.selected["CaCO3"] and model.selected["CaCO3"]["epo"] is True
    assert model.selected["CaCO3"]["val_rmse"] < 0.5 * plain.selected["CaCO3"]["val_rmse"]
    path = model.save(tmp_path / BASELINE_FILE)
    assert np.array_equal(load_baseline(tmp_path, path).predict(x_va), model.predict(x_va))
    assert np.isclose(np.sqrt(np.mean((model.predict(x_va) - y_va) ** 2)), model.selected["CaCO3"]["val_rmse"])


def test_the_scanner_blind_head_draws_unlabelled_spectra_per_setting_and_says_what_it_read(data_root, pretrained):
    from coremax.engine.data import setting_spectra
    from coremax.errors import UserError

    data = resolved()["data"]
    one = setting_spectra(data_root, 0, data, 7)
    assert one.y is None and not {"CaCO3", "TOC"} & set(one.frame.columns)
    counts = one.frame["scanner"].value_counts()
    assert (counts <= 7).all() and len(counts) == one.frame["scanner"].nunique()
    assert one.frame.equals(setting_spectra(data_root, 0, data, 7).frame)  # seeded
    test_cores = set(load_split(data_root, "synthetic", "test")["core"])
    assert not test_cores & set(setting_spectra(data_root, 0, data, 10 ** 6).frame["core"])
    every = setting_spectra(data_root, 0, {**data, "test_spectra": True}, 10 ** 6)
    assert test_cores <= set(every.frame["core"]) and not {"CaCO3", "TOC"} & set(every.frame.columns)
    exp = train(data_root, "epo1", "finetune", f'finetune.from="{pretrained}"', 'finetune.mode="ridge"',
                "finetune.epo=true", "data.test_spectra=true")
    chosen = [json.loads(line) for line in exp.log_file.read_text().splitlines() if '"ridge_head"' in line][0]
    assert all(isinstance(chosen[t]["epo"], bool) for t in ("CaCO3", "TOC"))
    assert exp.provenance()["test_cores_read"]["spectra_of"] == sorted(test_cores)
    base = train(data_root, "epo-pls", "baseline", 'baseline.method="pls"', "baseline.epo=true")
    done = [json.loads(line) for line in base.log_file.read_text().splitlines() if '"baseline_done"' in line][0]
    assert all(isinstance(done["selected"][t]["epo"], bool) for t in ("CaCO3", "TOC"))
    assert not evaluate_experiment(data_root, "epo-pls").empty
    with pytest.raises(UserError, match="finetune.epo"):
        train(data_root, "epo2", "finetune", f'finetune.from="{pretrained}"', "finetune.epo=true")
    assert Experiment.state(data_root, "epo2") == "absent"


def test_the_rule_pools_validation_errors_with_the_new_rows_left_out():
    from coremax.stats.weighting import NEW_CORE_SHARES, choose_share

    y = np.zeros(6)
    new = np.array([False] * 4 + [True] * 2)
    calls = []

    def fit(w):  # two candidates: "a" a little better on the validation rows, "b" far better on the new rows
        calls.append(w)
        return ["a", "b"], np.array([1.0, 1.5]), lambda i: np.array([1.0, 0.0])
    assert choose_share(new, y, fit) == ("b", 0.0, 0.0)  # a: 1 + 1, b: 1.5 + 0; ties keep the first share
    assert len(calls) == len(NEW_CORE_SHARES) and calls[0] is None and calls[-1][-1] == 2.0  # 4 rows / 2 new rows
    assert choose_share(np.zeros(6, bool), y, fit) == ("a", None, None)  # no new rows: the validation rows decide


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


def test_the_spread_of_the_settings_means_counts_what_moves_one_setting_against_the_others():
    from coremax.stats.epo import mean_spread

    shift = torch.tensor([0.0, 1.0, -0.5])[:, None, None]  # how far each of three settings' predictions moved
    exact = float(((shift - shift.mean()) ** 2).sum())
    assert np.isclose(float(mean_spread(shift.expand(3, 16, 2))), 2 * exact)  # two targets
    assert float(mean_spread(torch.full((3, 16, 1), 4.0))) == 0  # every setting moved alike: the scanner is still unseen


def test_fine_tuning_keeps_the_blind_head_blind_and_resumes_exactly(data_root, pretrained, monkeypatch):
    from coremax.errors import UserError
    from coremax.stages import finetune as stages

    def every_target_blind(*a):  # the tiny archive's validation rows choose the plain head: say both chose blind
        chosen, head = fit_ridge_head(*a)
        return {t: {**c, "epo": True} for t, c in chosen.items()}, head
    fit_ridge_head = stages.fit_ridge_head
    monkeypatch.setattr(stages, "fit_ridge_head", every_target_blind)
    args = (f'finetune.from="{pretrained}"', 'finetune.mode="lp_ft"', "finetune.epo=true", "optim.epochs=3",
            "optim.blr=1e-3")
    plain = train(data_root, "pen0", "finetune", *args)
    exp = train(data_root, "pen-whole", "finetune", *args, "finetune.epo_penalty=100.0")
    chosen = [json.loads(line) for line in exp.log_file.read_text().splitlines() if '"ridge_head"' in line][0]
    blind = ckpt.load(exp.checkpoints / "last.pth")["epo_blind"]
    assert blind == [t for t in ("CaCO3", "TOC") if chosen[t]["epo"]] == ["CaCO3", "TOC"]
    a, b = (e.read_result("history")["train_loss"].to_numpy() for e in (plain, exp))
    assert not np.allclose(a, b)  # the penalty is in the loss
    interrupted_then_resumed(data_root, "pen-cut", "finetune", *args, "finetune.epo_penalty=100.0",
                             monkeypatch=monkeypatch)
    np.testing.assert_array_equal(b, Experiment.open(data_root, "pen-cut").read_result("history")["train_loss"])
    for bad in ('finetune.mode="ridge"', "finetune.epo=false"):
        with pytest.raises(UserError, match="finetune.epo_penalty"):
            train(data_root, "pen-bad", "finetune", *args, "finetune.epo_penalty=1.0", bad)
        assert Experiment.state(data_root, "pen-bad") == "absent"
