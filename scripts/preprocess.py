#!/usr/bin/env python
"""Raw Avaatech .spe files + bulk CSV -> a prepared data set (train/val/test Parquet tables + .npy counts, info.toml).

    python scripts/preprocess.py --split=0.8                     # the embedded synthetic data (generated if needed)
    python scripts/preprocess.py --raw path/to/raw --bulk bulk.csv --name mycores --test-cores A,B --split-by section
"""
import argparse
import sys

from coremax.cli import guard

POOL = "synthetic-pool"


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--raw", help="folder of <core>/<run folder>/*.spe (default: the embedded synthetic archive "
                   "under <data-root>/datasets/external/<name>/, generated if missing)")
    p.add_argument("--bulk", help="CSV of core, depth_mm, CaCO3, TOC (default: bulk.csv beside --raw)")
    p.add_argument("--name", help="data set name (default: synthetic, which also builds the unlabelled pool "
                   "synthetic-pool when missing; with --raw the raw folder's name, or its parent's when it is "
                   "called raw)")
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
    args = p.parse_args(argv)
    from pathlib import Path

    from coremax.data.dataset import build_dataset
    from coremax.paths import dataset_dir

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
                             command=sys.argv)
        summarise(args.data_root, name, path)


def summarise(data_root, name, path):
    from coremax.data.dataset import load_info

    info = load_info(data_root, name)
    c = info["counts"]
    print(f"data set {name!r} written to {path} (validation split by {info['split']['by']})")
    print(f"  files read {c['files_read']}, skipped {c['files_skipped']}, bulk samples unmatched {c['bulk_unmatched']}"
          f", negative values clipped {c['bulk_negative_clipped']}")
    for split in ("train", "val", "test"):
        print(f"  {split:5}: {c[f'rows_{split}']:6d} spectra, {c[f'labelled_{split}']:5d} labelled, "
              f"cores {', '.join(info['cores'][split][:12])}{' ...' if len(info['cores'][split]) > 12 else ''}")
    for s in info["skipped"][:10]:
        print(f"  skipped {s['file']}: {s['reason']}")
    for u in info["unmatched"][:10]:
        print(f"  unmatched bulk sample {u['core']} at {u['depth_mm']} mm: {u['reason']}")
    if len(info["unmatched"]) > 10:
        print(f"  ... {len(info['unmatched']) - 10} more unmatched samples listed in {path / 'info.toml'}")


if __name__ == "__main__":
    main()
