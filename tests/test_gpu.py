"""Every merge method on CUDA against the same merge on the CPU (needs a CUDA device; skipped elsewhere).

The kernels are elementwise IEEE operations in a fixed order and the random
masks are drawn on the CPU, so a merge on CUDA keeps the same entries and,
where no whole-tensor sum is involved, gives the same bits. A rescale divides
by L1 sums that CUDA reduces in another order: those outputs may differ in
their last bit, never in which entries are kept.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from merging import METHODS, MergeInput, MergeOptions, MergeSpec, merge
from tests.support.merge_models import load_dir, make_finetunes

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
QUIET = MergeOptions(progress=False)


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def models(request, tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("gpu"), k=3, dtype=request.param, hidden=64)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_cuda_keeps_what_the_cpu_keeps(models, tmp_path, method):
    base, fine_tuned = models
    inputs = tuple(MergeInput(m, weight=w, density=d) for m, w, d in zip(fine_tuned, [1.0, 0.7, 1.3], [0.3, 0.5, 0.4]))
    spec = MergeSpec(method, base, inputs, lam=0.9 if not METHODS[method].averages_models else 1.0, seed=11)
    merge(spec, tmp_path / "cpu", QUIET)
    merge(spec, tmp_path / "cuda", replace(QUIET, device="cuda"))
    a, b, origin = load_dir(tmp_path / "cpu"), load_dir(tmp_path / "cuda"), load_dir(base)
    for name in a:
        assert torch.equal(a[name] != origin[name], b[name] != origin[name]), f"{name}: other entries kept"
        if spec.effective_rescale:
            torch.testing.assert_close(a[name], b[name], rtol=1e-2 if a[name].dtype == torch.bfloat16 else 1e-6, atol=0)
        else:
            assert torch.equal(a[name], b[name]), f"{name}: {(a[name] != b[name]).sum()} elements differ"


def test_a_streamed_cuda_merge_equals_a_resident_one(models, tmp_path):
    """Chunks on the device (thresholds from histograms, ties across chunks) give the resident merge's bits."""
    base, fine_tuned = models
    spec = MergeSpec("ties", base, tuple(MergeInput(m, density=0.3) for m in fine_tuned))
    merge(spec, tmp_path / "resident", replace(QUIET, device="cuda"))
    merge(spec, tmp_path / "streamed", replace(QUIET, device="cuda", memory_budget=60_000))
    a, b = load_dir(tmp_path / "resident"), load_dir(tmp_path / "streamed")
    assert all(torch.equal(a[n], b[n]) for n in a)
