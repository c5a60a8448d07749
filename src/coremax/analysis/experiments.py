"""All experiments of a data root in one table, training curves, and test metrics against a config key."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.plotting import new_figure, save
from coremax.errors import UserError
from coremax.io import UntrustedPickle, read_pickle, read_toml
from coremax.experiment import Experiment
from coremax.paths import experiment_dir

# Test metrics copied into the table (scope "all", one column per metric and target).
TARGET_METRICS = ("n", "r2", "rmse", "mae", "bias", "coverage", "interval_width")
PRETRAIN_METRICS = ("mse_masked", "mse_all", "r2_masked", "r2_all")
LOSS_COLUMNS = ("train_loss", "val_loss", "val_nrmse")


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model": {"mask_ratio": 0.4}} -> {"model.mask_ratio": 0.4}; lists become tuples (hashable cells)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _read(data_root, path: Path):
    """A results pickle, or None when it is missing or unreadable (a run still writing, or one that crashed)."""
    if not path.is_file():
        return None
    try:
        return read_pickle(data_root, path)
    except UntrustedPickle as e:  # from elsewhere: said, never read
        warnings.warn(str(e), stacklevel=2)
        return None
    except Exception:  # noqa: BLE001 - a half-written pickle only means "no result"
        return None


def tested_columns(metrics: pd.DataFrame | None) -> dict:
    """The `test_<metric>_<target>` (or `test_<metric>` for pretraining) entries of a test-metrics table."""
    out = {}
    if metrics is None or metrics.empty:
        return out
    if "target" in metrics.columns:
        rows = metrics[metrics["scope"] == "all"] if "scope" in metrics.columns else metrics
        if "split" in rows.columns and (rows["split"] == "test").any():
            rows = rows[rows["split"] == "test"]
        for row in rows.itertuples(index=False):
            for m in TARGET_METRICS:
                if hasattr(row, m):
                    out[f"test_{m}_{row.target}"] = getattr(row, m)
    else:
        row = metrics.iloc[0]
        for m in PRETRAIN_METRICS:
            if m in metrics.columns:
                out[f"test_{m}"] = row[m]
    return out


def _history_columns(history: pd.DataFrame | None) -> dict:
    if history is None or history.empty:
        return {"epochs_done": 0}
    out = {"epochs_done": int(history["epoch"].max()) if "epoch" in history.columns else len(history)}
    for col in ("val_loss", "val_nrmse"):
        if col in history.columns and history[col].notna().any():
            out[f"best_{col}"] = float(history[col].min())
    return out


def experiment_row(data_root, name: str) -> dict | None:
    """One experiment's row of `gather_experiments`, or None when the folder is not an experiment."""
    folder = Path(data_root).resolve() / "experiments" / name  # absolute: _read takes root-relative paths too
    if not (folder / "config.toml").is_file():
        return None
    row = {"name": name}
    try:
        config = read_toml(folder / "config.toml")
    except Exception:  # noqa: BLE001 - a config being written or damaged: list the folder, say so
        return {**row, "stage": "", "status": "unreadable"}
    try:
        prov = read_toml(folder / "provenance.toml") if (folder / "provenance.toml").is_file() else {}
    except Exception:  # noqa: BLE001
        prov = {}
    stage = config.get("experiment", {}).get("stage") or ("study" if "study" in config else "")
    status = Experiment(data_root, name).status() if prov else "unknown"  # "stale": recorded running, process gone
    row.update(stage=stage, status=status, started_utc=prov.get("started_utc", ""),
               ended_utc=prov.get("ended_utc", ""))
    results = folder / "results"
    row.update(_history_columns(_read(data_root, results / "history.pkl")))
    row.update(tested_columns(_read(data_root, results / "test-metrics.pkl")))
    row.update(flatten(config))
    return row


def gather_experiments(data_root) -> pd.DataFrame:
    """One row per experiment folder under <data_root>/experiments: name, stage, status, times, epochs done,
    best validation loss, test metrics of scope "all" (`test_r2_CaCO3`, `test_rmse_TOC`, ...; NaN when not
    tested) and every config key as a `section.key` column. Folders without a config.toml (not an experiment)
    are skipped; a run still writing or one that crashed shows with what it has."""
    folder = Path(data_root) / "experiments"
    rows = []
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            row = experiment_row(data_root, sub.name)
            if row is not None:
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["name", "stage", "status"])
    front = [c for c in ("name", "stage", "status", "started_utc", "ended_utc", "epochs_done") if c in table]
    rest = sorted(c for c in table.columns if c not in front)
    tests = [c for c in rest if c.startswith(("best_", "test_"))]
    return table[front + tests + [c for c in rest if c not in tests]]


def load_histories(data_root, names) -> dict[str, pd.DataFrame]:
    """history.pkl of each named experiment (those without one are left out)."""
    out = {}
    for name in names:
        history = _read(data_root, experiment_dir(data_root, name) / "results" / "history.pkl")
        if history is not None and not history.empty:
            out[name] = history
    return out


def training_curves(data_root, names, path, columns=None, log: bool = True) -> Path:
    """Loss curves per epoch from results/history.pkl: one panel per column (train_loss, val_loss and, for
    fine-tuning, val_nrmse unless `columns` says otherwise), one line per experiment; writes a PNG."""
    names = [names] if isinstance(names, str) else list(names)
    histories = load_histories(data_root, names)
    if not histories:
        raise UserError(f"None of the experiments {names} has a results/history.pkl under {data_root}; train "
                        "them first or check the names (gather_experiments lists what there is).")
    if columns is None:
        columns = [c for c in LOSS_COLUMNS if any(c in h.columns for h in histories.values())]
    fig, axes = new_figure(1, len(columns), 4.5, 3.5)
    for ax, col in zip(axes[0], columns):
        for name, history in histories.items():
            if col in history.columns:
                x = history["epoch"] if "epoch" in history.columns else np.arange(1, len(history) + 1)
                ax.plot(x, history[col], marker="o", ms=3, lw=1.2, label=name)
        ax.set(xlabel="epoch", ylabel=col, title=col)
        if log and all((h[col] > 0).all() for h in histories.values() if col in h.columns):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save(fig, path)


def plot_metric_vs(table: pd.DataFrame, x: str, y, path, hue: str | None = None, logx: bool | None = None
                   ) -> Path:
    """Test metric(s) `y` (a column or list of columns of `gather_experiments`) against a config key `x`,
    one panel per metric; points grouped (and joined, sorted by x) by `hue`; the mean per x value is drawn
    when there is no hue. Rows where x or y is missing are left out. Writes a PNG."""
    ys = [y] if isinstance(y, str) else list(y)
    missing = [c for c in [x, *ys, *([hue] if hue else [])] if c not in table.columns]
    if missing:
        raise UserError(f"The table has no column {missing[0]!r}; pick one of its columns "
                        "(config keys look like 'model.mask_ratio', metrics like 'test_r2_CaCO3').")
    fig, axes = new_figure(1, len(ys), 4.5, 3.5)
    for ax, col in zip(axes[0], ys):
        rows = table[[x, col] + ([hue] if hue else [])].dropna(subset=[x, col])
        groups = rows.groupby(hue, dropna=False) if hue else [("mean", rows)]
        for label, group in groups:
            if hue:
                group = group.sort_values(x)
                ax.plot(group[x], group[col], marker="o", lw=1.2, label=str(label))
            else:
                ax.scatter(group[x], group[col], s=18, alpha=0.6, label="runs")
                mean = group.groupby(x)[col].mean()
                ax.plot(mean.index, mean.to_numpy(), color="k", lw=1.2, label="mean")
        values = pd.to_numeric(rows[x], errors="coerce")
        use_log = logx if logx is not None else bool(values.notna().all() and len(values) and values.min() > 0
                                                     and values.max() / values.min() >= 10)
        if use_log:
            ax.set_xscale("log")
        ax.set(xlabel=x, ylabel=col, title=f"{col} against {x}")
        ax.grid(alpha=0.3)
        if len(rows):
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no runs with both values", transform=ax.transAxes, ha="center", va="center")
    return save(fig, path)
