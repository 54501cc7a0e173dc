"""`memo verify` and `memo gc`: rehash every blob, and remove the ones no row reaches.

References are computed from the rows (every blob column of
:data:`registry.store.schema.BLOB_COLUMNS`) and the manifests those rows name.
Unreferenced blobs are normal after an interrupted command (blobs are written
before their rows); they are intact, reported as gc candidates, never as
corrupt. ``gc`` only removes what is older than a grace period, so it cannot
race a command that has stored blobs but not yet committed its rows.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from registry.store import workdirs
from registry.store.blobstore import check_blob
from registry.store.database import Database
from registry.store.errors import Corrupt, MemoError
from registry.store.manifests import load_manifest, manifest_files
from registry.store.records import BlobProblem, GcReport, VerifyReport
from registry.store.schema import (
    BaseModelRow,
    CorpusRow,
    DocumentRow,
    GeneratorCallRow,
    MergeRow,
    ReflectionSetRow,
    TaskVectorRow,
)
from registry.store.workspace import Workspace

DEFAULT_GC_GRACE_SECONDS = 3600.0


def _row_references(db: Database) -> list[tuple[str, str, bool]]:
    """(sha256, what refers to it, whether it is a manifest) for every blob column."""
    refs: list[tuple[str, str, bool]] = []
    with db.read() as session:
        for b in session.scalars(select(BaseModelRow)):
            refs.append((b.manifest_sha256, f"manifest of base model {b.name}", True))
        docs = session.execute(select(DocumentRow, CorpusRow.name).join(CorpusRow))
        for d, corpus in docs:
            refs.append((d.sha256, f"document {d.name} of corpus {corpus}", False))
        for r, corpus in session.execute(select(ReflectionSetRow, CorpusRow.name).join(CorpusRow)):
            refs.append((r.sha256, f"reflection set {r.id} of corpus {corpus}", False))
            if r.settings.get("heldout_sha256"):
                refs.append((r.settings["heldout_sha256"], f"held-out set of reflection set {r.id}", False))
        for t, corpus in session.execute(select(TaskVectorRow, CorpusRow.name).join(CorpusRow)):
            refs.append((t.manifest_sha256, f"manifest of task vector {corpus}@v{t.version}", True))
        for m in session.scalars(select(MergeRow)):
            refs.append((m.manifest_sha256, f"manifest of merge {m.id}", True))
        for c in session.scalars(select(GeneratorCallRow)):
            refs.append((c.reply_sha256, f"cached generator reply {c.cache_key[:12]}", False))
    return refs


def _references(ws: Workspace) -> tuple[dict[str, str], list[BlobProblem]]:
    """Every referenced sha -> a description, plus manifests that could not be read."""
    referenced: dict[str, str] = {}
    unreadable: list[BlobProblem] = []
    for sha, owner, is_manifest in _row_references(ws.db):
        referenced.setdefault(sha, owner)
        if not is_manifest:
            continue
        try:
            files = manifest_files(load_manifest(ws.store, sha))
        except MemoError as e:
            unreadable.append(BlobProblem(sha, "missing" if "missing" in str(e) else "corrupt", owner))
            continue
        for rel, child in files.items():
            referenced.setdefault(child, f"{rel} in {owner}")
    return referenced, unreadable


def verify(ws: Workspace, *, progress=None) -> VerifyReport:
    referenced, problems = _references(ws)
    seen_problem = {p.sha256 for p in problems}
    stored = {b.sha256 for b in ws.store.iter_blobs()}
    checked = 0
    for sha in sorted(stored | set(referenced)):
        if progress:
            progress(sha)
        if sha in seen_problem:
            continue
        problem = check_blob(ws.store, sha)
        checked += sha in stored
        if problem:
            problems.append(BlobProblem(sha, problem, referenced.get(sha, "nothing (unreferenced)")))
    bad = {p.sha256 for p in problems}
    unreferenced = tuple(sorted(stored - set(referenced) - bad))
    return VerifyReport(
        checked=checked,
        problems=tuple(problems),
        unreferenced=unreferenced,
        temp_files=len(ws.store.stale_temp_files(0.0)),
    )


def _stored_again(ws: Workspace, sha256: str, grace_seconds: float) -> bool:
    """Whether a command stored the blob again since it was listed (it is about to reference it)."""
    info = ws.store.info(sha256)
    return info is None or time.time() - info.modified < grace_seconds


def gc(
    ws: Workspace,
    *,
    dry_run: bool = True,
    grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
    caches: bool = False,
) -> GcReport:
    """Unreferenced blobs and temp files, left-over work directories and, with ``caches``, the
    rebuildable cache entries (:mod:`registry.store.workdirs`)."""
    referenced, unreadable = _references(ws)
    if unreadable:
        # Without a manifest we cannot know what it reaches: deleting would lose data.
        raise Corrupt(
            f"cannot collect garbage: the {unreadable[0].referenced_by} is {unreadable[0].problem}; "
            "run `memo verify` and restore it first"
        )
    now = time.time()
    removed, kept_recent, freed = [], 0, 0
    for blob in sorted((b for b in ws.store.iter_blobs() if b.sha256 not in referenced), key=lambda b: b.sha256):
        if now - blob.modified < grace_seconds or (not dry_run and _stored_again(ws, blob.sha256, grace_seconds)):
            kept_recent += 1
            continue
        removed.append(blob.sha256)
        freed += blob.size if dry_run else ws.store.delete(blob.sha256)
    old_temps = ws.store.stale_temp_files(grace_seconds)
    work = workdirs.stale_work(ws.home, now, grace_seconds)
    cached = workdirs.cache_entries(ws.home, now, grace_seconds) if caches else []
    if not dry_run:
        for name in old_temps:
            ws.store.remove_temp_file(name)
        for leftover in work + cached:
            workdirs.remove(leftover)
    return GcReport(
        dry_run=dry_run,
        removed=tuple(removed),
        bytes_freed=freed + sum(w.bytes for w in work + cached),
        temp_files_removed=len(old_temps),
        kept_recent=kept_recent,
        work_dirs_removed=len(work),
        cache_entries_removed=len(cached),
    )
