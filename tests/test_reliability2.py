"""Reliability II: runs that would silently lose their model, and raw folders mixing labelled and unlabelled cores."""

import shutil

import pandas as pd
import pytest

from conftest import interrupted, train
from coremax.data.dataset import build_dataset, load_info, load_split
from coremax.engine import trainer
from coremax.errors import UserError
from coremax.paths import experiment_dir


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


def test_a_finetune_without_labelled_validation_rows_is_refused_before_any_folder(tmp_path, data_root):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    table = tmp_path / "datasets" / "synthetic" / "val.parquet"
    meta = pd.read_parquet(table)
    for t in ("CaCO3", "TOC", "Ca", "Fe", "Si", "K"):
        if t in meta.columns:
            meta[t] = float("nan")
    meta.to_parquet(table)
    with pytest.raises(UserError, match="no validation rows with any of"):
        train(tmp_path, "noval", "finetune", "optim.epochs=1")
    assert not experiment_dir(tmp_path, "noval").exists()


def test_a_nan_validation_score_stops_the_run_naming_the_epoch(tmp_path, data_root, monkeypatch):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    original = trainer.FinetuneTask.validate

    def nan_score(self, model, val, batch_size):
        return {**original(self, model, val, batch_size), "val_nrmse": float("nan")}

    monkeypatch.setattr(trainer.FinetuneTask, "validate", nan_score)
    with pytest.raises(UserError, match="val_nrmse is nan at epoch 1"):
        train(tmp_path, "nanval", "finetune", "optim.epochs=1")


def test_best_model_is_written_before_last(tmp_path, data_root, monkeypatch):
    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    order = []
    save = trainer.ckpt.save
    monkeypatch.setattr(trainer.ckpt, "save", lambda path, state: (order.append(path.name), save(path, state))[1])
    train(tmp_path, "order", "finetune", "optim.epochs=1")
    assert order == ["best-model.pth", "last.pth"]


def _spe(counts_text: str, header_extra: str = "", data_range: str = "0 3") -> str:
    return (f"$SPEC_ID:\nx\n$MEAS_TIM:\n10 12\n$ACC_VOLT:\n10\n{header_extra}$DATA:\n{data_range}\n{counts_text}\n")


def test_counts_keep_every_digit_and_the_range_start():
    import numpy as np

    from coremax.data.spe import parse_spe

    _, counts = parse_spe(_spe("16777217 2147483647 0 5"), "big.spe", spectrum_length=4)
    assert counts.tolist() == [16777217, 2147483647, 0, 5]
    assert np.asarray(counts).astype(np.int32).tolist() == [16777217, 2147483647, 0, 5]  # as read_folder keeps them
    with pytest.raises(UserError, match="not a count"):
        parse_spe(_spe("2147483648 0 0 0"), "over.spe", spectrum_length=4)
    meta, counts = parse_spe(_spe("7 8 9", data_range="1 3"), "from1.spe", spectrum_length=4)
    assert counts.tolist() == [0, 7, 8, 9] and meta["spectrum_length"] == 4
    with pytest.raises(UserError, match="must be finite"):
        parse_spe(_spe("1 2 3 4", "$TUBE_CUR:\n1e999\n"), "inf.spe", spectrum_length=4)


def test_read_folder_stores_counts_as_exact_integers(tmp_path):
    from coremax.data.raw import read_folder

    run = tmp_path / "raw" / "C1" / "Run 1 at  10kV"
    run.mkdir(parents=True)
    (run / "C1_0000    5.0mm  10s  10kV 1000uA F1.spe").write_text(_spe("16777217 3 2 1"))
    _, counts, _ = read_folder(tmp_path / "raw", 10.0, 4, workers=1)
    assert counts.dtype.kind == "i" and counts[0].tolist() == [16777217, 3, 2, 1]


def test_logs_are_strict_json_and_links_are_not_written_through(tmp_path):
    import json
    import os

    from coremax import logs
    from coremax.io import write_text

    path = tmp_path / "logs" / "events.jsonl"
    logs.push(path, experiment="x")
    try:
        logs.get_logger().info("epoch", val=float("nan"), best=[float("inf"), 1.0])
    finally:
        logs.pop()
    event = json.loads(path.read_text().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert event["val"] is None and event["best"] == [None, 1.0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "exp").mkdir()
    os.symlink(outside, tmp_path / "exp" / "results")
    with pytest.raises(UserError, match="symbolic link"):
        write_text(tmp_path / "exp" / "results" / "a.txt", "x")
    os.symlink(outside / "events.jsonl", tmp_path / "exp" / "events.jsonl")
    with pytest.raises(UserError, match="symbolic link"):
        logs.push(tmp_path / "exp" / "events.jsonl")
    assert list(outside.iterdir()) == []


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


def test_the_signing_key_is_private_from_the_start_and_short_or_open_keys_are_refused(tmp_path, monkeypatch):
    import os
    import stat

    from coremax import io

    key = tmp_path / "keys" / "results.key"
    monkeypatch.setenv(io.KEY_ENV, str(key))
    first = io._key()
    assert len(first) == io.KEY_BYTES and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700 and io._key() == first
    assert [p.name for p in key.parent.iterdir()] == ["results.key"]  # no temporary file left behind
    os.chmod(key, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        io._key()
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    with pytest.raises(UserError, match="fewer than 32"):
        io._key()


def test_a_non_ascii_signature_is_an_untrusted_pickle_not_a_traceback(tmp_path):
    from coremax.io import UntrustedPickle, read_pickle, write_pickle

    path = tmp_path / "results" / "x.pkl"
    write_pickle(path, pd.DataFrame({"a": [1]}))
    path.with_name("x.pkl.hmac").write_bytes("é∂ƒ".encode("utf-8"))
    with pytest.raises(UntrustedPickle):
        read_pickle(tmp_path, path)


def test_seeds_memory_budgets_and_system_errors_end_in_one_sentence(capsys):
    import errno

    from coremax import config as configlib
    from coremax.cli.common import guard
    from coremax.stages import function_defaults

    for bad in ("experiment.seed=200000000000000", "data.max_memory_gb=nan", "data.max_memory_gb=-1"):
        with pytest.raises(UserError, match=bad.split("=")[0]):
            configlib.resolve(None, [bad], function_defaults=function_defaults())

    @guard
    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.pth")

    with pytest.raises(SystemExit) as exit_:
        full_disk()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "free some space" in err and "Traceback" not in err and "/data/x.pth" in err


def test_only_contents_are_bounded_and_a_non_finite_prediction_is_refused():
    import numpy as np

    from coremax.eval.run import Predictor

    p = Predictor(["CaCO3", "d18O"], lambda x: np.array([[120.0, -3.5], [-2.0, 150.0]]), lambda x: x, ("CaCO3",))
    assert p.bounded(np.zeros((2, 4))).tolist() == [[100.0, -3.5], [0.0, 150.0]]
    broken = Predictor(["CaCO3"], lambda x: np.array([[np.inf], [1.0]]), lambda x: x, ("CaCO3",))
    with pytest.raises(UserError, match="non-finite value for 1 of 2"):
        broken.bounded(np.zeros((2, 4)))


def test_the_data_set_lists_its_contents(data_root):
    info = load_info(data_root, "synthetic")
    assert set(info["contents"]) >= {"CaCO3", "TOC"}


def test_sweep_metrics_are_checked_before_any_run_and_n_counts_only_finite_runs(tmp_path):
    import numpy as np

    from coremax import config as configlib
    from coremax.sweep import SWEEP_DEFAULTS, run_sweep, summarise

    sweep = configlib.resolve(None, ['sweep.name="typo"', 'sweep.overrides=["experiment.stage=\\"pretrain\\""]',
                                     'sweep.metrics=["val_rmse_CaCO3"]', "sweep.seeds=[0]"],
                              default_file=SWEEP_DEFAULTS)["sweep"]
    with pytest.raises(UserError, match="does not record"):
        run_sweep(tmp_path, sweep)
    assert not (tmp_path / "experiments").exists()
    table = pd.DataFrame({"variant": "", "point": [0, 0, 0], "seed": [0, 1, 2], "experiment": "e",
                          "val_rmse_CaCO3": [1.0, np.nan, 3.0]})
    out = summarise(table, ["variant"], "val_rmse_CaCO3")
    assert out["n"].iloc[0] == 2 and out["val_rmse_CaCO3"].iloc[0] == 2.0


def test_two_processes_on_one_name_one_wins_and_the_other_changes_nothing(tmp_path, data_root):
    import subprocess
    import sys

    from conftest import FAST, ROOT

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--data-root", str(tmp_path), "--stage", "pretrain",
           "--name", "race", "optim.epochs=1", *FAST]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "already exists" in loser and "Traceback" not in loser and len(loser.strip().splitlines()) == 1
    from coremax.experiment import Experiment

    exp = Experiment.open(tmp_path, "race")
    assert exp.provenance()["status"] == "completed" and "resume_commands" not in exp.provenance()


def test_a_live_run_or_sweep_is_not_resumed_or_rerun_by_another_process(tmp_path, data_root):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from coremax.experiment import Experiment, claim_unique_name, try_lock

    shutil.copytree(data_root / "datasets", tmp_path / "datasets")
    train(tmp_path, "live", "pretrain", "optim.epochs=1")
    exp = Experiment.open(tmp_path, "live")
    before = {p: p.read_bytes() for p in exp.path.rglob("*") if p.is_file()}
    fd = try_lock(exp.path / ".lock")  # as the process that runs it would
    try:
        with pytest.raises(UserError, match="being run by another process"):
            train(tmp_path, "live", "pretrain", "optim.epochs=1", resume=True)
    finally:
        os.close(fd)
    assert {p: p.read_bytes() for p in exp.path.rglob("*") if p.is_file()} == before
    sweep = tmp_path / "s.toml"
    sweep.write_text('[sweep]\nname = "busy"\noverrides = [\'experiment.stage="baseline"\', '
                     '\'baseline.method="pls"\']\nseeds = [0]\n')
    fd = try_lock(tmp_path / "experiments" / ".busy.sweep-lock")
    try:
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "--config", str(sweep),
                              "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=300)
    finally:
        os.close(fd)
    assert res.returncode == 2 and "being run by another process" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "experiments" / "busy").exists()
    names = {claim_unique_name(tmp_path, "pretrain") for _ in range(3)}  # one second, three runs: three names
    assert len(names) == 3 and all((tmp_path / "experiments" / n).is_dir() for n in names)


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


def test_an_experiment_moved_with_rsync_tests_and_resumes_there(tmp_path, data_root, monkeypatch):
    """rsync -a where it is installed, else cp -a (the same: files, times, modes and links as they are)."""
    import subprocess

    from coremax.eval.run import evaluate_experiment

    here = tmp_path / "here"
    shutil.copytree(data_root / "datasets", here / "datasets")
    interrupted(here, "moving", "finetune", "optim.epochs=2", monkeypatch=monkeypatch, at=2)
    there = tmp_path / "there"
    copy = ["rsync", "-a", f"{here}/", f"{there}/"] if shutil.which("rsync") else ["cp", "-a", str(here), str(there)]
    subprocess.run(copy, check=True)
    from coremax.experiment import Experiment

    assert len(Experiment.open(there, "moving").read_result("history")) == 1  # signed on this machine
    train(there, "moving", "finetune", "optim.epochs=2", resume=True)
    assert Experiment.open(there, "moving").status() == "completed"
    assert list(Experiment.open(there, "moving").read_result("history")["epoch"]) == [1, 2]
    assert not evaluate_experiment(there, "moving").empty
