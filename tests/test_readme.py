"""The README's journeys run as written: every command of the console blocks of "The three journeys" and
"Looking at the registry", in order, on a fresh home (HOME is a new directory, so ``~/.memo`` is new),
publishing to a local Hub; each output line the README shows is printed in that form (its words up to
the first figure). Then the Python API snippet runs on the same home.

Two substitutions only, both of places outside memo: the executive of ``memo ask`` is a scripted
OpenAI-compatible server instead of the Ollama URL the README names, and the Hub is a local one
(``HF_ENDPOINT``, with its token in ``HF_TOKEN``)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from registry.demo.local_hub import HubServer
from tests.support import scripted_llm
from tests.support.chat_server import ScriptedChatServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOKEN = "hf_memoReadmeToken0123456789abcdef"
SERVERS = {"serve": "/v1/models", "ui": "/"}  # commands that serve until stopped, and a page to ask them for


@dataclass
class Command:
    line: str
    shown: list[str] = field(default_factory=list)  # the output lines the README prints under it


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def console_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            if line.startswith("$ ") or pending:
                pending += (line[2:] if line.startswith("$ ") else " " + line.strip()).rstrip("\\").rstrip() + " "
                if not line.endswith("\\"):
                    commands.append(Command(pending.strip()))
                    pending = ""
            elif line.strip():
                commands[-1].shown.append(line.strip())
    return commands


def python_snippet(text: str) -> str:
    return re.findall(r"```python\n(.*?)```", section(text, "Python API"), re.S)[0]


def _shape(line: str) -> str:
    """A shown line's words up to its first figure: what the command must print as the README says."""
    return re.split(r"\d", line, maxsplit=1)[0]


def test_readme_blocks_parse():
    text = README.read_text()
    commands = console_commands(section(text, "The three journeys") + section(text, "Looking at the registry"))
    names = [shlex.split(c.line)[1] for c in commands if c.line.startswith("memo ")]
    assert names[:3] == ["init", "base", "register"] and {"merge", "rollback", "log", "ask", "serve", "ui"} <= {*names}
    assert any(c.shown for c in commands) and "Registry.open" in python_snippet(text)


@pytest.fixture
def env(tmp_path: Path):
    home = tmp_path / "user"
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MEMO_", "HF_"))}
    environ |= {"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN}
    environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environ.get("PATH", "")
    with HubServer(tokens={TOKEN: "my-org"}) as hub:
        environ["HF_ENDPOINT"] = hub.url
        yield environ, hub


@pytest.mark.timeout(1800)  # every README command in turn: about 5 minutes, up to 12 on a slower 2-core CPU
def test_the_readme_runs_as_written(env):
    environ, hub = env
    text = README.read_text()
    commands = console_commands(section(text, "The three journeys") + section(text, "Looking at the registry"))
    with ScriptedChatServer(scripted_llm.executive) as executive:
        for command in commands:
            name = shlex.split(command.line)[1]
            if name in SERVERS:
                _serve_once(command.line, SERVERS[name], environ)
                continue
            line = command.line
            if name == "ask":  # the one substitution: a scripted executive instead of a local Ollama
                line = line.replace("http://127.0.0.1:11434/v1", executive.url).replace("qwen2.5:14b", "exec")
            done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=environ, capture_output=True, text=True)
            assert done.returncode == 0, f"{command.line}\n{done.stdout}\n{done.stderr}"
            printed = [out.strip() for out in (done.stdout + done.stderr).splitlines()]
            for shown in command.shown:
                assert any(p.startswith(_shape(shown)) for p in printed), f"{command.line}: {shown!r} not in\n{printed}"
    assert hub.state.repos, "the channel published nothing to the Hub"
    snippet = subprocess.run(
        [sys.executable, "-c", python_snippet(text)], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert snippet.returncode == 0, snippet.stderr
    lines = snippet.stdout.splitlines()
    assert lines[0].startswith("harbor@v1 True ") and lines[1].startswith("merge-") and len(lines) == 4
    assert lines[2].startswith("GeneralKnowledge(kept=") and lines[2].endswith("count=150, probe_set=1)")


def _serve_once(line: str, path: str, environ: dict[str, str]) -> None:
    """Start a serving command as written, ask it for ``path`` on the port it names, stop it."""
    port = int(m.group(1)) if (m := re.search(r"--port (\d+)", line)) else 8200
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} is taken: {line} cannot run as written here")
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=ROOT, env=environ, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                    assert reply.status == 200
                    return
            except OSError:
                assert proc.poll() is None, f"{line} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                assert time.monotonic() < deadline, f"{line} did not answer in 60 s"
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
