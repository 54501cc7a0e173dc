"""The content-addressed blob store, `memo verify` and `memo gc`."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from registry.store.blob_location import open_blob_store
from registry.store.blobstore import LocalBlobStore, check_blob
from registry.store.errors import Corrupt, InvalidInput, NotFound
from tests.support.blobs import leave_temp_file, overwrite, shas


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.postgres)])
def store(request, tmp_path, monkeypatch):
    """An empty blob store of each kind (the S3 one in a fresh bucket on the test server)."""
    if request.param == "local":
        s = LocalBlobStore(tmp_path / "blobs")
    else:
        server = request.getfixturevalue("s3_server")
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        s = open_blob_store(server.create_bucket(), tmp_path)
    s.create()
    return s


def test_put_is_content_addressed_and_deduplicated(store, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello memo")
    sha = store.put_file(f)
    assert sha == hashlib.sha256(b"hello memo").hexdigest()
    assert store.put_bytes(b"hello memo") == sha
    assert shas(store) == {sha} and store.exists(sha)
    assert store.get_bytes(sha) == b"hello memo"
    assert b"".join(store.read_chunks(sha)) == b"hello memo"
    assert store.read_range(sha, 6, 4) == b"memo"
    assert store.info(sha).size == 10 and store.info("0" * 64) is None
    assert store.stale_temp_files(0) == []
    assert store.delete(sha) == 10 and shas(store) == set()


def test_a_big_blob_streams_in_chunks(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    sha = store.put_file(f)
    chunks = list(store.read_chunks(sha))
    assert len(chunks) >= 2 and b"".join(chunks) == data and check_blob(store, sha) is None
    assert store.read_range(sha, len(data) - 17, 17) == data[-17:]


def test_read_detects_corruption_and_absence(store):
    sha = store.put_bytes(b"payload")
    overwrite(store, sha, b"tampered")
    with pytest.raises(Corrupt, match="fails its sha256"):
        store.get_bytes(sha)
    assert check_blob(store, sha).startswith("corrupt")
    store.delete(sha)
    with pytest.raises(NotFound, match="missing"):
        store.get_bytes(sha)
    assert check_blob(store, sha) == "missing"
    with pytest.raises(Corrupt, match="not a sha256"):
        store.get_bytes("../../etc/passwd")


def test_local_blobs_are_read_only_and_a_failed_write_leaves_nothing(tmp_path):
    class Boom(Exception):
        pass

    class Exploding:
        def read(self, _n):
            raise Boom

    store = LocalBlobStore(tmp_path / "blobs")
    store.create()
    sha = store.put_bytes(b"kept")
    assert oct(store.path(sha).stat().st_mode & 0o777) == "0o444", "blobs are stored read-only"
    with pytest.raises(Boom):
        store._put_stream(Exploding())
    assert shas(store) == {sha} and store.stale_temp_files(0) == []


def test_blob_store_urls(tmp_path):
    assert isinstance(open_blob_store(None, tmp_path), LocalBlobStore)
    assert open_blob_store(str(tmp_path / "elsewhere"), tmp_path).url == str(tmp_path / "elsewhere")
    for url, message in [
        ("s3://key:secret@bucket/memo", "credentials never go in"),
        ("s3:///memo", "names no bucket"),
        ("gs://bucket/memo", "unknown blob store"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            open_blob_store(url, tmp_path)


def test_verify_reports_corrupt_and_missing_with_owner(memo, tiny_model, docs):
    from registry import Registry

    memo("base", "add", tiny_model, "--name", "tiny")
    memo("corpus", "add", "velin", *docs, "--base", "tiny")
    assert json.loads(memo("verify", "--json").stdout)["problems"] == []
    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        doc = reg.get_corpus("velin").documents[0]
        overwrite(reg.store, doc.sha256)
        weights = json.loads(reg.store.get_bytes(reg.get_base("tiny").manifest_sha256))["files"]
        reg.store.delete(weights["model.safetensors"]["sha256"])
    result = memo("verify", "--json", ok=False)
    assert result.exit_code == 1
    problems = {p["referenced_by"]: p["problem"] for p in json.loads(result.stdout)["problems"]}
    assert problems[f"document {doc.name} of corpus velin"].startswith("corrupt")
    assert problems["model.safetensors in manifest of base model tiny"] == "missing"
    text = memo("verify", ok=False).stdout
    assert "missing" in text and "corrupt" in text


# Seconds. S3 times its objects to the second (rounded down): an object stored now may look a second
# old at once, so "fresh" needs a grace well over that on a busy machine; the old ones sleep past it.
GRACE = 2.5
AGED = GRACE + 0.5


def test_gc_removes_only_unreferenced_and_old(registry, tiny_model, docs, tmp_path):
    registry.add_base(tiny_model, name="tiny")
    registry.add_corpus("velin", docs, base="tiny")
    orphan = registry.store.put_bytes(b"left by a killed command")
    leave_temp_file(registry.store)
    time.sleep(AGED)
    fresh = registry.store.put_bytes(b"being written right now")

    dry = registry.gc(dry_run=True, grace_seconds=GRACE)
    assert dry.removed == (orphan,) and dry.kept_recent == 1 and registry.store.exists(orphan)
    done = registry.gc(dry_run=False, grace_seconds=GRACE)
    assert done.removed == (orphan,) and done.bytes_freed == len(b"left by a killed command")
    assert done.temp_files_removed == 1
    assert not registry.store.exists(orphan) and registry.store.exists(fresh)
    report = registry.verify()
    assert report.ok and report.unreferenced == (fresh,)
    # Everything a row reaches survives, so the registry still reads whole.
    assert len(registry.get_corpus("velin").documents) == len(docs)


def test_dedupe_refreshes_an_orphan_so_gc_cannot_race_a_writer(registry):
    registry.store.put_bytes(b"orphan")
    time.sleep(AGED)
    registry.store.put_bytes(b"orphan")  # a new command stores the same content again
    assert registry.gc(dry_run=False, grace_seconds=GRACE).removed == ()
    assert registry.store.stale_temp_files(0) == []  # the refresh's copy is gone


def test_gc_refuses_when_a_manifest_is_unreadable(registry, tiny_model):
    base = registry.add_base(tiny_model, name="tiny")
    overwrite(registry.store, base.manifest_sha256)
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
    memo = Memo(registry.settings.home, registry.settings.database_url, registry.settings.blobs_url)
    out = memo("gc").output
    assert "would remove 0 blobs, 0 temp files, 1 work directories" in out and "memo gc --yes" in out
    registry.ws.materialize(registry.get_base("tiny").manifest_sha256, "models", what="the base")
    registry.ws.cache_use.release()  # as when that command ended: the entry is not in use
    report = json.loads(memo("gc", "--yes", "--cache", "--grace", "0", "--json").output)
    assert report["work_dirs_removed"] == 1 and report["cache_entries_removed"] == 1
    assert not (registry.settings.home / "tmp" / "merge-old").exists()
