"""Stored artifacts back as directories that transformers and the merge engine can read.

A manifest's files are hard-linked (or copied, across filesystems) from the
blob store into ``HOME/cache/<kind>/<manifest sha>/``, built in a temporary
sibling and renamed into place, so a cache entry is always complete. Blobs
are read-only, so a link cannot be used to change them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from registry.blobstore import LocalBlobStore
from registry.errors import Corrupt
from registry.manifests import load_manifest, manifest_files


def materialize(store: LocalBlobStore, manifest_sha: str, cache_root: Path) -> Path:
    target = cache_root / manifest_sha
    if target.is_dir():
        return target
    files = manifest_files(load_manifest(store, manifest_sha))
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{manifest_sha[:12]}-", dir=cache_root))
    try:
        for rel, sha in files.items():
            source = store.path(sha)
            if not source.is_file():
                raise Corrupt(f"blob {sha} ({rel}) is missing; run `memo verify`")
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same entry first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
