"""Every cache copy is checked where it is used: cheaply (its files, their sizes, no write since its
record) at every use, in full (rehashed) where a command exports, publishes or records from it;
refused and rebuilt when damaged; and `memo verify` rehashes every entry."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from registry import Registry
from registry.operations.release_files import PROVENANCE
from registry.store.cache_records import entry_problem, record_path
from registry.store.manifests import load_manifest
from tests.conftest import HUB_TOKEN

WEIGHTS = "model.safetensors"


def _flip(path: Path, *, keep_mtime: bool) -> None:
    """Flip one byte in the middle of ``path``: bit rot (the mtime unchanged) or a stray write."""
    st = path.stat()
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _stored(reg, manifest: str, rel: str) -> bytes:
    return reg.store.get_bytes(load_manifest(reg.store, manifest)["files"][rel]["sha256"])


@pytest.fixture
def merged(trained):
    record = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False, evaluate=False)
    entry = trained.home / "cache" / "models" / record.manifest_sha256
    assert entry.is_dir() and entry_problem(entry, full=True) is None, "the merge's output is kept, recorded"
    return trained, record, entry


@pytest.mark.parametrize("keep_mtime", [True, False], ids=["bit-rot", "stray-write"])
def test_a_flipped_cached_merge_is_never_exported(merged, tmp_path, caplog, keep_mtime):
    reg, record, entry = merged
    _flip(entry / WEIGHTS, keep_mtime=keep_mtime)
    with caplog.at_level(logging.WARNING):
        out = reg.export(record.id, tmp_path / "export")
    assert (out / WEIGHTS).read_bytes() == _stored(reg, record.manifest_sha256, WEIGHTS)
    assert "the cached copy of merge-1" in caplog.text and "built again" in caplog.text
    assert entry_problem(entry, full=True) is None, "rebuilt from the blob store"


def test_a_flipped_cached_merge_is_never_published(merged, hub, monkeypatch):
    reg, record, entry = merged
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    _flip(entry / WEIGHTS, keep_mtime=True)
    reg.publish(record.id, "org/memory", endpoint=hub.url)
    assert hub.main_files("org/memory")[WEIGHTS] == _stored(reg, record.manifest_sha256, WEIGHTS)


def test_a_merge_is_never_made_from_a_flipped_base(trained, trained_home_template, tmp_path, caplog):
    with Registry.open(shutil.copytree(trained_home_template, tmp_path / "clean", symlinks=True)) as clean:
        reference = clean.merge(["harbor", "observatory"], strategy="ties", progress=False, evaluate=False)
        expected = _stored(clean, reference.manifest_sha256, WEIGHTS)
    trained.base_dir("tiny")
    base = trained.home / "cache" / "models" / trained.get_base("tiny").manifest_sha256
    _flip(base / WEIGHTS, keep_mtime=True)  # bit rot: only a rehash sees it
    trained.ws.cache_use.release()  # as a new command: nothing verified in this process yet
    with caplog.at_level(logging.WARNING):
        made = trained.merge(["harbor", "observatory"], strategy="ties", progress=False, evaluate=False)
    assert "the cached copy of base model 'tiny'" in caplog.text
    assert _stored(trained, made.manifest_sha256, WEIGHTS) == expected
    assert trained.verify().ok


def test_an_evaluation_never_reads_a_written_over_copy(merged, caplog):
    reg, record, entry = merged
    _flip(entry / WEIGHTS, keep_mtime=False)  # the cheap check at every use sees the write
    with caplog.at_level(logging.WARNING):
        reg.evaluate(str(record.id), "harbor", device="cpu")
    assert "modified after the entry was made" in caplog.text
    assert entry_problem(entry, full=True) is None


@pytest.mark.parametrize("damage", ["extra file", "symlink", "missing file", "no record"])
def test_an_entry_that_is_not_what_it_was_made_from_is_refused(merged, tmp_path, damage):
    reg, record, entry = merged
    os.chmod(entry, 0o755)
    if damage == "extra file":
        (entry / "surprise.py").write_text("print('hello')")
    elif damage == "symlink":
        (tmp_path / "elsewhere").write_bytes((entry / "config.json").read_bytes())
        (entry / "config.json").unlink()
        (entry / "config.json").symlink_to(tmp_path / "elsewhere")
    elif damage == "missing file":
        (entry / "config.json").unlink()
    else:  # an entry of an older memo: checked in full against its manifest, then recorded
        record_path(entry).unlink()
    expected = "has no record" if damage == "no record" else None
    problem = entry_problem(entry, full=False)
    assert problem is not None and (expected is None or expected in problem)
    out = reg.export(record.id, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir() if p.name != PROVENANCE) == sorted(
        load_manifest(reg.store, record.manifest_sha256)["files"]
    )
    assert entry_problem(entry, full=True) is None


def test_verify_rehashes_every_cache_entry_and_removes_damaged_ones(merged, tmp_path):
    reg, record, entry = merged
    reg.evaluate(str(record.id), "harbor", device="cpu")
    reg.evaluate("harbor", "harbor", device="cpu")  # an applied task vector, recorded as it is built
    (applied,) = [p for p in (reg.home / "cache" / "applied").iterdir() if p.is_dir()]
    assert record_path(applied).is_file() and entry_problem(applied, full=True) is None
    _flip(entry / WEIGHTS, keep_mtime=True)
    report = reg.verify()
    assert report.problems == () and report.cache_checked >= 3
    assert [(c.entry, c.problem) for c in report.cache_problems] == [
        (f"models/{record.manifest_sha256}", f"{WEIGHTS} fails its sha256")
    ]
    assert not entry.exists() and reg.verify().ok
