"""Tensors in, tensors out: the fused kernels of :mod:`merging.native` on contiguous CPU chunks.

Each function takes the chunk of one input (fine-tuned weights, or stored
deltas with ``deltas=True``) and of the base, already in the compute dtype,
and computes the deltas itself: nothing of size n is allocated but the output.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging.kernels import KernelConfig, rounded
from merging.native.runtime import Params, installed, map_threads, parts, run_parts
from merging.sparsify import Cut


def _suffix(dtype: torch.dtype) -> str:
    return "bf16" if dtype == torch.bfloat16 else "f32"


def _ptr(t: torch.Tensor, offset: int = 0) -> int:
    return t.data_ptr() + offset * t.element_size()


@dataclass(frozen=True)
class PartCounts:
    """A radix pass's histograms per part of the chunk: where the ties at a threshold lie."""

    ranges: list[tuple[int, int]]
    hists: torch.Tensor  # (parts, 2 * bins) int32: two sub-histograms per part

    def of(self, digit: int) -> list[int]:
        bins = self.hists.shape[1] // 2
        return (self.hists[:, digit] + self.hists[:, bins + digit]).tolist()


def histogram(
    x: torch.Tensor, base: torch.Tensor, *, deltas: bool, pass_index: int, prefix: int
) -> tuple[torch.Tensor, PartCounts]:
    """The radix pass's histogram of ``|x - base|``'s keys (bf16: 2**15 bins; fp32: 2**15 then 2**16),
    and the same counts per part."""
    lib, threads = installed(), torch.get_num_threads()
    bf16 = x.dtype == torch.bfloat16
    bins = 1 << (15 if bf16 or pass_index == 0 else 16)
    ranges = parts(x.numel(), threads)
    hists = torch.empty(len(ranges), 2 * bins, dtype=torch.int32)  # zeroed in C

    def count(part: int) -> None:
        start, stop = ranges[part]
        row = hists[part]
        args = (_ptr(x, start), _ptr(base, start), stop - start, int(deltas))
        if bf16:
            lib.memo_hist_bf16(*args, row.data_ptr())
        else:
            lib.memo_hist_f32(*args, pass_index, prefix, row.data_ptr())

    map_threads(count, list(range(len(ranges))), threads)
    total = torch.empty(bins, dtype=torch.int64)
    lib.memo_hist_sum(hists.data_ptr(), 2 * len(ranges), bins, total.data_ptr())
    return total, PartCounts(ranges, hists)


def find_tie(
    x: torch.Tensor, base: torch.Tensor, *, deltas: bool, key: int, m: int, counts: PartCounts | None = None
) -> int:
    """Chunk position of the m-th (1-based) element whose key is ``key``.

    Only the part holding the m-th is searched: the parts' counts come from the last radix pass
    (``counts``, whose digit of ``key`` is its low 15 or 16 bits) or are taken in parallel here.
    """
    lib, threads = installed(), torch.get_num_threads()
    fn = lib.memo_count_key_bf16 if x.dtype == torch.bfloat16 else lib.memo_count_key_f32
    if counts is not None:
        ranges, here = counts.ranges, counts.of(key & (counts.hists.shape[1] // 2 - 1))
    else:
        ranges = parts(x.numel(), threads, per_thread=8)
        here = run_parts(lambda a, b: fn(_ptr(x, a), _ptr(base, a), b - a, int(deltas), key, 0), ranges, threads)
    seen = 0
    for (start, stop), n in zip(ranges, here):
        if seen + n >= m:
            found = fn(_ptr(x, start), _ptr(base, start), stop - start, int(deltas), key, m - seen)
            return start + (-1 - int(found))
        seen += n
    raise RuntimeError(f"internal: tie {m} of key {key} not in the chunk ({seen} found)")


def merge(
    base: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    cuts: Sequence[Sequence[Cut]],
    scales: Sequence[float | None],
    weights: Sequence[float],
    cfg: KernelConfig,
    *,
    lib: ctypes.CDLL | None = None,
) -> tuple[torch.Tensor, int]:
    """The merged chunk in the compute dtype (:func:`merging.kernels.merge_chunk_eager`'s bits, in one pass),
    and how many of its elements are not finite. ``lib``: a library not yet in use (its self-test)."""
    lib, threads, dt = lib or installed(), torch.get_num_threads(), cfg.compute_dtype
    out = torch.empty(base.numel(), dtype=dt)
    ranges = parts(base.numel(), threads)
    template = _params(cuts, scales, weights, cfg)
    fn = getattr(lib, f"memo_merge_{_suffix(dt)}")

    def run(start: int, stop: int) -> int:
        params = Params.from_buffer_copy(template)
        params.pos0 = start
        ptrs = (ctypes.c_void_p * len(inputs))(*[_ptr(x, start) for x in inputs])
        return fn(_ptr(base, start), ptrs, stop - start, ctypes.byref(params), _ptr(out, start))

    return out, sum(run_parts(run, ranges, threads))


def _params(cuts, scales, weights, cfg: KernelConfig) -> Params:
    dt = cfg.compute_dtype
    p = Params()
    p.k, p.consensus, p.normalize = cfg.count, int(cfg.consensus), int(cfg.normalize)
    p.deltas, p.use_lam, p.lam = int(cfg.inputs_are_deltas), int(cfg.lam != 1), cfg.lam
    ws = [rounded(w, dt) for w in weights]
    total = float(torch.tensor(ws, dtype=dt).sum())
    p.ta_divisor = 1.0 if abs(total) < 1e-8 else total
    for i, (c, scale, w) in enumerate(zip(cuts, scales, ws)):
        if len(c) > 1:
            raise ValueError("the fused kernel trims by one top-k set per input")
        p.thresholds[i] = c[0].value if c else -1.0
        p.tie_ends[i] = c[0].tie_end if c else 0
        p.scales[i] = math.nan if scale is None else scale
        p.weights[i] = w
    return p
