"""Merging one tensor: the threshold passes, then the fused kernel pass, chunk by chunk.

A tensor whose K inputs fit the memory budget is *resident*: each input is
read once, its magnitude keys are kept for every radix pass and the tie cut,
and the kernel runs on the whole tensor. A larger tensor is *streamed*: each
radix pass re-reads it chunk by chunk (one pass for 16-bit deltas, two for
fp32), keeping only histograms, then the kernel pass reads it once more, so
peak memory is a few chunks whatever the tensor's size.

Ties at the threshold go to the lowest flat index (``tie_break="index"``),
as mergekit on CUDA; ``"torch-cpu"`` makes mergekit's own CPU ``argsort`` call
on the whole tensor instead, to reproduce a CPU mergekit run bit for bit
(slow by design: it sorts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from merging.errors import MergeError
from merging.kernels import KernelConfig, compiled_kernel, merge_chunk_eager
from merging.plan import TensorPlan
from merging.reader import TensorReader
from merging.select import ALL, RadixSelect, Threshold, keep_count, key_value, magnitude_keys, none_kept

COMPILE_MIN_TENSOR = 1 << 16  # tiny tensors always run eagerly


@dataclass(frozen=True)
class TensorJob:
    """Everything that is the same for every tensor of one merge."""

    reader: TensorReader
    device: torch.device
    compute_dtype: torch.dtype
    out_dtype: torch.dtype
    densities: tuple[float, ...]
    weights: tuple[float, ...]
    trims: bool
    tie_break: str
    chunk_elements: int  # tensors up to this size are resident (one piece); larger ones stream
    compiled: bool  # torch.compile'd kernel (large merges) or the eager one
    config: KernelConfig


# --- reading ------------------------------------------------------------------------------


def _read(job: TensorJob, plan: TensorPlan, i: int | None, start: int, stop: int) -> torch.Tensor:
    """Base (i=None) or input i, elements [start, stop), on the device; zeros for a missing delta."""
    info = plan.base if i is None else plan.inputs[i]
    if info is None:
        return torch.zeros(stop - start, dtype=job.compute_dtype, device=job.device)
    return job.reader.read(info, start, stop).to(job.device, non_blocking=True)


def _base(job: TensorJob, plan: TensorPlan, start: int, stop: int) -> torch.Tensor:
    return _read(job, plan, None, start, stop).to(job.compute_dtype)


def _keys(job: TensorJob, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    d = x.to(job.compute_dtype) if job.config.inputs_are_deltas else x.to(job.compute_dtype) - base
    return magnitude_keys(d)


def _ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)] or [(0, 0)]


# --- thresholds ---------------------------------------------------------------------------


def _selections(job: TensorJob, plan: TensorPlan) -> tuple[list[Threshold | None], dict[int, RadixSelect]]:
    """Trivial thresholds now; a radix select for each input that needs one."""
    fixed: list[Threshold | None] = []
    selects: dict[int, RadixSelect] = {}
    for i, density in enumerate(job.densities):
        k = keep_count(density if job.trims else 1.0, plan.numel)
        if plan.inputs[i] is None or k >= plan.numel:
            fixed.append(ALL)
        elif k == 0:
            fixed.append(none_kept(job.compute_dtype))
        else:
            fixed.append(None)
            selects[i] = RadixSelect(job.compute_dtype, k, job.device)
    return fixed, selects


def _thresholds(fixed: list[Threshold | None], selects: dict[int, RadixSelect]) -> list[Threshold]:
    """Each input's threshold: fixed in advance, or what its finished selection found."""
    out = []
    for i, f in enumerate(fixed):
        found = f if f is not None else selects[i].result
        if found is None:
            raise MergeError(f"internal: the selection of input {i} did not finish")
        out.append(found)
    return out


def _cut(
    threshold: Threshold, start: int, stop: int, ties_before: int, ties_here: int, keys: Callable[[], torch.Tensor]
) -> int:
    """Last flat index (inclusive) of a tie that chunk [start, stop) keeps; -1 for none.

    ``keys`` (the chunk's magnitude keys) is only called for the one chunk
    where the kept ties run out.
    """
    if threshold.ties_kept <= 0 or ties_before >= threshold.ties_kept:
        return -1
    if ties_before + ties_here <= threshold.ties_kept:
        return stop - 1
    positions = (keys() == threshold.key).nonzero().reshape(-1)
    return start + int(positions[threshold.ties_kept - ties_before - 1])


# --- the two modes ------------------------------------------------------------------------


def merge_tensor(job: TensorJob, plan: TensorPlan) -> Iterator[torch.Tensor]:
    """Yield the merged tensor's output chunks in flat order."""
    fixed, selects = _selections(job, plan)
    if selects and job.tie_break == "torch-cpu":
        yield _merge_mergekit_cpu_ties(job, plan)
        return
    if plan.numel <= job.chunk_elements:
        yield _merge_resident(job, plan, fixed, selects)
    else:
        yield from _merge_streamed(job, plan, fixed, selects)


def _run_kernel(
    job: TensorJob,
    plan: TensorPlan,
    base: torch.Tensor,
    inputs: list[torch.Tensor],
    thresholds: list[Threshold],
    cuts: list[int],
    start: int,
) -> torch.Tensor:
    values = [key_value(t.key, job.compute_dtype) for t in thresholds]
    n = base.numel()
    if job.compiled and n >= COMPILE_MIN_TENSOR:
        out, _ = compiled_kernel(job.config)(
            base,
            inputs,
            torch.tensor(values, dtype=job.compute_dtype, device=job.device),
            torch.tensor(cuts, dtype=torch.int64, device=job.device),
            torch.tensor(start, dtype=torch.int64, device=job.device),
            torch.tensor(job.weights, dtype=job.compute_dtype, device=job.device),
        )
    else:
        tie_ends = [min(max(cut - start + 1, 0), n) for cut in cuts]
        out = merge_chunk_eager(base, inputs, values, tie_ends, list(job.weights), job.config)
    if not all_finite(out):
        _raise_nonfinite(plan, base, inputs)
    return out


def all_finite(t: torch.Tensor) -> bool:
    """One cheap reduction: the largest magnitude is finite (NaN propagates through amax)."""
    return t.numel() == 0 or not t.is_floating_point() or bool(torch.isfinite(t.abs().amax()))


def _merge_resident(job, plan, fixed, selects) -> torch.Tensor:
    n = plan.numel
    base = _base(job, plan, 0, n)
    inputs = [_read(job, plan, i, 0, n) for i in range(len(plan.inputs))]
    keys = {i: _keys(job, base, inputs[i]) for i in selects}
    for i, select in selects.items():
        while not select.done:
            select.add(keys[i])
            select.finish_pass()
    thresholds = _thresholds(fixed, selects)
    cuts = [
        _cut(t, 0, n, 0, t.ties_total, functools.partial(keys.__getitem__, i)) if i in selects else -1
        for i, t in enumerate(thresholds)
    ]
    return _run_kernel(job, plan, base, inputs, thresholds, cuts, 0)


def _merge_streamed(job, plan, fixed, selects) -> Iterator[torch.Tensor]:
    ranges = _ranges(plan.numel, job.chunk_elements)
    ties_per_chunk: dict[int, list[torch.Tensor]] = {i: [] for i in selects}
    while not all(s.done for s in selects.values()):
        active = {i: s for i, s in selects.items() if not s.done}
        for start, stop in ranges:
            base = _base(job, plan, start, stop)
            for i, select in active.items():
                hist = select.add(_keys(job, base, _read(job, plan, i, start, stop)))
                if select.last_pass:
                    ties_per_chunk[i].append(hist)
        for select in active.values():
            select.finish_pass()
    thresholds = _thresholds(fixed, selects)
    # Per chunk, how many keys equal each input's threshold (from the last pass's histograms).
    tie_counts = {i: [int(h[s.last_digit(thresholds[i].key)]) for h in ties_per_chunk[i]] for i, s in selects.items()}
    ties_before = {i: 0 for i in selects}
    for c, (start, stop) in enumerate(ranges):
        base = _base(job, plan, start, stop)
        inputs = [_read(job, plan, i, start, stop) for i in range(len(plan.inputs))]
        cuts = []
        for i, t in enumerate(thresholds):
            if i not in selects:
                cuts.append(-1)
                continue
            here = tie_counts[i][c]
            cuts.append(
                _cut(
                    t,
                    start,
                    stop,
                    ties_before[i],
                    here,
                    functools.partial(_keys, job, base, inputs[i]),
                )
            )
            ties_before[i] += here
        yield _run_kernel(job, plan, base, inputs, thresholds, cuts, start)


def _merge_mergekit_cpu_ties(job: TensorJob, plan: TensorPlan) -> torch.Tensor:
    """Trim exactly as mergekit's ``sparsify.magnitude`` does (its argsort picks the ties)."""
    n = plan.numel
    base = _base(job, plan, 0, n)
    deltas = []
    for i, density in enumerate(job.densities):
        x = _read(job, plan, i, 0, n).to(job.compute_dtype)
        d = x if job.config.inputs_are_deltas else x - base
        k = keep_count(density, n)
        if 0 < k < n:
            w = d.abs()
            w = w.float() if w.device.type == "cpu" else w
            mask = torch.zeros(n, dtype=d.dtype, device=d.device)
            mask[torch.argsort(w, descending=True)[:k]] = 1
            d = d * mask
        elif k == 0:
            d = torch.zeros_like(d)
        deltas.append(d)
    cfg = KernelConfig(
        len(deltas),
        job.compute_dtype,
        job.out_dtype,
        job.config.consensus,
        job.config.normalize,
        job.config.lam,
        inputs_are_deltas=True,
    )
    parity_job = replace(job, config=cfg, compiled=False)
    return _run_kernel(parity_job, plan, base, deltas, [ALL] * len(deltas), [-1] * len(deltas), 0)


def _raise_nonfinite(plan: TensorPlan, base: torch.Tensor, inputs: list[torch.Tensor]):
    if not torch.isfinite(base).all():
        raise MergeError(
            f"tensor {plan.name!r} in {plan.base.file} contains NaN or Inf; repair or re-export the base model"
        )
    for info, x in zip(plan.inputs, inputs):
        if info is not None and x.is_floating_point() and not torch.isfinite(x).all():
            raise MergeError(f"tensor {plan.name!r} in {info.file} contains NaN or Inf; that input cannot be merged")
    raise MergeError(f"tensor {plan.name!r}: the merge overflows the compute dtype; merge with dtype: float32")
