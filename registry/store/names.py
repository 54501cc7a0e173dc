"""Names users give to bases, corpora and channels, and the numbers they give for ids and versions."""

from __future__ import annotations

import re

from registry.store.errors import InvalidInput

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # fullmatch: '$' would accept a trailing newline
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


MAX_ROW_NUMBER = 2**31 - 1  # ids and versions are 32-bit integer columns (PostgreSQL's INTEGER)


def row_number(text: str | int, what: str) -> int | None:
    """A merge id or task vector version a user typed, as an int; None when it is past any stored one
    (the caller says it is unknown), so a huge number never reaches the database as an overflow."""
    value = int(text)
    if value < 0:
        raise InvalidInput(f"{what} {text!r} is not a positive number")
    return value if value <= MAX_ROW_NUMBER else None
