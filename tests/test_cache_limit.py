"""The local cache under a size limit: least recently used entries go, never one a command uses,
and processes materialising the same artifact at once make one copy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from registry.store.blobstore import LocalBlobStore
from registry.store.cache_limit import CacheUse, parse_size
from registry.store.cache_records import RECORD_SUFFIX, entry_problem
from registry.store.errors import InvalidInput
from registry.store.manifests import store_directory
from registry.store.workspace import Workspace


def test_sizes():
    assert parse_size("5G") == 5 * 10**9 and parse_size("500M") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1000") == 1000 and parse_size("1.5k") == 1500
    for bad in ("", "five", "5X", "-1G"):
        with pytest.raises(InvalidInput, match="not a size"):
            parse_size(bad)


@pytest.fixture
def artifacts(tmp_path):
    """A blob store with two 'models' of 1 MB each."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.create()
    shas = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(name.encode() * 1_000_000)
        shas.append(store_directory(store, d, kind="model"))
    return store, shas


def _workspace(store, home, limit: int) -> Workspace:
    return Workspace(None, store, home, CacheUse(limit=limit))  # type: ignore[arg-type]  # no database needed


def test_a_limit_below_two_models_keeps_the_one_in_use(artifacts, tmp_path):
    store, (a, b) = artifacts
    home = tmp_path / "home"
    limit = 1_500_000  # one model fits, two do not
    first = _workspace(store, home, limit)
    entry_a = first.materialize(a, "models", what="a")
    entry_b = first.materialize(b, "models", what="b")
    assert entry_a.is_dir() and entry_b.is_dir(), "a command keeps everything it uses, even past the limit"
    other = CacheUse(limit=limit)
    assert other.hold(entry_a)  # another command uses a
    first.cache_use.release()
    assert other.trim(home / "cache") == [entry_b] and entry_a.is_dir() and not entry_b.exists()
    other.release()
    later = _workspace(store, home, limit)
    assert later.materialize(b, "models", what="b").is_dir()  # rebuilt from the blobs, verified
    assert not entry_a.exists(), "the least recently used entry went to make room"
    later.cache_use.release()


def test_processes_materialising_one_artifact_at_once_make_one_copy(artifacts, tmp_path):
    store, (a, _) = artifacts
    cache = tmp_path / "cache" / "models"
    script = (
        "import sys; from pathlib import Path; from registry.store.blobstore import LocalBlobStore;"
        "from registry.store.materialize import materialize;"
        "print(materialize(LocalBlobStore(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3])))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(store.root), a, str(cache)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = {p.communicate(timeout=120)[0].decode().strip() for p in procs}
    assert outputs == {str(cache / a)}
    assert sorted(p.name for p in cache.iterdir()) == [a, a + RECORD_SUFFIX], "one entry and its record, no leftovers"
    assert entry_problem(cache / a, full=True) is None
    assert (cache / a / "model.safetensors").read_bytes() == b"a" * 1_000_000
