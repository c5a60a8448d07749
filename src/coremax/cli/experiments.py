"""Commands on experiments: train, test, predict, suggest, sweeps, the label-budget study and the demo."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date
from pathlib import Path

from coremax import config as configlib
from coremax.io import atomic_path
from coremax.provenance import code_version
from coremax.paths import experiment_dir

from coremax.cli.common import _jobs, _sweep_parser, experiment_parser, guard, new_cores_parser, parse, resolve_args

@guard
def train_main(argv=None) -> None:
    from coremax.stages import run_stage  # deferred

    parser = experiment_parser("Train a CoreMAX experiment: MSM pretraining, fine-tuning or a baseline.")
    args = parse(parser, argv)
    cfg = resolve_args(args)
    if args.print_config:
        print(cfg.describe())
        return
    exp = run_stage(cfg.to_dict(), args.data_root, resume=args.resume, command=sys.argv, notes=cfg.notes)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"experiment written to {exp.path}")


METRIC_COLUMNS = ("target", "scope", "n", "rmse", "r2", "bias", "coverage", "half_width")  # what test.py prints


@guard
def evaluate_main(argv=None) -> None:
    import pandas as pd

    from coremax.eval.run import evaluate_experiment  # deferred
    from coremax.experiment import Experiment  # deferred

    p = argparse.ArgumentParser(description="Evaluate an experiment on its held-out test cores.")
    p.add_argument("--experiment", required=True, help="experiment name under <data-root>/experiments/")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="rows to evaluate (default: test)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate although the data set's split changed since training (recorded in the results)")
    args = parse(p, argv)
    metrics = evaluate_experiment(args.data_root, args.experiment, args.split, args.device, args.allow_changed_data)
    shown = metrics if args.verbose else metrics.loc[metrics["n"] > 0, [c for c in METRIC_COLUMNS if c in metrics]]
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(shown.round(3).to_string(index=False))  # every column, unrounded: results/<split>-metrics.pkl
    exp = Experiment.open(args.data_root, args.experiment)
    if exp.has_result(f"{args.split}-cores"):  # another scanner or a shifted core among the tested ones
        from coremax.eval.shift import shift_warnings  # deferred

        for w in shift_warnings(exp.read_result(f"{args.split}-predictions"), exp.read_result(f"{args.split}-cores")):
            print(w, file=sys.stderr)
    if exp.has_result(f"{args.split}-floor"):
        floor = exp.read_result(f"{args.split}-floor")
        print("floor (the true composition under each scan spot against the lab values; no model can do better):")
        print(floor[floor["scope"] == "all"][["target", "n", "r2", "rmse"]].round(4).to_string(index=False))
    print(f"results written to {exp.results}")


@guard
def predict_main(argv=None) -> None:
    from coremax.eval.predict_archive import predict_raw  # deferred

    p = new_cores_parser("Predict down-core profiles of newly scanned cores with an experiment or a model bundle.",
                         "fine-tuned or baseline", bundles=True,
                         out_help="table to write, one row per spectrum: Parquet, or CSV for a name ending .csv "
                                  "(figures and <out>-cores.csv beside it); a killed run resumes where it stopped")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="predict although the data set changed since training (said in the warnings)")
    p.add_argument("--bulk", help="CSV of lab values of the predicted cores (core, depth_mm, CaCO3, TOC, ...): each "
                                  "core with samples is recalibrated on them (the correction chosen on the validation "
                                  "cores) and its intervals centred on its own residuals; see <out>-cores.csv")
    p.add_argument("--match-mm", type=float, default=5.0,
                   help="with --bulk: max depth distance of a lab sample from its spectrum (default: 5)")
    args = parse(p, argv)
    done, warnings = predict_raw(args.data_root, args.experiment, args.raw, args.out, args.device, args.on_error,
                                 allow_changed_data=args.allow_changed_data, bulk=args.bulk,
                                 match_mm=args.match_mm, model=args.model, progress=not args.quiet)
    for w in warnings:
        print(w, file=sys.stderr)
    again = f" ({done['reused']} cores finished by an earlier run were kept)" if done["reused"] else ""
    print(f"wrote {done['spectra']} predictions of {done['cores']} cores to {args.out}{again}")


@guard
def suggest_main(argv=None) -> None:
    from coremax.suggest import METHODS, MIN_GAP_MM, suggest_raw  # deferred

    p = new_cores_parser("Suggest which depths of newly scanned cores to send to the lab, with an experiment or a "
                         "model bundle (every method works with either).", "pretrain, fine-tuned or baseline",
                         bundles=True)
    p.add_argument("--n", type=int, default=10, help="depths to suggest (per core with --per-core; default: 10)")
    p.add_argument("--per-core", action="store_true", help="n depths of each core instead of n in all")
    p.add_argument("--method", default="typical", choices=METHODS,
                   help="typical (default; needs features) | diverse | uncertain (fine-tuned or baseline) | regular")
    p.add_argument("--min-gap-mm", type=float, default=MIN_GAP_MM,
                   help=f"least distance between sampled depths (default: {MIN_GAP_MM:g})")
    p.add_argument("--exclude", help="CSV of core, depth_mm already sampled (skipped, and kept apart by the gap)")
    p.add_argument("--cores", help="comma-separated cores of --raw to suggest for (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clustering (default: 0)")
    args = parse(p, argv)
    table, notes = suggest_raw(args.data_root, args.experiment, args.raw, args.out, args.n, args.method,
                               args.per_core, args.min_gap_mm, args.exclude,
                               [c.strip() for c in args.cores.split(",")] if args.cores else None, args.seed,
                               args.device, args.on_error, model=args.model)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"wrote {len(table)} depths to sample of {table['core'].nunique()} cores to {args.out}")


def _sweep_command(argv, description: str, what: str, defaults, run, table, docs: bool = False) -> None:
    """A command that runs a [sweep] or [study] TOML: resolve it, run it, print its summary table; `docs`: it
    may also write its tables into a docs page (--docs)."""
    import pandas as pd

    p = _sweep_parser(description, what, defaults)
    if docs:
        p.add_argument("--docs", metavar="PAGE.md", help="also write the study's tables and figure into this page "
                       "(e.g. docs/results/my-study.md), dated, with the command and the commit that made them")
    args = parse(p, argv)
    cfg = configlib.resolve(args.config, args.overrides, default_file=defaults)
    if args.print_config:
        print(cfg.describe())
        return
    summary = run(args.data_root, cfg[what], _jobs(args.jobs))
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        print(table(summary).to_string(index=False))
    results = experiment_dir(args.data_root, cfg[what]["name"]) / "results"
    print(f"summary written to {results}")
    if docs and args.docs:
        print(f"docs page written to {_docs_page(results, Path(args.docs), argv)}")


def _docs_page(results: Path, page: Path, argv) -> Path:
    """The study's label-budget.md tables and its figures (one per protocol, copied beside the page) as a docs
    page, dated once with the command and the commit that made them."""
    version = code_version()[0]
    commit = version["commit"][:7] + (" with uncommitted changes" if version["dirty"] else "")
    command = " ".join(["python scripts/label_budget.py", *(argv if argv is not None else sys.argv[1:])])
    page.parent.mkdir(parents=True, exist_ok=True)
    shown = []
    for figure in sorted(results.glob("label-budget-*.png")):
        copy = page.with_name(f"{page.stem}-{figure.stem.removeprefix('label-budget-')}.png")
        shutil.copyfile(figure, copy)
        shown.append(f"![{figure.stem}]({copy.name})\n")
    with atomic_path(page) as tmp:
        tmp.write_text(f"# Label-budget study\n\nMade on {date.today().isoformat()} by `{command}` at commit {commit}."
                       "\n\n" + "\n".join(shown) + "\n" + (results / "label-budget.md").read_text())
    return page


@guard
def sweep_main(argv=None) -> None:
    from coremax.sweep import SWEEP_DEFAULTS, run_sweep  # deferred

    _sweep_command(argv, "Run a sweep of experiments over config keys and seeds.", "sweep", SWEEP_DEFAULTS,
                   run_sweep, lambda summary: summary.round(4))


@guard
def label_budget_main(argv=None) -> None:
    from coremax.study import STUDY_DEFAULTS, run_study  # deferred
    from coremax.study_tables import summarise  # deferred: as above

    _sweep_command(argv, "Label-budget study: fine-tuning vs from scratch vs baselines (a sweep).", "study",
                   STUDY_DEFAULTS, run_study, lambda summary: summarise(summary).round(3), docs=True)


@guard
def demo_main(argv=None) -> None:
    from coremax.demo import DEMO_DOC, run_demo  # deferred

    p = argparse.ArgumentParser(description=DEMO_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data")
    p.add_argument("--fresh-names", action="store_true", help="suffix experiment names with the time")
    p.add_argument("--skip-study", action="store_true", help="stop after testing the fine-tuned model")
    args = parse(p, argv)
    run_demo(Path(args.data_root), args.fresh_names, args.skip_study)

