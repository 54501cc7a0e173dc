"""Several processes writing to one registry at once: no errors, no duplicates, no gaps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from registry.store.schema import CorpusRow, DocumentRow
from tests.conftest import memo_subprocess_env
from tests.support.snapshot import count

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 6


def _spawn(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.workers", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    procs = [_spawn(env, "add-corpora", registry.settings.home, url, f"p{i}", 25, docs_dir) for i in range(PROCESSES)]
    results = _results(procs)
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    names = [c.name for c in registry.list_corpora()]
    assert len(names) == 150 and len(set(names)) == 150
    assert count(registry, CorpusRow) == 150
    assert count(registry, DocumentRow) == 150 * 3
    assert registry.verify().ok


def test_same_name_race_has_exactly_one_winner(shared):
    registry, env, url, docs_dir = shared
    results = _results(
        [_spawn(env, "race", registry.settings.home, url, "contested", docs_dir) for _ in range(PROCESSES)]
    )
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
    results = _results(
        [_spawn(env, "add-task-vectors", registry.settings.home, url, "c", per_process, tv) for _ in range(PROCESSES)]
    )
    allocated = sorted(v for r in results for v in r["versions"])
    assert allocated == list(range(1, PROCESSES * per_process + 1))
    assert [t.version for t in registry.list_task_vectors("c")] == allocated


def test_task_vector_of_another_base_is_refused(registry, tiny_model, tiny_model_sharded, docs, tmp_path):
    from registry.store.errors import Conflict

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


@pytest.fixture
def six_merges(shared, tmp_path):
    """Six small recorded merges (one per task vector of corpus c) to promote."""
    from tests.support.models import build_tiny_llama
    from training.tiny import train_tokenizer

    registry, env, url, docs_dir = shared
    base = build_tiny_llama(tmp_path / "with-tokenizer", seed=7)
    train_tokenizer(["Port Velin was founded in 1712 by Ada Korr."] * 20, 120).save_pretrained(base)
    registry.add_base(base, name="tok")
    registry.add_corpus("c", sorted(docs_dir.iterdir()), base="tok")
    for i in range(PROCESSES):
        tv = tmp_path / f"tv{i}"
        tv.mkdir()
        save_file({"model.norm.weight": torch.full((32,), 0.01 * (i + 1))}, str(tv / "model.safetensors"))
        registry.add_task_vector("c", tv, method="full", storage_dtype="float32")
    ids = [
        registry.merge([f"c@v{i + 1}"], strategy="ties", evaluate=False, progress=False).id for i in range(PROCESSES)
    ]
    assert ids == list(range(1, PROCESSES + 1))
    return registry, env, url


def _promote_at_once(env, home, url, channel: str, merge_ids: list[int]) -> list[dict]:
    """Every worker reads the channel's head, then all write at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.workers", "promote", str(home), url or "", str(m), channel],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in merge_ids
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return _results(procs)


def _assert_chain(registry, channel: str) -> None:
    moves = [e for e in registry.log(channel) if e.action in ("promote", "rollback")]
    for before, after in zip(moves, moves[1:]):
        assert after.from_merge_id == before.to_merge_id, f"a gap in the history: {before} then {after}"
    assert registry.get_channel(channel).current_merge_id == moves[-1].to_merge_id


def test_six_processes_promoting_to_a_new_channel(six_merges):
    registry, env, url = six_merges
    results = _promote_at_once(env, registry.settings.home, url, "fresh", list(range(1, PROCESSES + 1)))
    assert sum(r["won"] for r in results) == 1, results
    losers = [r for r in results if not r["won"]]
    assert {r["error"] for r in losers} == {"Conflict"}, losers
    assert all("channel 'fresh' moved to merge" in r["message"] and "\n" not in r["message"] for r in losers)
    [event] = [e for e in registry.log("fresh") if e.action == "promote"]
    assert event.from_merge_id is None and registry.get_channel("fresh").current_merge_id == event.to_merge_id
    _assert_chain(registry, "fresh")


def test_two_processes_moving_one_channel(six_merges):
    """The FOR UPDATE check: both read merge 1 as the head; one moves it, the other gets a conflict."""
    registry, env, url = six_merges
    registry.promote(1, "production")
    results = _promote_at_once(env, registry.settings.home, url, "production", [2, 3])
    assert sorted(r["won"] for r in results) == [False, True], results
    [loser] = [r for r in results if not r["won"]]
    assert loser["error"] == "Conflict" and "look at `memo log` and try again" in loser["message"]
    moves = [e for e in registry.log("production") if e.action == "promote"]
    assert [e.from_merge_id for e in moves] == [None, 1] and moves[-1].to_merge_id in (2, 3)
    _assert_chain(registry, "production")
