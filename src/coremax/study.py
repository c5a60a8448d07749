"""Label-budget study: for several label budgets and seeds, fine-tune from a pretrain experiment, train the
same network from scratch and fit the baselines. It is one kind of sweep (`study_sweep`): every run is an
ordinary experiment of that sweep; the study adds its table (label-budget.md, .csv, .png)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coremax import config as configlib
from coremax.data.dataset import load_arrays
from coremax.engine.data import labelled
from coremax.errors import UserError
from coremax.eval import figures
from coremax.eval.floor import floor_metrics
from coremax.experiment import Experiment
from coremax.io import atomic_path
from coremax.paths import experiment_dir
from coremax.sweep import SWEEP_DEFAULTS, run_sweep, runs, test_metrics

STUDY_DEFAULTS = Path(configlib.__file__).with_name("label-budget.toml")
NEURAL = {"msm", "scratch"}
BASELINES = {"nmf_svr", "pls"}


def study_sweep(study: dict) -> dict:
    """The study as a sweep: one variant per method, a grid over data.max_labels, the seeds, the pretraining
    as the sweep's parent, and test metrics of every run (reported; nothing is chosen on them)."""
    unknown = set(study["methods"]) - NEURAL - BASELINES
    if unknown:
        raise UserError(f"study.methods has {sorted(unknown)}; use some of {sorted(NEURAL | BASELINES)}.")
    variants = {}
    for method in study["methods"]:
        if method in NEURAL:
            parent = study["pretrain"] if method == "msm" else ""
            variants[method] = {"config": study["finetune_config"], "overrides": list(study["overrides"]) + [
                'experiment.stage="finetune"', f'finetune.from="{parent}"']}
        else:
            variants[method] = {"overrides": list(study["baseline_overrides"]) + [
                'experiment.stage="baseline"', f'baseline.method="{method}"']}
    parent = {}
    if "msm" in study["methods"] and study["pretrain_config"]:
        parent = {"name": study["pretrain"], "config": study["pretrain_config"],
                  "overrides": list(study["pretrain_overrides"]) + ['experiment.stage="pretrain"']}
    defaults = configlib.resolve(SWEEP_DEFAULTS, default_file=SWEEP_DEFAULTS)["sweep"]
    return {**defaults, "name": study["name"], "overrides": [f'data.dataset="{study["dataset"]}"'],
            "seeds": list(study["seeds"]), "grid": {"data.max_labels": list(study["budgets"])},
            "variants": variants, "parent": parent, "test": True}


def check_pretrain(data_root, study: dict) -> None:
    """Without study.pretrain_config the msm runs need a completed pretrain experiment: say so up front."""
    if "msm" not in study["methods"] or study["pretrain_config"]:
        return
    folder = experiment_dir(data_root, study["pretrain"] or "-")
    if not (folder / "checkpoints" / "best-model.pth").is_file() or \
            Experiment.open(data_root, study["pretrain"]).provenance().get("status") != "completed":
        raise UserError(f"study.pretrain = {study['pretrain']!r} is not a completed pretrain experiment under "
                        f"{Path(data_root) / 'experiments'}; train one first or set study.pretrain_config.")


def run_study(data_root, study: dict, jobs: int = 1, log=print) -> pd.DataFrame:
    """Run the study's sweep, then its table: test RMSE/R^2 per method, label count and seed, overall and per
    test core, next to the floor."""
    check_pretrain(data_root, study)
    sweep = study_sweep(study)
    run_sweep(data_root, sweep, jobs, log)
    rows = []
    train_meta, _ = load_arrays(data_root, study["dataset"], "train")  # the table only: no counts are read
    for r in runs(sweep):
        targets = Experiment.open(data_root, r["name"]).config()["data"]["targets"]
        n_all = len(labelled(train_meta, targets))
        budget = r["values"]["data.max_labels"]
        for m in test_metrics(data_root, r["name"]).itertuples():  # overall ("all") and per test core
            rows.append({"method": r["variant"], "budget": budget, "seed": r["seed"], "scope": m.scope,
                         "n_labels": min(budget, n_all) if budget else n_all, "target": m.target,
                         "n_test": m.n, "r2": m.r2, "rmse": m.rmse, "mae": m.mae, "bias": m.bias,
                         "experiment": r["name"]})
    summary = pd.DataFrame(rows)
    out = Experiment.open(data_root, study["name"])
    floor = floor_metrics(data_root, study["dataset"], sorted(summary["target"].unique()))
    if floor is not None:
        out.write_result("floor", floor)
    with atomic_path(out.results / "label-budget.md") as tmp:
        tmp.write_text(markdown_table(summary, floor))
    out.write_result("label-budget", summary)
    with atomic_path(out.results / "label-budget.csv") as tmp:
        summary.to_csv(tmp, index=False)
    figures.plot_label_budget(summary[summary["scope"] == "all"], out.results / "label-budget.png")
    return summary


def summarise(summary: pd.DataFrame, scope: str = "all") -> pd.DataFrame:
    """Mean (and spread over seeds) of test R^2 and RMSE per method, label count and target, over all test cores
    (scope "all") or one test core (scope = its name)."""
    if "scope" in summary.columns:
        summary = summary[summary["scope"] == scope]
    g = summary.groupby(["target", "n_labels", "method"])
    return g.agg(r2=("r2", "mean"), r2_sd=("r2", "std"), rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                 seeds=("seed", "nunique")).reset_index()


def markdown_table(summary: pd.DataFrame, floor: pd.DataFrame | None) -> str:
    """The README table: per target and label count, each method's mean test RMSE +- sd over seeds and mean
    R^2, then the floor; the best method of each row in bold."""
    s = summarise(summary)
    methods = [m for m in ("msm", "scratch", "nmf_svr", "pls") if m in set(s["method"])]
    lines = ["| target | labels | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (target, n), part in s.groupby(["target", "n_labels"], sort=True):
        part = part.set_index("method")
        best = part["rmse"].idxmin()
        cells = []
        for m in methods:
            r = part.loc[m]
            text = f"{r.rmse:.2f} ± {0 if pd.isna(r.rmse_sd) else r.rmse_sd:.2f} (R² {r.r2:.3f})"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {target} | {n} | " + " | ".join(cells) + " |")
    if floor is not None:
        for r in floor[floor["scope"] == "all"].itertuples():
            lines.append(f"| {r.target} | floor | {r.rmse:.2f} (R² {r.r2:.3f}): the true composition under each "
                         "scan spot |" + " |" * (len(methods) - 1))
    cores = sorted(set(summary.get("scope", pd.Series(dtype=str))) - {"all"})
    if cores:  # R^2 per test core with every label: where a target transfers and where it does not
        n_max = summary["n_labels"].max()
        lines += ["", f"R² per test core with all {n_max} labels (mean over seeds):", "",
                  "| target | core | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
        for core in cores:
            per = summarise(summary, core)
            per = per[per["n_labels"] == n_max]
            for target, part in per.groupby("target"):
                part = part.set_index("method")
                lines.append(f"| {target} | {core} | " + " | ".join(f"{part.loc[m].r2:.3f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"
