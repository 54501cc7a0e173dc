"""``flock`` without waiting: how memo asks whether a live process holds a file or directory (the
kernel drops a process's locks when it dies, however it dies)."""

from __future__ import annotations

import fcntl


def try_flock(fd: int, *, exclusive: bool) -> bool:
    """Take a lock on ``fd`` if no other process holds a conflicting one; False when one does."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
