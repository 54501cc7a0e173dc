"""Base models: registering a local Hugging Face model directory and listing bases."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from merging.checkpoint import PICKLE_PATTERNS, open_checkpoint
from merging.errors import CheckpointError
from osutil.lazy_import import lazy_module
from registry.operations.examples import examples_dir
from registry.store.database import Database
from registry.store.errors import AlreadyExists, Corrupt, InvalidInput, NotFound
from registry.store.leases import require_stored
from registry.store.manifests import store_directory
from registry.store.names import check_name
from registry.store.records import BaseModelRecord
from registry.store.schema import BaseModelRow
from registry.store.workspace import Workspace

if TYPE_CHECKING:
    import training.tiny as tiny
    from training.tiny import TinyConfig
else:
    tiny = lazy_module("training.tiny")  # torch: only `memo base create-tiny` needs it

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def to_record(row: BaseModelRow) -> BaseModelRecord:
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


def add_base(ws: Workspace, path: Path, *, name: str | None = None) -> BaseModelRecord:
    directory = Path(path).expanduser().resolve()
    name = check_name("base model", name or directory.name)
    if not directory.is_dir():
        raise NotFound(f"no model directory at {directory}")
    config = _read_config(directory)
    try:
        checkpoint = open_checkpoint(directory)
        fingerprint = checkpoint.fingerprint()
    except CheckpointError as e:
        raise Corrupt(str(e)) from e
    with ws.db.read() as session:
        _refuse_duplicate(session, name, fingerprint)
    # Blobs first, row last: a crash in between leaves only unreferenced blobs.
    manifest = store_directory(ws.store, directory, kind="model", skip=_pickle_files(directory))
    ws.keep(directory, manifest, "models", move=False)
    row = BaseModelRow(
        name=name,
        source=str(directory),
        architecture=_architecture(config),
        dtype=checkpoint.dominant_dtype(),
        parameter_count=checkpoint.parameter_count,
        fingerprint=fingerprint,
        manifest_sha256=manifest,
    )
    try:
        with ws.db.write() as session:
            _refuse_duplicate(session, name, fingerprint)
            require_stored(session, ws.store, manifests=[manifest], what=f"base model {name!r}")
            session.add(row)
            session.flush()
            return to_record(row)
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
        return [to_record(r) for r in rows]


def get_base(db: Database, name: str) -> BaseModelRecord:
    with db.read() as session:
        return to_record(find_base(session, name))


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
        return add_base(ws, directory, name=name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
