"""A memory model as an OpenAI-compatible endpoint: ``/v1/chat/completions`` and ``/v1/models``.

So any executive, agent framework or black-box LLM can query the memory as
MeMo describes. The last user message is the question (each call is
context-free, as the protocol wants); the answer is greedy. ``stream: true``
is answered as server-sent events (one content chunk, then ``[DONE]``).

The source is asked for the current model for every batch, which is how
``memo serve`` follows a channel: a promote or rollback swaps the model
without a restart. Each reply names the model it came from in
``system_fingerprint`` (and the ``X-Memo-Model`` header).

It is an ASGI app (Starlette) served by uvicorn, built to stay up under
hostile or heavy traffic:

- only requests whose ``Host`` is a loopback name, the bound address or one
  allowed with ``--allow-host`` are answered (DNS rebinding), only JSON bodies
  are read (a browser sends no JSON cross-origin without asking first), and a
  connection must send its request head within a time-out, its body within
  another; past a connection limit the longest idle ones are closed
  (:mod:`executive.http_guard`);
- a body over ``max_body`` bytes is answered 413 before it is read (from its
  ``Content-Length``, or as soon as a chunked body passes the limit);
- requests are validated against the OpenAI chat request's shape (pydantic),
  and every error is an OpenAI-style JSON body (400, 404, 405, 408, 413, 415,
  422, 429, 500); a malformed ``Content-Length`` is refused by the HTTP layer at once;
- questions wait in one bounded queue and are answered in batches (one
  ``generate`` call for up to ``batch`` questions), so many concurrent
  clients share the model instead of queueing on a lock; past
  ``max_pending`` waiting questions a request gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from executive.http_guard import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    LOOPBACK_NAMES,
    HostGuard,
    allowed_hosts,
    guarded_config,
)
from executive.memory import Memory
from training.jsonl import JSONTooDeep, loads

DEFAULT_MAX_BODY = 1 << 20  # bytes; a chat request with one question is a few hundred
DEFAULT_MAX_PENDING = 256  # questions waiting or being answered
DEFAULT_BATCH = 16  # questions answered by one generate call
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for a request's body to arrive whole


class MemorySource(Protocol):
    name: str  # the model id clients send and see

    def current(self) -> tuple[str, Memory]:
        """(a label of the model now served, e.g. ``merge-3``; the memory answering for it)."""
        ...


# --- the request, as the OpenAI chat API defines the parts memo reads -----------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI fields are accepted and ignored


class ContentPart(_Open):
    type: str
    text: str | None = None


class Message(_Open):
    role: str
    content: str | list[ContentPart] | None = None


class ChatRequest(_Open):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False


@dataclass
class ApiError(Exception):
    status: int
    message: str
    kind: str = "invalid_request_error"
    headers: dict[str, str] | None = None


def question_of(request: ChatRequest) -> str:
    """The text of the last user message (plain, or OpenAI content parts of type text)."""
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise ApiError(400, "no user message to answer")
    content = users[-1].content
    if isinstance(content, list):
        content = " ".join(p.text for p in content if p.type == "text" and p.text is not None)
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "the last user message has no text")
    return content.strip()


def parse_request(body: bytes) -> ChatRequest:
    try:
        value = loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})") from None
    except JSONTooDeep as e:
        raise ApiError(400, f"the body is not usable JSON ({e})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return ChatRequest.model_validate(value)
    except ValidationError as e:
        deepest = max(e.errors(), key=lambda error: len(error["loc"]))  # of a union, the branch that got furthest
        where = ".".join(map(str, deepest["loc"])) or "the body"
        raise ApiError(422, f"{where}: {deepest['msg']}") from None


def completion(name: str, label: str, answer: str, question: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "system_fingerprint": label,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": len(question.split()),
            "completion_tokens": len(answer.split()),
            "total_tokens": len(question.split()) + len(answer.split()),
        },
    }


def stream_body(reply: dict) -> str:
    base = {k: reply[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}
    content = reply["choices"][0]["message"]["content"]
    events = [
        base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}]},
        base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


# --- answering: one bounded queue, answered in batches ----------------------------------------


class Batcher:
    """Questions from every request go through one queue; a single worker answers them in batches
    off the event loop, so the model runs one generate call at a time."""

    def __init__(self, source: MemorySource, *, batch: int, max_pending: int) -> None:
        self.source, self.batch, self.max_pending = source, batch, max_pending
        self.pending = 0
        self._queue: asyncio.Queue[tuple[str, asyncio.Future]] | None = None

    async def ask(self, question: str) -> tuple[str, str]:
        if self._queue is None:
            raise ApiError(503, "the server is starting", "server_error")
        if self.pending >= self.max_pending:
            raise ApiError(
                429, f"{self.pending} questions are waiting; retry shortly", "rate_limit_error", {"Retry-After": "1"}
            )
        self.pending += 1
        try:
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            await self._queue.put((question, future))
            return await future
        finally:
            self.pending -= 1

    async def run(self) -> None:
        self._queue = asyncio.Queue()
        while True:
            items = [await self._queue.get()]
            while len(items) < self.batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            items = [(q, f) for q, f in items if not f.done()]  # clients that went away
            if not items:
                continue
            try:
                label, answers = await asyncio.to_thread(self._answer, [q for q, _ in items])
            except Exception as e:  # noqa: BLE001 - each waiting client gets a 500 with the reason
                for _, f in items:
                    if not f.done():
                        f.set_exception(ApiError(500, f"the memory model failed: {e}", "server_error"))
                continue
            for (_, f), answer in zip(items, answers):
                if not f.done():
                    f.set_result((label, answer))

    def _answer(self, questions: list[str]) -> tuple[str, list[str]]:
        label, memory = self.source.current()
        return label, memory.answer(questions)


# --- the app ------------------------------------------------------------------------------------


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status, headers=headers
    )


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The JSON body, at most ``limit`` bytes, whole within ``timeout`` seconds. Only JSON: a browser
    sends ``text/plain`` and form bodies cross-origin without asking, ``application/json`` never."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, f"the body must be sent as Content-Type: application/json, not {media_type or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body has {int(declared):,} bytes; the limit is {limit:,}")

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the body is over the limit of {limit:,} bytes")
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body did not arrive within {timeout:g} s") from None


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    kind, message = {
        404: ("not_found", f"no route {request.url.path}"),
        405: ("method_not_allowed", f"{request.method} is not allowed on {request.url.path}"),
    }.get(status, ("invalid_request_error", str(getattr(exc, "detail", exc))))
    return _error(status, message, kind, getattr(exc, "headers", None))


async def _server_error(_: Request, exc: Exception) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}", "server_error")


def _wrong_host(host: str) -> Response:
    return _error(400, f"this server does not answer for the host {host!r}; see memo serve --allow-host", "host")


def create_app(
    source: MemorySource,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_pending: int = DEFAULT_MAX_PENDING,
    batch: int = DEFAULT_BATCH,
    allowed_hosts: Collection[str] = LOOPBACK_NAMES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """The app; requests whose ``Host`` is not in ``allowed_hosts`` get 400 (:mod:`executive.http_guard`)."""
    batcher = Batcher(source, batch=batch, max_pending=max_pending)

    async def chat(request: Request) -> Response:
        try:
            chat_request = parse_request(await _read_body(request, max_body, body_timeout))
            question = question_of(chat_request)
            label, answer = await batcher.ask(question)
        except ApiError as e:
            return _error(e.status, e.message, e.kind, e.headers)
        reply = completion(source.name, label, answer, question)
        if chat_request.stream:
            return Response(stream_body(reply), media_type="text/event-stream", headers={"X-Memo-Model": label})
        return JSONResponse(reply, headers={"X-Memo-Model": label})

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": source.name, "object": "model", "created": 0, "owned_by": "memo"}]}
        )

    async def health(_: Request) -> Response:
        try:
            label, _memory = await asyncio.to_thread(source.current)
        except Exception as e:  # noqa: BLE001 - reported, the server goes on
            return _error(503, f"no model to serve: {e}", "server_error")
        return JSONResponse({"status": "ok", "model": source.name, "serving": label})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            worker.cancel()

    routes = [Route(p, chat, methods=["POST"]) for p in ("/v1/chat/completions", "/chat/completions")]
    routes += [Route(p, models, methods=["GET"]) for p in ("/v1/models", "/models")]
    routes += [Route(p, health, methods=["GET"]) for p in ("/health", "/v1/health")]

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        middleware=[Middleware(HostGuard, allowed=allowed_hosts, reject=_wrong_host)],
    )


class MemoryServer:
    """The app on a listening socket: ``serve_forever()`` here, or ``start()`` in a background thread.

    The socket is bound in the constructor, so a busy port fails at once (``OSError``) and port 0
    gets a free port whose address ``url`` tells.
    """

    def __init__(
        self,
        source: MemorySource,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_pending: int = DEFAULT_MAX_PENDING,
        batch: int = DEFAULT_BATCH,
        allow_hosts: Iterable[str] = (),
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=2048)
        hosts = allowed_hosts(host, allow_hosts)
        app = create_app(
            source,
            max_body=max_body,
            max_pending=max_pending,
            batch=batch,
            allowed_hosts=hosts,
            body_timeout=body_timeout,
        )
        config = guarded_config(
            app,
            header_timeout=header_timeout,
            max_connections=max_connections,
            requests_in_flight=2 * max_pending + 64,  # questions past max_pending get 429 first
            access_log=False,
            lifespan="on",
            timeout_keep_alive=5,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (or ``close()`` from another thread)."""
        self.server.run(sockets=[self.socket])

    def start(self) -> MemoryServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.socket.close()

    def __enter__(self) -> MemoryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
