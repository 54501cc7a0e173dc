"""Manifests: JSON blobs that list the files (blobs) making up an artifact.

A model directory, a task vector or a merge output is stored as one manifest
``{"kind": ..., "files": {relative path: {"sha256": ..., "size": ...}}}`` plus
one blob per file, so equal shards are stored once and ``gc`` can follow a
row to every blob it reaches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from registry.store.blobstore import BlobStore, is_sha256
from registry.store.errors import Corrupt


def store_directory(store: BlobStore, directory: Path, *, kind: str, skip: Iterable[str] = ()) -> str:
    """Store every regular file under ``directory`` (hidden ones excepted); return the manifest's sha."""
    skipped = set(skip)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if not path.is_file() or rel in skipped or any(p.startswith(".") for p in rel.split("/")):
            continue
        files[rel] = {"sha256": store.put_file(path), "size": path.stat().st_size}
    return store.put_bytes(encode_manifest({"kind": kind, "files": files}))


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1).encode()


def load_manifest(store: BlobStore, sha256: str) -> dict[str, Any]:
    try:
        manifest = json.loads(store.get_bytes(sha256))
        files = manifest["files"]
        if not all(is_sha256(f["sha256"]) for f in files.values()):
            raise ValueError("a file entry has no valid sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise Corrupt(f"manifest blob {sha256} is not a valid manifest ({e}); run `memo verify`") from e
    return manifest


def manifest_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Relative path -> sha256 of each file a manifest lists."""
    return {rel: entry["sha256"] for rel, entry in manifest["files"].items()}
