"""predict.py over an archive: core by core into `<out>.parts/`, Parquet or CSV, and a run killed mid-way that
resumes where it stopped and gives the table of one uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from coremax.cli import predict_main
from coremax.data.simulate import simulate_archive
from coremax.eval.predict_archive import fingerprint, part_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Six newly scanned cores (another seed than the training archive)."""
    out = tmp_path_factory.mktemp("archive") / "new"
    simulate_archive(out, seed=7, cores=6, spacing_mm=100.0, workers=1)
    return out / "raw"


def _records(parts: Path) -> list[Path]:
    """The finished cores' records in a parts folder (not the run's own, .run.json)."""
    return [p for p in parts.glob("*.json") if not p.name.startswith(".")]


def _predict(data_root, experiment, raw, out, *more):
    predict_main(["--data-root", str(data_root), "--experiment", experiment, "--raw", str(raw), "--out", str(out),
                  "--quiet", *more])


def test_an_archive_is_written_as_parquet_or_csv_with_one_profile_per_core(data_root, finetuned, archive, tmp_path,
                                                                         capsys, monkeypatch):
    from coremax.eval import predict

    read, original = [], predict.read_folder
    monkeypatch.setattr(predict, "read_folder", lambda *a, **k: read.append(original(*a, **k)) or read[-1])
    _predict(data_root, finetuned, archive, tmp_path / "p.parquet")
    # one core in memory at a time: the spectra read at once are one core's, never the archive's
    assert len(read) == 6 and all(r[0]["core"].nunique() == 1 for r in read)
    said = capsys.readouterr().out
    assert "wrote" in said and "earlier run" not in said
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert table["core"].nunique() == 6 and {"CaCO3_pred", "TOC_hi", "flag_ood", "Ca_area"} <= set(table.columns)
    assert len(list(tmp_path.glob("p-profile-*.png"))) == 6 and (tmp_path / "p-cores.csv").is_file()
    assert not (tmp_path / "p.parquet.parts").exists()  # the output is whole: no part is left
    _predict(data_root, finetuned, archive, tmp_path / "p.csv")
    csv = pd.read_csv(tmp_path / "p.csv", dtype={"scanner_reason": str}).fillna({"scanner_reason": ""})
    pd.testing.assert_frame_equal(csv, table, check_dtype=False)  # CSV: an empty reason reads back as NaN


def test_a_killed_run_resumes_where_it_stopped_and_gives_the_same_table(data_root, finetuned, archive, tmp_path,
                                                                        capsys):
    _predict(data_root, finetuned, archive, tmp_path / "whole.parquet")
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, str(ROOT / "scripts" / "predict.py"), "--data-root", str(data_root), "--experiment",
           finetuned, "--raw", str(archive), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = tmp_path / "killed.parquet.parts"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and len(_records(parts)) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way: after the second core's part, during the third's
    proc.wait()
    finished = len(_records(parts))
    if not 1 <= finished < 6:
        pytest.skip(f"the run was not caught mid-way ({finished} of 6 cores finished)")
    assert not out.exists()  # nothing half-written where the output goes
    assert all(p.with_suffix(".parquet").is_file() for p in _records(parts))  # a record means a whole part
    _predict(data_root, finetuned, archive, out)
    said = capsys.readouterr().out
    assert f"({finished} cores finished by an earlier run were kept)" in said
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "whole.parquet"))


def test_parts_of_another_model_are_not_reused(data_root, finetuned, archive, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    parts = tmp_path / "p.parquet.parts"
    parts.mkdir()
    (parts / ".run.json").write_text('{"model": "another"}')
    folder = sorted(archive.iterdir())[0]
    stale = parts / f"{part_name(folder)}.parquet"
    stale.write_text("not a part of this model")  # reused, it would break the join
    stale.with_suffix(".json").write_text(json.dumps({"files": fingerprint(folder), "spectra": 1}))
    _predict(data_root, finetuned, archive, out)
    assert "earlier run" not in capsys.readouterr().out and pd.read_parquet(out)["core"].nunique() == 6


def test_a_core_of_unreadable_files_is_skipped_and_a_folder_may_hold_spaces(data_root, finetuned, archive,
                                                                            tmp_path, capsys):
    import shutil

    raw = tmp_path / "raw"
    for folder in sorted(archive.iterdir())[:2]:
        shutil.copytree(folder, raw / f"scanned {folder.name}")  # a folder named apart from its core
    bad = raw / "broken core" / "Run 1 at  10kV"
    bad.mkdir(parents=True)
    (bad / "X-1_0000   10.0mm  10s  10kV 1000uA No-Filter.spe").write_text("not a spectrum")
    _predict(data_root, finetuned, raw, tmp_path / "p.csv", "--bulk", str(archive.parent / "bulk.csv"))
    err = capsys.readouterr().err
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["core"].nunique() == 2 and len(list(tmp_path.glob("p-profile-*.png"))) == 2
    assert "1 files could not be read" in err and "broken core" in err
    # the lab samples are those of the cores the files name, whatever their folder is called
    assert table.groupby("core")["used_for_recalibration"].any().all() and "recalibrated on" in err


def test_freed_memory_goes_back_on_glibc_and_nothing_happens_elsewhere(monkeypatch):
    import ctypes.util
    import platform

    from coremax.engine import runtime

    if platform.libc_ver()[0] == "glibc":  # predict.py's setting took: mallopt answers 1 when it accepts a value
        assert runtime.freed_memory_returned() is True
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libno-such-c.so")
    assert runtime.freed_memory_returned() is False  # another C library: no error, the run goes on
