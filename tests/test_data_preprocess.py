"""scripts/preprocess.py: held-out test cores, split fractions and groups, no overwrite, info.toml."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SMALL_ARCHIVE
from coremax.data.dataset import build_dataset, load_info, load_split, spectrum_columns
from coremax.data.simulate import simulate_archive
from coremax.errors import UserError


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "synthetic"
    simulate_archive(out, **SMALL_ARCHIVE)
    return out


def build(root, source, name="d", **kw):
    return build_dataset(root, name, raw=source / "raw", bulk=source / "bulk.csv", **kw)


def test_layout_columns_and_test_cores(data_root):
    info = load_info(data_root, "synthetic")
    parts = {s: load_split(data_root, "synthetic", s) for s in ("train", "val", "test")}
    test_cores = set(info["test_cores"])
    assert test_cores and set(parts["test"]["core"]) == test_cores
    assert not test_cores & (set(parts["train"]["core"]) | set(parts["val"]["core"]))
    df = parts["train"]
    assert spectrum_columns(df) == list(range(2048))
    for col in ("core", "depth_mm", "section", "position_mm", "kv", "current_ma", "live_time_s", "scanner",
                "source_file", "spectrum_length", "CaCO3", "TOC"):
        assert col in df.columns, col
    assert df["CaCO3"].isna().any() and df["CaCO3"].notna().any()
    assert len(info["channel_mean"]) == 2048
    assert np.allclose(info["channel_mean"], df[list(range(2048))].mean().to_numpy(), rtol=1e-4)
    assert info["counts"]["files_read"] == sum(len(p) for p in parts.values())


@pytest.mark.parametrize("split", [0.5, 0.8])
def test_row_split_fraction(tmp_path, source, split):
    build(tmp_path, source, split=split, test_cores=[])
    n_train = len(load_split(tmp_path, "d", "train"))
    n_val = len(load_split(tmp_path, "d", "val"))
    assert n_train / (n_train + n_val) == pytest.approx(split, abs=0.01)


@pytest.mark.parametrize("by, key", [("section", ["core", "section"]), ("core", ["core"])])
def test_grouped_split_keeps_groups_together(tmp_path, source, by, key):
    build(tmp_path, source, split=0.6, split_by=by, test_cores=[])
    train, val = load_split(tmp_path, "d", "train"), load_split(tmp_path, "d", "val")
    groups = lambda df: set(map(tuple, df[key].astype(str).to_numpy()))  # noqa: E731
    assert groups(train) and groups(val) and not groups(train) & groups(val)


def test_no_overwrite_and_unknown_test_core(tmp_path, source):
    build(tmp_path, source, test_cores=[])
    before = (tmp_path / "datasets" / "d" / "info.toml").read_text()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        build(tmp_path, source)
    assert (tmp_path / "datasets" / "d" / "info.toml").read_text() == before
    with pytest.raises(UserError, match="--test-cores names 'nope'"):
        build(tmp_path, source, name="e", test_cores=["nope"])
    assert not (tmp_path / "datasets" / "e").exists()
    build(tmp_path, source, overwrite=True, split=0.5, test_cores=[])
    assert load_info(tmp_path, "d")["split"]["fraction"] == 0.5


def test_cli_on_a_fresh_root_generates_the_synthetic_default(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess.py"), "--split=0.8",
                          "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "data set 'synthetic' written" in out.stdout
    info = load_info(tmp_path, "synthetic")
    assert info["source"]["synthetic"] and len(info["test_cores"]) == 3
    assert (tmp_path / "datasets" / "external" / "synthetic" / "truth.csv").is_file()
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess.py"), "--data-root", str(tmp_path)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
