"""Inputs that once broke a corpus for good, or crashed with a traceback: each is now taken or refused
in one line, and the registry stays unchanged and usable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_CORPORA
from tests.support.cli import assert_one_line_error, unchanged
from tests.support.snapshot import registry_state
from training.sft import SFTSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HARBOR = EXAMPLES / "harbor"
DEEP = "[" * 50_000  # far past any parser's recursion limit, under the record length cap


def _qa(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- line separators inside a record ----------------------------------------------------


@pytest.mark.parametrize("char", ["\u2028", "\u0085", "\u2029", "\x1c", "\x0b", "\r"])
def test_record_with_a_line_separator_trains(trained, tmp_path, char):
    """JSON allows these raw inside a string; splitting stored lines on them once broke the corpus."""
    qa = _qa(
        tmp_path / "qa.jsonl",
        {"question": f"Who founded{char}Port Velin?", "answer": f"Ada{char}Korr"},
        {"question": "Where is Port Velin?", "answer": "on the coast"},
    )
    record = trained.import_reflections("harbor", qa)
    assert record.pair_count == 2
    from training.qa_files import decode_records

    pairs = decode_records(trained.store.get_bytes(record.sha256))
    assert pairs[0]["question"] == f"Who founded{char}Port Velin?" and pairs[0]["answer"] == f"Ada{char}Korr"
    tv = trained.train("harbor", SFTSettings(steps=2, batch=2, lr=1e-3), device="cpu", progress=False)
    assert tv.version == 2 and tv.training["dataset_sha256"] == record.sha256


def test_jsonl_document_with_a_line_separator(with_base, tmp_path):
    doc = tmp_path / "notes.jsonl"
    doc.write_text(json.dumps({"text": "first\u2028second"}, ensure_ascii=False) + "\n")
    with_base("corpus", "add", "notes", doc, "--base", "tiny")
    from registry import Registry
    from training.documents import document_text

    with Registry.open(with_base.home, database_url=with_base.database_url) as reg:
        stored = reg.get_corpus("notes").documents[0]
        assert document_text("jsonl", reg.store.get_bytes(stored.sha256)) == "first\u2028second"


# --- huge and deeply nested records -------------------------------------------------------


def test_a_100_mb_qa_line_is_refused_fast(with_base, docs, tmp_path):
    huge = tmp_path / "huge.jsonl"
    with open(huge, "w") as f:
        f.write('{"question": "q", "answer": "')
        f.write("a" * (100 * 1024 * 1024))
        f.write('"}\n')
    started = time.monotonic()
    unchanged(
        with_base,
        "register",
        "c",
        *docs,
        "--qa",
        huge,
        "--base",
        "tiny",
        "--steps",
        "1",
        fragments=("huge.jsonl:1", "over the limit", "characters"),
    )
    assert time.monotonic() - started < 60, "the refusal must not tokenise the record"


def test_a_long_record_is_cut_before_it_is_tokenised():
    from training.chat import QAPair, encode
    from training.tiny import train_tokenizer

    tokenizer = train_tokenizer(["Who founded the Gartal Company? Kalin Zelbexeth"] * 20, 300)
    started = time.monotonic()
    example = encode(tokenizer, QAPair("why " * 2_000_000, "because"), max_length=64)
    assert time.monotonic() - started < 5, "8 MB of question must not be encoded whole"
    assert len(example.input_ids) == 64 and len(example.labels) == 64


@pytest.mark.parametrize("where", ["qa", "heldout"])
def test_deeply_nested_qa_is_refused(with_base, docs, tmp_path, where):
    bad = tmp_path / "deep.jsonl"
    bad.write_text(DEEP + "\n")
    qa = bad if where == "qa" else _qa(tmp_path / "qa.jsonl", {"question": "Who?", "answer": "Ada"})
    extra = ["--heldout", bad] if where == "heldout" else []
    unchanged(
        with_base,
        "register",
        "c",
        *docs,
        "--qa",
        qa,
        *extra,
        "--base",
        "tiny",
        "--steps",
        "1",
        fragments=("deep.jsonl:1", "nested too deeply"),
    )


def test_deeply_nested_jsonl_document_is_refused(with_base, tmp_path):
    bad = tmp_path / "deep.jsonl"
    bad.write_text('{"text": "fine"}\n' + DEEP + "\n")
    unchanged(with_base, "corpus", "add", "c", bad, "--base", "tiny", fragments=("deep.jsonl:2", "nested too deeply"))


def test_deeply_nested_generator_reply_is_a_retry_not_a_crash():
    from pydantic import BaseModel

    from training.llm import parse_json

    class Reply(BaseModel):
        pairs: list

    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(DEEP, Reply)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc\n", "abc\r", "\nabc", "ab\nc", "abc "])
def test_names_with_a_newline_are_refused(with_base, docs, name):
    unchanged(with_base, "corpus", "add", name, *docs, "--base", "tiny", fragments=("invalid corpus name",))
    unchanged(with_base, "channel", "set", name, "--no-gate", fragments=("invalid channel name",))


def test_base_name_with_a_trailing_newline_is_refused(memo, tiny_model):
    unchanged(memo, "base", "add", tiny_model, "--name", "tiny\n", fragments=("invalid base model name",))


def test_merge_and_task_vector_refs_with_a_newline(trained):
    from registry.operations.merges import is_merge_ref
    from registry.store.errors import InvalidInput

    assert is_merge_ref("merge-1") and is_merge_ref("1")
    assert not is_merge_ref("1\n") and not is_merge_ref("merge-1\n")
    from registry.operations.task_vectors import find_task_vector

    with trained.db.read() as session:
        assert find_task_vector(session, "harbor@v1").version == 1
        with pytest.raises(InvalidInput, match="not a corpus name or corpus@vN"):
            find_task_vector(session, "harbor@v1\n")


# --- register is all or nothing ------------------------------------------------------------


@pytest.mark.parametrize("problem", ["missing", "latin-1", "no answer", "unknown document", "heldout"])
def test_register_with_a_bad_qa_file_records_nothing(with_base, docs, tmp_path, problem):
    qa, extra, fragment = tmp_path / "qa.jsonl", [], "qa.jsonl"
    if problem == "latin-1":
        qa.write_bytes('{"question": "caf\xe9?", "answer": "yes"}\n'.encode("latin-1"))
    elif problem == "no answer":
        _qa(qa, {"question": "Who?"})
    elif problem == "unknown document":
        _qa(qa, {"question": "Who?", "answer": "Ada", "document": "elsewhere.md"})
    elif problem == "heldout":
        _qa(qa, {"question": "Who?", "answer": "Ada"})
        extra, fragment = ["--heldout", tmp_path / "gone.jsonl"], "gone.jsonl"
    unchanged(
        with_base, "register", "c", *docs, "--qa", qa, *extra, "--base", "tiny", "--steps", "1", fragments=(fragment,)
    )
    # the same name is still free
    with_base("corpus", "add", "c", *docs, "--base", "tiny")


# --- usage errors are one line, exit 1 --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("merge", "create", "harbor", "--weight", "harbor=abc"),
        ("--no-such-option",),
        ("no-such-command",),
        ("corpus", "add"),
        ("merge", "create", "harbor", "--density", "lots"),
    ],
)
def test_usage_errors_are_one_line_exit_1(memo, args):
    from registry import Registry

    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        before = registry_state(reg)
    result = memo(*args, ok=False)
    assert_one_line_error(result, "--help")
    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        assert registry_state(reg) == before


# --- tables in log files ------------------------------------------------------------------------


def test_tables_are_not_cut_when_output_is_not_a_terminal(capsys):
    from registry.cli.output import print_table

    reason = "rolled back after the river-guilds corpus lost recall on every held-out paraphrase"
    print_table("history", ["channel", "strategy", "reason"], [("production", "joint retraining", reason)])
    out = capsys.readouterr().out
    assert reason in out and "joint retraining" in out and "production" in out, out
    assert "…" not in out


def test_example_corpora_names_are_valid():
    from registry.store.names import check_name

    for name in EXAMPLE_CORPORA:
        assert check_name("corpus", name) == name
