"""Stored blobs as the merge engine's input files, read where they lie and checked as they arrive.

A merge reads each member's weight files straight from the blob store rather
than first copying them into the cache:

- from a local store, the blob file itself is read (no copy) while a
  background thread rehashes it;
- from a bucket, a background thread fetches the blob as one stream into a
  spool file in the command's work directory, hashing as the bytes arrive,
  so the download overlaps the merge; the engine reads whatever has arrived
  (and waits for what has not). If the stream breaks, the rest is fetched
  with ranged reads from where it stopped.

Either way the bytes are used before the last of them is hashed, so the
engine calls :meth:`StreamedBlob.finish` before it commits anything: a blob
whose sha256 does not match stops the merge with nothing written or recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from merging.checkpoint import INDEX_FILE
from registry.store.blobstore import BlobStore
from registry.store.errors import BlobStoreFailed, Corrupt, NotFound

HASH_CHUNK = 8 << 20
RESUME_BLOCK = 64 << 20


class _Stopped(Exception):
    pass


class StreamedBlob:
    """A :class:`merging.sources.ByteSource` over one blob; ``close()`` it (stops the thread, drops the spool)."""

    def __init__(self, store: BlobStore, sha256: str, size: int, *, what: str, rel: str, spool_dir: Path) -> None:
        """``what`` names the artifact (``task vector atlas@v2``), ``rel`` the file in it."""
        self.sha256, self.size, self._store = sha256, size, store
        self._name, self._blob = f"{what} ({rel})", f"{what}: blob {sha256} ({rel})"
        self._digest = hashlib.sha256()
        self._arrived = 0  # bytes readable now
        self._hashed = 0
        self._error: BaseException | None = None
        self._done = False
        self._stopping = False
        self._changed = threading.Condition()
        self._spool: Path | None = None
        local = store.local_path(sha256)
        if local is not None:
            self._fd, self._arrived = self._open_local(local), size
            work: Callable[[], None] = self._hash_local
        else:
            self._fd, spool = tempfile.mkstemp(dir=spool_dir, prefix="stream-")
            self._spool, work = Path(spool), self._fetch
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"memo-blob-{sha256[:8]}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._name

    def __str__(self) -> str:
        return self._name

    # --- what the engine calls --------------------------------------------------------------
    def read_into(self, offset: int, buffer: memoryview) -> None:
        end = offset + len(buffer)
        with self._changed:
            while self._arrived < end and not self._done:
                self._changed.wait()
            if self._arrived < end:
                raise self._error or self._short()
        if os.preadv(self._fd, [buffer], offset) != len(buffer):
            raise self._short()

    def finish(self) -> None:
        """Wait for the whole blob; raise unless every byte matched its sha256."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._hashed != self.size or self._digest.hexdigest() != self.sha256:
            raise Corrupt(f"{self._blob} is corrupt (sha256 mismatch); nothing was recorded; run `memo verify`")

    def close(self) -> None:
        self._stopping = True
        self._thread.join()
        os.close(self._fd)
        if self._spool is not None:
            self._spool.unlink(missing_ok=True)

    # --- the background thread -------------------------------------------------------------
    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as e:  # reported by the engine's next read, or by finish()
            self._error = e
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _open_local(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise self._missing() from None

    def _hash_local(self) -> None:
        while not self._stopping and (data := os.pread(self._fd, HASH_CHUNK, self._hashed)):
            self._digest.update(data)
            self._hashed += len(data)

    def _fetch(self) -> None:
        try:
            for chunk in self._store.read_chunks(self.sha256):
                self._append(chunk)
        except NotFound:
            raise self._missing() from None
        except BlobStoreFailed:
            self._resume()  # the stream broke: the rest by ranged reads (each retried by the store)

    def _resume(self) -> None:
        while self._arrived < self.size:
            chunk = self._store.read_range(self.sha256, self._arrived, min(RESUME_BLOCK, self.size - self._arrived))
            if not chunk:
                return
            self._append(chunk)

    def _append(self, chunk: bytes) -> None:
        if self._stopping:
            raise _Stopped
        if self._arrived + len(chunk) > self.size:
            raise Corrupt(f"{self._blob} is longer than recorded; run `memo verify`")
        self._digest.update(chunk)
        os.pwrite(self._fd, chunk, self._arrived)
        with self._changed:
            self._arrived += len(chunk)
            self._hashed = self._arrived
            self._changed.notify_all()

    def _missing(self) -> Corrupt:
        return Corrupt(f"{self._blob} is missing from the blob store; run `memo verify`")

    def _short(self) -> Corrupt:
        return Corrupt(f"{self._blob} is shorter than recorded (corrupt); run `memo verify`")


def weight_blobs(store: BlobStore, manifest: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(relative path, sha256, size) of each safetensors weight file a stored directory lists, as
    :func:`merging.checkpoint.open_checkpoint` would find them (the index's shards, else every top-level one)."""
    files = manifest["files"]
    if INDEX_FILE in files:
        try:
            wanted = set(json.loads(store.get_bytes(files[INDEX_FILE]["sha256"]))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Corrupt(f"the stored {INDEX_FILE} is unreadable ({e}); run `memo verify`") from e
        missing = wanted - set(files)
        if missing:
            raise Corrupt(f"the stored {INDEX_FILE} names {sorted(missing)[0]}, which was not stored")
    else:
        wanted = {rel for rel in files if "/" not in rel and rel.endswith(".safetensors")}
    return [(rel, files[rel]["sha256"], int(files[rel]["size"])) for rel in sorted(wanted)]
