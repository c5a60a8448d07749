"""The unlabelled pretraining pool: its own cores and a new head, read by pretraining only, never a test core."""

import pytest

from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.data.simulate import LABELLED_HEADS, SCANNERS, plan_archive, simulate_archive
from coremax.engine.data import prepare_data
from coremax.errors import UserError


def test_pool_archive_is_unlabelled_has_its_own_cores_and_a_new_head(tmp_path):
    labelled_cores = {p.core for p in plan_archive(0, 60)}
    pool_plans = plan_archive(1, 52, labelled=False)
    assert not labelled_cores & {p.core for p in pool_plans}  # cores are named apart, whatever the sizes
    assert {p.scanner for p in pool_plans} == set(range(len(SCANNERS)))
    assert {p.scanner for p in plan_archive(0, 12)} == set(range(LABELLED_HEADS)) and LABELLED_HEADS < len(SCANNERS)
    m = simulate_archive(tmp_path / "p", seed=2, cores=4, spacing_mm=100.0, labelled=False, workers=1)
    assert not (tmp_path / "p" / "bulk.csv").exists() and m["test_cores"] == [] and m["bulk_samples"] == 0
    assert (tmp_path / "p" / "truth.csv").is_file() and m["spectra"] > 0


def test_pretraining_reads_the_pool_and_never_a_test_core(data_root, pool):
    info = load_info(data_root, "synthetic")
    data = prepare_data(data_root, "pretrain", 0, pool=[pool])
    own = len(load_split(data_root, "synthetic", "train")) + len(load_split(data_root, "pool", "train"))
    assert len(data.train) == own
    seen = set(data.train.frame["core"]) | set(data.val.frame["core"])
    assert set(load_info(data_root, pool)["cores"]["train"]) <= seen
    assert not seen & set(info["test_cores"])
    # Fine-tuning ignores the pool: it has no labels.
    assert len(prepare_data(data_root, "finetune", 0, pool=[pool]).train) == \
        load_split(data_root, "synthetic", "train")[["CaCO3", "TOC"]].notna().any(axis=1).sum()


def test_a_pool_holding_a_test_core_is_refused(tmp_path, data_root):
    source = data_root / "datasets" / "external" / "synthetic"
    # The labelled archive itself, without bulk, as a "pool": it holds the test cores.
    build_dataset(tmp_path, "synthetic", raw=source / "raw", bulk=source / "bulk.csv", split=0.8)
    build_dataset(tmp_path, "leaky", raw=source / "raw", split=0.8)
    with pytest.raises(UserError, match="test core"):
        prepare_data(tmp_path, "pretrain", 0, pool=["leaky"])
    with pytest.raises(UserError, match="itself"):
        prepare_data(tmp_path, "pretrain", 0, pool=["synthetic"])
