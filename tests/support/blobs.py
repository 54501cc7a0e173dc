"""Damage and leftovers in a blob store, local or S3, as bit rot, a lost file or a killed command leaves them."""

from __future__ import annotations

import os

import obstore

from registry.store.blobstore import BlobStore, LocalBlobStore


def overwrite(store: BlobStore, sha256: str, data: bytes = b"bit rot") -> None:
    """Other bytes under a blob's name (what bit rot or a stray write does)."""
    if isinstance(store, LocalBlobStore):
        path = store.path(sha256)
        os.chmod(path, 0o644)
        path.write_bytes(data)
    else:
        obstore.put(store._store, f"sha256/{sha256[:2]}/{sha256}", data)  # type: ignore[attr-defined]


def flip_a_byte(store: BlobStore, sha256: str) -> None:
    """The same length, one bit changed in the middle: damage only a hash finds."""
    data = bytearray(store.read_range(sha256, 0, store.info(sha256).size))  # type: ignore[union-attr]
    data[len(data) // 2] ^= 0x01
    overwrite(store, sha256, bytes(data))


def leave_temp_file(store: BlobStore, name: str = "put-stale") -> None:
    """What a write killed halfway leaves."""
    if isinstance(store, LocalBlobStore):
        (store.tmp / name).write_bytes(b"half")
    else:
        obstore.put(store._store, f"tmp/{name}", b"half")  # type: ignore[attr-defined]


def shas(store: BlobStore) -> set[str]:
    return {b.sha256 for b in store.iter_blobs()}
