"""Walking the registry's web page the way a reader clicks through it."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from registry import GateRefused, MergeRecord, Registry
from registry.ui import server as ui_server

SCRIPT = "<script>alert(1)</script>"


def fill_for_pages(reg: Registry, tmp_path: Path) -> tuple[MergeRecord, MergeRecord]:
    """Two merges in a gated channel, a rollback, and text that looks like markup (a trained registry)."""
    doc = tmp_path / "<img src=x onerror=alert(1)>.md"
    doc.write_text("# Harbor notes\nThe harbor opened in 1822.\n")
    reg.add_corpus("notes", [doc], base="tiny", description=SCRIPT)
    first = reg.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    reg.promote(first.id, "production", reason=SCRIPT)
    second = reg.merge(["harbor", "glassworks"], strategy="ties", density=0.5, progress=False)
    reg.promote(second.id, "production", reason="denser", force=True)
    reg.rollback("production", reason="back")
    reg.set_min_retention("production", 0.5)
    unmeasured = reg.merge(["harbor", "glassworks"], strategy="ties", density=0.7, progress=False, evaluate=False)
    with pytest.raises(GateRefused, match="no retention figures"):  # the gate's refusal goes into the history
        reg.promote(unmeasured.id, "production")
    return first, second


@contextmanager
def served(reg: Registry) -> Iterator[str]:
    """The registry's pages served by uvicorn in a thread on a free port; yields the base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = ui_server(reg, sock)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def crawl(client, start: str = "/") -> set[str]:
    """Every page reachable from ``start`` by the site's own links; each must answer 200."""
    seen, todo = set(), {start}
    while todo:
        path = todo.pop()
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        todo |= set(re.findall(r'href="(/[^"]*)"', response.text)) - seen
    return seen
