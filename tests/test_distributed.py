"""Data-parallel training under a launcher (torchrun, as `accelerate launch` starts it), on two CPU processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from registry.store.schema import TaskVectorRow
from tests.conftest import memo_subprocess_env
from tests.support.models import HARBOR, build_tiny_llama
from tests.support.snapshot import count

LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parent.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# batch 5: the processes get 3 and 2 examples; the loss a mean over the batch's tokens, or its examples
@pytest.mark.parametrize(("batch", "mean"), [(4, "token"), (5, "token"), (5, "example")])
def test_two_processes_make_the_single_process_update(tmp_path, batch, mean):
    model = build_tiny_llama(tmp_path / "m")
    script = ["-m", "tests.support.parallel_train", str(model)]
    _run([sys.executable, *script, str(tmp_path / "one.safetensors"), str(batch), mean])
    _run([*LAUNCH, *script, str(tmp_path / "two.safetensors"), str(batch), mean])
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    start = load_file(model / "model.safetensors")
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    apart = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-2  # training did change the weights...
    # ...and two processes changed them alike: apart only by the all-reduce's float summation order, which
    # Adam's normalisation carries into the weights (1/400 to 1/2000 of the update, depending on the CPU)
    assert apart < moved / 200


def test_memo_register_under_a_launcher_records_once(tiny_registry):  # noqa: F811
    home = tiny_registry.settings.home
    done = _run(
        [
            *LAUNCH,
            "-m",
            "registry",
            "register",
            "harbor",
            *map(str, sorted(HARBOR.glob("*.md"))),
            "--qa",
            str(HARBOR / "qa.jsonl"),
            "--base",
            "tiny",
            "--steps",
            "20",
            "--lr",
            "3e-3",
            "--device",
            "cpu",
            "--json",
        ],
        env=memo_subprocess_env(home),
    )
    record = json.loads(done.stdout)  # one process reported, the other printed nothing
    assert (record["corpus"], record["version"]) == ("harbor", 1)
    assert record["training"]["examples"] == 20 * 16
    assert count(tiny_registry, TaskVectorRow) == 1
    assert tiny_registry.verify().ok
