"""JSON lines: one object per line, errors naming the file and line.

Lines are split on ``\\n`` only. ``str.splitlines()`` also splits on U+2028,
U+0085 and other characters that JSON allows raw inside a string, so a valid
record holding one would be cut in two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JSONTooDeep(ValueError):
    """A JSON value nested deeper than the parser can follow."""


def lines_of(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank ``\\n``-separated line (a trailing ``\\r`` dropped)."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield lineno, line


def loads(text: str | bytes) -> Any:
    """``json.loads`` that reports deep nesting as a ValueError instead of a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError as e:
        raise JSONTooDeep("nested too deeply") from e


def json_objects(
    path: Path, text: str, error: type[ValueError], *, max_line_chars: int | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; ``error`` names the first bad line."""
    for lineno, line in lines_of(text):
        if max_line_chars is not None and len(line) > max_line_chars:
            raise error(
                f"{path}:{lineno}: the line has {len(line):,} characters, over the limit of "
                f"{max_line_chars:,}; split or shorten the record"
            )
        try:
            value = loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        except JSONTooDeep as e:
            raise error(f"{path}:{lineno}: not usable JSON ({e})") from e
        if not isinstance(value, dict):
            raise error(f"{path}:{lineno}: each line must be a JSON object")
        yield lineno, value
