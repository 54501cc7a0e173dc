"""A per-user runtime directory that no other local user can plant anything in, and lock files
in it that are opened without following links or blocking.

The directory is ``$XDG_RUNTIME_DIR/memo`` where the session has one (systemd makes it per user,
0700), else ``memo-<uid>`` in the system's temp directory. A predictable path in a shared
``/tmp`` can be created first by someone else, with links or FIFOs inside; so every directory on
the way is created 0700 and then checked: a real directory (not a link), owned by this user,
with no access for anyone else. A directory that fails the check is refused
(:class:`UnsafeDirectory`), never repaired or used.

Inside it, only regular files are ever opened, with ``O_NOFOLLOW | O_NONBLOCK``: a symlink is
not followed (so no file elsewhere is truncated through it), and a FIFO never blocks the opener.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from osutil.locks import try_flock

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeDirectory(OSError):
    """A runtime directory that another user could write to, or that is not what it seems."""


def runtime_root() -> Path:
    """Where this user's private memo runtime directory lives (not created here)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_absolute() and _is_private(Path(xdg)):
        return Path(xdg) / "memo"
    return Path(tempfile.gettempdir()) / f"memo-{os.getuid()}"


def private_dir(*parts: str, root: Path | None = None) -> Path:
    """``root/parts...`` (by default :func:`runtime_root`), each level created 0700 if missing and
    checked to be this user's alone; :class:`UnsafeDirectory` when one is not."""
    path = root if root is not None else runtime_root()
    for part in (None, *parts):
        if part is not None:
            path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        check_private(path)
    return path


def check_private(path: Path) -> None:
    """Refuse ``path`` unless it is a directory (not a link) owned by this user with mode 0700 or tighter."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory (a link or another file is in its place)")
    if st.st_uid != os.getuid():
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & 0o077:
        raise UnsafeDirectory(f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); expected 700")


def _is_private(path: Path) -> bool:
    try:
        check_private(path)
    except OSError:
        return False
    return True


def open_regular(path: Path, flags: int, mode: int = 0o600) -> int | None:
    """A descriptor for ``path`` only if it is a regular file: links are not followed and a FIFO
    does not block; None for anything else (or nothing there)."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError:  # ELOOP for a link, ENXIO for a FIFO without a reader, ENOENT, EACCES...
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def lock_file(path: Path) -> int:
    """Create ``path`` as a fresh regular file and hold an exclusive ``flock`` on it for the
    process's life (the kernel drops it when the process dies); returns the descriptor.
    Whatever was at ``path`` before (a dead process's file, a link, a FIFO) is replaced."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def lock_state(path: Path) -> bool | None:
    """Whether a live process holds ``path``'s ``flock``: True, False (a dead holder's file), or
    None when ``path`` is not a regular file (ignored: nothing memo made)."""
    fd = open_regular(path, os.O_RDONLY)
    if fd is None:
        return None
    try:
        return not try_flock(fd, exclusive=False)
    finally:
        os.close(fd)
