"""A killed merge or export leaves a locked-then-dead `.OUT.partial-*` directory: the next write into the
same place removes it, and so does `memo gc`; a live writer's is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from osutil.partial import CREATING_GRACE_SECONDS, leftovers, partial_dir, remove_stale
from tests.support.merge_models import make_finetunes


@pytest.fixture(scope="module")
def big_enough(tmp_path_factory) -> tuple[Path, Path]:
    """A merge that takes long enough to be killed at several points (about 40 MB out, 9 shards)."""
    root = tmp_path_factory.mktemp("partials")
    base, models = make_finetunes(root, k=3, hidden=512)
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": 0.3}} for m in models],
    }
    path = root / "ties.yml"
    path.write_text(yaml.safe_dump(config))
    return path, root


def _merge_cmd(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "merging",
        str(config),
        str(out),
        "--max-shard-size",
        "5M",
        "--quiet",
        "--threads",
        "1",
    ]


def _partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".partial-" in p.name or ".creating-" in p.name)


def _kill_when(cmd: list[str], ready) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not ready():
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _shards(directory: Path) -> int:
    return sum(len(list(p.glob("*.safetensors"))) for p in _partials(directory))


@pytest.mark.parametrize("point", ["created", "first shard", "half the shards"])
def test_a_killed_merge_is_cleaned_up_by_the_rerun(big_enough, tmp_path, point):
    config, root = big_enough
    reference = root / "reference"
    if not reference.exists():
        subprocess.run(_merge_cmd(config, reference), check=True)
    expected = {p.name: p.read_bytes() for p in reference.iterdir()}
    ready = {
        # Once it is `.partial-` (locked); a kill in the microseconds before leaves a `.creating-`
        # directory that only a sweep after its grace period removes (tested below).
        "created": lambda: any(".partial-" in p.name for p in _partials(tmp_path)),
        "first shard": lambda: _shards(tmp_path) >= 1,
        "half the shards": lambda: _shards(tmp_path) >= 5,
    }[point]
    out = tmp_path / "merged"
    _kill_when(_merge_cmd(config, out), ready)
    assert not out.exists(), "killed before the rename: no output"
    assert _partials(tmp_path), "the kill left its partial directory (what this test is about)"
    subprocess.run(_merge_cmd(config, out), check=True)
    assert _partials(tmp_path) == [], "the rerun removes the dead writer's leftovers"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected


def test_a_live_writers_partial_is_never_touched(tmp_path):
    out = tmp_path / "model"
    with partial_dir(out) as live:
        (live / "shard").write_bytes(b"being written")
        assert leftovers(tmp_path) == [] and remove_stale(tmp_path, "model") == []
        with partial_dir(out) as second:  # a second writer of the same output, alongside
            assert live.exists() and second != live
        assert live.exists() and (live / "shard").read_bytes() == b"being written"
    assert _partials(tmp_path) == []


def test_only_partials_of_the_same_output_are_swept(tmp_path):
    for name in (".model.partial-dead1", ".model2.partial-dead2", ".other.partial-dead3"):
        (tmp_path / name).mkdir()
    with partial_dir(tmp_path / "model"):
        pass
    assert sorted(p.name for p in _partials(tmp_path)) == [".model2.partial-dead2", ".other.partial-dead3"]


def test_a_killed_export_is_cleaned_up_by_the_next_export(trained, tmp_path):
    from osutil.partial import PARTIAL

    trained.merge(["harbor"], strategy="ties", progress=False)
    dead = tmp_path / f".out{PARTIAL}killed"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    trained.export(1, tmp_path / "out")
    assert _partials(tmp_path) == [] and (tmp_path / "out" / "model.safetensors").is_file()


def test_gc_removes_dead_partials_under_the_home_but_not_live_ones(memo):
    home = memo.home
    dead = [home / "exports" / ".m1.partial-abcd", home / "tmp" / "integrate-x" / ".merged.partial-efgh"]
    for d in dead:
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    with partial_dir(home / "exports" / "m2") as live:
        dry = json.loads(memo("gc", "--json").stdout)
        assert all(d.exists() for d in dead) and dry["work_dirs_removed"] >= 2
        report = json.loads(memo("gc", "--yes", "--json").stdout)
        assert report["work_dirs_removed"] == 2 and report["bytes_freed"] >= 2000
        assert not any(d.exists() for d in dead) and live.exists()


def test_a_creating_directory_goes_only_after_its_grace(tmp_path):
    """A writer killed between making its directory and locking it leaves `.creating-`: nothing can tell a
    dead one from a live one but age, so it goes once older than the grace period."""
    young, old = tmp_path / ".model.creating-young", tmp_path / ".model.creating-old"
    young.mkdir()
    old.mkdir()
    past = time.time() - CREATING_GRACE_SECONDS - 1
    os.utime(old, (past, past))
    assert remove_stale(tmp_path, "model") == [old] and young.is_dir() and not old.exists()
