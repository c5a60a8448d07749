"""A sweep's summary: each run's validation metrics at its best epoch (and test metrics when asked), aggregated
over seeds per point."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coremax.eval import figures
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.io import atomic_path
from coremax.sweep.runner import best_row


def tested_metrics(data_root, name: str) -> pd.DataFrame:
    """The run's test metrics (overall and per test core): evaluated once, then read from its results."""
    exp = Experiment.open(data_root, name)
    if (exp.results / "test-metrics.pkl").is_file():
        return exp.read_result("test-metrics")
    return evaluate_experiment(data_root, name)


def run_table(data_root, sweep: dict, all_runs: list[dict]) -> pd.DataFrame:
    """One row per run: its point, seed, swept values, best epoch, validation (and test) metrics."""
    rows = []
    for run in all_runs:
        best = best_row(data_root, run["name"])
        row = {"point": run["point"], "variant": run["variant"], "seed": run["seed"], "experiment": run["name"],
               **run["values"], "best_epoch": best["epoch"], **{m: best.get(m, np.nan) for m in sweep["metrics"]}}
        if sweep["test"]:
            metrics = tested_metrics(data_root, run["name"])
            for r in metrics[metrics["scope"] == "all"].itertuples():
                row[f"test_rmse_{r.target}"] = r.rmse
                row[f"test_r2_{r.target}"] = r.r2
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame, keys: list[str], counted: str = "") -> pd.DataFrame:
    """Mean, sd and n over seeds of every metric column, one row per point; n counts the runs that gave the
    metric `counted` (a NaN adds nothing to the mean, so it must not count either)."""
    metrics = [c for c in table.columns if c not in {"point", "seed", "experiment", *keys}]
    g = table.groupby(["variant", "point"], sort=False)
    out = g[[k for k in keys if k != "variant"]].first()
    for m in metrics:
        out[m] = g[m].mean()
        out[f"{m}_sd"] = g[m].std()
    out["n"] = g[counted].count() if counted in table.columns else g.size()
    return out.reset_index()[["variant", "point", *out.columns]]


def write_summary(data_root, sweep: dict, table: pd.DataFrame) -> pd.DataFrame:
    """The summary into experiments/<sweep>/results/ (sweep-runs.pkl, sweep.pkl, sweep.csv, sweep.png)."""
    summary = summarise(table, ["variant", *sweep["grid"], *sweep["random"]], sweep["metrics"][0])
    exp = Experiment.create(data_root, sweep["name"], {"sweep": sweep},
                            resume=Experiment.state(data_root, sweep["name"]) != "absent")
    with exp.run():
        exp.write_result("sweep-runs", table)
        exp.write_result("sweep", summary)
        with atomic_path(exp.results / "sweep.csv") as tmp:
            summary.to_csv(tmp, index=False)
        figures.plot_sweep(summary, sweep["metrics"], exp.results / "sweep.png")
    return summary
