"""The merge kernel reproduces mergekit's merge_group bit for bit, eager and compiled."""

from __future__ import annotations

import pytest
import torch

from merging.kernels import KernelConfig, compiled_kernel, eager_kernel
from merging.select import key_value, threshold_of
from merging.sparsify import Cut, threshold_trim
from tests.support.mergekit_ref import mergekit_merge

INT_VIEW = {
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(INT_VIEW[a.dtype]), b.view(INT_VIEW[b.dtype]))


def _run(kernel_factory, method, base, models, densities, weights, normalize, lam, *, pretrimmed=None):
    """Our kernel on a whole tensor as one chunk, with thresholds from merging.select."""
    dt = base.dtype
    consensus = method == "ties"
    normalize = consensus if normalize is None else normalize
    if pretrimmed is not None:
        inputs, thresholds, cuts = pretrimmed, [-1] * len(models), [-1] * len(models)
    else:
        inputs, thresholds, cuts = models, [], []
        for x, dens in zip(models, densities):
            t = threshold_of(x - base, dens if consensus else 1.0)
            thresholds.append(t.key)
            cuts.append(_cut_index(x - base, t))
    cfg = KernelConfig(len(models), dt, dt, consensus, normalize, lam, pretrimmed is not None)
    values = [key_value(t, dt) for t in thresholds]
    out, bad = kernel_factory(cfg)(
        base.reshape(-1),
        [x.reshape(-1) for x in inputs],
        torch.tensor(values, dtype=dt),
        torch.tensor(cuts),
        torch.tensor(0),
        torch.tensor(weights, dtype=dt),
    )
    assert bad.item() == 0
    return out.reshape(base.shape)


def _cut_index(delta, t) -> int:
    from merging.select import magnitude_keys

    if t.ties_kept <= 0:
        return -1
    ties = (magnitude_keys(delta.reshape(-1)) == t.key).nonzero().reshape(-1)
    return int(ties[t.ties_kept - 1])


def _models(dt, k, n=4096, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g).to(dt)
    models = [(base.double() + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)).to(dt) for _ in range(k)]
    if zeros:  # unchanged entries, signed zeros in the base
        for m in models:
            m[: n // 4] = base[: n // 4]
        base[n // 4 : n // 2] = -0.0
    return base, models


CASES = [  # method, K, densities, weights, normalize, lambda
    ("ties", 1, [0.3], [1.0], None, 1.0),
    ("ties", 3, [0.3, 0.3, 0.3], [1.0, 1.0, 1.0], None, 1.0),
    ("ties", 3, [0.1, 0.5, 1.0], [0.5, 1.3, 2.0], None, 1.0),
    ("ties", 4, [0.3] * 4, [1.0, -0.5, 0.7, 1.0], False, 1.7),
    ("ties", 10, [0.2] * 10, [1.0] * 10, None, 1.0),
    ("ties", 4, [0.3] * 4, [0.7] * 4, None, 1.0),  # equal weights: the count * w shortcut
    ("ties", 2, [0.5] * 2, [1.3] * 2, None, 1.0),
    ("ties", 2, [0.0, 0.3], [1.0, 1.0], None, 1.0),
    ("task_arithmetic", 3, [1.0] * 3, [0.5, 0.3, 0.2], None, 1.0),
    ("task_arithmetic", 2, [1.0] * 2, [1.0, 1.0], True, 0.5),
    ("task_arithmetic", 2, [1.0] * 2, [1.0, -1.0], True, 1.0),  # weights summing to 0
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-K{c[1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("zeros", [False, True], ids=["dense", "zeros"])
def test_eager_kernel_matches_mergekit_fp32(case, zeros):
    method, k, densities, weights, normalize, lam = case
    base, models = _models(torch.float32, k, zeros=zeros)
    expected = mergekit_merge(method, base, models, densities=densities, weights=weights, normalize=normalize, lam=lam)
    ours = _run(eager_kernel, method, base, models, densities, weights, normalize, lam)
    assert bits_equal(ours, expected), f"{(ours != expected).sum()} elements differ"


@pytest.mark.parametrize("kernel", ["reference", "fast"])
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:-1], ids=lambda c: f"{c[0]}-K{c[1]}")  # [-1]: mergekit NaN in fp16
def test_kernels_match_mergekit_16bit_with_mergekits_tie_choice(dt, case, kernel):
    """With mergekit's own (CPU argsort) choice among ties, the rest is bit-identical."""
    from mergekit.sparsify import magnitude

    method, k, densities, weights, normalize, lam = case
    base, models = _models(dt, k, zeros=True)
    expected = mergekit_merge(method, base, models, densities=densities, weights=weights, normalize=normalize, lam=lam)
    if method == "ties":
        trimmed = [magnitude(x - base, density=d) for x, d in zip(models, densities)]
    else:
        trimmed = [x - base for x in models]
    args = (method, base, models, densities, weights, normalize, lam)
    ours = (
        _run(eager_kernel, *args, pretrimmed=trimmed) if kernel == "reference" else _run_fast(*args, pretrimmed=trimmed)
    )
    assert bits_equal(ours, expected), f"{(ours != expected).sum()} elements differ"


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_compiled_kernel_equals_eager(dt):
    base, models = _models(dt, 3, n=50_000, zeros=True)
    args = ("ties", base, models, [0.3, 0.2, 0.5], [1.0, 0.7, 1.2], None, 1.0)
    eager = _run(eager_kernel, *args)
    compiled = _run(compiled_kernel, *args)
    assert bits_equal(eager, compiled)


def test_kernel_counts_nonfinite_deltas():
    base, models = _models(torch.float32, 2)
    models[1][7] = float("nan")
    models[0][3] = float("inf")
    cfg = KernelConfig(2, torch.float32, torch.float32, True, True, 1.0, False)
    _, bad = eager_kernel(cfg)(
        base, models, torch.tensor([-1.0, -1.0]), torch.tensor([-1, -1]), torch.tensor(0), torch.ones(2)
    )
    assert bad.item() == 2


def test_kernel_does_not_mutate_inputs():
    base, models = _models(torch.bfloat16, 2)
    before = [base.clone(), *[m.clone() for m in models]]
    _run(eager_kernel, "ties", base, models, [0.3, 0.3], [1.0, 1.0], None, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, [base, *models]))


def _run_fast(method, base, models, densities, weights, normalize, lam, *, pretrimmed=None):
    """The eager in-place kernel, with the same thresholds as _run."""
    from merging.kernels import merge_chunk_eager
    from merging.select import magnitude_keys

    dt = base.dtype
    consensus = method == "ties"
    normalize = consensus if normalize is None else normalize
    inputs = pretrimmed if pretrimmed is not None else models
    values, ends = [], []
    for x, dens in zip(models, densities):
        if pretrimmed is not None or not consensus:
            values.append(-1.0)
            ends.append(0)
            continue
        d = (x - base).reshape(-1)
        t = threshold_of(d, dens)
        values.append(key_value(t.key, dt))
        ties = (magnitude_keys(d) == t.key).nonzero().reshape(-1)
        ends.append(int(ties[t.ties_kept - 1]) + 1 if t.ties_kept > 0 else 0)
    cfg = KernelConfig(len(models), dt, dt, consensus, normalize, lam, pretrimmed is not None)
    trims = [threshold_trim([Cut(1, v, e)]) for v, e in zip(values, ends)]
    flat = [x.reshape(-1) for x in inputs]
    out = merge_chunk_eager(base.reshape(-1), flat, trims, [None] * len(flat), list(weights), cfg)
    return out.reshape(base.shape)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-K{c[1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_fast_eager_kernel_equals_reference_kernel(case, dt):
    method, k, densities, weights, normalize, lam = case
    base, models = _models(dt, k, zeros=True)
    expected = _run(eager_kernel, method, base, models, densities, weights, normalize, lam)
    ours = _run_fast(method, base, models, densities, weights, normalize, lam)
    assert bits_equal(ours, expected), f"{(ours != expected).sum()} elements differ"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("method", ["ties", "task_arithmetic"])
@pytest.mark.parametrize("threshold", [-1.0, 0.001])
def test_fast_eager_kernel_propagates_nonfinite_inputs(bad, method, threshold):
    """Any NaN/Inf input shows in the output, so one output check catches every bad input."""
    from merging.kernels import merge_chunk_eager

    base, models = _models(torch.float32, 3)
    models[1][5] = bad
    cfg = KernelConfig(3, torch.float32, torch.float32, method == "ties", True, 1.0, False)
    trims = [threshold_trim([Cut(1, threshold, 0)])] * 3
    out = merge_chunk_eager(base, models, trims, [None] * 3, [1.0, 0.5, 2.0], cfg)
    assert not torch.isfinite(out[5]) and torch.isfinite(out[:5]).all()
