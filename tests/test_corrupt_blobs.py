"""A flipped byte in any stored artifact is refused in one line before it is used: nothing corrupt is
merged, exported, published or served, and nothing is recorded or sent."""

from __future__ import annotations

import os
import shutil

from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import materialize
from tests.conftest import HUB_TOKEN, Memo
from tests.support.cli import assert_one_line_error
from tests.support.snapshot import registry_state


def _flip_a_byte(reg, manifest_sha: str, rel: str = "model.safetensors") -> None:
    path = reg.store.path(manifest_files(load_manifest(reg.store, manifest_sha))[rel])
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _drop_caches(reg) -> None:
    shutil.rmtree(reg.settings.home / "cache", ignore_errors=True)


def _refused(reg, memo: Memo, *args, fragments=()) -> None:
    before = registry_state(reg)
    assert_one_line_error(memo(*args, ok=False), "corrupt", "memo verify", *fragments)
    assert registry_state(reg) == before, f"memo {' '.join(map(str, args))} changed the registry"


def test_a_corrupt_base_is_never_merged(trained):
    memo = Memo(trained.settings.home, None)
    _flip_a_byte(trained, trained.get_base("tiny").manifest_sha256)
    _drop_caches(trained)
    _refused(trained, memo, "merge", "harbor", "glassworks", "--strategy", "ties", fragments=("base model 'tiny'",))
    _refused(trained, memo, "merge", "harbor", "glassworks", fragments=("base model 'tiny'",))  # trained strategy


def test_a_corrupt_task_vector_is_never_merged(trained):
    memo = Memo(trained.settings.home, None)
    _flip_a_byte(trained, trained.list_task_vectors("harbor")[0].manifest_sha256)
    _drop_caches(trained)
    _refused(trained, memo, "merge", "harbor", "glassworks", "--strategy", "ties", fragments=("task vector harbor@v1",))


def test_a_corrupt_merge_is_never_exported_published_or_served(trained, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    memo = Memo(trained.settings.home, None)
    memo("merge", "harbor", "glassworks", "--strategy", "ties", "--channel", "production")
    _flip_a_byte(trained, trained.get_merge(1).manifest_sha256)
    _drop_caches(trained)
    _refused(trained, memo, "export", "1", tmp_path / "out", fragments=("merge-1",))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    _refused(trained, memo, "publish", "1", "--repo", "org/memory", "--endpoint", hub.url, fragments=("merge-1",))
    assert hub.state.stats["lfs_uploads"] == 0 and hub.state.stats["commits"] == 0
    _refused(trained, memo, "serve", "production", "--port", "0", fragments=("merge-1",))


def test_a_cache_entry_is_a_verified_copy_not_a_link(trained):
    base = trained.get_base("tiny").manifest_sha256
    _drop_caches(trained)
    directory = materialize(trained.store, base, trained.settings.home / "cache" / "models")
    for rel, sha in manifest_files(load_manifest(trained.store, base)).items():
        cached, blob = directory / rel, trained.store.path(sha)
        assert cached.read_bytes() == blob.read_bytes() and not os.path.samefile(cached, blob)
        assert cached.stat().st_nlink == 1 and cached.stat().st_mode & 0o222 == 0
    # Damage to the cache is not damage to the store: verify finds the copy damaged, and removes it.
    shard = directory / "model.safetensors"
    os.chmod(shard, 0o644)
    shard.write_bytes(b"scribbled over")
    report = trained.verify()
    assert report.problems == () and [c.entry for c in report.cache_problems] == [f"models/{base}"]
    assert not directory.exists() and trained.verify().ok


def test_a_cache_entry_of_hard_links_is_rebuilt_as_copies(trained):
    """Homes made by an older memo hold cache entries linked into the store."""
    base = trained.get_base("tiny").manifest_sha256
    _drop_caches(trained)
    entry = trained.settings.home / "cache" / "models" / base
    entry.mkdir(parents=True)
    for rel, sha in manifest_files(load_manifest(trained.store, base)).items():
        (entry / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(trained.store.path(sha), entry / rel)
    directory = materialize(trained.store, base, trained.settings.home / "cache" / "models")
    assert directory == entry and all(p.stat().st_nlink == 1 for p in entry.iterdir() if p.is_file())
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")], "nothing left aside"
