"""`memo eval`: recall of a model on a corpus's questions (or its held-out paraphrases).

A reference is a model directory, a merge id (``7``, ``merge-7``), a channel
(its current merge; a channel wins over a corpus of the same name), a corpus
name (its latest task vector on its base) or ``corpus@vN``. A task vector
becomes a model directory with the merge engine itself (one input, density 1:
exactly the fine-tuned weights), cached under ``HOME/cache/applied``.
"""

from __future__ import annotations

from pathlib import Path

from merging import MergeError, MergeInput, MergeOptions, MergeSpec, merge
from registry.corpora import find_corpus
from registry.merged_models import merged_model_dir
from registry.merges import merge_of
from registry.reflections import HELDOUT_KEY, latest_reflections
from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database, row_of
from registry.store.errors import Corrupt, NotFound
from registry.store.home import cache_dir
from registry.store.materialize import materialize
from registry.store.schema import BaseModelRow
from registry.task_vectors import find_task_vector
from registry.training_ops import base_dir, device_for
from training.chat import QAPair
from training.evaluate import recall
from training.qa_files import decode_records, pairs_of
from training.sft import load_model


def model_dir(db: Database, store: LocalBlobStore, home: Path, ref: str) -> Path:
    """A loadable model directory for ``ref`` (see the module doc)."""
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser()
    with db.read() as session:
        merged = merge_of(session, ref)
        if merged is not None:
            return merged_model_dir(store, home, merged)
        tv = find_task_vector(session, ref)
        base = row_of(session, BaseModelRow, tv.base_model_id)
    target = cache_dir(home, "applied") / tv.manifest_sha256
    if not target.is_dir():
        spec = MergeSpec(
            "ties",
            base=base_dir(store, home, base),
            inputs=(
                MergeInput(
                    materialize(store, tv.manifest_sha256, cache_dir(home, "task_vectors"), what=f"task vector {ref}"),
                    kind="task_vector",
                    density=1.0,
                ),
            ),
            out_dtype=base.dtype,
        )
        try:
            merge(spec, target, MergeOptions(progress=False))
        except MergeError as e:
            raise Corrupt(f"task vector {ref} cannot be applied to base {base.name!r}: {e}") from e
    return target


def qa_pairs(db: Database, store: LocalBlobStore, corpus: str, *, heldout: bool = False) -> list[QAPair]:
    """A corpus's latest reflections (or their held-out paraphrases) as question-answer pairs."""
    with db.read() as session:
        reflections = latest_reflections(session, find_corpus(session, corpus))
    sha = reflections.settings.get(HELDOUT_KEY) if heldout else reflections.sha256
    if sha is None:
        raise NotFound(
            f"corpus {corpus!r} has no held-out set; import one with `memo reflect {corpus} --qa FILE --heldout FILE`"
        )
    return pairs_of(decode_records(store.get_bytes(sha)))


def evaluate(
    db: Database,
    store: LocalBlobStore,
    home: Path,
    ref: str,
    corpus: str,
    *,
    heldout: bool = False,
    device: str = "auto",
) -> dict:
    pairs = qa_pairs(db, store, corpus, heldout=heldout)
    device = device_for(device)
    model, tokenizer = load_model(model_dir(db, store, home, ref), device)
    result = recall(model, tokenizer, pairs, device=device)
    return {"ref": ref, "corpus": corpus, "set": "heldout" if heldout else "reflections", **result.to_json()}
