"""`memo eval`: recall of a model on a corpus's questions (or its held-out paraphrases).

A reference is a model directory, a merge id (``7``, ``merge-7``), a channel
(its current merge; a channel wins over a corpus of the same name), a corpus
name (its latest task vector on its base) or ``corpus@vN``. A task vector
becomes a model directory with the merge engine itself (one input, density 1:
exactly the fine-tuned weights), cached under ``HOME/cache/applied``.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from merging import MergeError, MergeInput, MergeOptions, MergeSpec, merge
from osutil.partial import move_into_place
from registry.operations.bases import base_dir
from registry.operations.devices import device_for
from registry.operations.merges import merge_of, merged_model_dir
from registry.operations.questions import qa_pairs
from registry.operations.task_vectors import find_task_vector
from registry.store.cache_records import hash_files, write_record
from registry.store.database import row_of
from registry.store.errors import Corrupt
from registry.store.records import EvaluationRecord
from registry.store.schema import BaseModelRow
from registry.store.workspace import Workspace
from training.evaluate import recall
from training.sft import load_model


def model_dir(ws: Workspace, ref: str) -> Path:
    """A loadable model directory for ``ref`` (see the module doc)."""
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser()
    with ws.db.read() as session:
        merged = merge_of(session, ref)
        if merged is not None:
            return merged_model_dir(ws, merged)
        tv = find_task_vector(session, ref)
        base = row_of(session, BaseModelRow, tv.base_model_id)
    target = ws.cache("applied") / tv.manifest_sha256
    if not target.is_dir():
        spec = MergeSpec(
            "ties",
            base=base_dir(ws, base),
            inputs=(
                MergeInput(
                    ws.materialize(tv.manifest_sha256, "task_vectors", what=f"task vector {ref}"),
                    kind="task_vector",
                    density=1.0,
                ),
            ),
            out_dtype=base.dtype,
        )
        _apply(ws, spec, target, f"task vector {ref} cannot be applied to base {base.name!r}")
    if not ws.hold_cached(target):  # evicted by another process just now: apply it again
        return model_dir(ws, ref)
    if not ws.checked(target, what=f"task vector {ref} applied to its base", full=False):
        return model_dir(ws, ref)  # damaged: set aside, applied again
    return target


def _apply(ws: Workspace, spec: MergeSpec, target: Path, failure: str) -> None:
    """Merge into a work directory, record what it holds, then move it into the cache as ``target``."""
    with tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="apply-") as tmp:
        built = Path(tmp) / "model"
        try:
            merge(spec, built, MergeOptions(progress=False))
        except MergeError as e:
            raise Corrupt(f"{failure}: {e}") from e
        target.parent.mkdir(parents=True, exist_ok=True)
        write_record(target, hash_files(built))
        with contextlib.suppress(OSError):  # another process applied it first: the same bytes
            move_into_place(built, target)


def evaluate(
    ws: Workspace,
    ref: str,
    corpus: str,
    *,
    heldout: bool = False,
    device: str = "auto",
) -> EvaluationRecord:
    pairs = qa_pairs(ws, corpus, heldout=heldout)
    device = device_for(device)
    model, tokenizer = load_model(model_dir(ws, ref), device)
    result = recall(model, tokenizer, pairs, device=device)
    which = "heldout" if heldout else "reflections"
    return EvaluationRecord(ref, corpus, which, result.exact_match, result.f1, result.count)
