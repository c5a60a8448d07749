"""Shared fixtures: one small synthetic data set and tiny trained experiments, built once per session.

Models use patch_size 64 (32 tokens) so that a few epochs on a few hundred spectra take seconds on 2 cores.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# `make test` runs two pytest-xdist workers on the 2-core machine: one thread each (set before torch is imported,
# so the scripts the tests run inherit it too).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# The key that signs results pickles: one per test session (scripts run by the tests inherit it), removed at exit.
if "COREMAX_KEY_FILE" not in os.environ:
    _KEYS = tempfile.mkdtemp(prefix="coremax-key-")
    atexit.register(shutil.rmtree, _KEYS, ignore_errors=True)
    os.environ["COREMAX_KEY_FILE"] = os.path.join(_KEYS, "results.key")

from coremax import config as configlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model.patch_size=64", "optim.batch_size=32", 'runtime.device="cpu"', "runtime.log_interval_s=0.0",
        "optim.warmup_epochs=1.0"]


def resolved(*overrides, config_file=None) -> dict:
    return configlib.resolve(config_file, list(FAST) + list(overrides)).to_dict()


def history(root, name):
    """The per-epoch history table of an experiment."""
    from coremax.experiment import Experiment

    return Experiment.open(root, name).read_result("history")


def train(data_root, name, stage, *overrides, resume=False):
    from coremax.stages import run_stage

    cfg = resolved(f'experiment.stage="{stage}"', f'experiment.name="{name}"', *overrides)
    return run_stage(cfg, data_root, resume=resume, command=["pytest", name])


def interrupted(data_root, name, stage, *overrides, monkeypatch, at: int = 3):
    """Train, stopped by a KeyboardInterrupt in the validation of epoch `at`: the run a killed job leaves."""
    from coremax.engine import tasks
    from coremax.experiment import Experiment

    task = tasks.TASKS[stage]
    calls = {"n": 0}
    original = task.validate

    def stop_in_epoch(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(task, "validate", stop_in_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(data_root, name, stage, *overrides)
    assert Experiment.open(data_root, name).provenance()["status"] == "interrupted"
    assert len(history(data_root, name)) == at - 1
    monkeypatch.setattr(task, "validate", original)


def interrupted_then_resumed(data_root, name, stage, *overrides, monkeypatch):
    """Train, stopped by a KeyboardInterrupt in the third epoch's validation, then resume: the run a killed job
    leaves and its --resume."""
    interrupted(data_root, name, stage, *overrides, monkeypatch=monkeypatch)
    train(data_root, name, stage, *overrides, resume=True)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root with a small synthetic archive and its prepared data set 'synthetic'."""
    from coremax.data.dataset import build_dataset
    from coremax.data.simulate import simulate_archive

    root = tmp_path_factory.mktemp("root")
    source = root / "datasets" / "external" / "synthetic"
    simulate_archive(source, **SMALL_ARCHIVE)
    build_dataset(root, "synthetic", raw=source / "raw", bulk=source / "bulk.csv", split=0.8, seed=0)
    return root


SMALL_ARCHIVE = dict(seed=1, cores=5, spacing_mm=20.0)


@pytest.fixture(scope="session")
def pretrained(data_root) -> str:
    train(data_root, "pre", "pretrain", "optim.epochs=3", "optim.blr=1e-3")
    return "pre"


@pytest.fixture(scope="session")
def finetuned(data_root, pretrained) -> str:
    train(data_root, "ft", "finetune", "optim.epochs=3", "optim.blr=1e-3", f'finetune.from="{pretrained}"')
    return "ft"


@pytest.fixture(scope="module")
def pool(data_root):
    """A small unlabelled pool beside the session's labelled set (same physics, every head)."""
    from coremax.data.dataset import build_dataset
    from coremax.data.simulate import simulate_archive

    source = data_root / "datasets" / "external" / "pool"
    if not (data_root / "datasets" / "pool" / "info.toml").is_file():
        simulate_archive(source, seed=5, cores=5, spacing_mm=40.0, labelled=False, workers=1)
        build_dataset(data_root, "pool", raw=source / "raw", split=0.8, seed=0)
    return "pool"
