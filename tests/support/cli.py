"""Assertions on CLI results shared by the bad-input tests."""

from __future__ import annotations

import re

from tests.support.snapshot import registry_state

PROGRESS_BAR = re.compile(r"\d+%\|")  # a progress bar drawn before the error was found (a merge that ran)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def unchanged(memo, *args, fragments=()):
    from registry import Registry

    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        before = registry_state(reg)
    result = memo(*args, ok=False)
    assert_one_line_error(result, *fragments)
    with Registry.open(memo.home, database_url=memo.database_url) as reg:
        assert registry_state(reg) == before, f"memo {' '.join(map(str, args))} changed the registry"
