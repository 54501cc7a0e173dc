"""A webhook receiver on 127.0.0.1 that answers as it is told (200, a 500, a 400, or not at all for a
while) and keeps every request it was sent."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """``answers``: what the requests get in turn ("200", "500", "400", "hang"), the last one for every
    later request; "hang" holds the request ``hang_s`` seconds, then answers 200."""

    def __init__(self, *answers: str, hang_s: float = 10.0) -> None:
        self.answers = list(answers or ("200",))
        self.hang_s = hang_s
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # a hanging request lets go
        self._server.shutdown()
        self._server.server_close()

    def next_answer(self, request: Received) -> str:
        with self._lock:
            answer = self.answers[min(len(self.received), len(self.answers) - 1)]
            self.received.append(request)
        return answer

    def hang(self) -> None:
        self._stop.wait(self.hang_s)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = receiver.next_answer(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if answer == "hang":
                receiver.hang()
                answer = "200"
            try:
                self.send_response(int(answer))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, *args) -> None:
            pass

    return Handler
