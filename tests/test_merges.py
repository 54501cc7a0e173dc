"""Merges through the registry: recorded, found by content, promoted and rolled back, exported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from merging import MergeInput, MergeOptions, MergeSpec, merge
from registry.store.errors import Conflict, Corrupt, InvalidInput, NotFound
from registry.store.manifests import load_manifest, manifest_files
from registry.store.materialize import materialize
from registry.store.schema import ChannelEventRow, MergeMemberRow, MergeRow
from tests.conftest import memo_subprocess_env
from tests.support.blobs import shas
from tests.support.snapshot import count, registry_state

HARBOR = Path(__file__).resolve().parent.parent / "examples" / "harbor"


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_merge_is_recorded_and_equals_the_engine_run_by_hand(trained, tmp_path):
    rec = trained.merge(["harbor", "glassworks", "observatory"], strategy="ties", progress=False)
    assert rec.ref == "merge-1" and not rec.reused and rec.parent_merge_id is None
    assert [m.ref for m in rec.members] == ["glassworks@v1", "harbor@v1", "observatory@v1"]  # name order
    assert rec.parameters["density"] == 0.3 and rec.parameters["lambda"] == 1.0 and rec.method == "ties"
    assert rec.engine_version and rec.base_model == "tiny"
    assert count(trained, MergeMemberRow) == 3
    # The same merge, run by hand on the stored base and task vectors, gives the same tensors.
    home, store = trained.settings.home, trained.store
    base = materialize(store, trained.list_bases()[0].manifest_sha256, home / "cache" / "models")
    tvs = [
        materialize(store, trained.list_task_vectors(c)[0].manifest_sha256, tmp_path / "tv")
        for c in ("glassworks", "harbor", "observatory")
    ]
    merge(
        MergeSpec("ties", base, tuple(MergeInput(p, "task_vector", density=0.3) for p in tvs), out_dtype="float32"),
        tmp_path / "by-hand",
        MergeOptions(progress=False),
    )
    exported = trained.export("merge-1", tmp_path / "export")
    ours, theirs = tensors(exported), tensors(tmp_path / "by-hand")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(not torch.equal(ours[k], load_file(next(base.glob("*.safetensors")))[k]) for k in ours)


def test_same_content_is_found_not_recomputed(trained):
    first = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    again = trained.merge(["glassworks@v1", "harbor"], strategy="ties", progress=False)
    assert again.reused and again.id == first.id and count(trained, MergeRow) == 1
    other = trained.merge(["harbor", "glassworks"], strategy="ties", density=0.5, progress=False)
    arithmetic = trained.merge(["harbor", "glassworks"], strategy="ties", method="task_arithmetic", progress=False)
    weighted = trained.merge(["harbor", "glassworks"], strategy="ties", weights={"harbor": 2.0}, progress=False)
    assert len({first.id, other.id, arithmetic.id, weighted.id}) == 4
    assert weighted.members[1].weight == 2.0 and arithmetic.parameters["density"] is None


def test_every_method_merges_through_the_registry_with_its_parameters_recorded(trained, tmp_path):
    """Each of mergekit's task-vector methods (and linear) is a recorded merge; random ones keep their seed."""
    from merging import METHODS

    made = {}
    for method in METHODS:
        rec = trained.merge(
            ["harbor", "glassworks"], strategy="ties", method=method, method_options={"seed": 7}, evaluate=False,
            progress=False,
        )  # fmt: skip
        made[method] = rec
        config = yaml.safe_load((trained.export(rec.ref, tmp_path / method) / "mergekit_config.yml").read_text())
        assert rec.method == method == config["merge_method"]
        assert config.get("random_seed") == (7 if METHODS[method].random else None)
        assert rec.parameters.get("seed") == (7 if METHODS[method].random else None)
        assert (rec.parameters["density"] is None) == (not METHODS[method].trims)
    assert made["breadcrumbs"].parameters["gamma"] == 0.01 and made["della"].parameters["epsilon"] == 0.15
    assert made["dare_ties"].parameters["rescale"] is True and "rescale" not in made["ties"].parameters
    assert len({r.manifest_sha256 for r in made.values()}) == len(METHODS)
    again = trained.merge(["harbor", "glassworks"], strategy="ties", method="dare_ties", method_options={"seed": 7})
    other = trained.merge(
        ["harbor", "glassworks"], strategy="ties", method="dare_ties", method_options={"seed": 8}, evaluate=False,
        progress=False,
    )  # fmt: skip
    assert again.reused and again.id == made["dare_ties"].id
    assert not other.reused and other.manifest_sha256 != made["dare_ties"].manifest_sha256


def test_channel_promote_rollback_and_log(trained):
    m1 = trained.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False)
    m2 = trained.merge(["harbor", "glassworks", "observatory"], strategy="ties", channel="production", progress=False)
    m3 = trained.merge(
        ["harbor", "glassworks", "observatory", "river-guilds"], strategy="ties", channel="production", progress=False
    )
    assert (m2.parent_merge_id, m3.parent_merge_id) == (m1.id, m2.id)
    assert trained.get_channel("production").current_merge_id == m3.id
    back = trained.rollback("production", reason="m3 forgot harbor")
    assert (back.from_merge_id, back.to_merge_id, back.action) == (m3.id, m2.id, "rollback")
    assert trained.rollback("production").to_merge_id == m1.id  # two back, not a toggle
    with pytest.raises(InvalidInput, match="no earlier merge"):
        trained.rollback("production")
    assert trained.rollback("production", to=m3.id).to_merge_id == m3.id
    assert trained.promote(m3.id, "production") is None  # already there: no event
    log = trained.log("production")
    assert [(e.action, e.from_merge_id, e.to_merge_id) for e in log] == [
        ("promote", None, m1.id),
        ("promote", m1.id, m2.id),
        ("promote", m2.id, m3.id),
        ("rollback", m3.id, m2.id),
        ("rollback", m2.id, m1.id),
        ("rollback", m1.id, m3.id),
    ]
    assert log[3].reason == "m3 forgot harbor"
    assert trained.get_merge("production").id == m3.id


def test_export_is_a_standard_model_directory(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    trained.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False)
    out = trained.export("production", tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type in ("llama", "qwen2")
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model_relation"] == "merge" and meta["library_name"] == "transformers"
    assert "harbor" in card and "glassworks" in card
    config = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert config["merge_method"] == "ties" and [m["task_vector"] for m in config["models"]] == [
        "glassworks@v1",
        "harbor@v1",
    ]
    prov = json.loads((out / "memo-provenance.json").read_text())["merge"]
    assert prov["id"] == 1 and prov["base"]["name"] == "tiny" and len(prov["members"]) == 2
    assert all(m["dataset_sha256"] for m in prov["members"])
    assert (out / "tokenizer.json").is_file()
    assert not os.path.samefile(
        out / "model.safetensors",
        materialize(trained.store, trained.get_merge(1).manifest_sha256, trained.settings.home / "cache" / "models")
        / "model.safetensors",
    )  # copies: editing the export cannot touch the registry
    with pytest.raises(InvalidInput, match="not an empty directory"):
        trained.export("production", out)


@pytest.fixture
def other_base_corpus(trained, tmp_path):
    """A corpus on a second base of the same shapes, with a task vector."""
    base_dir = materialize(trained.store, trained.list_bases()[0].manifest_sha256, tmp_path / "b")
    copy = Path(shutil.copytree(base_dir, tmp_path / "tiny2"))
    for f in copy.glob("*.safetensors"):
        state = {k: v + 0.01 for k, v in load_file(f).items()}
        f.unlink()
        from safetensors.torch import save_file

        save_file(state, f, metadata={"format": "pt"})
    trained.add_base(copy, name="tiny2")
    trained.add_corpus("harbor2", sorted(HARBOR.glob("*.md")), base="tiny2")
    tv = materialize(trained.store, trained.list_task_vectors("harbor")[0].manifest_sha256, tmp_path / "tv")
    trained.add_task_vector("harbor2", tv, method="full", storage_dtype="float32")
    return "harbor2"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ([], {}, InvalidInput, "name at least one corpus"),
        (["harbor", "atlantis"], {}, NotFound, "unknown corpus 'atlantis'"),
        (["harbor", "harbor@v1"], {}, InvalidInput, "named twice"),
        (["harbor@v9"], {}, NotFound, "has no version 9"),
        (["harbor"], {"density": 0.0}, InvalidInput, "--density"),
        (["harbor"], {"method": "slerp"}, InvalidInput, "unknown merge method"),
        (["harbor"], {"weights": {"glassworks": 1.0}}, InvalidInput, "not being merged"),
        (["harbor"], {"weights": {"harbor": float("nan")}}, InvalidInput, "finite"),
    ],
)
def test_bad_merge_requests_change_nothing(trained, args, kwargs, error, message):
    before = registry_state(trained)
    with pytest.raises(error, match=message):
        trained.merge(args, channel="production", progress=False, **kwargs)
    assert registry_state(trained) == before


def test_corpus_without_task_vector_and_different_bases(trained, other_base_corpus):
    trained.add_corpus("untrained", sorted(HARBOR.glob("*.md"))[:1], base="tiny")
    before = registry_state(trained)
    with pytest.raises(NotFound, match="corpus 'untrained' has no task vector; run `memo train untrained`"):
        trained.merge(["harbor", "untrained"], strategy="ties", progress=False)
    with pytest.raises(Conflict, match="different base models .*harbor2 on 'tiny2'"):
        trained.merge(["harbor", other_base_corpus], strategy="ties", progress=False)
    assert registry_state(trained) == before


def test_corrupt_task_vector_blob_stops_the_merge(trained):
    sha = next(
        iter(
            manifest_files(
                load_manifest(trained.store, trained.list_task_vectors("harbor")[0].manifest_sha256)
            ).values()
        )
    )
    path = trained.store.path(sha)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    before = registry_state(trained)
    with pytest.raises(Corrupt, match=f"task vector harbor@v1: blob {sha}.*corrupt"):
        trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    assert registry_state(trained) == before


def test_rollback_and_promote_errors(trained):
    before = registry_state(trained)
    with pytest.raises(NotFound, match="unknown channel 'nowhere'"):
        trained.rollback("nowhere")
    with pytest.raises(NotFound, match="unknown merge"):
        trained.promote(42, "production")
    with pytest.raises(InvalidInput, match="not a merge id"):
        trained.promote("latest", "production")
    assert registry_state(trained) == before
    trained.merge(["harbor"], strategy="ties", channel="production", progress=False)
    before = registry_state(trained)
    with pytest.raises(InvalidInput, match="no earlier merge to roll back to"):
        trained.rollback("production")
    assert registry_state(trained) == before


def test_a_failure_in_the_middle_of_a_merge_leaves_nothing(trained, monkeypatch):
    from merging import writer

    real, calls = writer.ModelDirWriter.write, []

    def failing(self, name, chunk):
        calls.append(name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(self, name, chunk)

    monkeypatch.setattr(writer.ModelDirWriter, "write", failing)
    before = registry_state(trained)
    with pytest.raises(OSError):
        trained.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False)
    assert registry_state(trained) == before
    assert not list((trained.settings.home / "tmp").iterdir())
    monkeypatch.setattr(writer.ModelDirWriter, "write", real)
    assert trained.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False).id == 1
    assert trained.verify().ok


@pytest.mark.parametrize("new_blobs", [1, 3])
def test_killed_merge_leaves_no_row_and_reruns(trained, new_blobs):
    """SIGKILL while the merged model's files are being stored: no row, no reachable partial blob."""
    home = trained.settings.home
    cmd = ["memo", "merge", "harbor", "glassworks", "observatory", "--strategy", "ties", "--channel", "production"]
    start = shas(trained.store)
    proc = subprocess.Popen(cmd, env=memo_subprocess_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if len(shas(trained.store) - start) >= new_blobs:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(shas(trained.store) - start) >= new_blobs  # it was storing when killed...
    assert count(trained, MergeRow) == count(trained, ChannelEventRow) == 0  # ...and recorded nothing
    assert trained.verify().ok  # no row reaches a partial blob
    rerun = subprocess.run(cmd, env=memo_subprocess_env(home), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert count(trained, MergeRow) == 1 and trained.get_channel("production").current_merge_id == 1
    assert trained.gc(dry_run=False, grace_seconds=0) is not None and trained.verify().ok


def test_cli_merge_list_show_channel_log(trained, tmp_path):
    from tests.conftest import Memo

    memo = Memo(trained.settings.home, None)
    out = memo(
        "merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production", "--weight", "harbor=1.5"
    ).output
    assert "recorded merge-1" in out and "channel production -> merge-1" in out
    again = memo("merge", "--strategy", "ties", "glassworks", "harbor", "--weight", "harbor=1.5", "--json").output
    assert json.loads(again)["reused"] is True
    assert "merge-1" in memo("merge", "list").output
    shown = json.loads(memo("merge", "show", "production", "--json").output)
    assert [m["corpus"] for m in shown["members"]] == ["glassworks", "harbor"]
    memo("merge", "--strategy", "ties", "harbor", "--channel", "production")
    assert "merge-2 -> merge-1 (rollback)" in memo("rollback", "production", "--reason", "oops").output
    channels = json.loads(memo("channel", "list", "--json").output)
    assert channels[0]["name"] == "production" and channels[0]["current_merge_id"] == 1
    log = memo("log", "production").output
    assert log.count("promote") == 2 and "rollback" in log and "oops" in log
    bad = memo("merge", "--strategy", "ties", "harbor", "--weight", "harbor", ok=False)
    assert bad.exit_code == 1 and "CORPUS=WEIGHT" in bad.output
    bad = memo("rollback", "staging", ok=False)
    assert bad.exit_code == 1 and "unknown channel 'staging'" in bad.output


def test_merge_and_channels_on_each_database(registry, tiny_model, docs, tmp_path):
    """The merge rows, members, triggers and channel history on SQLite and PostgreSQL."""
    from safetensors.torch import save_file
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from training.tiny import train_tokenizer

    base = Path(shutil.copytree(tiny_model, tmp_path / "base"))
    train_tokenizer(["Who founded Port Velin? Ada Korr."] * 20, 200).save_pretrained(base)
    registry.add_base(base, name="tiny")
    torch.manual_seed(0)
    for name in ("a", "b"):
        registry.add_corpus(name, docs, base="tiny")
        tv = tmp_path / f"tv-{name}"
        tv.mkdir()
        save_file(
            {"model.norm.weight": torch.randn(32), "model.layers.0.mlp.up_proj.weight": torch.randn(64, 32)},
            str(tv / "model.safetensors"),
        )
        registry.add_task_vector(name, tv, method="full", storage_dtype="float32")
    m1 = registry.merge(["a"], strategy="ties", channel="production", progress=False)
    m2 = registry.merge(["a", "b"], strategy="ties", channel="production", progress=False)
    assert registry.merge(["b", "a"], strategy="ties", progress=False).reused
    assert registry.rollback("production").to_merge_id == m1.id
    assert [e.action for e in registry.log("production")] == ["promote", "promote", "rollback"]
    assert registry.get_merge(m2.id).parent_merge_id == m1.id
    for statement in ("UPDATE merge SET method = 'x'", "DELETE FROM merge_member", "DELETE FROM channel_event"):
        with (
            pytest.raises(DBAPIError, match="immutable|append-only|fixed once written"),
            registry.db.write() as session,
        ):
            session.execute(text(statement))
    merged = tensors(registry.export(m2.id, tmp_path / "out"))
    original = tensors(base)
    assert not torch.equal(merged["model.norm.weight"], original["model.norm.weight"])
    assert torch.equal(merged["model.layers.1.mlp.up_proj.weight"], original["model.layers.1.mlp.up_proj.weight"])
