"""A process killed (or failing) in the middle of a write leaves no half-registered corpus."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from registry.operations import corpora as corpora_module
from registry.store.schema import CorpusRow, DocumentRow
from tests.conftest import memo_subprocess_env
from tests.support.blobs import shas
from tests.support.snapshot import count

DOCS = 24


def _docs(directory: Path, attempt: int) -> list[Path]:
    directory.mkdir()
    paths = []
    for i in range(DOCS):
        p = directory / f"doc{i:02d}.txt"
        p.write_text(f"Attempt {attempt}, line {i} of a long chronicle about Velin.\n" * 20000)  # ~1 MB
        paths.append(p)
    return paths


def _kill_after_blobs(cmd: list[str], env: dict, reg, target: int) -> None:
    """Start ``cmd`` and SIGKILL it as soon as ``target`` new blobs are stored (or it ends)."""
    start = len(shas(reg.store))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if len(shas(reg.store)) - start >= target:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _consistent(reg) -> bool:
    """Either the corpus is there whole, or not at all; no blob is missing or corrupt."""
    corpora = reg.list_corpora()
    assert len(corpora) <= 1
    if corpora:
        assert len(corpora[0].documents) == DOCS
    assert count(reg, DocumentRow) == DOCS * len(corpora)
    report = reg.verify()
    assert report.ok, report.problems
    return bool(corpora)


def test_sigkill_during_corpus_add(registry, tiny_model, tmp_path):
    registry.add_base(tiny_model, name="tiny")
    env = memo_subprocess_env(registry.settings.home, registry.settings.database_url)
    memo = str(Path(env["PATH"].split(os.pathsep)[0]) / "memo")
    for attempt, target in enumerate((1, DOCS // 2, DOCS - 1, DOCS)):
        docs = _docs(tmp_path / f"attempt{attempt}", attempt)
        cmd = [memo, "corpus", "add", "chronicle", *map(str, docs), "--base", "tiny"]
        _kill_after_blobs(cmd, env, registry, target)
        if _consistent(registry):  # the last kill may land after the commit
            break
    else:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert _consistent(registry)
    # Whatever the kills left behind is unreferenced and collectable, never corrupt.
    assert len(registry.verify().unreferenced) >= 1 + DOCS // 2
    registry.gc(dry_run=False, grace_seconds=0)
    report = registry.verify()
    assert report.ok and report.unreferenced == () and report.temp_files == 0
    assert len(registry.get_corpus("chronicle").documents) == DOCS


def test_failure_inside_the_transaction_rolls_back(registry, tiny_model, docs, monkeypatch):
    registry.add_base(tiny_model, name="tiny")

    def explode(*_a, **_k):
        raise RuntimeError("disk vanished")

    monkeypatch.setattr(corpora_module, "_to_record", explode)
    with pytest.raises(RuntimeError, match="disk vanished"):
        registry.add_corpus("c", docs, base="tiny")
    assert count(registry, CorpusRow) == 0 and count(registry, DocumentRow) == 0
    report = registry.verify()
    assert report.ok and len(report.unreferenced) == len(docs)
    monkeypatch.undo()
    assert len(registry.add_corpus("c", docs, base="tiny").documents) == len(docs)
