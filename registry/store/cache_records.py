"""What each cache entry was made from, and the checks run on it before it is used.

Beside every entry ``HOME/cache/<kind>/<sha>/`` lies its record ``<sha>.entry.json``: each file's
relative path, size and sha256 (from the artifact's manifest, or hashed as it was built). The
record is written before the entry is moved into place, and holds the same content whichever
process builds the entry, so two builders racing cannot make it wrong.

- The **cheap check** runs at every use: the entry holds exactly the recorded regular files (no
  link, nothing added or missing), each of its recorded size, none modified after the record was
  written (a write to a file moves its mtime past the record's).
- The **full check** adds a rehash of every file, where a command publishes or exports the entry
  or records something made from it (a merge from a base, a task vector from a training), once per
  entry and process.

An entry that fails either is refused and rebuilt from the blob store
(:meth:`registry.store.workspace.Workspace.materialize`); `memo verify` runs the full check on
every entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from registry.store.blobstore import sha256_file
from registry.store.home import write_json_atomic

RECORD_SUFFIX = ".entry.json"
_FORMAT = 1


def record_path(entry: Path) -> Path:
    return entry.with_name(entry.name + RECORD_SUFFIX)


def write_record(entry: Path, files: dict[str, tuple[str, int]]) -> None:
    """Record ``files`` (relative path -> (sha256, size)) as what ``entry`` holds. Written once the
    files are complete and before the entry is moved into place (the record must not predate them)."""
    write_json_atomic(
        record_path(entry),
        {
            "format": _FORMAT,
            "files": {rel: {"sha256": sha, "size": size} for rel, (sha, size) in sorted(files.items())},
        },
    )


def read_record(entry: Path) -> dict[str, tuple[str, int]] | None:
    """The entry's record (None when it has none, or one this memo cannot read)."""
    try:
        data = json.loads(record_path(entry).read_text())
        if data.get("format") != _FORMAT:
            return None
        return {rel: (str(f["sha256"]), int(f["size"])) for rel, f in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def hash_files(directory: Path) -> dict[str, tuple[str, int]]:
    """(sha256, size) of every regular file under ``directory``, for an entry built without a manifest."""
    return {
        p.relative_to(directory).as_posix(): (sha256_file(p), p.stat().st_size)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def entry_problem(entry: Path, *, full: bool) -> str | None:
    """None when the entry is what its record says (``full``: rehashed too), else what is wrong."""
    record = read_record(entry)
    if record is None:
        return "has no record of what it was made from"
    record_mtime = record_path(entry).stat().st_mtime_ns
    found = {}
    for path in entry.rglob("*"):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            continue
        rel = path.relative_to(entry).as_posix()
        if not stat.S_ISREG(st.st_mode):
            return f"holds {rel}, which is not a regular file"
        found[rel] = st
    if set(found) != set(record):
        extra, missing = sorted(set(found) - set(record)), sorted(set(record) - set(found))
        return f"holds {extra[0]}, which it was not made with" if extra else f"lacks {missing[0]}"
    for rel, (_, size) in record.items():
        if found[rel].st_size != size:
            return f"{rel} is {found[rel].st_size} bytes, not {size}"
        if found[rel].st_mtime_ns > record_mtime:
            return f"{rel} was modified after the entry was made"
    if full:
        for rel, (sha, _) in record.items():
            if sha256_file(entry / rel) != sha:
                return f"{rel} fails its sha256"
    return None


def remove_record(entry: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(entry))
