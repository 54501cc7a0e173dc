"""The rest of mergekit's task-vector family and ``linear``, against mergekit 0.1.5 itself.

Deterministic methods must give mergekit's bits. The random ones (dare_*,
della*) draw other masks than mergekit's generator, so they are held to the
same statistics (kept fraction, rescaled L1 norm, DELLA's rank-dependent
keep probability) within sampling error, and to reproducibility: one seed,
one output, whatever the chunking.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from merging import MergeOptions, merge
from merging.yaml_config import load_config
from tests.support.merge_models import load_dir, make_finetunes, run_mergekit, write_config
from tests.test_merge_parity import compare

QUIET = MergeOptions(progress=False)
UP = "model.layers.0.mlp.up_proj.weight"  # 8,192 entries in rows of 64


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("fp32"), k=3, hidden=64)


@pytest.fixture(scope="module")
def bf16_models(tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("bf16"), k=3, dtype=torch.bfloat16, hidden=64)


def _both(tmp_path: Path, config: Path, *, tie_break: str = "index", options: MergeOptions = QUIET):
    spec = replace(load_config(config), tie_break=tie_break)
    result = merge(spec, tmp_path / "ours", options)
    run_mergekit(config, tmp_path / "mergekit")
    return result, tmp_path / "ours", tmp_path / "mergekit"


def _drop_base(config: Path) -> Path:
    data = yaml.safe_load(config.read_text())
    del data["base_model"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


DETERMINISTIC = [
    # (method, shared parameters, dtype, tie break): bf16 has many ties at a threshold, so it
    # is compared with mergekit's own CPU sort (--tie-break torch-cpu)
    ("breadcrumbs", {}, None, "index"),
    ("breadcrumbs_ties", {}, None, "index"),
    ("breadcrumbs", {"gamma": 0.05}, "bfloat16", "torch-cpu"),
    ("breadcrumbs_ties", {"normalize": True, "lambda": 0.8}, "bfloat16", "torch-cpu"),
    ("ties", {"rescale": True}, None, "index"),
    ("ties", {"rescale": True}, "bfloat16", "torch-cpu"),
]


@pytest.mark.parametrize(("method", "shared", "dtype", "tie_break"), DETERMINISTIC)
def test_deterministic_methods_are_bit_identical(fp32_models, bf16_models, tmp_path, method, shared, dtype, tie_break):
    base, models = bf16_models if dtype else fp32_models
    config = write_config(
        tmp_path / "c.yml", method, base, models, densities=[0.3, 0.5, 0.2], weights=[1.0, 0.7, 1.3], dtype=dtype,
        **shared,
    )  # fmt: skip
    _, ours, theirs = _both(tmp_path, config, tie_break=tie_break)
    frac, diffs = compare(ours, theirs)
    assert frac == 1.0, f"max differences: {max(diffs.values())}"


def test_breadcrumbs_drops_the_largest_and_the_smallest(fp32_models, tmp_path):
    """With one input, the kept entries are exactly the ranks below the gamma largest, density of them."""
    base, models = fp32_models
    config = write_config(
        tmp_path / "c.yml", "breadcrumbs", base, models[:1], densities=[0.5], weights=[1.0], gamma=0.1
    )
    merge(load_config(config), tmp_path / "ours", QUIET)
    d = (load_dir(models[0])[UP] - load_dir(base)[UP]).reshape(-1)
    kept = (load_dir(tmp_path / "ours")[UP] - load_dir(base)[UP]).reshape(-1) != 0
    order = d.abs().argsort(descending=True)
    n = d.numel()
    assert kept[order[: int(0.1 * n)]].sum() == 0  # the outliers are gone
    assert kept[order[int(0.1 * n) : int(0.1 * n) + int(0.5 * n)]].all()  # the next half is kept
    assert kept.sum() == int(0.5 * n)


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("with_base", ["none", "shared weight", "listed"])
def test_linear_is_bit_identical(fp32_models, bf16_models, tmp_path, dtype, normalize, with_base):
    """mergekit's linear ignores no model it is given: a named base_model is averaged too."""
    base, models = bf16_models if dtype else fp32_models
    weights = [1.0, 0.7, 1.3]
    shared: dict = {"normalize": normalize}
    listed = list(models)
    if with_base == "shared weight":
        shared["weight"] = 0.4
    elif with_base == "listed":
        listed, weights = [base, *models], [0.4, *weights]
    config = write_config(tmp_path / "c.yml", "linear", base, listed, weights=weights, dtype=dtype, **shared)
    if with_base == "none":
        _drop_base(config)
    _, ours, theirs = _both(tmp_path, config)
    frac, diffs = compare(ours, theirs)
    assert frac == 1.0, f"max differences: {max(diffs.values())}"


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_random_methods_at_density_one_are_bit_identical(fp32_models, tmp_path, method):
    """Nothing is dropped at density 1, so the random methods reduce to their deterministic core."""
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", method, base, models, densities=[1.0] * 3, weights=[1.0, 0.7, 1.3])
    _, ours, theirs = _both(tmp_path, config)
    assert compare(ours, theirs)[0] == 1.0


def _kept_statistics(base: Path, model: Path, merged: Path) -> dict[str, float]:
    """For one input at weight 1: the fraction of deltas kept, the L1 ratio, and the kept fraction in
    the upper and the lower half of each row's magnitudes."""
    d0 = load_dir(model)[UP].double() - load_dir(base)[UP].double()
    d1 = load_dir(merged)[UP].double() - load_dir(base)[UP].double()
    upper = d0.abs() >= d0.abs().median(dim=1, keepdim=True).values
    kept = d1 != 0
    return {
        "kept": kept.double().mean().item(),
        "l1": (d1.abs().sum() / d0.abs().sum()).item(),
        "upper": kept[upper].double().mean().item(),
        "lower": kept[~upper].double().mean().item(),
    }


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_random_methods_match_mergekit_within_sampling_error(fp32_models, tmp_path, method):
    """8,192 entries kept with p = 0.3: the standard error of the kept fraction is 0.005."""
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", method, base, models[:1], densities=[0.3], weights=[1.0])
    result, ours, theirs = _both(tmp_path, config)
    assert result.seed is not None
    a, b = _kept_statistics(base, models[0], ours), _kept_statistics(base, models[0], theirs)
    for stats in (a, b):
        assert abs(stats["kept"] - 0.3) < 0.025
        assert stats["l1"] == pytest.approx(1.0, abs=1e-5)  # rescaled to the input's L1 norm
        if method.startswith("della"):  # p runs from 0.15 (smallest in its row) to 0.45 (largest)
            assert abs(stats["upper"] - 0.375) < 0.03 and abs(stats["lower"] - 0.225) < 0.03
        else:
            assert abs(stats["upper"] - stats["lower"]) < 0.04
    assert abs(a["kept"] - b["kept"]) < 0.035 and abs(a["upper"] - b["upper"]) < 0.04


@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_one_seed_one_output_whatever_the_chunking(fp32_models, tmp_path, method):
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", method, base, models, densities=[0.3, 0.5, 0.4], weights=[1.0, 0.7, 1.3])
    spec = replace(load_config(config), seed=1234)
    merge(spec, tmp_path / "a", QUIET)
    merge(spec, tmp_path / "streamed", replace(QUIET, memory_budget=60_000))  # tensors in many chunks
    merge(replace(spec, seed=1235), tmp_path / "other", QUIET)
    assert compare(tmp_path / "a", tmp_path / "streamed")[0] == 1.0
    assert compare(tmp_path / "a", tmp_path / "other")[0] < 0.9


def test_the_seed_is_recorded_and_reproduces_the_merge(fp32_models, tmp_path):
    """Without a seed one is drawn; the output's mergekit_config.yml names it and merges to the same bits."""
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", "dare_ties", base, models, densities=[0.3] * 3, weights=[1.0] * 3)
    command = [sys.executable, "-m", "merging", str(config), str(tmp_path / "first"), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load((tmp_path / "first" / "mergekit_config.yml").read_text())
    assert f"(random seed {written['random_seed']})" in done.stderr
    assert written["parameters"]["rescale"] is True
    merge(load_config(tmp_path / "first" / "mergekit_config.yml"), tmp_path / "again", QUIET)
    assert compare(tmp_path / "first", tmp_path / "again")[0] == 1.0
    run_mergekit(tmp_path / "first" / "mergekit_config.yml", tmp_path / "mergekit")  # mergekit reads it too


def test_streamed_trims_equal_resident_ones(fp32_models, tmp_path):
    """Breadcrumbs' two thresholds and the rescale sums, found chunk by chunk, keep the same entries."""
    base, models = fp32_models
    config = write_config(tmp_path / "c.yml", "breadcrumbs_ties", base, models, densities=[0.3, 0.5, 0.2],
                          weights=[1.0, 0.7, 1.3], rescale=True)  # fmt: skip
    spec = load_config(config)
    merge(spec, tmp_path / "resident", QUIET)
    merge(spec, tmp_path / "streamed", replace(QUIET, memory_budget=60_000))
    a, b = load_dir(tmp_path / "resident"), load_dir(tmp_path / "streamed")
    for name in a:
        assert torch.equal(a[name] != load_dir(base)[name], b[name] != load_dir(base)[name]), name
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-8)  # a rescale may differ in its last bit


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("merge_method: della\nparameters: {epsilon: 0.3}\n", "epsilon of input 0"),
        ("merge_method: breadcrumbs\nparameters: {gamma: 1.5}\n", "gamma of input 0"),
        ("merge_method: ties\nparameters: {epsilon: 0.1}\n", "'epsilon' is not one of ties's parameters"),
        ("merge_method: linear\nparameters: {density: 0.5}\n", "'density' is not one of linear's parameters"),
        ("merge_method: dare_ties\nrandom_seed: -3\n", "random_seed must be a non-negative integer"),
        ("merge_method: breadcrumbs\nparameters: {rescale: maybe}\n", "parameters.rescale must be true or false"),
    ],
)
def test_bad_method_parameters_are_one_line(fp32_models, tmp_path, yaml_text, message):
    base, models = fp32_models
    config = tmp_path / "c.yml"
    body = f"base_model: {base}\nmodels:\n  - model: {models[0]}\n    parameters: {{weight: 1.0, density: 0.3}}\n"
    if "linear" in yaml_text:
        body = body.replace(", density: 0.3", "")
    config.write_text(yaml_text + body)
    done = subprocess.run(
        [sys.executable, "-m", "merging", str(config), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
