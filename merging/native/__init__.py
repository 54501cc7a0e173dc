"""The fused CPU kernels of ``fused.c``: compiled on first use, cached, called through ctypes.

Why C and not torch ops: the eager kernel makes ~10 passes over memory per
input (subtract, abs, compare, sign, multiply, sums in fp32, ...), each one
a parallel region; this makes one pass to histogram each input's magnitudes
and one to merge, with no temporaries (so chunks can be larger for the same
memory). Why not ``torch.compile``: it costs seconds per process before its
first call even with a warm cache, and the result is the same loop.

The library is built with the system C compiler (``cc``, at most a second),
into ``$XDG_CACHE_HOME/memo/native`` (else ``~/.cache/memo/native``) under a
name that hashes the source, the compiler and the CPU's flags, with the
sha256 of the built file beside it. A process that finds it there checks
that sha256 before loading it (a truncated or modified file is set aside and
built again, never loaded), then runs a self-test against the torch kernel on
a small input (:mod:`merging.native.selftest`). A compiler that fails or
hangs (a time-out) is reported once, with its message, and not tried again
for a day. Without a compiler, or with ``MEMO_NATIVE=0``, :func:`library` is
None and the merge runs the eager torch kernel (same bits, slower); the merge
says which kernel ran (:func:`status`).

Threads: a chunk is cut into one part per torch thread, each part run by a
Python thread (ctypes releases the GIL), so the cores in use follow
``torch.get_num_threads()`` and nothing spins while waiting.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from merging.native import runtime
from merging.native.build import BuildFailed, build_dir, built_library, set_aside
from merging.native.runtime import MAX_K, map_threads, parts, run_parts

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_K", "Status", "available", "library", "map_threads", "parts", "run_parts", "status"]
log = logging.getLogger(__name__)
DTYPE_NAMES = ("bfloat16", "float32")  # the compute dtypes the kernels take


@dataclass(frozen=True)
class Status:
    """Whether the fused kernels are in use here, and why not."""

    available: bool
    reason: str = ""  # why not (empty when available)


@functools.cache
def status() -> Status:
    """Build (or find), check and self-test the library once per process; a failure is logged once."""
    if os.environ.get("MEMO_NATIVE", "1") == "0":
        return Status(False, "MEMO_NATIVE=0")
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return Status(False, f"no fused kernels for {platform.machine()}")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return Status(False, "no C compiler (cc) on PATH")
    from merging.native.selftest import agrees_with_torch  # torch: loaded only past this point

    for attempt in range(2):
        try:
            lib = _load(built_library(compiler))
        except BuildFailed as e:
            return _unavailable(f"the fused kernels could not be built: {e}")
        except OSError as e:
            return _unavailable(f"the fused kernels could not be loaded: {e}")
        if agrees_with_torch(lib):
            runtime.install(lib)
            return Status(True)
        if attempt == 0:
            set_aside(build_dir(compiler))  # built again once, in case it was tampered with
    return _unavailable("the fused kernels disagree with the torch kernel on a self-test")


def _unavailable(reason: str) -> Status:
    log.warning("%s; merges run the torch kernel (the same bits, slower)", reason)
    return Status(False, reason)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    runtime.declare(lib)
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernels, checked and self-tested, or None where they cannot be used (the eager kernel runs)."""
    return runtime.installed() if status().available else None


def available(dtype: torch.dtype, device: torch.device, k: int) -> bool:
    """Whether the fused kernels can run this merge (else the eager kernel does)."""
    return (
        device.type == "cpu"
        and str(dtype).removeprefix("torch.") in DTYPE_NAMES
        and 0 < k <= MAX_K
        and status().available
    )
