"""Variational sparse coding (model.latent = "vsc"): the spike-and-slab code of MSM pretraining, its KL, the plain
model left as it was, the pretrain -> finetune chain through scripts/train.py, the analysis helpers and notebook."""

import json
import math
import subprocess
import sys

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from conftest import ROOT
from coremax import checkpoint as ckpt
from coremax import config as configlib
from coremax.analysis import (active_fraction, code_channel_correlation, dimension_elements, energy_axis,
                              plot_code_activity, plot_code_channels, sparse_codes)
from coremax.data.dataset import load_split, spectra_array
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.models import build_model, load, load_encoder
from coremax.models.vsc import spike_slab_kl

L, P = 256, 16  # 16 patches: quick on a CPU


def small(**kw):
    torch.manual_seed(0)
    return build_model("pretrain", input_channels=L, patch_size=P, **kw)


def test_plain_is_the_model_without_the_key():
    """Same parameters, state_dict keys, values and outputs as a build that never heard of the latent keys, so
    checkpoints written before them load as they are."""
    before, plain = small(), small(latent="plain", vsc_dim=4, vsc_beta=1.0)
    assert plain.code is None and list(plain.state_dict()) == list(before.state_dict())
    plain.load_state_dict(before.state_dict(), strict=True)
    x = torch.randn(3, L)
    outputs = []
    for model in (before, plain):  # in training mode: the same random draws (masks, stochastic depth) too
        torch.manual_seed(1)
        outputs.append(model(x))
    assert all(torch.equal(u, v) for u, v in zip(*outputs))
    terms = plain.terms(x)
    assert torch.equal(terms["loss"], terms["recon"]) and terms["kl"] == 0
    with pytest.raises(UserError, match="no sparse code"):
        plain.sparse_code(x)


def test_vsc_adds_only_code_layers_and_trains_them():
    vsc = small(latent="vsc", vsc_dim=8)
    plain_keys = set(small().state_dict())
    extra = set(vsc.state_dict()) - plain_keys
    assert plain_keys <= set(vsc.state_dict()) and extra and all(k.startswith("code.") for k in extra)
    vsc.train()
    out = vsc.terms(torch.randn(4, L), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["kl"] > 0
    assert torch.allclose(out["loss"], out["recon"] + vsc.code.beta * out["kl"])
    out["loss"].backward()
    for name in ("mu", "logvar", "spike", "to_decoder"):
        grad = getattr(vsc.code, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_the_decoder_reads_the_code():
    """The code token changes the reconstruction: with the same masks, another code gives another prediction."""
    vsc = small(latent="vsc", vsc_dim=8).eval()
    x = torch.randn(2, L)
    first = vsc(x, generator=torch.Generator().manual_seed(3))[1]
    with torch.no_grad():
        vsc.code.to_decoder.bias += 1.0
    assert not torch.allclose(first, vsc(x, generator=torch.Generator().manual_seed(3))[1])


def by_hand(mu, logvar, gamma, alpha):
    """The VSC KL of one dimension, written out from the formula."""
    var = math.exp(logvar)
    slab = 0.5 * (mu ** 2 + var - 1 - logvar)
    return gamma * slab + gamma * math.log(gamma / alpha) + (1 - gamma) * math.log((1 - gamma) / (1 - alpha))


def test_kl_matches_the_formula_and_vanishes_at_the_prior():
    alpha = 0.2
    params = [[(1.0, 0.0, 0.5), (-0.5, 0.7, 0.9)], [(0.3, -1.2, 0.05), (2.0, 0.1, 0.6)]]  # (mu, logvar, gamma)
    mu, logvar, gamma = (torch.tensor([[d[k] for d in row] for row in params], dtype=torch.float64) for k in range(3))
    expected = np.mean([sum(by_hand(*d, alpha) for d in row) for row in params])
    assert spike_slab_kl(mu, logvar, gamma, alpha).item() == pytest.approx(expected, rel=1e-9)
    prior = spike_slab_kl(torch.zeros(3, 5), torch.zeros(3, 5), torch.full((3, 5), alpha), alpha)
    assert abs(prior.item()) < 1e-6
    # Any move away from the prior costs: the KL is smallest there.
    for moved in ((0.5, 0.0, alpha), (0.0, 0.5, alpha), (0.0, 0.0, alpha + 0.1), (0.0, 0.0, alpha / 2)):
        args = (torch.full((1, 1), float(v)) for v in moved)
        assert spike_slab_kl(*args, alpha) > prior


def test_eval_code_is_deterministic_and_the_posterior_mean():
    vsc = small(latent="vsc", vsc_dim=8)
    x = torch.randn(3, L)
    vsc.eval()
    with torch.no_grad():
        runs = [vsc(x, generator=torch.Generator().manual_seed(2)) for _ in range(2)]
        mu, logvar, gamma = vsc.sparse_code(x)
        again = vsc.sparse_code(x)
        tokens = vsc.encoder(x)
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and all(torch.equal(a, b) for a, b in zip(again, (mu, logvar, gamma)))
    assert mu.shape == gamma.shape == (3, 8) and bool(((gamma > 0) & (gamma < 1)).all())
    assert torch.equal(vsc.code.sample(*vsc.code.posterior(tokens)), gamma * mu)
    vsc.train()  # training samples: another draw, another code
    draws = [vsc.code.sample(mu, logvar, torch.logit(gamma), torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(*draws)


@pytest.mark.parametrize("key, value", [("vsc_alpha", 0.0), ("vsc_alpha", 1.0), ("vsc_beta", -0.1), ("vsc_dim", 0),
                                        ("vsc_beta", float("nan"))])
def test_bad_values_are_one_sentence_naming_the_key(key, value):
    with pytest.raises(UserError, match=rf"model\.{key} .*out of range"):
        configlib.resolve(None, [f"model.{key}={value}"])
    with pytest.raises(UserError, match=rf"^model\.{key} = .*out of range: it must satisfy [^.]*\.$"):
        small(latent="vsc", **{key: value})


def test_an_unknown_latent_is_refused():
    with pytest.raises(UserError, match=r"model\.latent.*plain, vsc"):
        configlib.resolve(None, ['model.latent="sparse"'])
    with pytest.raises(UserError, match=r"model\.latent = 'sparse' is not known"):
        small(latent="sparse")


def test_fine_tuning_takes_the_encoder_and_leaves_the_code():
    vsc = small(latent="vsc", vsc_dim=8)
    regressor = build_model("finetune", 2, input_channels=L, patch_size=P)
    report = load_encoder(regressor, vsc.state_dict())
    assert report == {"missing": [], "unexpected": []}
    for k, v in regressor.encoder.state_dict().items():
        assert torch.equal(v, vsc.state_dict()[f"encoder.{k}"]), k


# -- end to end: scripts/train.py, the analysis helpers and the notebook ------------------------------------------
FAST = ["model.patch_size=64", "optim.batch_size=32", "optim.epochs=2", "runtime.log_interval_s=0.0",
        "runtime.threads=1"]


def train_py(data_root, *args):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--data-root", str(data_root), *args,
                          *FAST], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.fixture(scope="module")
def vsc_chain(data_root):
    train_py(data_root, "--config", str(ROOT / "configs" / "smoke-pretrain.toml"), "--name", "vsc-pre",
             "model.latent=vsc", "model.vsc_dim=8")
    train_py(data_root, "--config", str(ROOT / "configs" / "smoke-finetune.toml"), "--stage", "finetune",
             "--name", "vsc-ft", "finetune.from=vsc-pre")
    return "vsc-pre", "vsc-ft"


@pytest.mark.slow
def test_pretrain_then_finetune_through_train_py(data_root, vsc_chain):
    pre, ft = (Experiment.open(data_root, name) for name in vsc_chain)
    assert pre.status() == ft.status() == "completed"
    best = pre.checkpoints / "best-model.pth"
    state = ckpt.load(best)
    assert state["config"]["model"]["latent"] == "vsc" and any(k.startswith("code.") for k in state["model"])
    assert load(best).model.code.dim == 8  # the checkpoint alone rebuilds the VSC model
    assert ft.provenance()["parent"]["experiment"] == vsc_chain[0]
    loaded = [e for e in map(json.loads, ft.log_file.read_text().splitlines()) if e["event"] == "encoder_loaded"]
    assert loaded and loaded[0]["missing"] == [] and loaded[0]["unexpected"] == []


@pytest.mark.slow
def test_analysis_of_the_sparse_code(data_root, vsc_chain, tmp_path):
    exp = Experiment.open(data_root, vsc_chain[0])
    loaded = load(exp.checkpoints / "best-model.pth")
    x = spectra_array(load_split(data_root, "synthetic", "train"))[:60]
    gamma, mu = sparse_codes(loaded.model, loaded.transform, x, batch_size=16)
    assert gamma.shape == mu.shape == (60, 8) and np.all((gamma >= 0) & (gamma <= 1))
    np.testing.assert_array_equal(sparse_codes(loaded.model, loaded.transform, x)[0], gamma)  # batches do not matter
    frac = active_fraction(gamma)
    assert frac.shape == (60,) and np.all((frac >= 0) & (frac <= 1))
    np.testing.assert_array_equal(active_fraction([[0.9, 0.1, 0.6, 0.5]]), [0.5])
    corr = code_channel_correlation(gamma * mu, loaded.transform, x)
    width = loaded.model.encoder.input_channels
    assert corr.shape == (8, width) and np.all(np.abs(corr) <= 1 + 1e-9)
    energy = energy_axis(length=width)
    table = dimension_elements(corr, energy, [0, 3], top=2)
    assert list(table["dim"]) == [0, 3] and table["line 1"].str.match(r"^[A-Z][a-z]? (Ka|La) [+-]\d\.\d\d$").all()
    for path in (plot_code_activity(gamma, tmp_path / "a.png"), plot_code_channels(corr, energy, [0, 3], tmp_path / "c.png")):
        assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="no sparse code"):
        sparse_codes(build_model("pretrain", input_channels=width, patch_size=64), loaded.transform, x)
    with pytest.raises(UserError, match="has no sparse code"):
        sparse_codes(build_model("finetune", 2, input_channels=width, patch_size=64), loaded.transform, x)


@pytest.mark.slow
def test_latent_notebook_shows_the_sparse_code(data_root, vsc_chain, monkeypatch):
    monkeypatch.setenv("COREMAX_DATA_ROOT", str(data_root))
    monkeypatch.setenv("COREMAX_PRETRAIN", vsc_chain[0])
    monkeypatch.setenv("COREMAX_FINETUNE", vsc_chain[1])
    monkeypatch.setenv("COREMAX_VSC_PRETRAIN", vsc_chain[0])
    nb = nbformat.read(ROOT / "analysis" / "latent.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    results = data_root / "experiments" / vsc_chain[0] / "results"
    for figure in ("latent-pca.png", "vsc-activity.png", "vsc-channels.png"):
        assert (results / figure).read_bytes()[:4] == b"\x89PNG", figure
