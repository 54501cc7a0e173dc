"""How each method thins a task vector before the vote: trims, random masks, DELLA's ranks, the L1 rescale.

A *trim* is a function of one chunk's deltas that returns the chunk's 0/1
keep factor in the compute dtype (``None``: keep everything); the kernel
multiplies each delta by it, as mergekit multiplies by its mask.

- magnitude (TIES) and outliers (Model Breadcrumbs) are *signed top-k sets*
  of ``|d|``: magnitude keeps ``topk(k)``; breadcrumbs keeps
  ``topk(hi) - topk(drop)`` (the ``gamma`` largest go, the next ``density``
  stay). Each top-k set is a threshold from :mod:`merging.select` and a tie
  cut (ties at the threshold go to the lowest flat index).
- random (DARE) and della (DELLA) draw one uniform number per element from
  a generator seeded by (seed, tensor, input, block of 2**18 elements): the
  same seed gives the same masks whatever the chunking, the memory budget
  or the device. An element is kept when its number is below its keep
  probability: ``density`` (DARE), or from ``density - epsilon`` (smallest
  magnitude of its row) to ``density + epsilon`` (largest) by its rank in
  its row (DELLA; rows are the first dimension, a 1-D tensor is one row).
- rescale multiplies a thinned delta by ``sum|d| / sum|d * keep|`` in the
  compute dtype, unless either sum is below 1e-7 (mergekit's ``l1``
  ``rescaled_masked_tensor``).

The ``mergekit_*`` functions are mergekit 0.1.5's own CPU trims (its
``argsort`` and ``sort`` pick the ties), used by ``--tie-break torch-cpu``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from merging.select import keep_count

Trim = Callable[[torch.Tensor], "torch.Tensor | None"]
RANDOM_BLOCK = 1 << 18
_RESCALE_EPS = 1e-7


# --- signed top-k sets (magnitude, outliers) ------------------------------------------------


def topk_terms(sparsification: str, density: float, gamma: float, numel: int) -> list[tuple[int, int]]:
    """The trim as signed top-k sets ``[(sign, k)]``: keep = sum of sign * topk(k); [] keeps all."""
    if sparsification == "magnitude":
        k = keep_count(density, numel)
        return [] if k >= numel else [(1, k)]
    if sparsification == "outliers" and density < 1:
        target = int(density * numel)
        n_bottom = max(0, numel - target - int(gamma * numel))  # mergekit keeps ranks [n_bottom, n_bottom + target)
        high = numel - n_bottom
        return [(1, high)] + ([(-1, high - target)] if high > target else [])
    return []


@dataclass(frozen=True)
class Cut:
    """One signed top-k set in one chunk: keep ``|d| > value``, and ``|d| == value`` before ``tie_end``."""

    sign: int
    value: float  # < 0: every entry
    tie_end: int  # chunk position


def threshold_factor(d: torch.Tensor, value: float, tie_end: int) -> torch.Tensor:
    """1 where ``|d| > value`` (or ``|d| >= value`` before ``tie_end``), else 0, in d's dtype.

    ``sign(|d| - value)`` is exact: with gradual underflow a difference of two
    floats is zero only when they are equal (and exact near equality, Sterbenz).
    Arithmetic instead of a bool mask: bool ops are several times slower on CPU.
    """
    f = d.abs().sub_(value).sign_()
    f[tie_end:].clamp_(min=0)
    if tie_end > 0:
        f[:tie_end].add_(1).clamp_(max=1)
    return f


def threshold_trim(cuts: Sequence[Cut]) -> Trim:
    """The keep factor of signed top-k sets (None when a single set keeps everything)."""

    if len(cuts) == 1 and cuts[0].value < 0:
        return keep_all

    def trim(d: torch.Tensor) -> torch.Tensor | None:
        factor = None
        for cut in cuts:
            f = threshold_factor(d, cut.value, cut.tie_end)
            factor = f if factor is None else (factor.add_(f) if cut.sign > 0 else factor.sub_(f))
        return factor

    return trim


def keep_all(d: torch.Tensor) -> None:
    return None


# --- random masks (DARE, DELLA) ----------------------------------------------------------------


def _block_seed(seed: int, tensor: str, input_index: int, block: int) -> int:
    digest = hashlib.blake2b(f"{seed}\0{tensor}\0{input_index}\0{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def uniforms(seed: int, tensor: str, input_index: int, start: int, stop: int) -> torch.Tensor:
    """Elements [start, stop) of the tensor's uniform numbers for one input (fp32, on the CPU)."""
    first, last = start // RANDOM_BLOCK, max(start, stop - 1) // RANDOM_BLOCK
    blocks = [
        torch.rand(RANDOM_BLOCK, generator=torch.Generator().manual_seed(_block_seed(seed, tensor, input_index, b)))
        for b in range(first, last + 1)
    ]
    offset = first * RANDOM_BLOCK
    return torch.cat(blocks)[start - offset : stop - offset]


def della_probabilities(d: torch.Tensor, row: int, density: float, epsilon: float) -> torch.Tensor:
    """Each element's keep probability from its magnitude's rank in its row (a chunk of whole rows)."""
    magnitudes = d.abs().reshape(-1, row)
    order = torch.argsort(magnitudes, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(row, device=d.device).expand_as(order))
    spread = ranks.float().div_(row - 1) if row > 1 else torch.full(ranks.shape, 0.5, device=d.device)
    return spread.mul_(2 * epsilon).add_(density - epsilon).reshape(-1)


def random_trim(numbers: torch.Tensor, density: float, *, della: tuple[int, float] | None = None) -> Trim:
    """Keep where the element's uniform number is below its probability (``della``: (row, epsilon))."""

    def trim(d: torch.Tensor) -> torch.Tensor:
        u = numbers.to(d.device)
        p = density if della is None else della_probabilities(d, della[0], density, della[1])
        return (u < p).to(d.dtype)

    return trim


# --- rescale -------------------------------------------------------------------------------------


def l1_sums(d: torch.Tensor, factor: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum|d|`` and ``sum|d * keep|`` in d's dtype, as mergekit computes them on a whole tensor."""
    before = d.abs().sum()
    return before, (before if factor is None else (d * factor).abs().sum())


def rescale_of(before: torch.Tensor, after: torch.Tensor) -> float | None:
    """The factor a thinned delta is multiplied by (in its dtype), or None for none."""
    if bool(before < _RESCALE_EPS) or bool(after < _RESCALE_EPS):
        return None
    return float(before / after)


# --- mergekit's own CPU trims (--tie-break torch-cpu) ----------------------------------------


def mergekit_cpu_mask(d: torch.Tensor, sparsification: str, density: float, gamma: float) -> torch.Tensor | None:
    """mergekit 0.1.5's ``sparsify.magnitude`` / ``magnitude_outliers`` mask, bit for bit (None: keep all)."""
    n = d.numel()
    if density >= 1 or sparsification not in ("magnitude", "outliers"):
        return None
    w = d.abs().reshape(-1).float()
    mask = torch.zeros(n, dtype=d.dtype, device=d.device)
    if sparsification == "magnitude":
        k = keep_count(density, n)
        if k > 0:
            mask[torch.argsort(w, descending=True)[:k]] = 1
        return mask
    target = int(density * n)
    n_bottom = max(0, n - target - int(gamma * n))
    mask[torch.sort(w, descending=False).indices[n_bottom : n_bottom + target]] = 1
    return mask
