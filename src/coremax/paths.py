"""Names and paths under the data root: nothing a user types may escape its folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from coremax.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


MAX_NAME = 120  # folder names stay well under the 255 bytes file systems allow, with room for suffixes


def check_name(name: str, kind: str = "experiment", where: str = "") -> str:
    """Return `name` if it is a safe folder name (letters, digits, '-', '_', '.'), else raise UserError; `where`
    (a file and its line) leads the sentence when the name was read from a file."""
    the = f"{where}: the" if where else "The"
    if not isinstance(name, str) or not name:
        raise UserError(f"{the} {kind} name is empty; give one made of letters, digits, '-', '_' or '.'.")
    if len(name) > MAX_NAME:
        raise UserError(f"{the} {kind} name {name[:40]!r}... is {len(name)} characters long; use at most {MAX_NAME}.")
    if os.path.isabs(name) or "/" in name or "\\" in name or ".." in name or name.startswith(".") \
            or not _NAME.match(name):
        raise UserError(
            f"{the} {kind} name {name!r} is not allowed; use only letters, digits, '-', '_' and '.' "
            "(no slashes, no '..', not starting with '.')."
        )
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "path") -> Path:
    """Resolve `path` (relative to `root` unless absolute) and refuse it unless it lies under `root`."""
    root_r = Path(root).resolve()
    p = Path(path)
    full = (p if p.is_absolute() else root_r / p).resolve()
    if full != root_r and root_r not in full.parents:
        raise UserError(f"The {what} {str(path)!r} lies outside the data root {str(root_r)!r}; "
                        "move it under the data root or pass --data-root.")
    return full


def relative_to_root(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """A real path (relative to the working directory) as stored in config/provenance files: relative to
    the data root, with forward slashes."""
    return inside(root, Path(path).absolute()).relative_to(Path(root).resolve()).as_posix()


def _root(root: str | os.PathLike) -> Path:
    """The data root, absolute (so that a path built from a relative root, the default `data`, never gets the root
    prepended twice by `inside`). A file in its place is said to be one: otherwise every data set and experiment
    under it would be reported missing, or fail to be written with the data root's disk blamed."""
    full = Path(root).resolve()
    if full.exists() and not full.is_dir():
        raise UserError(f"The data root {str(root)!r} is a file, not a folder; pass --data-root with the folder that "
                        "holds datasets/ and experiments/ (or a new one).")
    return full


def dataset_dir(root: str | os.PathLike, name: str) -> Path:
    return _root(root) / "datasets" / check_name(name, "dataset")


def experiment_dir(root: str | os.PathLike, name: str) -> Path:
    return _root(root) / "experiments" / check_name(name, "experiment")


def refuse_links(path) -> None:
    """Refuse to write `path` when it or its folder is a symbolic link: a folder copied with rsync -a or tar keeps
    links, and a linked logs/events.jsonl or results/ would send writes anywhere on the machine."""
    path = Path(path)
    for p in (path, path.parent):
        if p.is_symlink():
            raise UserError(f"{p} is a symbolic link (to {os.readlink(p)}); CoreMAX does not write through links "
                            "inside an experiment or data set folder: replace it with a real file or folder.")
