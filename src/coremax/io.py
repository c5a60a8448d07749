"""Atomic writes: a crash never leaves a half-written file in place of a good one (a folder replaced by
folder_in_place: see there for the one moment a crash leaves the old folder aside), hashes, signed pickles, TOML."""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import os
import pickle
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
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


# What to do about a write that the system refused, by its errno; the rest: permissions or the disk.
_OS_HINTS = {errno.ENOSPC: "free some space on that disk or choose another --data-root",
             errno.EROFS: "the file system is read-only: choose a writable --data-root",
             errno.EDQUOT: "the disk quota is used up: free some space or choose another --data-root",
             errno.EFBIG: "the file is larger than this process may write: raise the file-size limit (ulimit -f) "
                          "or choose another --data-root"}


def os_error_reason(e: OSError) -> str:
    """Why the system refused, in its words (by errno first: pyarrow's strerror wraps it in a long detail, and
    numpy raises some OSErrors with no strerror at all)."""
    if e.errno:
        return os.strerror(e.errno)
    return e.strerror or (str(e).splitlines()[0][:80] if str(e) else type(e).__name__)


def os_error_hint(e: OSError) -> str:
    return _OS_HINTS.get(e.errno, "check the permissions and the disk of the data root (--data-root)")


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            e.filename = str(path)  # the error names the file being written, not its temporary name
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


def save_npy(path, array: np.ndarray) -> None:
    """np.save's bytes, written through Python's file: numpy's own writer reports a refused write (a full disk, a
    file-size limit) as a short count with no errno, so nobody could say why."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(array.reshape(-1).view(np.uint8))


def save_npy_blocks(path, shape: tuple, dtype, blocks) -> None:
    """The bytes save_npy writes for an array of `shape` and `dtype` that arrives as `blocks` of rows, one after
    another (so the whole array is never in memory); the blocks must hold exactly `shape[0]` rows."""
    dtype, written = np.dtype(dtype), 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                                 "shape": tuple(shape)})
        for block in blocks:
            block = np.ascontiguousarray(block, dtype)
            f.write(block.reshape(-1).view(np.uint8))
            written += len(block)
    if written != shape[0]:
        raise ValueError(f"{path}: {written} rows written for a shape of {shape}")


def write_text(path, text: str, in_place_when_full: bool = False) -> None:
    """Write atomically; with `in_place_when_full`, a disk too full for the temporary copy gets the text over
    the old file's own blocks instead (not atomic: only for a record that must be written, a run's status)."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        if not (in_place_when_full and e.errno in (errno.ENOSPC, errno.EDQUOT) and Path(path).is_file()):
            raise
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()


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


def signed(path, data: bytes | None = None) -> bool:
    """Whether this machine's key signed the file at `path` (holding `data`) as it is now."""
    path = Path(path)
    sig = path.with_name(path.name + ".hmac")
    data = path.read_bytes() if data is None else data
    # bytes, not text: a signature file holding non-ASCII bytes is simply not a match
    return sig.is_file() and hmac.compare_digest(sig.read_bytes().strip(), _signature(data).encode())


def read_pickle(root, path) -> pd.DataFrame:
    """Unpickle a file under the data root only when this machine's key signed it (see above), and then only
    the types CoreMAX's results are made of (`load_results`)."""
    full = inside(root, path, "pickle")
    data = full.read_bytes()
    if not signed(full, data):
        raise UntrustedPickle(f"{full} was not written by CoreMAX on this machine, or was changed since; a pickle "
                              "can run code when read, so it is not read. If you trust where it came from, run "
                              f"python scripts/archive.py trust {full.parent.parent}.")
    return load_results(data, full)


class UntrustedPickle(UserError):
    pass


# Every global that the results CoreMAX writes (pandas DataFrames and Series of numbers, strings and booleans)
# reference, found by pickling them and listing the globals (pandas 3 stores strings as pyarrow arrays). A
# signature says who wrote a file, not what it does; this list is what a pickle may call, signed or not.
RESULT_GLOBALS = {
    "builtins": {"slice"},
    "numpy": {"dtype", "ndarray"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.numeric": {"_frombuffer"},
    "pandas": {"DataFrame", "Index", "RangeIndex", "Series", "StringDtype"},
    "pandas._libs.internals": {"_unpickle_block"},
    "pandas.arrays": {"ArrowStringArray"},
    "pandas.core.indexes.base": {"_new_Index"},
    "pandas.core.internals.managers": {"BlockManager", "SingleBlockManager"},
    "pyarrow.lib": {"_restore_array", "py_buffer", "type_for_alias"},
}


class ForeignPickle(UntrustedPickle):
    pass


class _ResultsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where):
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str):
        if name in RESULT_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise ForeignPickle(f"{self.where} refers to {module}.{name}, which no CoreMAX result holds (a pickle can "
                            "run code when read), so it is not read; delete it or write it again with CoreMAX.")


def load_results(data: bytes, where) -> pd.DataFrame:
    """Unpickle a results file admitting only RESULT_GLOBALS; anything else is refused, naming `where`."""
    try:
        return _ResultsUnpickler(data, where).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or not a pickle: one sentence
        raise UserError(f"{where} cannot be read as a CoreMAX result ({type(e).__name__}); it is damaged or "
                            "not a results pickle: delete it or write it again with CoreMAX.") from None


def write_toml(path, data: dict, in_place_when_full: bool = False) -> None:
    import tomli_w

    write_text(path, tomli_w.dumps(data), in_place_when_full)


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
