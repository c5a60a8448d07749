"""Each evaluation figure writes a real, non-empty PNG at the requested path and returns that path."""

import numpy as np
import pandas as pd
import torch

from coremax.eval import figures
from coremax.stats.metrics import metrics_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TARGETS = ["CaCO3", "TOC"]


def assert_png(path, expected):
    assert path == expected
    data = expected.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert [p.name for p in expected.parent.iterdir()] == [expected.name]  # no temp file left behind


def frame(seed=0, n=60):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"core": np.repeat(["A", "B"], n // 2), "depth_mm": np.tile(np.arange(n // 2) * 10.0, 2)})
    for t, scale in [("CaCO3", 50.0), ("TOC", 2.0)]:
        df[t] = rng.uniform(0, scale, n)
        df[f"{t}_pred"] = df[t] + rng.normal(0, scale / 10, n)
        df[f"{t}_lo"], df[f"{t}_hi"] = df[f"{t}_pred"] - scale / 5, df[f"{t}_pred"] + scale / 5
    df.loc[df.index % 3 != 0, TARGETS] = np.nan  # measurements only on some spectra
    return df


def test_pred_vs_measured(tmp_path):
    df = frame()
    out = tmp_path / "a" / "pred.png"
    metrics = metrics_table(df, TARGETS)
    assert_png(figures.plot_pred_vs_measured(df, TARGETS, metrics[metrics["scope"] == "all"], out), out)


def test_profiles(tmp_path):
    df = frame()
    core = df[df["core"] == "A"]
    out = tmp_path / "profile-A.png"
    assert_png(figures.plot_profiles(core, core.dropna(subset=TARGETS, how="all"), TARGETS, out, "A"), out)


def test_reconstructions_with_tensors_and_energy_axis(tmp_path):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.poisson(50, size=(3, 256)).astype(np.float32))
    mask = torch.as_tensor(rng.random((3, 256 // 32)) < 0.5)
    out = tmp_path / "recon.png"
    assert_png(figures.plot_reconstructions(x, x + 1.0, mask, 32, out, energy_kev=np.linspace(0, 20, 256)), out)


def test_label_budget_with_seeds(tmp_path):
    rows = [{"method": m, "n_labels": n, "seed": s, "target": t, "r2": 0.5 + 0.1 * np.log10(n) + 0.01 * s,
             "rmse": 5.0 / np.log10(n) + s}
            for m in ["finetune", "nmf_svr"] for n in [10, 100, 1000] for s in range(3) for t in TARGETS]
    out = tmp_path / "budget.png"
    assert_png(figures.plot_label_budget(pd.DataFrame(rows), out), out)


def test_label_budget_figure_with_identical_seeds(tmp_path):
    from coremax.eval.figures import plot_label_budget

    rows = [{"target": "CaCO3", "method": "pls", "n_labels": 10, "seed": s, "r2": 0.1, "rmse": 0.1} for s in range(3)]
    assert plot_label_budget(pd.DataFrame(rows), tmp_path / "f.png").is_file()
