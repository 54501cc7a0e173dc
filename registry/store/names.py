"""Names users give to bases, corpora and channels."""

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
