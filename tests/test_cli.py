"""The CLI as a user drives it: help everywhere, the first journey, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from registry.cli import cli


def _all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = dict(_all_commands(cli))[path]
    assert command.help, f"memo {' '.join(path)} has no help text"
    if not isinstance(command, click.Group):
        assert "Example" in result.output, f"memo {' '.join(path)} --help shows no example"


def test_first_journey_init_base_corpus(memo, tiny_model, docs):
    out = memo("base", "add", tiny_model, "--name", "tiny", "--json").stdout
    base = json.loads(out)
    assert base["name"] == "tiny"
    assert base["architecture"] == "LlamaForCausalLM"
    assert base["dtype"] == "float32"
    tensors = load_file(tiny_model / "model.safetensors")
    assert base["parameter_count"] == sum(t.numel() for t in tensors.values())
    memo("corpus", "add", "velin", *docs, "--base", "tiny", "--description", "a harbour town")
    listed = json.loads(memo("corpus", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["velin"]
    assert listed[0]["base_model"] == "tiny"
    assert sorted(d["name"] for d in listed[0]["documents"]) == ["guild.txt", "harbor.md", "qa.jsonl"]
    assert {d["media_type"] for d in listed[0]["documents"]} == {"md", "txt", "jsonl"}
    table = memo("corpus", "list").stdout
    assert "velin" in table and "tiny" in table
    shown = json.loads(memo("corpus", "show", "velin", "--json").stdout)
    assert shown["description"] == "a harbour town"
    assert json.loads(memo("base", "list", "--json").stdout)[0]["fingerprint"] == base["fingerprint"]
    assert json.loads(memo("log", "--json").stdout) == []


def test_errors_are_one_line_with_exit_code_1(memo):
    result = memo("corpus", "show", "nope", ok=False)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: unknown corpus 'nope'; see `memo corpus list`"]


def test_console_script_runs_as_installed(tmp_path):
    """The `memo` entry point works as a separate process (as a user runs it)."""
    home = tmp_path / "h"
    exe = [str(Path(sys.executable).parent / "memo")]
    done = subprocess.run([*exe, "--home", str(home), "init", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["home"] == str(home)
    bad = subprocess.run(
        [*exe, "--home", str(tmp_path / "elsewhere"), "corpus", "list"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "is not a memo home" in bad.stderr and "memo init" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_os_errors_are_one_line(memo, monkeypatch, docs, tiny_model):
    import errno

    from registry.store.blobstore import LocalBlobStore
    from registry.store.s3_blobs import S3BlobStore

    memo("base", "add", tiny_model, "--name", "tiny")

    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    for kind in (LocalBlobStore, S3BlobStore):
        monkeypatch.setattr(kind, "put_file", full)
    result = memo("corpus", "add", "c", *docs, "--base", "tiny", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["Error: No space left on device; the command was not completed"]


@pytest.mark.parametrize("form", ["before", "after", "environment"])
def test_the_home_can_be_given_before_after_or_in_the_environment(tmp_path, monkeypatch, form):
    home = tmp_path / "reg"
    args = {"before": ["--home", str(home), "init"], "after": ["init", "--home", str(home)], "environment": ["init"]}[
        form
    ]
    if form == "environment":
        monkeypatch.setenv("MEMO_HOME", str(home))
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["home"] == str(home.resolve()) and (home / "memo-home.json").is_file()
    listed = CliRunner().invoke(cli, ["corpus", "list", "--home", str(home), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_can_be_asked_before_or_after_the_command(tmp_path, where):
    home = str(tmp_path / "reg")
    assert CliRunner().invoke(cli, ["init", "--home", home]).exit_code == 0
    args = ["--json", "corpus", "list", "--home", home] if where == "before" else ["corpus", "list", "--json"]
    listed = CliRunner().invoke(cli, args if where == "before" else ["--home", home, *args])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    table = CliRunner().invoke(cli, ["--home", home, "corpus", "list"])
    assert table.exit_code == 0 and not table.stdout.lstrip().startswith("[")
