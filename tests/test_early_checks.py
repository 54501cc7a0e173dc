"""Every up-front check happens before any work: a bad lambda, weight, density, config key or
header is refused in one line that names it, and nothing is recorded or written."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from merging import MergeError
from merging.yaml_config import spec_from_config
from tests.conftest import Memo
from tests.support.cli import unchanged


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    base, model = tmp_path / "base", tmp_path / "model"
    base.mkdir()
    model.mkdir()
    return base, model


def _config(model_params: dict, shared: dict | None = None) -> dict:
    config = {"merge_method": "ties", "base_model": "base", "models": [{"model": "model", "parameters": model_params}]}
    if shared is not None:
        config["parameters"] = shared
    return config


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"weight": 1.0, "densty": 0.3}, "unknown parameter 'densty'"),
        ({"weight": 1.0, "density": 0}, "density must be in (0, 1]"),
        ({"weight": 1.0, "density": -0.5}, "density must be in (0, 1]"),
        ({"weight": 1.0, "density": 1.5}, "density must be in (0, 1]"),
        ({"weight": float("nan"), "density": 0.3}, "weight must be a finite number"),
        ({"weight": float("inf"), "density": 0.3}, "weight must be a finite number"),
        ({"weight": 1e39, "density": 0.3}, "weight must be a finite number"),
    ],
)
def test_yaml_model_parameters_are_checked(dirs, params, fragment):
    with pytest.raises(MergeError, match="models\\[0\\]") as info:
        spec_from_config(_config(params), root=dirs[0].parent)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_yaml_lambda_is_checked(dirs, lam):
    with pytest.raises(MergeError, match="parameters.lambda must be a finite number"):
        spec_from_config(_config({"weight": 1.0}, {"lambda": lam}), root=dirs[0].parent)


def test_yaml_unknown_model_entry_key(dirs):
    config = _config({"weight": 1.0})
    config["models"][0]["paramters"] = {"density": 0.5}
    with pytest.raises(MergeError, match="unknown key 'paramters'"):
        spec_from_config(config, root=dirs[0].parent)


def test_yaml_nan_read_from_a_file_is_refused_before_the_engine(dirs, tmp_path):
    from merging.yaml_config import load_config

    path = tmp_path / "merge.yml"
    path.write_text(
        "merge_method: ties\nbase_model: base\nmodels:\n"
        "  - model: model\n    parameters: {weight: .nan, density: 0.3}\n"
    )
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(MergeError, match="weight must be a finite number"):
            load_config(path)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    "option",
    [
        ("--lambda", "nan"),
        ("--lambda", "inf"),
        ("--lambda", "1e39"),
        ("--weight", "harbor=nan"),
        ("--weight", "harbor=1e39"),
        ("--density", "0"),
        ("--density", "1.5"),
    ],
)
def test_cli_merge_parameters_refused_before_any_work(trained, option):
    memo = Memo(trained.settings.home, None)
    started = time.monotonic()
    unchanged(
        memo,
        "merge",
        "harbor",
        "glassworks",
        "--strategy",
        "ties",
        *option,
        fragments=(option[0].lstrip("-") if option[0] != "--weight" else "harbor",),
    )
    assert time.monotonic() - started < 10, "the check must come before the merge's work"
    assert not any((trained.settings.home / "tmp").iterdir()), "no work may be started"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (("--method", "breadcrumbs", "--gamma", "1.5"), "--gamma must be in [0, 1)"),
        (("--method", "della", "--epsilon", "0.5"), "--epsilon must keep density +/- epsilon in (0, 1)"),
        (("--method", "dare_ties", "--seed", "-1"), "--seed"),
    ],
)
def test_cli_method_options_refused_before_any_work(trained, options, fragment):
    memo = Memo(trained.settings.home, None)
    unchanged(memo, "merge", "harbor", "glassworks", "--strategy", "ties", *options, fragments=(fragment,))
    assert not any((trained.settings.home / "tmp").iterdir()), "no work may be started"


def _shard_with(path: Path, shape: list, offsets: list) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": offsets}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 24)


@pytest.mark.parametrize(
    "shape, offsets", [([-2, -3], [0, 24]), ([2, 3.0], [0, 24]), ([6], [0, 24, 1]), ([True, 6], [0, 24])]
)
def test_base_header_with_bad_dims_is_refused(memo, model_copy, shape, offsets):
    shard = model_copy / "model.safetensors"
    _shard_with(shard, shape, offsets)
    unchanged(memo, "base", "add", model_copy, fragments=("model.safetensors", "'w'"))


def test_a_header_with_good_dims_still_reads(tmp_path):
    from merging.checkpoint import read_header

    shard = tmp_path / "ok.safetensors"
    _shard_with(shard, [2, 3], [0, 24])
    assert read_header(shard)["w"].shape == (2, 3)
