"""Bad input: a one-line error naming the problem and the fix, exit 1, registry unchanged."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from registry.store.errors import AlreadyExists, Corrupt, InvalidInput, NotFound
from tests.support.cli import assert_one_line_error, unchanged

# --- base models ---------------------------------------------------------------------


def test_base_directory_missing(memo, tmp_path):
    unchanged(memo, "base", "add", tmp_path / "nowhere", fragments=("no model directory",))


def test_base_without_safetensors(memo, tmp_path):
    d = tmp_path / "empty-model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    unchanged(memo, "base", "add", d, fragments=("no *.safetensors weights",))


def test_base_pickle_only_is_refused(memo, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    unchanged(memo, "base", "add", d, fragments=("pickle", "never loads", "safe_serialization"))


def test_base_truncated_shard(memo, model_copy):
    shard = model_copy / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    unchanged(memo, "base", "add", model_copy, fragments=("model.safetensors", "truncated"))


def test_base_corrupt_header(memo, model_copy):
    shard = model_copy / "model.safetensors"
    data = bytearray(shard.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 : 8 + n] = b"{" * n  # not JSON any more
    shard.write_bytes(bytes(data))
    unchanged(memo, "base", "add", model_copy, fragments=("corrupt safetensors header",))


def test_base_header_longer_than_file(memo, model_copy):
    (model_copy / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    unchanged(memo, "base", "add", model_copy, fragments=("truncated",))


def test_base_index_names_missing_shard(with_base, tiny_model_sharded, tmp_path):
    import shutil

    d = Path(shutil.copytree(tiny_model_sharded, tmp_path / "sharded"))
    shards = sorted(d.glob("model-*.safetensors"))
    assert len(shards) > 1, "the sharded fixture must have several shards"
    shards[-1].unlink()
    unchanged(with_base, "base", "add", d, fragments=(shards[-1].name, "missing"))


def test_base_without_config(memo, model_copy):
    (model_copy / "config.json").unlink()
    unchanged(memo, "base", "add", model_copy, fragments=("no config.json",))


def test_base_duplicate_name_and_weights(with_base, tiny_model, tiny_model_sharded):
    unchanged(with_base, "base", "add", tiny_model_sharded, "--name", "tiny", fragments=("'tiny' already exists",))
    unchanged(
        with_base, "base", "add", tiny_model, "--name", "other", fragments=("already registered as base model 'tiny'",)
    )


def test_base_invalid_name(memo, tiny_model):
    unchanged(memo, "base", "add", tiny_model, "--name", "bad name!", fragments=("invalid base model name",))


def test_sharded_base_registers_with_same_parameter_count(with_base, tiny_model_sharded):
    out = json.loads(with_base("base", "add", tiny_model_sharded, "--name", "sharded", "--json").stdout)
    assert out["parameter_count"] == json.loads(with_base("base", "show", "tiny", "--json").stdout)["parameter_count"]


# --- corpora -------------------------------------------------------------------------


def test_corpus_unknown_base(memo, docs):
    unchanged(
        memo, "corpus", "add", "c", *docs, "--base", "nope", fragments=("unknown base model 'nope'", "memo base add")
    )


def test_corpus_duplicate_name(with_base, docs):
    with_base("corpus", "add", "c", *docs, "--base", "tiny")
    unchanged(with_base, "corpus", "add", "c", *docs, "--base", "tiny", fragments=("'c' already exists",))


def test_corpus_missing_document(with_base, docs, tmp_path):
    unchanged(
        with_base,
        "corpus",
        "add",
        "c",
        *docs,
        tmp_path / "gone.md",
        "--base",
        "tiny",
        fragments=("gone.md", "no such document"),
    )


def test_corpus_unreadable_document(with_base, docs, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    unchanged(with_base, "corpus", "add", "c", *docs, bad, "--base", "tiny", fragments=("latin1.txt", "not UTF-8"))


def test_corpus_malformed_jsonl_names_the_line(with_base, docs, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": oops}\n')
    unchanged(
        with_base, "corpus", "add", "c", *docs, bad, "--base", "tiny", fragments=("broken.jsonl:2", "not valid JSON")
    )


def test_corpus_unsupported_type_and_empty(with_base, tmp_path):
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF")
    unchanged(with_base, "corpus", "add", "c", pdf, "--base", "tiny", fragments=("unsupported document type",))
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    unchanged(with_base, "corpus", "add", "c", empty, "--base", "tiny", fragments=("empty",))


def test_corpus_two_documents_with_one_name(with_base, docs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "harbor.md").write_text("another harbour\n")
    unchanged(
        with_base,
        "corpus",
        "add",
        "c",
        *docs,
        other / "harbor.md",
        "--base",
        "tiny",
        fragments=("two documents are named 'harbor.md'",),
    )


def test_not_a_home(tmp_path, docs):
    from tests.conftest import Memo

    m = Memo(tmp_path / "not-home", None)
    result = m("corpus", "list", ok=False)
    assert_one_line_error(result, "is not a memo home", "memo init")
    assert not (tmp_path / "not-home").exists(), "a failed command must not create a home"


# --- the Python API raises the same family ---------------------------------------------


def test_library_errors_are_typed(registry, tiny_model, model_copy, docs):
    with pytest.raises(NotFound, match="unknown base model"):
        registry.add_corpus("c", docs, base="tiny")
    registry.add_base(tiny_model, name="tiny")
    with pytest.raises(AlreadyExists):
        registry.add_base(tiny_model, name="tiny")
    with pytest.raises(InvalidInput, match="at least one document"):
        registry.add_corpus("c", [], base="tiny")
    with pytest.raises(InvalidInput, match="no config.json"):
        registry.add_base(docs[0].parent)
    shard = model_copy / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(Corrupt, match="truncated"):
        registry.add_base(model_copy, name="broken")
