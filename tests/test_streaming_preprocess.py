"""Preprocessing streams (coremax.data.staging): the batch sizes change no byte of a data set, the staged build is
the build of everything in memory (one element fit, one channel sum, one files hash), a failure after some
batches leaves nothing, and the file search is the glob it replaced."""

import errno
import filecmp
import hashlib
import io
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from coremax.data import dataset_write, raw, shards, staging
from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.data.elements import fit_elements
from coremax.errors import UserError


@pytest.fixture(scope="module")
def source(data_root):
    return data_root / "datasets" / "external" / "synthetic"


def build(root, source, name, **kw):
    return build_dataset(root, name, raw=source / "raw", bulk=source / "bulk.csv", split=0.8, seed=0, **kw)


def info_text(folder):
    return [line for line in (folder / "info.toml").read_text().splitlines() if not line.startswith(("created_utc", "name ="))]


def test_tiny_batches_and_blocks_write_the_same_bytes(tmp_path, source, monkeypatch):
    one = build(tmp_path, source, "one", shard_rows=50)
    monkeypatch.setattr(raw, "BATCH_FILES", 7)     # ~100 batches of files, each staged on its own
    monkeypatch.setattr(shards, "BLOCK_ROWS", 3)   # shards and channel sums read 3 rows at a time
    tiny = build(tmp_path, source, "tiny", shard_rows=50)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in tiny.iterdir()) and len(names) > 10  # several shards per split
    assert [n for n in names if n != "info.toml" and not filecmp.cmp(one / n, tiny / n, shallow=False)] == []
    assert info_text(one) == info_text(tiny)
    assert not any(p.name.startswith(".") for p in tiny.iterdir())  # nothing staged is left in the data set


def test_the_staged_build_is_the_build_of_everything_in_memory(data_root, source):
    """The session data set (built by the streaming code) against the steps done once over everything read."""
    meta, counts, _ = raw.read_folder(source / "raw", 10.0, 2048, workers=1)
    whole = fit_elements(counts, meta, 10.0)
    parts = {s: load_split(data_root, "synthetic", s) for s in ("train", "val", "test")}
    rows = pd.concat(parts.values(), ignore_index=True)
    at = pd.Index(meta["source_file"]).get_indexer(rows["source_file"])
    assert (at >= 0).all() and len(at) == len(meta)
    pd.testing.assert_frame_equal(rows[list(whole.columns)], whole.iloc[at].reset_index(drop=True), check_exact=True,
                                  check_column_type=False)
    info = load_info(data_root, "synthetic")
    train = counts[at[:len(parts["train"])]].astype(np.float64)
    mean = train.sum(axis=0) / len(train)
    assert info["channel_mean"] == mean.tolist()
    assert info["channel_std"] == np.sqrt(np.clip((train * train).sum(axis=0) / len(train) - mean * mean, 0,
                                                  None)).tolist()
    assert info["source"]["files_sha256"] == staging.files_sha256(meta["source_file"], meta["sha256"])


def _stats_in_one_chunk_per_shard(counts, rows, chunk):
    """The channel sums as they were computed before streaming: one float64 array per chunk of rows."""
    total, squares = np.zeros(counts.shape[1]), np.zeros(counts.shape[1])
    for start in range(0, len(rows), chunk):
        c = counts[rows[start:start + chunk]].astype(np.float64)
        total += c.sum(axis=0)
        squares += (c * c).sum(axis=0)
    mean = total / len(rows)
    return mean.tolist(), np.sqrt(np.clip(squares / len(rows) - mean * mean, 0, None)).tolist()


def test_channel_stats_do_not_depend_on_the_block():
    rng = np.random.default_rng(0)
    counts = rng.integers(2**29, 2**31 - 1, size=(300, 16), dtype=np.int32)  # squares far past 2**53: rounding
    rows = np.sort(rng.choice(300, 250, replace=False))
    c = counts[rows].astype(np.float64)
    assert not np.array_equal((c * c).sum(axis=0), (c * c)[::-1].sum(axis=0))  # the order of the sum matters
    expected = _stats_in_one_chunk_per_shard(counts, rows, 64)
    for block in (1, 7, 64, 1000):
        assert shards.channel_stats(counts, rows, chunk=64, block=block) == expected


def test_parquet_written_in_row_groups_is_the_file_to_parquet_writes():
    n = dataset_write.ROW_GROUP + 1234  # two row groups
    df = pd.DataFrame({"x": np.where(np.arange(n) % 3, np.arange(n) * 0.5, np.nan),
                       "core": pd.array(np.where(np.arange(n) % 2, "A", "B-1"), dtype="str"),
                       "n": np.arange(n)})
    whole = io.BytesIO()
    df.to_parquet(whole, index=False, row_group_size=dataset_write.ROW_GROUP)
    assert pq.ParquetFile(io.BytesIO(whole.getvalue())).num_row_groups == 2
    blocks = io.BytesIO()
    dataset_write.write_parquet(blocks, np.arange(n), lambda r: df.iloc[r].reset_index(drop=True))
    assert blocks.getvalue() == whole.getvalue()


def _failing_after(calls: int, original, error):
    count = {"n": 0}

    def wrapped(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise error
        return original(*a, **k)
    return wrapped


@pytest.mark.parametrize("where, error, message", [
    ("staging", OSError(errno.ENOSPC, "No space left on device"), r"stopped at .*\.staging.*No space left"),
    ("shard", OSError(errno.ENOSPC, "No space left on device"), r"stopped at .*d[/\\]train-00001\.npy"),
    ("fit", UserError("injected"), "injected"),
])
def test_a_failure_after_some_batches_leaves_the_old_data_set_and_nothing_else(tmp_path, source, monkeypatch, where,
                                                                                 error, message):
    old = build(tmp_path, source, "d")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setattr(raw, "BATCH_FILES", 50)
    if where == "staging":  # the fourth batch of counts cannot be staged
        monkeypatch.setattr(staging.RowFile, "append", _failing_after(3, staging.RowFile.append, error))
    elif where == "shard":  # after the first shard of train
        monkeypatch.setattr(dataset_write, "save_npy_blocks", _failing_after(1, dataset_write.save_npy_blocks, error))
    else:  # the element fit of the third run group
        monkeypatch.setattr(staging.RowFile, "put", _failing_after(2, staging.RowFile.put, error))
    with pytest.raises(UserError, match=message):
        build(tmp_path, source, "d", overwrite=True, shard_rows=100)
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["d"]  # no temporary folder left beside it
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_a_bad_file_in_a_later_batch_fails_cleanly_or_is_skipped(tmp_path, source, monkeypatch):
    monkeypatch.setattr(raw, "BATCH_FILES", 5)
    copy = tmp_path / "copy" / "raw"
    shutil.copytree(source / "raw", copy)
    victim = sorted(copy.rglob("*.spe"))[23]  # in the fifth batch
    victim.write_text(victim.read_text().replace("$DATA:", "$BROKEN:"))
    with pytest.raises(UserError, match=r"no \$DATA: line"):
        build_dataset(tmp_path, "d", raw=copy, bulk=source / "bulk.csv")
    assert not any((tmp_path / "datasets").iterdir())
    build_dataset(tmp_path, "d", raw=copy, bulk=source / "bulk.csv", on_error="skip")
    info = load_info(tmp_path, "d")
    assert info["skipped"] == [{"file": victim.relative_to(copy).as_posix(), "reason": info["skipped"][0]["reason"]}]
    assert info["counts"]["files_read"] == len(list(copy.rglob("*.spe"))) - 1


def test_the_file_search_is_the_sorted_glob_it_replaced(tmp_path):
    root = tmp_path / "raw"
    for rel in ["a/Run 1 at  10kV/x.spe", "a/Run 1 at  10kV/.hidden.spe", "a/Run 1 at  10kV/B.SPE",
                "a/Run 1 at  10kV/notes.txt", "a-1/Run 1 at  10kV/y.spe", "a/Run 2 at  30kV/z.spe",
                "a/Run-x/w.spe", "a.b/run/v.spe"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "a" / "Run 1 at  10kV" / "folder.spe").mkdir()
    for kv in (10.0, 30.0, None):
        globbed = [f for f in sorted(root.glob("*/*/*")) if f.suffix.lower() == ".spe"]
        globbed = [f for f in globbed if kv is None or raw.run_kv(f.parent.name) in (None, kv)]
        assert raw.find_files(root, kv) == (root, globbed)
    assert raw.find_files(root / "a", None)[1] == [f for f in raw.find_files(root, None)[1] if f.parts[-3] == "a"]


def test_the_staged_files_hash_is_the_hash_of_all_rows_sorted(tmp_path):
    """Folders whose names sort unlike their paths ('a-1/' before 'a/'), and nested ones (the fallback)."""
    for names in (["a/r/x.spe", "a/r/y.spe", "a/r-2/x.spe", "a-1/r/x.spe", "a.b/r/x.spe", "b/r/x.spe"],
                  ["a/x", "a/r/y", "a/s", "a-1/q"]):
        frames = staging.FrameFiles(tmp_path / f"m{len(names)}")
        digests = [hashlib.sha256(n.encode()).hexdigest() for n in names]
        for k in range(0, len(names), 2):  # batches of two rows: folders span batches
            frames.append(pd.DataFrame({"source_file": names[k:k + 2], "sha256": digests[k:k + 2]}))
        assert frames.files_sha256() == staging.files_sha256(names, digests)
