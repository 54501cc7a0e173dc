from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub: the test Hub speaks LFS, not Xet, and
# no token or cache of the machine's user may leak into the tests.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="memo-hf-home-")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

# Under pytest-xdist each worker is a memo process like any other: before torch is imported, it joins
# the processes that share the machine's cores (osutil.tuning), so two workers, and the memo commands
# they start, split the cores instead of fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    from osutil.tuning import share_cores

    share_cores()

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from registry import Registry  # noqa: E402
from registry.cli import cli  # noqa: E402
from tests.support.models import build_tiny_llama  # noqa: E402
from tests.support.postgres import PostgresServer, find_bindir  # noqa: E402
from tests.support.s3_server import S3Server

# The longest test files start first, one on each worker, so that neither worker is left running one
# of them alone at the end (xdist's own order, the files with the most tests first, put them last).
LONGEST_FIRST = (
    "tests/test_readme.py",
    "tests/test_real_base.py",
    "tests/test_serve_hostile.py",
    "tests/test_register.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's --dist loadfile keeps the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the collected order stays


@pytest.fixture(scope="session", autouse=True)
def _cores_shared() -> None:
    from osutil.tuning import rebalance

    rebalance(force=True)  # a worker takes its share at once (a no-op outside pytest-xdist)


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
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-sharded", seed=1, max_shard_size="20KB")


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model-copy"))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI") == "true":  # CI installs PostgreSQL: its absence is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message + "; PostgreSQL tests skipped")
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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres+s3", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The two set-ups every registry test runs on: one person's (None: the home's SQLite file,
    with blobs under the home) and a team's (a fresh PostgreSQL database, blobs in S3: ``blobs_url``)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def blobs_url(database_url: str | None, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """None beside SQLite (the home's directory); a fresh bucket on the S3 test server beside PostgreSQL."""
    if database_url is None:
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    return server.create_bucket()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def registry(home: Path, database_url: str | None, blobs_url: str | None) -> Iterator[Registry]:
    reg = Registry.init(home, database_url=database_url, blobs=blobs_url)
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

    def __init__(self, home: Path, database_url: str | None, blobs_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.blobs_url = blobs_url
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        prefix = ["--home", str(self.home)]
        if self.database_url:
            prefix += ["--db", self.database_url]
        if self.blobs_url:
            prefix += ["--blobs", self.blobs_url]
        result = self.runner.invoke(cli, [*prefix, *map(str, args)], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"memo {' '.join(map(str, args))} failed:\n{result.output}"
        return result


@pytest.fixture
def memo(home: Path, database_url: str | None, blobs_url: str | None) -> Memo:
    m = Memo(home, database_url, blobs_url)
    m("init")
    return m


def memo_subprocess_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ, MEMO_HOME=str(home), PYTHONUNBUFFERED="1")
    if database_url:
        env["MEMO_DATABASE_URL"] = database_url
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


EXAMPLE_CORPORA = ("glassworks", "harbor", "observatory", "river-guilds")


@pytest.fixture(scope="session")
def trained_home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the small tiny base and the four example corpora, each with one (briefly) trained task vector."""
    from tests.support.models import EXAMPLES, SMALL
    from training.sft import SFTSettings

    home = tmp_path_factory.mktemp("trained") / "home"
    with Registry.init(home) as reg:
        reg.create_tiny_base("tiny", SMALL, progress=False)
        for name in EXAMPLE_CORPORA:
            reg.add_corpus(name, sorted((EXAMPLES / name).glob("*.md")), base="tiny")
            reg.import_reflections(name, EXAMPLES / name / "qa.jsonl")
            reg.train(name, SFTSettings(steps=12, batch=8, lr=3e-3), device="cpu", progress=False)
    return home


@pytest.fixture
def trained(trained_home_template: Path, tmp_path: Path) -> Iterator[Registry]:
    """A private copy of the trained home (SQLite), that a test may change."""
    home = Path(shutil.copytree(trained_home_template, tmp_path / "home", symlinks=True))
    reg = Registry.open(home)
    yield reg
    reg.close()


@pytest.fixture
def hub() -> Iterator:
    """A Hub-compatible server on 127.0.0.1 that knows one token."""
    from registry.demo.local_hub import HubServer

    with HubServer(tokens={HUB_TOKEN: "memo-tester"}) as server:
        yield server


HUB_TOKEN = "hf_memoTestToken0123456789abcdef"


@pytest.fixture
def tiny_registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh home with the small tiny base (pre-trained in seconds)."""
    from tests.support.models import SMALL

    reg = Registry.init(tmp_path / "home")
    reg.create_tiny_base("tiny", SMALL, progress=False)
    yield reg
    reg.close()


@pytest.fixture
def with_base(memo: Memo, tiny_model: Path) -> Memo:
    """An initialised home (SQLite or PostgreSQL) with the tiny model registered as base ``tiny``."""
    memo("base", "add", tiny_model, "--name", "tiny")
    return memo
