"""`memo demo` runs end to end offline (the README's first command)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from registry import Registry
from registry.cli import cli


def test_demo_registers_the_examples(tmp_path):
    home = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["--home", str(home), "demo", "--corpora", "2", "--pretrain-steps", "5", "--train-steps", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 problems" in result.stdout
    with Registry.open(home) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny"]
        corpora = reg.list_corpora()
        assert len(corpora) == 2 and all(c.documents for c in corpora)
        assert all(c.latest_version == 1 for c in corpora), "each corpus was trained into a task vector"
    assert "held-out" in result.stdout and "glassworks@v1" in result.stdout
    listed = CliRunner().invoke(cli, ["--home", str(home), "corpus", "list", "--json"])
    assert len(json.loads(listed.stdout)) == 2
    again = CliRunner().invoke(cli, ["--home", str(home), "demo"])
    assert again.exit_code == 1 and "already holds a registry" in again.stderr
