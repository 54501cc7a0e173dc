"""Fine-tuning a corpus into its next task vector version.

Nothing is written until training has finished: the task vector's blobs and
row come last, so a crash, a kill or a NaN loss leaves no row and at most
unreferenced blobs (which `memo gc` removes); running again works.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file

from registry.operations.bases import base_dir
from registry.operations.corpora import find_corpus
from registry.operations.devices import device_for
from registry.operations.keeping import mixed_in_pairs
from registry.operations.merges import merged_model_dir
from registry.operations.onto import Onto, earlier_pairs, start_of
from registry.operations.probes import current_probe_set, measure_general
from registry.operations.questions import EVAL_SAMPLE, sample
from registry.operations.reflections import HELDOUT_KEY, latest_reflections
from registry.operations.replay import everyday_prompts, recorded_replay_set
from registry.operations.task_vectors import add_task_vector, find_trained
from registry.store.database import row_of
from registry.store.errors import MemoError
from registry.store.records import TaskVectorRecord
from registry.store.schema import BaseModelRow, CorpusRow, MergeRow, ProbeSetRow, ReflectionSetRow
from registry.store.workspace import Workspace
from training.chat import QAPair
from training.delta import save_task_vector, task_vector
from training.distributed import is_main_process
from training.evaluate import recall
from training.loop import TrainingError
from training.qa_files import decode_records, pairs_of
from training.rehearsal import Rehearsal, rehearsed
from training.sft import Mixed, SFTSettings, fine_tune


class TrainingFailed(MemoError):
    code = "training_failed"


def software_versions() -> dict[str, str]:
    return {
        "memo": version("memo-registry"),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class _Job:
    """What a training reads from the database before it starts."""

    corpus: CorpusRow
    base: BaseModelRow
    reflections: ReflectionSetRow
    start: MergeRow | None  # trained onto this merge's model (None: the base)
    share: float | None  # earlier members' share of the examples when trained onto a merge
    probe_set: ProbeSetRow | None


def train_corpus(
    ws: Workspace,
    corpus: str,
    settings: SFTSettings,
    *,
    storage_dtype: str = "float32",
    device: str = "auto",
    progress: bool = True,
    reuse: bool = False,
    onto: Onto | None = None,
) -> TaskVectorRecord | None:
    """Train and record the corpus's next task vector; under ``accelerate launch`` every process
    trains and the main one alone evaluates and records (the others return None). With ``reuse``, a
    task vector already trained on the latest reflections with the same settings is returned. With
    ``onto``, training starts from the channel's model and rehearses its members (:mod:`.onto`)."""
    started = time.perf_counter()
    device = device_for(device)
    job = _job(ws, corpus, onto)
    if reuse and (done := _trained_already(ws, job, settings, storage_dtype)) is not None:
        return done if is_main_process() else None
    directory = base_dir(ws, job.base, full=True)  # the task vector recorded is measured against it
    origin = merged_model_dir(ws, job.start, full=True) if job.start is not None else directory
    pairs, heldout = _pairs(ws, job.reflections)
    plan = rehearsed(pairs, earlier_pairs(ws, job.start, job.corpus), job.share) if job.start and job.share else None
    corpus_examples = plan.pairs if plan else pairs
    seen = settings.steps * settings.batch
    mixed = mixed_in_pairs(ws, job.base, [(job.corpus.id, corpus_examples)], settings, device=device, seen=seen)
    trained_on = mixed.around(corpus_examples)
    fingerprint = _fingerprint(job, settings, mixed)
    checkpoint = ws.checkpoints / f"{corpus}-{fingerprint[:16]}"
    model, tokenizer, result = _fine_tune(
        corpus, origin, (trained_on, corpus_examples), settings, checkpoint, fingerprint, device, progress
    )
    if not is_main_process():
        return None
    metrics = _recall_of(model, tokenizer, pairs, heldout, seed=settings.seed, device=device)
    if (general := measure_general(ws, model, tokenizer, job.probe_set, device=device)) is not None:
        metrics["general"] = general
    deltas, stats = _task_vector_of(model, directory, storage_dtype)
    training = _provenance(job, settings, storage_dtype, device, plan, mixed)
    training.update(_run_facts(result, stats))
    with tempfile.TemporaryDirectory(dir=ws.work_root()) as tmp:
        save_task_vector(deltas, Path(tmp), stats)
        training["wall_seconds"] = time.perf_counter() - started
        record = add_task_vector(
            ws,
            corpus,
            Path(tmp),
            method=settings.method,
            storage_dtype=storage_dtype,
            training=training,
            norms=stats.norms,
            metrics=metrics,
            reflection_set_id=job.reflections.id,
            start_merge_id=job.start.id if job.start is not None else None,
        )
    shutil.rmtree(checkpoint, ignore_errors=True)
    return record


def _everyday(settings: SFTSettings) -> list[str]:
    """The prompts sparse training chooses its neurons against (none for the other methods)."""
    return everyday_prompts() if settings.method == "sparse" else []


def _fingerprint(job: _Job, settings: SFTSettings, mixed: Mixed) -> str:
    """What a training is: a killed run resumes from its checkpoint when the same one is asked for again."""
    described: list[object] = [settings.to_json(), job.reflections.sha256, job.base.fingerprint]
    if job.start is not None:
        described += [job.start.manifest_sha256, job.share]
    if mixed.replay_source is not None:  # another probe set makes another replay set: another training
        described.append(mixed.replay_source)
    if everyday := _everyday(settings):  # sparse: the neurons are chosen against them
        described.append(hashlib.sha256("\n".join(everyday).encode()).hexdigest())
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _provenance(
    job: _Job, settings: SFTSettings, storage_dtype: str, device: str, plan: Rehearsal | None, mixed: Mixed
) -> dict:
    """What the task vector was trained on and how (its run's facts are added after training)."""
    return {
        "sft": settings.to_json(),
        "storage_dtype": storage_dtype,
        "device": str(device),
        "dataset_sha256": job.reflections.sha256,
        "reflection_set_id": job.reflections.id,
        "mixture": {
            "corpus": len(plan.pairs) if plan else job.reflections.pair_count,
            "rounds": mixed.rounds,  # the corpus's pairs listed this many times (training.sft.rounds_for)
            "replay_and_boundary": len(mixed.pairs),
            **({"replay_set": mixed.replay_source} if mixed.replay_source else {}),  # its blob's sha256
        },
        **({"rehearsal": plan.to_json()} if plan else {}),
    }


def _job(ws: Workspace, corpus: str, onto: Onto | None) -> _Job:
    with ws.db.read() as session:
        corpus_row = find_corpus(session, corpus)
        base_row = row_of(session, BaseModelRow, corpus_row.base_model_id)
        reflections = latest_reflections(session, corpus_row)
        start = start_of(session, onto, corpus_row.base_model_id, corpus_row.name)
        share = onto.share if onto is not None and start is not None else None
        return _Job(corpus_row, base_row, reflections, start, share, current_probe_set(session, base_row.id))


def _trained_already(ws: Workspace, job: _Job, settings: SFTSettings, storage_dtype: str) -> TaskVectorRecord | None:
    """The same training recorded already: the same reflections, settings and start, and with replay the
    replay set the base has now (after a new probe set, a new one: a training on the old one is not it)."""
    replay = recorded_replay_set(ws, job.base) if settings.replay else None
    if settings.replay and replay is None:  # its replay set is not made yet: nothing was trained on it
        return None
    with ws.db.read() as session:
        return find_trained(
            session,
            job.corpus,
            job.reflections.id,
            settings.to_json(),
            storage_dtype,
            job.start.id if job.start is not None else None,
            job.share,
            replay,
        )


def _fine_tune(
    corpus: str,
    directory: Path,
    pairs: tuple[list[QAPair], list[QAPair]],
    settings: SFTSettings,
    checkpoint: Path,
    fingerprint: str,
    device: str,
    progress: bool,
):
    """Fine-tune on ``pairs``: everything trained on, and the corpus's own among them (on which sparse
    training chooses its neurons against the everyday prompts)."""
    trained_on, own = pairs
    try:
        return fine_tune(
            directory,
            trained_on,
            settings,
            corpus=own,
            everyday=_everyday(settings),
            device=device,
            progress=progress,
            checkpoint=checkpoint,
            fingerprint=fingerprint,
        )
    except TrainingError as e:
        shutil.rmtree(checkpoint, ignore_errors=True)
        raise TrainingFailed(f"training {corpus!r} failed: {e}; nothing was registered") from e


def _pairs(ws: Workspace, reflections: ReflectionSetRow) -> tuple[list[QAPair], list[QAPair]]:
    """The reflection set's pairs, and its held-out paraphrases (none when it has no held-out set)."""
    heldout_sha = reflections.settings.get(HELDOUT_KEY)
    heldout = pairs_of(decode_records(ws.store.get_bytes(heldout_sha))) if heldout_sha else []
    return pairs_of(decode_records(ws.store.get_bytes(reflections.sha256))), heldout


def _task_vector_of(model, directory: Path, storage_dtype: str):
    """The fine-tuned weights minus the base's, in ``storage_dtype``, with their statistics."""
    base_state = {n: t for f in sorted(directory.glob("*.safetensors")) for n, t in load_file(f).items()}
    finetuned = {n: t.detach().to("cpu", base_state[n].dtype) for n, t in model.state_dict().items() if n in base_state}
    return task_vector(base_state, finetuned, storage_dtype)


def _recall_of(model, tokenizer, pairs: list, heldout: list, *, seed: int, device: str) -> dict:
    """The trained model's recall on (a seeded sample of) its reflections, and its held-out set's."""
    metrics = {"recall": recall(model, tokenizer, sample(pairs, EVAL_SAMPLE, seed), device=device).to_json()}
    if heldout:
        metrics["heldout"] = recall(model, tokenizer, sample(heldout, EVAL_SAMPLE, seed), device=device).to_json()
    return metrics


def _run_facts(result, stats) -> dict:
    """How the training went and what it made, for the task vector's provenance."""
    return {
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
