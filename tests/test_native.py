"""The fused C kernels against the eager torch kernel: the same bits, every configuration."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from merging import MergeInput, MergeOptions, MergeSpec, merge
from merging.kernels import KernelConfig, merge_chunk_eager
from merging.native import library
from merging.native import ops as native_ops
from merging.select import RadixSelect, key_value, magnitude_keys, threshold_of
from merging.sparsify import Cut, keep_all, threshold_trim
from tests.support.merge_models import make_finetunes
from tests.test_merge_parity import compare

pytestmark = pytest.mark.skipif(
    library() is None and not os.environ.get("MEMO_REQUIRE_NATIVE"), reason="no C compiler: the eager kernel runs"
)
INT = {torch.bfloat16: torch.int16, torch.float32: torch.int32}


def _cuts(xs, base, density, deltas, dt):
    """Each input's lowest-index-tie trim at ``density``, as the merge finds it."""
    cuts = []
    for x in xs:
        d = x if deltas else x - base
        t = threshold_of(d, density)
        ties = (magnitude_keys(d) == t.key).nonzero().reshape(-1)
        end = int(ties[t.ties_kept - 1]) + 1 if t.ties_kept > 0 else 0
        cuts.append([Cut(1, key_value(t.key, dt), end)])
    return cuts


CONFIGS = list(itertools.product([torch.bfloat16, torch.float32], [1, 2, 3, 7], [True, False], [True, False]))


@pytest.mark.parametrize(("dt", "k", "consensus", "deltas"), CONFIGS)
def test_fused_merge_equals_the_eager_kernel(dt, k, consensus, deltas):
    """Ties at the threshold, exact zeros, a rescale, weights summing to zero, lambda: bit for bit."""
    g = torch.Generator().manual_seed(k)
    n = 70_001  # several threads' parts, and a block tail
    base = torch.randn(n, generator=g).to(dt)
    xs = [(base.float() + 0.01 * torch.randn(n, generator=g)).to(dt) for _ in range(k)]
    if deltas:
        xs = [(x.float() - base.float()).to(dt) for x in xs]
    xs[0][:300] = 0 if deltas else base[:300]  # exact zeros: never agree, ties at a zero threshold
    weights = [1.0, -1.0, 0.7, 1.3, 0.5, 2.0, 0.9][:k]
    scales = [None, 1.5, None, 0.75, None, None, 2.0][:k]
    for density, normalize, lam in [(0.3, True, 1.0), (0.9, False, 0.7), (1.0, True, 1.2)]:
        cuts = _cuts(xs, base, density, deltas, dt) if density < 1 else [[] for _ in xs]
        cfg = KernelConfig(k, dt, dt, consensus, normalize, lam, deltas)
        trims = [threshold_trim(c) if c else keep_all for c in cuts]
        eager = merge_chunk_eager(base, xs, trims, scales, weights, cfg)
        fused, bad = native_ops.merge(base, xs, cuts, scales, weights, cfg)
        assert bad == 0
        assert torch.equal(eager.view(INT[dt]), fused.view(INT[dt])), f"{(eager != fused).sum()} differ"


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fused_merge_counts_every_nonfinite_output(dt, bad):
    base = torch.randn(5000).to(dt)
    xs = [(base.float() + 0.01 * torch.randn(5000)).to(dt) for _ in range(3)]
    xs[1][77] = bad
    cfg = KernelConfig(3, dt, dt, True, True, 1.0, False)
    out, count = native_ops.merge(base, xs, _cuts(xs, base, 0.3, False, dt), [None] * 3, [1.0] * 3, cfg)
    assert count == 1 and not torch.isfinite(out[77]) and torch.isfinite(torch.cat([out[:77], out[78:]])).all()


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("deltas", [False, True])
def test_histograms_and_tie_positions_equal_torch(dt, deltas):
    n = 300_007
    base = torch.randn(n).to(dt)
    x = (base.float() + 0.01 * torch.randn(n)).to(dt)
    keys = magnitude_keys(x if deltas else x - base)
    select = RadixSelect(dt, int(0.3 * n))
    while not select.done:  # every pass, fp32's prefix-filtered second one included
        fused, counts = native_ops.histogram(x, base, deltas=deltas, pass_index=select.pass_index, prefix=select.prefix)
        expected = torch.bincount(select.digits(keys).long(), minlength=fused.numel())
        assert torch.equal(fused, expected)
        select.add_histogram(fused)
        select.finish_pass()
    key = select.result.key  # the threshold: its ties, found from the last pass's counts per part or without
    positions = (keys == key).nonzero().reshape(-1)
    assert sum(counts.of(key & 0xFFFF if dt == torch.float32 else key)) == len(positions)
    for m in sorted({1, len(positions) // 2 + 1, len(positions)}):
        for known in (counts, None):
            found = native_ops.find_tie(x, base, deltas=deltas, key=key, m=m, counts=known)
            assert found == int(positions[m - 1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("method", ["ties", "task_arithmetic"])
def test_merges_with_and_without_the_fused_kernels_are_identical(tmp_path, dtype, method):
    """Whole merges, resident and streamed (ties spanning chunks), models and task vectors."""
    base, models = make_finetunes(tmp_path / "m", k=3, dtype=dtype, hidden=64)
    inputs = tuple(MergeInput(m, weight=w, density=d) for m, w, d in zip(models, [1.0, 0.7, 1.3], [0.3, 0.5, 0.2]))
    spec = MergeSpec(method, base, inputs, lam=0.9)
    quiet = MergeOptions(progress=False)
    for budget in (1 << 30, 60_000):
        fused = merge(spec, tmp_path / f"fused-{budget}", replace(quiet, native=True, memory_budget=budget))
        eager = merge(spec, tmp_path / f"eager-{budget}", replace(quiet, native=False, memory_budget=budget))
        assert fused.parameters == eager.parameters
        assert compare(tmp_path / f"fused-{budget}", tmp_path / f"eager-{budget}")[0] == 1.0


def test_without_a_compiler_the_merge_runs_eagerly(tmp_path):
    """No cc on PATH and nothing cached: the library is None and the merge still runs, with the same bits."""
    base, models = make_finetunes(tmp_path / "m", k=2, hidden=32)
    paths = [str(m) for m in models]
    script = (
        "import sys; from pathlib import Path\n"
        "from merging.native import library\n"
        "from merging import MergeInput, MergeOptions, MergeSpec, merge\n"
        "assert library() is None\n"
        f"spec = MergeSpec('ties', Path({str(base)!r}), tuple(MergeInput(Path(m)) for m in {paths!r}))\n"
        f"merge(spec, Path({str(tmp_path / 'eager')!r}), MergeOptions(progress=False))\n"
    )
    env = dict(os.environ, PATH="/nonexistent", CC="nope", XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spec = MergeSpec("ties", base, tuple(MergeInput(m) for m in models))
    merge(spec, tmp_path / "fused", MergeOptions(progress=False, native=True))
    assert compare(tmp_path / "eager", tmp_path / "fused")[0] == 1.0


def test_the_library_is_built_once_and_rebuilt_when_its_source_changes(tmp_path, monkeypatch):
    from merging.native import build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    compiler = shutil.which("cc") or "gcc"
    first = build.built_library(compiler)
    stamp = first.stat().st_mtime_ns
    assert build.built_library(compiler) == first and first.stat().st_mtime_ns == stamp  # found, not rebuilt
    changed = tmp_path / "fused.c"
    changed.write_text(build.SOURCE.read_text().replace("#define BLOCK 256", "#define BLOCK 128"))
    monkeypatch.setattr(build, "SOURCE", changed)
    monkeypatch.setattr(build, "HEADERS", tuple(tmp_path / h.name for h in build.HEADERS))
    for header in build.HEADERS:
        (tmp_path / header.name).write_text((Path(build.__file__).with_name(header.name)).read_text())
    second = build.built_library(compiler)
    assert second.parent != first.parent and second.exists() and first.exists()
    assert sorted(p.name for p in first.parent.parent.iterdir()) == sorted([first.parent.name, second.parent.name])
