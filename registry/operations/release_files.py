"""The files a merge leaves memo with, besides its stored model directory: the provenance file (the
registry's record of it) and the card with the merge's measured figures; shared by an export, a
publication and a GGUF export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from registry.operations.card_results import with_results
from registry.operations.merges import merged_model_dir, require_merge, to_record
from registry.store.database import row_of
from registry.store.errors import InvalidInput
from registry.store.records import MergeRecord
from registry.store.schema import BaseModelRow, MergeRow, TaskVectorRow
from registry.store.workspace import Workspace

PROVENANCE = "memo-provenance.json"
CARD = "README.md"


def provenance(session: Session, row: MergeRow, merge: MergeRecord) -> dict[str, Any]:
    """The registry's record of a merge: what went in, how, and what came out."""
    record = merge.to_json()
    base = row_of(session, BaseModelRow, row.base_model_id)
    # Named by name and weights fingerprint: its source is often a path on the publisher's disk.
    record["base"] = {
        "name": base.name,
        "fingerprint": base.fingerprint,
        "architecture": base.architecture,
        "dtype": base.dtype,
        **({"origin": base.origin} if base.origin else {}),
    }
    for member in record["members"]:
        tv = row_of(session, TaskVectorRow, member["task_vector_id"])
        member.update(
            manifest_sha256=tv.manifest_sha256,
            method=tv.method,
            storage_dtype=tv.storage_dtype,
            metrics=tv.metrics,
            dataset_sha256=tv.training.get("dataset_sha256"),
            training=tv.training.get("sft"),
        )
    return {"memo_provenance": 1, "merge": record}


def merge_files(ws: Workspace, merge_ref: str | int) -> tuple[MergeRow, MergeRecord, Path, dict[str, bytes]]:
    """The merge's row and record, its model directory, and the files written over or beside it: the
    provenance file, and the card with the merge's measured figures (``model-index``)."""
    with ws.db.read() as session:
        row = require_merge(session, str(merge_ref))
        record = to_record(session, row)
        prov = json.dumps(provenance(session, row, record), indent=2, sort_keys=True).encode()
    source = merged_model_dir(ws, row, full=True)
    added = {PROVENANCE: prov}
    if (source / CARD).is_file():
        added[CARD] = with_results((source / CARD).read_text(), record).encode()
    return row, record, source, added


def new_output_dir(directory: Path) -> Path:
    """``directory`` resolved, if it is new or empty (an export never writes into what is there)."""
    directory = directory.expanduser().resolve()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidInput(f"{directory} exists and is not an empty directory; choose a new one")
    return directory
