"""Blobs in any S3-compatible bucket (AWS S3, MinIO, Ceph, R2, a local test server), through obstore.

A blob is the object ``PREFIX/sha256/ab/abcdef...``. Every put is one PUT
request or one multipart upload, which S3 completes atomically: a blob is
visible only when whole, and a killed upload leaves nothing a listing shows
(incomplete multipart parts are S3's to expire: give the bucket an
``AbortIncompleteMultipartUpload`` lifecycle rule). Storing content that is
already there makes it fresh by two server-side copies (S3 refuses to copy an
object onto itself), so a ``gc`` on another machine spares it; a process
killed between the copies leaves a ``PREFIX/tmp/`` object that ``gc`` removes.

Endpoint, region and credentials come from the usual AWS settings
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ALLOW_HTTP`` for a
plain-HTTP server). memo never prints or stores them, and refuses a URL that
carries them.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.store import S3Store

from registry.store.blobstore import CHUNK, BlobInfo, is_sha256, no_claim, sha256_file, verified_bytes
from registry.store.errors import BlobStoreFailed, Corrupt, MemoError, NotFound

if TYPE_CHECKING:  # obstore's typed dicts exist for type checkers only
    from obstore.store import ClientConfig, RetryConfig

T = TypeVar("T")
TMP = "tmp/"
RETRIES_ENV = "MEMO_S3_RETRIES"
DEFAULT_RETRIES = 5


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._store = S3Store(
            bucket, prefix=self.prefix or None, retry_config=_retries(), client_options=_client_options()
        )
        self.claim: Callable[[str], None] = no_claim

    # --- what every blob store does ------------------------------------------------------
    def create(self) -> None:
        """Nothing to make: the bucket is the user's (opening a home never touches it, so the rows stay
        readable while the bucket is away)."""

    def check(self) -> None:
        """Check that the bucket answers (a missing bucket or a refused key is one line now, not later)."""
        try:
            self._call("reach the bucket", lambda: obstore.list_with_delimiter(self._store, prefix="sha256/"))
        except BlobStoreFailed as e:
            if "404" not in str(e):
                raise
            raise BlobStoreFailed(
                f"{self.url}: there is no bucket {self.bucket!r} at this endpoint; create it, or check "
                "AWS_ENDPOINT_URL and AWS_REGION"
            ) from None

    def put_file(self, path: Path) -> str:
        sha = sha256_file(path)
        self.claim(sha)
        if not self._freshened(sha):
            self._call(f"store blob {sha[:12]}", lambda: obstore.put(self._store, _key(sha), Path(path)))
        return sha

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.claim(sha)
        if not self._freshened(sha):
            self._call(f"store blob {sha[:12]}", lambda: obstore.put(self._store, _key(sha), data))
        return sha

    def get_bytes(self, sha256: str) -> bytes:
        key = _key(sha256)
        data = self._call(f"read blob {sha256[:12]}", lambda: bytes(obstore.get(self._store, key).bytes()), sha256)
        return verified_bytes(self, sha256, data)

    def read_chunks(self, sha256: str) -> Iterator[bytes]:
        result = self._call(f"read blob {sha256[:12]}", lambda: obstore.get(self._store, _key(sha256)), sha256)
        stream = iter(result.stream(min_chunk_size=CHUNK))
        while True:
            chunk = self._call(f"read blob {sha256[:12]}", lambda: next(stream, None), sha256)
            if chunk is None:
                return
            yield bytes(chunk)

    def read_range(self, sha256: str, start: int, length: int) -> bytes:
        what = f"read blob {sha256[:12]}"
        key = _key(sha256)
        return bytes(self._call(what, lambda: obstore.get_range(self._store, key, start=start, length=length), sha256))

    def local_path(self, sha256: str) -> Path | None:
        return None

    def exists(self, sha256: str) -> bool:
        return self.info(sha256) is not None

    def info(self, sha256: str) -> BlobInfo | None:
        try:
            meta = self._call(f"look up blob {sha256[:12]}", lambda: obstore.head(self._store, _key(sha256)), sha256)
        except NotFound:
            return None
        return BlobInfo(sha256, int(meta["size"]), meta["last_modified"].timestamp())

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for meta in self._listing("sha256/"):
            name = meta["path"].rsplit("/", 1)[-1]
            if is_sha256(name):
                yield BlobInfo(name, int(meta["size"]), meta["last_modified"].timestamp())

    def delete(self, sha256: str) -> int:
        info = self.info(sha256)
        if info is None:
            raise NotFound(f"blob {sha256} is missing from {self.url}")
        self._call(f"delete blob {sha256[:12]}", lambda: obstore.delete(self._store, _key(sha256)))
        return info.size

    def stale_temp_files(self, older_than: float) -> list[str]:
        now = time.time()
        return [m["path"] for m in self._listing(TMP) if now - m["last_modified"].timestamp() >= older_than]

    def remove_temp_file(self, name: str) -> None:
        if name.startswith(TMP):
            self._call("remove a temporary object", lambda: obstore.delete(self._store, name))

    # --- helpers ----------------------------------------------------------------------------
    def _freshened(self, sha256: str) -> bool:
        """Whether the blob is already stored; if so it is made fresh (copied away and back)."""
        if not self.exists(sha256):
            return False
        aside = f"{TMP}{sha256[:12]}-{uuid.uuid4().hex}"
        self._call("refresh a stored blob", lambda: obstore.copy(self._store, _key(sha256), aside))
        self._call("refresh a stored blob", lambda: obstore.copy(self._store, aside, _key(sha256)))
        self._call("refresh a stored blob", lambda: obstore.delete(self._store, aside))
        return True

    def _listing(self, prefix: str) -> Iterator[Any]:  # obstore ObjectMeta dicts
        batches = iter(obstore.list(self._store, prefix=prefix))
        while True:
            batch = self._call("list the bucket", lambda: next(batches, None))
            if batch is None:
                return
            yield from batch

    def _call(self, what: str, call: Callable[[], T], sha256: str | None = None) -> T:
        """One request; S3's failures as one line (the error's first line names the request, never a key)."""
        try:
            return call()
        except FileNotFoundError as e:
            if sha256 is not None:
                raise NotFound(f"blob {sha256} is missing from {self.url}; run `memo verify`") from e
            raise BlobStoreFailed(f"{self.url}: cannot {what}: not found") from e
        except MemoError:
            raise
        except Exception as e:  # obstore's errors: network, permissions, throttling, a failed upload
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BlobStoreFailed(f"{self.url}: cannot {what}: {first[:300]}; {_what_to_check(str(e))}") from e


def _what_to_check(error: str) -> str:
    """The setting to look at for an S3 failure, by what the error says."""
    text = error.lower()
    where = endpoint() or "AWS (no AWS_ENDPOINT_URL)"
    status = re.search(r"status code: (\d{3})", text)
    if status and status[1] in ("401", "403") or any(w in text for w in ("accessdenied", "signaturedoesnotmatch")):
        return "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy"
    if status and status[1].startswith("5"):
        return f"the store answered with a server error ({status[1]}): check the server at {where}, or try again later"
    if any(w in text for w in ("connect", "dns error", "timed out", "connection refused", "connection reset")):
        return f"check that the endpoint answers ({where}, from AWS_ENDPOINT_URL)"
    return f"check AWS_ENDPOINT_URL ({where}), AWS_REGION and the credentials"


def endpoint() -> str | None:
    """The S3 endpoint the AWS settings name (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _client_options() -> ClientConfig:
    """Plain HTTP when the endpoint says ``http://`` (MinIO, Ceph, a LAN store), as boto3, s3fs and the
    AWS CLI take it; obstore on its own would refuse it until ``AWS_ALLOW_HTTP=true``."""
    url = endpoint()
    return {"allow_http": True} if url is not None and url.lower().startswith("http://") else {}


def _retries() -> RetryConfig:
    """Transient failures (5xx, dropped connections) are retried with backoff, a few times and for a minute
    at most, so a failing store is a one-line error soon rather than a long hang (``MEMO_S3_RETRIES``)."""
    return {
        "max_retries": int(os.environ.get(RETRIES_ENV, DEFAULT_RETRIES)),
        "retry_timeout": timedelta(seconds=60),
        "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2},
    }


def _key(sha256: str) -> str:
    if not is_sha256(sha256):
        raise Corrupt(f"{sha256!r} is not a sha256 digest")
    return f"sha256/{sha256[:2]}/{sha256}"
