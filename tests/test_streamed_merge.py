"""A merge reads its members where they lie: from the cache when they are there, else straight from
the blob store (the local store's files, or a bucket's objects streamed into the command's work
directory), each blob checked against its sha256 before anything is written. What a home stores it
keeps in its cache (write-through), so it never fetches back what it has just stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from merging import MergeInput, MergeSpec, merge
from registry import Corrupt, Registry
from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import materialize
from tests.support.blobs import flip_a_byte
from tests.support.snapshot import registry_state
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector


@pytest.fixture
def registered(registry: Registry, tiny_model, docs, tmp_path) -> dict[str, Path]:
    """Base ``tiny`` and two corpora with random task vectors; their directories by corpus."""
    registry.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
    return {
        name: register_random_task_vector(registry, name, docs, tmp_path, seed)
        for seed, name in enumerate(("atlas", "harbor"))
    }


def _home(reg: Registry) -> Path:
    return reg.settings.home


def _weights(reg: Registry, manifest_sha: str) -> str:
    return manifest_files(load_manifest(reg.store, manifest_sha))["model.safetensors"]


def _member_caches(reg: Registry) -> list[str]:
    root = _home(reg) / "cache" / "task_vectors"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


@pytest.mark.parametrize("members", ["streamed", "cached"])
def test_the_merge_equals_the_engine_on_the_registered_directories(registry, registered, tiny_model, tmp_path, members):
    manifests = [registry.list_task_vectors(name)[0].manifest_sha256 for name in registered]
    shutil.rmtree(_home(registry) / "cache" / "task_vectors", ignore_errors=True)
    if members == "cached":
        for sha in manifests:
            materialize(registry.store, sha, _home(registry) / "cache" / "task_vectors")
    record = registry.merge(list(registered), strategy="ties", density=0.5, progress=False, evaluate=False)

    expected = tmp_path / "expected"
    inputs = tuple(MergeInput(d, kind="task_vector", density=0.5) for d in registered.values())
    merge(MergeSpec("ties", base=tiny_model, inputs=inputs, out_dtype="float32"), expected)
    got = load_file(registry.export(record.id, tmp_path / "out") / "model.safetensors")
    want = load_file(expected / "model.safetensors")
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
    assert _member_caches(registry) == (sorted(manifests) if members == "cached" else []), "streams add no entry"
    assert not list((_home(registry) / "tmp").glob("*/stream-*")), "no spool file outlives the merge"


def test_a_corrupt_streamed_member_stops_the_merge_before_anything_is_written(registry, registered):
    shutil.rmtree(_home(registry) / "cache", ignore_errors=True)
    sha = _weights(registry, registry.list_task_vectors("harbor")[0].manifest_sha256)
    flip_a_byte(registry.store, sha)
    before = registry_state(registry)
    with pytest.raises(Corrupt, match=rf"task vector harbor@v1: blob {sha} \(model.safetensors\) is corrupt"):
        registry.merge(list(registered), strategy="ties", progress=False, evaluate=False)
    assert registry_state(registry) == before
    models = sorted(p.name for p in (_home(registry) / "cache" / "models").iterdir() if p.is_dir())
    assert models == [registry.get_base("tiny").manifest_sha256], "no merged model, not even in the cache"


def test_a_home_keeps_what_it_stores_in_its_cache(registry, registered, blobs_url):
    stored_here = [registry.list_task_vectors(name)[0].manifest_sha256 for name in registered]
    # From a bucket the registering home keeps a copy; from a local store the blobs are read in place.
    assert _member_caches(registry) == (sorted(stored_here) if blobs_url else [])
    record = registry.merge(list(registered), strategy="ties", progress=False, evaluate=False)
    entry = _home(registry) / "cache" / "models" / record.manifest_sha256
    assert (entry / "config.json").is_file()
    stored = registry.store.get_bytes(_weights(registry, record.manifest_sha256))  # uploaded as it was written
    assert stored == (entry / "model.safetensors").read_bytes()
    assert not list((_home(registry) / "tmp").iterdir()), "the merge's own output moved into the cache"
