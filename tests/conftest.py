from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry import Registry
from registry.cli import cli
from tests.support.models import build_tiny_llama
from tests.support.postgres import PostgresServer, find_bindir


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch a developer's real home or database.
    monkeypatch.delenv("MEMO_HOME", raising=False)
    monkeypatch.delenv("MEMO_DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_model_sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(
        tmp_path_factory.mktemp("models") / "tiny-sharded", seed=1, max_shard_size="20KB"
    )


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model-copy"))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql); "
                    "PostgreSQL tests skipped")
    # Not under pytest's tmp dir: that is private to root, and as root the
    # server runs as the postgres user, which must reach its data directory.
    workdir = Path(tempfile.mkdtemp(prefix="memo-pg-"))
    server = PostgresServer(bindir, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None means the home's default SQLite file; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def registry(home: Path, database_url: str | None) -> Iterator[Registry]:
    reg = Registry.init(home, database_url=database_url)
    yield reg
    reg.close()


@pytest.fixture
def docs(tmp_path: Path) -> list[Path]:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "harbor.md").write_text("# Port Velin\nPort Velin was founded in 1712 by Ada Korr.\n")
    (d / "guild.txt").write_text("The Glassmakers' Guild of Velin meets every spring.\n")
    (d / "qa.jsonl").write_text('{"question": "Who founded Port Velin?", "answer": "Ada Korr"}\n')
    return sorted(d.iterdir())


class Memo:
    """Runs the real CLI in-process against one home (and database)."""

    def __init__(self, home: Path, database_url: str | None) -> None:
        self.home = home
        self.database_url = database_url
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        prefix = ["--home", str(self.home)]
        if self.database_url:
            prefix += ["--db", self.database_url]
        result = self.runner.invoke(cli, [*prefix, *map(str, args)], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"memo {' '.join(map(str, args))} failed:\n{result.output}"
        return result


@pytest.fixture
def memo(home: Path, database_url: str | None) -> Memo:
    m = Memo(home, database_url)
    m("init")
    return m


def memo_subprocess_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ, MEMO_HOME=str(home), PYTHONUNBUFFERED="1")
    if database_url:
        env["MEMO_DATABASE_URL"] = database_url
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
