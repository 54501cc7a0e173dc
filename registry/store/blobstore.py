"""Content-addressed blob stores: every artifact is a blob named by its sha256.

:class:`BlobStore` is what the registry needs from one. :class:`LocalBlobStore`
keeps blobs as files under the home (writes are atomic: temp file in the same
filesystem, fsync, rename, fsync of the directory, so a reader never sees a
partial blob and a crash leaves at most a temp file that ``gc`` removes);
:mod:`registry.store.s3_blobs` keeps them in any S3-compatible bucket. Equal
content is stored once, and storing it again makes it fresh, so a concurrent
``gc`` (which spares blobs younger than its grace period) cannot take it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from osutil.partial import fsync_dir
from registry.store.errors import Corrupt, NotFound

CHUNK = 1 << 20
_HEX = set("0123456789abcdef")


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    modified: float  # seconds since the epoch: when it was stored or last stored again


def no_claim(sha256: str) -> None:
    """The default ``claim`` hook: a store used without a registry's leases."""


class BlobStore(Protocol):
    """Blobs by sha256. ``get_bytes`` and ``read_chunks`` callers verify what they read.

    ``claim`` is called with a blob's sha256 before a put checks for it or writes it: the
    registry sets it to record the blob under the process's lease (:mod:`registry.store.leases`).
    """

    url: str  # where the blobs live, for messages (never with credentials)
    claim: Callable[[str], None]

    def create(self) -> None:
        """Make what the store needs to be written to (local directories); never a network call."""
        ...

    def check(self) -> None:
        """Check that the store answers (``memo init``); a one-line error when it does not."""
        ...

    def put_file(self, path: Path) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def get_bytes(self, sha256: str) -> bytes: ...
    def read_chunks(self, sha256: str) -> Iterator[bytes]: ...
    def read_range(self, sha256: str, start: int, length: int) -> bytes: ...
    def local_path(self, sha256: str) -> Path | None:
        """The blob's file on this machine, for reading only (None: the blob is elsewhere)."""
        ...

    def exists(self, sha256: str) -> bool: ...
    def info(self, sha256: str) -> BlobInfo | None: ...
    def iter_blobs(self) -> Iterator[BlobInfo]: ...
    def delete(self, sha256: str) -> int: ...
    def stale_temp_files(self, older_than: float) -> list[str]: ...
    def remove_temp_file(self, name: str) -> None: ...


def check_blob(store: BlobStore, sha256: str) -> str | None:
    """Rehash one blob, streaming: None when intact, else a short reason."""
    digest = hashlib.sha256()
    try:
        for chunk in store.read_chunks(sha256):
            digest.update(chunk)
    except NotFound:
        return "missing"
    return None if digest.hexdigest() == sha256 else "corrupt (sha256 mismatch)"


def verified_bytes(store: BlobStore, sha256: str, data: bytes) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise Corrupt(f"blob {sha256} fails its sha256 check; run `memo verify`")
    return data


class LocalBlobStore:
    """Blobs under ``root/sha256/ab/abcdef...``; temp files under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "sha256"
        self.tmp = root / "tmp"
        self.url = str(root)
        self.claim: Callable[[str], None] = no_claim

    def create(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """A directory answers once it is created."""

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise Corrupt(f"{sha256!r} is not a sha256 digest")
        return self.objects / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as src:
            return self._put_stream(src)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.claim(sha)
        if self.exists(sha):
            os.utime(self.path(sha))  # fresh again: protected from a concurrent gc's grace
            return sha
        return self._commit_temp(lambda f: f.write(data), sha)

    def _put_stream(self, src: BinaryIO) -> str:
        digest = hashlib.sha256()

        def copy(dst: BinaryIO) -> None:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)

        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        return self._finish(fd, Path(tmp_name), copy, lambda: digest.hexdigest())

    def _commit_temp(self, write, sha: str) -> str:
        """Write a blob whose sha256 is known (and already claimed)."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        return self._finish(fd, Path(tmp_name), write, lambda: sha, claimed=True)

    def _finish(self, fd: int, tmp: Path, write, final_sha, *, claimed: bool = False) -> str:
        try:
            with os.fdopen(fd, "wb") as dst:
                write(dst)
                dst.flush()
                os.fsync(dst.fileno())
            sha = final_sha()
            if not claimed:
                self.claim(sha)  # before the check below: from here on no gc takes it
            target = self.path(sha)
            if target.is_file():  # dedupe: the content is already stored
                tmp.unlink()
                os.utime(target)  # fresh again: protected from a concurrent gc's grace
                return sha
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            return sha
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get_bytes(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"blob {sha256} is missing from {self.objects}; run `memo verify`") from e
        return verified_bytes(self, sha256, data)

    def read_chunks(self, sha256: str) -> Iterator[bytes]:
        try:
            with open(self.path(sha256), "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except FileNotFoundError as e:
            raise NotFound(f"blob {sha256} is missing from {self.objects}; run `memo verify`") from e

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        with open(self.path(sha256), "rb") as f:
            return os.pread(f.fileno(), length, start)

    def local_path(self, sha256: str) -> Path | None:
        return self.path(sha256)

    def info(self, sha256: str) -> BlobInfo | None:
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(sha256, st.st_size, st.st_mtime)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            for blob in sorted(sub.iterdir()):
                st = blob.stat()
                yield BlobInfo(blob.name, st.st_size, st.st_mtime)

    def delete(self, sha256: str) -> int:
        path = self.path(sha256)
        size = path.stat().st_size
        path.unlink()
        return size

    def stale_temp_files(self, older_than: float) -> list[str]:
        """Leftovers of interrupted writes older than ``older_than`` seconds (never reachable from a row)."""
        now = time.time()
        found = sorted(self.tmp.iterdir()) if self.tmp.is_dir() else []
        return [t.name for t in found if now - t.stat().st_mtime >= older_than]

    def remove_temp_file(self, name: str) -> None:
        (self.tmp / name).unlink(missing_ok=True)
