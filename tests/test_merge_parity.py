"""memo's merge against mergekit 0.1.5 itself, on the same YAML config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from merging import MergeOptions, merge
from merging.yaml_config import load_config
from tests.support.merge_models import load_dir, make_finetunes, run_mergekit, write_config

QUIET = MergeOptions(progress=False)
INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def compare(ours: Path, theirs: Path) -> tuple[float, dict[str, float]]:
    """Fraction of bit-identical output elements, and the max abs difference per tensor."""
    a, b = load_dir(ours), load_dir(theirs)
    assert sorted(a) == sorted(b)
    same = total = 0
    diffs = {}
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        eq = a[name].view(INT[a[name].dtype]) == b[name].view(INT[b[name].dtype])
        same += int(eq.sum())
        total += eq.numel()
        diffs[name] = float((a[name].double() - b[name].double()).abs().max())
    return same / total, diffs


@pytest.fixture(scope="module")
def bf16_models(tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("bf16"), k=3, dtype=torch.bfloat16, hidden=64)


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("fp32"), k=3, hidden=64)


def _both(tmp_path, config: Path, tie_break: str = "index") -> tuple[Path, Path]:
    spec = load_config(config)
    if tie_break != "index":
        from dataclasses import replace

        spec = replace(spec, tie_break=tie_break)
    merge(spec, tmp_path / "ours", QUIET)
    run_mergekit(config, tmp_path / "mergekit")
    return tmp_path / "ours", tmp_path / "mergekit"


def test_fp32_ties_is_bit_identical(fp32_models, tmp_path):
    base, models = fp32_models
    config = write_config(
        tmp_path / "c.yml", "ties", base, models, densities=[0.3, 0.5, 0.2], weights=[1.0, 0.7, 1.3], normalize=True
    )
    frac, diffs = compare(*_both(tmp_path, config))
    assert frac == 1.0, f"max differences: {max(diffs.values())}"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_task_arithmetic_is_bit_identical(bf16_models, tmp_path, dtype):
    base, models = bf16_models
    config = write_config(
        tmp_path / "c.yml", "task_arithmetic", base, models, weights=[0.5, 0.3, 0.2], dtype=dtype, **{"lambda": 1.2}
    )
    frac, _ = compare(*_both(tmp_path, config))
    assert frac == 1.0


def test_bf16_ties_torch_cpu_tie_break_is_bit_identical(bf16_models, tmp_path):
    base, models = bf16_models
    config = write_config(
        tmp_path / "c.yml", "ties", base, models, densities=[0.3] * 3, weights=[1.0] * 3, dtype="bfloat16"
    )
    frac, _ = compare(*_both(tmp_path, config, tie_break="torch-cpu"))
    assert frac == 1.0


def test_bf16_ties_index_tie_break_differs_only_at_ties(bf16_models, tmp_path):
    """Lowest-index ties vs CPU argsort's choice: a small share of elements differ."""
    base, models = bf16_models
    config = write_config(
        tmp_path / "c.yml", "ties", base, models, densities=[0.3] * 3, weights=[1.0] * 3, dtype="bfloat16"
    )
    frac, diffs = compare(*_both(tmp_path, config))
    assert 0.95 <= frac < 1.0, frac
    print(f"bf16 ties, index tie-break: {frac:.4%} bit-identical, max |diff| {max(diffs.values()):.3g}")


def test_cli_drop_in_and_reproducible_config(fp32_models, tmp_path):
    """`python -m merging CONFIG OUT` as a user runs it; its mergekit_config.yml reproduces it."""
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", "ties", base, models, densities=[0.3] * 3, weights=[1.0] * 3)
    done = subprocess.run(
        [sys.executable, "-m", "merging", str(config), str(tmp_path / "cli"), "--max-shard-size", "30K"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "merged" in done.stderr and (tmp_path / "cli" / "model.safetensors.index.json").is_file()
    run_mergekit(tmp_path / "cli" / "mergekit_config.yml", tmp_path / "again")
    frac, _ = compare(tmp_path / "cli", tmp_path / "again")
    assert frac == 1.0
    again = subprocess.run(
        [sys.executable, "-m", "merging", str(config), str(tmp_path / "cli")], capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("merge_method: slerp\nbase_model: B\nmodels: []\n", "unknown merge method 'slerp'"),
        ("merge_method: ties\nmodels: []\n", "needs a base_model"),
        ("merge_method: ties\nbase_model: B\nslices: []\n", "'slices' is not supported"),
        ("merge_method: ties\nbase_model: org/model-on-the-hub\nmodels: []\n", "not a local directory"),
        ("merge_method: ties\nbase_model: B\nmodels:\n  - model: B2\n", "has no weight"),
        (
            "merge_method: ties\nbase_model: B\nmodels:\n  - model: B2\n    parameters: {weight: [1, 0]}\n",
            "per-layer gradients",
        ),
        ("merge_method: ties\nbase_model: B\nmodels: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_have_clear_errors(fp32_models, tmp_path, yaml_text, message):
    base, models = fp32_models
    config = tmp_path / "c.yml"
    config.write_text(yaml_text.replace("B2", str(models[0])).replace("base_model: B\n", f"base_model: {base}\n"))
    done = subprocess.run(
        [sys.executable, "-m", "merging", str(config), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
