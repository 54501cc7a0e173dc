"""The reflection generator's call cache: replies in the blob store, indexed in SQL.

A reply is stored as a blob first, then its row; a crash between the two
leaves an unreferenced blob that ``memo gc`` removes, never a row without its
blob. Rows stay after the run, so a rerun (or a resumed run) calls nothing
it already asked; ``memo gc`` keeps the blobs they name.
"""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError

from registry.store.blobstore import BlobStore
from registry.store.database import Database
from registry.store.errors import MemoError
from registry.store.leases import require_stored
from registry.store.schema import GeneratorCallRow


class BlobCallCache:
    def __init__(self, db: Database, store: BlobStore) -> None:
        self.db, self.store = db, store

    def get(self, key: str) -> dict | None:
        with self.db.read() as session:
            row = session.get(GeneratorCallRow, key)
            sha = row.reply_sha256 if row is not None else None
        if sha is None:
            return None
        try:
            return json.loads(self.store.get_bytes(sha))
        except MemoError:  # a missing or damaged blob is a miss: ask again
            return None

    def put(self, key: str, entry: dict) -> None:
        sha = self.store.put_bytes(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode())
        try:
            with self.db.write() as session:
                require_stored(session, self.store, blobs=[sha], what="a cached generator reply")
                row = session.get(GeneratorCallRow, key)
                if row is not None:  # its blob was lost or damaged: point at the fresh one
                    row.reply_sha256 = sha
                    return
                session.add(
                    GeneratorCallRow(
                        cache_key=key,
                        stage=entry["stage"],
                        model=entry["model"],
                        prompt_version=entry["prompt_version"],
                        reply_sha256=sha,
                        prompt_tokens=entry["prompt_tokens"],
                        completion_tokens=entry["completion_tokens"],
                    )
                )
        except IntegrityError:  # another run cached the same call meanwhile: theirs is as good
            pass
