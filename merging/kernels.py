"""The merge kernel: one chunk of one tensor, K inputs, pure tensor math.

TIES and task arithmetic (Ilharco et al. 2023, arXiv 2212.04089; Yadav et al.
2023, arXiv 2306.01708) are one kernel with a ``consensus`` switch; the other
task-vector methods are the same kernel after their own trims
(:mod:`merging.sparsify`), and ``linear`` is :func:`linear_chunk`. Every merge
reaches it through one torch operator, ``torch.ops.memo.merge_chunk``
(:mod:`merging.merge_op`), which has two implementations with the same
arithmetic:

- on the CPU, the fused C kernels of :mod:`merging.native` wherever they
  apply (TIES and task arithmetic in bf16 or fp32): one pass over memory;
- everywhere else (CUDA, other dtypes and methods, no C compiler),
  :func:`merge_chunk_eager` here: in-place torch ops on the chunk's own
  temporaries (about 10 memory passes per input), the reference the fused
  kernels are tested against.

Both are bit-identical to each other and to mergekit (``tests/test_kernels.py``,
``tests/test_native.py``).
No I/O, no globals, inputs never mutated.

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

One deliberate difference: mergekit tests ``|sum(w)| < 1e-8`` in the compute
dtype, where 1e-8 underflows to 0 in fp16, so fp16 weights summing to zero
divide 0 by 0 and mergekit writes NaN. memo tests in full precision (divisor 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging.sparsify import Trim


@dataclass(frozen=True)
class KernelConfig:
    """What one merge asks of the kernel, the same for every chunk."""

    count: int  # K, the number of inputs
    compute_dtype: torch.dtype
    out_dtype: torch.dtype
    consensus: bool  # TIES sign election; False = task arithmetic
    normalize: bool
    lam: float  # applied only when != 1
    inputs_are_deltas: bool  # stored task vectors rather than fine-tuned weights
    averages_models: bool = False  # linear: a weighted average of the models, no base in the sum


def _accumulator(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


def rounded(value: float, dt: torch.dtype) -> float:
    """``value`` rounded to ``dt`` (mergekit builds its weight tensor in the compute dtype)."""
    return float(torch.tensor(value, dtype=torch.float64).to(dt))


def _sum_exact(terms: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``torch.stack(terms).sum(0)`` bit for bit, with few conversions (may reuse ``terms[0]``'s memory).

    torch sums from +0.0, in order, in fp32 (fp64 for fp64) and rounds once.
    Two 16-bit terms need no fp32 buffer: a 16-bit add is computed in fp32 and
    rounded once, and ``t0 + 0.0`` is exact.
    """
    if dtype in (torch.float32, torch.float64) or len(terms) <= 2:
        acc = terms[0].add(0.0)
        for t in terms[1:]:
            acc.add_(t)
        return acc
    acc = terms[0].float().add_(0.0)
    for t in terms[1:]:
        acc.add_(t.float())
    return acc.to(dtype)


def merge_chunk_eager(
    base: torch.Tensor,  # (n,) compute dtype
    inputs: list[torch.Tensor],  # K x (n,) fine-tuned weights or deltas
    trims: Sequence[Trim],  # each input's keep factor from its deltas (merging.sparsify); None keeps all
    scales: Sequence[float | None],  # each thinned delta's rescale factor (None: none)
    weights: list[float],
    cfg: KernelConfig,
) -> torch.Tensor:
    """Merge one chunk eagerly; returns the merged chunk in ``out_dtype``.

    Same bits as :func:`merge_chunk` for finite inputs. A NaN or Inf in any
    input always reaches the output here (mergekit's sign vote can hide one),
    so checking the output's finiteness catches every bad input.
    """
    if cfg.averages_models:
        return linear_chunk(base, inputs, weights, cfg)
    dt = cfg.compute_dtype
    weighted = []
    for x, trim, scale, w in zip(inputs, trims, scales, weights):
        d = x.to(dt, copy=True) if cfg.inputs_are_deltas else x.to(dt) - base
        factor = trim(d)
        if factor is not None:
            d.mul_(factor)  # a 0/1 multiply, as mergekit's mask
            del factor
        if scale is not None:
            d.mul_(scale)
        w = rounded(w, dt)
        if w != 1:
            d.mul_(w)
        weighted.append(d)
    ws = [rounded(w, dt) for w in weights]
    divisor: torch.Tensor | float  # a Python float divides exactly as mergekit's does (no 16-bit rounding)
    if cfg.consensus:
        # majority = +1 where sum >= 0 (also for -0.0), else -1
        majority = _sum_exact(weighted, dt).sign_().add_(0.5).sign_()
        agree = [wd.sign().mul_(majority).clamp_(min=0) for wd in weighted]  # 1 agrees, 0 not
        del majority
        mixed = _sum_exact([wd.mul_(a) for wd, a in zip(weighted, agree)], dt)
        if dt in (torch.bfloat16, torch.float16) and len(set(ws)) == 1:
            # fp32 sums of a 16-bit weight are exact: count * w, rounded once
            divisor = (
                _sum_exact(agree, dt).mul_(ws[0])
                if len(agree) <= 2
                else _sum_exact(agree, torch.float32).mul_(ws[0]).to(dt)
            )
        else:
            divisor = _sum_exact([a.mul_(w) for a, w in zip(agree, ws)], dt)
        divisor.add_(divisor.abs().sign_().neg_().add_(1))  # a zero divisor becomes 1
    else:
        mixed = _sum_exact(weighted, dt)
        total = float(torch.tensor(ws, dtype=dt).sum())
        divisor = 1.0 if abs(total) < 1e-8 else total
    if cfg.normalize:
        mixed = mixed.div_(divisor)
    if cfg.lam != 1:
        mixed = mixed.mul_(cfg.lam)
    return (base + mixed).to(cfg.out_dtype)


def linear_chunk(
    base: torch.Tensor, inputs: list[torch.Tensor], weights: list[float], cfg: KernelConfig
) -> torch.Tensor:
    """mergekit's ``linear``: ``sum(w * x) / sum(w)`` accumulated in fp32 (fp64 for fp64), then the dtype."""
    dt = cfg.compute_dtype
    acc_dtype = _accumulator(dt)
    coefficients = torch.tensor(weights, dtype=torch.float32, device=base.device).to(acc_dtype)
    acc = torch.zeros(base.shape, dtype=acc_dtype, device=base.device)
    for x, c in zip(inputs, coefficients.unbind(0)):
        model = x.to(dt) + base if cfg.inputs_are_deltas else x.to(dt)
        acc.addcmul_(model, c.reshape(1))
    if cfg.normalize:
        acc.div_(coefficients.sum().reshape(1))
    if cfg.lam != 1:
        acc.mul_(cfg.lam)
    return acc.to(dt).to(cfg.out_dtype)


def all_finite(t: torch.Tensor) -> bool:
    """One cheap reduction: the largest magnitude is finite (NaN propagates through amax)."""
    return t.numel() == 0 or not t.is_floating_point() or bool(torch.isfinite(t.abs().amax()))
