"""What calling the fused kernels takes, apart from loading them: the parameter struct, the
argument types, cutting a chunk into parts, and running the parts side by side on Python threads
(ctypes releases the GIL). The library in use is installed here by :func:`merging.native.status`
once it has passed its checks."""

from __future__ import annotations

import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor

MAX_K = 64
_PARALLEL_MIN = 1 << 16  # smaller ranges run in the calling thread
_INSTALLED: list[ctypes.CDLL] = []  # the library that passed its checks (at most one per process)


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


def install(lib: ctypes.CDLL) -> None:
    _INSTALLED[:] = [lib]


def installed() -> ctypes.CDLL:
    """The library in use; only called where :func:`merging.native.available` said there is one."""
    if not _INSTALLED:
        raise RuntimeError("internal: the fused kernels were called before they were checked and loaded")
    return _INSTALLED[0]


def uninstall() -> None:
    _INSTALLED.clear()


def declare(lib: ctypes.CDLL) -> None:
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
