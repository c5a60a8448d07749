"""Command-line plumbing shared by the scripts: the common flags and the one-sentence error exit."""

from __future__ import annotations

import argparse
import functools
import sys

from coremax import config as configlib
from coremax.errors import UserError
from coremax.paths import experiment_dir


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
        except PermissionError as e:  # a read-only data root or a folder of someone else's
            print(f"error: {e.filename or 'a file'} cannot be written or read ({e.strerror}); check the "
                  "permissions of the data root (--data-root).", file=sys.stderr)
            sys.exit(2)
    return wrapper

