"""The local cache of materialised artifacts (``HOME/cache/<kind>/<sha>``), held under a size limit.

Blobs live in the blob store (perhaps a bucket); a command that needs a model
as a directory materialises it into the cache, and the cache keeps it for
the next command. Past the limit (``--cache-size``, ``MEMO_CACHE_SIZE``;
default 5 GB) the least recently used entries are removed, never one that a
running command uses: a command holds a shared ``flock`` on every entry it
uses until it ends, and an entry is removed only under an exclusive lock that
nobody else holds. An entry too big for the limit alone is kept while used
and goes at the next trim.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from osutil.locks import try_flock
from registry.store.cache_records import remove_record
from registry.store.errors import Conflict, InvalidInput
from registry.store.workdirs import freed_bytes

CACHE_SIZE_ENV = "MEMO_CACHE_SIZE"
DEFAULT_CACHE_SIZE = 5 * 10**9
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


class CacheTooSmall(Conflict):
    code = "cache_too_small"


def parse_size(text: str) -> int:
    """``5G``, ``500M``, ``2GiB``, ``1000000`` -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?)B?\s*", text.upper())
    if not match or match[2] not in _UNITS:
        raise InvalidInput(f"{text!r} is not a size; use e.g. 5G, 500M or 2GiB")
    return int(float(match[1]) * _UNITS[match[2]])


def cache_limit() -> int:
    text = os.environ.get(CACHE_SIZE_ENV)
    return parse_size(text) if text else DEFAULT_CACHE_SIZE


@dataclass
class CacheUse:
    """The entries this process uses, each held under a shared lock until :meth:`release`."""

    limit: int = field(default_factory=cache_limit)
    verified: set[Path] = field(default_factory=set)  # entries rehashed by this process (while held)
    _held: dict[Path, int] = field(default_factory=dict)

    def hold(self, entry: Path) -> bool:
        """Keep ``entry`` from eviction while this process lives, and mark it used now (its time
        orders eviction). False when it was evicted before it could be held: build it again."""
        if entry in self._held:
            os.utime(entry)
            return True
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            live = os.fstat(fd).st_ino == os.stat(entry).st_ino  # not renamed away by an evictor first
        except FileNotFoundError:
            live = False
        if not live:
            os.close(fd)
            return False
        self._held[entry] = fd
        os.utime(entry)
        return True

    def forget(self, entry: Path) -> None:
        """Let go of one entry (it is about to be set aside)."""
        fd = self._held.pop(entry, None)
        if fd is not None:
            os.close(fd)
        self.verified.discard(entry)

    def release(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        self.verified.clear()

    def trim(self, root: Path) -> list[Path]:
        """Remove least recently used entries under ``root`` (the cache) until it fits the limit."""
        entries = _entries(root)
        total = sum(size for _, _, size in entries)
        removed = []
        for entry, _, size in sorted(entries, key=lambda e: e[1]):
            if total <= self.limit:
                break
            if entry not in self._held and _remove_unless_used(entry):
                total -= size
                removed.append(entry)
        return removed


def _entries(root: Path) -> list[tuple[Path, float, int]]:
    """(entry, last used, bytes) of every complete entry of every kind."""
    found = []
    for kind in sorted(root.iterdir()) if root.is_dir() else []:
        for entry in sorted(kind.iterdir()) if kind.is_dir() else []:
            if entry.is_dir() and not entry.name.startswith("."):
                found.append((entry, entry.stat().st_mtime, freed_bytes(entry)))
    return found


def _remove_unless_used(entry: Path) -> bool:
    """Rename the entry away under an exclusive lock (readers that opened its files keep them), then delete."""
    try:
        fd = os.open(entry, os.O_RDONLY)
    except FileNotFoundError:
        return False
    if not try_flock(fd, exclusive=True):
        os.close(fd)
        return False  # a running command uses it
    try:
        aside = entry.with_name(f".{entry.name}.evicted-{os.getpid()}")
        os.replace(entry, aside)
    except OSError:
        return False
    finally:
        os.close(fd)
    shutil.rmtree(aside, ignore_errors=True)
    remove_record(entry)
    return True
