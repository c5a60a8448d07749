"""Pack a data set or an experiment into a tar file with a manifest of hashes, and check copies against it.

The tar holds paths relative to the data root (`experiments/<name>/...`, `datasets/<name>/...`) plus
`<kind>/<name>/MANIFEST.toml`, so unpacking it into any data root gives a working copy there.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from coremax.errors import UserError
from coremax.io import (atomic_path, file_sha256, load_results, parse_toml, read_toml, sign, signed, utc_now,
                        write_toml)
from coremax.paths import check_name

MANIFEST = "MANIFEST.toml"
# The manifest's signature with the packing machine's key: only that key tells a copy of an archive packed here from
# one whose files and manifest someone rewrote together (a manifest alone is only self-consistent).
SIGNATURE = MANIFEST + ".hmac"
KINDS = {"experiment": "experiments", "dataset": "datasets"}


def _folder(data_root, kind: str, name: str) -> Path:
    if kind not in KINDS:
        raise UserError(f"Unknown kind {kind!r}; use experiment or dataset.")
    folder = Path(data_root) / KINDS[kind] / check_name(name, kind)
    if not folder.is_dir():
        raise UserError(f"No {kind} named {name!r} under {Path(data_root) / KINDS[kind]}; check the name and --data-root.")
    return folder


def manifest(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in
                   (MANIFEST, SIGNATURE))
    return {"files": {p.relative_to(folder).as_posix(): file_sha256(p) for p in files},
            # the sizes cap what unpacking may write: a member claiming more is refused before extraction
            "sizes": {p.relative_to(folder).as_posix(): p.stat().st_size for p in files}}


def pack(data_root, kind: str, name: str, out: str | Path) -> Path:
    folder = _folder(data_root, kind, name)
    man = {"kind": kind, "name": name, "created_utc": utc_now(), **manifest(folder)}
    write_toml(folder / MANIFEST, man)
    sign(folder / MANIFEST)
    out = Path(out)
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(folder, arcname=f"{KINDS[kind]}/{name}")
    return out


def check(folder: str | Path) -> list[str]:
    """Files that are missing or differ from the manifest of `folder` (empty list = intact)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder} has no {MANIFEST}; pack it with scripts/archive.py pack first.")
    expected = read_toml(folder / MANIFEST).get("files")
    if not isinstance(expected, dict):
        raise UserError(f"{folder / MANIFEST} has no [files] table of hashes; it was not written by scripts/archive.py "
                        "pack, so the folder cannot be checked.")
    actual = manifest(folder)["files"]
    problems = [f"missing: {f}" for f in expected if f not in actual]
    problems += [f"changed: {f}" for f in expected if f in actual and actual[f] != expected[f]]
    problems += [f"extra: {f}" for f in actual if f not in expected]
    return problems


def trust(folder: str | Path) -> int:
    """Sign every results pickle under `folder` with this machine's key: the user vouches for where it came
    from, so CoreMAX may read them. Each is first read as a result (io.load_results, which runs nothing): one
    holding anything else is refused, naming it, and nothing is signed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give an experiment folder or a data root.")
    pickles = [p for p in sorted(folder.rglob("*.pkl")) if p.is_file() and not p.is_symlink()]
    for p in pickles:
        load_results(p.read_bytes(), p)
    for p in pickles:
        sign(p)
    return len(pickles)


def _members(tar: tarfile.TarFile, tar_path) -> tuple[str, str, list[tarfile.TarInfo]]:
    """(kind folder, name, members) of a CoreMAX archive, or a UserError naming the first member that would
    leave its folder (after normalising the path), is a link or a special file, or has a refused name."""
    members = tar.getmembers()
    folders = set()
    for m in members:
        norm = posixpath.normpath(m.name)
        parts = norm.split("/")
        if m.name.startswith("/") or ".." in m.name.split("/") or norm == "." or parts[0] not in KINDS.values() \
                or len(parts) < 2:
            raise UserError(f"{tar_path}: the member {m.name!r} leaves the archive's folder; the archive is refused.")
        if not (m.isfile() or m.isdir()):
            raise UserError(f"{tar_path}: the member {m.name!r} is a link or special file; CoreMAX archives hold "
                            "only files and folders, so the archive is refused.")
        folders.add(tuple(parts[:2]))
    if len(folders) != 1:
        raise UserError(f"{tar_path} is not a CoreMAX archive (one experiments/<name> or datasets/<name> folder).")
    kind_dir, name = next(iter(folders))
    kind = next(k for k, v in KINDS.items() if v == kind_dir)
    check_name(name, kind)
    return kind_dir, name, members


MAX_MANIFEST_BYTES = 64 * 2**20


def _check_sizes(tar: tarfile.TarFile, members: list, top: str, tar_path, root: Path) -> None:
    """Before anything is extracted: every file member has the size its manifest lists (archives packed before
    sizes were listed are only held to the free disk space), and all of them fit on the disk. A small archive
    that expands into a disk-filling file (a gzip bomb) is refused here."""
    info = next((m for m in members if m.name.rstrip("/") == f"{top}/{MANIFEST}" and m.isfile()), None)
    sizes = {}
    if info is not None and info.size <= MAX_MANIFEST_BYTES:
        text = tar.extractfile(info).read().decode("utf-8", errors="replace")
        sizes = parse_toml(text, f"the {MANIFEST} in {tar_path}").get("sizes", {})
    total = 0
    for m in members:
        if not m.isfile() or m is info or m.name.rstrip("/") == f"{top}/{SIGNATURE}":
            continue
        rel = posixpath.normpath(m.name)[len(top) + 1:]
        if sizes and sizes.get(rel) != m.size:
            raise UserError(f"{tar_path}: the member {m.name!r} would write {m.size} bytes but its manifest lists "
                            f"{sizes.get(rel, 'no such file')}; the archive is refused.")
        total += m.size
    free = shutil.disk_usage(root).free
    if total > free:
        raise UserError(f"{tar_path} would unpack {total / 2**30:.1f} GiB but {root} has {free / 2**30:.1f} GiB free; "
                        "free some space or unpack into another --data-root.")


def unpack(tar_path: str | Path, data_root) -> Path:
    """Check every member, extract into a temporary folder of the data root, check every hash against the
    manifest, and only then move the folder into place: a refused archive leaves nothing behind."""
    root = Path(data_root)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            kind_dir, name, members = _members(tar, tar_path)
            target = root / kind_dir / name
            if target.exists():
                raise UserError(f"{target} already exists; unpack into another --data-root or remove it first.")
            root.mkdir(parents=True, exist_ok=True)
            _check_sizes(tar, members, f"{kind_dir}/{name}", tar_path, root)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
            try:
                tar.extractall(tmp, members=members, filter="data")
                problems = check(tmp / kind_dir / name) if (tmp / kind_dir / name / MANIFEST).is_file() \
                    else [f"no {MANIFEST}"]
                if problems:
                    raise UserError(f"{tar_path} does not match its manifest ({problems[0]}, {len(problems)} "
                                    "problem(s)); the archive is damaged, nothing was unpacked.")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / kind_dir / name, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UserError(f"{tar_path} cannot be read as a tar archive ({type(e).__name__}); it is damaged, "
                        "truncated or not an archive, and nothing was unpacked.") from None
    return target


def describe_unpacked(folder: Path) -> str:
    """What unpacking `folder` established, for the command to say: its files match its manifest, and whether
    this machine's key signed that manifest (packed here) or nothing vouches for who wrote it."""
    if (folder / SIGNATURE).is_file() and signed(folder / MANIFEST):
        return f"unpacked and checked {folder}: its files match its manifest, signed by this machine's key"
    return (f"unpacked {folder}: consistent; origin not verified (its files match its manifest, which whoever "
            f"packed it wrote; its results pickles are read only after python scripts/archive.py trust {folder})")
