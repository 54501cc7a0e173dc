"""Which blob store a URL names: a directory (the default, ``HOME/blobs``) or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from registry.store.blobstore import BlobStore, LocalBlobStore
from registry.store.errors import InvalidInput
from registry.store.home import blobs_dir


def open_blob_store(url: str | None, home: Path) -> BlobStore:
    if not url:
        return LocalBlobStore(blobs_dir(home))
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if "@" in parts.netloc or parts.query:
            raise InvalidInput(
                "credentials never go in the blob store's URL (it is shown and recorded); "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile"
            )
        if not parts.netloc:
            raise InvalidInput(f"{url!r} names no bucket; use s3://BUCKET/PREFIX")
        try:
            from registry.store.s3_blobs import S3BlobStore  # obstore is the optional `s3` extra
        except ImportError:
            raise InvalidInput("s3:// blob stores need the s3 extra: pip install 'memo-registry[s3]'") from None
        return S3BlobStore(parts.netloc, parts.path)
    if parts.scheme in ("", "file"):
        return LocalBlobStore(Path(parts.path if parts.scheme else url).expanduser().resolve())
    raise InvalidInput(f"unknown blob store {url!r}; use a directory or s3://BUCKET/PREFIX")
