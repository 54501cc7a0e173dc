"""Exact top-k magnitude selection without sorting: a radix select over bit patterns.

For a non-negative IEEE float, the order of its bit pattern (as an integer)
is the order of its value. So ``|d|``'s bits with the sign cleared are integer
*keys* that sort like the magnitudes, and the k-th largest key can be found by
histograms over digits of the key, most significant digit first:

- bf16 / fp16 keys have 15 bits: one histogram of 2**15 bins, one pass;
- fp32 keys have 31 bits: a 15-bit pass, then a 16-bit pass restricted to the
  elements whose high digit equals the one found: two passes;
- fp64: four passes.

Each pass is a ``bincount`` (O(n), chunk-friendly: histograms of chunks add
up), against mergekit's full ``argsort`` per tensor (O(n log n)).

The result is the threshold key ``T``, how many entries are above it, and how
many of the entries *equal* to ``T`` must be kept to keep exactly ``k``.
Which ties are kept is decided later, by flat index (lowest first), in
:mod:`merging.kernels`.

``k`` follows mergekit's ``sparsify.magnitude``: ``k = max(1, int(density *
numel))``; density >= 1 keeps everything, density <= 0 nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

# Per dtype: (integer view dtype, digit plan [(shift, bits)], most significant digit first)
_KEY_LAYOUT = {
    torch.bfloat16: (torch.int16, [(0, 15)]),
    torch.float16: (torch.int16, [(0, 15)]),
    torch.float32: (torch.int32, [(16, 15), (0, 16)]),
    torch.float64: (torch.int64, [(48, 15), (32, 16), (16, 16), (0, 16)]),
}
KEEP_ALL = -1  # a threshold key every key exceeds


def supported(dtype: torch.dtype) -> bool:
    return dtype in _KEY_LAYOUT


def magnitude_keys(values: torch.Tensor) -> torch.Tensor:
    """Integer keys (int16/int32/int64, >= 0) whose order is the order of ``|values|``.

    ``abs`` clears the sign bit, so the keys are ``|values|``'s bits, viewed as integers.
    """
    return magnitudes_as_keys(values.abs())


def magnitudes_as_keys(magnitudes: torch.Tensor) -> torch.Tensor:
    """Keys of values that are already non-negative (a free reinterpretation)."""
    return magnitudes.contiguous().view(_KEY_LAYOUT[magnitudes.dtype][0])


def key_value(key: int, dtype: torch.dtype) -> float:
    """The magnitude whose key is ``key``: the kernel compares ``|d|`` with this value.

    Comparing values is the same as comparing keys for every non-NaN number
    (and keeps the fused kernel free of bit casts, which inductor cannot vectorise).
    """
    if key < 0:
        return -1.0  # below every magnitude: keep everything
    view = _KEY_LAYOUT[dtype][0]
    if key >= torch.iinfo(view).max:
        return float("inf")  # with no ties kept: keep nothing
    return float(torch.tensor(key, dtype=view).view(dtype).item())


def keep_count(density: float, numel: int) -> int:
    """How many entries mergekit's magnitude trim keeps (0 = none, numel = all)."""
    if density >= 1:
        return numel
    if density <= 0 or numel == 0:
        return 0
    return max(1, int(density * numel))


@dataclass(frozen=True)
class Threshold:
    """Keep every key > ``key``, plus the first ``ties_kept`` keys == ``key`` in flat order."""

    key: int
    above: int  # entries with key > self.key
    ties_total: int  # entries with key == self.key
    ties_kept: int  # how many of them are kept


ALL = Threshold(KEEP_ALL, 0, 0, 0)


def none_kept(dtype: torch.dtype) -> Threshold:
    """A threshold no key exceeds (the largest key of the dtype's integer view, no ties kept).

    It must fit the key's integer type: comparisons against 0-d tensors run
    in the key's dtype, where a larger value would wrap around. Its value
    (:func:`key_value`) is +inf.
    """
    return Threshold(torch.iinfo(_KEY_LAYOUT[dtype][0]).max, 0, 0, 0)


class RadixSelect:
    """Finds the k-th largest key of one tensor over a sequence of digit passes.

    Usage: for each pass, feed every chunk's keys to :meth:`add` (any order),
    then :meth:`finish_pass`; repeat while :attr:`done` is false.
    """

    def __init__(self, dtype: torch.dtype, k: int, device: torch.device | str = "cpu") -> None:
        self.plan = _KEY_LAYOUT[dtype][1]
        self.k = k  # 1 <= k < numel; the trivial cases use ALL / NONE
        self.device = device
        self.pass_index = 0
        self.prefix = 0  # digits found so far
        self.above = 0  # keys known to be above the prefix's bucket
        self._hist = self._new_hist()
        self.result: Threshold | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def _new_hist(self) -> torch.Tensor:
        _, bits = self.plan[self.pass_index]
        return torch.zeros(1 << bits, dtype=torch.int64, device=self.device)

    def digits(self, keys: torch.Tensor) -> torch.Tensor:
        """This pass's digit of every key in the current bucket (others dropped)."""
        shift, bits = self.plan[self.pass_index]
        if self.pass_index == 0 and shift == 0:
            return keys  # 16-bit floats: the whole key is the only digit
        if self.pass_index > 0:
            keys = keys[(keys >> (shift + bits)) == self.prefix]
        return (keys >> shift) & ((1 << bits) - 1)

    @property
    def last_pass(self) -> bool:
        return self.pass_index == len(self.plan) - 1

    def last_digit(self, key: int) -> int:
        """The digit of ``key`` that the last pass histograms."""
        return key & ((1 << self.plan[-1][1]) - 1)

    def add(self, keys: torch.Tensor) -> torch.Tensor:
        """Count one chunk's keys in this pass's histogram; returns the chunk's own histogram."""
        return self.add_histogram(chunk_histogram(self.digits(keys), self._hist.numel()))

    def add_histogram(self, hist: torch.Tensor) -> torch.Tensor:
        """Add a chunk's histogram of this pass's digits, counted elsewhere (e.g. by the fused kernels)."""
        self._hist += hist
        return hist

    def finish_pass(self) -> None:
        """Pick the digit holding the k-th largest key; finish after the last digit."""
        digit, above_digit, count_digit = _locate(self._hist, self.k - self.above)
        self.above += above_digit
        _, bits = self.plan[self.pass_index]
        self.prefix = (self.prefix << bits) | digit
        self.pass_index += 1
        if self.pass_index == len(self.plan):
            self.result = Threshold(self.prefix, self.above, count_digit, self.k - self.above)
        else:
            self._hist = self._new_hist()


_SPLIT_MIN = 1 << 22


def chunk_histogram(digits: torch.Tensor, bins: int) -> torch.Tensor:
    """``bincount`` of a chunk's digits; large CPU chunks are split over threads.

    ``torch.bincount`` runs on one core; it releases the GIL, so halves of a
    chunk counted in parallel threads use every core.
    """
    if digits.dtype not in (torch.int32, torch.int64, torch.uint8, torch.int8, torch.int16):
        raise TypeError(f"keys must be integers, got {digits.dtype}")
    flat = digits.reshape(-1)
    threads = torch.get_num_threads()
    if flat.device.type != "cpu" or flat.numel() < _SPLIT_MIN or threads < 2:
        return torch.bincount(flat, minlength=bins)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="memo-histogram") as pool:
        parts = list(pool.map(lambda part: torch.bincount(part, minlength=bins), flat.tensor_split(threads)))
    return torch.stack(parts).sum(0)


def _locate(hist: torch.Tensor, rank: int) -> tuple[int, int, int]:
    """The digit d where the ``rank``-th largest element lies, the count above d, and hist[d]."""
    # above[d] = number of elements with digit > d
    from_top = torch.flip(hist, [0]).cumsum(0)  # from_top[j] = count with digit >= bins-1-j
    j = int(torch.searchsorted(from_top, torch.tensor([rank], device=hist.device)).item())
    digit = hist.numel() - 1 - j
    count = int(hist[digit].item())
    above = int(from_top[j].item()) - count
    return digit, above, count


def threshold_of(values: torch.Tensor, density: float) -> Threshold:
    """One-shot threshold for a whole tensor (tests, small tensors)."""
    k = keep_count(density, values.numel())
    if k >= values.numel():
        return ALL
    if k == 0:
        return none_kept(values.dtype)
    select = RadixSelect(values.dtype, k, values.device)
    keys = magnitude_keys(values.reshape(-1))
    while select.result is None:
        select.add(keys)
        select.finish_pass()
    return select.result


def keep_mask(values: torch.Tensor, threshold: Threshold) -> torch.Tensor:
    """The entries of a whole (flattened) tensor that the trim keeps; ties by lowest index."""
    keys = magnitude_keys(values.reshape(-1))
    keep = keys > threshold.key
    if threshold.ties_kept > 0:
        ties = keys == threshold.key
        keep |= ties & (ties.cumsum(0) <= threshold.ties_kept)
    return keep.reshape(values.shape)
