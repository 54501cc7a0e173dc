"""Stored artifacts back as directories that transformers and the merge engine can read.

A manifest's files are copied from the blob store into
``HOME/cache/<kind>/<manifest sha>/``, each hashed as it is copied: a blob
whose bytes no longer match its name (bit rot, a stray write) stops the
command with one line naming the artifact, before anything reads it. The
entry is built in a temporary sibling and renamed into place, so a cache entry
is always complete (a killed build leaves a dead ``.partial-`` sibling that
the next build or ``memo gc`` removes) and always a verified private copy:
never a hard link, through which damage to the cache would be damage to the
store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from osutil.partial import move_into_place, partial_dir
from registry.store.blobstore import CHUNK, BlobStore
from registry.store.cache_records import write_record
from registry.store.errors import Corrupt, NotFound
from registry.store.manifests import load_manifest, manifest_files


def materialize(store: BlobStore, manifest_sha: str, cache_root: Path, *, what: str = "") -> Path:
    """The manifest's directory in the cache (built and verified on first use); ``what`` names the
    artifact in errors, e.g. ``base model 'tiny'``."""
    return build_entry(store, manifest_sha, cache_root, what=what)[0]


def build_entry(store: BlobStore, manifest_sha: str, cache_root: Path, *, what: str = "") -> tuple[Path, bool]:
    """:func:`materialize`, also saying whether this call built the entry."""
    target = cache_root / manifest_sha
    if target.is_dir():
        if not _linked_into_the_store(target):
            return target, False
        set_aside(target)  # an entry of an older memo: hard links into the store; rebuilt as copies
    what = what or f"the artifact of manifest {manifest_sha[:12]}"
    files = manifest_files(load_manifest(store, manifest_sha))
    with partial_dir(target) as tmp:  # also removes what killed builds of this entry left
        for rel, sha in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy_verified(store, sha, dest, f"{what}: blob {sha} ({rel})")
        write_record(target, {rel: (sha, (tmp / rel).stat().st_size) for rel, sha in files.items()})
        try:
            move_into_place(tmp, target)
        except OSError:
            if not target.is_dir():
                raise  # else another process finished the same entry first: ours is removed on exit
    return target, True


def keep_entry(directory: Path, manifest_sha: str, files: dict[str, str], cache_root: Path, *, move: bool) -> Path:
    """Make ``directory``, just stored as ``manifest_sha`` (its ``files``: relative path -> sha256), the
    artifact's cache entry, so that this machine need not fetch back what it has just stored.

    ``move``: the directory is the command's own output, its files renamed into the entry (they were hashed
    as they were stored). Otherwise (a user's directory) each file is copied and checked against its sha256: a file
    that changed since it was stored leaves no entry. An entry already there is kept as it is.
    """
    target = cache_root / manifest_sha
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with partial_dir(target) as tmp:
        for rel, sha in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(directory / rel, dest)
            elif _copy_file_checked(directory / rel, dest) != sha:
                return target  # not built: the next use materialises it from the store
            os.chmod(dest, 0o444)
        write_record(target, {rel: (sha, (tmp / rel).stat().st_size) for rel, sha in files.items()})
        with contextlib.suppress(OSError):  # another process kept the same entry first
            move_into_place(tmp, target)
    return target


def _copy_file_checked(source: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(dest, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _copy_verified(store: BlobStore, sha: str, dest: Path, what: str) -> None:
    digest = hashlib.sha256()
    try:
        with open(dest, "wb") as dst:
            for chunk in store.read_chunks(sha):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except NotFound:
        raise Corrupt(f"{what} is missing from the blob store; run `memo verify`") from None
    if digest.hexdigest() != sha:
        raise Corrupt(f"{what} is corrupt (sha256 mismatch); nothing was used; run `memo verify`")
    os.chmod(dest, 0o444)


def _linked_into_the_store(entry: Path) -> bool:
    return any(p.is_file() and p.stat().st_nlink > 1 for p in entry.iterdir())


def set_aside(entry: Path) -> None:
    """Move the entry out of the way (a reader that has it open keeps its files), then remove it."""
    aside = Path(tempfile.mkdtemp(prefix=f".{entry.name[:12]}-old-", dir=entry.parent))
    with contextlib.suppress(FileNotFoundError):  # another process set it aside first
        os.replace(entry, aside / entry.name)
    shutil.rmtree(aside, ignore_errors=True)
