"""`memo verify` and `memo gc`: rehash every blob, and remove the ones no row reaches.

References are computed from the rows (every blob column of
:data:`registry.store.schema.BLOB_COLUMNS`) and the manifests those rows name.
Unreferenced blobs are normal after an interrupted command (blobs are written
before their rows); they are intact, reported as gc candidates, never as
corrupt. ``gc`` never removes a blob that a running command has claimed
(:mod:`registry.store.leases`: on this machine or any other sharing the
database), nor one younger than its grace period (blobs stored by memo
versions without leases).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from registry.store import workdirs
from registry.store.blobstore import BlobInfo, check_blob
from registry.store.cache_records import entry_problem, read_record, remove_record, write_record
from registry.store.config import DEFAULT_GC_GRACE_SECONDS
from registry.store.database import Database
from registry.store.errors import Corrupt, MemoError, NotFound
from registry.store.leases import drop_expired, gc_lock, live_leased, referenced_directly
from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import set_aside
from registry.store.records import BlobProblem, CacheProblem, GcReport, VerifyReport
from registry.store.schema import (
    BLOB_COLUMNS,
    BaseModelRow,
    CorpusRow,
    DocumentRow,
    GeneratorCallRow,
    MergeRow,
    ReflectionSetRow,
    TaskVectorRow,
)
from registry.store.workspace import Workspace

GC_BATCH = 64  # blobs deleted per transaction: claims wait on the gc lock at most that long


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
        # Every other blob column (schema.BLOB_COLUMNS is their one list), named by its table and row.
        for model, column in BLOB_COLUMNS:
            if model not in _DESCRIBED:
                manifest = column.key.startswith("manifest")
                for row_id, sha in session.execute(select(model.__mapper__.primary_key[0], column)):
                    refs.append((sha, f"{model.__tablename__.replace('_', ' ')} {row_id}", manifest))
    return refs


# The tables _row_references describes in their own words (by corpus, version, name).
_DESCRIBED = frozenset({BaseModelRow, DocumentRow, ReflectionSetRow, TaskVectorRow, MergeRow, GeneratorCallRow})


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
    cache_checked, cache_problems = _verify_cache(ws)
    return VerifyReport(
        cache_checked=cache_checked,
        cache_problems=tuple(cache_problems),
        checked=checked,
        problems=tuple(problems),
        unreferenced=unreferenced,
        temp_files=len(ws.store.stale_temp_files(0.0)),
    )


def _verify_cache(ws: Workspace) -> tuple[int, list[CacheProblem]]:
    """Rehash every cache entry against its record; a damaged one is removed. An entry of an older
    memo (no record) is recorded from its manifest first; an applied task vector without one is
    skipped (its next use rebuilds it)."""
    checked, problems = 0, []
    for entry in workdirs.complete_entries(ws.home):
        if read_record(entry) is None:
            if entry.parent.name == "applied" or not ws.store.exists(entry.name):
                continue
            manifest = load_manifest(ws.store, entry.name)["files"]
            write_record(entry, {rel: (f["sha256"], f["size"]) for rel, f in manifest.items()})
        checked += 1
        problem = entry_problem(entry, full=True)
        if problem is not None:  # a copy: removed, and built again from the blob store when next used
            problems.append(CacheProblem(entry.relative_to(ws.home / "cache").as_posix(), problem))
            set_aside(entry)
            remove_record(entry)
    return checked, problems


def _stored_again(ws: Workspace, sha256: str, grace_seconds: float) -> bool:
    """Whether a command stored the blob again since it was listed (it is about to reference it)."""
    info = ws.store.info(sha256)
    return info is None or time.time() - info.modified < grace_seconds


def _delete_batch(
    ws: Workspace, batch: list[BlobInfo], grace_seconds: float, own: str | None
) -> tuple[list[BlobInfo], int]:
    """Delete the blobs of ``batch`` that are still unreferenced, unleased (``own``: this process's
    lease, not counted) and old, holding the gc lock (:mod:`registry.store.leases`); returns those
    deleted and how many were kept under a lease."""
    shas = [b.sha256 for b in batch]
    with ws.db.write() as session:
        gc_lock(session, exclusive=True)
        leased = live_leased(session, shas, own=own)
        keep = leased | referenced_directly(session, shas)
        gone = [b for b in batch if b.sha256 not in keep and not _stored_again(ws, b.sha256, grace_seconds)]
        for blob in list(gone):
            try:
                ws.store.delete(blob.sha256)
            except NotFound:  # another gc took it first
                gone.remove(blob)
    return gone, len(leased)


def _collect_blobs(
    ws: Workspace, referenced: dict[str, str], *, dry_run: bool, grace_seconds: float
) -> tuple[list[str], int, int, int]:
    """Unreferenced blobs past the grace, deleted in batches unless ``dry_run``: (removed, bytes,
    kept as recent, kept as leased by a running command)."""
    now = time.time()
    candidates, recent = [], 0
    for blob in sorted((b for b in ws.store.iter_blobs() if b.sha256 not in referenced), key=lambda b: b.sha256):
        if now - blob.modified < grace_seconds:
            recent += 1
        else:
            candidates.append(blob)
    own = ws.leases.id if ws.leases is not None else None
    if dry_run:
        with ws.db.read() as session:
            leased = live_leased(session, own=own) & {b.sha256 for b in candidates}
        removed = [b for b in candidates if b.sha256 not in leased]
        return [b.sha256 for b in removed], sum(b.size for b in removed), recent, len(leased)
    removed, kept_leased = [], 0
    for i in range(0, len(candidates), GC_BATCH):
        batch = candidates[i : i + GC_BATCH]
        gone, held = _delete_batch(ws, batch, grace_seconds, own)
        removed += gone
        kept_leased += held
        recent += len(batch) - len(gone) - held
    with ws.db.write() as session:
        drop_expired(session)
    return [b.sha256 for b in removed], sum(b.size for b in removed), recent, kept_leased


def gc(
    ws: Workspace,
    *,
    dry_run: bool = True,
    grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
    caches: bool = False,
) -> GcReport:
    """Unreferenced blobs and temp files, left-over work directories and, with ``caches``, the
    rebuildable cache entries (:mod:`registry.store.workdirs`). Blobs that a running command
    (of any process sharing the database) has claimed are never taken, whatever the grace."""
    referenced, unreadable = _references(ws)
    if unreadable:
        # Without a manifest we cannot know what it reaches: deleting would lose data.
        raise Corrupt(
            f"cannot collect garbage: the {unreadable[0].referenced_by} is {unreadable[0].problem}; "
            "run `memo verify` and restore it first"
        )
    now = time.time()
    removed, freed, kept_recent, kept_leased = _collect_blobs(
        ws, referenced, dry_run=dry_run, grace_seconds=grace_seconds
    )
    old_temps = ws.store.stale_temp_files(grace_seconds)
    work = workdirs.stale_work(ws.home, now, grace_seconds)
    cached = workdirs.cache_entries(ws.home, now, grace_seconds) if caches else []
    entries_removed = sum(1 for c in cached if c.path.is_dir())
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
        kept_leased=kept_leased,
        work_dirs_removed=len(work),
        cache_entries_removed=entries_removed,
    )
