"""Archiving: pack with a manifest of hashes, unpack into another data root, check, and use it there."""

import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from conftest import ROOT
from coremax.archive import check, pack, unpack
from coremax.data.dataset import load_split
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
    core = load_split(other, "synthetic", "test")["core"].iloc[0]
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
    with pytest.raises(UserError, match="leaves the archive"):
        unpack(evil, tmp_path / "root")


def _tar(path, members):
    """A tar.gz with the given (name, kind, payload) members; kind is file, dir, symlink, link or fifo."""
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = payload.decode() if payload else ""
            tar.addfile(info)
    return path


@pytest.mark.parametrize("members, message", [
    ([("experiments/x/a.txt", "file", b"a"), ("experiments/x/../../datasets/base/train.pkl", "file", b"x")],
     "leaves the archive"),
    ([("experiments/x/a.txt", "file", b"a"), ("experiments/x/link", "symlink", b"../../datasets")], "link"),
    ([("experiments/x/a.txt", "file", b"a"), ("experiments/x/hard", "link", b"experiments/x/a.txt")], "link"),
    ([("experiments/x/fifo", "fifo", b"")], "special file"),
    ([("experiments/bad name!/a.txt", "file", b"a")], "name"),
    ([("/etc/x", "file", b"a")], "leaves the archive"),
])
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, members, message):
    root = tmp_path / "root"
    root.mkdir()
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(UserError, match=message):
        unpack(archive, root)
    assert list(root.rglob("*")) == []


def test_damaged_archives_leave_nothing(tmp_path, data_root, finetuned):
    good = pack(data_root, "experiment", finetuned, tmp_path / "ft.tar.gz")
    root = tmp_path / "root"
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_text("hello")
    for bad in (truncated, not_tar):
        with pytest.raises(UserError, match="cannot be read as a tar archive"):
            unpack(bad, root)
    # A file changed inside the archive: the hash check refuses it and nothing stays in the data root.
    import io

    changed = tmp_path / "changed.tar.gz"
    with tarfile.open(good) as src, tarfile.open(changed, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("config.toml"):
                data = data + b"\n# planted\n"
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(UserError, match="manifest lists"):  # its size no longer matches: refused before extraction
        unpack(changed, root)
    assert not root.exists() or list(root.rglob("*")) == []


def test_results_pickles_from_elsewhere_are_not_read_until_trusted(tmp_path, data_root, finetuned):
    import pickle
    import shutil

    from coremax.analysis import gather_experiments
    from coremax.archive import trust
    from coremax.experiment import Experiment
    from coremax.io import UntrustedPickle

    root = tmp_path / "root"
    shutil.copytree(data_root / "experiments" / finetuned, root / "experiments" / finetuned)
    exp = Experiment.open(root, finetuned)
    assert not exp.read_result("history").empty  # written (and signed) on this machine

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    planted = exp.results / "history.pkl"
    planted.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UntrustedPickle, match="not read"):
        exp.read_result("history")
    (exp.results / "history.pkl.hmac").write_text("0" * 64)
    with pytest.raises(UntrustedPickle):
        exp.read_result("history")
    with pytest.warns(UserWarning, match="not written by CoreMAX on this machine"):
        gather_experiments(root)
    assert not (tmp_path / "pwned").exists()  # nothing ran
    # The user vouches for a benign copy: then it reads.
    pd.DataFrame({"epoch": [1], "train_loss": [0.5]}).to_pickle(planted)
    assert trust(exp.path) >= 1
    assert exp.read_result("history")["epoch"].tolist() == [1]


def test_archive_extraction_is_capped_by_the_manifest_and_a_manifest_without_files_is_a_sentence(tmp_path):
    import io
    import tarfile

    from coremax.archive import MANIFEST, check, unpack

    def bomb(path, manifest: bytes, size: int):
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(f"experiments/x/{MANIFEST}")
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
            big = tarfile.TarInfo("experiments/x/big.bin")
            big.size = size

            class Zeros(io.RawIOBase):  # a file of zeros that gzip squeezes to almost nothing
                left = size

                def readable(self):
                    return True

                def readinto(self, b):
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n
            tar.addfile(big, io.BufferedReader(Zeros()))
        return path

    root = tmp_path / "root"
    root.mkdir()
    listed = bomb(tmp_path / "a.tar.gz", b'[files]\n"big.bin" = "00"\n[sizes]\n"big.bin" = 10\n', 50 * 2**20)
    with pytest.raises(UserError, match="would write 52428800 bytes but its manifest lists 10"):
        unpack(listed, root)
    assert list(root.rglob("*")) == []
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / MANIFEST).write_text('kind = "experiment"\n')
    with pytest.raises(UserError, match="no \\[files\\] table"):
        check(tmp_path / "f")
