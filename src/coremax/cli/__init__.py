"""Every command-line entry point, by one rule: `scripts/<name>.py` calls `coremax.cli.<name>_main` (scripts/test.py:
`evaluate_main`, since pytest takes every `test_*` function for a test: ENTRY_POINTS), which parses the flags, calls the library and prints; `guard` turns a UserError into one sentence and exit status 2. Nothing
below this package imports it, so the library never depends on its command line. The commands live by what they
act on: experiments.py (train, test, predict, suggest, sweeps, the study, the demo), data.py (preprocess,
simulate, archive), bench.py (the benchmarks); common.py holds what they share.
"""

from coremax.cli.bench import bench_data_main, bench_predict_main, bench_train_main
from coremax.cli.data import archive_main, preprocess_main, simulate_main
from coremax.cli.experiments import (demo_main, label_budget_main, predict_main, suggest_main, sweep_main,
                                     evaluate_main, train_main)

# scripts/<name>.py -> the function of this package it calls, where that is not <name>_main
ENTRY_POINTS = {"test": "evaluate_main"}

__all__ = ["archive_main", "bench_data_main", "bench_predict_main", "bench_train_main", "demo_main", "label_budget_main",
           "predict_main", "preprocess_main", "simulate_main", "suggest_main", "sweep_main", "evaluate_main",
           "train_main"]
