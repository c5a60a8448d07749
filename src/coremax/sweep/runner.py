"""Training the runs of a sweep: each point is `scripts/train.py` in its own process, skipped when complete and
resumed from `last.pth` when interrupted; `--jobs N` runs N side by side.

The processes are forked from a server that has imported torch, scikit-learn and the other libraries once: a
fresh interpreter spends about 4 s on 2 CPU cores importing them, as long as a whole baseline fit, and a study runs
some 200 processes. CoreMAX's own modules are imported in each run, so a module added since (a new baseline)
registers as it would in a new interpreter."""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import runpy
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from coremax import config as configlib
from coremax.errors import UserError
from coremax.experiment import Experiment
from coremax.frozen import config_change
from coremax.paths import experiment_dir

TRAIN = Path(__file__).resolve().parents[3] / "scripts" / "train.py"
PRELOAD = ["torch", "sklearn", "skops.io", "pandas", "pyarrow.parquet", "scipy.linalg", "structlog"]
_server = multiprocessing.get_context("forkserver")
_server.set_forkserver_preload(PRELOAD)
# A run's exit status is read once from the server's socket, by join() or by the poll of every live child that
# start() does: two threads reading one status at once lose it (and call a finished run failed), so both take turns.
_STATUS = threading.Lock()


def _state(data_root, name: str) -> str:
    """new, done, resume (interrupted, failed or killed with a last.pth) or restart (the same without one)."""
    status = Experiment.state(data_root, name)
    if status == "absent":
        return "new"
    if status == "completed":
        return "done"
    return "resume" if (experiment_dir(data_root, name) / "checkpoints" / "last.pth").is_file() else "restart"


def check_unchanged(data_root, run: dict) -> None:
    """A run that exists must be the run asked for now: its frozen config equals the one the sweep builds (how it
    runs aside), or skipping or resuming it would put another run's results in the tables."""
    if Experiment.state(data_root, run["name"]) == "absent":
        return
    change = config_change(Experiment.open(data_root, run["name"]).config(), run["config"], ("runtime",))
    if change:
        raise UserError(f"The sweep run {run['name']!r} holds {change[0]} = {change[1]!r} but the sweep now sets "
                        f"{change[2]!r}: its settings changed since it ran; give it a new sweep.name (study.name for "
                        "a study) or delete that run's folder.")


def train(data_root, run: dict, threads: int) -> str:
    """Train (or resume, or skip) one run: {name, config_file, overrides {"section.key": value}}."""
    state = _state(data_root, run["name"])
    if state == "done":
        return "skipped"
    if state == "restart":
        raise UserError(f"The sweep run {run['name']!r} exists without a checkpoint to resume; delete "
                        f"{experiment_dir(data_root, run['name'])} and run the sweep again.")
    argv = ["--data-root", str(data_root), "--name", run["name"]]
    if state == "resume":
        argv += ["--resume"]
    else:
        argv += (["--config", run["config_file"]] if run["config_file"] else []) + configlib.as_overrides(run["overrides"])
    with tempfile.NamedTemporaryFile("w+", prefix="coremax-run-", suffix=".log") as out:
        child = _server.Process(target=_train_process, args=(argv, threads, out.name, dict(os.environ), os.getcwd()))
        with _STATUS:
            child.start()
        multiprocessing.connection.wait([child.sentinel])  # the run ends; its exit status is read under the lock
        with _STATUS:
            child.join()
        if child.exitcode != 0:
            out.seek(0)
            last = (out.read().strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"The sweep run {run['name']!r} failed (exit status {child.exitcode}): {last}")
    return "resumed" if state == "resume" else "trained"


def _train_process(argv: list[str], threads: int, log: str, env: dict, cwd: str) -> None:
    """One run in a process forked from the server: as `scripts/train.py` would run it in a fresh interpreter
    started now (this environment, folder and thread count), its output into `log`."""
    import torch

    os.environ.clear()
    os.environ.update({**env, "OMP_NUM_THREADS": str(threads)})
    os.chdir(cwd)
    torch.set_num_threads(threads)
    fd = os.open(log, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    faulthandler.enable()  # a crash still leaves its last words in the log
    sys.argv = [str(TRAIN), *argv]  # the provenance records the command as it would be typed
    runpy.run_path(str(TRAIN), run_name="__main__")


def train_all(data_root, some: list[dict], jobs: int, log) -> None:
    for run in some:  # every run checked before any trains
        check_unchanged(data_root, run)
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    with ThreadPoolExecutor(max(jobs, 1)) as pool:  # each thread waits on one training process
        for run, what in zip(some, pool.map(lambda r: train(data_root, r, threads), some)):
            log(f"{run['name']}: {what}")


def best_row(data_root, name: str) -> dict:
    """The history row of the epoch that best-model.pth holds (the lowest selection score)."""
    history = Experiment.open(data_root, name).read_result("history")
    score = next((c for c in ("val_nrmse", "val_loss") if c in history.columns), None)
    if score and history[score].isna().all():
        raise UserError(f"The run {name!r} has no finite validation score in its history; delete its folder and "
                        "run the sweep again.")
    # A baseline is fitted once: its one row holds the validation metrics of the hyperparameters it chose.
    return (history.loc[history[score].idxmin()] if score else history.iloc[-1]).to_dict()
