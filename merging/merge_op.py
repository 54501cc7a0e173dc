"""The merge kernel as a torch operator: ``torch.ops.memo.merge_chunk``, the one entry point of every merge.

One chunk of one tensor: K inputs (fine-tuned weights, or stored deltas), each trimmed by its signed
top-k sets (``Cut``s) or by a keep factor drawn beforehand (DARE, DELLA), rescaled, weighted, voted
(TIES) and summed onto the base (:mod:`merging.kernels` has the arithmetic). Its implementations:

- **CPU**: the fused C kernels of :mod:`merging.native` where they apply (bf16 or fp32, at most 64
  inputs in the compute dtype, one top-k set per input, no drawn factors, not ``linear``, and the
  caller allows them with ``fused``); else the torch kernel;
- **CUDA and every other device**: the torch kernel, :func:`merging.kernels.merge_chunk_eager`;
- a fake implementation (shapes and dtypes only), so ``torch.compile`` and FakeTensor can trace
  graphs that call it.

Both implementations give the same bits (``tests/test_kernels.py``, ``tests/test_native.py``). The
operator returns the merged chunk in ``out_dtype`` and a 0-dim int64 tensor that is nonzero when
any element of it is not finite (a bad input, or an overflow of the output dtype).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging import native
from merging.kernels import KernelConfig, all_finite, merge_chunk_eager
from merging.native import ops as native_ops
from merging.sparsify import Cut, Trim, threshold_trim

__all__ = ["merge"]


# Registered with torch.library's low-level API: ``torch.library.custom_op`` wraps every kernel so that
# its first call imports torch._dynamo (over a second in every merge process).
_LIB = torch.library.Library("memo", "DEF")
_LIB.define(
    "merge_chunk(Tensor base, Tensor[] inputs, Tensor?[] factors, int[] cut_counts, int[] cut_signs, "
    "float[] cut_values, int[] cut_ends, float[] scales, float[] weights, bool consensus, bool normalize, "
    "float lam, bool deltas, bool averages_models, ScalarType out_dtype, bool fused) -> (Tensor, Tensor)"
)


def _merge_chunk_torch(
    base, inputs, factors, cut_counts, cut_signs, cut_values, cut_ends, scales, weights,
    consensus, normalize, lam, deltas, averages_models, out_dtype, fused,
):  # fmt: skip
    """The torch kernel (every device; the CPU where the fused kernels do not apply). ``cut_*``: each
    input's top-k sets, flattened (``cut_counts[i]`` of them for input i); ``scales``: NaN for none;
    ``fused``: the CPU may run the fused C kernels."""
    cfg = _config(base, inputs, consensus, normalize, lam, deltas, averages_models, out_dtype)
    cuts = _cuts(cut_counts, cut_signs, cut_values, cut_ends)
    return _torch_kernel(base, inputs, factors, cuts, scales, weights, cfg)


def _merge_chunk_cpu(
    base, inputs, factors, cut_counts, cut_signs, cut_values, cut_ends, scales, weights,
    consensus, normalize, lam, deltas, averages_models, out_dtype, fused,
):  # fmt: skip
    cfg = _config(base, inputs, consensus, normalize, lam, deltas, averages_models, out_dtype)
    cuts = _cuts(cut_counts, cut_signs, cut_values, cut_ends)
    if not (fused and _fusable(base, inputs, factors, cuts, averages_models)):
        return _torch_kernel(base, inputs, factors, cuts, scales, weights, cfg)
    merged, bad = native_ops.merge(base, inputs, cuts, _scales(scales), weights, cfg)
    out = merged.to(out_dtype)
    overflow = out.dtype != merged.dtype and not all_finite(out)
    return out, _flag(bool(bad) or overflow, out.device)


def _merge_chunk_fake(base, inputs, factors, *args):
    out_dtype = args[-2]
    return base.new_empty(base.shape, dtype=out_dtype), base.new_empty((), dtype=torch.int64)


_LIB.impl("merge_chunk", _merge_chunk_cpu, "CPU")
_LIB.impl("merge_chunk", _merge_chunk_torch, "CompositeExplicitAutograd")
torch.library.register_fake("memo::merge_chunk", _merge_chunk_fake, lib=_LIB)


def merge(
    base: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    cuts: Sequence[Sequence[Cut]],
    factors: Sequence[torch.Tensor | None],
    scales: Sequence[float | None],
    weights: Sequence[float],
    cfg: KernelConfig,
    *,
    fused: bool,
) -> tuple[torch.Tensor, bool]:
    """Call the operator with memo's own types: the merged chunk in ``cfg.out_dtype``, and whether any
    element of it is not finite. ``base`` is in the compute dtype."""
    flat = [c for per_input in cuts for c in per_input]
    out, bad = torch.ops.memo.merge_chunk(
        base,
        list(inputs),
        list(factors),
        [len(c) for c in cuts],
        [c.sign for c in flat],
        [float(c.value) for c in flat],
        [int(c.tie_end) for c in flat],
        [float("nan") if s is None else float(s) for s in scales],
        [float(w) for w in weights],
        cfg.consensus,
        cfg.normalize,
        float(cfg.lam),
        cfg.inputs_are_deltas,
        cfg.averages_models,
        cfg.out_dtype,
        fused,
    )
    return out, bool(bad)


def _torch_kernel(base, inputs, factors, cuts, scales, weights, cfg: KernelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`merging.kernels.merge_chunk_eager`, trimming by a drawn factor where there is one, else by the
    input's top-k sets."""
    trims = [threshold_trim(c) if f is None else _drawn(f) for f, c in zip(factors, cuts)]
    out = merge_chunk_eager(base, inputs, trims, _scales(scales), list(weights), cfg)
    return out, _flag(not all_finite(out), out.device)


def _config(base, inputs, consensus, normalize, lam, deltas, averages_models, out_dtype) -> KernelConfig:
    return KernelConfig(len(inputs), base.dtype, out_dtype, consensus, normalize, lam, deltas, averages_models)


def _cuts(counts: list[int], signs: list[int], values: list[float], ends: list[int]) -> list[list[Cut]]:
    result, at = [], 0
    for n in counts:
        result.append([Cut(s, v, e) for s, v, e in zip(signs[at : at + n], values[at : at + n], ends[at : at + n])])
        at += n
    return result


def _drawn(factor: torch.Tensor) -> Trim:
    """A keep factor drawn before the kernel ran (DARE, DELLA), as a trim."""
    return lambda d: factor


def _scales(scales: Sequence[float]) -> list[float | None]:
    return [None if s != s else s for s in scales]  # NaN: none


def _flag(bad: bool, device: torch.device) -> torch.Tensor:
    return torch.tensor(int(bad), dtype=torch.int64, device=device)


def _fusable(base, inputs, factors, cuts, averages_models: bool) -> bool:
    """What the fused kernels take: the compute dtype everywhere, contiguous chunks, one top-k set per input."""
    return (
        not averages_models
        and all(f is None for f in factors)
        and all(len(c) <= 1 and all(cut.sign > 0 for cut in c) for c in cuts)
        and all(x.dtype == base.dtype and x.is_contiguous() and x.numel() == base.numel() for x in inputs)
        and base.is_contiguous()
        and native.available(base.dtype, base.device, len(inputs))
    )
