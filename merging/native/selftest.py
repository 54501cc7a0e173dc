"""The fused kernels' self-test: a small merge through the library just loaded must give the eager
torch kernel's bits, or the library is not used. It catches a library that loads but computes
something else (a modified file whose record was changed too, a miscompiling compiler) in a few
milliseconds, once per process."""

from __future__ import annotations

import ctypes

import torch

from merging.kernels import KernelConfig, merge_chunk_eager
from merging.native import ops
from merging.select import key_value, magnitude_keys, threshold_of
from merging.sparsify import Cut, threshold_trim

_N = 20_011  # a block tail, and ties at the threshold
_INT = {torch.bfloat16: torch.int16, torch.float32: torch.int32}


def _cuts(xs: list[torch.Tensor], base: torch.Tensor, density: float, dt: torch.dtype) -> list[list[Cut]]:
    """Each input's trim at ``density`` with the lowest-index tie rule, as the merge finds it."""
    cuts = []
    for x in xs:
        delta = x - base
        t = threshold_of(delta, density)
        ties = (magnitude_keys(delta) == t.key).nonzero().reshape(-1)
        end = int(ties[t.ties_kept - 1]) + 1 if t.ties_kept > 0 else 0
        cuts.append([Cut(1, key_value(t.key, dt), end)])
    return cuts


def agrees_with_torch(lib: ctypes.CDLL) -> bool:
    """Whether ``lib`` merges a small TIES case (bf16 and fp32, weights, a rescale, lambda) bit for bit
    as the eager kernel does."""
    g = torch.Generator().manual_seed(0)
    for dt in (torch.bfloat16, torch.float32):
        base = torch.randn(_N, generator=g).to(dt)
        xs = [(base.float() + 0.01 * torch.randn(_N, generator=g)).to(dt) for _ in range(3)]
        xs[0][:100] = base[:100]  # exact zeros: ties at a zero threshold
        weights, scales = [1.0, 0.7, 1.3], [None, 1.5, None]
        cfg = KernelConfig(3, dt, dt, True, True, 0.9, False)
        cuts = _cuts(xs, base, 0.3, dt)
        eager = merge_chunk_eager(base, xs, [threshold_trim(c) for c in cuts], scales, weights, cfg)
        try:
            fused, bad = ops.merge(base, xs, cuts, scales, weights, cfg, lib=lib)
        except (OSError, AttributeError, ValueError):  # a symbol missing, a call refused
            return False
        if bad != 0 or not torch.equal(eager.view(_INT[dt]), fused.view(_INT[dt])):
            return False
    return True
