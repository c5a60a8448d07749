"""Several runs (tube voltages) per spot: the window of each run, per-run transforms, and the encoder that reads
the runs' tokens with a run embedding (or as one concatenated spectrum); a one-run model and window behave exactly as before."""

import numpy as np
import pandas as pd
import pytest
import torch

from coremax.checks import check_parent_state
from coremax.data.elements import element_columns
from coremax.data.raw import read_folder
from coremax.data.runs import check_run_folders, pair_runs, spot_rows
from coremax.data.simulate import simulate_archive
from coremax.data.transforms import make_transform
from coremax.data.window import Window, data_window, make_window
from coremax.errors import UserError
from coremax.models import build_model
from coremax.models.max import MaX
from coremax.models.vitx import VitX, load_encoder, sincos_positions


def test_one_run_window_is_the_old_slice():
    x = np.arange(2 * 16).reshape(2, 16)
    w = make_window([2, 10], 16)
    assert w.runs == 1 and w.width == 8 and np.shares_memory(w(x), x)  # a view, as x[..., 2:10] was
    assert np.array_equal(w(x), x[:, 2:10])


def test_two_run_window_joins_each_runs_span():
    x = torch.arange(2 * 32).reshape(2, 32)  # two runs of 16 channels side by side
    w = make_window([0, 8], 16, runs=2, run_channels=[[0, 4], [8, 16]])
    assert w.widths == (4, 8)
    assert torch.equal(w(x), torch.cat([x[:, 0:4], x[:, 24:32]], dim=1))
    assert data_window({"channels": [0, 8], "spectrum_length": 16}, {"runs": [10.0, 30.0]}).spans == ((0, 8), (0, 8))
    assert Window.from_state(w.state(), {}) == w


@pytest.mark.parametrize("runs, run_channels, says", [
    (2, [[0, 4]], "gives 1 windows for a data set of 2 runs"),
    (2, [[0, 4], [0, 40]], "must satisfy 0 <= first < end"),
    (2, [[0, 4], "x"], "must be two integers"),
])
def test_bad_run_windows_are_refused_in_one_sentence(runs, run_channels, says):
    with pytest.raises(UserError, match=says):
        make_window([0, 8], 16, runs, run_channels)


def test_per_spectrum_transforms_see_each_run_apart():
    w = make_window([0, 8], 8, runs=2)
    x = torch.cat([torch.rand(3, 8) * 10, torch.rand(3, 8) * 1000], dim=1)  # a 30 kV run on another scale
    out = make_transform("instance_normalize", window=w)(x)
    for part in torch.split(out, [8, 8], dim=1):
        assert torch.allclose(part.mean(1), torch.zeros(3), atol=1e-5)
    joined = make_transform("instance_normalize")(x)  # the runs mixed: the first run's mean is far from 0
    assert joined[:, :8].mean().abs() > 0.5


def test_one_run_model_keeps_its_weights_keys_and_draws():
    torch.manual_seed(0)
    old = MaX(256, 16).state_dict()
    torch.manual_seed(0)
    new = MaX((256,), 16).state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert torch.equal(VitX(256, 16).pos_embed[0], sincos_positions(16, 192))


def test_two_run_encoder_tells_the_runs_apart():
    enc = VitX((64, 32), 16, embed_dim=32, depth=2, num_heads=2, run_tokens="embedding")
    assert enc.run_patches == (4, 2) and enc.num_patches == 6
    assert torch.equal(enc.pos_embed[0, 5], enc.pos_embed[0, 1])  # each run's positions start again
    tokens = enc.embed(torch.zeros(1, 96))
    assert not torch.allclose(tokens[0, 4], tokens[0, 0])  # same position, other run: the run embedding differs
    model = build_model("pretrain", 0, (64, 32), size="tiny", patch_size=16, mask_ratio=0.5, loss_on="masked",
                        norm_pix_loss=False, global_pool=True, drop_path=0.0, head_layers=1, latent="plain",
                        vsc_dim=8, vsc_beta=0.0, vsc_alpha=0.5, aux_elements=0.0, run_tokens="embedding")
    loss, pred, mask = model(torch.rand(2, 96))
    assert pred.shape == (2, 6, 16) and mask.shape == (2, 6) and torch.isfinite(loss)
    assert {"encoder.run_embed.weight", "decoder_run_embed.weight"} <= set(model.state_dict())


def test_concatenated_runs_read_as_one_spectrum_and_a_parent_of_the_other_kind_is_refused():
    enc = VitX((64, 32), 16, embed_dim=32, depth=2, num_heads=2, run_tokens="concatenated")
    assert torch.equal(enc.pos_embed[0], sincos_positions(6, 32))  # positions run on across the runs
    assert not any("run_embed" in k for k in enc.state_dict())
    pre = MaX((64, 32), 16, embed_dim=32, depth=2, num_heads=2, run_tokens="concatenated")
    assert pre.decoder_run_embed is None and torch.isfinite(pre(torch.rand(2, 96))[0])
    reg = build_model("finetune", 2, (64, 32), size="tiny", patch_size=16, run_tokens="concatenated")
    report = load_encoder(reg, MaX((64, 32), 16, run_tokens="concatenated").state_dict())
    assert report == {"missing": [], "unexpected": []} and reg(torch.rand(2, 96)).shape == (2, 2)
    parent = {"config": {"data": {"channels": [0, 8]}, "model": {"run_tokens": "concatenated"}}}
    ours = {"data": {"channels": [0, 8]}, "model": {"size": "tiny", "patch_size": 16, "run_tokens": "embedding"}}
    with pytest.raises(UserError, match='model.run_tokens = .concatenated.'):
        check_parent_state(parent, ours, "The parent")
    with pytest.raises(UserError, match="model.run_tokens = 'joined' is not known"):
        VitX((64, 32), 16, run_tokens="joined")


def test_a_run_width_the_patch_does_not_divide_is_refused():
    with pytest.raises(UserError, match="not divisible"):
        VitX((64, 40), 16)


def _runs_meta(depths_by_kv: dict, core: str = "C1") -> pd.DataFrame:
    rows = [{"core": core, "depth_mm": float(d), "kv": kv, "run_folder": f"Run {i + 1} at {kv:g}kV",
             "source_file": f"{core}/Run {i + 1} at {kv:g}kV/{d}.spe"}
            for i, (kv, depths) in enumerate(depths_by_kv.items()) for d in depths]
    return pd.DataFrame(rows)


def test_runs_pair_by_depth_and_spots_missing_a_run_are_dropped_and_listed():
    meta = _runs_meta({10.0: [0, 10, 20, 30], 30.0: [0.2, 10, 30, 40]})
    rows, dropped = pair_runs(meta, [10, 30])
    assert meta.loc[rows[:, 0], "depth_mm"].tolist() == [0, 10, 30]
    assert meta.loc[rows[:, 1], "depth_mm"].tolist() == [0.2, 10, 30]
    assert sorted(zip(dropped["depth_mm"], dropped["lacks"])) == [(20.0, "30kV"), (40.0, "10kV")]


def test_runs_that_disagree_on_depth_are_refused():
    meta = _runs_meta({10.0: [0, 10, 20], 30.0: [3, 13, 23]})
    with pytest.raises(UserError, match="Core C1: the 10kV spectrum at 0 mm and the 30kV one at 3 mm .* beyond"):
        pair_runs(meta, [10, 30], tolerance_mm=1.0)
    assert len(pair_runs(meta, [10, 30], tolerance_mm=5.0)[0]) == 3


def test_a_run_folder_and_header_that_disagree_are_refused():
    meta = _runs_meta({10.0: [0], 30.0: [0]})
    meta.loc[1, "kv"] = 10.0  # a 10 kV spectrum in the 30 kV run's folder
    with pytest.raises(UserError, match="run folder says 30 kV but its header says 10 kV"):
        check_run_folders(meta)
    with pytest.raises(UserError, match="No spectrum of a 50 kV run"):
        pair_runs(_runs_meta({10.0: [0]}), [10, 50])


def test_a_simulated_two_run_archive_joins_into_spots_with_each_runs_elements(tmp_path):
    simulate_archive(tmp_path / "a", seed=0, cores=1, spacing_mm=100.0, workers=1, benchmark="synthetic-2kv")
    meta, counts, _ = read_folder(tmp_path / "a" / "raw", kv=None, workers=1)
    rows, dropped = spot_rows(meta, counts, [10, 30])
    assert len(dropped) == 0 and len(rows) == len(meta) // 2
    assert np.array_equal(rows[list(range(2048, 4096))].to_numpy(), counts[meta["kv"].to_numpy() == 30])
    assert {"Ca_10kV_area", "Sr_30kV_area", "Br_30kV_area", "chi2_30kV"} <= set(element_columns(rows))
    assert (rows["live_time_s_30kV"] == 20).all() and (rows["kv"] == 10).all()
    # the 30 kV run sees Sr far better than the 10 kV run sees anything of it
    assert rows["Sr_30kV_area"].median() > 10 * max(rows.get("Sr_10kV_area", pd.Series([1.0])).median(), 1.0)


def test_relevance_of_two_runs_is_drawn_one_figure_per_run(tmp_path):
    from coremax.analysis import plot_run_saliency

    w = make_window([0, 64], 128, runs=2, run_channels=[[0, 32], [0, 96]])
    energy = (np.arange(128) + 0.5) * 0.02 * 4
    paths = plot_run_saliency({"CaCO3": np.random.default_rng(0).random((3, w.width))}, energy, tmp_path / "r.png",
                              w, [10.0, 30.0])
    assert [p.name for p in paths] == ["r-10kV.png", "r-30kV.png"] and all(p.stat().st_size > 0 for p in paths)
