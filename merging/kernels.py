"""The merge kernel: one chunk of one tensor, K inputs, pure tensor math.

One function serves TIES and task arithmetic (Ilharco et al. 2023,
arXiv 2212.04089; Yadav et al. 2023, arXiv 2306.01708); it runs eagerly
or compiled by ``torch.compile`` into one fused pass (same bits either way,
see ``tests/test_kernels.py``). No I/O, no globals, inputs never mutated.

It reproduces mergekit 0.1.5's ``GeneralizedTaskArithmeticMerge.merge_group``
operation for operation, in the compute dtype ``dt``, because bit-identical
output needs the same roundings:

- ``d = dt(x) - dt(base)`` (or a stored delta cast to ``dt``);
- trim: ``d * keep`` with ``keep`` cast to ``dt`` (mergekit multiplies by a
  0/1 mask, so trimmed negatives become ``-0.0``: kept for identical bits);
- weight *before* the vote: ``wd = d * dt(w)`` (mergekit issue #474);
- vote: ``S = dt(fp32 sum of wd in input order)``, majority +1 where ``S >= 0``;
  ``sign(wd) == majority`` (zeros never agree);
- disjoint mean: ``dt(sum of agreeing wd) / dt(sum of agreeing w)``, a zero
  divisor becomes 1, divided only when ``normalize``;
- ``lambda`` multiplies after the division, only when it is not 1;
- ``out = dt(base + mixed)``, then the output dtype.

Task arithmetic is the same without the vote: ``mixed = sum(wd)``, divided by
``sum(w)`` (|sum| < 1e-8 -> 1) only when ``normalize``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from merging.select import nonfinite_key

_KEY_VIEW = {
    torch.bfloat16: (torch.int16, 0x7FFF),
    torch.float16: (torch.int16, 0x7FFF),
    torch.float32: (torch.int32, 0x7FFFFFFF),
    torch.float64: (torch.int64, 0x7FFFFFFFFFFFFFFF),
}


@dataclass(frozen=True)
class KernelConfig:
    """What the kernel is specialised on (one compiled variant each)."""

    count: int  # K, the number of inputs
    compute_dtype: torch.dtype
    out_dtype: torch.dtype
    consensus: bool  # TIES sign election; False = task arithmetic
    normalize: bool
    lam: float  # applied only when != 1
    inputs_are_deltas: bool  # stored task vectors rather than fine-tuned weights


def _sum_fp32(terms: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``torch.stack(terms).sum(0)`` as eager torch computes it: fp32 accumulation in order.

    The accumulator starts at +0.0, as torch's reduction does, so a sum of
    only ``-0.0`` terms is ``+0.0`` (mergekit's output keeps that sign).
    """
    acc = terms[0].to(torch.float32) + 0.0
    for t in terms[1:]:
        acc = acc + t.to(torch.float32)
    return acc.to(dtype)


def merge_chunk(
    base: torch.Tensor,  # (n,) compute dtype
    inputs: list[torch.Tensor],  # K x (n,) fine-tuned weights or deltas, any float dtype
    thresholds: torch.Tensor,  # (K,) int64 magnitude-key thresholds (merging.select)
    cuts: torch.Tensor,  # (K,) int64: ties at the threshold are kept up to this flat index
    start: torch.Tensor,  # () int64: flat index of this chunk's first element
    weights: torch.Tensor,  # (K,) compute dtype
    cfg: KernelConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge one chunk; returns (merged chunk in ``out_dtype``, count of non-finite deltas)."""
    dt = cfg.compute_dtype
    view, mask = _KEY_VIEW[dt]
    index = start + torch.arange(base.shape[0], device=base.device)
    bad = torch.zeros((), dtype=torch.int64, device=base.device)
    weighted = []
    for i, x in enumerate(inputs):
        d = x.to(dt) if cfg.inputs_are_deltas else x.to(dt) - base
        key = d.view(view) & mask
        bad = bad + (key >= nonfinite_key(dt)).sum()
        keep = (key > thresholds[i]) | ((key == thresholds[i]) & (index <= cuts[i]))
        weighted.append((d * keep.to(dt)) * weights[i])
    if cfg.consensus:
        total = _sum_fp32(weighted, dt)
        majority = (total >= 0).to(dt) * 2 - 1
        agree = [wd.sign() == majority for wd in weighted]
        mixed = _sum_fp32([wd * a for wd, a in zip(weighted, agree)], dt)
        divisor = _sum_fp32([weights[i] * a for i, a in enumerate(agree)], dt)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed = _sum_fp32(weighted, dt)
        divisor = _sum_fp32([weights[i] for i in range(cfg.count)], dt)
        divisor = torch.where(divisor.abs() < 1e-8, torch.ones_like(divisor), divisor)
    if cfg.normalize:
        mixed = mixed / divisor
    if cfg.lam != 1:
        mixed = mixed * cfg.lam
    return (base + mixed).to(cfg.out_dtype), bad


@functools.lru_cache(maxsize=64)
def compiled_kernel(cfg: KernelConfig) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``merge_chunk`` fused by inductor for one configuration (cached per process).

    ``emulate_precision_casts`` keeps every bf16/fp16 rounding that eager
    torch (and so mergekit) performs; without it inductor would keep fused
    intermediates in fp32 and the bits would differ.
    """
    def kernel(base, inputs, thresholds, cuts, start, weights):
        return merge_chunk(base, inputs, thresholds, cuts, start, weights, cfg)

    return torch.compile(
        kernel, dynamic=True, fullgraph=True, options={"emulate_precision_casts": True}
    )


def eager_kernel(cfg: KernelConfig) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return functools.partial(_eager, cfg=cfg)


def _eager(base, inputs, thresholds, cuts, start, weights, *, cfg):
    return merge_chunk(base, inputs, thresholds, cuts, start, weights, cfg)
