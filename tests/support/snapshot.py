"""What a registry holds, to assert that a failed command changed nothing."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

from registry import Registry

# Tables that hold what running processes are doing, not what the registry records.
WORKING_STATE = ("alembic_version", "blob_lease", "blob_lease_item")


def registry_state(reg: Registry) -> dict:
    tables = {}
    with reg.db.read() as session:
        for name in sorted(inspect(reg.db.engine).get_table_names()):
            if name in WORKING_STATE:
                continue
            rows = session.execute(text(f'SELECT * FROM "{name}" ORDER BY 1')).all()
            tables[name] = [tuple(r) for r in rows]
    # Referenced blobs must not change (verify rehashes every one); new unreferenced blobs are
    # allowed (they are what an interrupted write leaves and gc removes).
    report = reg.verify()
    stored = {b.sha256: b.size for b in reg.store.iter_blobs()}
    return {
        "tables": tables,
        "blobs": {sha: size for sha, size in sorted(stored.items()) if sha not in report.unreferenced},
        "problems": report.problems,
    }


def blob_set(reg: Registry) -> set[str]:
    return {b.sha256 for b in reg.store.iter_blobs()}


def count(reg: Registry, table) -> int:
    from sqlalchemy import func

    with reg.db.read() as session:
        return session.scalar(select(func.count()).select_from(table))
