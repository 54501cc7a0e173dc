"""Training a corpus into a new task vector version, and building the tiny base.

Nothing is written until training has finished: the task vector's blobs and
row come last, so a crash, a kill or a NaN loss leaves no row and at most
unreferenced blobs (which `memo gc` removes); running again works.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file

from registry.corpora import find_corpus
from registry.reflections import HELDOUT_KEY, latest_reflections
from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database, row_of
from registry.store.errors import InvalidInput, MemoError
from registry.store.home import cache_dir, checkpoints_dir, work_root
from registry.store.materialize import materialize
from registry.store.records import TaskVectorRecord
from registry.store.schema import BaseModelRow
from registry.task_vectors import add_task_vector, find_trained
from training.delta import save_task_vector, task_vector
from training.distributed import is_main_process, resolve_device
from training.evaluate import recall
from training.loop import TrainingError
from training.qa_files import decode_records, pairs_of
from training.sft import SFTSettings, fine_tune

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
EVAL_SAMPLE = 200  # questions evaluated after training (a seeded sample for big corpora)


class TrainingFailed(MemoError):
    code = "training_failed"


def base_dir(store: LocalBlobStore, home: Path, base: BaseModelRow) -> Path:
    """The base model as a directory (materialized from the blob store), with its tokenizer."""
    directory = materialize(store, base.manifest_sha256, cache_dir(home, "models"), what=f"base model {base.name!r}")
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise InvalidInput(
            f"base model {base.name!r} has no tokenizer ({', '.join(TOKENIZER_FILES)}); "
            "add the model directory again with its tokenizer files"
        )
    return directory


def sample(items: list, limit: int, seed: int) -> list:
    return items if len(items) <= limit else random.Random(seed).sample(items, limit)


def software_versions() -> dict[str, str]:
    return {
        "memo": version("memo-registry"),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "python": platform.python_version(),
    }


def device_for(requested: str) -> str:
    try:
        return resolve_device(requested)
    except ValueError as e:
        raise InvalidInput(str(e)) from e


def train_corpus(
    db: Database,
    store: LocalBlobStore,
    home: Path,
    corpus: str,
    settings: SFTSettings,
    *,
    storage_dtype: str = "float32",
    device: str = "auto",
    progress: bool = True,
    reuse: bool = False,
) -> TaskVectorRecord | None:
    """Train and record the corpus's next task vector.

    Under a multi-process launch (``accelerate launch``), every process trains
    and the main one alone evaluates and records; the others return None.
    With ``reuse``, a task vector already trained on the latest reflections
    with the same settings is returned (``reused``) instead of training again.
    """
    started = time.perf_counter()
    device = device_for(device)
    with db.read() as session:
        corpus_row = find_corpus(session, corpus)
        base_row = row_of(session, BaseModelRow, corpus_row.base_model_id)
        reflections = latest_reflections(session, corpus_row)
        done = find_trained(session, corpus_row, reflections.id, settings.to_json(), storage_dtype)
    if reuse and done is not None:
        return done if is_main_process() else None
    directory = base_dir(store, home, base_row)
    pairs = pairs_of(decode_records(store.get_bytes(reflections.sha256)))
    heldout_sha = reflections.settings.get(HELDOUT_KEY)
    heldout = pairs_of(decode_records(store.get_bytes(heldout_sha))) if heldout_sha else []
    # A killed run resumes from its checkpoint when the same training is asked for again.
    fingerprint = hashlib.sha256(
        json.dumps([settings.to_json(), reflections.sha256, base_row.fingerprint], sort_keys=True).encode()
    ).hexdigest()
    checkpoint = checkpoints_dir(home) / f"{corpus}-{fingerprint[:16]}"
    try:
        model, tokenizer, result = fine_tune(
            directory, pairs, settings, device=device, progress=progress, checkpoint=checkpoint, fingerprint=fingerprint
        )
    except TrainingError as e:
        shutil.rmtree(checkpoint, ignore_errors=True)
        raise TrainingFailed(f"training {corpus!r} failed: {e}; nothing was registered") from e
    if not is_main_process():
        return None
    metrics = {"recall": recall(model, tokenizer, sample(pairs, EVAL_SAMPLE, settings.seed), device=device).to_json()}
    if heldout:
        metrics["heldout"] = recall(
            model, tokenizer, sample(heldout, EVAL_SAMPLE, settings.seed), device=device
        ).to_json()
    base_state = {n: t for f in sorted(directory.glob("*.safetensors")) for n, t in load_file(f).items()}
    finetuned = {n: t.detach().to("cpu", base_state[n].dtype) for n, t in model.state_dict().items() if n in base_state}
    deltas, stats = task_vector(base_state, finetuned, storage_dtype)
    training = {
        "sft": settings.to_json(),
        "storage_dtype": storage_dtype,
        "device": str(device),
        "dataset_sha256": reflections.sha256,
        "reflection_set_id": reflections.id,
        "examples": result.examples,
        "steps": result.steps,
        "train_seconds": result.seconds,
        "final_loss": result.final_loss,
        "resumed_from_step": result.resumed_from,
        "versions": software_versions(),
        "task_vector": {
            "mismatches": stats.mismatches,
            "relative_error": stats.relative_error,
            "total_norm": stats.total_norm,
        },
    }
    with tempfile.TemporaryDirectory(dir=work_root(home)) as tmp:
        save_task_vector(deltas, Path(tmp), stats)
        training["wall_seconds"] = time.perf_counter() - started
        record = add_task_vector(
            db,
            store,
            corpus,
            Path(tmp),
            method=settings.method,
            storage_dtype=storage_dtype,
            cache_root=cache_dir(home, "models"),
            training=training,
            norms=stats.norms,
            metrics=metrics,
            reflection_set_id=reflections.id,
        )
    shutil.rmtree(checkpoint, ignore_errors=True)
    return record
