"""Base models: registering a local Hugging Face model directory (or a GGUF file, imported as one) and
listing bases. A base with a tokenizer and a chat template is probed as it is added: the general
questions it answers become its probe set (:mod:`registry.operations.probes`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from merging.checkpoint import PICKLE_PATTERNS, open_checkpoint
from merging.errors import CheckpointError
from osutil.lazy_import import lazy_module
from registry.operations.examples import examples_dir
from registry.operations.probes import (
    BANK,
    TINY_WORLD,
    add_probe_set,
    bank_path,
    candidates,
    current_probe_set,
    measure_general,
    probe_set_record,
    store_probe_set,
    tiny_world_path,
)
from registry.store.database import Database
from registry.store.errors import AlreadyExists, Corrupt, InvalidInput, NotFound
from registry.store.leases import require_stored
from registry.store.manifests import store_directory
from registry.store.names import check_name
from registry.store.records import BaseModelRecord, GeneralKnowledge
from registry.store.schema import BaseModelRow, ProbeSetRow
from registry.store.workspace import Workspace
from training.probes import Probe, Selection, read_probes, select_known
from training.settings import KEEP_KNOWLEDGE, PROBE_LIMIT

if TYPE_CHECKING:
    import registry.operations.devices as devices
    import training.gguf_import as gguf_import
    import training.sft as sft
    import training.tiny as tiny
    from training.tiny import TinyConfig
else:  # torch and transformers: only for creating, importing and probing a base
    tiny = lazy_module("training.tiny")
    sft = lazy_module("training.sft")
    gguf_import = lazy_module("training.gguf_import")
    devices = lazy_module("registry.operations.devices")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def to_record(row: BaseModelRow, probes: ProbeSetRow | None = None) -> BaseModelRecord:
    return BaseModelRecord(
        id=row.id,
        name=row.name,
        source=row.source,
        architecture=row.architecture,
        dtype=row.dtype,
        parameter_count=row.parameter_count,
        fingerprint=row.fingerprint,
        manifest_sha256=row.manifest_sha256,
        created_at=row.created_at,
        origin=row.origin,
        training_defaults=row.training_defaults,
        probes=probe_set_record(probes),
    )


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise InvalidInput(f"{directory} has no config.json; it is not a Hugging Face model directory") from e
    except (OSError, ValueError) as e:
        raise Corrupt(f"{path} is unreadable ({e})") from e
    if not isinstance(config, dict):
        raise Corrupt(f"{path} is not a JSON object")
    return config


def _architecture(config: dict) -> str:
    archs = config.get("architectures") or []
    return str(archs[0] if archs else config.get("model_type", "unknown"))


def _pickle_files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for pat in PICKLE_PATTERNS for p in directory.glob(pat)}


def _check_usable(directory: Path, config: dict) -> None:
    """Refuse what a later step could not use: quantized weights cannot be trained, merged or saved."""
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "?") if isinstance(quantization, dict) else "?"
        hint = " (import the .gguf file itself: `memo base add FILE.gguf`)" if method == "gguf" else ""
        raise InvalidInput(
            f"{directory} holds a quantized model (quantization_config: {method}); memo needs unquantized "
            f"weights to train and merge{hint}"
        )


KNOWS_THE_WORLD = 0.1  # the least share of memo's bank questions asked that a base answering the world answers


def defaults_for_new_base(source: str | None, selection: Selection | None) -> dict | None:
    """The training defaults a base added now brings, by how it answered its probe questions (None: not
    probed): a base that answers memo's bank knows the world, and trains by default so as to keep it (a
    model that answers none of it, a random or tiny one, keeps memo's own defaults)."""
    if source != BANK or selection is None or selection.answered < max(1, KNOWS_THE_WORLD * selection.asked):
        return None
    return dict(KEEP_KNOWLEDGE)


@dataclass(frozen=True)
class Asking:
    """How a new base is probed: the questions (None: memo's bank) and how many known ones to keep."""

    questions: Path | None
    limit: int


def check_probe_limit(probes: int) -> None:
    if probes < 1:
        raise InvalidInput(f"--probes must be 1 or more, not {probes}")


def _probe_candidates(directory: Path, questions: Path | None) -> tuple[Path, str] | None:
    """The questions to probe a new base with (None: it has no tokenizer or chat template to ask through)."""
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        return None
    if not (directory / "chat_template.jinja").is_file() and "chat_template" not in _tokenizer_config(directory):
        return None
    return (questions, TINY_WORLD) if questions else (bank_path(), BANK)


def _tokenizer_config(directory: Path) -> dict:
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):  # none, or unreadable: transformers will say so where it matters
        return {}
    return config if isinstance(config, dict) else {}


def _ask_base(
    ws: Workspace, directory: Path, questions: list[Probe], device: str, limit: int
) -> tuple[Selection, str] | None:
    """Up to ``limit`` questions the base at ``directory`` answers, stored as a blob (None: its tokenizer is not
    the model's, so it cannot be asked anything: a weights-only base with a stand-in tokenizer)."""
    where = devices.device_for(device)
    model, tokenizer = sft.load_model(directory, where)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        return None
    selection = select_known(model, tokenizer, questions, device=where, limit=limit)
    return selection, store_probe_set(ws, selection)


def _probe_base(ws: Workspace, directory: Path, source: tuple[Path, str] | None, device: str, limit: int):
    """(source, selection, blob) of a new base's probe set (at most ``limit`` questions), or None."""
    if source is None:
        return None
    questions, label = source
    asked = _ask_base(ws, directory, read_probes(questions), device, limit)
    return (label, *asked) if asked else None


def add_base(
    ws: Workspace,
    path: Path,
    *,
    name: str | None = None,
    probe_with: Path | None = None,
    probe: bool = True,
    probes: int = PROBE_LIMIT,
    device: str = "auto",
) -> BaseModelRecord:
    """Register a model directory, or import a GGUF file as one (``probe``: ask it the general
    questions of ``probe_with``, memo's bank by default, to make its probe set of ``probes`` it knows)."""
    check_probe_limit(probes)
    source = Path(path).expanduser().resolve()
    asking = Asking(probe_with, probes) if probe else None
    if source.is_file():
        return _add_gguf(ws, source, name=name, asking=asking, device=device)
    if not source.is_dir():
        raise NotFound(f"no model directory or GGUF file at {source}")
    return _add_directory(ws, source, name=name or source.name, asking=asking, device=device)


def packaged_gguf(package: str) -> Path:
    try:
        return gguf_import.gguf_in_package(package)
    except gguf_import.GGUFError as e:
        raise NotFound(str(e)) from e


def _add_gguf(ws: Workspace, file: Path, *, name: str | None, asking: Asking | None, device: str) -> BaseModelRecord:
    try:
        origin = gguf_import.describe_gguf(file)
    except gguf_import.GGUFError as e:
        raise InvalidInput(str(e)) from e
    name = check_name("base model", name or file.name.split(".")[0])
    with ws.db.read() as session:
        _refuse_name(session, name)
        for row in session.scalars(select(BaseModelRow).where(BaseModelRow.origin.is_not(None))):
            if (row.origin or {}).get("sha256") == origin.sha256:
                raise AlreadyExists(f"{file.name} is already registered as base model {row.name!r}; use that name")
    with tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="gguf-") as work:
        try:
            directory = gguf_import.convert_gguf(file, Path(work) / name)
        except gguf_import.GGUFError as e:
            raise InvalidInput(str(e)) from e
        return _add_directory(
            ws, directory, name=name, asking=asking, device=device, origin=origin.to_json(), source=file
        )


def _add_directory(
    ws: Workspace,
    directory: Path,
    *,
    name: str,
    asking: Asking | None,
    device: str,
    origin: dict | None = None,
    source: Path | None = None,
) -> BaseModelRecord:
    name = check_name("base model", name)
    config = _read_config(directory)
    _check_usable(directory, config)
    try:
        checkpoint = open_checkpoint(directory)
        fingerprint = checkpoint.fingerprint()
    except CheckpointError as e:
        raise Corrupt(str(e)) from e
    with ws.db.read() as session:
        _refuse_duplicate(session, name, fingerprint)
    probed = None
    if asking is not None:
        probed = _probe_base(ws, directory, _probe_candidates(directory, asking.questions), device, asking.limit)
    # Blobs first, rows last: a crash in between leaves only unreferenced blobs.
    manifest = store_directory(ws.store, directory, kind="model", skip=_pickle_files(directory))
    ws.keep(directory, manifest, "models", move=False)
    row = BaseModelRow(
        name=name,
        source=str(source or directory),
        architecture=_architecture(config),
        dtype=checkpoint.dominant_dtype(),
        parameter_count=checkpoint.parameter_count,
        fingerprint=fingerprint,
        manifest_sha256=manifest,
        origin=origin,
        training_defaults=defaults_for_new_base(*probed[:2]) if probed else None,
    )
    try:
        with ws.db.write() as session:
            _refuse_duplicate(session, name, fingerprint)
            blobs = [probed[2]] if probed else []
            require_stored(session, ws.store, blobs=blobs, manifests=[manifest], what=f"base model {name!r}")
            session.add(row)
            session.flush()
            return to_record(row, add_probe_set(session, row, *probed) if probed else None)
    except IntegrityError as e:  # lost a race with another process
        raise AlreadyExists(f"base model {name!r} (or these weights) was registered concurrently") from e


def check_available(db: Database, name: str) -> None:
    """Fail early (before expensive work) when ``name`` is taken or invalid."""
    check_name("base model", name)
    with db.read() as session:
        _refuse_name(session, name)


def _refuse_name(session, name: str) -> None:
    if session.scalar(select(BaseModelRow).where(BaseModelRow.name == name)):
        raise AlreadyExists(f"base model {name!r} already exists; choose another name")


def _refuse_duplicate(session, name: str, fingerprint: str) -> None:
    _refuse_name(session, name)
    same = session.scalar(select(BaseModelRow).where(BaseModelRow.fingerprint == fingerprint))
    if same:
        raise AlreadyExists(f"these weights are already registered as base model {same.name!r}; use that name")


def find_base(session, name: str) -> BaseModelRow:
    row = session.scalar(select(BaseModelRow).where(BaseModelRow.name == name))
    if row is None:
        known = session.scalars(select(BaseModelRow.name).order_by(BaseModelRow.name)).all()
        hint = f"known: {', '.join(known)}" if known else "register one with `memo base add PATH`"
        raise NotFound(f"unknown base model {name!r} ({hint})")
    return row


def list_bases(db: Database) -> list[BaseModelRecord]:
    with db.read() as session:
        rows = session.scalars(select(BaseModelRow).order_by(BaseModelRow.name)).all()
        return [to_record(r, current_probe_set(session, r.id)) for r in rows]


def get_base(db: Database, name: str) -> BaseModelRecord:
    with db.read() as session:
        row = find_base(session, name)
        return to_record(row, current_probe_set(session, row.id))


def general_knowledge(ws: Workspace, name: str, model, tokenizer, *, device: str) -> GeneralKnowledge | None:
    """A loaded model (one the registry does not hold, too) asked base ``name``'s current probe set."""
    with ws.db.read() as session:
        probe_set = current_probe_set(session, find_base(session, name).id)
    return GeneralKnowledge.from_json(measure_general(ws, model, tokenizer, probe_set, device=device))


def base_dir(ws: Workspace, base: BaseModelRow, *, full: bool = False) -> Path:
    """The base model as a directory (materialized from the blob store), with its tokenizer;
    ``full``: a cached copy is rehashed first (for what records a model made from it)."""
    directory = ws.materialize(base.manifest_sha256, "models", what=f"base model {base.name!r}", full=full)
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise InvalidInput(
            f"base model {base.name!r} has no tokenizer ({', '.join(TOKENIZER_FILES)}); "
            "add the model directory again with its tokenizer files"
        )
    return directory


def create_tiny_base(ws: Workspace, name: str, config: TinyConfig, *, progress: bool) -> BaseModelRecord:
    """Build, pre-train (offline, on the shipped pre-training text) and register a tiny Llama base."""
    check_available(ws.db, name)
    work = Path(tempfile.mkdtemp(dir=ws.work_root(), prefix="tiny-"))
    try:
        directory, _ = tiny.create_tiny_base(
            work / name, pretrain_dir=examples_dir() / "pretrain", config=config, progress=progress
        )
        return add_base(ws, directory, name=name, probe_with=tiny_world_path())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def probe_base(
    ws: Workspace, name: str, files: list[Path], *, bank: bool = True, probes: int = PROBE_LIMIT, device: str = "auto"
) -> BaseModelRecord:
    """A new probe set for the base (the bank and/or the user's question files): at most ``probes`` of the
    questions it answers, asked of every task vector and merge made from now on."""
    check_probe_limit(probes)
    questions, label = candidates(files, bank=bank)
    with ws.db.read() as session:
        row = find_base(session, name)
    asked = _ask_base(ws, base_dir(ws, row), questions, device, probes)
    if asked is None:
        raise InvalidInput(f"base model {name!r} cannot be asked questions: its tokenizer is not its model's")
    selection, sha = asked
    with ws.db.write() as session:
        row = find_base(session, name)
        require_stored(session, ws.store, blobs=[sha], what=f"the probe set of base model {name!r}")
        return to_record(row, add_probe_set(session, row, label, selection, sha))
