"""What `memo gc` may remove from the home besides blobs: left-over work and rebuildable caches.

Merges, heals and trainings build their output in a directory under
``HOME/tmp`` and store it as blobs before writing the row; a killed command
leaves that directory behind (a whole model, never reachable from a row).
Cache entries (``HOME/cache/<kind>/<manifest sha>``) are rebuilt from the
blobs on demand, and a killed build leaves a hidden ``.<sha>.partial-*`` sibling.
Like unreferenced blobs, these go only once older than the grace period, so
gc never pulls a directory from under a running command. ``HOME/checkpoints``
is never touched: a killed training resumes from it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from osutil import partial
from registry.store.cache_records import RECORD_SUFFIX

# The blob store holds only content-named files, and a killed training resumes from its checkpoint.
_NEVER_WALKED = {"blobs", "checkpoints"}


@dataclass(frozen=True)
class Leftover:
    path: Path
    bytes: int  # what removing it frees (files linked from the blob store free nothing)


def newest_mtime(path: Path) -> float:
    """The latest modification under ``path``: a directory still being written is young."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, (Path(root) / name).lstat().st_mtime)
                except FileNotFoundError:  # removed while we walk: its owner is alive
                    return float("inf")
    return newest


def freed_bytes(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        st = path.lstat()
        return st.st_size if st.st_nlink == 1 else 0
    return sum(freed_bytes(Path(root) / name) for root, _, files in os.walk(path) for name in files)


def stale_work(home: Path, now: float, grace_seconds: float) -> list[Leftover]:
    """Work directories of interrupted commands, half-built cache entries, and the partial outputs
    of killed merges and exports anywhere under the home (those whose writer is gone, at once)."""
    candidates = sorted((home / "tmp").iterdir()) if (home / "tmp").is_dir() else []
    for kind in _cache_kinds(home):
        candidates += sorted(p for p in kind.iterdir() if p.name.startswith("."))
    old = [p for p in candidates if now - newest_mtime(p) >= grace_seconds]
    dead = [p for p in _dead_partials(home) if not any(p.is_relative_to(o) for o in old)]
    return [Leftover(p, freed_bytes(p)) for p in old + dead]


def _dead_partials(home: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, _ in os.walk(home):
        here = Path(root)
        if here == home:
            dirs[:] = [d for d in dirs if d not in _NEVER_WALKED]
        dead = set(p.name for p in partial.leftovers(here))
        found += [here / d for d in sorted(dead)]
        dirs[:] = [d for d in dirs if d not in dead and not d.startswith(".")]
    return found


def cache_entries(home: Path, now: float, grace_seconds: float) -> list[Leftover]:
    """Complete cache entries built more than the grace period ago (rebuilt when next needed), each
    with its record (:mod:`registry.store.cache_records`), and records whose entry is gone."""
    entries = [p for p in complete_entries(home) if now - p.lstat().st_mtime >= grace_seconds]
    unused = [p for p in entries if not partial.is_held(p)]  # never one a command uses
    records = [p.with_name(p.name + RECORD_SUFFIX) for p in unused]
    orphans = [
        p
        for kind in _cache_kinds(home)
        for p in sorted(kind.glob(f"*{RECORD_SUFFIX}"))
        if not p.with_name(p.name.removesuffix(RECORD_SUFFIX)).is_dir()
    ]
    return [Leftover(p, freed_bytes(p)) for p in unused + [r for r in records if r.is_file()] + orphans]


def complete_entries(home: Path) -> list[Path]:
    """Every complete cache entry ``HOME/cache/<kind>/<sha>`` (a directory)."""
    return [
        p for kind in _cache_kinds(home) for p in sorted(kind.iterdir()) if not p.name.startswith(".") and p.is_dir()
    ]


def remove(leftover: Leftover) -> None:
    if leftover.path.is_dir() and not leftover.path.is_symlink():
        shutil.rmtree(leftover.path, ignore_errors=True)
    else:
        leftover.path.unlink(missing_ok=True)


def _cache_kinds(home: Path) -> list[Path]:
    root = home / "cache"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
