"""``memo ui``: a read-only web page over the registry, server-rendered (Starlette, Jinja2, inline SVG).

Every route is a GET; each page has its JSON twin under ``/api`` with the records the CLI's ``--json``
prints. Templates autoescape, and the charts escape their labels, so a name is always shown as text.
Only requests for a loopback name, the bound address or a name allowed with ``--allow-host`` are
answered, and slow or idle connections are closed (:mod:`executive.http_guard`).
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from executive.http_guard import LOOPBACK_NAMES, HostGuard, allowed_hosts, guarded_config
from registry import InvalidInput, MemoError, NotFound, Registry, figures
from registry.ui import pages

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["pct"] = figures.fraction
TEMPLATES.env.filters["seconds"] = figures.seconds
TEMPLATES.env.globals["hub_url"] = pages.hub_url
TEMPLATES.env.globals["gates"] = figures.gates


def create_app(reg: Registry, *, allowed_hosts: Collection[str] = LOOPBACK_NAMES) -> Starlette:
    """The pages; a request whose ``Host`` is not in ``allowed_hosts`` gets 400 (:mod:`executive.http_guard`)."""

    def page(template: str, build):
        async def endpoint(request: Request) -> Response:
            try:
                context = build(request)
            except NotFound as e:
                return _error_page(request, str(e), 404)
            except (InvalidInput, ValueError) as e:
                return _error_page(request, str(e), 400)
            return TEMPLATES.TemplateResponse(request, template, context)

        return endpoint

    def api(build):
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(build(request))
            except NotFound as e:
                return JSONResponse({"error": str(e)}, status_code=404)
            except (InvalidInput, ValueError, MemoError) as e:
                return JSONResponse({"error": str(e)}, status_code=400)

        return endpoint

    def name(request: Request) -> str:
        return request.path_params["name"]

    def merge_id(request: Request) -> int:
        return request.path_params["merge_id"]

    def last(request: Request) -> int:
        value = int(request.query_params.get("last", pages.HEATMAP_MERGES))
        if not 0 < value <= 10_000:
            raise InvalidInput(f"last={value} is not between 1 and 10000")
        return value

    routes = [
        Route("/", page("home.html", lambda r: pages.home(reg))),
        Route("/channels/{name}", page("channel.html", lambda r: pages.channel(reg, name(r)))),
        Route("/merges", page("merges.html", lambda r: {"merges": reg.list_merges()[::-1]})),
        Route("/merges/{merge_id:int}", page("merge.html", lambda r: {"page": pages.merge(reg, merge_id(r))})),
        Route("/corpora", page("corpora.html", lambda r: {"corpora": reg.list_corpora()})),
        Route("/corpora/{name}", page("corpus.html", lambda r: pages.corpus(reg, name(r)))),
        Route("/retention", page("retention.html", lambda r: pages.retention(reg, last(r)))),
        Route("/api/home", api(lambda r: _home_json(pages.home(reg)))),
        Route("/api/channels", api(lambda r: [c.to_json() for c in reg.list_channels()])),
        Route("/api/channels/{name}", api(lambda r: _channel_json(reg, name(r)))),
        Route("/api/merges", api(lambda r: [m.to_json() for m in reg.list_merges()])),
        Route("/api/merges/{merge_id:int}", api(lambda r: _merge_json(pages.merge(reg, merge_id(r))))),
        Route("/api/corpora", api(lambda r: [c.to_json() for c in reg.list_corpora()])),
        Route("/api/corpora/{name}", api(lambda r: _jsonable(pages.corpus(reg, name(r))))),
        Route("/api/retention", api(lambda r: _retention_json(pages.retention(reg, last(r))))),
    ]

    return Starlette(
        routes=routes,
        middleware=[Middleware(HostGuard, allowed=allowed_hosts, reject=_wrong_host)],
        exception_handlers={404: _no_route, 405: _no_route},
    )


def _wrong_host(host: str) -> Response:
    message = f"this server does not answer for the host {host!r}; see memo ui --allow-host"
    return Response(message, status_code=400, media_type="text/plain")


async def _no_route(request: Request, exc: Exception) -> Response:
    status, path = getattr(exc, "status_code", 404), request.url.path
    message = f"there is no page at {path}" if status == 404 else f"{request.method} is not answered at {path}"
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return _error_page(request, message, status)


def _error_page(request: Request, message: str, status: int) -> Response:
    title = {404: "Not found", 400: "Bad request"}.get(status, "Not answered")
    context = {"message": message, "title": title}
    return TEMPLATES.TemplateResponse(request, "error.html", context, status_code=status)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _home_json(home: dict[str, Any]) -> dict[str, Any]:
    return {"channels": _jsonable(home["channels"]), "counts": home["counts"]}


def _channel_json(reg: Registry, name: str) -> dict[str, Any]:
    return {
        "channel": reg.get_channel(name).to_json(),
        "events": [e.to_json() for e in reg.log(name)],
        "webhooks": [h.to_json() for h in reg.webhooks(name)],
        "deliveries": [d.to_json() for d in reg.deliveries(name)],
    }


def _merge_json(page: pages.MergePage) -> dict[str, Any]:
    return {
        "merge": page.merge.to_json(),
        "parent": page.parent.id if page.parent else None,
        "children": [m.id for m in page.children],
        "channels": [c.name for c in page.channels],
        "publications": [p.to_json() for p in page.publications],
        "mergekit_config": page.config,
    }


def _retention_json(data: dict[str, Any]) -> dict[str, Any]:
    return {"merges": [m.id for m in data["merges"]], "corpora": data["corpora"], "cells": data["cells"]}


def listen(host: str = "127.0.0.1", port: int = 8200) -> socket.socket:
    """The listening socket (port 0: any free one); OSError when the address is taken or not ours."""
    sock = socket.create_server((host, port))
    sock.set_inheritable(True)
    return sock


def server(reg: Registry, sock: socket.socket, *, allow_hosts: Iterable[str] = ()) -> uvicorn.Server:
    """The pages as a uvicorn server on ``sock``, answering the loopback names, the bound address and
    ``allow_hosts``; slow and idle connections are closed as :mod:`executive.http_guard` says."""
    hosts = allowed_hosts(sock.getsockname()[0], allow_hosts)
    return uvicorn.Server(guarded_config(create_app(reg, allowed_hosts=hosts), fd=sock.fileno()))


def serve(reg: Registry, sock: socket.socket, *, allow_hosts: Iterable[str] = ()) -> None:
    """Serve the pages on ``sock`` until interrupted."""
    server(reg, sock, allow_hosts=allow_hosts).run()
