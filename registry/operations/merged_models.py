"""Merged model directories: a merge computed by the engine into a directory (and stored). A
recorded merge as a directory is :func:`registry.operations.merges.merged_model_dir`."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from merging import MergeError, MergeInput, MergeOptions, MergeSpec, merge
from registry.operations.bases import base_dir
from registry.operations.merge_inputs import Member, MergeParams
from registry.operations.retention import own_recall
from registry.store.blob_sources import StreamedBlob, weight_blobs
from registry.store.errors import Corrupt
from registry.store.manifests import load_manifest, store_directory
from registry.store.schema import BaseModelRow
from registry.store.workspace import Workspace


def compute_merge(
    ws: Workspace, base: BaseModelRow, members: list[Member], params: MergeParams, *, progress: bool
) -> tuple[str, str]:
    """Run the merge engine; store its output directory; return the manifest's sha256 and the kernel that ran."""
    with tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="merge-") as tmp:
        out, kernel = merge_into(Path(tmp) / "model", ws, base, members, params, progress=progress)
        manifest = store_directory(ws.store, out, kind="merge")
        ws.keep(out, manifest, "models", move=True)
        return manifest, kernel


def merge_into(
    out: Path,
    ws: Workspace,
    base: BaseModelRow,
    members: list[Member],
    params: MergeParams,
    *,
    progress: bool,
) -> tuple[Path, str]:
    """Run the merge engine into the (new) directory ``out``; returns it and the kernel that ran.

    Members are read from the cache when they are there, else streamed from the blob store
    (:mod:`registry.store.blob_sources`): their download starts now and overlaps the base's and the merge.
    """
    with contextlib.ExitStack() as stack:
        spool = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="stream-")))
        inputs = tuple(member_input(ws, m, params, stack, spool) for m in members)
        base_path = base_dir(ws, base, full=True)  # the merge recorded is made from it
        spec = MergeSpec(
            params.method,
            base=base_path,
            lam=params.lam,
            out_dtype=base.dtype,
            inputs=inputs,
            rescale=params.rescale,
            seed=params.seed if params.method_def.random else None,
        )
        names = {base_path: base.name, **{i.path: member_label(m) for i, m in zip(inputs, members)}}
        try:
            result = merge(spec, out, MergeOptions(progress=progress), names=names, card_body=card_body(members))
        except MergeError as e:
            for source in (s for i in inputs for s in i.sources):
                source.finish()  # a corrupt blob is the cause to name, not what it did to the merge
            raise Corrupt(f"the merge failed: {e}") from e
    return out, result.kernel


def member_label(member: Member) -> str:
    return f"{member.corpus}@v{member.row.version}"


def member_input(
    ws: Workspace, member: Member, params: MergeParams, stack: contextlib.ExitStack, spool: Path
) -> MergeInput:
    """The member's deltas for the engine: its cache entry if present, else its blobs, streamed."""
    sha = member.row.manifest_sha256
    label = member_label(member)
    cached = ws.cached(sha, "task_vectors", what=f"task vector {label}", full=True)
    if cached is not None:
        return params.engine_input(cached, member.weight, kind="task_vector")
    sources = tuple(
        stack.enter_context(
            contextlib.closing(
                StreamedBlob(ws.store, blob, size, what=f"task vector {label}", rel=rel, spool_dir=spool)
            )
        )
        for rel, blob, size in weight_blobs(ws.store, load_manifest(ws.store, sha))
    )
    return params.engine_input(Path(label), member.weight, kind="task_vector", sources=sources)


def card_body(members: list[Member]) -> str:
    lines = ["## Memory corpora", "", "| corpus | version | own recall (exact match) |", "|---|---|---|"]
    for m in members:
        recall = own_recall(m.row)
        lines.append(f"| {m.corpus} | v{m.row.version} | {'' if recall is None else f'{recall:.2f}'} |")
    return "\n".join(lines)
