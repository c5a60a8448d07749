"""Prepared data sets: the DataFrame contract, held-out test cores, split fractions and groups, no overwrite,
atomic writing, skipped and unmatched reporting, kV selection, core splits and validation on labelled cores, and
scripts/preprocess.py itself."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from coremax.data.bulk import TARGETS
from coremax.data.dataset import (build_dataset, default_synthetic, load_info, load_split,
                                  spectra_array, spectrum_columns)
from coremax.data.simulate import simulate_archive
from coremax.errors import UserError


@pytest.fixture(scope="module")
def source(data_root):
    """The small synthetic archive of the shared session data root (see conftest.py): raw/, bulk.csv, manifest."""
    return data_root / "datasets" / "external" / "synthetic"


def build(root, source, name="d", **kw):
    return build_dataset(root, name, raw=source / "raw", bulk=source / "bulk.csv", **kw)


def splits(root, name="d"):
    return {s: load_split(root, name, s) for s in ("train", "val", "test")}


def test_dataframe_contract_and_info(tmp_path, source):
    path = build(tmp_path, source, split=0.8)
    assert path == tmp_path / "datasets" / "d"
    assert sorted(p.name for p in path.iterdir()) == ["info.toml", *(f"{s}{e}" for s in ("test", "train", "val")
                                                                      for e in ("-00000.npy", "-elements.parquet",
                                                                                ".parquet"))]
    info, parts = load_info(tmp_path, "d"), splits(tmp_path)
    df = parts["train"]
    for col in ("core", "depth_mm", "section", "position_mm", "kv", "current_ma", "live_time_s", "real_time_s",
                "filter", "scanner", "total_cps", "spectrum_length", "source_file", *TARGETS):
        assert col in df.columns, col
    assert spectrum_columns(df) == list(range(2048)) and all(type(c) is int for c in spectrum_columns(df))
    x = spectra_array(df)
    assert x.dtype == np.float32 and x.shape == (len(df), 2048) and x.sum() > 0
    assert df["depth_mm"].dtype == np.float64 and isinstance(df["core"].iloc[0], str)
    assert set(df["kv"]) == {10.0} and (df["spectrum_length"] == 2048).all()
    assert df["CaCO3"].isna().any() and df["CaCO3"].notna().any()  # most spectra have no bulk sample
    assert (df["source_file"].str.count("/") == 2).all()  # <core>/<run folder>/<file>, relative to raw
    assert np.allclose(info["channel_mean"], x.mean(0), rtol=1e-4, atol=1e-6)
    assert np.allclose(info["channel_std"], x.std(0), rtol=1e-3, atol=1e-6)
    counts = info["counts"]
    assert counts["files_read"] == sum(len(p) for p in parts.values()) == info["source"]["files"]
    assert counts["rows_train"] == len(df) and counts["files_skipped"] == 0
    assert info["source"]["raw"] == "datasets/external/synthetic/raw" or info["source"]["raw"].endswith("raw")
    assert len(info["source"]["files_sha256"]) == 64 and info["spectrum_length"] == 2048 and info["kv"] == 10.0
    assert info["targets"]["CaCO3"]["train"]["count"] == df["CaCO3"].notna().sum()
    assert info["live_time_s"]["count"] == counts["files_read"]


def test_test_cores_from_the_manifest_are_held_out_whole(tmp_path, source, data_root):
    build(tmp_path, source)
    info, parts = load_info(tmp_path, "d"), splits(tmp_path)
    test_cores = set(info["test_cores"])
    assert test_cores and set(parts["test"]["core"]) == test_cores == set(info["cores"]["test"])
    assert not test_cores & (set(parts["train"]["core"]) | set(parts["val"]["core"]))
    all_rows = pd.concat(parts.values())
    assert len(all_rows[all_rows["core"].isin(test_cores)]) == len(parts["test"])


def test_explicit_test_cores(tmp_path, source):
    cores = sorted(pd.read_csv(source / "truth.csv")["core"].unique())
    build(tmp_path, source, test_cores=cores[:2])
    parts = splits(tmp_path)
    assert set(parts["test"]["core"]) == set(cores[:2])
    assert not set(cores[:2]) & set(parts["train"]["core"])


@pytest.mark.parametrize("split", [0.5, 0.8])
def test_row_split_fraction(tmp_path, source, split):
    build(tmp_path, source, split=split, split_by="row", test_cores=[])
    n_train, n_val = len(load_split(tmp_path, "d", "train")), len(load_split(tmp_path, "d", "val"))
    assert n_train / (n_train + n_val) == pytest.approx(split, abs=0.005)
    assert len(load_split(tmp_path, "d", "test")) == 0


@pytest.mark.parametrize("by, key", [("section", ["core", "section"]), ("core", ["core"])])
def test_grouped_split_keeps_groups_together(tmp_path, source, by, key):
    build(tmp_path, source, split=0.6, split_by=by, test_cores=[])
    train, val = load_split(tmp_path, "d", "train"), load_split(tmp_path, "d", "val")
    groups = lambda df: set(map(tuple, df[key].astype(str).to_numpy()))  # noqa: E731
    assert groups(train) and groups(val) and not groups(train) & groups(val)


def test_no_overwrite_without_the_flag(tmp_path, source):
    build(tmp_path, source, test_cores=[])
    before = (tmp_path / "datasets" / "d" / "info.toml").read_text()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        build(tmp_path, source)
    assert (tmp_path / "datasets" / "d" / "info.toml").read_text() == before
    build(tmp_path, source, overwrite=True, split=0.5, test_cores=[])
    assert load_info(tmp_path, "d")["split"]["fraction"] == 0.5
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["d"]  # nothing left beside it


@pytest.mark.parametrize("kw, message", [
    (dict(test_cores=["nope"]), "--test-cores names 'nope'"),
    (dict(split=1.0), "--split 1.0 must lie strictly between 0 and 1"),
    (dict(split_by="depth"), "--split-by 'depth'"),
    (dict(kv=30.0), "No .spe files of a 30 kV run"),
    (dict(name="../x"), "not allowed"),
    (dict(name="external"), "reserved"),
])
def test_bad_options_write_nothing(tmp_path, source, kw, message):
    with pytest.raises(UserError, match=message):
        build(tmp_path, source, **{"name": "e", **kw})
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


def test_bad_file_fails_cleanly_or_is_skipped_and_listed(tmp_path, source):
    raw = tmp_path / "copy" / "raw"
    shutil.copytree(source / "raw", raw)
    victim = sorted(raw.rglob("*.spe"))[7]
    victim.write_text(victim.read_text().replace("$DATA:", "$BROKEN:"))
    with pytest.raises(UserError, match=r"no \$DATA: line"):
        build_dataset(tmp_path, "d", raw=raw, bulk=source / "bulk.csv", on_error="fail")
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())
    build_dataset(tmp_path, "d", raw=raw, bulk=source / "bulk.csv", on_error="skip")
    info = load_info(tmp_path, "d")
    rel = victim.relative_to(raw).as_posix()
    assert info["counts"]["files_skipped"] == 1 and info["skipped"][0]["file"] == rel
    assert rel not in set(pd.concat(splits(tmp_path).values())["source_file"])


def test_unmatched_and_negative_bulk_samples_are_reported(tmp_path, source):
    bulk = pd.read_csv(source / "bulk.csv")
    extra = pd.DataFrame({"core": [bulk["core"].iloc[0], "UNKNOWN-1"], "depth_mm": [1e6, 10.0],
                          "CaCO3": [50.0, 20.0], "TOC": [0.3, np.nan]})
    bulk.loc[0, "CaCO3"] = -2.0
    pd.concat([bulk, extra]).to_csv(tmp_path / "bulk.csv", index=False)
    build_dataset(tmp_path, "d", raw=source / "raw", bulk=tmp_path / "bulk.csv", test_cores=[])
    info = load_info(tmp_path, "d")
    # At 20 mm scan spacing many samples lie farther than 5 mm from any spectrum: all are listed.
    unmatched = {(u["core"], u["depth_mm"]): u for u in info["unmatched"]}
    assert info["counts"]["bulk_unmatched"] == len(unmatched) >= 2 and info["counts"]["bulk_negative_clipped"] >= 1
    far, unknown = unmatched[(bulk["core"].iloc[0], 1e6)], unmatched[("UNKNOWN-1", 10.0)]
    assert far["reason"].startswith("nearest spectrum") and unknown["reason"] == "no spectra of this core"
    assert "TOC" not in unknown  # NaN (not measured) is left out of the record
    all_rows = pd.concat(splits(tmp_path).values())
    assert all_rows["CaCO3"].min() >= 0


def test_kv_selects_the_run(tmp_path):
    source = tmp_path / "two-runs"
    simulate_archive(source, seed=2, cores=2, spacing_mm=250.0, kvs=(10.0, 30.0), workers=1)
    build(tmp_path, source, name="k30", kv=30.0, test_cores=[])
    df = load_split(tmp_path, "k30", "train")
    assert set(df["kv"]) == {30.0} and df["source_file"].str.contains("Run 2 at  30kV").all()
    assert load_info(tmp_path, "k30")["kv"] == 30.0


def test_load_errors_tell_what_to_do(tmp_path):
    with pytest.raises(UserError, match="scripts/preprocess.py"):
        load_split(tmp_path, "missing", "train")
    with pytest.raises(UserError, match="scripts/preprocess.py"):
        load_info(tmp_path, "missing")
    with pytest.raises(UserError, match="Unknown split"):
        load_split(tmp_path, "missing", "all")


def test_default_synthetic_is_generated_once(tmp_path):
    src = default_synthetic(tmp_path, cores=2, spacing_mm=300.0, workers=1)
    assert src == tmp_path / "datasets" / "external" / "synthetic" and (src / "manifest.toml").is_file()
    stamp = (src / "manifest.toml").stat().st_mtime_ns
    assert default_synthetic(tmp_path) == src and (src / "manifest.toml").stat().st_mtime_ns == stamp
    (src / "manifest.toml").unlink()
    with pytest.raises(UserError, match="has no manifest.toml"):
        default_synthetic(tmp_path)


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_uses_the_synthetic_archive_by_default(tmp_path, source):
    shutil.copytree(source, tmp_path / "datasets" / "external" / "synthetic")
    # A small stand-in for the embedded pool archive (the real one is generated on first use, 15,491 spectra).
    simulate_archive(tmp_path / "datasets" / "external" / "synthetic-pool", seed=5, cores=4, spacing_mm=200.0,
                     labelled=False, workers=1)
    out = run_cli("--split=0.8", "--data-root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "data set 'synthetic' written" in out.stdout and "test :" in out.stdout
    assert "data set 'synthetic-pool' written" in out.stdout
    assert load_info(tmp_path, "synthetic-pool")["counts"]["labelled_train"] == 0
    info = load_info(tmp_path, "synthetic")
    assert info["source"]["synthetic"] and info["test_cores"] and "--split=0.8" in info["command"]
    again = run_cli("--data-root", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = run_cli("--data-root", str(tmp_path), "--raw", str(tmp_path / "nope"), "--name", "x")
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_files_cannot_run_code_hold_exactly_the_counts_read_and_old_pickles_are_refused(tmp_path, source):
    from coremax.data.raw import read_folder

    path = build(tmp_path, source, split=0.8)
    info = load_info(tmp_path, "d")
    assert set(info["files"]) == {f"{s}{e}" for s in ("train", "val", "test")
                                  for e in (".parquet", "-00000.npy", "-elements.parquet")}
    assert all(len(h) == 64 for h in info["files"].values())
    meta, counts, _ = read_folder(source / "raw", 10.0, 2048, workers=1)
    by_file = dict(zip(meta["source_file"], counts))
    for split, df in splits(tmp_path).items():
        x = spectra_array(df)
        assert np.array_equal(x, np.stack([by_file[f] for f in df["source_file"]]).astype(np.float32)), split
    # A data set in the old pickle format is refused with the way out, never unpickled.
    old = tmp_path / "datasets" / "old"
    old.mkdir()
    (old / "info.toml").write_text('command = "scripts/preprocess.py --name old"\n')
    (old / "train.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(UserError, match="old pickle format"):
        load_split(tmp_path, "old", "train")
    # Files that do not belong together are refused.
    np.save(path / "val-00000.npy", np.zeros((3, 2048), np.int32))
    with pytest.raises(UserError, match="do not belong together"):
        load_split(tmp_path, "d", "val")


def test_the_data_set_lists_its_contents(data_root):
    info = load_info(data_root, "synthetic")
    assert set(info["contents"]) >= {"CaCO3", "TOC"}
