"""Atomic writes: a crash never leaves a half-written file in place of a good one."""

from __future__ import annotations

import os
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from coremax.paths import inside


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_pickle(path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_pickle(tmp)


def read_pickle(root, path) -> pd.DataFrame:
    """Unpickle only files under the data root: a pickle can run code, so never one from elsewhere."""
    full = inside(root, path, "pickle")
    with open(full, "rb") as f:
        return pickle.load(f)


def write_toml(path, data: dict) -> None:
    import tomli_w

    write_text(path, tomli_w.dumps(data))


def read_toml(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    from coremax.errors import UserError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"The file {str(path)!r} does not exist; check the path.") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"The TOML file {str(path)!r} cannot be parsed ({e}); fix its syntax.") from None
