"""Sweeps: a base experiment TOML, a grid and/or random samples over any config keys, and seeds.

Every point is an ordinary experiment named `<sweep>-p<NN>-s<seed>` (`<sweep>-<variant>-p<NN>-s<seed>` when the
sweep has variants: named bundles of a base TOML and overrides, e.g. fine-tuned vs from scratch vs a baseline),
trained by `scripts/train.py` in its own process; a `parent` experiment (a pretraining the variants fine-tune
from) is trained first when it is not complete. A re-run skips completed points and resumes interrupted ones
from `last.pth`; `--jobs N` runs N points side by side. The summary (`experiments/<sweep>/results/sweep.{pkl,csv,
png}`) aggregates the chosen validation metrics at each run's best epoch over seeds (mean, sd, n); with
`sweep.test` the test metrics stand beside them, reported and never used to choose. `sweep.sampler = "optuna"`
lets an Optuna TPE sampler propose the points instead, one after another from the validation results of the
ones before. Rooms: samplers.py (which points), runner.py (training them), summary.py (the tables).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from coremax import config as configlib
from coremax.errors import UserError
from coremax.experiment import try_lock
from coremax.paths import check_name, experiment_dir
from coremax.sweep.runner import check_unchanged, train
from coremax.sweep.samplers import SAMPLERS, parent_run, points, runs
from coremax.sweep.summary import run_table, summarise, tested_metrics, write_summary

SWEEP_DEFAULTS = Path(configlib.__file__).with_name("sweep.toml")
__all__ = ["SWEEP_DEFAULTS", "run_sweep", "points", "runs", "summarise", "tested_metrics"]


def run_sweep(data_root, sweep: dict, jobs: int = 1, log=print) -> pd.DataFrame:
    if sweep["sampler"] not in SAMPLERS:
        raise UserError(f"sweep.sampler must be one of {', '.join(SAMPLERS)}, not {sweep['sampler']!r}.")
    sampler = SAMPLERS[sweep["sampler"]]
    check_name(sweep["name"], "sweep")
    checked = sampler.check(sweep)  # everything is checked before the parent trains
    parent = parent_run(sweep)
    experiments = experiment_dir(data_root, sweep["name"]).parent
    experiments.mkdir(parents=True, exist_ok=True)
    lock = try_lock(experiments / f".{sweep['name']}.sweep-lock")  # one live runner per sweep
    if lock is None:
        raise UserError(f"The sweep {sweep['name']!r} is being run by another process; wait for it to end (a re-run "
                        "afterwards trains only what is missing).")
    try:
        if parent is not None:
            check_unchanged(data_root, parent)
            log(f"{parent['name']}: {train(data_root, parent, os.cpu_count() or 1)} (parent)")
        all_runs = sampler.run(data_root, sweep, jobs, log, checked)
        return write_summary(data_root, sweep, run_table(data_root, sweep, all_runs))
    finally:
        os.close(lock)
