"""An OpenAI-compatible chat server for the tests (127.0.0.1), replying from a script.

``script(body) -> str | (status, str)`` decides each reply from the request
body (the real ``openai`` client's JSON). The server records every request
it received and every one it answered; ``hold_after(n)`` makes request n+1
onwards hang (never answered), so a test can kill a client mid-run.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Script = Callable[[dict], "str | tuple[int, str]"]
_STAGE = re.compile(r"stage: (\S+)")


def stage_of(body: dict) -> str:
    """The stage a memo prompt names on its system message's first line."""
    match = _STAGE.search(body["messages"][0]["content"].splitlines()[0])
    return match.group(1) if match else ""


def payload_of(body: dict) -> dict:
    """The JSON input a memo prompt ends with (the first user message)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return json.loads(user.split("INPUT:\n", 1)[1])


def is_retry(body: dict) -> bool:
    return len(body["messages"]) > 2


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.requests.append(body)
            held = srv.hold_from is not None and len(srv.requests) > srv.hold_from
        if held:
            srv.release.wait()
            return
        outcome = srv.script(body)
        status, text = outcome if isinstance(outcome, tuple) else (200, outcome)
        if status != 200:
            self._reply(status, {"error": {"message": text, "type": "scripted_error"}})
            return
        with srv.lock:
            srv.answered.append(body)
        words = sum(len(m["content"].split()) for m in body["messages"])
        self._reply(
            200,
            {
                "id": f"chatcmpl-{len(srv.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": len(text.split()),
                    "total_tokens": words + len(text.split()),
                },
            },
        )


class ScriptedChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.hold_from: int | None = None
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def hold_after(self, n: int) -> None:
        self.hold_from = n

    def stages(self, which: list[dict] | None = None) -> list[str]:
        return [stage_of(b) for b in (self.answered if which is None else which)]

    def __enter__(self) -> ScriptedChatServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
