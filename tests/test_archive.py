"""Archiving: pack with a manifest of hashes, unpack into another data root, check, and use it there."""

import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from conftest import ROOT
from coremax.archive import check, pack, unpack
from coremax.errors import UserError


def test_round_trip_to_another_root_then_test_and_predict_there(tmp_path, data_root, pretrained, finetuned):
    archives = [pack(data_root, "dataset", "synthetic", tmp_path / "ds.tar.gz")]
    archives += [pack(data_root, "experiment", name, tmp_path / f"{name}.tar.gz") for name in (pretrained, finetuned)]
    other = tmp_path / "other-root"
    for a in archives:
        folder = unpack(a, other)
        assert check(folder) == []
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "test.py"), "--experiment", finetuned,
                          "--data-root", str(other)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    raw = data_root / "datasets" / "external" / "synthetic" / "raw"
    core = pd.read_pickle(other / "datasets" / "synthetic" / "test.pkl")["core"].iloc[0]
    pred = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), "--experiment", finetuned,
                           "--data-root", str(other), "--raw", str(raw), "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr
    assert core in set(pd.read_csv(tmp_path / "p.csv")["core"])


def test_check_finds_changed_missing_and_extra_files(tmp_path, data_root, finetuned):
    archive = pack(data_root, "experiment", finetuned, tmp_path / "ft.tar.gz")
    folder = unpack(archive, tmp_path / "root")
    (folder / "config.toml").write_text((folder / "config.toml").read_text() + "\n# edited\n")
    (folder / "results" / "history.pkl").unlink()
    (folder / "stray.txt").write_text("x")
    problems = check(folder)
    assert "changed: config.toml" in problems and "missing: results/history.pkl" in problems
    assert "extra: stray.txt" in problems
    with pytest.raises(UserError, match="already exists"):
        unpack(archive, tmp_path / "root")


def test_unpack_refuses_foreign_archives(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="../../x.txt")
    with pytest.raises(UserError, match="not a CoreMAX archive"):
        unpack(evil, tmp_path / "root")
