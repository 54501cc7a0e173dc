"""Several processes writing to one registry at once: no errors, no duplicates, no gaps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file
import torch

from registry.schema import CorpusRow, DocumentRow
from tests.conftest import memo_subprocess_env
from tests.support.snapshot import count

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 6


def _spawn(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.workers", *map(str, args)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _results(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.fixture
def shared(registry, tiny_model, docs):
    registry.add_base(tiny_model, name="tiny")
    env = memo_subprocess_env(registry.settings.home)
    url = registry.settings.database_url
    return registry, env, url, docs[0].parent


def test_six_processes_add_150_corpora(shared):
    registry, env, url, docs_dir = shared
    procs = [_spawn(env, "add-corpora", registry.settings.home, url, f"p{i}", 25, docs_dir)
             for i in range(PROCESSES)]
    results = _results(procs)
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    names = [c.name for c in registry.list_corpora()]
    assert len(names) == 150 and len(set(names)) == 150
    assert count(registry, CorpusRow) == 150
    assert count(registry, DocumentRow) == 150 * 3
    assert registry.verify().ok


def test_same_name_race_has_exactly_one_winner(shared):
    registry, env, url, docs_dir = shared
    results = _results([_spawn(env, "race", registry.settings.home, url, "contested", docs_dir)
                        for _ in range(PROCESSES)])
    assert sum(r["won"] for r in results) == 1
    losers = [r for r in results if not r["won"]]
    assert {r["error"] for r in losers} == {"AlreadyExists"}
    assert all("'contested' already exists" in r["message"] for r in losers)
    assert [c.name for c in registry.list_corpora()] == ["contested"]


def test_task_vector_versions_have_no_duplicates_or_gaps(shared, tmp_path):
    registry, env, url, docs_dir = shared
    registry.add_corpus("c", sorted(docs_dir.iterdir()), base="tiny")
    tv = tmp_path / "tv"
    tv.mkdir()
    save_file({"model.norm.weight": torch.zeros(32)}, str(tv / "model.safetensors"))  # the tiny model's
    per_process = 10
    results = _results([_spawn(env, "add-task-vectors", registry.settings.home, url, "c", per_process, tv)
                        for _ in range(PROCESSES)])
    allocated = sorted(v for r in results for v in r["versions"])
    assert allocated == list(range(1, PROCESSES * per_process + 1))
    assert [t.version for t in registry.list_task_vectors("c")] == allocated


def test_task_vector_of_another_base_is_refused(registry, tiny_model, tiny_model_sharded, docs, tmp_path):
    from registry.errors import Conflict

    registry.add_base(tiny_model, name="tiny")
    registry.add_corpus("c", docs, base="tiny")
    tv = tmp_path / "tv"
    tv.mkdir()
    save_file({"model.norm.weight": torch.zeros(48)}, str(tv / "model.safetensors"))
    with pytest.raises(Conflict, match=r"'model.norm.weight' has shape \[48\] but base model 'tiny' has shape \[32\]"):
        registry.add_task_vector("c", tv, method="full", storage_dtype="float32")
    save_file({"extra.weight": torch.zeros(3)}, str(tv / "model.safetensors"))
    with pytest.raises(Conflict, match="no such tensor: it was not computed against this corpus's base"):
        registry.add_task_vector("c", tv, method="full", storage_dtype="float32")
    assert registry.list_task_vectors("c") == []
