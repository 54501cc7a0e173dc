"""Copies of a test home that cost no disk for what the registry never rewrites in place."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def _link_read_only(src: str, dst: str) -> str:
    """Hard-link a read-only file (a blob or a cached model, written once by rename), copy the rest."""
    if not os.stat(src).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        os.link(src, dst)
        return dst
    return shutil.copy2(src, dst)


def clone_home(template: Path, destination: Path) -> Path:
    """A home that behaves as a full copy of ``template``: the database and files are copied, and
    the read-only blobs and cache entries are shared as hard links (a real base is gigabytes)."""
    return Path(shutil.copytree(template, destination, symlinks=True, copy_function=_link_read_only))
