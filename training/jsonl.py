"""JSON lines: one object per line, errors naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def json_objects(path: Path, text: str, error: type[ValueError]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; ``error`` names the first bad line."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(value, dict):
            raise error(f"{path}:{lineno}: each line must be a JSON object")
        yield lineno, value
