"""The fused CPU kernels of ``fused.c``: compiled on first use, cached, called through ctypes.

Why C and not torch ops: the eager kernel makes ~10 passes over memory per
input (subtract, abs, compare, sign, multiply, sums in fp32, ...), each one
a parallel region; this makes one pass to histogram each input's magnitudes
and one to merge, with no temporaries (so chunks can be larger for the same
memory). Why not ``torch.compile``: it costs seconds per process before its
first call even with a warm cache, and the result is the same loop.

The library is built with the system C compiler (``cc``, at most a second),
into ``$XDG_CACHE_HOME/memo/native`` (else ``~/.cache/memo/native``) under a
name that hashes the source, the compiler and the CPU's flags; a process
that finds it there only loads it. Without a compiler, or with
``MEMO_NATIVE=0``, :func:`library` is None and the merge runs the eager
torch kernel (same bits, slower).

Threads: a chunk is cut into one part per torch thread, each part run by a
Python thread (ctypes releases the GIL), so the cores in use follow
``torch.get_num_threads()`` and nothing spins while waiting.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOURCE = Path(__file__).with_name("fused.c")
HEADERS = (Path(__file__).with_name("fused_merge.h"),)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
MAX_K = 64
_PARALLEL_MIN = 1 << 16  # smaller ranges run in the calling thread


class Params(ctypes.Structure):
    """``memo_params`` of fused.c."""

    _fields_ = [
        ("k", ctypes.c_int32),
        ("consensus", ctypes.c_int32),
        ("normalize", ctypes.c_int32),
        ("deltas", ctypes.c_int32),
        ("use_lam", ctypes.c_int32),
        ("lam", ctypes.c_float),
        ("ta_divisor", ctypes.c_float),
        ("pos0", ctypes.c_int64),
        ("thresholds", ctypes.c_float * MAX_K),
        ("tie_ends", ctypes.c_int64 * MAX_K),
        ("scales", ctypes.c_float * MAX_K),
        ("weights", ctypes.c_float * MAX_K),
    ]


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "memo" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        "\0".join(
            [*(f.read_text() for f in (SOURCE, *HEADERS)), " ".join(FLAGS), version, platform.machine(), _cpu_flags()]
        ).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"fused-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(built, target)  # atomic: a process racing us loads one whole library or the other
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be built (the eager kernel runs instead)."""
    if os.environ.get("MEMO_NATIVE", "1") == "0" or platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError):
        return None
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, u32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_uint32
    lib.memo_hist_bf16.argtypes = [p, p, i64, i32, p]
    lib.memo_hist_f32.argtypes = [p, p, i64, i32, i32, u32, p]
    lib.memo_hist_sum.argtypes = [p, i64, i64, p]
    lib.memo_hist_sum.restype = None
    for name in ("memo_count_key_bf16", "memo_count_key_f32"):
        getattr(lib, name).argtypes = [p, p, i64, i32, u32, i64]
        getattr(lib, name).restype = i64
    for name in ("memo_merge_bf16", "memo_merge_f32"):
        getattr(lib, name).argtypes = [p, p, i64, ctypes.POINTER(Params), p]
        getattr(lib, name).restype = i64
    for fn in (lib.memo_hist_bf16, lib.memo_hist_f32):
        fn.restype = None


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="memo-fused")


_PART_MAX = 1 << 30  # a part's counts fit the kernels' 32-bit histograms


def parts(n: int, threads: int, per_thread: int = 1) -> list[tuple[int, int]]:
    """[start, stop) of the parts of n elements: ``per_thread`` per thread (one part for small n)."""
    count = 1 if n < _PARALLEL_MIN else max(1, threads) * per_thread
    count = max(count, -(-n // _PART_MAX))
    step = -(-n // count) if n else 0
    return [(s, min(s + step, n)) for s in range(0, n, step)] if n else [(0, 0)]


def map_threads(fn, items: list, threads: int) -> list:
    """``[fn(item) for item in items]``, side by side on ``threads`` threads (in order)."""
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool(threads).map(fn, items))


def run_parts(fn, ranges: list[tuple[int, int]], threads: int) -> list:
    """``fn(start, stop)`` for every range, side by side."""
    return map_threads(lambda r: fn(*r), ranges, threads)
