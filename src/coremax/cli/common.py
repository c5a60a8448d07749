"""What the commands share: the experiment parser, the config from flags, one-sentence errors."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from coremax import config as configlib
from coremax import logs
from coremax.errors import UserError
from coremax.io import os_error_hint, os_error_reason
from coremax.paths import experiment_dir

# Each command imports the library it runs inside its main ("deferred"): a command starts without loading
# what only the others need (scikit-learn, the simulator's physics, ...). tests/test_layers.py counts these
# imports in the import graph too, so they cannot hide a circle.

POOL = "synthetic-pool"  # the unlabelled pool built beside the embedded labelled set


def experiment_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                epilog="Overrides: section.key=value with TOML values, e.g. optim.epochs=5 "
                                       "model.mask_ratio=0.5 data.targets='[\"CaCO3\"]'.")
    p.add_argument("--config", help="experiment TOML file (overrides default-config.toml)")
    p.add_argument("--stage", help="sets experiment.stage: pretrain, finetune or baseline")
    p.add_argument("--name", help="experiment name (folder under <data-root>/experiments/); sets experiment.name")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name from its last.pth, with its frozen config")
    p.add_argument("--data-root", default="data", help="folder holding datasets/ and experiments/ (default: data)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config with the level each value came from, then exit")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    return p


def resolve_args(args: argparse.Namespace) -> configlib.Config:
    """Resolve the config of a run from parsed flags. With --resume the frozen config of the experiment
    stands at the experiment level (unless --config names another file); overrides still apply on top."""
    overrides = list(args.overrides)
    for flag, key in (("stage", "experiment.stage"), ("name", "experiment.name")):
        value = getattr(args, flag)
        other = next((v for s, k, v in map(configlib.parse_override, args.overrides)
                      if f"{s}.{k}" == key and v != value), None)
        if value and other is not None:  # which of the two was meant cannot be guessed
            raise UserError(f"--{flag} {value} contradicts {key} = {other!r} on the same command line; give "
                            "one of them (or the same value in both).")
        if value:
            overrides += configlib.as_overrides({key: value})
    config_file = args.config
    if args.resume and not config_file:
        if not args.name:
            raise UserError("--resume needs --name to say which experiment to continue.")
        frozen = experiment_dir(args.data_root, args.name) / "config.toml"
        if not frozen.is_file():
            raise UserError(f"Cannot resume {args.name!r}: there is no experiment at {frozen.parent}; "
                            "check --name and --data-root.")
        config_file = frozen
    return configlib.resolve(config_file, overrides,
                             frozen=args.resume and not args.config)


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Every command's flags, with --quiet and --verbose added, parsed; the console set as they ask (the log
    files under the data root always hold every event in full)."""
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print warnings, errors and results only")
    out.add_argument("--verbose", action="store_true", help="print every log event with all its fields")
    args = p.parse_args(argv)
    logs.set_console(quiet=args.quiet, verbose=args.verbose)
    return args


def guard(main):
    """Run a script's main: a UserError becomes one line on stderr and exit status 2, no traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:  # a stopped run says how to resume it (coremax.stages.Interrupted)
            print(str(e) or "interrupted", file=sys.stderr)
            sys.exit(130)
        except OSError as e:  # permissions, a full disk, a read-only file system, a vanished mount
            print(f"error: {e.filename or 'a file'} cannot be written or read ({os_error_reason(e)}); "
                  f"{os_error_hint(e)}.", file=sys.stderr)
            sys.exit(2)
    return wrapper



def new_cores_parser(description: str, experiment: str, bundles: bool = False,
                     out_help: str = "CSV to write (figures go beside it)") -> argparse.ArgumentParser:
    """The flags of the commands that apply an experiment (or, with `bundles`, a model bundle: --model) to newly
    scanned cores (predict, suggest)."""
    p = argparse.ArgumentParser(description=description)
    which = p.add_mutually_exclusive_group(required=True) if bundles else p
    which.add_argument("--experiment", required=not bundles, help=f"{experiment} experiment name")
    if bundles:
        which.add_argument("--model", help="a model bundle (.coremax, scripts/archive.py bundle) instead of an "
                                           "experiment: needs neither the data set nor the experiment")
    p.add_argument("--raw", required=True, help="folder of <core>/<run folder>/*.spe, or one core's folder")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--on-error", default="skip", choices=("fail", "skip"), help="what a bad .spe file does")
    return p


def _jobs(value: int) -> int:
    if value < 1:
        raise UserError(f"--jobs {value} must be at least 1.")
    return value


def _sweep_parser(description: str, what: str, defaults: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help=f"{what} TOML (see src/coremax/config/{defaults.name})")
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side (processes on the CPU)")
    p.add_argument("--print-config", action="store_true")
    p.add_argument("overrides", nargs="*", metavar=f"{what}.key=value")
    return p

