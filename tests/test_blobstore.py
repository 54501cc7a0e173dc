"""The content-addressed blob store, `memo verify` and `memo gc`."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from registry.store.blobstore import LocalBlobStore
from registry.store.errors import Corrupt, NotFound


@pytest.fixture
def store(tmp_path):
    s = LocalBlobStore(tmp_path / "blobs")
    s.create()
    return s


def test_put_is_content_addressed_and_deduplicated(store, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello memo")
    sha = store.put_file(f)
    assert sha == hashlib.sha256(b"hello memo").hexdigest()
    assert store.put_bytes(b"hello memo") == sha
    assert list(store.iter_shas()) == [sha]
    assert store.get_bytes(sha) == b"hello memo"
    assert store.temp_files() == []
    assert oct(store.path(sha).stat().st_mode & 0o777) == "0o444", "blobs are stored read-only"


def test_read_detects_corruption_and_absence(store):
    sha = store.put_bytes(b"payload")
    path = store.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(Corrupt, match="fails its sha256"):
        store.get_bytes(sha)
    assert store.check(sha).startswith("corrupt")
    path.unlink()
    with pytest.raises(NotFound, match="missing"):
        store.get_bytes(sha)
    with pytest.raises(Corrupt, match="not a sha256"):
        store.path("../../etc/passwd")


def test_failed_write_leaves_no_blob_and_no_temp(store, tmp_path):
    class Boom(Exception):
        pass

    class Exploding:
        def read(self, _n):
            raise Boom

    with pytest.raises(Boom):
        store._put_stream(Exploding())
    assert list(store.iter_shas()) == [] and store.temp_files() == []


def _corrupt(reg, sha: str) -> None:
    path = reg.store.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")


def test_verify_reports_corrupt_and_missing_with_owner(memo, tiny_model, docs):
    from registry import Registry

    memo("base", "add", tiny_model, "--name", "tiny")
    memo("corpus", "add", "velin", *docs, "--base", "tiny")
    assert json.loads(memo("verify", "--json").stdout)["problems"] == []
    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        doc = reg.get_corpus("velin").documents[0]
        _corrupt(reg, doc.sha256)
        weights = json.loads(reg.store.get_bytes(reg.get_base("tiny").manifest_sha256))["files"]
        reg.store.path(weights["model.safetensors"]["sha256"]).unlink()
    result = memo("verify", "--json", ok=False)
    assert result.exit_code == 1
    problems = {p["referenced_by"]: p["problem"] for p in json.loads(result.stdout)["problems"]}
    assert problems[f"document {doc.name} of corpus velin"].startswith("corrupt")
    assert problems["model.safetensors in manifest of base model tiny"] == "missing"
    text = memo("verify", ok=False).stdout
    assert "missing" in text and "corrupt" in text


def test_gc_removes_only_unreferenced_and_old(registry, tiny_model, docs, tmp_path):
    registry.add_base(tiny_model, name="tiny")
    registry.add_corpus("velin", docs, base="tiny")
    orphan = registry.store.put_bytes(b"left by a killed command")
    fresh = registry.store.put_bytes(b"being written right now")
    old = time.time() - 7200
    os.utime(registry.store.path(orphan), (old, old))
    (registry.store.tmp / "put-stale").write_bytes(b"half")
    os.utime(registry.store.tmp / "put-stale", (old, old))

    dry = registry.gc(dry_run=True)
    assert dry.removed == (orphan,) and dry.kept_recent == 1 and registry.store.exists(orphan)
    done = registry.gc(dry_run=False)
    assert done.removed == (orphan,) and done.bytes_freed == len(b"left by a killed command")
    assert done.temp_files_removed == 1
    assert not registry.store.exists(orphan) and registry.store.exists(fresh)
    report = registry.verify()
    assert report.ok and report.unreferenced == (fresh,)
    # Everything a row reaches survives, so the registry still reads whole.
    assert len(registry.get_corpus("velin").documents) == len(docs)


def test_dedupe_refreshes_an_orphan_so_gc_cannot_race_a_writer(registry):
    sha = registry.store.put_bytes(b"orphan")
    old = time.time() - 7200
    os.utime(registry.store.path(sha), (old, old))
    registry.store.put_bytes(b"orphan")  # a new command stores the same content again
    assert registry.gc(dry_run=False).removed == ()


def test_gc_refuses_when_a_manifest_is_unreadable(registry, tiny_model):
    base = registry.add_base(tiny_model, name="tiny")
    _corrupt(registry, base.manifest_sha256)
    with pytest.raises(Corrupt, match="cannot collect garbage"):
        registry.gc(dry_run=False, grace_seconds=0)


def test_cli_gc_is_a_dry_run_by_default(memo):
    out = memo("gc").stdout
    assert "would remove 0 blobs" in out
    assert json.loads(memo("gc", "--yes", "--json").stdout)["dry_run"] is False


def _aged(path, seconds: float = 7200) -> None:
    old = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old), follow_symlinks=False)


def test_gc_removes_work_left_by_killed_commands_and_caches_on_request(registry, tiny_model):
    from registry.store.materialize import materialize

    base = registry.add_base(tiny_model, name="tiny")
    home = registry.settings.home
    killed = home / "tmp" / "integrate-killed"  # a heal's model, written but never stored
    (killed / "model").mkdir(parents=True)
    (killed / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    _aged(killed)
    running = home / "tmp" / "merge-running"  # an old directory a running command is writing into now
    (running / "model").mkdir(parents=True)
    _aged(running)
    (running / "model" / "part.safetensors").write_bytes(b"y" * 10)
    cached = materialize(registry.store, base.manifest_sha256, home / "cache" / "models")
    partial = cached.parent / f".{base.manifest_sha256[:12]}-half"  # a killed cache build
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    _aged(partial)
    _aged(cached)

    dry = registry.gc(dry_run=True)
    assert (dry.work_dirs_removed, dry.cache_entries_removed, dry.bytes_freed) == (2, 0, 1002)
    assert killed.is_dir() and partial.is_dir()
    done = registry.gc(dry_run=False)
    assert done.work_dirs_removed == 2 and not killed.exists() and not partial.exists()
    assert running.is_dir() and cached.is_dir()  # young work and complete caches stay
    assert registry.gc(dry_run=False, caches=True).cache_entries_removed == 1 and not cached.exists()
    # Blob-linked cache files free no space; the registry rebuilds the entry when next needed.
    assert registry.verify().ok
    assert (materialize(registry.store, base.manifest_sha256, home / "cache" / "models") / "config.json").is_file()


def test_cli_gc_reports_work_directories(registry, tiny_model, tmp_path):
    from tests.conftest import Memo

    registry.add_base(tiny_model, name="tiny")
    (registry.settings.home / "tmp" / "merge-old").mkdir(parents=True)
    _aged(registry.settings.home / "tmp" / "merge-old")
    memo = Memo(registry.settings.home, registry.settings.database_url)
    out = memo("gc").output
    assert "would remove 0 blobs, 0 temp files, 1 work directories" in out and "memo gc --yes" in out
    report = json.loads(memo("gc", "--yes", "--cache", "--grace", "0", "--json").output)
    assert report["work_dirs_removed"] == 1 and report["cache_entries_removed"] >= 0
    assert not (registry.settings.home / "tmp" / "merge-old").exists()
