"""What evaluation trusts: core names stay inside the results folder, only wt% contents are bounded, non-finite
predictions and changed splits are refused."""

import shutil

import pandas as pd
import pytest

from coremax.data.dataset import build_dataset, load_info
from coremax.errors import UserError


def test_a_core_name_from_a_data_set_cannot_escape_the_results_folder(tmp_path, data_root, finetuned):
    from coremax.eval.run import evaluate_experiment

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    shutil.copytree(data_root / "experiments" / finetuned, tmp_path / "experiments" / finetuned)
    table = tmp_path / "datasets" / "synthetic" / "test.parquet"
    meta = pd.read_parquet(table)
    meta["core"] = "../../../../outside/x"
    meta.to_parquet(table)
    before = sorted(p.name for p in (tmp_path / "experiments" / finetuned / "results").iterdir())
    with pytest.raises(UserError, match="core name"):
        evaluate_experiment(tmp_path, finetuned, allow_changed_data=True)
    assert sorted(p.name for p in (tmp_path / "experiments" / finetuned / "results").iterdir()) == before
    assert not (tmp_path.parent / "outside").exists()


def test_only_contents_are_bounded_and_a_non_finite_prediction_is_refused():
    import numpy as np

    from coremax.eval.predictor import Predictor

    p = Predictor(["CaCO3", "d18O"], lambda x: np.array([[120.0, -3.5], [-2.0, 150.0]]), lambda x: x, ("CaCO3",))
    assert p.bounded(np.zeros((2, 4))).tolist() == [[100.0, -3.5], [0.0, 150.0]]
    broken = Predictor(["CaCO3"], lambda x: np.array([[np.inf], [1.0]]), lambda x: x, ("CaCO3",))
    with pytest.raises(UserError, match="non-finite value for 1 of 2"):
        broken.bounded(np.zeros((2, 4)))


def test_test_py_hashes_the_files_of_every_split_it_reads(tmp_path, data_root, finetuned):
    from coremax.eval.run import evaluate_experiment

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    shutil.copytree(data_root / "experiments" / finetuned, tmp_path / "experiments" / finetuned)
    assert not evaluate_experiment(tmp_path, finetuned).empty
    # The same test cores, another train/val split: the intervals would be calibrated on other rows.
    source = tmp_path / "datasets" / "external" / "synthetic"
    info = load_info(tmp_path, "synthetic")
    build_dataset(tmp_path, "synthetic", raw=source / "raw", bulk=source / "bulk.csv", split=0.5,
                  test_cores=info["test_cores"], overwrite=True)
    with pytest.raises(UserError, match="changed since"):
        evaluate_experiment(tmp_path, finetuned)
    # A file edited in place, its listing in info.toml left as it was.
    shutil.rmtree(tmp_path / "datasets" / "synthetic")
    shutil.copytree(data_root / "datasets" / "synthetic", tmp_path / "datasets" / "synthetic")
    table = tmp_path / "datasets" / "synthetic" / "test.parquet"
    meta = pd.read_parquet(table)
    meta.loc[0, "depth_mm"] += 1.0
    meta.to_parquet(table)
    with pytest.raises(UserError, match="test.parquet differs"):
        evaluate_experiment(tmp_path, finetuned)
