"""The closed-form heads on a frozen encoder: the ridge head and its path, leave-one-out, the weights of new-core
samples, and the heads (and baselines) blind to the scanner settings."""

import json

import numpy as np
import pytest
import torch

from conftest import interrupted_then_resumed, resolved, train
from coremax import checkpoint as ckpt
from coremax.data.dataset import load_split
from coremax.baselines import BASELINE_FILE, load_baseline
from coremax.baselines.pls import Pls
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment


def test_ridge_head_keeps_the_encoder_and_fits_the_head_in_closed_form(data_root, pretrained):
    exp = train(data_root, "ridge1", "finetune", f'finetune.from="{pretrained}"', 'finetune.mode="ridge"',
                "data.max_labels=20")
    state = ckpt.load(exp.checkpoints / "best-model.pth")
    parent = ckpt.load(Experiment.open(data_root, pretrained).checkpoints / "best-model.pth")["model"]
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
