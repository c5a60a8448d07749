"""Every command-line entry point, by one rule: `scripts/<name>.py` calls `<name>_main` here, which parses the
flags, calls the library and prints; `guard` turns a UserError into one sentence and exit status 2. Nothing
below this module imports it, so the library never depends on its command line."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from coremax import config as configlib
from coremax.errors import UserError
from coremax.paths import dataset_dir, experiment_dir

# Each command imports the library it runs inside its main ("deferred"): a command starts without loading
# what only the others need (scikit-learn, the simulator's physics, ...). tests/test_layers.py counts these
# imports in the import graph too, so they cannot hide a circle.

POOL = "synthetic-pool"  # the unlabelled pool built beside the embedded labelled set


def experiment_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                epilog="Overrides: section.key=value with TOML values, e.g. optim.epochs=5 "
                                       "model.mask_ratio=0.5 data.targets='[\"CaCO3\"]'.")
    p.add_argument("--config", help="experiment TOML file (overrides default-config.toml)")
    p.add_argument("--stage", choices=configlib.CHOICES["experiment.stage"], help="sets experiment.stage")
    p.add_argument("--name", help="experiment name (folder under <data-root>/experiments/); sets experiment.name")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name from its last.pth, with its frozen config")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config with the level each value came from, then exit")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    return p


def resolve_args(args: argparse.Namespace, function_defaults: dict | None = None) -> configlib.Config:
    """Resolve the config of a run from parsed flags. With --resume the frozen config of the experiment
    stands at the experiment level (unless --config names another file); overrides still apply on top."""
    overrides = list(args.overrides)
    if args.stage:
        overrides.append(f"experiment.stage={args.stage!r}".replace("'", '"'))
    if args.name:
        overrides.append(f'experiment.name="{args.name}"')
    config_file = args.config
    if args.resume and not config_file:
        if not args.name:
            raise UserError("--resume needs --name to say which experiment to continue.")
        frozen = experiment_dir(args.data_root, args.name) / "config.toml"
        if not frozen.is_file():
            raise UserError(f"Cannot resume {args.name!r}: there is no experiment at {frozen.parent}; "
                            "check --name and --data-root.")
        config_file = frozen
    return configlib.resolve(config_file, overrides, function_defaults=function_defaults)


def guard(main):
    """Run a script's main: a UserError becomes one line on stderr and exit status 2, no traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except OSError as e:  # permissions, a full disk, a read-only file system, a vanished mount
            what = {errno.ENOSPC: "free some space on that disk or choose another --data-root",
                    errno.EROFS: "the file system is read-only: choose a writable --data-root",
                    errno.EDQUOT: "the disk quota is used up: free some space or choose another --data-root"}
            print(f"error: {e.filename or 'a file'} cannot be written or read ({e.strerror or type(e).__name__}); "
                  f"{what.get(e.errno, 'check the permissions and the disk of the data root (--data-root)')}.",
                  file=sys.stderr)
            sys.exit(2)
    return wrapper



def _jobs(value: int) -> int:
    if value < 1:
        raise UserError(f"--jobs {value} must be at least 1.")
    return value


@guard
def train_main(argv=None) -> None:
    from coremax.stages import function_defaults, run_stage  # deferred

    parser = experiment_parser("Train a CoreMAX experiment: MSM pretraining, fine-tuning or a baseline.")
    args = parser.parse_args(argv)
    cfg = resolve_args(args, function_defaults())
    if args.print_config:
        print(cfg.describe())
        return
    exp = run_stage(cfg.to_dict(), args.data_root, resume=args.resume, command=sys.argv)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"experiment written to {exp.path}")


@guard
def test_main(argv=None) -> None:
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
    args = p.parse_args(argv)
    metrics = evaluate_experiment(args.data_root, args.experiment, args.split, args.device, args.allow_changed_data)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(metrics.round(4).to_string(index=False))
    exp = Experiment.open(args.data_root, args.experiment)
    if exp.has_result(f"{args.split}-floor"):
        floor = exp.read_result(f"{args.split}-floor")
        print("floor (the true composition under each scan spot against the lab values; no model can do better):")
        print(floor[floor["scope"] == "all"][["target", "n", "r2", "rmse"]].round(4).to_string(index=False))
    print(f"results written to {exp.results}")


@guard
def preprocess_main(argv=None) -> None:
    from coremax.data.dataset import build_dataset  # deferred

    p = argparse.ArgumentParser(
        description="Raw Avaatech .spe files + bulk CSV -> a prepared data set (train/val/test Parquet tables + "
                    ".npy counts, info.toml). Without --raw: the embedded synthetic data (generated if needed).")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--raw", help="folder of <core>/<run folder>/*.spe (default: the embedded synthetic archive "
                   "under <data-root>/datasets/external/<name>/, generated if missing)")
    p.add_argument("--bulk", help="CSV of core, depth_mm and measured columns: CaCO3, TOC and any other, each a "
                   "target (default: bulk.csv beside --raw)")
    p.add_argument("--name", help=f"data set name (default: synthetic, which also builds the unlabelled pool "
                   f"{POOL} when missing; with --raw the raw folder's name, or its parent's when it is called raw)")
    p.add_argument("--kv", type=float, default=10.0, help="tube voltage of the run to read (default: 10)")
    p.add_argument("--match-mm", type=float, default=5.0, help="max depth distance of a bulk sample (default: 5)")
    p.add_argument("--split", type=float, default=0.8, help="train fraction of the non-test rows (default: 0.8)")
    p.add_argument("--split-by", default="auto", choices=("auto", "core", "section", "row"),
                   help="split whole cores, whole sections or rows into train and validation (default: auto = "
                        "by core when there are at least 4 non-test cores, else by row)")
    p.add_argument("--test-cores", help="comma-separated cores held out whole for testing (default: test_cores in "
                   "manifest.toml beside --raw, else a seeded 15%% of the labelled cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spectrum-length", type=int, default=2048)
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"), help="what a bad .spe file does")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set of the same name")
    p.add_argument("--workers", type=int, default=2, help="processes reading files (default: 2)")
    p.add_argument("--shard-rows", type=int, default=65_536,
                   help="spectra per .npy shard file (default: 65536, 512 MiB of 2,048-channel counts)")
    args = p.parse_args(argv)
    # Default name: synthetic, else the raw folder's name (its parent's when the folder is just called "raw").
    raw = Path(args.raw).resolve() if args.raw else None
    name = args.name or ("synthetic" if raw is None else raw.parent.name if raw.name.lower() == "raw" else raw.name)
    names = [name]
    if raw is None and args.name is None and not (dataset_dir(args.data_root, POOL) / "info.toml").is_file():
        names.append(POOL)  # the embedded default: the labelled set and the pool pretraining reads beside it
    for name in names:
        path = build_dataset(args.data_root, name, raw=args.raw, bulk=args.bulk, split=args.split,
                             split_by=args.split_by, test_cores=args.test_cores.split(",") if args.test_cores else None,
                             kv=args.kv, match_mm=args.match_mm, on_error=args.on_error, overwrite=args.overwrite,
                             seed=args.seed, spectrum_length=args.spectrum_length, workers=args.workers,
                             shard_rows=args.shard_rows, command=sys.argv)
        _describe_dataset(args.data_root, name, path)


def _describe_dataset(data_root, name: str, path: Path) -> None:
    from coremax.data.dataset import load_info  # deferred

    info = load_info(data_root, name)
    c = info["counts"]
    print(f"data set {name!r} written to {path} (validation split by {info['split']['by']})")
    print(f"  files read {c['files_read']}, skipped {c['files_skipped']}, bulk samples unmatched {c['bulk_unmatched']}"
          f", negative values clipped {c['bulk_negative_clipped']}")
    print(f"  targets: {', '.join(info.get('targets', {})) or 'none (no bulk file)'}")
    for split in ("train", "val", "test"):
        print(f"  {split:5}: {c[f'rows_{split}']:6d} spectra, {c[f'labelled_{split}']:5d} labelled, "
              f"cores {', '.join(info['cores'][split][:12])}{' ...' if len(info['cores'][split]) > 12 else ''}")
    for s in info["skipped"][:10]:
        print(f"  skipped {s['file']}: {s['reason']}")
    for u in info["unmatched"][:10]:
        print(f"  unmatched bulk sample {u['core']} at {u['depth_mm']} mm: {u['reason']}")
    if len(info["unmatched"]) > 10:
        print(f"  ... {len(info['unmatched']) - 10} more unmatched samples listed in {path / 'info.toml'}")


@guard
def predict_main(argv=None) -> None:
    from coremax.eval.predict import predict_raw  # deferred

    p = argparse.ArgumentParser(description="Predict down-core profiles of newly scanned cores with an experiment.")
    p.add_argument("--experiment", required=True, help="fine-tuned or baseline experiment name")
    p.add_argument("--raw", required=True, help="folder of <core>/<run folder>/*.spe")
    p.add_argument("--out", required=True, help="CSV to write (profile figures go beside it)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--on-error", default="skip", choices=("fail", "skip"), help="what a bad .spe file does")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="predict although the data set changed since training (said in the warnings)")
    args = p.parse_args(argv)
    table, warnings = predict_raw(args.data_root, args.experiment, args.raw, args.out, args.device, args.on_error,
                                  allow_changed_data=args.allow_changed_data)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"wrote {len(table)} predictions of {table['core'].nunique()} cores to {args.out}")


@guard
def suggest_main(argv=None) -> None:
    from coremax.suggest import METHODS, suggest_raw  # deferred

    p = argparse.ArgumentParser(description="Suggest which depths of newly scanned cores to send to the lab.")
    p.add_argument("--experiment", required=True, help="pretrain, fine-tuned or baseline experiment name")
    p.add_argument("--raw", required=True, help="folder of <core>/<run folder>/*.spe, or one core's folder")
    p.add_argument("--n", type=int, default=10, help="depths to suggest (per core with --per-core; default: 10)")
    p.add_argument("--per-core", action="store_true", help="n depths of each core instead of n in all")
    p.add_argument("--method", default="typical", choices=METHODS,
                   help="typical (default; needs features) | diverse | uncertain (fine-tuned or baseline) | regular")
    p.add_argument("--min-gap-mm", type=float, default=20.0, help="least distance between sampled depths (default: 20)")
    p.add_argument("--exclude", help="CSV of core, depth_mm already sampled (skipped, and kept apart by the gap)")
    p.add_argument("--cores", help="comma-separated cores of --raw to suggest for (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clustering (default: 0)")
    p.add_argument("--out", required=True, help="CSV to write (suggest-<core>.png figures go beside it)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--on-error", default="skip", choices=("fail", "skip"), help="what a bad .spe file does")
    args = p.parse_args(argv)
    table, notes = suggest_raw(args.data_root, args.experiment, args.raw, args.out, args.n, args.method,
                               args.per_core, args.min_gap_mm, args.exclude,
                               [c.strip() for c in args.cores.split(",")] if args.cores else None, args.seed,
                               args.device, args.on_error)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"wrote {len(table)} depths to sample of {table['core'].nunique()} cores to {args.out}")


@guard
def simulate_main(argv=None) -> None:
    from coremax.data.simulate import simulate_archive  # deferred

    p = argparse.ArgumentParser(description="Write a synthetic Avaatech XRF core-scanner archive.")
    p.add_argument("--out", default="data/datasets/external/synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=12)
    p.add_argument("--spacing-mm", type=float, default=10.0)
    p.add_argument("--kv", default="10", help="comma-separated tube voltages, one run folder each")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive at --out")
    p.add_argument("--unlabelled", action="store_true",
                   help="write an unlabelled pool (every head, cores named apart, no bulk.csv)")
    p.add_argument("--dense-lab", action="store_true",
                   help="also write bulk-dense.csv: a lab sample at every scanned depth (for sampling studies)")
    args = p.parse_args(argv)
    try:
        kvs = [float(k) for k in args.kv.split(",")]
    except ValueError:
        raise UserError(f"--kv {args.kv!r} must be comma-separated numbers, e.g. 10,30.") from None
    m = simulate_archive(args.out, args.seed, args.cores, args.spacing_mm, kvs, args.workers,
                         overwrite=args.overwrite, labelled=not args.unlabelled, dense_lab=args.dense_lab)
    print(f"wrote {m['spectra']} spectra of {m['cores']} cores and {m['bulk_samples']} bulk samples to "
          f"{args.out} (test cores: {', '.join(m['test_cores']) or 'none'})")


def _sweep_parser(description: str, what: str, defaults: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help=f"{what} TOML (see src/coremax/config/{defaults.name})")
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side (processes on the CPU)")
    p.add_argument("--print-config", action="store_true")
    p.add_argument("overrides", nargs="*", metavar=f"{what}.key=value")
    return p


@guard
def sweep_main(argv=None) -> None:
    import pandas as pd

    from coremax.sweep import SWEEP_DEFAULTS, run_sweep  # deferred

    args = _sweep_parser("Run a sweep of experiments over config keys and seeds.", "sweep", SWEEP_DEFAULTS) \
        .parse_args(argv)
    cfg = configlib.resolve(args.config, args.overrides, default_file=SWEEP_DEFAULTS)
    if args.print_config:
        print(cfg.describe())
        return
    summary = run_sweep(args.data_root, cfg["sweep"], _jobs(args.jobs))
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        print(summary.round(4).to_string(index=False))
    print(f"summary written to {experiment_dir(args.data_root, cfg['sweep']['name']) / 'results'}")


@guard
def label_budget_main(argv=None) -> None:
    import pandas as pd

    from coremax.study import STUDY_DEFAULTS, run_study, summarise  # deferred

    args = _sweep_parser("Label-budget study: fine-tuning vs from scratch vs baselines (a sweep).", "study",
                         STUDY_DEFAULTS).parse_args(argv)
    cfg = configlib.resolve(args.config, args.overrides, default_file=STUDY_DEFAULTS)
    if args.print_config:
        print(cfg.describe())
        return
    summary = run_study(args.data_root, cfg["study"], _jobs(args.jobs))
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(summarise(summary).round(3).to_string(index=False))
    print(f"summary written to {experiment_dir(args.data_root, cfg['study']['name']) / 'results'}")


@guard
def archive_main(argv=None) -> None:
    from coremax import archive  # deferred

    p = argparse.ArgumentParser(description="Archive data sets and experiments with a manifest of hashes.")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="pack a data set or experiment into a .tar.gz")
    a.add_argument("kind", choices=list(archive.KINDS))
    a.add_argument("name")
    a.add_argument("--out", required=True)
    a.add_argument("--data-root", default="data")
    c = sub.add_parser("check", help="check a folder against its manifest")
    c.add_argument("folder")
    t = sub.add_parser("trust", help="vouch for the results pickles of a folder that came from elsewhere "
                                      "(signs them with this machine's key so they can be read)")
    t.add_argument("folder")
    u = sub.add_parser("unpack", help="unpack an archive into a data root and check it")
    u.add_argument("archive")
    u.add_argument("--data-root", default="data")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        print(f"wrote {archive.pack(args.data_root, args.kind, args.name, args.out)}")
    elif args.cmd == "check":
        problems = archive.check(args.folder)
        print("\n".join(problems) if problems else f"{args.folder}: all files match the manifest")
        if problems:
            raise SystemExit(1)
    elif args.cmd == "trust":
        print(f"trusted {archive.trust(args.folder)} results pickles under {args.folder}")
    else:
        print(f"unpacked and checked {archive.unpack(args.archive, args.data_root)}")


DEMO_DOC = """The whole chain on the embedded synthetic data (what `make demo` runs):
synthetic scanner -> preprocess (labelled set + unlabelled pool) -> tiny MSM pretrain on the pool -> fine-tune
-> test -> MSM against the same network from scratch and the classical baselines at one small label budget.

Steps already done under the data root (a data set, a completed experiment) are reused, so the demo can be
re-run; pass --fresh-names to train new experiments beside the old ones.
"""
DEMO_PRETRAIN_EPOCHS = 2  # the shipped CPU recipe pretrains for 10; the demo keeps within 10 minutes (its
# cosine schedule still runs to the end: warm-up is at most a quarter of a run)


def _completed(data_root, name) -> bool:
    from coremax.experiment import Experiment  # deferred

    return (experiment_dir(data_root, name) / "config.toml").is_file() and \
        Experiment.open(data_root, name).provenance().get("status") == "completed"


@guard
def demo_main(argv=None) -> None:
    from coremax.data.dataset import EMBEDDED, build_dataset  # deferred
    from coremax.eval.run import evaluate_experiment  # deferred
    from coremax.experiment import Experiment  # deferred
    from coremax.stages import function_defaults, run_stage  # deferred
    from coremax.study import STUDY_DEFAULTS, pretrain_name, run_study, summarise  # deferred

    p = argparse.ArgumentParser(description=DEMO_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data")
    p.add_argument("--fresh-names", action="store_true", help="suffix experiment names with the time")
    p.add_argument("--skip-study", action="store_true", help="stop after testing the fine-tuned model")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    suffix = datetime.now(timezone.utc).strftime("-%Y%m%d-%H%M%S") if args.fresh_names else ""
    study_cfg = configlib.resolve("configs/label-budget-smoke.toml", [f'study.name="demo-budget{suffix}"',
                                  f'study.pretrain="demo-pretrain{suffix}"'], default_file=STUDY_DEFAULTS)["study"]
    # The demo's protocol (new-cores-spectra) pretrains on every spectrum, the test cores' too, never their labels.
    protocol = study_cfg["protocol"][0]
    pre, ft, study = pretrain_name(study_cfg, protocol), f"demo-finetune{suffix}", study_cfg["name"]
    t0 = time.monotonic()

    print("== 1/5 data: synthetic scanner -> data sets 'synthetic' (labelled) and 'synthetic-pool' (unlabelled)")
    for name in EMBEDDED:
        if (dataset_dir(root, name) / "info.toml").is_file():
            print(f"   reusing {root / 'datasets' / name}")
        else:
            print(f"   wrote {build_dataset(root, name, split=0.8)}")

    for step, name, conf, extra in (
        ("2/5 pretrain (the CPU recipe, shortened: MSM on the pool, the labelled train rows and the test cores'"
         " spectra, never their labels)", pre, "configs/cpu-pretrain.toml",
         ['experiment.stage="pretrain"', f"optim.epochs={DEMO_PRETRAIN_EPOCHS}", "data.test_spectra=true"]),
        ("3/5 fine-tune (CaCO3, TOC; the CPU recipe's LP-FT: a ridge head on the frozen encoder, then full "
         "fine-tuning; every labelled train row)", ft, "configs/cpu-lpft.toml",
         ['experiment.stage="finetune"', f'finetune.from="{pre}"']),
    ):
        print(f"== {step}: experiment {name!r}")
        if _completed(root, name):
            print(f"   reusing {root / 'experiments' / name}")
            continue
        cfg = configlib.resolve(conf, extra + [f'experiment.name="{name}"'], function_defaults=function_defaults())
        print(f"   wrote {run_stage(cfg.to_dict(), root, command=sys.argv).path}")

    print(f"== 4/5 test {ft!r} on the held-out test cores")
    metrics = evaluate_experiment(root, ft)
    print(metrics[metrics["scope"] == "all"][["target", "n", "r2", "rmse", "mae", "bias", "coverage"]]
          .round(3).to_string(index=False))
    floor = Experiment.open(root, ft).read_result("test-floor")
    print("   the floor (true composition under each scan spot; no model can do better): " + ", ".join(
        f"{r.target} RMSE {r.rmse:.2f} (R^2 {r.r2:.3f})" for r in floor[floor["scope"] == "all"].itertuples()))
    print(f"   figures and pickles in {root / 'experiments' / ft / 'results'}")

    if not args.skip_study:
        print(f"== 5/5 MSM against the same network from scratch and the classical baselines, 50 labels, one seed, "
              f"protocol {protocol}")
        summary = run_study(root, study_cfg)
        print(summarise(summary).round(3).to_string(index=False))
        print("   one seed and a shortened pretraining: the README's table (3 seeds, every budget) is the measure.")
        print(f"   table and figure in {root / 'experiments' / study / 'results'}")
    print(f"done in {time.monotonic() - t0:.0f} s; experiments under {root / 'experiments'}")


@guard
def bench_train_main(argv=None) -> None:
    import torch

    from coremax.bench import bench_train, cpu_cases, gpu_cases  # deferred

    p = argparse.ArgumentParser(description="Training throughput of the real training loop: spectra/s, achieved "
                                            "TFLOP/s, MFU on a GPU, peak memory; CPU cases, and GPU cases when a "
                                            "GPU is present.")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case (after one warm-up epoch)")
    p.add_argument("--only", default="", help="run only the cases whose name contains this text")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU cases even when a GPU is present")
    args = p.parse_args(argv)
    cases = cpu_cases() + (gpu_cases() if torch.cuda.is_available() and not args.no_gpu else [])
    cases = [c for c in cases if args.only in c["name"]]
    if not cases:
        raise UserError(f"No benchmark case matches --only {args.only!r}.")
    print("case | device | stage | size | channels | batch | amp | compile | spectra/s | TFLOP/s | MFU | peak MiB")
    table = bench_train(cases, args.steps)
    if table.empty:
        raise UserError("Every benchmark case failed; the lines above say why.")
    ref = table.set_index("case")["spectra_per_s"]
    pairs = [("CPU recipe pretrain (window 512)", "tiny, 2048 channels (reference)"),
             ("base MAE, mask 0.75, batch 32, bf16", "base MAE, mask 0.75, batch 32")]
    for a, b in pairs:
        if a in ref and b in ref:
            print(f"{a} / {b}: {ref[a] / ref[b]:.2f}x")


@guard
def bench_data_main(argv=None) -> None:
    from coremax.bench import bench_data  # deferred

    p = argparse.ArgumentParser(description="Data path at scale: simulate an unlabelled pool of N spectra as .spe "
                                            "files, read them (files/s), preprocess, then report the data set's "
                                            "size on disk, the time to read its energy window and peak RSS.")
    p.add_argument("--spectra", type=int, default=20_000, help="pool size (the 10^6 target: 1000000)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.spectra < 1 or args.workers < 1:
        raise UserError("--spectra and --workers must be at least 1.")
    bench_data(args.spectra, args.workers)
