"""Atomic writes: a crash never leaves a half-written file in place of a good one (a folder replaced by
folder_in_place: see there for the one moment a crash leaves the old folder aside), hashes, signed pickles, TOML."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from coremax.errors import UserError
from coremax.paths import inside, refuse_links


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_links(path)
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


@contextmanager
def folder_in_place(target: Path):
    """Yield a temporary folder beside `target`; on success rename it onto `target` (an old one is moved aside
    and removed only once the new one is in place), on error remove it. A crash between the two renames leaves
    no folder at `target`, only the old one intact as `.<name>.old` beside it (rename it back to recover)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a data set is shared like any other folder
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# Results pickles are signed with a key that never leaves this machine (HMAC-SHA256 in `<file>.hmac` beside
# each): a pickle can run code when read, so one that arrived from elsewhere (an archive, a copied or rsynced
# folder) is only read after the user vouches for it (scripts/archive.py trust), never silently.
KEY_ENV = "COREMAX_KEY_FILE"


KEY_BYTES = 32


def _key() -> bytes:
    """This machine's signing key, made on first use: private from its first byte (written to a 0600 temporary
    file in a 0700 folder, then linked into place, so two first runs at once end up with one key and nobody reads
    a half-written one). A key that others can read, or a short one, is refused."""
    path = Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "coremax" / "results.key")
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".results.key.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o077:
        raise UserError(f"The signing key {path} can be read or written by others (mode "
                        f"{path.stat().st_mode & 0o777:o}); make it private with chmod 600 {path}.")
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise UserError(f"The signing key {path} holds {len(key)} bytes, fewer than {KEY_BYTES}; delete it (a new one "
                        "is made) and vouch again for your results with scripts/archive.py trust.")
    return key


def _signature(data: bytes) -> str:
    return hmac.new(_key(), data, hashlib.sha256).hexdigest()


def sign(path) -> None:
    """Vouch for a pickle: write its signature with this machine's key."""
    path = Path(path)
    write_text(path.with_name(path.name + ".hmac"), _signature(path.read_bytes()))


def write_pickle(path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_pickle(tmp)
    sign(path)


def read_pickle(root, path) -> pd.DataFrame:
    """Unpickle a file under the data root only when this machine's key signed it (see above)."""
    full = inside(root, path, "pickle")
    data = full.read_bytes()
    sig = full.with_name(full.name + ".hmac")
    # bytes, not text: a signature file holding non-ASCII bytes is simply not a match
    if not (sig.is_file() and hmac.compare_digest(sig.read_bytes().strip(), _signature(data).encode())):
        raise UntrustedPickle(f"{full} was not written by CoreMAX on this machine, or was changed since; a pickle "
                              "can run code when read, so it is not read. If you trust where it came from, run "
                              f"python scripts/archive.py trust {full.parent.parent}.")
    return pickle.loads(data)


class UntrustedPickle(UserError):
    pass


def write_toml(path, data: dict) -> None:
    import tomli_w

    write_text(path, tomli_w.dumps(data))


def parse_toml(text: str, where: str) -> dict:
    """TOML text read from `where` (named in the error)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"The TOML of {where} cannot be parsed ({e}); fix its syntax.") from None


def read_toml(path) -> dict:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"The file {str(path)!r} does not exist; check the path.") from None
    except IsADirectoryError:
        raise UserError(f"{str(path)!r} is a folder, not a TOML file; give the file's path.") from None
    return parse_toml(text, f"the file {str(path)!r}")
