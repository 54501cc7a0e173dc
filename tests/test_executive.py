"""The Executive–Memory protocol (`memo ask`), executive + memory evaluation, and `memo serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import openai
import pytest

from executive.memory import LocalMemory, is_unknown
from executive.protocol import ExecutiveProtocol, ProtocolSettings
from tests.conftest import Memo, memo_subprocess_env
from tests.support import scripted_llm
from tests.support.chat_server import ScriptedChatServer, payload_of, stage_of
from training.evaluate import normalize
from training.llm import ChatClient, Endpoint
from training.sft import SFTSettings


class DictMemory:
    """A memory double for protocol tests: fixed answers, "I don't know" otherwise."""

    def __init__(self, answers: dict[str, str], default: str = "I don't know") -> None:
        self.answers, self.default, self.asked = answers, default, []

    def answer(self, questions: list[str]) -> list[str]:
        self.asked += questions
        return [self.answers.get(q, self.default) for q in questions]


@pytest.fixture
def executive():
    with ScriptedChatServer(scripted_llm.executive) as server:
        yield server


@pytest.fixture
def channel(trained):
    """production -> merge 2 (harbor + glassworks, TIES); merge 1 (harbor alone) before it."""
    first = trained.merge(["harbor"], strategy="ties", density=1.0, channel="production", progress=False)
    second = trained.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False)
    assert (first.id, second.id) == (1, 2)
    return trained


def _memory(reg, ref: str) -> LocalMemory:
    return LocalMemory(reg.model_dir(ref), device="cpu")


def _protocol(url: str, memory, **settings) -> ExecutiveProtocol:
    return ExecutiveProtocol(ChatClient(Endpoint(url, "exec", max_retries=0)), memory, ProtocolSettings(**settings))


def test_three_stages_in_order_with_the_memory_between(executive):
    memory = DictMemory({"Who founded Port Velin?": "Ada Korr"})
    trace = _protocol(executive.url, memory).ask("Who founded Port Velin?")
    assert [s.stage for s in trace.steps] == ["decompose", "narrow", "gather", "synthesize"]
    assert [c.question for c in trace.steps[0].memory] == ["Who founded Port Velin?"]
    assert trace.answer == "Ada Korr" and trace.target == "Ada Korr" and trace.stopped == "confirmed"
    # The executive saw the memory's answer as a fact before it confirmed the target.
    narrow = payload_of(executive.answered[1])
    assert narrow["facts"] == [{"question": "Who founded Port Velin?", "answer": "Ada Korr"}]
    assert trace.executive_calls == 4 and trace.memory_calls == 1
    assert json.loads(json.dumps(trace.to_json()))["steps"][0]["memory"][0]["answer"] == "Ada Korr"


def test_narrowing_stops_at_the_round_limit_and_takes_the_top_candidate():
    with ScriptedChatServer(partial(scripted_llm.executive, narrow="continue")) as server:
        memory = DictMemory({}, default="Somebody Else")
        trace = _protocol(server.url, memory, narrow_rounds=3).ask("Who is it?")
    assert [s.stage for s in trace.steps] == ["decompose", "narrow", "narrow", "narrow", "gather", "synthesize"]
    assert trace.stopped == "rounds" and trace.target == "Somebody Else"
    assert [s.round for s in trace.steps if s.stage == "narrow"] == [1, 2, 3]


def test_a_question_answered_i_dont_know_three_times_is_a_dead_end():
    with ScriptedChatServer(partial(scripted_llm.executive, narrow="continue")) as server:
        memory = DictMemory({})
        trace = _protocol(server.url, memory, narrow_rounds=7).ask("Who is it?")
        narrows = [payload_of(b) for b in server.answered if stage_of(b) == "narrow"]
    assert memory.asked.count("Round 0: who is it?") == 3
    assert trace.stopped == "no_questions" and len(narrows) == 4
    assert narrows[-1]["dead_ends"] == ["Round 0: who is it?"]
    assert trace.answer == "I don't know" and all(c.unknown for s in trace.steps for c in s.memory)


def test_unknown_answers_are_recognised():
    assert is_unknown("I don't know.") and is_unknown("  ") and is_unknown("That is unknown")
    assert not is_unknown("Ada Korr")


def test_memo_ask_questions_the_channel_model(channel, executive):
    memo = Memo(channel.settings.home, None)
    question = channel.questions("harbor")[0].question
    expected = _memory(channel, "merge-2").answer([question])[0]
    trace = json.loads(
        memo("ask", question, "--executive-url", executive.url, "--executive-model", "exec", "--json").stdout
    )
    assert [s["stage"] for s in trace["steps"]] == ["decompose", "narrow", "gather", "synthesize"]
    assert trace["steps"][0]["memory"] == [{"question": question, "answer": expected, "unknown": is_unknown(expected)}]
    assert trace["answer"] == (expected if not is_unknown(expected) else "I don't know")

    by_merge = json.loads(
        memo(
            "ask", question, "--merge", "1", "--executive-url", executive.url, "--executive-model", "exec", "--json"
        ).stdout
    )
    assert by_merge["steps"][0]["memory"][0]["answer"] == _memory(channel, "merge-1").answer([question])[0]

    shown = memo("ask", question, "--executive-url", executive.url, "--executive-model", "exec").stdout
    assert "decompose" in shown and "synthesize" in shown and f"? {question}" in shown and "answer" in shown


def test_memo_ask_errors_are_one_line(channel, executive):
    memo = Memo(channel.settings.home, None)
    down = memo("ask", "Who?", "--executive-url", "http://127.0.0.1:9/v1", "--executive-model", "x", ok=False)
    assert down.exit_code == 1 and "cannot reach http://127.0.0.1:9/v1" in down.stderr.strip().splitlines()[-1]
    both = memo(
        "ask",
        "Who?",
        "--channel",
        "production",
        "--merge",
        "1",
        "--executive-url",
        executive.url,
        "--executive-model",
        "x",
        ok=False,
    )
    assert "not both" in both.output
    unknown = memo(
        "ask", "Who?", "--channel", "staging", "--executive-url", executive.url, "--executive-model", "x", ok=False
    )
    assert unknown.exit_code == 1 and "staging" in unknown.stderr
    half = memo(
        "ask",
        "Who?",
        "--memory-url",
        "http://x/v1",
        "--executive-url",
        executive.url,
        "--executive-model",
        "x",
        ok=False,
    )
    assert "--memory-url and --memory-model together" in half.output


def test_eval_with_executive_matches_the_memory_and_the_judge(trained, executive):
    trained.train("harbor", SFTSettings(steps=40, batch=8, lr=3e-3), device="cpu", progress=False)  # recalls some
    memo = Memo(trained.settings.home, None)
    result = json.loads(
        memo(
            "eval",
            "harbor",
            "--corpus",
            "harbor",
            "--executive-url",
            executive.url,
            "--executive-model",
            "exec",
            "--judge",
            "--limit",
            "6",
            "--json",
        ).stdout
    )
    assert result["count"] == 6 and len(result["questions"]) == 6
    memory = _memory(trained, "harbor")

    direct = [
        normalize(a) == normalize(r["reference"])
        for a, r in zip(memory.answer([r["question"] for r in result["questions"]]), result["questions"])
    ]
    assert result["exact_match"] == pytest.approx(sum(direct) / 6)
    assert result["judge"] == pytest.approx(sum(r["judge"] for r in result["questions"]) / 6)
    assert [r["judge"] for r in result["questions"]] == direct  # the scripted judge compares normalised text
    assert any(direct), "harbor's own model should recall some of its questions"
    assert result["executive_calls"] == 4

    table = memo(
        "eval",
        "harbor",
        "--corpus",
        "harbor",
        "--executive-url",
        executive.url,
        "--executive-model",
        "exec",
        "--limit",
        "2",
    ).stdout
    assert "executive +" in table and "memory)" in table
    assert "need an executive" in memo("eval", "harbor", "--corpus", "harbor", "--judge", ok=False).output


def _start_server(home):
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", "production", "--port", "0", "--device", "cpu"],
        env=memo_subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving channel" not in line:
        proc.kill()
        raise AssertionError(f"memo serve did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" at ")[1].split()[0]


def test_serve_answers_like_the_channel_model_and_follows_a_rollback(channel):
    questions = [p.question for p in channel.questions("harbor")[:4]]
    want = {ref: _memory(channel, ref).answer(questions) for ref in ("merge-2", "merge-1")}
    assert want["merge-2"] != want["merge-1"], "the two merges should answer differently"
    proc, url = _start_server(channel.settings.home)
    try:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)

        def ask(q):
            r = client.chat.completions.create(model="production", messages=[{"role": "user", "content": q}])
            return r.system_fingerprint, r.choices[0].message.content

        assert [ask(q) for q in questions] == [("merge-2", a) for a in want["merge-2"]]
        assert client.models.list().data[0].id == "production"
        stream = client.chat.completions.create(
            model="production", stream=True, messages=[{"role": "user", "content": questions[0]}]
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want["merge-2"][0]
        with pytest.raises(openai.BadRequestError, match="no user message"):
            client.chat.completions.create(model="production", messages=[{"role": "system", "content": "hi"}])

        Memo(channel.settings.home, None)("rollback", "production")
        assert [ask(q) for q in questions] == [("merge-1", a) for a in want["merge-1"]]
        Memo(channel.settings.home, None)("promote", "2", "--channel", "production")
        assert ask(questions[0]) == ("merge-2", want["merge-2"][0])

        # The executive can question the served memory over HTTP (as any agent would).
        with ScriptedChatServer(scripted_llm.executive) as executive:
            trace = json.loads(
                Memo(channel.settings.home, None)(
                    "ask",
                    questions[1],
                    "--memory-url",
                    url,
                    "--memory-model",
                    "production",
                    "--executive-url",
                    executive.url,
                    "--executive-model",
                    "exec",
                    "--json",
                ).stdout
            )
        assert trace["steps"][0]["memory"][0]["answer"] == want["merge-2"][1]
    finally:
        proc.kill()
        proc.wait()


def test_serve_refuses_a_channel_without_a_model(trained):
    memo = Memo(trained.settings.home, None)
    result = memo("serve", "production", "--port", "0", ok=False)
    assert result.exit_code == 1 and "channel 'production' does not exist or points at no merge" in result.stderr


def test_serve_reports_a_busy_port(channel):
    """Two servers on one port: the second says so in one line."""
    proc, url = _start_server(channel.settings.home)
    try:
        port = url.split(":")[2].split("/")[0]
        result = Memo(channel.settings.home, None)("serve", "production", "--port", port, ok=False)
        assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    finally:
        proc.kill()
        proc.wait()
