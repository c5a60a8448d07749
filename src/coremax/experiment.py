"""The experiment folder: naming, frozen config, provenance, structured logs, results pickles.

<data-root>/experiments/<name>/
    config.toml       fully resolved config (pass it back with --config to repeat the run)
    provenance.toml   command, times, status, code version, library versions, machine, data, parent
    pip-freeze.txt    every installed package and version when the run started (one more per resume)
    code.patch        uncommitted changes of the code when the run started from a dirty tree
    checkpoints/      best-model.pth, last.pth, checkpoint-epoch-<N>.pth
    logs/events.jsonl one JSON event per line
    results/          pandas pickles (history.pkl, test outputs) and figures
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shlex
import signal
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from coremax import logs
from coremax.errors import UserError
from coremax.io import file_sha256, read_pickle, read_toml, utc_now, write_pickle, write_text, write_toml
from coremax.paths import check_name, experiment_dir, relative_to_root
from coremax.provenance import code_version, environment, installed_packages

STATUSES = ("running", "completed", "failed", "interrupted")


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the run ends as `interrupted` with its files intact."""


class Experiment:
    def __init__(self, data_root: str | os.PathLike, name: str):
        self.data_root = Path(data_root)
        self.name = check_name(name, "experiment")
        self.path = experiment_dir(self.data_root, name)

    checkpoints = property(lambda self: self.path / "checkpoints")
    logs_dir = property(lambda self: self.path / "logs")
    results = property(lambda self: self.path / "results")
    log_file = property(lambda self: self.path / "logs" / "events.jsonl")
    config_file = property(lambda self: self.path / "config.toml")
    provenance_file = property(lambda self: self.path / "provenance.toml")

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, data_root, name: str) -> "Experiment":
        """An existing experiment (for testing, prediction, resuming)."""
        exp = cls(data_root, name)
        if not exp.config_file.is_file():
            raise UserError(f"No experiment named {name!r} under {exp.path.parent}; check the name "
                            "(ls that folder) or pass the right --data-root.")
        return exp

    @classmethod
    def create(cls, data_root, name: str, config: dict, resume: bool = False, command=None) -> "Experiment":
        """Claim the folder and freeze the config. Never overwrites an experiment unless resuming it, and never
        one that another process is running: the folder is made with one mkdir (two processes asking for one
        name: one wins) and held with an advisory lock until the run ends."""
        exp = cls(data_root, name) if name else None
        if resume:
            if not exp.config_file.is_file():
                raise UserError(f"Cannot resume {name!r}: there is no experiment at {exp.path}; "
                                "drop --resume to start it, or check --name and --data-root.")
        elif exp is not None:
            try:
                exp.path.parent.mkdir(parents=True, exist_ok=True)
                exp.path.mkdir()
            except FileExistsError:
                raise UserError(f"The experiment {name!r} already exists at {exp.path}; choose another --name, "
                                "or pass --resume to continue it.") from None
        else:
            exp = cls(data_root, claim_unique_name(data_root, config.get("experiment", {}).get("stage", "run")))
        exp.hold()
        for folder in (exp.checkpoints, exp.logs_dir, exp.results):
            folder.mkdir(parents=True, exist_ok=True)
        config = {**config, "experiment": {**config.get("experiment", {}), "name": exp.name}}
        # a resumed run keeps the config its checkpoints were made by; a sweep's folder of tables takes its new one
        if not (resume and config["experiment"].get("stage")):
            write_toml(exp.config_file, config)
        exp._start_provenance(config, resume, command if command is not None else sys.argv)
        return exp

    def hold(self) -> None:
        """Take the folder's advisory lock for this process's run (released when the run ends or the process
        dies, so a killed run can be resumed); refused while another live process holds it. A process may open
        a folder it holds itself again."""
        if str(self.path) in _HELD:
            return
        fd = try_lock(self.path / ".lock")
        if fd is None:
            owner = self.provenance().get("process", {})
            raise UserError(f"The experiment {self.name!r} is being run by another process (pid "
                            f"{owner.get('pid', '?')} on {owner.get('host', '?')}); wait for it to end or stop it "
                            "before resuming it.")
        _HELD[str(self.path)] = fd

    def release(self) -> None:
        """This process is done with the folder: its lock goes (a no-op when it holds none)."""
        fd = _HELD.pop(str(self.path), None)
        if fd is not None:
            os.close(fd)

    # -- config and provenance -----------------------------------------------------------------------------
    def config(self) -> dict:
        return read_toml(self.config_file)

    @classmethod
    def state(cls, data_root, name: str) -> str:
        """The status of the experiment `name` (see status()), or "absent" when there is none: the one answer to
        "is it there, and is it complete?" everywhere."""
        if not (experiment_dir(data_root, name) / "config.toml").is_file():
            return "absent"
        return cls.open(data_root, name).status()

    def status(self) -> str:
        """The recorded status, or "stale" for a run recorded as running whose process is gone (killed with
        SIGKILL, or its machine went down): it will never finish by itself; resume it."""
        prov = self.provenance()
        status = prov.get("status", "unknown")
        if status == "running" and prov.get("process", {}).get("host") == socket.gethostname() \
                and not _alive(prov["process"].get("pid", 0)):
            return "stale"
        return status

    def provenance(self) -> dict:
        return read_toml(self.provenance_file) if self.provenance_file.is_file() else {}

    def record(self, **fields) -> None:
        """Merge fields into provenance.toml (rewritten atomically)."""
        prov = self.provenance()
        prov.update(fields)
        write_toml(self.provenance_file, prov, in_place_when_full=True)  # a run's status is written even then

    def _start_provenance(self, config: dict, resume: bool, command) -> None:
        git, patch = code_version()
        if patch:
            write_text(self.path / "code.patch", patch)
        prov = self.provenance() if resume else {}
        runs = prov.get("resumed_utc", [])
        if resume:
            runs.append(utc_now())
        # The packages of this start; a resume may run under others, so each start writes its own list.
        freeze = f"pip-freeze-resume-{len(runs)}.txt" if resume else "pip-freeze.txt"
        write_text(self.path / freeze, installed_packages())
        dataset = config.get("data", {}).get("dataset", "")
        info = self.data_root / "datasets" / dataset / "info.toml" if dataset else None
        this_command = shlex.join(str(c) for c in command)
        if resume:  # the original command stays; each resume adds its own
            prov["resume_commands"] = prov.get("resume_commands", []) + [this_command]
        prov.update({
            "process": {"host": socket.gethostname(), "pid": os.getpid()},
            "experiment": self.name,
            "command": prov.get("command", this_command),
            "started_utc": prov.get("started_utc", utc_now()),
            "ended_utc": "",
            "status": "running",
            "stage": config.get("experiment", {}).get("stage", ""),
            "seed": config.get("experiment", {}).get("seed", 0),
            "git": {**git, "patch": "code.patch" if patch else ""},
            "packages": prov.get("packages", []) + [freeze],
            **environment(),
            "dataset": {"name": dataset,
                        "info_sha256": file_sha256(info) if info is not None and info.is_file() else "",
                        # the data files themselves, so test.py can tell that it scores the rows held out then
                        "files": read_toml(info).get("files", {}) if info is not None and info.is_file() else {}},
            # Unlabelled pools a pretraining read beside the data set, each with the hash of its info.toml.
            "pool": {name: file_sha256(self.data_root / "datasets" / name / "info.toml")
                     for name in config.get("data", {}).get("pool", [])
                     if (self.data_root / "datasets" / name / "info.toml").is_file()},
        })
        # What config.toml said when the model was made, to tell an edited key from a trained one later.
        prov["trained_config"] = prov.get("trained_config") or config
        if resume:
            prov["resumed_utc"] = runs
        write_toml(self.provenance_file, prov)

    def set_status(self, status: str) -> None:
        assert status in STATUSES
        self.record(status=status, ended_utc="" if status == "running" else utc_now())

    # -- results -------------------------------------------------------------------------------------------
    def write_result(self, name: str, df: pd.DataFrame) -> Path:
        path = self.results / f"{name}.pkl"
        write_pickle(path, df)
        return path

    def remove_result(self, name: str) -> None:
        """Remove a result (and its signature) that no longer belongs to the results beside it."""
        for path in (self.results / f"{name}.pkl", self.results / f"{name}.pkl.hmac"):
            path.unlink(missing_ok=True)

    def has_result(self, name: str) -> bool:
        return (self.results / f"{name}.pkl").is_file()

    def read_result(self, name: str) -> pd.DataFrame:
        return read_pickle(self.data_root, self.results / f"{name}.pkl")

    def relpath(self, path) -> str:
        """A path as stored in config/provenance: relative to the data root."""
        return relative_to_root(self.data_root, path)

    # -- running -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, main_process: bool = True):
        """Log to this experiment and keep its status true: completed, failed (with the traceback in the
        log) or interrupted (Ctrl-C, SIGTERM). Everything written before an error stays as it was."""
        logs.push(self.log_file if main_process else None, "info" if main_process else "warning",
                  experiment=self.name)
        log = logs.get_logger()
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            raise _Terminated()

        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            if main_process:
                log.info("run_started", path=str(self.path))
            yield log
        except BaseException as e:
            if main_process:
                self._ended(e, log)
            raise
        else:
            if main_process:
                # What was trained, so a later test or prediction can tell that it uses exactly that.
                self.record(model_sha256={p.name: file_sha256(p) for p in (self.checkpoints / "best-model.pth",
                                                                          self.checkpoints / "baseline.skops")
                                          if p.is_file()})
                self.set_status("completed")
                log.info("run_completed", path=str(self.path))
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            logs.pop()
            self.release()

    def _ended(self, error: BaseException, log) -> None:
        """Record a run that stopped (Ctrl-C, SIGTERM) or failed: the status first, then the event with its
        traceback; on a full disk either may fail, which must not replace the error that ended the run."""
        stopped = isinstance(error, KeyboardInterrupt)
        with contextlib.suppress(OSError):
            self.set_status("interrupted" if stopped else "failed")
        with contextlib.suppress(OSError):
            (log.warning if stopped else log.error)("run_interrupted" if stopped else "run_failed", exc_info=error)


_HELD: dict[str, int] = {}  # experiment folders whose lock this process holds, with its descriptor


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive advisory lock on `path` (created if missing), or None when another
    open file (another process) holds it. Closing the descriptor, or the process ending, releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_unique_name(data_root, stage: str) -> str:
    """A timestamped name whose folder this call made, e.g. pretrain-20261123-101500 (then -2, -3, ...): each
    candidate is claimed with one mkdir, so runs started in the same second (a SLURM array) get different ones."""
    base = f"{stage}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    root = experiment_dir(data_root, base).parent
    root.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        name = base if i == 1 else f"{base}-{i}"
        try:
            experiment_dir(data_root, name).mkdir()
            return name
        except FileExistsError:
            continue
