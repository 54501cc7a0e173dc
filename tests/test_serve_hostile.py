"""`memo serve`'s server under hostile and heavy traffic: every request gets an answer (a JSON error
or a reply), no connection is dropped, and valid requests are answered throughout."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from executive.http_guard import bind_warning
from executive.memory import LocalMemory
from executive.server import MemoryServer
from registry import Registry

QUESTION = "Who founded Port Velin?"


class OneModel:
    """The harbor corpus's own model, served under one name (what ChannelSource does for a channel)."""

    name = "harbor"

    def __init__(self, memory: LocalMemory) -> None:
        self.memory = memory

    def current(self):
        return "harbor@v1", self.memory


@pytest.fixture(scope="module")
def memory(trained_home_template, tmp_path_factory) -> LocalMemory:
    home = Path(shutil.copytree(trained_home_template, tmp_path_factory.mktemp("serve") / "home", symlinks=True))
    with Registry.open(home) as reg:
        return LocalMemory(reg.model_dir("harbor"), device="cpu")


@pytest.fixture
def server(memory):
    with MemoryServer(OneModel(memory), port=0) as s:
        yield s


def _address(server: MemoryServer) -> tuple[str, int]:
    return server.socket.getsockname()[:2]


def _post(
    server, body: bytes | str, *, path: str = "/v1/chat/completions", method: str = "POST", headers: dict | None = None
) -> tuple[int, dict, dict]:
    host, port = _address(server)
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data) if data else {}
    finally:
        conn.close()


def _chat(content="Who founded Port Velin?", **extra) -> str:
    return json.dumps({"model": "harbor", "messages": [{"role": "user", "content": content}], **extra})


def _still_answers(server) -> None:
    status, headers, body = _post(server, _chat())
    assert status == 200 and body["system_fingerprint"] == "harbor@v1" and headers["x-memo-model"] == "harbor@v1"


def _raw(server, payload: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection; return the server's answer once it is complete (its Content-Length
    read), or what came before the server closed or went quiet."""
    with socket.create_connection(_address(server), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)  # the server may answer and close while we are still sending
        received = b""
        try:
            while not _complete(received) and (chunk := sock.recv(65536)):
                received += chunk
        except TimeoutError:
            pass
        return received


def _complete(response: bytes) -> bool:
    """Whether ``response`` holds a whole HTTP response with a Content-Length (a kept-alive connection
    stays open after it: waiting for the close would wait for the server's keep-alive timeout)."""
    head, found, body = response.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_binds_the_loopback_interface_by_default(memory):
    with MemoryServer(OneModel(memory), port=0) as s:
        assert s.url.startswith("http://127.0.0.1:") and _address(s)[0] == "127.0.0.1"


def test_a_50_mb_body_is_refused_with_413_before_it_is_read(server):
    size = 50 * 1024 * 1024
    started = time.monotonic()
    raw = _raw(
        server,
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n".encode()
        + b"[" * 65536,
    )
    status, body = _status_and_json(raw)
    assert status == 413 and "limit" in body["error"]["message"] and time.monotonic() - started < 10
    _still_answers(server)


def test_a_chunked_body_past_the_limit_is_refused(memory):
    with MemoryServer(OneModel(memory), port=0, max_body=1000) as s:
        chunk = b"x" * 600
        payload = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        payload += b"Transfer-Encoding: chunked\r\n\r\n"
        payload += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
        status, body = _status_and_json(_raw(s, payload))
        assert status == 413
        _still_answers(s)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}), 422, "text"),
        (json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]}), 422, "text"),
        ("[" * 100_000, 400, "nested too deeply"),
        ("{not json", 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not valid JSON"),
        ("[1, 2]", 400, "must be a JSON object"),
        ("{}", 422, "messages"),
        (json.dumps({"messages": "hello"}), 422, "messages"),
        (json.dumps({"messages": []}), 422, "messages"),
        (json.dumps({"messages": [{"role": "system", "content": "hi"}]}), 400, "no user message"),
        (json.dumps({"messages": [{"role": "user", "content": "  "}]}), 400, "no text"),
        (json.dumps({"messages": [{"role": "user"}], "stream": "often"}), 422, "stream"),
        ("", 400, "must be a JSON object"),
    ],
)
def test_bad_requests_get_a_json_error(server, body, status, fragment):
    got, _, answer = _post(server, body)
    assert got == status and fragment in answer["error"]["message"], answer
    assert set(answer["error"]) >= {"message", "type"}
    _still_answers(server)


def test_wrong_routes_and_methods(server):
    assert _post(server, "", path="/v1/nothing", method="GET")[0] == 404
    status, _, body = _post(server, _chat(), path="/v1/chat/completions", method="GET")
    assert status == 405 and body["error"]["type"] == "method_not_allowed"
    status, _, body = _post(server, _chat(), path="/v1/models", method="DELETE")
    assert status == 405
    _still_answers(server)


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "99999999999999999999999"])
def test_a_bad_content_length_is_answered_at_once(server, length):
    started = time.monotonic()
    raw = _raw(
        server,
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n{{}}".encode(),
        read_timeout=15,
    )
    assert raw.split()[1] in (b"400", b"413"), raw[:200]
    assert time.monotonic() - started < 10, "answered at once, not after a time-out"
    _still_answers(server)


def test_200_concurrent_requests_all_get_an_answer(server):
    def one(i: int) -> int:
        return _post(server, _chat(f"Who founded Port Velin? ({i})"))[0]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert len(statuses) == 200 and set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 100, "the default queue holds 256 questions"
    assert time.monotonic() - started < 120
    _still_answers(server)


def test_past_the_queue_requests_get_429_with_retry_after(memory):
    with MemoryServer(OneModel(memory), port=0, max_pending=4, batch=2) as s:

        def one(i: int):
            return _post(s, _chat(f"q{i}"))

        with ThreadPoolExecutor(max_workers=40) as pool:
            results = list(pool.map(one, range(40)))
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
        busy = next(r for r in results if r[0] == 429)
        assert busy[1]["retry-after"] == "1" and busy[2]["error"]["type"] == "rate_limit_error"
        _still_answers(s)


def test_streaming_and_batched_answers_equal_the_model(server, memory):
    questions = [QUESTION, "Where is Port Velin?", "Who leads the guild?"]
    want = [memory.answer([q])[0] for q in questions]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda q: _post(server, _chat(q))[2]["choices"][0]["message"]["content"], questions))
    assert got == want
    host, port = _address(server)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request(
        "POST", "/v1/chat/completions", body=_chat(QUESTION, stream=True), headers={"Content-Type": "application/json"}
    )
    text = conn.getresponse().read().decode()
    conn.close()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == want[0]
    assert text.rstrip().endswith("data: [DONE]")


def test_a_failing_model_is_a_500_and_the_server_goes_on(memory):
    class Flaky(OneModel):
        calls = 0

        def current(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("the channel moved to a model that cannot be loaded")
            return super().current()

    with MemoryServer(Flaky(memory), port=0) as s:
        status, _, body = _post(s, _chat())
        assert status == 500 and "cannot be loaded" in body["error"]["message"]
        _still_answers(s)


# --- requests from a browser page, and clients that hold connections ------------------------------


def _head(server, host: str, extra: str = "", body: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n{extra}{length}\r\n{body}".encode()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8100", "127.0.0.1.evil.example", "10.0.0.1", ""])
def test_a_request_for_another_host_is_refused(server, host):
    """DNS rebinding: a page's own name pointed at 127.0.0.1 is not a name this server answers."""
    status, body = _status_and_json(_raw(server, _head(server, host, "Content-Type: application/json\r\n", _chat())))
    assert status == 400 and "--allow-host" in body["error"]["message"]


def test_loopback_names_and_allowed_hosts_are_answered(memory):
    with MemoryServer(OneModel(memory), port=0, allow_hosts=["memo.lan"]) as s:
        port = _address(s)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "memo.lan", "memo.lan:1"):
            status, body = _status_and_json(_raw(s, _head(s, host, "Content-Type: application/json\r\n", _chat())))
            assert status == 200 and body["system_fingerprint"] == "harbor@v1", host


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""])
def test_only_json_bodies_are_read(server, content_type):
    """What a browser may send cross-origin without asking first is never read."""
    extra = f"Content-Type: {content_type}\r\n" if content_type else ""
    status, body = _status_and_json(_raw(server, _head(server, "127.0.0.1", extra, _chat())))
    assert status == 415 and "application/json" in body["error"]["message"]


def test_a_body_that_never_arrives_is_answered_408(memory):
    with MemoryServer(OneModel(memory), port=0, body_timeout=1) as s:
        started = time.monotonic()
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        status, body = _status_and_json(_raw(s, head + b"Content-Length: 100\r\n\r\n{", read_timeout=15))
        assert status == 408 and time.monotonic() - started < 10
        _still_answers(s)


def test_a_request_head_that_never_ends_is_closed(memory):
    with MemoryServer(OneModel(memory), port=0, header_timeout=1) as s:
        started = time.monotonic()
        assert _raw(s, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", read_timeout=15) == b""
        assert time.monotonic() - started < 10, "closed by the server at its deadline"
        _still_answers(s)


def _slow_connections(server, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(_address(server), timeout=30)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        socks.append(sock)
    return socks


@pytest.mark.parametrize("max_connections", [None, 200], ids=["defaults", "room-made"])
def test_700_slow_connections_do_not_keep_50_valid_requests_out(memory, max_connections):
    limits = {} if max_connections is None else {"max_connections": max_connections}
    with MemoryServer(OneModel(memory), port=0, header_timeout=60, **limits) as s:
        slow = _slow_connections(s, 700)
        try:
            with ThreadPoolExecutor(max_workers=50) as pool:
                answers = list(pool.map(lambda _: _post(s, _chat()), range(50)))
            assert [status for status, _, _ in answers] == [200] * 50
            assert all(body["system_fingerprint"] == "harbor@v1" for _, _, body in answers)
        finally:
            for sock in slow:
                sock.close()


def test_a_server_bound_beyond_loopback_warns():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert bind_warning(host, "memo serve") is None
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        warning = bind_warning(host, "memo serve")
        assert warning is not None and "without authentication" in warning and "--allow-host" in warning
        assert "\n" not in warning
