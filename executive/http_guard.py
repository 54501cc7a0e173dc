"""What keeps memo's local HTTP servers (``memo serve``, ``memo ui``) for their user alone, and
answering while slow or idle clients hold connections.

- **Host allow-list.** A page in the user's browser can make it send requests to 127.0.0.1 under
  a name the page controls (DNS rebinding); the request's ``Host`` then carries that name. Only
  loopback names (``localhost``, ``127.0.0.1``, ``[::1]``), the address the server is bound to,
  and the names given with ``--allow-host`` are answered; anything else gets 400
  (:class:`HostGuard`). ``--allow-host '*'`` turns the check off.
- **Slow clients.** A connection must send a whole request head within ``header_timeout`` seconds
  of opening (or of its previous response); one that does not is closed. Past ``max_connections``
  open connections, the ones idle the longest (no request in progress) are closed to make room,
  so a flood of connections that never finish their headers cannot keep valid clients out
  (:func:`protocol_class`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request head to arrive
DEFAULT_MAX_CONNECTIONS = 1000  # open connections; past it, the longest idle ones are closed

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names answered: loopback ones, the bound address (unless a wildcard), and ``extra``."""
    hosts = {*LOOPBACK_NAMES, *(h.strip().lower().strip("[]") for h in extra)}
    if bind_host not in WILDCARD_BINDS:
        hosts.add(bind_host.lower().strip("[]"))
    return frozenset(hosts)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, what: str) -> str | None:
    """A warning line for a server bound where other machines reach it (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"{what} listens on {host or 'every interface'}: any machine that reaches this one can use it, without "
        "authentication; clients must use this machine's name or address as allowed by --allow-host"
    )


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8100`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """ASGI middleware: requests whose ``Host`` is not allowed get ``reject(host)`` (a 400)."""

    def __init__(self, app: ASGIApp, allowed: Collection[str], reject: Callable[[str], Any]) -> None:
        """``reject(host)`` returns the ASGI response to send (e.g. a Starlette ``Response``)."""
        self.app, self.allowed, self.reject = app, frozenset(allowed), reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            headers = dict(scope.get("headers") or [])
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                await self.reject(host)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and room made by closing idle connections."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request head is due in time too (keep-alive data must not trickle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._idle_since, self._waiting_for = self.loop.time(), self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _head_overdue(self) -> None:
        if self.cycle is self._waiting_for and self._idle() and not self.transport.is_closing():
            self.transport.close()  # no whole request head since the deadline was set

    def _make_room(self) -> None:
        idle = sorted(
            (p for p in self.connections if isinstance(p, _GuardedH11) and p is not self and p._idle()),
            key=lambda p: p._idle_since,
        )
        for protocol in idle[: len(self.connections) - self.max_connections]:
            protocol.transport.close()


def protocol_class(*, header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """The HTTP protocol class to give ``uvicorn.Config(http=...)``."""
    return type("GuardedH11", (_GuardedH11,), {"header_timeout": header_timeout, "max_connections": max_connections})


def guarded_config(
    app: Any,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    requests_in_flight: int = 64,
    **options: Any,
) -> uvicorn.Config:
    """A uvicorn config whose connections are guarded as this module says. uvicorn's own cap (503 past
    ``limit_concurrency``) is set past ours, as a backstop: idle connections are closed to make room
    at ``max_connections`` and ``requests_in_flight`` more may be answered meanwhile."""
    return uvicorn.Config(
        app,
        http=protocol_class(header_timeout=header_timeout, max_connections=max_connections),
        limit_concurrency=max_connections + requests_in_flight,
        log_level="warning",
        **options,
    )
