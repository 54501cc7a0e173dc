"""The merge operator (``torch.ops.memo.merge_chunk``) reproduces mergekit's merge_group bit for bit,
through its torch kernel and its fused CPU kernel alike."""

from __future__ import annotations

import pytest
import torch

from merging import merge_op
from merging.kernels import KernelConfig
from merging.select import key_value, magnitude_keys, threshold_of
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


def _run(method, base, models, densities, weights, normalize, lam, *, pretrimmed=None, fused=False):
    """The operator on a whole tensor as one chunk, ties at the threshold to the lowest index."""
    dt = base.dtype
    consensus = method == "ties"
    normalize = consensus if normalize is None else normalize
    inputs = pretrimmed if pretrimmed is not None else models
    cuts = []
    for x, dens in zip(models, densities):
        if pretrimmed is not None or not consensus:
            cuts.append([])
            continue
        d = (x - base).reshape(-1)
        t = threshold_of(d, dens)
        ties = (magnitude_keys(d) == t.key).nonzero().reshape(-1)
        end = int(ties[t.ties_kept - 1]) + 1 if t.ties_kept > 0 else 0
        cuts.append([Cut(1, key_value(t.key, dt), end)])
    cfg = KernelConfig(len(models), dt, dt, consensus, normalize, lam, pretrimmed is not None)
    flat = [x.reshape(-1).contiguous() for x in inputs]
    k = len(flat)
    out, bad = merge_op.merge(base.reshape(-1), flat, cuts, [None] * k, [None] * k, weights, cfg, fused=fused)
    assert not bad
    return out.reshape(base.shape)


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
@pytest.mark.parametrize("fused", [False, True], ids=["torch", "fused"])
def test_operator_matches_mergekit_fp32(case, zeros, fused):
    method, k, densities, weights, normalize, lam = case
    base, models = _models(torch.float32, k, zeros=zeros)
    expected = mergekit_merge(method, base, models, densities=densities, weights=weights, normalize=normalize, lam=lam)
    ours = _run(method, base, models, densities, weights, normalize, lam, fused=fused)
    assert bits_equal(ours, expected), f"{(ours != expected).sum()} elements differ"


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "fused"])
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES[:-1], ids=lambda c: f"{c[0]}-K{c[1]}")  # [-1]: mergekit NaN in fp16
def test_operator_matches_mergekit_16bit_with_mergekits_tie_choice(dt, case, fused):
    """With mergekit's own (CPU argsort) choice among ties, the rest is bit-identical."""
    from mergekit.sparsify import magnitude

    method, k, densities, weights, normalize, lam = case
    base, models = _models(dt, k, zeros=True)
    expected = mergekit_merge(method, base, models, densities=densities, weights=weights, normalize=normalize, lam=lam)
    if method == "ties":
        trimmed = [magnitude(x - base, density=d) for x, d in zip(models, densities)]
    else:
        trimmed = [x - base for x in models]
    ours = _run(method, base, models, densities, weights, normalize, lam, pretrimmed=trimmed, fused=fused)
    assert bits_equal(ours, expected), f"{(ours != expected).sum()} elements differ"


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-K{c[1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_fused_and_torch_implementations_agree(case, dt):
    """Where the fused kernels do not apply (fp16, fp64) the CPU runs the torch kernel: same bits everywhere."""
    method, k, densities, weights, normalize, lam = case
    base, models = _models(dt, k, zeros=True)
    torch_kernel = _run(method, base, models, densities, weights, normalize, lam, fused=False)
    fused = _run(method, base, models, densities, weights, normalize, lam, fused=True)
    assert bits_equal(fused, torch_kernel), f"{(fused != torch_kernel).sum()} elements differ"


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "fused"])
def test_operator_flags_nonfinite_output(fused):
    base, models = _models(torch.float32, 2)
    models[1][7] = float("nan")
    models[0][3] = float("inf")
    cfg = KernelConfig(2, torch.float32, torch.float32, True, True, 1.0, False)
    out, bad = merge_op.merge(base, models, [[], []], [None] * 2, [None] * 2, [1.0, 1.0], cfg, fused=fused)
    assert bad and not torch.isfinite(out[7])
    models[1][7], models[0][3] = 0.0, 0.0
    assert not merge_op.merge(base, models, [[], []], [None] * 2, [None] * 2, [1.0, 1.0], cfg, fused=fused)[1]


def test_operator_flags_an_overflow_of_the_output_dtype():
    base = torch.full((8,), 60000.0)
    models = [base + 10000.0]
    cfg = KernelConfig(1, torch.float32, torch.float16, False, False, 1.0, False)
    for fused in (False, True):
        out, bad = merge_op.merge(base, models, [[]], [None], [None], [1.0], cfg, fused=fused)
        assert bad and out.dtype == torch.float16


def test_kernel_does_not_mutate_inputs():
    base, models = _models(torch.bfloat16, 2)
    before = [base.clone(), *[m.clone() for m in models]]
    _run("ties", base, models, [0.3, 0.3], [1.0, 1.0], None, 1.0)
    _run("ties", base, models, [0.3, 0.3], [1.0, 1.0], None, 1.0, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(before, [base, *models]))


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


def test_the_merge_kernel_is_a_torch_operator():
    """Registered as ``memo::merge_chunk`` with a CPU kernel, a kernel for every other device and a fake one
    (torch's own checks: schema, FakeTensor, AOT dispatch)."""
    base, models = _models(torch.bfloat16, 3, n=1000, zeros=True)
    nan = float("nan")
    args = (base, models, [None] * 3, [0, 0, 0], [], [], [], [nan] * 3, [1.0] * 3)
    args += (True, True, 1.0, False, False, torch.bfloat16, True)
    torch.library.opcheck(torch.ops.memo.merge_chunk.default, args)
    for key in ("CPU", "CompositeExplicitAutograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("memo::merge_chunk", key), key


def test_a_merge_runs_through_the_operator(tmp_path):
    from merging import MergeOptions, merge
    from tests.support.merge_models import make_finetunes
    from tests.test_merge_engine import _spec

    base, models = make_finetunes(tmp_path / "m", k=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        merge(_spec("ties", base, models), tmp_path / "out", MergeOptions(progress=False))
    assert any(e.name == "memo::merge_chunk" for e in prof.events())
