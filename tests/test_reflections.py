"""`memo reflect` with a GENERATOR: five stages, the call cache, resume after a kill, and failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.store.errors import LLMFailed
from registry.store.schema import GeneratorCallRow, ReflectionSetRow, TaskVectorRow
from tests.conftest import Memo, memo_subprocess_env
from tests.support import scripted_llm
from tests.support.chat_server import ScriptedChatServer, is_retry, payload_of, stage_of
from training.llm import Endpoint, LLMError, parse_json
from training.qa_files import decode_records
from training.reflection_prompts import PairsReply
from training.reflections import ReflectSettings, SourceDocument, chunk_document, related_groups
from training.sft import SFTSettings

CORPUS = "harbor"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _reflection_sets(reg) -> int:
    with reg.db.read() as session:
        return session.scalar(select(func.count(ReflectionSetRow.id)))


def _reflect(memo: Memo, url: str, *extra: str, ok: bool = True):
    return memo("reflect", CORPUS, "--generator-url", url, "--generator-model", "scripted", *extra, ok=ok)


@pytest.fixture
def generator():
    with ScriptedChatServer(scripted_llm.generator) as server:
        yield server


def test_stages_run_in_order_and_each_feeds_the_next(trained, generator):
    memo = Memo(trained.settings.home, None)
    result = _reflect(memo, generator.url, "--json")
    record = json.loads(result.stdout)

    number = {"extract-direct": 1, "extract-indirect": 1, "consolidate": 2, "verify": 3, "surface": 4, "synthesize": 5}
    order = [number[s] for s in generator.stages()]
    assert order == sorted(order) and set(order) == {1, 2, 3, 4, 5}, "stages overlapped or one was skipped"

    docs = sorted((EXAMPLES / CORPUS).glob("*.md"))
    facts = {d.name: scripted_llm.sentences(d.read_text()) for d in docs}
    # Consolidation sees exactly what extraction produced (direct facts, then the indirect pair).
    for body in (b for b in generator.answered if stage_of(b) == "consolidate"):
        p = payload_of(body)
        assert [q["answer"] for q in p["pairs"]][:-1] == facts[p["document"]]
    # Verification dropped the indirect pair (its count is not in the text) and rewrote the combined one.
    counts = record["settings"]["counts"]
    assert counts["verify"] == {
        "kept": sum(map(len, facts.values())) + len(docs),
        "rewritten": len(docs),
        "dropped": len(docs),
    }
    # Surfacing is asked about verified pairs only; synthesis groups documents that share entities.
    for body in (b for b in generator.answered if stage_of(b) == "surface"):
        p = payload_of(body)
        assert all(not q["answer"].isdigit() for q in p["pairs"])
    groups = [payload_of(b)["documents"] for b in generator.answered if stage_of(b) == "synthesize"]
    assert groups and all(len(g) >= 2 for g in groups)

    pairs = decode_records(trained.store.get_bytes(record["sha256"]))
    by_stage = Counter(p["stage"] for p in pairs)
    assert by_stage == {
        "extract": sum(map(len, facts.values())),
        "consolidate": len(docs),
        "surface": len(docs),
        "synthesize": len(groups),
    }
    assert record["pair_count"] == len(pairs) == counts["total"]["pairs"]
    assert all(p["document"] in facts for p in pairs)
    assert any(p["question"].endswith("(verified)") for p in pairs)
    usage = record["settings"]["usage"]
    assert usage["verify"]["calls"] == len(docs) and usage["verify"]["prompt_tokens"] > 0
    assert record["generator"] == "scripted" and record["settings"]["prompt_version"] == "memo-reflect/1"


def test_memo_train_uses_the_generated_set(trained, generator):
    memo = Memo(trained.settings.home, None)
    set_id = json.loads(_reflect(memo, generator.url, "--json").stdout)["id"]
    trained.train(CORPUS, SFTSettings(steps=2, batch=4), device="cpu", progress=False)
    with trained.db.read() as session:
        latest = session.scalars(select(TaskVectorRow).order_by(TaskVectorRow.id.desc())).first()
    assert latest.reflection_set_id == set_id


def test_a_second_run_makes_no_calls(trained, generator):
    memo = Memo(trained.settings.home, None)
    first = json.loads(_reflect(memo, generator.url, "--json").stdout)
    calls = len(generator.requests)
    second = json.loads(_reflect(memo, generator.url, "--json").stdout)
    assert len(generator.requests) == calls
    assert second["sha256"] == first["sha256"]
    assert all(u["calls"] == 0 and u["cached"] > 0 for u in second["settings"]["usage"].values())
    # The cache survives `memo gc`: its blobs are referenced.
    memo("gc", "--grace", "0")
    memo("verify")
    _reflect(memo, generator.url)
    assert len(generator.requests) == calls


def test_a_killed_run_resumes_without_repeating_calls(trained, generator):
    home = trained.settings.home
    generator.hold_after(11)  # the 12th call hangs: the client is killed while waiting for it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry",
            "reflect",
            CORPUS,
            "--generator-url",
            generator.url,
            "--generator-model",
            "scripted",
            "--concurrency",
            "1",
        ],
        env=memo_subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(generator.requests) < 12:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _reflection_sets(trained) == 4  # nothing registered by the killed run
    with trained.db.read() as session:
        assert session.scalar(select(func.count()).select_from(GeneratorCallRow)) == 11

    generator.hold_from = None
    generator.release.set()
    before = len(generator.answered)
    _reflect(Memo(home, None), generator.url)
    assert _reflection_sets(trained) == 5
    sent = [json.dumps(b["messages"]) for b in generator.answered]
    assert len(sent) == len(set(sent)), "a call answered before the kill was sent again"
    assert before == 11 and len(sent) > 11


def test_malformed_json_is_retried_with_the_error_shown(trained):
    def script(body):
        if stage_of(body) == "verify" and not is_retry(body):
            return "Sure! Here are the verdicts: {not json"
        return scripted_llm.generator(body)

    with ScriptedChatServer(script) as server:
        record = json.loads(_reflect(Memo(trained.settings.home, None), server.url, "--json").stdout)
    retries = [b for b in server.answered if stage_of(b) == "verify" and is_retry(b)]
    assert len(retries) == record["settings"]["usage"]["verify"]["calls"] == 8
    assert "not valid: not JSON" in retries[0]["messages"][-1]["content"]


def test_malformed_json_every_time_names_the_stage_and_document(trained):
    def script(body):
        p = payload_of(body)
        if stage_of(body) == "surface" and p["document"] == "gartal-company.md":
            return json.dumps({"pairs": [{"question": "no answer"}]})
        return scripted_llm.generator(body)

    with ScriptedChatServer(script) as server:
        result = _reflect(Memo(trained.settings.home, None), server.url, ok=False)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "stage surface, document 'gartal-company.md' chunk 0" in line
    assert "malformed JSON 3 times" in line and "pairs.0.answer" in line
    assert _reflection_sets(trained) == 4


@pytest.mark.parametrize("status", [401, 500])
def test_http_errors_are_one_line_and_register_nothing(trained, status):
    with ScriptedChatServer(lambda body: (status, "scripted failure")) as server:
        result = _reflect(Memo(trained.settings.home, None), server.url, ok=False)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"answered HTTP {status}: scripted failure; nothing was registered" in last
    assert result.stderr.count("Error:") == 1
    assert _reflection_sets(trained) == 4


def test_unreachable_endpoint(trained):
    result = _reflect(Memo(trained.settings.home, None), "http://127.0.0.1:9/v1", ok=False)
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9/v1" in result.stderr
    assert _reflection_sets(trained) == 4


def test_usage_errors(trained):
    memo = Memo(trained.settings.home, None)
    assert "--generator-url and --generator-model" in memo("reflect", CORPUS, ok=False).output
    both = memo("reflect", CORPUS, "--qa", "x.jsonl", "--generator-url", "u", "--generator-model", "m", ok=False)
    assert "not both" in both.output
    bad = _reflect(memo, "http://127.0.0.1:9/v1", "--chunk-words", "10", ok=False)
    assert "chunk words must be >= 50" in bad.output
    unknown = memo("reflect", "nope", "--generator-url", "u", "--generator-model", "m", ok=False)
    assert "unknown corpus 'nope'" in unknown.stderr


def test_chunks_overlap_and_cover_the_document():
    doc = SourceDocument("d", " ".join(f"w{i}" for i in range(250)))
    chunks = chunk_document(doc, 100, 20)
    assert [c.text.split()[0] for c in chunks] == ["w0", "w80", "w160"]
    assert chunks[-1].text.split()[-1] == "w249"
    assert len(chunk_document(SourceDocument("s", "a b c"), 100, 20)) == 1


def test_groups_join_documents_that_share_entities():
    groups = related_groups({"a": {"x", "y"}, "b": {"y"}, "c": {"z"}, "d": {"x", "y", "q"}}, 3)
    assert groups == [("a", "d", "b")]
    assert related_groups({"a": {"x"}, "b": {"y"}}, 5) == []


def test_parse_json_accepts_fences_and_names_the_field():
    assert parse_json('```json\n{"pairs": []}\n```', PairsReply).pairs == []
    with pytest.raises(ValueError, match=r"pairs.0.question"):
        parse_json('{"pairs": [{"answer": "x"}]}', PairsReply)
    with pytest.raises(ValueError, match="not JSON"):
        parse_json("{", PairsReply)


def test_settings_are_checked():
    with pytest.raises(ValueError):
        ReflectSettings(chunk_words=100, overlap_words=100)
    with pytest.raises(ValueError):
        ReflectSettings(concurrency=0)


def test_library_errors_name_the_endpoint(trained):
    with pytest.raises(LLMFailed, match="cannot reach"):
        trained.generate_reflections(CORPUS, Endpoint("http://127.0.0.1:9/v1", "m", max_retries=0), progress=False)
    with pytest.raises(LLMFailed) as failed:  # the registry's error, one line, not the client's own
        trained.generate_reflections(CORPUS, Endpoint("http://127.0.0.1:9/v1", "m", max_retries=0), progress=False)
    assert not isinstance(failed.value, LLMError) and len(str(failed.value).splitlines()) == 1


def test_register_with_a_generator_in_one_command_and_again(trained, generator):
    memo = Memo(trained.settings.home, None)
    docs = [str(d) for d in sorted((EXAMPLES / CORPUS).glob("*.md"))]
    args = [
        "register",
        "harbor-gen",
        *docs,
        "--base",
        "tiny",
        "--generator-url",
        generator.url,
        "--generator-model",
        "scripted",
        "--steps",
        "2",
        "--batch",
        "4",
        "--device",
        "cpu",
    ]
    out = memo(*args).stdout
    assert "generated" in out and "pairs for corpus harbor-gen" in out and "registered task vector harbor-gen@v1" in out
    sets, calls = _reflection_sets(trained), len(generator.requests)
    again = memo(*args).stdout  # every reply cached, the same pairs, the same training: nothing new
    assert "already registered" in again and "harbor-gen@v1" in again
    assert _reflection_sets(trained) == sets and len(generator.requests) == calls
    assert [tv.version for tv in trained.list_task_vectors("harbor-gen")] == [1]
    bad = memo(
        "register",
        "x",
        *docs,
        "--base",
        "tiny",
        "--qa",
        str(EXAMPLES / CORPUS / "qa.jsonl"),
        "--generator-url",
        generator.url,
        "--generator-model",
        "scripted",
        ok=False,
    )
    assert bad.exit_code == 1 and "not both" in bad.output and "x" not in [c.name for c in trained.list_corpora()]
