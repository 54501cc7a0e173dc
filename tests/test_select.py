"""The exact magnitude threshold keeps exactly the entries topk keeps (ties: lowest index)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from merging.select import (
    ALL,
    RadixSelect,
    keep_count,
    keep_mask,
    magnitude_keys,
    none_kept,
    threshold_of,
)

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def _stable_topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    idx = torch.sort(x.reshape(-1).abs().double(), descending=True, stable=True).indices[:k]
    mask = torch.zeros(x.numel(), dtype=torch.bool)
    mask[idx] = True
    return mask.reshape(x.shape)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 3000),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    tie_heavy=st.booleans(),
    scale=st.sampled_from([1e-6, 1e-2, 1.0, 1e4]),
)
def test_threshold_keeps_what_topk_keeps(n, density, dtype, seed, tie_heavy, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    if tie_heavy:  # few distinct magnitudes, both signs, zeros: like bf16 deltas
        x = torch.randint(-4, 5, (n,), generator=g).double() * scale
    x = x.to(dtype)
    k = keep_count(density, n)
    kept = keep_mask(x, threshold_of(x, density))
    assert int(kept.sum()) == k
    if k > 0:
        topk_values = torch.topk(x.abs().double(), k).values
        assert torch.equal(torch.sort(x.abs().double()[kept]).values, torch.sort(topk_values).values)
    assert torch.equal(kept, _stable_topk_mask(x, k)), "ties must go to the lowest flat index"


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_histograms_equal_one_shot(dtype):
    x = (torch.randn(10_001) * 3).to(dtype)
    k = keep_count(0.3, x.numel())
    select = RadixSelect(dtype, k)
    keys = magnitude_keys(x)
    passes = 0
    while not select.done:
        for chunk in keys.split(997):  # chunks in any order add up
            select.add(chunk)
        select.finish_pass()
        passes += 1
    assert select.result == threshold_of(x, 0.3)
    assert passes == {torch.bfloat16: 1, torch.float16: 1, torch.float32: 2, torch.float64: 4}[dtype]


def test_trivial_densities_and_keep_count_matches_mergekit():
    x = torch.randn(10)
    assert threshold_of(x, 1.0) is ALL and threshold_of(x, 1.5) is ALL
    assert threshold_of(x, 0.0) == none_kept(x.dtype) == threshold_of(x, -1)
    assert keep_count(0.3, 10) == 3 and keep_count(0.01, 10) == 1  # max(1, int(d * n))
    assert keep_count(0.3, 0) == 0
    assert not keep_mask(x, none_kept(x.dtype)).any() and keep_mask(x, ALL).all()
    assert not keep_mask(x.bfloat16(), none_kept(torch.bfloat16)).any()


def test_magnitude_keys_order_like_values_including_signed_zero_and_inf():
    x = torch.tensor([0.0, -0.0, 1e-30, -2.0, 2.0, float("inf"), -float("inf")])
    keys = magnitude_keys(x)
    assert keys[0] == keys[1] == 0 and keys[3] == keys[4]
    assert keys[2] < keys[3] < keys[5] == keys[6]
