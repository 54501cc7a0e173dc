"""A memo *home*: a directory holding the home marker, the blob store and,
by default, the SQLite database; and where each part of it lives.

    HOME/memo-home.json      the marker
    HOME/memo.db             the default SQLite database
    HOME/blobs/              the content-addressed blob store
    HOME/cache/<kind>/<sha>  verified copies of stored artifacts (models, task_vectors, applied)
    HOME/tmp/                work directories of running commands (gc takes a dead one's)
    HOME/checkpoints/        training checkpoints (a killed training resumes from them)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from registry.store.errors import NotAHome

MARKER = "memo-home.json"
HOME_FORMAT = 1
CacheKind = Literal["models", "task_vectors", "applied"]


def blobs_dir(home: Path) -> Path:
    return home / "blobs"


def cache_dir(home: Path, kind: CacheKind) -> Path:
    return home / "cache" / kind


def work_root(home: Path) -> Path:
    """Where commands build their work (created on first use)."""
    path = home / "tmp"
    path.mkdir(exist_ok=True)
    return path


def checkpoints_dir(home: Path) -> Path:
    return home / "checkpoints"


def write_json_atomic(path: Path, data: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_home(path: Path) -> bool:
    return (path / MARKER).is_file()


def create_home(path: Path, *, blobs: str | None = None) -> bool:
    """Create (or keep) a home, recording where its blobs live (``blobs``: None for ``HOME/blobs``);
    returns False when it already was one."""
    if path.exists() and not path.is_dir():
        raise NotAHome(f"{path} exists and is not a directory; choose another --home")
    if is_home(path):
        recorded = recorded_blobs(path)
        if blobs is not None and blobs != recorded:
            raise NotAHome(
                f"{path} keeps its blobs at {recorded or blobs_dir(path)}; a home's blob store cannot change "
                "(its rows point into it): use another --home for another store"
            )
        return False
    path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path / MARKER, {"memo_home_format": HOME_FORMAT, **({"blobs": blobs} if blobs else {})})
    return True


def recorded_blobs(path: Path) -> str | None:
    """Where ``memo init --blobs`` said this home's blobs live (None: ``HOME/blobs``, or not a home)."""
    try:
        value = json.loads((path / MARKER).read_text()).get("blobs")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def check_home(path: Path) -> None:
    if not is_home(path):
        raise NotAHome(
            f"{path} is not a memo home (no {MARKER}); run `memo init --home {path}` "
            "or point --home / MEMO_HOME at an existing home"
        )
    try:
        fmt = json.loads((path / MARKER).read_text()).get("memo_home_format")
    except (OSError, ValueError) as e:
        raise NotAHome(f"{path / MARKER} is unreadable ({e}); restore it or re-run `memo init`") from e
    if fmt != HOME_FORMAT:
        raise NotAHome(f"{path} has home format {fmt!r}, this memo reads {HOME_FORMAT}; upgrade memo")
