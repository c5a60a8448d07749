"""Label-budget study: for several label budgets and seeds, fine-tune from a pretrain experiment, train the
same network from scratch and fit the baselines; every run is an ordinary experiment, then one summary."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from coremax import config as configlib
from coremax.cli import guard
from coremax.data.dataset import load_split
from coremax.engine.data import labelled
from coremax.errors import UserError
from coremax.eval import figures
from coremax.eval.floor import floor_metrics
from coremax.eval.run import evaluate_experiment
from coremax.experiment import Experiment
from coremax.io import atomic_path
from coremax.paths import experiment_dir

STUDY_DEFAULTS = Path(configlib.__file__).with_name("label-budget.toml")
NEURAL = {"msm", "scratch"}
BASELINES = {"nmf_svr", "pls"}


def run_name(study: str, method: str, budget: int, seed: int) -> str:
    return f"{study}-{method.replace('_', '')}-n{budget or 'all'}-s{seed}"


def plan(study: dict) -> list[dict]:
    """Every run of the study with its full command-line overrides."""
    unknown = set(study["methods"]) - NEURAL - BASELINES
    if unknown:
        raise UserError(f"study.methods has {sorted(unknown)}; use some of {sorted(NEURAL | BASELINES)}.")
    runs = []
    for seed in study["seeds"]:
        for budget in study["budgets"]:
            for method in study["methods"]:
                common = [f'data.dataset="{study["dataset"]}"', f"data.max_labels={budget}",
                          f"experiment.seed={seed}"]
                if method in NEURAL:
                    parent = study["pretrain"] if method == "msm" else ""
                    extra = list(study["overrides"]) + ['experiment.stage="finetune"', f'finetune.from="{parent}"']
                    config_file = study["finetune_config"] or None
                else:
                    extra = list(study["baseline_overrides"]) + ['experiment.stage="baseline"',
                                                                 f'baseline.method="{method}"']
                    config_file = None
                runs.append({"method": method, "budget": budget, "seed": seed, "config_file": config_file,
                             "overrides": extra + common, "name": run_name(study["name"], method, budget, seed)})
    return runs


def ensure_pretrain(data_root, study: dict, command=None) -> None:
    """The msm runs' parent: reused when completed, else trained here from study.pretrain_config (so one
    command reproduces the whole table), else a clear sentence."""
    from coremax.stages import function_defaults, run_stage

    if "msm" not in study["methods"]:
        return
    folder = experiment_dir(data_root, study["pretrain"] or "-")
    if (folder / "checkpoints" / "best-model.pth").is_file() and \
            Experiment.open(data_root, study["pretrain"]).provenance().get("status") == "completed":
        return
    if not study["pretrain_config"]:
        raise UserError(f"study.pretrain = {study['pretrain']!r} is not a completed pretrain experiment under "
                        f"{Path(data_root) / 'experiments'}; train one first or set study.pretrain_config.")
    resume = (folder / "checkpoints" / "last.pth").is_file()  # a killed study continues its pretraining
    cfg = configlib.resolve(study["pretrain_config"], list(study["pretrain_overrides"]) + [
        'experiment.stage="pretrain"', f'experiment.name="{study["pretrain"]}"', f'data.dataset="{study["dataset"]}"'],
        function_defaults=function_defaults())
    run_stage(cfg.to_dict(), data_root, resume=resume, command=command)


def run_study(data_root, study: dict, command=None) -> pd.DataFrame:
    from coremax.stages import function_defaults, run_stage

    runs = plan(study)
    ensure_pretrain(data_root, study, command)
    n_all = len(labelled(load_split(data_root, study["dataset"], "train"), ["CaCO3", "TOC"]))
    summary_exp = Experiment.create(data_root, study["name"], {"study": study},
                                    resume=(experiment_dir(data_root, study["name"]) / "config.toml").is_file(),
                                    command=command)
    rows = []
    with summary_exp.run() as log:
        for i, r in enumerate(runs, 1):
            exp_dir = experiment_dir(data_root, r["name"])
            if (exp_dir / "results" / "test-metrics.pkl").is_file():
                log.info("study_run_reused", run=r["name"], index=i, total=len(runs))
            else:
                if exp_dir.exists():
                    raise UserError(f"The study run {r['name']!r} exists but has no test results; delete "
                                    f"{exp_dir} (or rename the study) and run the study again.")
                log.info("study_run", run=r["name"], index=i, total=len(runs))
                cfg = configlib.resolve(r["config_file"], r["overrides"] + [f'experiment.name="{r["name"]}"'],
                                        function_defaults=function_defaults())
                run_stage(cfg.to_dict(), data_root, command=command)
                evaluate_experiment(data_root, r["name"])
            metrics = Experiment.open(data_root, r["name"]).read_result("test-metrics")
            for m in metrics.itertuples():  # overall ("all") and per test core
                rows.append({"method": r["method"], "budget": r["budget"], "seed": r["seed"], "scope": m.scope,
                             "n_labels": min(r["budget"], n_all) if r["budget"] else n_all, "target": m.target,
                             "n_test": m.n, "r2": m.r2, "rmse": m.rmse, "mae": m.mae, "bias": m.bias,
                             "experiment": r["name"]})
        summary = pd.DataFrame(rows)
        floor = floor_metrics(data_root, study["dataset"], sorted(summary["target"].unique()))
        if floor is not None:
            summary_exp.write_result("floor", floor)
            with atomic_path(summary_exp.results / "label-budget.md") as tmp:
                tmp.write_text(markdown_table(summary, floor))
        summary_exp.write_result("label-budget", summary)
        with atomic_path(summary_exp.results / "label-budget.csv") as tmp:
            summary.to_csv(tmp, index=False)
        figures.plot_label_budget(summary[summary["scope"] == "all"], summary_exp.results / "label-budget.png")
        log.info("study_done", runs=len(runs), table=summary_exp.relpath(summary_exp.results / "label-budget.csv"))
    return summary


def summarise(summary: pd.DataFrame, scope: str = "all") -> pd.DataFrame:
    """Mean (and spread over seeds) of test R^2 and RMSE per method, label count and target (all test cores,
    or each core with by="scope")."""
    if "scope" in summary.columns:
        summary = summary[summary["scope"] == scope]
    g = summary.groupby(["target", "n_labels", "method"])
    out = g.agg(r2=("r2", "mean"), r2_sd=("r2", "std"), rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                seeds=("seed", "nunique")).reset_index()
    return out


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


@guard
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Label-budget study: fine-tuning vs from scratch vs baselines.")
    p.add_argument("--config", required=True, help="study TOML (see src/coremax/config/label-budget.toml)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--print-config", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="study.key=value")
    args = p.parse_args(argv)
    cfg = configlib.resolve(args.config, args.overrides, default_file=STUDY_DEFAULTS)
    if args.print_config:
        print(cfg.describe())
        return
    import sys

    summary = run_study(args.data_root, cfg["study"], command=sys.argv)
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(summarise(summary).round(3).to_string(index=False))
    print(f"summary written to {experiment_dir(args.data_root, cfg['study']['name']) / 'results'}")
