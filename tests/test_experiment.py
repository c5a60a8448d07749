"""Experiment folders: names, no overwrite, one process per folder, status on failure, JSON logs, provenance,
relocation."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import interrupted, train
from coremax import config as configlib
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.paths import check_name, inside

ROOT = Path(__file__).resolve().parents[1]


def make(tmp_path, name="exp1", **kw):
    cfg = configlib.resolve(None).to_dict()
    return Experiment.create(tmp_path, name, cfg, command=["train.py", "--name", name], **kw)


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", "a/b", "", ".hidden", "a..b", "x y", "..", "a\\b"])
def test_bad_names_are_refused(bad):
    with pytest.raises(UserError):
        check_name(bad)


@pytest.mark.parametrize("good", ["exp1", "pre-tiny_0.5", "A.b-c_d"])
def test_good_names(good):
    assert check_name(good) == good


def test_paths_outside_the_root_are_refused(tmp_path):
    with pytest.raises(UserError, match="outside the data root"):
        inside(tmp_path, "../elsewhere.pkl")
    with pytest.raises(UserError, match="outside the data root"):
        inside(tmp_path, "/etc/passwd")
    assert inside(tmp_path, "experiments/x") == (tmp_path / "experiments/x").resolve()


def test_layout_and_frozen_config_round_trip(tmp_path):
    exp = make(tmp_path)
    for sub in ("checkpoints", "logs", "results"):
        assert (exp.path / sub).is_dir()
    frozen = exp.config()
    assert frozen["experiment"]["name"] == "exp1"
    again = configlib.resolve(exp.config_file, ['experiment.name="exp2"']).to_dict()
    again["experiment"]["name"] = "exp1"
    assert again == frozen


def test_no_overwrite_without_resume(tmp_path):
    make(tmp_path)
    with pytest.raises(UserError, match="already exists.*--resume"):
        make(tmp_path)
    assert make(tmp_path, resume=True).name == "exp1"
    with pytest.raises(UserError, match="Cannot resume"):
        make(tmp_path, name="nothing", resume=True)


def test_unnamed_run_gets_a_unique_timestamped_name(tmp_path):
    a, b = make(tmp_path, name=""), make(tmp_path, name="")
    assert a.name != b.name and a.name.startswith("pretrain-")


def test_failed_run_keeps_status_traceback_and_files(tmp_path):
    exp = make(tmp_path)
    with pytest.raises(ValueError):
        with exp.run() as log:
            (exp.results / "partial.txt").write_text("kept")
            log.info("epoch", epoch=1, loss=0.5)
            raise ValueError("boom")
    assert exp.provenance()["status"] == "failed" and exp.provenance()["ended_utc"]
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    failed = [e for e in events if e["event"] == "run_failed"]
    assert failed and "ValueError: boom" in failed[0]["exception"]
    assert all({"timestamp", "level", "event", "experiment"} <= e.keys() for e in events)
    assert (exp.results / "partial.txt").read_text() == "kept"


def test_interrupt_and_sigterm_mark_interrupted(tmp_path):
    exp = make(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with exp.run():
            os.kill(os.getpid(), signal.SIGTERM)
    assert exp.provenance()["status"] == "interrupted"


def test_completed_run_and_json_lines(tmp_path):
    exp = make(tmp_path)
    with exp.run() as log:
        log.info("epoch", epoch=1, train_loss=0.25, odd=Path("x"))
    assert exp.provenance()["status"] == "completed"
    lines = exp.log_file.read_text().splitlines()
    assert len(lines) >= 3
    events = [json.loads(line) for line in lines]
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["train_loss"] == 0.25 and epoch["experiment"] == "exp1"


def test_provenance_records_commit_and_environment(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    prov = make(tmp_path).provenance()
    assert prov["status"] == "running" and prov["command"] == "train.py --name exp1"
    assert prov["versions"]["torch"] and prov["platform"]["host"] and prov["seed"] == 0
    if head.returncode != 0:
        pytest.skip("not inside a git checkout with a commit")
    assert prov["git"]["commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip() != ""
    assert prov["git"]["dirty"] == dirty
    assert (tmp_path / "experiments/exp1/code.patch").exists() == dirty


def test_copied_experiment_loads_from_another_root(tmp_path):
    exp = make(tmp_path / "a")
    exp.write_result("history", __import__("pandas").DataFrame({"epoch": [1], "loss": [0.1]}))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = Experiment.open(tmp_path / "b", "exp1")
    assert moved.config() == exp.config()
    assert moved.read_result("history")["loss"].tolist() == [0.1]
    with pytest.raises(UserError, match="No experiment named 'nope'"):
        Experiment.open(tmp_path / "b", "nope")


def test_progress_logs_periodically_without_a_terminal(tmp_path):
    from coremax.progress import Progress

    exp = make(tmp_path)
    with exp.run() as log:
        with Progress(5, "epoch 1/1", log, interval_s=0.0, tty=False) as bar:
            for _ in range(5):
                bar.update(loss=0.5)
    events = [json.loads(line) for line in exp.log_file.read_text().splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5] and progress[-1]["loss"] == 0.5


def test_progress_uses_a_bar_on_a_terminal(capsys):
    from coremax.progress import Progress

    with Progress(3, "x", log=None, tty=True) as bar:
        bar.update(loss=1.0)
        assert bar.bar is not None


def test_a_killed_run_reads_as_stale(tmp_path):
    import subprocess

    exp = Experiment.create(tmp_path, "k", {"experiment": {"stage": "pretrain"}}, command=["x"])
    exp.set_status("running")
    dead = subprocess.Popen(["true"])
    dead.wait()
    exp.record(process={"host": exp.provenance()["process"]["host"], "pid": dead.pid})
    assert exp.status() == "stale"
    exp.record(process={"host": exp.provenance()["process"]["host"], "pid": os.getpid()})
    assert exp.status() == "running"


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
