"""How a data set is split: test cores held out whole, validation cores drawn among the labelled ones, a spot or
a core scanned twice kept on one side."""

import shutil

import numpy as np
import pandas as pd
import pytest

from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.data.simulate import simulate_archive
from coremax.data.splits import resolve_split_by
from coremax.errors import UserError


def test_the_same_spot_scanned_twice_stays_on_one_side_of_a_row_split():
    from coremax.data.splits import split_rows

    df = pd.DataFrame({"core": ["A"] * 40, "depth_mm": np.repeat(np.arange(20.0), 2)})
    train = split_rows(df, 0.5, "row", seed=0)
    pairs = train.reshape(20, 2)
    assert (pairs[:, 0] == pairs[:, 1]).all() and 0 < train.sum() < 40


def _bulk_of(source, tmp_path, cores):
    bulk = pd.read_csv(source / "bulk.csv")
    path = tmp_path / "bulk.csv"
    bulk[bulk["core"].isin(cores)].to_csv(path, index=False)
    return path


def test_validation_cores_are_drawn_among_labelled_cores(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    info = load_info(data_root, "synthetic")
    test_cores = info["cores"]["test"]
    others = sorted(set(info["cores"]["train"]) | set(info["cores"]["val"]))
    labelled = others[:2]
    for seed in range(4):  # whatever the draw, the validation core has lab samples
        build_dataset(tmp_path, f"mixed{seed}", raw=source / "raw", bulk=_bulk_of(source, tmp_path, test_cores + labelled),
                      split=0.5, seed=seed, test_cores=test_cores)
        val = load_split(tmp_path, f"mixed{seed}", "val")
        assert set(val["core"]) <= set(labelled) and val["CaCO3"].notna().any()
        train_cores = set(load_split(tmp_path, f"mixed{seed}", "train")["core"])
        assert set(others) - set(labelled) <= train_cores  # unlabelled cores stay in training
    with pytest.raises(UserError, match="Only 1 non-test core"):
        build_dataset(tmp_path, "one", raw=source / "raw", bulk=_bulk_of(source, tmp_path, test_cores + others[:1]),
                      split=0.8, test_cores=test_cores)
    assert not (tmp_path / "datasets" / "one").exists()


def test_a_core_scanned_twice_keeps_both_runs_on_one_side(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    raw = tmp_path / "raw"
    shutil.copytree(source / "raw", raw)
    core = sorted(p.name for p in raw.iterdir())[0]
    first = next((raw / core).iterdir())
    second = raw / core / "Run 2 at  10kV"
    shutil.copytree(first, second)
    for f in second.iterdir():  # the same spots, scanned again on a later date
        text = f.read_text()
        f.write_text(text.replace("$DATE_MEA:\n", "$DATE_MEA:\n01-02-2027 10:00:00\n", 1) if "$DATE_MEA:\n" in text
                     else text)
    build_dataset(tmp_path, "twice", raw=raw, bulk=source / "bulk.csv", split=0.8)
    parts = {s: load_split(tmp_path, "twice", s) for s in ("train", "val", "test")}
    where = [s for s, df in parts.items() if core in set(df["core"])]
    assert len(where) == 1  # the core is held out or trained on whole, with both of its runs
    rows = parts[where[0]][parts[where[0]]["core"] == core]
    assert rows["source_file"].str.split("/").str[1].nunique() == 2  # <core>/<run folder>/<file>
    assert len(rows) == 2 * sum(1 for _ in first.iterdir())


def test_core_split_keeps_cores_whole_and_every_head_in_training(tmp_path):
    source = tmp_path / "arch"
    simulate_archive(source, seed=3, cores=12, spacing_mm=150.0, workers=1)
    build_dataset(tmp_path, "d", raw=source / "raw", bulk=source / "bulk.csv", split=0.75)
    info = load_info(tmp_path, "d")
    assert info["split"]["by"] == "core"  # auto, with 9 non-test cores
    train, val = load_split(tmp_path, "d", "train"), load_split(tmp_path, "d", "val")
    assert not set(train["core"]) & set(val["core"]) and len(set(val["core"])) >= 2
    assert set(val["scanner"]) <= set(train["scanner"])  # no head is only in validation
    assert resolve_split_by("auto", 3) == "row" and resolve_split_by("section", 30) == "section"
