"""Commands on data: preprocess, simulate, archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coremax.errors import UserError
from coremax.paths import dataset_dir

from coremax.cli.common import POOL, guard, parse

@guard
def preprocess_main(argv=None) -> None:
    from coremax.data.dataset import build_dataset  # deferred
    from coremax.data.embedded import default_kv  # deferred
    from coremax.data.runs import PAIR_MM  # deferred

    p = argparse.ArgumentParser(
        description="Raw Avaatech .spe files + bulk CSV -> a prepared data set (train/val/test Parquet tables + "
                    ".npy counts, info.toml). Without --raw: the embedded synthetic data (generated if needed).")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--raw", help="folder of <core>/<run folder>/*.spe (default: the embedded synthetic archive "
                   "under <data-root>/datasets/external/<name>/, generated if missing)")
    p.add_argument("--table", help="a compiled spectra table instead of --raw: one row per spectrum with its channel "
                   "counts (CSV or Parquet; channel columns by name 0, 1, ... or ch0000, ..., else the numeric ones)")
    p.add_argument("--info", help="with --table: the info table (CSV or Parquet) of core, depth_mm and any of "
                   "section, position_mm, kv, live_time_s, current_ma, scanner; joined on source_file or spectrum_id, "
                   "else row by row")
    p.add_argument("--elements", nargs="+", metavar="CSV",
                   help="instead of spectra: a lab's element tables (bAxil/WinAxil batch exports, ITRAX result.txt or "
                   "CoreMAX's layout, docs/element-tables.md), one or several files; the data set then serves the "
                   "classical calibrations only. Without it every spectrum is fitted into element intensities")
    p.add_argument("--bulk", help="CSV of core, depth_mm and measured columns: CaCO3, TOC and any other, each a "
                   "target (default: bulk.csv beside --raw or beside the first --elements file)")
    p.add_argument("--name", help=f"data set name (default: synthetic, which also builds the unlabelled pool "
                   f"{POOL} when missing; with --raw the raw folder's name, or its parent's when it is called raw)")
    p.add_argument("--kv", help="tube voltage of the run to read, or several (e.g. 10,30): each spot's runs paired "
                   "by depth, side by side (default: 10; 10,30 for the embedded synthetic-2kv)")
    p.add_argument("--pair-mm", type=float, default=PAIR_MM,
                   help=f"with several --kv: max depth distance of one spot's runs (default: {PAIR_MM:g})")
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
    args = parse(p, argv)
    # Default name: synthetic, else the raw folder's name (its parent's when the folder is just called "raw").
    given = args.raw or args.table or (args.elements[0] if args.elements else None)
    raw = Path(given).resolve() if given else None
    name = args.name or ("synthetic" if raw is None else raw.parent.name if raw.name.lower() == "raw" else raw.name)
    names = [name]
    if (args.table or args.elements) and args.name is None:
        name = raw.stem  # the table's name
    if raw is None and args.name is None and not (dataset_dir(args.data_root, POOL) / "info.toml").is_file():
        names.append(POOL)  # the embedded default: the labelled set and the pool pretraining reads beside it
    for name in names:
        path = build_dataset(args.data_root, name, raw=args.raw, bulk=args.bulk, split=args.split,
                             split_by=args.split_by, test_cores=args.test_cores.split(",") if args.test_cores else None,
                             kv=args.kv or default_kv(name), pair_mm=args.pair_mm, match_mm=args.match_mm,
                             on_error=args.on_error, overwrite=args.overwrite,
                             seed=args.seed, spectrum_length=args.spectrum_length, workers=args.workers,
                             shard_rows=args.shard_rows, command=sys.argv, table=args.table, info_table=args.info,
                             elements=args.elements)
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
def simulate_main(argv=None) -> None:
    from coremax.data.simulate import BENCHMARKS, simulate_archive  # deferred

    p = argparse.ArgumentParser(description="Write a synthetic Avaatech XRF core-scanner archive.")
    p.add_argument("--out", help="the archive to write (default: data/datasets/external/synthetic, or "
                   "data/datasets/external/<name> with --benchmark)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=12)
    p.add_argument("--spacing-mm", type=float, default=10.0)
    p.add_argument("--kv", help="comma-separated tube voltages, one run folder each (default: 10)")
    p.add_argument("--benchmark", choices=list(BENCHMARKS),
                   help="a named benchmark beside the default archive: synthetic-2kv = --kv 10,30 --lab-runs "
                        "--marine-bromine --trace-ppm (the default archive's cores, lab samples and test cores)")
    p.add_argument("--lab-runs", action="store_true",
                   help="scan the 30 and 50 kV runs as labs do: a tube filter (Pd-thick, Cu), more current, a "
                        "longer live time, written in each file's header and name (default: the head's 10 kV "
                        "settings for every run)")
    p.add_argument("--marine-bromine", action="store_true",
                   help="add Br bound to marine organic carbon (about 70 ppm per wt%% marine TOC, lognormal "
                        "scatter) to the sea-salt Br; truth.csv gains TOC_marine and Br_organic_ppm")
    p.add_argument("--trace-ppm", action="store_true",
                   help="Rb and Zr at their regional ppm (100-220 ppm of the clay); the default archive keeps its "
                        "historic contents, 100 times as much, so that its files stay as they are")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive at --out")
    p.add_argument("--unlabelled", action="store_true",
                   help="write an unlabelled pool (every head, cores named apart, no bulk.csv)")
    p.add_argument("--dense-lab", action="store_true",
                   help="also write bulk-dense.csv, a lab sample at every scanned depth, and bulk-newcores-dense.csv, "
                        "bulk.csv's samples of the training cores with every depth of the test cores (for "
                        "sampling studies)")
    p.add_argument("--elements", action="store_true",
                   help="also fit every spectrum into element intensities (coremax.data.elements) and write "
                        "<out>/elements.csv beside bulk.csv, in the bAxil batch layout (docs/element-tables.md)")
    args = parse(p, argv)
    if args.benchmark and (args.kv or args.lab_runs or args.marine_bromine or args.trace_ppm):
        raise UserError(f"--benchmark {args.benchmark} sets --kv, --lab-runs, --marine-bromine and --trace-ppm "
                        "itself; leave them out, or leave out --benchmark.")
    try:
        kvs = [float(k) for k in (args.kv or "10").split(",")]
    except ValueError:
        raise UserError(f"--kv {args.kv!r} must be comma-separated numbers, e.g. 10,30.") from None
    if args.benchmark:
        kvs = list(BENCHMARKS[args.benchmark]["kvs"])  # for --elements, which fits every run
    args.out = args.out or f"data/datasets/external/{args.benchmark or 'synthetic'}"
    m = simulate_archive(args.out, args.seed, args.cores, args.spacing_mm, kvs, args.workers,
                         overwrite=args.overwrite, labelled=not args.unlabelled, dense_lab=args.dense_lab,
                         lab_runs=args.lab_runs, marine_bromine=args.marine_bromine, trace_ppm=args.trace_ppm,
                         benchmark=args.benchmark)
    print(f"wrote {m['spectra']} spectra of {m['cores']} cores and {m['bulk_samples']} bulk samples to "
          f"{args.out} (test cores: {', '.join(m['test_cores']) or 'none'})")
    if args.elements:
        from coremax.data.element_tables import write_archive_elements  # deferred: the fit, only for --elements

        path, rows = write_archive_elements(args.out, kvs, args.workers)
        print(f"wrote the element intensities of {rows} spectra to {path}")


@guard
def archive_main(argv=None) -> None:
    from coremax import archive  # deferred

    p = argparse.ArgumentParser(description="Archive data sets and experiments with a manifest of hashes; bundle a "
                                            "trained model.")
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
    b = sub.add_parser("bundle", help="write a completed finetune or baseline experiment as one model bundle "
                                       "(weights, calibration, metrics, model card) for predict.py --model")
    b.add_argument("--experiment", required=True)
    b.add_argument("--out", required=True, help="the bundle to write (NAME.coremax); never overwritten")
    b.add_argument("--data-root", default="data")
    args = parse(p, argv)
    if args.cmd == "bundle":
        from coremax.bundle import write_bundle  # deferred: it loads the model stack

        print(f"wrote {write_bundle(args.data_root, args.experiment, args.out)}")
    elif args.cmd == "pack":
        print(f"wrote {archive.pack(args.data_root, args.kind, args.name, args.out)}")
    elif args.cmd == "check":
        problems = archive.check(args.folder)
        print("\n".join(problems) if problems else f"{args.folder}: all files match the manifest")
        if problems:
            raise SystemExit(1)
    elif args.cmd == "trust":
        print(f"trusted {archive.trust(args.folder)} results pickles under {args.folder}")
    else:
        print(archive.describe_unpacked(archive.unpack(args.archive, args.data_root)))

