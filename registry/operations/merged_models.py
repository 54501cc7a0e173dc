"""Merged model directories: a merge computed by the engine into a directory (and stored),
and a recorded merge materialised from the blob store."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from merging import MergeError, MergeInput, MergeOptions, MergeSpec, merge
from registry.operations.bases import base_dir
from registry.operations.merge_inputs import Member, MergeParams
from registry.operations.retention import own_recall
from registry.store.errors import Corrupt
from registry.store.manifests import store_directory
from registry.store.schema import BaseModelRow, MergeRow
from registry.store.workspace import Workspace


def verified_task_vector_dir(ws: Workspace, member: Member) -> Path:
    """The member's deltas as a directory (every blob rehashed as it is materialized)."""
    return ws.materialize(
        member.row.manifest_sha256, "task_vectors", what=f"task vector {member.corpus}@v{member.row.version}"
    )


def merged_model_dir(ws: Workspace, row: MergeRow) -> Path:
    """A recorded merge as a loadable model directory (materialized from the blob store)."""
    return ws.materialize(row.manifest_sha256, "models", what=f"merge-{row.id}")


def compute_merge(
    ws: Workspace, base: BaseModelRow, members: list[Member], params: MergeParams, *, progress: bool
) -> str:
    """Run the merge engine; store its output directory; return the manifest's sha256."""
    with tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="merge-") as tmp:
        out = merge_into(Path(tmp) / "model", ws, base, members, params, progress=progress)
        return store_directory(ws.store, out, kind="merge")


def merge_into(
    out: Path,
    ws: Workspace,
    base: BaseModelRow,
    members: list[Member],
    params: MergeParams,
    *,
    progress: bool,
) -> Path:
    """Run the merge engine into the (new) directory ``out``."""
    # The base and the members are fetched at once: from a bucket, downloads overlap instead of queueing.
    with ThreadPoolExecutor(max_workers=4) as pool:
        base_future = pool.submit(base_dir, ws, base)
        member_futures = [pool.submit(verified_task_vector_dir, ws, m) for m in members]
        base_path, paths = base_future.result(), [f.result() for f in member_futures]
    density = params.density if params.method == "ties" else 1.0
    spec = MergeSpec(
        params.method,
        base=base_path,
        lam=params.lam,
        out_dtype=base.dtype,
        inputs=tuple(
            MergeInput(p, kind="task_vector", weight=m.weight, density=density) for p, m in zip(paths, members)
        ),
    )
    names = {base_path: base.name, **{p: f"{m.corpus}@v{m.row.version}" for p, m in zip(paths, members)}}
    try:
        merge(spec, out, MergeOptions(progress=progress), names=names, card_body=card_body(members))
    except MergeError as e:
        raise Corrupt(f"the merge failed: {e}") from e
    return out


def card_body(members: list[Member]) -> str:
    lines = ["## Memory corpora", "", "| corpus | version | own recall (exact match) |", "|---|---|---|"]
    for m in members:
        recall = own_recall(m.row)
        lines.append(f"| {m.corpus} | v{m.row.version} | {'' if recall is None else f'{recall:.2f}'} |")
    return "\n".join(lines)
