"""A proxy in front of the S3 test server that fails chosen requests the way networks and servers do
(a connection dropped halfway through an upload or a download, a 500, a client killed mid-upload),
and counts the bytes that go up and down through it."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHUNK = 1 << 20
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    method: str  # "PUT", "GET", ...
    path_part: str  # a substring of the request path, e.g. "/sha256/"
    mode: str  # "drop" (the connection closes halfway through the body), "500", or "hang" (half the
    # upload arrives, then nothing until the proxy is healed: a client killed mid-upload)
    times: int | None = None  # fail this many matching requests, then let them through (None: until healed)
    hits: int = 0


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self.healed = threading.Event()
        self.bytes_up = self.bytes_down = 0  # request and response bodies relayed
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, method: str, path_part: str, mode: str, times: int | None = None) -> Fault:
        fault = Fault(method, path_part, mode, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        with self._lock:
            self.faults.clear()
        self.healed.set()

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                spent = fault.times is not None and fault.hits >= fault.times
                if fault.method == method and fault.path_part in path and not spent:
                    fault.hits += 1
                    return fault
        return None


def _handler(proxy: FaultyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            fault = proxy.fault_for(self.command, self.path)
            if fault is not None and fault.mode == "hang":
                self.rfile.read(length // 2)
                proxy.healed.wait(timeout=60)
                self.close_connection = True
                return
            if fault is not None and fault.mode == "drop" and self.command == "PUT":
                self.rfile.read(length // 2)  # half the upload arrives, then the connection dies
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault is not None and fault.mode == "500":
                self.rfile.read(length)
                self.send_response(500)
                error = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, self.path, body=self._body(length) if length else None, headers=headers)
            response = upstream.getresponse()
            size = response.getheader("Content-Length")
            data = b"" if size is not None or self.command == "HEAD" else response.read()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", size if size is not None else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                total = int(size) if size is not None else len(data)
                cut = fault is not None and fault.mode == "drop"  # a download cut off halfway
                self._send(response, data, total // 2 if cut else total)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
            upstream.close()

        def _body(self, length: int) -> Iterator[bytes]:
            """The request body, relayed as it arrives (a real network streams; it does not buffer)."""
            while length > 0:
                chunk = self.rfile.read(min(CHUNK, length))
                if not chunk:
                    return
                length -= len(chunk)
                with proxy._lock:
                    proxy.bytes_up += len(chunk)
                yield chunk

        def _send(self, response: http.client.HTTPResponse, data: bytes, limit: int) -> None:
            """Relay up to ``limit`` bytes of the response body as they arrive."""
            sent = 0
            while sent < limit:
                chunk = data[sent:limit] if data else response.read(min(CHUNK, limit - sent))
                if not chunk:
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                with proxy._lock:
                    proxy.bytes_down += len(chunk)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler
