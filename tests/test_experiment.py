"""Experiment folders: names, no overwrite, status on failure, JSON logs, provenance, relocation."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

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
