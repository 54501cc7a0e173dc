"""Merging one tensor: the threshold passes, the rescale pass if any, then the kernel pass, chunk by chunk.

A tensor whose K inputs fit the memory budget is *resident*: each input is
read once and the kernel runs on the whole tensor (the torch path keeps its
magnitude keys for every radix pass and the tie cut; the fused kernels
recompute them from the inputs, which costs less than keeping them). A
larger tensor is *streamed*: each radix pass re-reads it chunk by chunk (one
pass for 16-bit deltas, two for fp32), keeping only histograms, then the
kernel pass reads it once more, so peak memory is a few chunks whatever the
tensor's size. Random methods draw their masks per chunk from a seeded,
chunk-independent generator (:mod:`merging.sparsify`); a rescale needs the
L1 sums of the whole tensor first, so a streamed one reads it once more.

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

from merging import merge_op, native
from merging.errors import MergeError
from merging.kernels import KernelConfig
from merging.plan import TensorPlan
from merging.reader import TensorReader
from merging.sparsify import (
    Trim,
    keep_all,
    l1_sums,
    mergekit_cpu_mask,
    random_trim,
    rescale_of,
    threshold_trim,
    uniforms,
)
from merging.trim_plan import FusedKeys, KeySource, TorchKeys, TrimPlan


@dataclass(frozen=True)
class TensorJob:
    """Everything that is the same for every tensor of one merge."""

    reader: TensorReader
    device: torch.device
    compute_dtype: torch.dtype
    out_dtype: torch.dtype
    densities: tuple[float, ...]
    weights: tuple[float, ...]
    sparsification: str  # merging.spec.Method.sparsification
    tie_break: str
    chunk_elements: int  # tensors up to this size are resident (one piece); larger ones stream
    config: KernelConfig
    gammas: tuple[float, ...] = ()  # breadcrumbs
    epsilons: tuple[float, ...] = ()  # della
    rescale: bool = False
    seed: int | None = None  # random methods
    native: bool = False  # the fused C kernels (merging.native) where the operator can run them


# --- reading ------------------------------------------------------------------------------


def _read(job: TensorJob, plan: TensorPlan, i: int | None, start: int, stop: int) -> torch.Tensor:
    """Base (i=None) or input i, elements [start, stop), on the device; zeros for a missing delta.

    The fused kernels take every input in the compute dtype.
    """
    info = plan.base if i is None else plan.inputs[i]
    if info is None:
        return torch.zeros(stop - start, dtype=job.compute_dtype, device=job.device)
    x = job.reader.read(info, start, stop).to(job.device, non_blocking=True)
    return x.to(job.compute_dtype) if job.native else x


def _base(job: TensorJob, plan: TensorPlan, start: int, stop: int) -> torch.Tensor:
    return _read(job, plan, None, start, stop).to(job.compute_dtype)


def _read_chunk(job: TensorJob, plan: TensorPlan, start: int, stop: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The base's and every input's elements [start, stop), read side by side (a read copies from the page
    cache on one core; the other cores need not wait for it)."""
    ids: list[int | None] = [None, *range(len(plan.inputs))]
    tensors = native.map_threads(lambda i: _read(job, plan, i, start, stop), ids, torch.get_num_threads())
    return tensors[0].to(job.compute_dtype), tensors[1:]


# --- trims and rescales ----------------------------------------------------------------------


def _trim_plan(job: TensorJob, plan: TensorPlan) -> TrimPlan:
    present = [info is not None for info in plan.inputs]
    return TrimPlan(job.sparsification, job.densities, job.gammas, present, plan.numel, job.compute_dtype, job.device)


def _row(plan: TensorPlan) -> int:
    """DELLA ranks within rows: the first dimension's (a 1-D tensor is one row)."""
    return plan.numel // plan.shape[0] if len(plan.shape) >= 2 and plan.shape[0] else max(plan.numel, 1)


def _trims(
    job: TensorJob, plan: TensorPlan, trims: TrimPlan, chunk: int, start: int, stop: int, keys: KeySource
) -> list[Trim]:
    """Each input's keep factor for the chunk [start, stop)."""
    if job.sparsification in ("random", "della"):
        if job.seed is None:
            raise MergeError("internal: a random method needs a seed")
        return [
            keep_all
            if info is None or job.densities[i] >= 1
            else random_trim(
                uniforms(job.seed, plan.name, i, start, stop),
                job.densities[i],
                della=(_row(plan), job.epsilons[i]) if job.sparsification == "della" else None,
            )
            for i, info in enumerate(plan.inputs)
        ]
    cuts = trims.cuts(chunk, start, stop, keys)
    return [threshold_trim(c) if c else keep_all for c in cuts]


def _delta(job: TensorJob, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.to(job.compute_dtype) if job.config.inputs_are_deltas else x.to(job.compute_dtype) - base


def _ranges(job: TensorJob, plan: TensorPlan) -> list[tuple[int, int]]:
    """The chunks of a streamed tensor (whole rows for DELLA, whose probabilities come from row ranks)."""
    size = job.chunk_elements
    if job.sparsification == "della":
        row = _row(plan)
        size = max(row, size // row * row)
    n = plan.numel
    return [(s, min(s + size, n)) for s in range(0, n, size)] or [(0, 0)]


# --- the two modes ------------------------------------------------------------------------


def merge_tensor(job: TensorJob, plan: TensorPlan) -> Iterator[torch.Tensor]:
    """Yield the merged tensor's output chunks in flat order."""
    trims = _trim_plan(job, plan)
    if trims.selecting and job.tie_break == "torch-cpu":
        yield _merge_mergekit_cpu_trims(job, plan)
        return
    ranges = _ranges(job, plan)
    if len(ranges) == 1:
        yield _merge_resident(job, plan, trims)
    else:
        yield from _merge_streamed(job, plan, trims, ranges)


def _run_kernel(
    job, plan, base, inputs, trims: TrimPlan, chunk: int, start: int, scales, keys: KeySource
) -> torch.Tensor:
    """One call of the merge operator (:mod:`merging.merge_op`): the random methods' keep factors are drawn
    here, the top-k sets' cuts are passed as they are."""
    n = base.numel()
    if job.sparsification in ("random", "della"):
        chunk_trims = _trims(job, plan, trims, chunk, start, start + n, keys)
        factors = [t(_delta(job, base, x)) for x, t in zip(inputs, chunk_trims)]
        cuts: list = [[] for _ in inputs]
    else:
        factors, cuts = [None] * len(inputs), trims.cuts(chunk, start, start + n, keys)
    out, bad = merge_op.merge(base, inputs, cuts, factors, scales, job.weights, job.config, fused=job.native)
    if bad:
        _raise_nonfinite(plan, base, inputs)
    return out


def _merge_resident(job: TensorJob, plan: TensorPlan, trims: TrimPlan) -> torch.Tensor:
    n = plan.numel
    base, inputs = _read_chunk(job, plan, 0, n)
    keys = _chunk_keys(job, base, inputs.__getitem__)
    while trims.selecting:
        trims.add(keys)
        trims.finish_pass()
    scales: list[float | None] = [None] * len(inputs)
    if job.rescale and job.sparsification in ("random", "della"):
        scales = _float64_scales(job, plan, trims, [(0, n)])  # as streamed: one seed, one output
    elif job.rescale:  # in the compute dtype, as mergekit sums a whole tensor: its bits
        chunk_trims = _trims(job, plan, trims, 0, 0, n, keys)
        sums = [l1_sums(d, t(d)) for d, t in ((_delta(job, base, x), t) for x, t in zip(inputs, chunk_trims))]
        scales = [rescale_of(*s) for s in sums]
    return _run_kernel(job, plan, base, inputs, trims, 0, 0, scales, keys)


def _chunk_keys(job: TensorJob, base: torch.Tensor, inputs: Callable[[int], torch.Tensor]) -> KeySource:
    if job.native:
        return FusedKeys(base, inputs, job.config.inputs_are_deltas)
    return TorchKeys(lambda i: _delta(job, base, inputs(i)))


def _merge_streamed(job, plan, trims: TrimPlan, ranges) -> Iterator[torch.Tensor]:
    while trims.selecting:
        for start, stop in ranges:
            base = _base(job, plan, start, stop)
            trims.add(_chunk_keys(job, base, functools.partial(_read, job, plan, start=start, stop=stop)))
        trims.finish_pass()
    scales = _float64_scales(job, plan, trims, ranges) if job.rescale else [None] * len(plan.inputs)
    for c, (start, stop) in enumerate(ranges):
        base, inputs = _read_chunk(job, plan, start, stop)
        keys = _chunk_keys(job, base, inputs.__getitem__)
        yield _run_kernel(job, plan, base, inputs, trims, c, start, scales, keys)


def _float64_scales(job, plan, trims: TrimPlan, ranges) -> list[float | None]:
    """Each input's rescale factor, from its L1 sums over every chunk accumulated in float64 (so the
    chunking moves a factor by its last bit at most)."""
    before = [0.0] * len(plan.inputs)
    after = [0.0] * len(plan.inputs)
    for c, (start, stop) in enumerate(ranges):
        base, inputs = _read_chunk(job, plan, start, stop)
        keys = _chunk_keys(job, base, inputs.__getitem__)
        for i, (x, trim) in enumerate(zip(inputs, _trims(job, plan, trims, c, start, stop, keys))):
            d = _delta(job, base, x)
            factor = trim(d)
            total = float(d.abs().sum(dtype=torch.float64))
            before[i] += total
            after[i] += total if factor is None else float((d * factor).abs().sum(dtype=torch.float64))
    dt = job.compute_dtype
    return [rescale_of(torch.tensor(b, dtype=dt), torch.tensor(a, dtype=dt)) for b, a in zip(before, after)]


def _merge_mergekit_cpu_trims(job: TensorJob, plan: TensorPlan) -> torch.Tensor:
    """Trim exactly as mergekit's ``sparsify.magnitude`` / ``magnitude_outliers`` do (its sorts pick the ties)."""
    n = plan.numel
    base = _base(job, plan, 0, n)
    deltas = []
    for i, (density, gamma) in enumerate(zip(job.densities, job.gammas)):
        d = _delta(job, base, _read(job, plan, i, 0, n))
        mask = mergekit_cpu_mask(d, job.sparsification, density, gamma)
        if mask is not None:
            masked = d * mask
            scale = rescale_of(*l1_sums(d, mask)) if job.rescale else None
            d = masked if scale is None else masked.mul_(scale)
        deltas.append(d)
    cfg = replace(job.config, inputs_are_deltas=True)
    parity_job = replace(job, config=cfg, sparsification="none", rescale=False, native=False)
    no_keys = TorchKeys(deltas.__getitem__)  # nothing is selected: never asked
    nothing = [None] * len(deltas)
    return _run_kernel(parity_job, plan, base, deltas, _trim_plan(parity_job, plan), 0, 0, nothing, no_keys)


def _raise_nonfinite(plan: TensorPlan, base: torch.Tensor, inputs: list[torch.Tensor]):
    if not torch.isfinite(base).all():
        raise MergeError(
            f"tensor {plan.name!r} in {plan.base.file} contains NaN or Inf; repair or re-export the base model"
        )
    for info, x in zip(plan.inputs, inputs):
        if info is not None and x.is_floating_point() and not torch.isfinite(x).all():
            raise MergeError(f"tensor {plan.name!r} in {info.file} contains NaN or Inf; that input cannot be merged")
    raise MergeError(f"tensor {plan.name!r}: the merge overflows the compute dtype; merge with dtype: float32")
