"""Content-addressed blob store: every artifact is a file named by its sha256.

Writes are atomic (temp file in the same filesystem, fsync, rename, fsync of
the directory), so a reader never sees a partial blob and a crash leaves at
most a temp file that ``gc`` removes. Equal content is stored once.
The :class:`BlobStore` protocol is what the registry needs; other backends
(object stores) can implement it later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from merging.partial import fsync_dir
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


class BlobStore(Protocol):
    def put_file(self, path: Path) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def get_bytes(self, sha256: str) -> bytes: ...
    def path(self, sha256: str) -> Path: ...
    def exists(self, sha256: str) -> bool: ...
    def iter_shas(self) -> Iterator[str]: ...
    def check(self, sha256: str) -> str | None: ...
    def age_seconds(self, path: Path, now: float) -> float:
        return now - path.stat().st_mtime

    def delete(self, sha256: str) -> int: ...


class LocalBlobStore:
    """Blobs under ``root/sha256/ab/abcdef...``; temp files under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "sha256"
        self.tmp = root / "tmp"

    def create(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

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
        if self.exists(sha):
            os.utime(self.path(sha))  # fresh again: protected from a concurrent gc
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
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        return self._finish(fd, Path(tmp_name), write, lambda: sha)

    def _finish(self, fd: int, tmp: Path, write, final_sha) -> str:
        try:
            with os.fdopen(fd, "wb") as dst:
                write(dst)
                dst.flush()
                os.fsync(dst.fileno())
            sha = final_sha()
            target = self.path(sha)
            if target.is_file():  # dedupe: the content is already stored
                tmp.unlink()
                os.utime(target)  # fresh again: protected from a concurrent gc
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
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Corrupt(f"blob {sha256} fails its sha256 check; run `memo verify`")
        return data

    def iter_shas(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            for blob in sorted(sub.iterdir()):
                yield blob.name

    def check(self, sha256: str) -> str | None:
        """Rehash one blob: None when intact, else a short reason."""
        path = self.path(sha256)
        if not path.is_file():
            return "missing"
        if sha256_file(path) != sha256:
            return "corrupt (sha256 mismatch)"
        return None

    def age_seconds(self, path: Path, now: float) -> float:
        return now - path.stat().st_mtime

    def delete(self, sha256: str) -> int:
        path = self.path(sha256)
        size = path.stat().st_size
        path.unlink()
        return size

    def temp_files(self) -> list[Path]:
        """Leftovers of interrupted writes (never reachable from a row)."""
        return sorted(self.tmp.iterdir()) if self.tmp.is_dir() else []
