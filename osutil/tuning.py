"""Process-level settings for long merges and trainings; entry points call them, library imports never do.

glibc returns every large free block to the kernel (``mmap``/``munmap``), so
each new chunk-sized tensor is fresh memory whose pages fault in one by one:
measured here, an eager bf16 subtraction of 28.7M elements takes 20 ms on
fresh memory and 4.8 ms on reused memory, and ``preadv`` reads 1.8 vs 6.2 GB/s.
Keeping large blocks in the heap makes every later chunk reuse warm pages.
Peak memory is unchanged (it is what the merge held at once); freed memory is
simply not handed back until the process ends.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import sys
import time
from pathlib import Path

from osutil.runtime_dir import lock_file, lock_state, private_dir

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1  # blocks up to 1 GiB come from the heap
    return ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1  # and stay there when freed


# --- sharing the cores with other memo processes ----------------------------------------------
#
# Every torch process starts one thread per core, and OpenMP threads spin for a while after each
# parallel region before they sleep. Two such processes on two cores fight: a thread spins on a
# core that the other process's thread needs, and each barrier waits for a thread that is not
# scheduled. Measured on a 2-core CPU, one training step went from 0.18 s alone to 0.6-3.5 s
# beside one other training. So every memo process (a) spins briefly before it sleeps, and
# (b) takes its share of the cores: the cores divided by the memo processes alive on the machine,
# counted through lock files in a private per-user runtime directory (:mod:`osutil.runtime_dir`)
# and recounted at most once a second at safe points (between training steps, between merged
# tensors), so the shares follow processes as they come and go. MEMO_THREADS (or OMP_NUM_THREADS)
# pins the count instead.

_SPINCOUNT = "1000"  # OpenMP's default spins ~300k times; 1k keeps an idle machine as fast
_RECOUNT_SECONDS = 1.0


class _CoreShare:
    """This process's lock file among the memo processes' in ``directory`` (private to the user:
    :mod:`osutil.runtime_dir`), and the count of those still alive."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cores = _cores()
        self.path = directory / str(os.getpid())
        self._fd = lock_file(self.path)  # held (and locked) for the process's life
        atexit.register(self.path.unlink, missing_ok=True)  # a killed process's file goes at the next count
        self.checked = 0.0  # when live() last ran (monotonic seconds)

    def live(self) -> int:
        """memo processes alive on this machine (this one included); dead ones' files removed,
        anything that is not a regular file ignored."""
        count = 0
        for path in self.directory.iterdir():
            held = True if path == self.path else lock_state(path)
            if held:
                count += 1
            elif held is False:
                path.unlink(missing_ok=True)  # its process is gone
        return count

    def threads(self) -> int:
        return max(1, self.cores // max(1, self.live()))


_sharing = False  # share_cores() was called: rebalance() takes the process's share
_share: _CoreShare | None = None  # registered at the first rebalance (only processes doing torch work count)
_pinned: int | None = None  # MEMO_THREADS / OMP_NUM_THREADS / pin_threads(): a fixed count


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def share_cores() -> None:
    """For entry points, before torch is imported: brief OpenMP spinning, and a fair share of the
    cores among memo processes (or the count MEMO_THREADS / OMP_NUM_THREADS pins)."""
    global _pinned, _sharing
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", _SPINCOUNT)
    pinned = os.environ.get("MEMO_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if pinned and pinned.isdigit():
        _pinned = max(1, int(pinned))
    else:
        _sharing = sys.platform.startswith("linux")


def pin_threads(n: int) -> None:
    """A fixed thread count for this process (no rebalancing)."""
    global _pinned
    _pinned = max(1, n)
    rebalance()


def rebalance(*, force: bool = False) -> int | None:
    """At a safe point: take this process's current share of the cores (cheap: recounts at most
    once a second), or the pinned count. A no-op unless an entry point called :func:`share_cores`
    or :func:`pin_threads`. Returns the thread count set, if any."""
    global _share, _sharing
    if _pinned is not None:
        wanted = _pinned
    elif not _sharing:
        return None
    else:
        if _share is None:
            try:
                _share = _CoreShare(private_dir("cpu-share"))
            except OSError as e:  # no private runtime directory: torch's defaults
                log.warning("not sharing the cores with other memo processes: %s", e)
                _sharing = False
                return None
            force = True
        now = time.monotonic()
        if not force and now - _share.checked < _RECOUNT_SECONDS:
            return None
        _share.checked = now
        wanted = _share.threads()
    import torch  # this module is imported before torch on purpose (registry.launch)

    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted
