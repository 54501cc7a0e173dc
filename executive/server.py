"""A memory model as an OpenAI-compatible endpoint: ``/v1/chat/completions`` and ``/v1/models``.

So any executive, agent framework or black-box LLM can query the memory as
MeMo describes. The last user message is the question (each call is
context-free, as the protocol wants); the answer is greedy. ``stream: true``
is answered as server-sent events (one content chunk, then ``[DONE]``).

The source is asked for the current model on every request, which is how
``memo serve`` follows a channel: a promote or rollback swaps the model
without a restart. Each reply names the model it came from in
``system_fingerprint`` (and the ``X-Memo-Model`` header).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from executive.memory import Memory


class MemorySource(Protocol):
    name: str  # the model id clients send and see

    def current(self) -> tuple[str, Memory]:
        """(a label of the model now served, e.g. ``merge-3``; the memory answering for it)."""
        ...


class RequestError(ValueError):
    """A request the endpoint cannot answer (400)."""


def question_of(body: dict) -> str:
    """The text of the last user message (plain, or OpenAI content parts of type text)."""
    chat = body.get("messages")
    if not isinstance(chat, list) or not chat:
        raise RequestError("'messages' must be a non-empty list")
    users = [m for m in chat if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise RequestError("no user message to answer")
    content = users[-1].get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise RequestError("the last user message has no text")
    return content.strip()


def completion(name: str, label: str, answer: str, question: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": name, "system_fingerprint": label,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(question.split()), "completion_tokens": len(answer.split()),
                  "total_tokens": len(question.split()) + len(answer.split())},
    }


class _Handler(BaseHTTPRequestHandler):
    server: MemoryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the CLI prints what matters
        pass

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.source.name, "object": "model",
                                                         "created": 0, "owned_by": "memo"}]})
        elif path in ("/health", "/v1/health"):
            label, _ = self.server.source.current()
            self._send(200, {"status": "ok", "model": self.server.source.name, "serving": label})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        if self.path.split("?")[0].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}", "not_found")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object")
            question = question_of(body)
        except (ValueError, RequestError) as e:
            self._error(400, str(e))
            return
        try:
            label, memory = self.server.source.current()
            answer = memory.answer([question])[0]
        except Exception as e:  # noqa: BLE001 - the client gets a 500 with the reason, the server goes on
            self._error(500, f"the memory model failed: {e}", "server_error")
            return
        reply = completion(self.server.source.name, label, answer, question)
        if body.get("stream"):
            self._stream(reply)
        else:
            self._send(200, reply, {"X-Memo-Model": label})

    def _stream(self, reply: dict) -> None:
        base = {k: reply[k] for k in ("id", "created", "model", "system_fingerprint")} | {
            "object": "chat.completion.chunk"}
        content = reply["choices"][0]["message"]["content"]
        events = [base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                       "finish_reason": None}]},
                  base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data.encode())))
        self.send_header("X-Memo-Model", reply["system_fingerprint"])
        self.end_headers()
        self.wfile.write(data.encode())


class MemoryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, source: MemorySource, host: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__((host, port), _Handler)
        self.source = source
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> MemoryServer:
        """Serve from a background thread (``serve_forever`` serves from this one)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()
