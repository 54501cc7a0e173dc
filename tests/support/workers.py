"""Worker processes for the concurrency tests: ``python -m tests.support.workers ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from registry import Registry
from registry.store.errors import MemoError


def add_corpora(home: str, url: str, prefix: str, count: int, docs_dir: str) -> dict:
    docs = sorted(Path(docs_dir).iterdir())
    errors = []
    with Registry.open(home, database_url=url or None) as reg:
        for i in range(count):
            try:
                reg.add_corpus(f"{prefix}-{i:03d}", docs, base="tiny")
            except MemoError as e:
                errors.append(f"{type(e).__name__}: {e}")
    return {"errors": errors}


def add_task_vectors(home: str, url: str, corpus: str, count: int, tv_dir: str) -> dict:
    versions = []
    with Registry.open(home, database_url=url or None) as reg:
        for _ in range(count):
            versions.append(reg.add_task_vector(corpus, tv_dir, method="full", storage_dtype="float32").version)
    return {"versions": versions}


def race_same_name(home: str, url: str, name: str, docs_dir: str) -> dict:
    with Registry.open(home, database_url=url or None) as reg:
        try:
            reg.add_corpus(name, sorted(Path(docs_dir).iterdir()), base="tiny")
            return {"won": True}
        except MemoError as e:
            return {"won": False, "error": type(e).__name__, "message": str(e)}


def promote_together(home: str, url: str, merge_id: int, channel: str) -> dict:
    """Promote after every worker has read the channel's head: a real race on the write.

    The channel's head is read, then the worker says it is ready and waits
    for the test's go (on stdin), so every worker's read happens before any
    worker's write.
    """
    from registry.operations import channels

    real = channels.channel_head

    def read_then_wait(session, name):
        head = real(session, name)
        print("ready", flush=True)
        sys.stdin.readline()
        return head

    channels.channel_head = read_then_wait
    with Registry.open(home, database_url=url or None) as reg:
        try:
            reg.promote(merge_id, channel, reason=f"worker for merge {merge_id}")
            return {"won": True}
        except MemoError as e:
            return {"won": False, "error": type(e).__name__, "message": str(e)}


if __name__ == "__main__":
    verb, *args = sys.argv[1:]
    fn = {
        "add-corpora": add_corpora,
        "add-task-vectors": add_task_vectors,
        "race": race_same_name,
        "promote": promote_together,
    }[verb]
    typed = [int(a) if a.isdigit() else a for a in args]
    print(json.dumps(fn(*typed)))
