"""Walking the registry's web page the way a reader clicks through it."""

from __future__ import annotations

import re


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
