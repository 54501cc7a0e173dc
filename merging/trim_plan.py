"""One tensor's magnitude trims: which top-k sets each input needs, their radix selections and tie cuts.

A method that trims by magnitude (TIES, Model Breadcrumbs) keeps, per input,
signed top-k sets of ``|d|`` (:func:`merging.sparsify.topk_terms`). Each set
is a :class:`merging.select.RadixSelect` fed chunk by chunk over one or more
passes; once every selection is done, :meth:`TrimPlan.cuts` gives each
chunk's thresholds and the chunk position where the kept ties at each
threshold run out (ties go to the lowest flat index).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from merging.errors import MergeError
from merging.native import ops as native_ops
from merging.select import ALL, RadixSelect, Threshold, chunk_histogram, key_value, magnitude_keys, none_kept
from merging.sparsify import Cut, topk_terms


@dataclass
class TopK:
    """One signed top-k set of one input's magnitudes."""

    input: int
    sign: int
    select: RadixSelect | None  # None: the threshold is known without looking (all or none kept)
    threshold: Threshold | None = None
    tie_counts: list[int] = field(default_factory=list)  # per chunk: keys equal to the threshold
    _last_pass: list[torch.Tensor] = field(default_factory=list)  # per chunk: the last pass's histogram


class TrimPlan:
    """The top-k sets of one tensor's inputs, selected over the chunks ``ranges``."""

    def __init__(
        self,
        sparsification: str,
        densities: Sequence[float],
        gammas: Sequence[float],
        present: Sequence[bool],
        numel: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.dtype = dtype
        self.inputs = len(densities)
        self.terms: list[TopK] = []
        for i, (density, gamma) in enumerate(zip(densities, gammas)):
            if not present[i]:
                continue  # a zero delta: nothing to trim
            for sign, k in topk_terms(sparsification, density, gamma, numel):
                if k >= numel:
                    self.terms.append(TopK(i, sign, None, ALL))
                elif k == 0:
                    self.terms.append(TopK(i, sign, None, none_kept(dtype)))
                else:
                    self.terms.append(TopK(i, sign, RadixSelect(dtype, k, device)))

    @property
    def selecting(self) -> bool:
        return any(t.select is not None and not t.select.done for t in self.terms)

    def inputs_selecting(self) -> list[int]:
        return sorted({t.input for t in self.terms if t.select is not None and not t.select.done})

    def add(self, keys: KeySource) -> None:
        """Count one chunk's keys in every unfinished selection."""
        for term in self.terms:
            select = term.select
            if select is not None and not select.done:
                hist = select.add_histogram(keys.histogram(term.input, select))
                if select.last_pass:
                    term._last_pass.append(hist)

    def finish_pass(self) -> None:
        for term in self.terms:
            if term.select is not None and not term.select.done:
                term.select.finish_pass()
                if term.select.done:
                    term.threshold = term.select.result
                    digit = term.select.last_digit(term.threshold.key)
                    term.tie_counts = [int(h[digit]) for h in term._last_pass]
                    term._last_pass = []

    def cuts(self, chunk: int, start: int, stop: int, keys: KeySource) -> list[list[Cut]]:
        """Per input, its top-k sets in chunk ``chunk`` = [start, stop) (``keys`` is searched only in
        the one chunk of a set where its kept ties run out)."""
        out: list[list[Cut]] = [[] for _ in range(self.inputs)]
        for term in self.terms:
            t = term.threshold
            if t is None:
                raise MergeError(f"internal: the selection of input {term.input} did not finish")
            if term.select is None:
                end = -1
            else:
                before = sum(term.tie_counts[:chunk])
                end = _cut(t, start, stop, before, term.tie_counts[chunk], functools.partial(keys.find, term.input))
            tie_end = min(max(end - start + 1, 0), stop - start)
            out[term.input].append(Cut(term.sign, key_value(t.key, self.dtype), tie_end))
        return out


def _cut(
    threshold: Threshold, start: int, stop: int, ties_before: int, ties_here: int, find: Callable[[int, int], int]
) -> int:
    """Last flat index (inclusive) of a tie that chunk [start, stop) keeps; -1 for none."""
    if threshold.ties_kept <= 0 or ties_before >= threshold.ties_kept:
        return -1
    if ties_before + ties_here <= threshold.ties_kept:
        return stop - 1
    return start + find(threshold.key, threshold.ties_kept - ties_before)


class KeySource(Protocol):
    """One chunk's magnitude keys of every input, as the selections and the tie cuts ask for them."""

    def histogram(self, i: int, select: RadixSelect) -> torch.Tensor:
        """Input i's histogram of ``select``'s current digit."""
        ...

    def find(self, i: int, key: int, m: int) -> int:
        """Chunk position of input i's m-th (1-based) key equal to ``key``."""
        ...


class TorchKeys:
    """Keys computed with torch ops and kept for the chunk's later passes (``delta(i)``: input i's deltas)."""

    def __init__(self, delta: Callable[[int], torch.Tensor]) -> None:
        self._delta = delta
        self._keys: dict[int, torch.Tensor] = {}

    def keys(self, i: int) -> torch.Tensor:
        if i not in self._keys:
            self._keys[i] = magnitude_keys(self._delta(i))
        return self._keys[i]

    def histogram(self, i: int, select: RadixSelect) -> torch.Tensor:
        return chunk_histogram(select.digits(self.keys(i)), 1 << select.plan[select.pass_index][1])

    def find(self, i: int, key: int, m: int) -> int:
        return int((self.keys(i) == key).nonzero().reshape(-1)[m - 1])


class FusedKeys:
    """Keys the fused kernels compute on the fly from each input and the base: only the last radix pass's
    per-part counts are kept (they say which part of the chunk to search for a tie)."""

    def __init__(self, base: torch.Tensor, inputs: Callable[[int], torch.Tensor], deltas: bool) -> None:
        self._base, self._inputs, self._deltas = base, functools.cache(inputs), deltas
        self._counts: dict[int, native_ops.PartCounts] = {}

    def histogram(self, i: int, select: RadixSelect) -> torch.Tensor:
        x, pass_index = self._inputs(i), select.pass_index
        hist, counts = native_ops.histogram(
            x, self._base, deltas=self._deltas, pass_index=pass_index, prefix=select.prefix
        )
        if select.last_pass:
            self._counts[i] = counts
        return hist

    def find(self, i: int, key: int, m: int) -> int:
        x, counts = self._inputs(i), self._counts.get(i)
        return native_ops.find_tie(x, self._base, deltas=self._deltas, key=key, m=m, counts=counts)
