"""Directories written whole or not at all, and the leftovers of writers that were killed.

An output directory ``OUT`` is built in a hidden sibling ``.OUT.partial-XXXX``
and renamed into place when complete. The writer holds an exclusive
``flock`` on that sibling for as long as it lives; the kernel drops the lock
when the process dies, however it dies. So a partial directory nobody holds
a lock on is a dead writer's leftover, and the next writer into the same
place (or ``memo gc``) removes it, while a live writer's is never touched.

The lock is taken before the directory gets its ``.partial-`` name (it is
created as ``.OUT.creating-XXXX``, locked, then renamed), so a sweeper can
never see a live writer's directory unlocked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from osutil.locks import try_flock

PARTIAL = ".partial-"
CREATING = ".creating-"
CREATING_GRACE_SECONDS = 60.0  # a `.creating-` directory lives for microseconds unless its writer died there


@contextmanager
def partial_dir(out: Path) -> Iterator[Path]:
    """A locked, empty sibling of ``out`` to build it in; removed on exit unless renamed away."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, out.name)
    creating = Path(tempfile.mkdtemp(prefix=f".{out.name}{CREATING}", dir=out.parent))
    fd = os.open(creating, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = creating.with_name(creating.name.replace(CREATING, PARTIAL, 1))
        os.replace(creating, tmp)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing there once it was moved into place
    finally:
        shutil.rmtree(creating, ignore_errors=True)
        os.close(fd)


def move_into_place(built: Path, out: Path) -> None:
    """Rename a finished directory onto ``out`` (absent or an empty directory) and make the rename
    durable: the parent directory is fsynced, so after a power cut ``out`` is whole or absent."""
    os.replace(built, out)
    fsync_dir(out.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_held(path: Path) -> bool | None:
    """Whether a live process holds ``path``'s ``flock`` (the kernel drops it when the holder dies);
    None when the path cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return not try_flock(fd, exclusive=True)
    finally:
        os.close(fd)


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is a partial directory whose writer is gone."""
    if CREATING in path.name:
        return time.time() - path.lstat().st_mtime >= CREATING_GRACE_SECONDS
    if PARTIAL not in path.name or not path.is_dir() or path.is_symlink():
        return False
    return is_held(path) is False


def leftovers(directory: Path, name: str | None = None) -> list[Path]:
    """Dead writers' partial directories in ``directory`` (for output ``name``, or any)."""
    prefix = f".{name}" if name is not None else "."
    try:
        candidates = [
            p for p in directory.iterdir() if p.name.startswith(prefix) and (PARTIAL in p.name or CREATING in p.name)
        ]
    except FileNotFoundError:
        return []
    if name is not None:  # `.OUT.partial-x`, not `.OUT2.partial-x`
        candidates = [p for p in candidates if p.name[len(prefix) :].startswith((PARTIAL, CREATING))]
    return sorted(p for p in candidates if is_leftover(p))


def remove_stale(directory: Path, name: str | None = None) -> list[Path]:
    removed = leftovers(directory, name)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
