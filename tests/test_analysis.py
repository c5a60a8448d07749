"""The analysis helpers behind the notebooks: lines and energies, peak areas, the experiments table, saliency,
embeddings and linear probes, and the figures they write."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from coremax.analysis import (emission_lines, embeddings, energy_axis, gather_experiments, linear_probe, pca,
                              peak_areas, plot_downcore, plot_embeddings, plot_metric_vs, plot_saliency,
                              plot_spectra, plot_target_histograms, saliency, training_curves)
from coremax.data.dataset import load_info, load_split, spectra_array
from coremax.data.simulate import SCANNERS
from coremax.data.transforms import instance_normalize, log_transform
from coremax.errors import UserError
from coremax.eval.predictor import load_network
from coremax.experiment import Experiment
from coremax.models import Regressor

PNG = b"\x89PNG"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:4] == PNG


# -- lines, energies, peak areas ------------------------------------------------------------------------------------
def test_emission_line_energies_match_known_values():
    lines = emission_lines(["Ca", "Fe", "Ba", "Sr", "Al"], kv=10.0).set_index(["element", "line"])["energy_kev"]
    assert lines["Ca", "Ka"] == pytest.approx(3.69, abs=0.01)
    assert lines["Ca", "Kb"] == pytest.approx(4.01, abs=0.01)
    assert lines["Fe", "Ka"] == pytest.approx(6.40, abs=0.01)
    assert lines["Ba", "La"] == pytest.approx(4.47, abs=0.01)
    assert lines["Al", "Ka"] == pytest.approx(1.49, abs=0.01)
    # Sr K (edge 16.1 keV) cannot be excited at 10 kV; its L-alpha can.
    assert ("Sr", "Ka") not in lines.index and ("Sr", "La") in lines.index
    assert ("Sr", "Ka") in emission_lines(["Sr"], kv=20.0).set_index(["element", "line"]).index
    assert lines.is_monotonic_increasing
    with pytest.raises(UserError):
        emission_lines(["Xx"])


def test_energy_axis_nominal_info_and_scanner():
    nominal = energy_axis()
    assert nominal.shape == (2048,) and nominal[0] == pytest.approx(0.01) and nominal[1] - nominal[0] == \
        pytest.approx(0.02)
    assert energy_axis({"spectrum_length": 1024}).shape == (1024,)
    head = SCANNERS[1]
    axis = energy_axis(head.head + " | 0.6 mA | 20 s | No-Filter | slit 12")
    assert axis[10] == pytest.approx(head.offset_kev + head.gain_kev * 10.5)
    assert energy_axis(head, length=4)[3] == pytest.approx(head.offset_kev + head.gain_kev * 3.5)
    assert energy_axis(gain_kev=0.01, offset_kev=0.1, length=3).tolist() == pytest.approx([0.105, 0.115, 0.125])
    with pytest.raises(UserError):
        energy_axis("some other scanner")


def _gauss(energy, centre, height, sigma=0.06):
    return height * np.exp(-0.5 * ((energy - centre) / sigma) ** 2)


def test_peak_areas_grow_with_counts_and_ignore_flat_background():
    energy = energy_axis(length=600)
    background = np.full(600, 50.0)
    small = background + _gauss(energy, 3.69, 100.0)
    big = background + _gauss(energy, 3.69, 400.0)
    areas = peak_areas(np.stack([background, small, big]), energy, ["Ca", "Fe"])
    assert list(areas.columns) == ["Ca", "Fe"]
    assert areas.loc[0, "Ca"] == pytest.approx(0.0, abs=1e-9)        # flat background only
    assert 0 < areas.loc[1, "Ca"] < areas.loc[2, "Ca"]
    assert areas.loc[2, "Ca"] == pytest.approx(4 * areas.loc[1, "Ca"], rel=0.05)
    assert abs(areas.loc[2, "Fe"]) < 1e-6 * areas.loc[2, "Ca"] + 1e-9  # no Fe peak
    # Twice the counts (twice the live time) gives twice the area.
    assert peak_areas(2 * big, energy, ["Ca"]).loc[0, "Ca"] == pytest.approx(2 * areas.loc[2, "Ca"])
    with pytest.raises(UserError):
        peak_areas(np.ones((2, 10)), energy, ["Ca"])


def test_peak_areas_on_real_spectra_follow_carbonate(data_root):
    df = load_split(data_root, "synthetic", "train")
    df = df[df["CaCO3"].notna()]
    info = load_info(data_root, "synthetic")
    areas = peak_areas(spectra_array(df), energy_axis(info), ["Ca"], kv=info["kv"])
    # Within one scanner setting, Ca counts rise with carbonate content.
    one = (df["scanner"] == df["scanner"].iloc[0]).to_numpy()
    r = np.corrcoef(areas["Ca"].to_numpy()[one], df["CaCO3"].to_numpy()[one])[0, 1]
    assert r > 0.5


def test_spectrum_and_overview_figures(data_root, tmp_path):
    info = load_info(data_root, "synthetic")
    splits = {s: load_split(data_root, "synthetic", s) for s in ("train", "test")}
    energy = energy_axis(info)
    x = spectra_array(splits["train"].iloc[:3])
    assert plot_spectra(x, energy, tmp_path / "a" / "spectra.png", labels=["a", "b", "c"]) == \
        tmp_path / "a" / "spectra.png"
    assert is_png(tmp_path / "a" / "spectra.png")
    assert is_png(plot_target_histograms(splits, ["CaCO3", "TOC"], tmp_path / "hist.png"))
    frame = pd.concat([splits["train"][["core", "depth_mm", "CaCO3"]].reset_index(drop=True),
                       peak_areas(spectra_array(splits["train"]), energy, ["Ca"])], axis=1)
    assert is_png(plot_downcore(frame, ["CaCO3", "Ca"], tmp_path / "down.png"))
    with pytest.raises(UserError):
        plot_downcore(frame, ["Fe"], tmp_path / "down2.png")
    assert not list(tmp_path.glob("**/*.tmp"))


# -- the experiments table -----------------------------------------------------------------------------------------
def test_gather_experiments_finds_runs_and_skips_junk(data_root, pretrained, finetuned, tmp_path):
    from coremax.eval.run import evaluate_experiment

    evaluate_experiment(data_root, finetuned)  # test metrics for the table (other tests do the same)
    # A copy of the fixture experiments beside junk, so the shared data root stays clean.
    experiments = tmp_path / "experiments"
    for name in (pretrained, finetuned):
        shutil.copytree(data_root / "experiments" / name, experiments / name,
                        ignore=shutil.ignore_patterns("checkpoints"))
    (experiments / "not-an-experiment").mkdir()
    (experiments / "not-an-experiment" / "notes.txt").write_text("junk")
    (experiments / "stray-file.txt").write_text("junk")
    half = experiments / "half-written"           # a run that died before writing provenance or results
    (half / "results").mkdir(parents=True)
    (half / "config.toml").write_text('[experiment]\nstage = "finetune"\n[model]\nmask_ratio = 0.5\n')
    (half / "results" / "history.pkl").write_bytes(b"truncated pickle")
    broken = experiments / "broken-config"
    broken.mkdir()
    (broken / "config.toml").write_text("[experiment\nstage = ")

    table = gather_experiments(tmp_path).set_index("name")
    assert set(table.index) == {pretrained, finetuned, "half-written", "broken-config"}
    assert table.loc["broken-config", "status"] == "unreadable"
    assert table.loc[pretrained, "stage"] == "pretrain" and table.loc[finetuned, "stage"] == "finetune"
    assert table.loc[finetuned, "status"] == "completed"
    assert table.loc["half-written", "status"] == "unknown" and table.loc["half-written", "epochs_done"] == 0
    # Config keys flattened to section.key columns.
    assert table.loc[finetuned, "finetune.from"] == pretrained
    assert table.loc[finetuned, "model.patch_size"] == 64
    assert table.loc["half-written", "model.mask_ratio"] == 0.5
    assert table.loc[finetuned, "data.targets"] == ("CaCO3", "TOC")
    # Test metrics of scope "all": equal to the test-metrics pickle, NaN for runs never tested.
    metrics = Experiment.open(data_root, finetuned).read_result("test-metrics")
    ca = metrics[(metrics["target"] == "CaCO3") & (metrics["scope"] == "all")].iloc[0]
    assert table.loc[finetuned, "test_r2_CaCO3"] == pytest.approx(ca["r2"])
    assert table.loc[finetuned, "test_rmse_TOC"] > 0
    assert np.isnan(table.loc["half-written", "test_r2_CaCO3"])
    assert table.loc[finetuned, "epochs_done"] == 3 and np.isfinite(table.loc[finetuned, "best_val_loss"])


def test_gather_experiments_of_an_empty_root(tmp_path):
    table = gather_experiments(tmp_path)
    assert table.empty and "name" in table.columns


def test_training_curves_and_metric_comparison(data_root, pretrained, finetuned, tmp_path):
    assert is_png(training_curves(data_root, [pretrained, finetuned], tmp_path / "curves.png"))
    with pytest.raises(UserError):
        training_curves(data_root, ["no-such-run"], tmp_path / "none.png")
    table = pd.DataFrame({"data.max_labels": [10, 10, 100, 1000], "test_r2_CaCO3": [0.1, 0.2, 0.5, 0.8],
                          "test_r2_TOC": [0.0, np.nan, 0.3, 0.4], "method": ["a", "b", "a", "a"]})
    assert is_png(plot_metric_vs(table, "data.max_labels", ["test_r2_CaCO3", "test_r2_TOC"], tmp_path / "m.png"))
    assert is_png(plot_metric_vs(table, "data.max_labels", "test_r2_CaCO3", tmp_path / "h.png", hue="method"))
    with pytest.raises(UserError):
        plot_metric_vs(table, "model.mask_ratio", "test_r2_CaCO3", tmp_path / "x.png")


# -- saliency ------------------------------------------------------------------------------------------------------
def tiny_regressor(length=64):
    torch.manual_seed(0)
    return Regressor(2, input_channels=length, patch_size=16, embed_dim=16, depth=1, num_heads=2).eval()


def spectra(n=3, length=64, seed=0):
    rng = np.random.default_rng(seed)
    shape = 20 + 200 * np.exp(-0.5 * ((np.arange(length) - 30) / 3.0) ** 2)
    return rng.poisson(shape * rng.uniform(0.5, 2.0, size=(n, 1))).astype(np.float64) + rng.uniform(0, 5, (n, length))


def outputs(model, transform, x, j):
    with torch.no_grad():
        return model(transform(torch.tensor(x, dtype=torch.float32)))[:, j].double().numpy()


@pytest.mark.parametrize("transform, baseline", [(log_transform, np.zeros((1, 64))), (instance_normalize, None)])
def test_integrated_gradients_are_complete(transform, baseline):
    model, x = tiny_regressor(), spectra()
    attr = saliency(model, transform, x, target_index=1, method="integrated_gradients", steps=256,
                    baseline=baseline)
    assert attr.shape == x.shape
    if baseline is None:  # the default: the mean shape of x at each spectrum's total counts
        baseline = x.sum(axis=1, keepdims=True) * x.mean(axis=0) / x.mean(axis=0).sum()
    change = outputs(model, transform, x, 1) - outputs(model, transform, np.broadcast_to(baseline, x.shape), 1)
    assert np.abs(change).min() > 1e-3  # a real change to explain
    np.testing.assert_allclose(attr.sum(axis=1), change, rtol=0.02, atol=1e-4)


def test_input_x_gradient_matches_autograd_and_targets_differ():
    model, x = tiny_regressor(), spectra(n=2)
    attr0 = saliency(model, log_transform, x, 0)
    attr1 = saliency(model, log_transform, x, 1)
    assert attr0.shape == x.shape and not np.allclose(attr0, attr1)
    xt = torch.tensor(x[:1], dtype=torch.float32, requires_grad=True)
    model(log_transform(xt))[0, 0].backward()
    np.testing.assert_allclose(attr0[0], (xt.grad[0] * xt[0]).detach().numpy(), rtol=1e-5, atol=1e-7)
    # instance_normalize is scale-invariant: input x gradient of a spectrum sums to ~0 (Euler).
    euler = saliency(model, instance_normalize, x, 0)
    assert np.abs(euler.sum(axis=1)).max() < 1e-3 * np.abs(euler).sum(axis=1).min()
    with pytest.raises(UserError):
        saliency(model, log_transform, x, 0, method="occlusion")


def test_saliency_of_the_finetuned_experiment(data_root, finetuned, tmp_path):
    exp = Experiment.open(data_root, finetuned)
    model, transform, state = load_network(exp)
    x = spectra_array(load_split(data_root, "synthetic", "test").iloc[:4])
    attr = {t: saliency(model, transform, x, j, method="integrated_gradients", steps=4)
            for j, t in enumerate(state["targets"])}
    assert all(a.shape == x.shape and np.isfinite(a).all() for a in attr.values())
    assert model.training is False
    path = plot_saliency(attr, energy_axis(length=x.shape[1]), tmp_path / "sal.png", mean_spectrum=x.mean(0))
    assert is_png(path)


# -- latent space --------------------------------------------------------------------------------------------------
def test_embeddings_are_class_tokens_of_the_pretrained_encoder(data_root, pretrained, tmp_path):
    model, transform, _ = load_network(Experiment.open(data_root, pretrained))
    df = load_split(data_root, "synthetic", "test").iloc[:10]
    x = spectra_array(df)
    emb = embeddings(model, transform, x, batch_size=4)
    assert emb.shape == (10, model.encoder.embed_dim)
    with torch.no_grad():
        direct = model.encoder(transform(torch.tensor(x)))[:, 0].numpy()
    np.testing.assert_allclose(emb, direct, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embeddings(model.encoder, transform, x), emb, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # pool="mean": the mean patch token, what the fine-tuning head reads
        mean = model.encoder(transform(torch.tensor(x)))[:, 1:].mean(dim=1).numpy()
    np.testing.assert_allclose(embeddings(model, transform, x, pool="mean"), mean, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="pool = 'max' is not known"):
        embeddings(model, transform, x, pool="max")
    coords, explained = pca(emb)
    assert coords.shape == (10, 2) and 0 < explained.sum() <= 1 + 1e-9 and explained[0] >= explained[1]
    path = plot_embeddings(coords, df, ["core", "scanner", "CaCO3"], tmp_path / "pca.png", explained=explained)
    assert is_png(path)


def test_pca_recovers_the_main_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    emb = rng.normal(size=(200, 1)) * 10 * direction + rng.normal(scale=0.1, size=(200, 3))
    coords, explained = pca(emb, n_components=1)
    assert explained[0] > 0.99
    assert abs(np.corrcoef(coords[:, 0], emb @ direction)[0, 1]) > 0.999


def test_linear_probe_scores_each_target_and_drops_missing_labels():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 8))
    y = pd.DataFrame({"CaCO3": emb @ rng.normal(size=8) + 0.05 * rng.normal(size=120),
                      "TOC": rng.normal(size=120)})      # unrelated to the embedding
    y.loc[::3, "TOC"] = np.nan
    probe = linear_probe(emb[:80], y.iloc[:80], emb[80:], y.iloc[80:]).set_index("target")
    assert list(probe.index) == ["CaCO3", "TOC"]
    assert probe.loc["CaCO3", "r2"] > 0.95
    assert probe.loc["TOC", "r2"] < 0.3
    assert probe.loc["TOC", "n_train"] == y.iloc[:80]["TOC"].notna().sum()
    assert probe.loc["CaCO3", "n_test"] == 40
    few = linear_probe(emb[:3], y["CaCO3"].to_numpy()[:3], emb[3:6], y["CaCO3"].to_numpy()[3:6], targets=["CaCO3"])
    assert np.isnan(few.loc[0, "r2"])


def test_attention_relevance_peaks_at_the_patch_the_answer_depends_on():
    """A toy regressor trained to read one known patch (through the class token, so only attention can carry it):
    the gradient-weighted attention rollout (Chefer et al. 2021) puts its largest relevance on that patch."""
    from coremax.analysis import attention_relevance

    torch.manual_seed(0)
    model = Regressor(1, input_channels=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, global_pool=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x = torch.randn(64, 128)
        loss = ((model(x)[:, 0] - x[:, 80:96].mean(dim=1) * 4) ** 2).mean()  # patch 5 only
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3
    x = torch.randn(32, 128).numpy()
    rel = attention_relevance(model, lambda t: t, x)
    assert rel.shape == (32, 128)
    per_patch = rel.mean(axis=0).reshape(8, 16).mean(axis=1)
    assert per_patch.argmax() == 5 and per_patch[5] > 1.5 * np.delete(per_patch, 5).max()
    assert all(not b.attn.keep_weights and b.attn.weights is None for b in model.encoder.blocks)  # left as it was
